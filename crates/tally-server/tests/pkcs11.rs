//! PKCS#11 signing against SoftHSM2 (`tally_server::keyring`).
//!
//! PKCS#11 state is process-wide (SoftHSM2 reads `SOFTHSM2_CONF` when it is
//! initialized, and the PIN comes from the environment), so every test that
//! touches a token runs its body in a child process of this test binary, with
//! its own token directory and environment: no test changes the environment of
//! this process, and the tests can run in parallel.
//!
//! The tests skip when SoftHSM2 is not installed; with `CI=true` its absence
//! fails them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::{Map, Value, json};
use tally_core::jose::{self, Algorithm, KeySet, SigningKey};
use tally_server::config::Pkcs11Config;
use tally_server::keyring::{Hsm, HsmError, HsmKey, sign_jwt};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Set in a child process: the test's private directory.
const CHILD: &str = "TALLY_TEST_HSM_DIR";
const PIN_VAR: &str = "TALLY_TEST_HSM_PIN";
const WRONG_PIN_VAR: &str = "TALLY_TEST_HSM_WRONG_PIN";
const UNSET_PIN_VAR: &str = "TALLY_TEST_HSM_PIN_NEVER_SET";
const PIN: &str = "user-Pin-4711-qX";
const WRONG_PIN: &str = "wrong-Pin-0815-zR";
const SO_PIN: &str = "so-Pin-1234-kV";
const LABEL: &str = "tally-test";

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("tally-hsm-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn softhsm_present() -> bool {
    if Path::new(MODULE).exists() {
        return true;
    }
    tally_testkit::skip(&format!(
        "SoftHSM2 is not installed ({MODULE}): apt-get install softhsm2"
    ));
    false
}

/// Runs `body` in a child process with a fresh SoftHSM2 token (label
/// [`LABEL`], user PIN [`PIN`]) and `PIN_VAR`/`WRONG_PIN_VAR` set.
fn isolated(test: &str, body: fn()) {
    if std::env::var_os(CHILD).is_some() {
        init_token();
        body();
        return;
    }
    if !softhsm_present() {
        return;
    }
    let dir = TempDir::new(test);
    let conf = dir.0.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            dir.0.join("tokens").display()
        ),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &dir.0)
        .env("SOFTHSM2_CONF", &conf)
        .env(PIN_VAR, PIN)
        .env(WRONG_PIN_VAR, WRONG_PIN)
        .env_remove(UNSET_PIN_VAR)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Indented, so that the child's `test result:` line is not counted as a
    // result of this binary by anything reading the log.
    let shown = |text: &str| {
        text.lines()
            .map(|l| format!("  | {l}\n"))
            .collect::<String>()
    };
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child for {test} failed ({}):\n{}{}",
        out.status,
        shown(&stdout),
        shown(&String::from_utf8_lossy(&out.stderr))
    );
}

/// Declares a test whose body runs in its own process with its own token.
macro_rules! hsm_test {
    ($(#[$doc:meta])* $name:ident, $body:expr) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            isolated(stringify!($name), $body)
        }
    };
}

/// A cryptoki context of the test itself, independent of the code under test.
fn raw_context() -> Pkcs11 {
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    ctx
}

/// Initializes the token in SoftHSM2's free slot through cryptoki: SO PIN,
/// label, then the user PIN.
fn init_token() {
    let ctx = raw_context();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
        .expect("SoftHSM2 offers a free slot");
    let so_pin = AuthPin::from(SO_PIN.to_owned());
    ctx.init_token(slot, &so_pin, LABEL).unwrap();
    {
        let session = ctx.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&so_pin)).unwrap();
        session.init_pin(&AuthPin::from(PIN.to_owned())).unwrap();
        session.logout().unwrap();
    }
    ctx.finalize().unwrap();
}

/// Runs `f` with a logged-in session of the test's own context (no [`Hsm`]
/// may be open meanwhile).
fn with_raw_session(f: impl FnOnce(&cryptoki::session::Session)) {
    let ctx = raw_context();
    let slot = ctx.get_slots_with_initialized_token().unwrap()[0];
    {
        let session = ctx.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
            .unwrap();
        f(&session);
    }
    ctx.finalize().unwrap();
}

fn config() -> Pkcs11Config {
    Pkcs11Config {
        module: MODULE.into(),
        slot: None,
        token_label: Some(LABEL.into()),
        pin_env: PIN_VAR.into(),
    }
}

fn claims() -> Map<String, Value> {
    json!({
        "iss": "https://tally.example",
        "sub": "alice",
        "aud": "tally",
        "exp": 4_000_000_000_i64,
        "iat": 1_700_000_000_i64,
        "jti": "0123456789abcdef"
    })
    .as_object()
    .unwrap()
    .clone()
}

