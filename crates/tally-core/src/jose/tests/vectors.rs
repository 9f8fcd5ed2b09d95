//! Published test vectors, and the ES256 malleability demonstration.
//!
//! Sources (texts located with the search tool; the values below were
//! cross-checked against several independent implementations quoting them):
//! * RFC 7638, "JSON Web Key (JWK) Thumbprint", section 3.1 (RSA example),
//!   <https://www.rfc-editor.org/rfc/rfc7638#section-3.1>;
//! * RFC 8037, "CFRG Elliptic Curve Diffie-Hellman (ECDH) and Signatures in
//!   JOSE", appendix A.1-A.5 (Ed25519 key, thumbprint, signing, validation),
//!   <https://www.rfc-editor.org/rfc/rfc8037#appendix-A>;
//! * RFC 7515, "JSON Web Signature (JWS)", appendix A.3 (ES256 example),
//!   <https://www.rfc-editor.org/rfc/rfc7515#appendix-A.3>.
//!
//! The RFC examples carry no `kid`, so [`verify`] refuses them as
//! `unknown_key`; the signature core is tested directly through the same
//! internal steps `verify` runs.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use serde_json::json;

use super::support::*;
use crate::jose::token::{check_header, check_signature, parse_claims, split_compact};
use crate::jose::{Algorithm, KeySet, Rejection, SigningKey, VerifyingKey, b64, verify};

/// RFC 7638 section 3.1: the RSA key (from RFC 7517 appendix A.1).
const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
/// RFC 7638 section 3.1: the expected thumbprint.
const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/// RFC 8037 appendix A.1: Ed25519 secret seed `d` and public key `x`.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/// RFC 8037 appendix A.3: the thumbprint of that key.
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
/// RFC 8037 appendix A.4: the JWS of "Example of Ed25519 signing".
const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// RFC 7515 appendix A.3: the P-256 key and the ES256 JWS.
const RFC7515_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const RFC7515_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const RFC7515_A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// The order `n` of the P-256 group (FIPS 186-4 D.1.2.3), big-endian.
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// The signature core of [`verify`] for a token without `kid`: the same
/// steps, with the key given instead of looked up.
fn verify_with_key(token: &str, key: &VerifyingKey) -> Result<(), Rejection> {
    let compact = split_compact(token.as_bytes())?;
    let (alg, kid, _typ) = check_header(&compact.header)?;
    assert_eq!(kid, None);
    check_signature(key, alg, &compact)
}

fn rfc8037_signing_key() -> SigningKey {
    let d = b64::decode(RFC8037_D.as_bytes()).unwrap();
    let x = b64::decode(RFC8037_X.as_bytes()).unwrap();
    let pair = Ed25519KeyPair::from_seed_and_public_key(&d, &x).unwrap();
    SigningKey::from_pkcs8_der(pair.to_pkcs8().unwrap().as_ref()).unwrap()
}

#[test]
fn rfc7638_rsa_thumbprint() {
    let jwk =
        json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
    let key = VerifyingKey::from_jwk(&jwk).unwrap();
    assert_eq!(key.thumbprint(), RFC7638_THUMBPRINT);
    assert_eq!(key.kid(), "2011-04-29");
    assert_eq!(key.algorithm(), Algorithm::RS256);
    // Without a kid, the kid is the thumbprint.
    let bare = VerifyingKey::from_jwk(&json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})).unwrap();
    assert_eq!(bare.kid(), RFC7638_THUMBPRINT);
    // The canonical input is exactly the RFC's (section 3.1).
    assert_eq!(
        crate::jose::jwk::thumbprint_input(&key.public),
        format!(r#"{{"e":"AQAB","kty":"RSA","n":"{RFC7638_N}"}}"#)
    );
}

