//! `ClaimsPolicy` and claim typing.

use serde_json::{Map, Value, json};

use crate::jose::claims::Claims;
use crate::jose::{ClaimsPolicy, DEFAULT_LEEWAY_SECS, Rejection};

const NOW: i64 = 1_800_000_000;

fn good() -> Claims {
    Claims {
        iss: Some("https://issuer.example".into()),
        aud: vec!["other".into(), "tally".into()],
        exp: Some(NOW + 300),
        nbf: Some(NOW - 10),
        ..Claims::default()
    }
}

fn policy() -> ClaimsPolicy {
    ClaimsPolicy::new("https://issuer.example", "tally")
}

#[test]
fn defaults() {
    let p = policy();
    assert_eq!(p.leeway_secs, DEFAULT_LEEWAY_SECS);
    assert_eq!(p.leeway_secs, 60);
    assert!(p.require_exp);
    p.check(&good(), NOW).unwrap();
}

#[test]
fn exp_boundaries_with_leeway() {
    let p = policy();
    let at = |exp: i64| Claims {
        exp: Some(exp),
        ..good()
    };
    // Valid while now - leeway < exp.
    p.check(&at(NOW - 59), NOW).unwrap();
    assert_eq!(p.check(&at(NOW - 60), NOW), Err(Rejection::Expired));
    assert_eq!(p.check(&at(NOW - 61), NOW), Err(Rejection::Expired));
    let strict = ClaimsPolicy {
        leeway_secs: 0,
        ..policy()
    };
    strict.check(&at(NOW + 1), NOW).unwrap();
    assert_eq!(strict.check(&at(NOW), NOW), Err(Rejection::Expired));
    // Negative leeway counts as zero, never as extra strictness overflow.
    let negative = ClaimsPolicy {
        leeway_secs: -1000,
        ..policy()
    };
    negative.check(&at(NOW + 1), NOW).unwrap();
}

#[test]
fn nbf_boundaries_with_leeway() {
    let p = policy();
    let at = |nbf: i64| Claims {
        nbf: Some(nbf),
        ..good()
    };
    p.check(&at(NOW + 60), NOW).unwrap();
    assert_eq!(p.check(&at(NOW + 61), NOW), Err(Rejection::NotYetValid));
    let strict = ClaimsPolicy {
        leeway_secs: 0,
        ..policy()
    };
    strict.check(&at(NOW), NOW).unwrap();
    assert_eq!(strict.check(&at(NOW + 1), NOW), Err(Rejection::NotYetValid));
    p.check(
        &Claims {
            nbf: None,
            ..good()
        },
        NOW,
    )
    .unwrap();
}

#[test]
fn missing_exp() {
    assert_eq!(
        policy().check(
            &Claims {
                exp: None,
                ..good()
            },
            NOW
        ),
        Err(Rejection::Malformed("missing exp claim"))
    );
    let lax = ClaimsPolicy {
        require_exp: false,
        ..policy()
    };
    lax.check(
        &Claims {
            exp: None,
            ..good()
        },
        NOW,
    )
    .unwrap();
}

#[test]
fn issuer_and_audience() {
    let p = policy();
    assert_eq!(
        p.check(
            &Claims {
                iss: None,
                ..good()
            },
            NOW
        ),
        Err(Rejection::WrongIssuer)
    );
    let other_iss = Claims {
        iss: Some("https://issuer.example/".into()),
        ..good()
    };
    assert_eq!(p.check(&other_iss, NOW), Err(Rejection::WrongIssuer));
    assert_eq!(
        p.check(
            &Claims {
                aud: vec![],
                ..good()
            },
            NOW
        ),
        Err(Rejection::WrongAudience)
    );
    let near = Claims {
        aud: vec!["Tally".into(), "tally ".into()],
        ..good()
    };
    assert_eq!(p.check(&near, NOW), Err(Rejection::WrongAudience));
}

