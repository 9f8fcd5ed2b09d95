//! Key loading, export, JWK and key-set behaviour.

use serde_json::{Map, Value, json};

use super::support::*;
use crate::jose::{Algorithm, KeyError, KeySet, SigningKey, VerifyingKey, b64, verify};

const ALL: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

fn claims() -> Map<String, Value> {
    match serde_json::from_str(CLAIMS).unwrap() {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn algorithm_names() {
    for alg in ALL {
        assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        assert_eq!(alg.to_string(), alg.name());
    }
    for bad in ["none", "HS256", "eddsa", "ES256K", "RS256 ", ""] {
        assert_eq!(Algorithm::from_name(bad), None);
    }
}

#[test]
fn generated_keys_sign_tokens_that_verify() {
    for alg in ALL {
        let key = SigningKey::generate(alg).unwrap();
        assert_eq!(key.algorithm(), alg);
        let vk = key.verifying_key();
        assert_eq!(vk.algorithm(), alg);
        assert_eq!(vk.kid(), vk.thumbprint());
        let token = key.sign_jwt(vk.kid(), "at+jwt", &claims()).unwrap();
        let keys: KeySet = [vk.clone()].into_iter().collect();
        let verified = verify(token.as_bytes(), &keys).unwrap();
        assert_eq!(verified.header().alg, alg);
        assert_eq!(verified.header().kid, vk.kid());
        assert_eq!(verified.header().typ.as_deref(), Some("at+jwt"));
        assert_eq!(verified.claims().sub.as_deref(), Some("alice"));
        assert_eq!(verified.claims().aud, vec!["tally".to_owned()]);
        assert_eq!(verified.claims().exp, Some(4_102_444_800));
        // The header is exactly {"alg","kid","typ"}.
        let header = b64::decode(token.split('.').next().unwrap().as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(
                r#"{{"alg":"{}","kid":"{}","typ":"at+jwt"}}"#,
                alg.name(),
                vk.kid()
            )
        );
    }
}

#[test]
fn sign_jwt_escapes_header_strings() {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let kid = "a\"b\\c\u{1}";
    let token = key.sign_jwt(kid, "JWT", &claims()).unwrap();
    let keys: KeySet = [key.verifying_key().with_kid(kid.to_owned())]
        .into_iter()
        .collect();
    assert_eq!(verify(token.as_bytes(), &keys).unwrap().header().kid, kid);
}

#[test]
fn sign_jwt_refuses_what_verify_would_refuse() {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let mut bad = claims();
    bad.insert("exp".into(), json!(1.5));
    assert_eq!(
        key.sign_jwt("k", "JWT", &bad),
        Err(KeyError::InvalidClaims("exp is not an integer"))
    );
    let mut big = claims();
    big.insert("pad".into(), Value::String("x".repeat(7000)));
    assert_eq!(key.sign_jwt("k", "JWT", &big), Err(KeyError::TokenTooLarge));
}

#[test]
fn pkcs8_round_trips_and_keeps_the_original_bytes() {
    for alg in ALL {
        let key = SigningKey::generate(alg).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let again = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(*again.to_pkcs8_der().unwrap(), *der);
        assert_eq!(again.verifying_key(), key.verifying_key());
        assert_eq!(again.algorithm(), alg);
    }
}

#[test]
fn openssl_pems_load() {
    for (pem, alg) in [
        (ED25519_PEM, Algorithm::EdDSA), // PKCS#8 v1, as `openssl genpkey` writes it
        (P256_PEM, Algorithm::ES256),
        (RSA2048_PEM, Algorithm::RS256),
    ] {
        let key = SigningKey::from_pkcs8_pem(pem).unwrap();
        assert_eq!(key.algorithm(), alg);
        let token = key.sign_jwt("k", "JWT", &claims()).unwrap();
        let keys: KeySet = [key.verifying_key().with_kid("k".into())]
            .into_iter()
            .collect();
        verify(token.as_bytes(), &keys).unwrap();
        // CRLF line endings are accepted too.
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(
            SigningKey::from_pkcs8_pem(&crlf).unwrap().verifying_key(),
            key.verifying_key()
        );
    }
}

#[test]
fn rsa_1024_is_refused_everywhere() {
    // As a private key: AWS-LC refuses moduli under 2048 bits, reported as
    // `RsaKeySize`.
    assert_eq!(
        SigningKey::from_pkcs8_pem(RSA1024_PEM).unwrap_err(),
        KeyError::RsaKeySize
    );
    // As a public JWK: the modulus size is checked before the key exists.
    let jwk: Value = serde_json::from_str(RSA1024_JWK).unwrap();
    assert_eq!(
        VerifyingKey::from_jwk(&jwk).unwrap_err(),
        KeyError::RsaKeySize
    );
    // So no 1024-bit key can enter a KeySet, and a token signed by one (a
    // genuinely valid 1024-bit PKCS#1 v1.5 signature, checked below with the
    // legacy verifier) fails as a bad signature under the trusted 2048-bit key
    // that its kid names.
    let token = RSA1024_TOKEN.trim_end();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let n = b64::decode(jwk["n"].as_str().unwrap().as_bytes()).unwrap();
    let e = b64::decode(jwk["e"].as_str().unwrap().as_bytes()).unwrap();
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            input.as_bytes(),
            &b64::decode(sig.as_bytes()).unwrap(),
        )
        .unwrap();
    let f = Fixture::new();
    assert_eq!(
        verify(token.as_bytes(), &f.keys).unwrap_err().code(),
        "bad_signature"
    );
}

#[test]
fn unsupported_and_broken_keys() {
    assert!(matches!(
        SigningKey::from_pkcs8_pem(P384_PEM),
        Err(KeyError::UnsupportedKeyType(_))
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_der(b""),
        Err(KeyError::InvalidKey(_))
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_der(&[0x30, 0x00]),
        Err(KeyError::InvalidKey(_))
    ));
    let der = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    let mut trailing = der.to_vec();
    trailing.push(0);
    assert!(matches!(
        SigningKey::from_pkcs8_der(&trailing),
        Err(KeyError::InvalidKey(_))
    ));
    let mut corrupt = der.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1; // v2: the embedded public key no longer matches
    assert!(SigningKey::from_pkcs8_der(&corrupt).is_err());
    for bad_pem in [
        RSA2048_PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
        format!("comment\n{RSA2048_PEM}"),
        RSA2048_PEM.replacen('M', "m", 1),
        RSA2048_PEM.trim_end().to_owned() + "\n\n",
    ] {
        assert!(SigningKey::from_pkcs8_pem(&bad_pem).is_err());
    }
    assert!(matches!(
        SigningKey::from_pkcs8_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        Err(KeyError::InvalidPem(_))
    ));
}

#[test]
fn debug_never_shows_key_material() {
    for alg in ALL {
        let key = SigningKey::generate(alg).unwrap();
        let debug = format!("{key:?}");
        let kid = key.verifying_key().kid().to_owned();
        assert_eq!(
            debug,
            format!("SigningKey {{ kid: {kid:?}, alg: {alg:?}, .. }}")
        );
        let der = key.to_pkcs8_der().unwrap();
        assert!(!debug.contains(&b64::encode(&der)));
    }
}

#[test]
fn jwk_round_trip() {
    for alg in ALL {
        let vk = SigningKey::generate(alg)
            .unwrap()
            .verifying_key()
            .with_kid("k1".into());
        let jwk = vk.to_jwk();
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["alg"], alg.name());
        assert_eq!(jwk["use"], "sig");
        let back = VerifyingKey::from_jwk(&jwk).unwrap();
        assert_eq!(back, vk);
        assert_eq!(back.thumbprint(), vk.thumbprint());
        let members: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: &[&str] = match alg {
            Algorithm::EdDSA => &["alg", "crv", "kid", "kty", "use", "x"],
            Algorithm::ES256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
            Algorithm::RS256 => &["alg", "e", "kid", "kty", "n", "use"],
        };
        let mut sorted = members.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
    }
}