#[test]
fn rfc8037_ed25519_thumbprint() {
    let key =
        VerifyingKey::from_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})).unwrap();
    assert_eq!(key.thumbprint(), RFC8037_THUMBPRINT);
    assert_eq!(key.kid(), RFC8037_THUMBPRINT);
    assert_eq!(key.algorithm(), Algorithm::EdDSA);
    // Appendix A.2/A.3: the private key derives the same public key.
    let signer = rfc8037_signing_key();
    assert_eq!(signer.verifying_key().thumbprint(), RFC8037_THUMBPRINT);
    assert_eq!(signer.verifying_key().to_jwk()["x"], RFC8037_X);
}

#[test]
fn rfc8037_ed25519_jws_signs_and_verifies() {
    // A.4: Ed25519 is deterministic, so signing reproduces the RFC exactly.
    let signer = rfc8037_signing_key();
    let (input, sig) = RFC8037_JWS.rsplit_once('.').unwrap();
    assert_eq!(
        b64::encode(&signer.sign_raw(input.as_bytes()).unwrap()),
        sig
    );
    // A.5: validation.
    let key =
        VerifyingKey::from_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})).unwrap();
    verify_with_key(RFC8037_JWS, &key).unwrap();
    let compact = split_compact(RFC8037_JWS.as_bytes()).unwrap();
    assert_eq!(compact.payload, b"Example of Ed25519 signing");
    // A one-bit change anywhere in the signed part breaks it.
    let tampered = RFC8037_JWS.replacen("RXhh", "RXhi", 1);
    assert_eq!(
        verify_with_key(&tampered, &key),
        Err(Rejection::BadSignature)
    );
    // Through `verify`: no kid, so the key cannot be selected; and its
    // payload is not a JWT claims set anyway.
    let mut keys = KeySet::new();
    keys.insert(key);
    assert_eq!(
        verify(RFC8037_JWS.as_bytes(), &keys).unwrap_err(),
        Rejection::UnknownKey
    );
}

#[test]
fn rfc7515_a3_es256_verifies() {
    // The RFC's JWK also carries "d"; a public JWK must not, so it is left out.
    let key = VerifyingKey::from_jwk(
        &json!({"kty": "EC", "crv": "P-256", "x": RFC7515_X, "y": RFC7515_Y}),
    )
    .unwrap();
    assert_eq!(key.algorithm(), Algorithm::ES256);
    verify_with_key(RFC7515_A3_JWS, &key).unwrap();
    // Its payload (with CRLF whitespace and a URI-named claim) parses strictly.
    let compact = split_compact(RFC7515_A3_JWS.as_bytes()).unwrap();
    let claims = parse_claims(&compact.payload).unwrap();
    assert_eq!(claims.iss.as_deref(), Some("joe"));
    assert_eq!(claims.exp, Some(1_300_819_380));
    assert_eq!(claims.other["http://example.com/is_root"], true);
    // The RFC private key derives the RFC public key and signs verifiable
    // (randomized) signatures.
    let d = b64::decode(RFC7515_D.as_bytes()).unwrap();
    let point = [
        &[0x04][..],
        &b64::decode(RFC7515_X.as_bytes()).unwrap(),
        &b64::decode(RFC7515_Y.as_bytes()).unwrap(),
    ]
    .concat();
    let pair =
        EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &d, &point)
            .unwrap();
    let signer = SigningKey::from_pkcs8_der(pair.to_pkcs8v1().unwrap().as_ref()).unwrap();
    assert_eq!(signer.verifying_key().thumbprint(), key.thumbprint());
    let (input, _) = RFC7515_A3_JWS.rsplit_once('.').unwrap();
    let fresh = format!(
        "{input}.{}",
        b64::encode(&signer.sign_raw(input.as_bytes()).unwrap())
    );
    verify_with_key(&fresh, &key).unwrap();
    // A key under the same header alg but a different curve point fails.
    let other = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .verifying_key();
    assert_eq!(
        verify_with_key(RFC7515_A3_JWS, &other),
        Err(Rejection::BadSignature)
    );
    // An Ed25519 key is never tried for an ES256 header.
    let ed =
        VerifyingKey::from_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})).unwrap();
    assert_eq!(
        verify_with_key(RFC7515_A3_JWS, &ed).unwrap_err().code(),
        "unsupported_alg"
    );
}