/// Signs a JWT with `key` and checks it with the JOSE verifier against a key
/// set holding only the public key the HSM returned.
fn sign_and_verify(hsm: &Hsm, key: &HsmKey) -> String {
    let kid = "hsm-key-1";
    let token = sign_jwt(hsm, key, kid, "at+jwt", &claims()).unwrap();
    let keys: KeySet = [key.public.clone().with_kid(kid.to_owned())]
        .into_iter()
        .collect();
    let verified = jose::verify(token.as_bytes(), &keys).expect("the HSM token verifies");
    assert_eq!(verified.header().alg, key.alg);
    assert_eq!(verified.claims().sub.as_deref(), Some("alice"));
    token
}

/// Checks, with the test's own context, that the private key with `id` is
/// sensitive and non-extractable and that its value cannot be read.
fn assert_private_key_protected(id: &[u8]) {
    with_raw_session(|session| {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id.to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "one private key with the id");
        let attrs = session
            .get_attributes(
                found[0],
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Token,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
        assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
        assert!(
            attrs.contains(&Attribute::NeverExtractable(true)),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::AlwaysSensitive(true)),
            "{attrs:?}"
        );
        assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
        assert!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "CKA_VALUE of the private key must not be readable"
        );
        assert!(matches!(
            session
                .get_attribute_info(found[0], &[AttributeType::Value])
                .unwrap()[..],
            [AttributeInfo::Sensitive]
        ));
    });
}

/// Generate, sign, inspect, reopen, find, sign again.
fn round_trip(alg: Algorithm) {
    let hsm = Hsm::open(&config()).unwrap();
    let key = hsm.generate(alg, "tally token key").unwrap();
    assert_eq!(key.alg, alg);
    assert_eq!(key.public.algorithm(), alg);
    assert_eq!(key.id.len(), 16);
    let first = sign_and_verify(&hsm, &key);
    assert_eq!(hsm.sign(&key, b"message").unwrap().len(), 64);
    drop(hsm);

    assert_private_key_protected(&key.id);

    // A restart: a new module initialization, the key found by its id.
    let hsm = Hsm::open(&config()).unwrap();
    let found = hsm.find(&key.id).unwrap();
    assert_eq!(found.public, key.public);
    assert_eq!(found.alg, alg);
    let second = sign_and_verify(&hsm, &found);
    if alg == Algorithm::EdDSA {
        assert_eq!(first, second, "Ed25519 signatures are deterministic");
    }
    // An object handle of the closed connection is never used.
    assert_eq!(hsm.sign(&key, b"m").unwrap_err().code(), "hsm_stale_key");
}

hsm_test!(
    /// Ed25519 key generated in the token; JOSE-valid `EdDSA` tokens before and after a restart.
    ed25519_generate_sign_find,
    || round_trip(Algorithm::EdDSA)
);

hsm_test!(
    /// P-256 key generated in the token; JOSE-valid `ES256` tokens before and after a restart.
    p256_generate_sign_find,
    || round_trip(Algorithm::ES256)
);

hsm_test!(
    /// The token is laid out exactly like `SigningKey::sign_jwt`'s: same header
    /// bytes (but `alg`) and same payload bytes.
    jwt_layout_matches_software_signer,
    || {
        let hsm = Hsm::open(&config()).unwrap();
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = hsm.generate(alg, "layout").unwrap();
            let hsm_token = sign_jwt(&hsm, &key, "k1", "at+jwt", &claims()).unwrap();
            let soft = SigningKey::generate(alg).unwrap();
            let soft_token = soft.sign_jwt("k1", "at+jwt", &claims()).unwrap();
            let parts = |t: &str| t.split('.').map(str::to_owned).collect::<Vec<_>>();
            let (h, s) = (parts(&hsm_token), parts(&soft_token));
            assert_eq!(h[..2], s[..2], "{alg}: header and payload segments");
            assert_eq!(h[2].len(), s[2].len(), "{alg}: signature length");
        }
    }
);

hsm_test!(
    /// Claims the verifier would refuse are refused before signing, and so
    /// is a token over the size limit.
    bad_claims_and_size,
    || {
        let hsm = Hsm::open(&config()).unwrap();
        let key = hsm.generate(Algorithm::EdDSA, "claims").unwrap();
        for (name, value) in [
            ("exp", json!(1.5)),
            ("exp", json!("4000000000")),
            ("iat", json!(u64::MAX)),
            ("sub", json!(7)),
            ("aud", json!(["a", 1])),
        ] {
            let mut c = claims();
            c.insert(name.into(), value);
            let err = sign_jwt(&hsm, &key, "k", "at+jwt", &c).unwrap_err();
            assert_eq!(err.code(), "hsm_invalid_claims", "{name}");
        }
        let mut c = claims();
        c.insert("pad".into(), json!("x".repeat(8192)));
        let err = sign_jwt(&hsm, &key, "k", "at+jwt", &c).unwrap_err();
        assert_eq!(err.code(), "hsm_token_too_large");
        assert_eq!(
            hsm.generate(Algorithm::RS256, "rsa").unwrap_err().code(),
            "hsm_unsupported_algorithm"
        );
    }
);

