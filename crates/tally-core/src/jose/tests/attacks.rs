//! The data-driven attack table: every row is a forged or broken token and
//! the rejection code it must get. Tokens that are refused by a header or
//! payload rule are, where possible, *correctly signed* by the trusted key,
//! so the row proves the rule itself refuses them.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

use super::support::*;
use crate::jose::{Rejection, b64, verify};

/// A token builder for one row.
type Build = fn(&Fixture) -> Vec<u8>;

/// `(name, token builder, expected Rejection::code())`.
const ATTACKS: &[(&str, Build, &str)] = &[
    // --- alg "none", every spelling --------------------------------------
    // Unsigned "none" tokens have an empty third segment; the shape check
    // names them for what they are (unsupported_alg) rather than malformed.
    (
        "alg none, unsigned",
        |_| with_sig_segment(r#"{"alg":"none","kid":"ed-key"}"#, CLAIMS, ""),
        "unsupported_alg",
    ),
    (
        "alg None, unsigned",
        |_| with_sig_segment(r#"{"alg":"None","kid":"ed-key"}"#, CLAIMS, ""),
        "unsupported_alg",
    ),
    (
        "alg NONE, unsigned",
        |_| with_sig_segment(r#"{"alg":"NONE","kid":"ed-key"}"#, CLAIMS, ""),
        "unsupported_alg",
    ),
    (
        "alg none, unsigned, no kid",
        |_| with_sig_segment(r#"{"alg":"none"}"#, CLAIMS, ""),
        "unsupported_alg",
    ),
    (
        "empty signature, alg EdDSA",
        |_| with_sig_segment(r#"{"alg":"EdDSA","kid":"ed-key"}"#, CLAIMS, ""),
        "malformed",
    ),
    (
        "alg none, signed by the trusted key",
        |f| signed(&f.ed, &hdr("none", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg None, signed by the trusted key",
        |f| signed(&f.ed, &hdr("None", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg NONE, signed by the trusted key",
        |f| signed(&f.ed, &hdr("NONE", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg nOnE, signed by the trusted key",
        |f| signed(&f.ed, &hdr("nOnE", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg none, junk signature",
        |_| with_sig_segment(&hdr("none", ED_KID), CLAIMS, "AAAA"),
        "unsupported_alg",
    ),
    (
        "alg none, unknown kid (alg is checked first)",
        |_| with_sig_segment(&hdr("none", "nope"), CLAIMS, "AAAA"),
        "unsupported_alg",
    ),
    // --- HMAC with the public key as secret, and other algorithms ------------
    (
        "HS256, HMAC secret = raw Ed25519 public key",
        |f| hs256(ED_KID, &raw_public(&f.ed)),
        "unsupported_alg",
    ),
    (
        "HS256, HMAC secret = P-256 point",
        |f| hs256(ES_KID, &raw_public(&f.es)),
        "unsupported_alg",
    ),
    (
        "HS256, HMAC secret = RSA modulus",
        |f| hs256(RS_KID, &raw_public(&f.rs)),
        "unsupported_alg",
    ),
    (
        "HS256, HMAC secret = the published JWK text",
        |f| hs256(ED_KID, f.ed.verifying_key().to_jwk().to_string().as_bytes()),
        "unsupported_alg",
    ),
    (
        "alg HS256 signed by the Ed25519 key",
        |f| signed(&f.ed, &hdr("HS256", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg PS256 on the RSA key",
        |f| signed(&f.rs, &hdr("PS256", RS_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg ES384",
        |f| signed(&f.es, &hdr("ES384", ES_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg lower-case eddsa",
        |f| signed(&f.ed, &hdr("eddsa", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg with trailing space",
        |f| signed(&f.ed, &hdr("EdDSA ", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg missing",
        |f| signed(&f.ed, r#"{"kid":"ed-key"}"#, CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg is a number",
        |f| signed(&f.ed, r#"{"alg":1,"kid":"ed-key"}"#, CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg is null",
        |f| signed(&f.ed, r#"{"alg":null,"kid":"ed-key"}"#, CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg is an array",
        |f| signed(&f.ed, r#"{"alg":["EdDSA"],"kid":"ed-key"}"#, CLAIMS),
        "unsupported_alg",
    ),
    // --- key binding ------------------------------------------------------
    (
        "alg switched EdDSA->ES256 on the Ed25519 kid",
        |f| signed(&f.es, &hdr("ES256", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg switched EdDSA->RS256 on the Ed25519 kid",
        |f| signed(&f.rs, &hdr("RS256", ED_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg switched ES256->EdDSA on the P-256 kid",
        |f| signed(&f.ed, &hdr("EdDSA", ES_KID), CLAIMS),
        "unsupported_alg",
    ),
    (
        "alg switched RS256->ES256 on the RSA kid",
        |f| signed(&f.es, &hdr("ES256", RS_KID), CLAIMS),
        "unsupported_alg",
    ),
    // --- kid ----------------------------------------------------------------
    (
        "unknown kid",
        |f| signed(&f.ed, &hdr("EdDSA", "nope"), CLAIMS),
        "unknown_key",
    ),
    (
        "kid path traversal",
        |f| signed(&f.ed, &hdr("EdDSA", "../../etc/passwd"), CLAIMS),
        "unknown_key",
    ),
    (
        "kid /dev/null",
        |f| signed(&f.ed, &hdr("EdDSA", "/dev/null"), CLAIMS),
        "unknown_key",
    ),
    (
        "kid SQL injection",
        |f| signed(&f.ed, &hdr("EdDSA", "' OR 1=1 --"), CLAIMS),
        "unknown_key",
    ),
    (
        "kid URL",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", "https://attacker.example/k.json"),
                CLAIMS,
            )
        },
        "unknown_key",
    ),
    (
        "kid differs in case",
        |f| signed(&f.ed, &hdr("EdDSA", "ED-KEY"), CLAIMS),
        "unknown_key",
    ),
    (
        "kid with NUL suffix",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":"ed-key\u0000"}"#, CLAIMS),
        "unknown_key",
    ),
    (
        "kid empty",
        |f| signed(&f.ed, &hdr("EdDSA", ""), CLAIMS),
        "unknown_key",
    ),
    (
        "kid absent",
        |f| signed(&f.ed, r#"{"alg":"EdDSA"}"#, CLAIMS),
        "unknown_key",
    ),
    (
        "kid is a number",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":7}"#, CLAIMS),
        "unknown_key",
    ),
    (
        "kid is null",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":null}"#, CLAIMS),
        "unknown_key",
    ),
    (
        "kid is an array",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":["ed-key"]}"#, CLAIMS),
        "unknown_key",
    ),
    (
        "unknown kid with junk signature (kid before signature)",
        |_| with_sig_segment(&hdr("EdDSA", "nope"), CLAIMS, "AAAA"),
        "unknown_key",
    ),
    // --- keys carried or pointed to by the token ----------------------------
    (
        "embedded jwk of the attacker's key, signed by it",
        |f| {
            let jwk = f.other_ed.verifying_key().to_jwk();
            let h = format!(r#"{{"alg":"EdDSA","kid":"ed-key","jwk":{jwk}}}"#);
            signed(&f.other_ed, &h, CLAIMS)
        },
        "unsupported_alg",
    ),
    (
        "embedded jwk, kid = the attacker key's thumbprint",
        |f| {
            let vk = f.other_ed.verifying_key();
            let h = format!(
                r#"{{"alg":"EdDSA","kid":"{}","jwk":{}}}"#,
                vk.kid(),
                vk.to_jwk()
            );
            signed(&f.other_ed, &h, CLAIMS)
        },
        "unsupported_alg",
    ),
    (
        "jku header, correctly signed",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","jku":"https://attacker.example/jwks"}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "x5u header, correctly signed",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","x5u":"https://attacker.example/c.pem"}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "x5c header, correctly signed",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","x5c":["MIIB"]}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "x5t header, correctly signed",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","x5t":"AAAA"}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "x5t#S256 header, correctly signed",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","x5t#S256":"AAAA"}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "jwk header with null value",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","jwk":null}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "jku with unknown kid (header rules before kid)",
        |_| with_sig_segment(r#"{"alg":"EdDSA","kid":"nope","jku":"x"}"#, CLAIMS, "AAAA"),
        "unsupported_alg",
    ),
    // --- crit / b64 / zip ---------------------------------------------------
    (
        "crit naming an unknown extension",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","crit":["urn:x"],"urn:x":1}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "crit naming a registered claim",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","crit":["exp"]}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "crit empty",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":"ed-key","crit":[]}"#, CLAIMS),
        "unsupported_alg",
    ),
    (
        "crit b64 with b64 false",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","b64":false,"crit":["b64"]}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "b64 true without crit",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","b64":true}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    (
        "zip DEF",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","zip":"DEF"}"#,
                CLAIMS,
            )
        },
        "unsupported_alg",
    ),
    // --- duplicate members --------------------------------------------------
    (
        "duplicate alg in header (none last)",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","alg":"none","kid":"ed-key"}"#,
                CLAIMS,
            )
        },
        "malformed",
    ),
    (
        "duplicate alg in header (EdDSA last)",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"none","alg":"EdDSA","kid":"ed-key"}"#,
                CLAIMS,
            )
        },
        "malformed",
    ),
    (
        "duplicate alg via escape",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","\u0061lg":"EdDSA","kid":"ed-key"}"#,
                CLAIMS,
            )
        },
        "malformed",
    ),
    (
        "duplicate kid in header",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"nope","kid":"ed-key"}"#,
                CLAIMS,
            )
        },
        "malformed",
    ),
    (
        "duplicate exp in payload",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"iss":"https://issuer.example","aud":"tally","exp":1,"exp":4102444800}"#,
            )
        },
        "malformed",
    ),
    (
        "duplicate exp via escape",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":1,"\u0065xp":4102444800}"#,
            )
        },
        "malformed",
    ),
    (
        "duplicate member nested in an object claim",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"ctx":{"role":"user","role":"admin"}}"#,
            )
        },
        "malformed",
    ),
    (
        "duplicate member in an object inside an array claim",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"grants":[{"a":1},{"b":1,"b":2}]}"#,
            )
        },
        "malformed",
    ),
    (
        "duplicate member deep in a header extension",
        |f| {
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","ext":{"x":[{"y":{"z":1,"z":1}}]}}"#,
                CLAIMS,
            )
        },
        "malformed",
    ),
    // --- base64 -------------------------------------------------------------
    (
        "padding on the header",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[0].push('=');
            join(&s)
        },
        "malformed",
    ),
    (
        "padding on the signature",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[2].push_str("==");
            join(&s)
        },
        "malformed",
    ),
    (
        "header in padded standard base64, correctly signed",
        |f| {
            use base64::Engine as _;
            let h = base64::engine::general_purpose::STANDARD
                .encode(r#"{"alg":"EdDSA","kid":"ed-key","x":12}"#);
            assert!(h.ends_with('='));
            let input = format!("{h}.{}", b64::encode(CLAIMS.as_bytes()));
            let sig = f.ed.sign_raw(input.as_bytes()).unwrap();
            format!("{input}.{}", b64::encode(&sig)).into_bytes()
        },
        "malformed",
    ),
    (
        "'+' in the signature",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[2].replace_range(0..1, "+");
            join(&s)
        },
        "malformed",
    ),
    (
        "'/' in the signature",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[2].replace_range(0..1, "/");
            join(&s)
        },
        "malformed",
    ),
    (
        "non-canonical trailing bits in the signature",
        |f| {
            // 64 bytes -> 86 chars; the last char carries 2 data bits and 4
            // unused bits. 'B' (000001) sets an unused bit.
            let mut s = segments(&valid_ed(f));
            let last = s[2].len() - 1;
            s[2].replace_range(last.., "B");
            join(&s)
        },
        "malformed",
    ),
    (
        "impossible base64 length",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[1] = "AAAAA".to_owned();
            join(&s)
        },
        "malformed",
    ),
    (
        "space inside a segment",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[1].insert(4, ' ');
            join(&s)
        },
        "malformed",
    ),
    (
        "trailing newline",
        |f| [valid_ed(f), b"\n".to_vec()].concat(),
        "malformed",
    ),
    (
        "leading space",
        |f| [b" ".to_vec(), valid_ed(f)].concat(),
        "malformed",
    ),
    (
        "non-ASCII byte",
        |f| {
            let mut t = valid_ed(f);
            t.insert(3, 0xC3);
            t
        },
        "malformed",
    ),
    // --- segments -----------------------------------------------------------
    (
        "four segments (trailing data)",
        |f| [valid_ed(f), b".AAAA".to_vec()].concat(),
        "malformed",
    ),
    (
        "four segments (trailing dot)",
        |f| [valid_ed(f), b".".to_vec()].concat(),
        "malformed",
    ),
    (
        "five segments (JWE shape)",
        |f| [valid_ed(f), b".AAAA.AAAA".to_vec()].concat(),
        "malformed",
    ),
    (
        "two segments",
        |_| signing_input(hdr("EdDSA", ED_KID).as_bytes(), CLAIMS.as_bytes()).into_bytes(),
        "malformed",
    ),
    (
        "one segment",
        |_| b64::encode(hdr("EdDSA", ED_KID).as_bytes()).into_bytes(),
        "malformed",
    ),
    ("empty token", |_| Vec::new(), "malformed"),
    ("only dots", |_| b"..".to_vec(), "malformed"),
    (
        "empty signature segment",
        |_| with_sig_segment(&hdr("EdDSA", ED_KID), CLAIMS, ""),
        "malformed",
    ),
    (
        "empty payload segment",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[1].clear();
            join(&s)
        },
        "malformed",
    ),
    (
        "empty header segment",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[0].clear();
            join(&s)
        },
        "malformed",
    ),
    (
        "9 KiB token, correctly signed",
        |f| {
            let payload = format!(r#"{{"exp":4102444800,"pad":"{}"}}"#, "x".repeat(6700));
            let token = signed(&f.ed, &hdr("EdDSA", ED_KID), &payload);
            assert!(
                (9 * 1024 - 200..=9 * 1024 + 200).contains(&token.len()),
                "{}",
                token.len()
            );
            token
        },
        "malformed",
    ),
    // --- header / payload not JSON objects ----------------------------------
    (
        "header is a JSON array",
        |f| signed(&f.ed, "[]", CLAIMS),
        "malformed",
    ),
    (
        "header is a JSON string",
        |f| signed(&f.ed, r#""EdDSA""#, CLAIMS),
        "malformed",
    ),
    (
        "header is not JSON",
        |f| signed(&f.ed, "alg=EdDSA", CLAIMS),
        "malformed",
    ),
    (
        "header is invalid UTF-8",
        |f| {
            signed_bytes(
                &f.ed,
                b"{\"alg\":\"EdDSA\",\"kid\":\"ed-key\",\"x\":\"\xff\"}",
                CLAIMS.as_bytes(),
            )
        },
        "malformed",
    ),
    (
        "header with trailing garbage",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":"ed-key"}x"#, CLAIMS),
        "malformed",
    ),
    (
        "typ is a number",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":"ed-key","typ":1}"#, CLAIMS),
        "malformed",
    ),
    (
        "cty is an object",
        |f| signed(&f.ed, r#"{"alg":"EdDSA","kid":"ed-key","cty":{}}"#, CLAIMS),
        "malformed",
    ),
    (
        "payload is a JSON array, correctly signed",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), "[1,2]"),
        "malformed",
    ),
    (
        "payload is a nested JWT string, correctly signed",
        |f| {
            let inner = String::from_utf8(valid_es(f)).unwrap();
            signed(
                &f.ed,
                r#"{"alg":"EdDSA","kid":"ed-key","cty":"JWT"}"#,
                &format!("\"{inner}\""),
            )
        },
        "malformed",
    ),
    (
        "payload is invalid UTF-8, correctly signed",
        |f| {
            signed_bytes(
                &f.ed,
                hdr("EdDSA", ED_KID).as_bytes(),
                b"{\"sub\":\"\xc3\x28\"}",
            )
        },
        "malformed",
    ),
    (
        "payload is not JSON, correctly signed",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), "hello"),
        "malformed",
    ),
    // --- claim types (all correctly signed) ---------------------------------
    (
        "exp is a float",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":4102444800.5}"#),
        "malformed",
    ),
    (
        "exp is an integral float",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":4102444800.0}"#),
        "malformed",
    ),
    (
        "exp in exponent notation",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":4.1e9}"#),
        "malformed",
    ),
    (
        "exp is a string",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":"4102444800"}"#),
        "malformed",
    ),
    (
        "exp beyond i64",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":9223372036854775808}"#,
            )
        },
        "malformed",
    ),
    (
        "exp is null",
        |f| signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":null}"#),
        "malformed",
    ),
    (
        "nbf is a bool",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"nbf":true}"#,
            )
        },
        "malformed",
    ),
    (
        "iat is a float",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"iat":1.5}"#,
            )
        },
        "malformed",
    ),
    (
        "aud is a number",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"aud":1}"#,
            )
        },
        "malformed",
    ),
    (
        "aud array holds a number",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"aud":["tally",1]}"#,
            )
        },
        "malformed",
    ),
    (
        "aud is an object",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"aud":{"tally":true}}"#,
            )
        },
        "malformed",
    ),
    (
        "iss is a number",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"iss":42}"#,
            )
        },
        "malformed",
    ),
    (
        "sub is an array",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"sub":["alice"]}"#,
            )
        },
        "malformed",
    ),
    (
        "jti is an object",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"jti":{}}"#,
            )
        },
        "malformed",
    ),
    (
        "client_id is a number",
        |f| {
            signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800,"client_id":5}"#,
            )
        },
        "malformed",
    ),
    // --- signatures -----------------------------------------------------------
    (
        "signature from another Ed25519 key, same kid",
        |f| signed(&f.other_ed, &hdr("EdDSA", ED_KID), CLAIMS),
        "bad_signature",
    ),
    (
        "signature from another P-256 key, same kid",
        |f| signed(&f.other_es, &hdr("ES256", ES_KID), CLAIMS),
        "bad_signature",
    ),
    (
        "RS256 signed by a 1024-bit key under the RSA kid",
        |_| RSA1024_TOKEN.trim_end().as_bytes().to_vec(),
        "bad_signature",
    ),
    (
        "ES256 signature in ASN.1 DER form",
        |f| {
            let der = f.es.to_pkcs8_der().unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der).unwrap();
            let input = signing_input(hdr("ES256", ES_KID).as_bytes(), CLAIMS.as_bytes());
            let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            assert_ne!(sig.as_ref().len(), 64);
            format!("{input}.{}", b64::encode(sig.as_ref())).into_bytes()
        },
        "bad_signature",
    ),
    (
        "signature truncated to 63 bytes",
        |f| {
            let mut s = segments(&valid_ed(f));
            let sig = b64::decode(s[2].as_bytes()).unwrap();
            s[2] = b64::encode(&sig[..63]);
            join(&s)
        },
        "bad_signature",
    ),
    (
        "signature extended to 65 bytes",
        |f| {
            let mut s = segments(&valid_ed(f));
            let mut sig = b64::decode(s[2].as_bytes()).unwrap();
            sig.push(0);
            s[2] = b64::encode(&sig);
            join(&s)
        },
        "bad_signature",
    ),
    (
        "RSA signature one byte short",
        |f| {
            let mut s = segments(&valid_rs(f));
            let sig = b64::decode(s[2].as_bytes()).unwrap();
            s[2] = b64::encode(&sig[1..]);
            join(&s)
        },
        "bad_signature",
    ),
    (
        "all-zero ES256 signature",
        |_| with_sig_segment(&hdr("ES256", ES_KID), CLAIMS, &b64::encode(&[0; 64])),
        "bad_signature",
    ),
    (
        "all-zero EdDSA signature",
        |_| with_sig_segment(&hdr("EdDSA", ED_KID), CLAIMS, &b64::encode(&[0; 64])),
        "bad_signature",
    ),
    (
        "one-byte signature",
        |_| with_sig_segment(&hdr("EdDSA", ED_KID), CLAIMS, "AA"),
        "bad_signature",
    ),
    (
        "payload swapped after signing",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[1] = b64::encode(
                br#"{"iss":"https://issuer.example","sub":"root","aud":"tally","exp":4102444800}"#,
            );
            join(&s)
        },
        "bad_signature",
    ),
    (
        "header re-encoded with whitespace, original signature",
        |f| {
            let mut s = segments(&valid_ed(f));
            s[0] = b64::encode(br#"{"alg":"EdDSA", "kid":"ed-key", "typ":"JWT"}"#);
            join(&s)
        },
        "bad_signature",
    ),
    (
        "signature of one token on another",
        |f| {
            let mut a = segments(&valid_ed(f));
            let b = segments(&signed(
                &f.ed,
                &hdr("EdDSA", ED_KID),
                r#"{"exp":4102444800}"#,
            ));
            a[2].clone_from(&b[2]);
            join(&a)
        },
        "bad_signature",
    ),
    (
        "bad signature over a malformed payload (signature first)",
        |f| {
            let mut s = segments(&signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":"soon"}"#));
            s[2] = b64::encode(&[7; 64]);
            join(&s)
        },
        "bad_signature",
    ),
];

#[test]
fn attack_table() {
    let f = Fixture::new();
    // The fixture itself must be sound: its valid tokens verify.
    for token in [valid_ed(&f), valid_es(&f), valid_rs(&f)] {
        verify(&token, &f.keys).unwrap();
    }
    let mut failures = Vec::new();
    for (name, build, expected) in ATTACKS {
        let token = build(&f);
        match verify(&token, &f.keys) {
            Ok(_) => failures.push(format!("{name}: ACCEPTED")),
            Err(e) if e.code() != *expected => {
                failures.push(format!("{name}: got {e:?}, expected {expected}"));
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "attack table failures:\n{}",
        failures.join("\n")
    );
    assert!(ATTACKS.len() >= 100, "{}", ATTACKS.len());
}

#[test]
fn attack_names_are_unique() {
    let mut names: Vec<&str> = ATTACKS.iter().map(|(n, _, _)| *n).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len());
}

#[test]
fn size_is_checked_before_decoding() {
    let f = Fixture::new();
    // 8193 bytes that are not even base64: the size rule must fire first.
    let junk = vec![b'!'; crate::jose::MAX_TOKEN_BYTES + 1];
    assert_eq!(
        verify(&junk, &f.keys),
        Err(Rejection::Malformed("token exceeds 8192 bytes"))
    );
    let huge = vec![b'.'; 1 << 20];
    assert_eq!(
        verify(&huge, &f.keys),
        Err(Rejection::Malformed("token exceeds 8192 bytes"))
    );
}

#[test]
fn exactly_8192_bytes_is_accepted_and_8193_is_not() {
    let f = Fixture::new();
    let max = crate::jose::MAX_TOKEN_BYTES;
    let mut found = None;
    // The payload segment length cannot be 1 mod 4, so vary the kid length
    // too until the total lands exactly on the limit.
    'search: for kid_len in 1..4 {
        let kid = "k".repeat(kid_len);
        for pad in 5_900..6_200 {
            let payload = format!(r#"{{"exp":4102444800,"pad":"{}"}}"#, "x".repeat(pad));
            if signed(&f.ed, &hdr("EdDSA", &kid), &payload).len() == max {
                found = Some((kid, payload));
                break 'search;
            }
        }
    }
    let (kid, payload) = found.expect("a token of exactly 8192 bytes");
    let mut keys = f.keys.clone();
    keys.insert(f.ed.verifying_key().with_kid(kid.clone()));
    let token = signed(&f.ed, &hdr("EdDSA", &kid), &payload);
    assert_eq!(token.len(), max);
    verify(&token, &keys).unwrap();

    let longer = signed(
        &f.ed,
        &hdr("EdDSA", &kid),
        &payload.replacen("xxxx", "xxxxx", 1),
    );
    assert!(longer.len() > max);
    assert_eq!(
        verify(&longer, &keys),
        Err(Rejection::Malformed("token exceeds 8192 bytes"))
    );
}

#[test]
fn rejection_details_name_the_rule() {
    let f = Fixture::new();
    let check = |token: Vec<u8>, expected: Rejection| {
        assert_eq!(verify(&token, &f.keys).unwrap_err(), expected)
    };
    check(
        signed(&f.ed, &hdr("nOnE", ED_KID), CLAIMS),
        Rejection::UnsupportedAlg("alg none is never accepted"),
    );
    check(
        signed(&f.es, &hdr("ES256", ED_KID), CLAIMS),
        Rejection::UnsupportedAlg("alg differs from the algorithm the key is bound to"),
    );
    check(
        signed(
            &f.ed,
            r#"{"alg":"EdDSA","kid":"ed-key","crit":["exp"]}"#,
            CLAIMS,
        ),
        Rejection::UnsupportedAlg("crit header: no extensions are understood"),
    );
    check(
        signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"a":{"b":1,"b":2}}"#),
        Rejection::Malformed("duplicate JSON member"),
    );
    check(
        signed(&f.ed, &hdr("EdDSA", ED_KID), r#"{"exp":1.0}"#),
        Rejection::Malformed("exp is not an integer"),
    );
    check(
        with_sig_segment(&hdr("EdDSA", ED_KID), CLAIMS, ""),
        Rejection::Malformed("empty signature segment"),
    );
    let mut s = segments(&valid_ed(&f));
    s[2].push('=');
    check(
        join(&s),
        Rejection::Malformed("base64url padding is not allowed"),
    );
}

#[test]
fn rejection_codes_are_exact() {
    let all = [
        (Rejection::Malformed("x"), "malformed"),
        (Rejection::UnsupportedAlg("x"), "unsupported_alg"),
        (Rejection::UnknownKey, "unknown_key"),
        (Rejection::BadSignature, "bad_signature"),
        (Rejection::Expired, "expired"),
        (Rejection::NotYetValid, "not_yet_valid"),
        (Rejection::WrongAudience, "wrong_audience"),
        (Rejection::WrongIssuer, "wrong_issuer"),
    ];
    for (rejection, code) in all {
        assert_eq!(rejection.code(), code);
        assert!(!rejection.to_string().is_empty());
    }
}