/// `n - s` for a 32-byte big-endian `s < n`.
fn negate_mod_order(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// ECDSA malleability, demonstrated: `(r, n - s)` verifies whenever `(r, s)`
/// does. The twin is a *different token string* carrying the same claims,
/// which is why token identity must come from `token_digest`, never from the
/// signature bytes.
#[test]
fn es256_twin_signature_also_verifies() {
    let f = Fixture::new();
    let token = valid_es(&f);
    let original = verify(&token, &f.keys).unwrap();

    let mut seg = segments(&token);
    let sig = b64::decode(seg[2].as_bytes()).unwrap();
    let twin_s = negate_mod_order(&sig[32..]);
    assert_ne!(&twin_s[..], &sig[32..]);
    seg[2] = b64::encode(&[&sig[..32], &twin_s[..]].concat());
    let twin_token = join(&seg);
    assert_ne!(twin_token, token);

    let twin = verify(&twin_token, &f.keys).expect("(r, n-s) verifies: ECDSA is malleable");
    assert_eq!(twin.claims(), original.claims());
    assert_eq!(twin.header(), original.header());
    assert_ne!(twin.token_digest(), original.token_digest());

    // And the RFC 7515 A.3 signature's twin verifies too.
    let key = VerifyingKey::from_jwk(
        &json!({"kty": "EC", "crv": "P-256", "x": RFC7515_X, "y": RFC7515_Y}),
    )
    .unwrap();
    let (input, sig) = RFC7515_A3_JWS.rsplit_once('.').unwrap();
    let sig = b64::decode(sig.as_bytes()).unwrap();
    let twin = format!(
        "{input}.{}",
        b64::encode(&[&sig[..32], &negate_mod_order(&sig[32..])[..]].concat())
    );
    verify_with_key(&twin, &key).unwrap();
}

#[test]
fn token_digest_is_sha256_of_the_exact_bytes() {
    let f = Fixture::new();
    let token = valid_ed(&f);
    let verified = verify(&token, &f.keys).unwrap();
    let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &token);
    assert_eq!(&verified.token_digest()[..], expected.as_ref());
}

/// The Ed25519 group order `L` (RFC 8032 section 5.1), little-endian.
const ED25519_ORDER_LE: [u8; 32] = [
    0xED, 0xD3, 0xF5, 0x5C, 0x1A, 0x63, 0x12, 0x58, 0xD6, 0x9C, 0xF7, 0xA2, 0xDE, 0xF9, 0xDE, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// Unlike ECDSA, EdDSA here has no twin: `(R, S + L)` satisfies the
/// verification equation but AWS-LC refuses `S >= L` (RFC 8032 section
/// 5.1.7), so the module documentation's claim holds.
#[test]
fn eddsa_non_canonical_s_is_refused() {
    let f = Fixture::new();
    let token = valid_ed(&f);
    let mut seg = segments(&token);
    let sig = b64::decode(seg[2].as_bytes()).unwrap();
    let mut s_plus_l = [0u8; 32];
    let mut carry = 0u16;
    for (i, out) in s_plus_l.iter_mut().enumerate() {
        let sum = u16::from(sig[32 + i]) + u16::from(ED25519_ORDER_LE[i]) + carry;
        *out = (sum & 0xFF) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0); // S < L < 2^253, so S + L < 2^254 fits in 32 bytes
    seg[2] = b64::encode(&[&sig[..32], &s_plus_l[..]].concat());
    assert_eq!(
        verify(&join(&seg), &f.keys).unwrap_err(),
        Rejection::BadSignature
    );
}