hsm_test!(
    /// A wrong PIN is `hsm_pin_incorrect`; the right one still works after it.
    wrong_pin_is_pin_incorrect,
    || {
        let cfg = Pkcs11Config {
            pin_env: WRONG_PIN_VAR.into(),
            ..config()
        };
        let err = Hsm::open(&cfg).unwrap_err();
        assert_eq!(err.code(), "hsm_pin_incorrect", "{err}");
        Hsm::open(&config()).unwrap();
    }
);

hsm_test!(
    /// A PIN variable that is not set is `hsm_pin_missing`, naming the variable.
    unset_pin_env_is_pin_missing,
    || {
        let cfg = Pkcs11Config {
            pin_env: UNSET_PIN_VAR.into(),
            ..config()
        };
        let err = Hsm::open(&cfg).unwrap_err();
        assert_eq!(err.code(), "hsm_pin_missing");
        assert!(err.to_string().contains(UNSET_PIN_VAR), "{err}");
    }
);

hsm_test!(
    /// Slot and label select the token; a mismatch is `hsm_slot_not_found`.
    slot_selection,
    || {
        let slot = Hsm::open(&config()).unwrap().slot();
        let by_slot = Pkcs11Config {
            slot: Some(slot),
            token_label: None,
            ..config()
        };
        assert_eq!(Hsm::open(&by_slot).unwrap().token_label(), LABEL);
        let only_token = Pkcs11Config {
            token_label: None,
            ..config()
        };
        assert_eq!(Hsm::open(&only_token).unwrap().slot(), slot);
        for cfg in [
            Pkcs11Config {
                slot: Some(slot ^ 0x5a5a),
                ..config()
            },
            Pkcs11Config {
                token_label: Some("other".into()),
                ..config()
            },
        ] {
            assert_eq!(
                Hsm::open(&cfg).unwrap_err().code(),
                "hsm_slot_not_found"
            );
        }
    }
);

hsm_test!(
    /// A second `Hsm` on an open token is refused (its PIN would not be
    /// checked); after the first closes, opening works again.
    second_open_is_in_use,
    || {
        let first = Hsm::open(&config()).unwrap();
        assert_eq!(Hsm::open(&config()).unwrap_err().code(), "hsm_in_use");
        drop(first);
        Hsm::open(&config()).unwrap();
    }
);

hsm_test!(
    /// `find` refuses unknown ids, keys that are or were extractable, and
    /// curves tally does not sign with (Ed448).
    find_refuses_unknown_and_exportable_keys,
    || {
        let id = b"exportable-key".to_vec();
        let named = b"ed448-key".to_vec();
        with_raw_session(|session| {
            session
                .generate_key_pair(
                    &Mechanism::EccEdwardsKeyPairGen,
                    &[
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::Token(true),
                        Attribute::Verify(true),
                        // id-Ed448 (1.3.101.113)
                        Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x71]),
                        Attribute::Id(named.clone()),
                    ],
                    &[
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Id(named.clone()),
                    ],
                )
                .unwrap();
            session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::KeyType(KeyType::EC),
                        Attribute::Token(true),
                        Attribute::Verify(true),
                        Attribute::EcParams(vec![
                            0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                        ]),
                        Attribute::Id(id.clone()),
                    ],
                    &[
                        Attribute::KeyType(KeyType::EC),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                        Attribute::Sign(true),
                        Attribute::Id(id.clone()),
                    ],
                )
                .unwrap();
        });
        let hsm = Hsm::open(&config()).unwrap();
        assert_eq!(hsm.find(&id).unwrap_err().code(), "hsm_key_not_protected");
        assert_eq!(hsm.find(&named).unwrap_err().code(), "hsm_unsupported_key");
        assert_eq!(hsm.find(b"nothing").unwrap_err().code(), "hsm_key_not_found");
        assert_eq!(hsm.find(b"").unwrap_err().code(), "hsm_key_not_found");
    }
);

hsm_test!(
    /// A key generated by another tool with the PKCS#11 3.0 curve name
    /// (`PrintableString "edwards25519"`) as `CKA_EC_PARAMS` is found and signs.
    find_key_with_curve_name_params,
    || {
        let id = b"named-curve-key".to_vec();
        with_raw_session(|session| {
            session
                .generate_key_pair(
                    &Mechanism::EccEdwardsKeyPairGen,
                    &[
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::Token(true),
                        Attribute::Verify(true),
                        Attribute::EcParams(b"\x13\x0cedwards25519".to_vec()),
                        Attribute::Id(id.clone()),
                    ],
                    &[
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Id(id.clone()),
                    ],
                )
                .unwrap();
        });
        let hsm = Hsm::open(&config()).unwrap();
        let key = hsm.find(&id).unwrap();
        assert_eq!(key.alg, Algorithm::EdDSA);
        sign_and_verify(&hsm, &key);
    }
);