#[test]
fn check_order_is_exp_nbf_iss_aud() {
    let p = policy();
    let everything_wrong = Claims {
        iss: Some("evil".into()),
        aud: vec!["evil".into()],
        exp: Some(NOW - 1000),
        nbf: Some(NOW + 1000),
        ..Claims::default()
    };
    assert_eq!(p.check(&everything_wrong, NOW), Err(Rejection::Expired));
    let c = Claims {
        exp: Some(NOW + 1000),
        ..everything_wrong.clone()
    };
    assert_eq!(p.check(&c, NOW), Err(Rejection::NotYetValid));
    let c = Claims { nbf: None, ..c };
    assert_eq!(p.check(&c, NOW), Err(Rejection::WrongIssuer));
    let c = Claims {
        iss: good().iss,
        ..c
    };
    assert_eq!(p.check(&c, NOW), Err(Rejection::WrongAudience));
    let missing_exp_and_wrong_issuer = Claims { exp: None, ..c };
    assert_eq!(
        p.check(&missing_exp_and_wrong_issuer, NOW)
            .unwrap_err()
            .code(),
        "malformed"
    );
}

#[test]
fn extreme_values_do_not_overflow() {
    let p = ClaimsPolicy {
        leeway_secs: i64::MAX,
        ..policy()
    };
    for now in [i64::MIN, -1, 0, i64::MAX] {
        for exp in [i64::MIN, 0, i64::MAX] {
            let _ = p.check(
                &Claims {
                    exp: Some(exp),
                    nbf: Some(exp),
                    ..good()
                },
                now,
            );
            let _ = policy().check(
                &Claims {
                    exp: Some(exp),
                    nbf: Some(exp),
                    ..good()
                },
                now,
            );
        }
    }
    assert_eq!(
        policy().check(
            &Claims {
                exp: Some(i64::MIN),
                ..good()
            },
            i64::MIN
        ),
        Err(Rejection::Expired)
    );
    policy()
        .check(
            &Claims {
                exp: Some(i64::MAX),
                nbf: Some(i64::MIN),
                ..good()
            },
            i64::MAX - 1,
        )
        .unwrap();
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn claim_typing() {
    let c = Claims::from_map(obj(json!({
        "iss": "i", "sub": "s", "aud": "a", "exp": 2, "nbf": -1, "iat": 0,
        "jti": "j", "client_id": "c", "scope": "read write", "n": 1.5
    })))
    .unwrap();
    assert_eq!(c.iss.as_deref(), Some("i"));
    assert_eq!(c.aud, vec!["a".to_owned()]);
    assert_eq!((c.exp, c.nbf, c.iat), (Some(2), Some(-1), Some(0)));
    assert_eq!(c.client_id.as_deref(), Some("c"));
    assert_eq!(c.other.len(), 2);
    assert_eq!(c.other["scope"], "read write");

    let many = Claims::from_map(obj(json!({"aud": ["a", "b"]}))).unwrap();
    assert_eq!(many.aud, vec!["a".to_owned(), "b".to_owned()]);
    assert!(
        Claims::from_map(obj(json!({"aud": []})))
            .unwrap()
            .aud
            .is_empty()
    );
    assert_eq!(Claims::from_map(Map::new()).unwrap(), Claims::default());
    assert_eq!(
        Claims::from_map(obj(json!({"exp": i64::MIN}))).unwrap().exp,
        Some(i64::MIN)
    );
    assert!(Claims::from_map(obj(json!({"exp": u64::MAX}))).is_err());
}

#[test]
fn to_map_round_trips() {
    let mut c = good();
    c.sub = Some("alice".into());
    c.jti = Some("id-1".into());
    c.client_id = Some("cli".into());
    c.iat = Some(NOW);
    c.other.insert("scope".into(), json!("read"));
    c.other
        .insert("nested".into(), json!({"a": [1, {"b": null}]}));
    assert_eq!(Claims::from_map(c.to_map()).unwrap(), c);
    let single = Claims {
        aud: vec!["x".into()],
        ..Claims::default()
    };
    assert_eq!(single.to_map()["aud"], "x");
    assert!(!Claims::default().to_map().contains_key("aud"));
    // Typed fields win over stray same-named members of `other`.
    let mut shadow = Claims {
        exp: Some(5),
        ..Claims::default()
    };
    shadow.other.insert("exp".into(), json!("later"));
    assert_eq!(shadow.to_map()["exp"], 5);
}