#[test]
fn jwk_strictness() {
    let ed = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .verifying_key()
        .to_jwk();
    let es = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .verifying_key()
        .to_jwk();
    let rs = SigningKey::from_pkcs8_pem(RSA2048_PEM)
        .unwrap()
        .verifying_key()
        .to_jwk();
    let edit = |base: &Value, f: &dyn Fn(&mut Map<String, Value>)| {
        let mut v = base.clone();
        f(v.as_object_mut().unwrap());
        v
    };
    let bad = [
        edit(&ed, &|m| {
            m.insert("d".into(), json!("AAAA"));
        }),
        edit(&rs, &|m| {
            m.insert("p".into(), json!("AAAA"));
        }),
        edit(&ed, &|m| {
            m.insert("alg".into(), json!("ES256"));
        }),
        edit(&rs, &|m| {
            m.insert("alg".into(), json!("PS256"));
        }),
        edit(&ed, &|m| {
            m.insert("use".into(), json!("enc"));
        }),
        edit(&ed, &|m| {
            m.insert("key_ops".into(), json!(["sign"]));
        }),
        edit(&ed, &|m| {
            m.insert("kid".into(), json!(""));
        }),
        edit(&ed, &|m| {
            m.insert("kid".into(), json!(3));
        }),
        edit(&ed, &|m| {
            m.insert("crv".into(), json!("Ed448"));
        }),
        edit(&ed, &|m| {
            m.insert("x".into(), json!(format!("{}=", m["x"].as_str().unwrap())));
        }),
        edit(&ed, &|m| {
            m.insert("x".into(), json!("AAAA"));
        }),
        edit(&ed, &|m| {
            m.remove("kty");
        }),
        edit(&es, &|m| {
            m.insert("crv".into(), json!("P-384"));
        }),
        edit(&es, &|m| {
            m.remove("y");
        }),
        // A point that is not on the curve (y of another point).
        edit(&es, &|m| {
            m.insert("y".into(), json!(b64::encode(&[1; 32])));
        }),
        edit(&rs, &|m| {
            let n = b64::decode(m["n"].as_str().unwrap().as_bytes()).unwrap();
            m.insert("n".into(), json!(b64::encode(&[&[0][..], &n].concat())));
        }),
        edit(&rs, &|m| {
            m.insert("e".into(), json!(b64::encode(&[0, 1, 0, 1])));
        }),
        edit(&rs, &|m| {
            m.insert("e".into(), json!(b64::encode(&[1])));
        }),
        edit(&rs, &|m| {
            m.insert("e".into(), json!(b64::encode(&[1, 0, 0, 0, 1])));
        }),
        json!({"kty": "oct", "k": "AAAA"}),
        json!({"kty": "oct"}),
        json!({"kty": "RSA-PSS"}),
        json!([]),
        json!("jwk"),
    ];
    for jwk in &bad {
        assert!(VerifyingKey::from_jwk(jwk).is_err(), "{jwk}");
    }
    // Accepted optional members.
    let ok = edit(&ed, &|m| {
        m.insert("key_ops".into(), json!(["verify"]));
        m.remove("alg");
        m.remove("use");
    });
    VerifyingKey::from_jwk(&ok).unwrap();
}

