//! Randomized tests: no false rejects on fresh tokens, and no acceptance
//! (or panic) on mutated ones. Seeds are fixed so failures reproduce.

use serde_json::{Map, Number, Value};

use super::support::*;
use crate::jose::{Algorithm, KeySet, SigningKey, verify};

/// A random string mixing ASCII, JSON-significant characters, controls and
/// non-ASCII scalars.
fn random_string(rng: &mut Rng, max_len: usize) -> String {
    const SPECIAL: [char; 14] = [
        '"',
        '\\',
        '/',
        '\n',
        '\t',
        '\u{0}',
        '\u{1f}',
        '\u{7f}',
        'é',
        'ß',
        '€',
        '\u{2028}',
        '😀',
        '\u{10FFFF}',
    ];
    let len = rng.below(max_len + 1);
    (0..len)
        .map(|_| match rng.below(4) {
            0 => SPECIAL[rng.below(SPECIAL.len())],
            _ => char::from(b' ' + (rng.byte() % 95)),
        })
        .collect()
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::Number((rng.next_u64() as i64).into()),
        3 => Value::Number(rng.next_u64().into()),
        // Binary fractions print and parse exactly (serde_json without
        // `float_roundtrip` may be 1 ULP off on arbitrary floats).
        4 => Number::from_f64(f64::from(rng.next_u64() as u32) / 4.0)
            .map_or(Value::Null, Value::Number),
        5 => Value::String(random_string(rng, 24)),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                m.insert(random_string(rng, 8), random_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// Random but well-typed claims.
fn random_claims(rng: &mut Rng) -> Map<String, Value> {
    let mut m = Map::new();
    for _ in 0..rng.below(5) {
        let name = random_string(rng, 10);
        if !["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id"].contains(&name.as_str())
        {
            m.insert(name, random_value(rng, 2));
        }
    }
    let strings = ["iss", "sub", "jti", "client_id"];
    for name in strings {
        if rng.below(2) == 0 {
            m.insert(name.into(), Value::String(random_string(rng, 30)));
        }
    }
    for name in ["exp", "nbf", "iat"] {
        if rng.below(2) == 0 {
            m.insert(name.into(), Value::Number((rng.next_u64() as i64).into()));
        }
    }
    match rng.below(3) {
        0 => {}
        1 => {
            m.insert("aud".into(), Value::String(random_string(rng, 12)));
        }
        _ => {
            let list = (0..rng.below(4))
                .map(|_| Value::String(random_string(rng, 12)))
                .collect();
            m.insert("aud".into(), Value::Array(list));
        }
    }
    m
}

#[test]
fn ten_thousand_fresh_eddsa_tokens_all_verify() {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let mut keys = KeySet::new();
    keys.insert(key.verifying_key());
    let kid = key.verifying_key().kid().to_owned();
    let mut rng = Rng::new(0x7A11_E0D5_A11C_E001);
    let mut too_large = 0;
    let mut i = 0;
    while i < 10_000 {
        let claims = random_claims(&mut rng);
        let token = match key.sign_jwt(&kid, "JWT", &claims) {
            Ok(token) => token,
            Err(crate::jose::KeyError::TokenTooLarge) => {
                too_large += 1;
                continue;
            }
            Err(e) => panic!("{e:?}"),
        };
        let verified = verify(token.as_bytes(), &keys)
            .unwrap_or_else(|e| panic!("false reject #{i}: {e:?} for {token}"));
        assert_eq!(verified.claims().to_map(), normalize_aud(claims), "#{i}");
        i += 1;
    }
    assert!(too_large < 100, "{too_large}");
}

/// `Claims::to_map` writes a one-element `aud` as a string and drops an
/// empty one, both equivalent forms under RFC 7519.
fn normalize_aud(mut claims: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::Array(list)) = claims.get("aud").cloned() {
        match list.as_slice() {
            [] => {
                claims.remove("aud");
            }
            [one] => {
                claims.insert("aud".into(), one.clone());
            }
            _ => {}
        }
    }
    claims
}

/// One random edit of `token`.
fn mutate(rng: &mut Rng, token: &[u8]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"ABCabc019-_.=+/ \n\0\xff\xc3{}\"";
    let mut t = token.to_vec();
    let pick = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            INTERESTING[rng.below(INTERESTING.len())]
        } else {
            rng.byte()
        }
    };
    let edits = 1 + rng.below(3);
    for _ in 0..edits {
        let len = t.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                t[i] = pick(rng);
            }
            1 => {
                let i = rng.below(len + 1);
                let b = pick(rng);
                t.insert(i, b);
            }
            2 if len > 0 => {
                t.remove(rng.below(len));
            }
            3 if len > 0 => t.truncate(rng.below(len)),
            4 if len > 1 => {
                let (i, j) = (rng.below(len), rng.below(len));
                t.swap(i, j);
            }
            5 if len > 0 => {
                // Flip one bit.
                let i = rng.below(len);
                t[i] ^= 1 << rng.below(8);
            }
            6 if len > 0 => {
                // Duplicate a range.
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let piece = t[a..b].to_vec();
                let at = rng.below(t.len() + 1);
                t.splice(at..at, piece);
            }
            _ => {
                // Swap one base64url character for another.
                if len > 0 {
                    const ALPHA: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    let i = rng.below(len);
                    t[i] = ALPHA[rng.below(ALPHA.len())];
                }
            }
        }
    }
    t
}

#[test]
fn ten_thousand_mutations_never_panic_and_never_verify() {
    let f = Fixture::new();
    let originals = [valid_ed(&f), valid_es(&f), valid_rs(&f)];
    let mut rng = Rng::new(0xF022_5EED_0000_0001);
    let mut rejected = 0usize;
    let mut unchanged = 0usize;
    for i in 0..10_000 {
        let original = &originals[i % originals.len()];
        let mutated = mutate(&mut rng, original);
        match verify(&mutated, &f.keys) {
            Ok(_) => {
                assert_eq!(
                    &mutated,
                    original,
                    "mutation #{i} verified: {:?}",
                    String::from_utf8_lossy(&mutated)
                );
                unchanged += 1;
            }
            Err(_) => rejected += 1,
        }
    }
    assert_eq!(rejected + unchanged, 10_000);
    assert!(rejected > 9_900, "{rejected}");
}