hsm_test!(
    /// A token whose user PIN was never set is reported like a locked one.
    user_pin_not_initialized_is_locked,
    || {
        let ctx = raw_context();
        let free = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
            .expect("SoftHSM2 offers a free slot");
        ctx.init_token(free, &AuthPin::from(SO_PIN.to_owned()), "no-user-pin")
            .unwrap();
        ctx.finalize().unwrap();
        let cfg = Pkcs11Config {
            token_label: Some("no-user-pin".into()),
            ..config()
        };
        assert_eq!(Hsm::open(&cfg).unwrap_err().code(), "hsm_locked");
        // Two tokens now: without slot or label the choice is ambiguous.
        let cfg = Pkcs11Config {
            token_label: None,
            ..config()
        };
        assert_eq!(Hsm::open(&cfg).unwrap_err().code(), "hsm_slot_not_found");
    }
);

hsm_test!(
    /// `Hsm` is shared between threads; signatures from all of them verify.
    concurrent_signing,
    || {
        let hsm = Arc::new(Hsm::open(&config()).unwrap());
        let key = Arc::new(hsm.generate(Algorithm::ES256, "threads").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (hsm, key) = (Arc::clone(&hsm), Arc::clone(&key));
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        sign_and_verify(&hsm, &key);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
);

hsm_test!(
    /// No error message and no `Debug` output carries a PIN.
    no_pin_in_errors_or_debug,
    || {
        let mut seen = Vec::new();
        let describe = |err: HsmError| format!("{err} {err:?} {}", err.code());
        seen.push(describe(
            Hsm::open(&Pkcs11Config {
                pin_env: WRONG_PIN_VAR.into(),
                ..config()
            })
            .unwrap_err(),
        ));
        seen.push(describe(
            Hsm::open(&Pkcs11Config {
                pin_env: UNSET_PIN_VAR.into(),
                ..config()
            })
            .unwrap_err(),
        ));
        seen.push(describe(
            Hsm::open(&Pkcs11Config {
                token_label: Some("nope".into()),
                ..config()
            })
            .unwrap_err(),
        ));
        let hsm = Hsm::open(&config()).unwrap();
        seen.push(describe(Hsm::open(&config()).unwrap_err()));
        let key = hsm.generate(Algorithm::EdDSA, "debug").unwrap();
        seen.push(describe(hsm.find(b"missing").unwrap_err()));
        seen.push(format!("{hsm:?} {key:?} {:?}", config()));
        drop(hsm);
        let hsm = Hsm::open(&config()).unwrap();
        seen.push(describe(hsm.sign(&key, b"m").unwrap_err()));
        seen.push(format!("{hsm:?}"));
        for text in &seen {
            for secret in [PIN, WRONG_PIN, SO_PIN] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        assert!(seen.len() >= 8);
    }
);

/// A module path that does not exist, or is relative, is
/// `hsm_module_not_found`; a file that is not a library is
/// `hsm_module_invalid`. (No token involved: runs in this process.)
#[test]
fn missing_module_is_module_not_found() {
    for path in [
        "/nonexistent/libpkcs11-module.so",
        "libsofthsm2.so",
        "relative/dir/libsofthsm2.so",
    ] {
        let err = Hsm::open(&Pkcs11Config::new(path)).unwrap_err();
        assert_eq!(err.code(), "hsm_module_not_found", "{path}: {err}");
        assert!(err.to_string().contains(path), "{err}");
    }
    let dir = TempDir::new("not-a-module");
    let junk = dir.0.join("junk.so");
    std::fs::write(&junk, b"not a shared object").unwrap();
    let err = Hsm::open(&Pkcs11Config::new(&junk)).unwrap_err();
    assert_eq!(err.code(), "hsm_module_invalid", "{err}");
}

/// `[pkcs11]` in `tally.toml` deserializes with the default PIN variable and
/// refuses unknown keys.
#[test]
fn config_from_toml() {
    let cfg: Pkcs11Config =
        toml::from_str("module = \"/usr/lib/softhsm/libsofthsm2.so\"\nslot = 7\n").unwrap();
    assert_eq!(cfg.pin_env, "TALLY_PKCS11_PIN");
    assert_eq!(cfg.slot, Some(7));
    assert_eq!(cfg.token_label, None);
    assert!(toml::from_str::<Pkcs11Config>("module = \"/x.so\"\npin = \"1234\"\n").is_err());
}