#[test]
fn key_set_operations() {
    let a = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .verifying_key();
    let b = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .verifying_key();
    let mut set = KeySet::new();
    assert!(set.is_empty());
    assert!(set.insert(a.clone()).is_none());
    assert!(set.insert(b.clone()).is_none());
    assert_eq!(set.len(), 2);
    assert_eq!(set.get(a.kid()), Some(&a));
    assert_eq!(set.get("missing"), None);
    let jwks = set.to_jwks();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(KeySet::from_jwks(&jwks).unwrap(), set);
    let mut kids: Vec<&str> = set.iter().map(VerifyingKey::kid).collect();
    let sorted = {
        let mut k = kids.clone();
        k.sort_unstable();
        k
    };
    assert_eq!(kids, sorted);
    kids.clear();
    assert_eq!((&set).into_iter().count(), 2);
    assert_eq!(set.remove(a.kid()), Some(a.clone()));
    assert_eq!(set.remove(a.kid()), None);
    assert_eq!(set.len(), 1);
    // Replacing under the same kid returns the old key.
    let replaced = set.insert(a.clone().with_kid(b.kid().to_owned()));
    assert_eq!(replaced, Some(b.clone()));

    let dup = json!({"keys": [a.to_jwk(), a.to_jwk()]});
    assert!(KeySet::from_jwks(&dup).is_err());
    assert!(KeySet::from_jwks(&json!({"keys": {}})).is_err());
    assert!(KeySet::from_jwks(&json!([])).is_err());
}

#[test]
fn types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SigningKey>();
    assert_send_sync::<VerifyingKey>();
    assert_send_sync::<KeySet>();
    assert_send_sync::<crate::jose::VerifiedToken>();
}
