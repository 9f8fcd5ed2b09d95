//! `signer = "pkcs11"` end to end against SoftHSM2: the signing keys are
//! generated inside the token, tokens they sign pass the gate, rotation makes a
//! new key in the token, and a restart finds the keys again by id.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "7654321";

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("TALLY_LOG", "warn")
        .env_remove("TALLY_MASTER_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "tally {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn signing_keys_live_in_a_pkcs11_token() {
    if !Path::new(MODULE).exists() {
        skip("SoftHSM2 is not installed");
        return;
    }
    let tmp = TempDir::new("hsm");
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let conf_s = conf.to_str().unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "tally-test",
            "--so-pin",
            "1234567",
            "--pin",
            PIN,
        ])
        .env("SOFTHSM2_CONF", conf_s)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            "signer = \"pkcs11\"\n\n[pkcs11]\nmodule = \"{MODULE}\"\ntoken_label = \"tally-test\"\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let (d, c) = (data.to_str().unwrap(), cfg.to_str().unwrap());
    let env = [("SOFTHSM2_CONF", conf_s), ("TALLY_PKCS11_PIN", PIN)];

    // Without the PIN nothing starts, and the message names the variable.
    let out = run(
        &["init", "--data", d, "--config", c],
        &[("SOFTHSM2_CONF", conf_s)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TALLY_PKCS11_PIN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["init", "--data", d, "--config", c],
        &[("SOFTHSM2_CONF", conf_s), ("TALLY_PKCS11_PIN", "0000")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hsm_pin_incorrect"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("0000"));

    ok(&["init", "--data", d, "--config", c], &env);
    let list = ok(&["keys", "list", "--data", d, "--config", c], &env);
    let first = list.lines().nth(1).unwrap();
    assert!(
        first.contains("pkcs11") && first.contains("active"),
        "{list}"
    );
    let k1 = first.split_whitespace().next().unwrap().to_string();
    // Nothing secret is stored for it: the state database holds only the key's id.
    let db = rusqlite::Connection::open(data.join("state.db")).unwrap();
    let stored: Vec<u8> = db
        .query_row("SELECT sealed FROM keys WHERE kid = ?1", [&k1], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored.len(), 16, "the row should hold a 16-byte CKA_ID");
    drop(db);

    // Adding a user needs no token access at all.
    tally_ok(
        &[
            "users",
            "add",
            "alice",
            "--password-stdin",
            "--data",
            d,
            "--config",
            c,
        ],
        Some("alice-passphrase\n"),
    );

    let server = Server::start_with_env(&data, Some(&cfg), &env);
    let t1 = login(&server, "alice", "alice-passphrase");
    assert_eq!(kid_of(&t1), k1);
    assert_eq!(checked(&server, &t1).1, "ok");
    let jwks: Value = jwks(&server);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == k1.as_str()),
        "{jwks}"
    );

    // Rotation generates the next key inside the token too.
    ok(
        &[
            "keys", "rotate", "--alg", "ES256", "--data", d, "--config", c,
        ],
        &env,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let t2 = loop {
        let t = login(&server, "alice", "alice-passphrase");
        if kid_of(&t) != k1 {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rotation never reached the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let list = ok(&["keys", "list", "--data", d, "--config", c], &env);
    let k2 = kid_of(&t2);
    let line = list.lines().find(|l| l.starts_with(&k2)).unwrap();
    assert!(line.contains("ES256") && line.contains("pkcs11"), "{list}");
    assert_eq!(checked(&server, &t2).1, "ok");
    assert_eq!(checked(&server, &t1).1, "ok");
    server.stop();

    // A restart finds both keys in the token by id.
    let server = Server::start_with_env(&data, Some(&cfg), &env);
    assert_eq!(checked(&server, &t1).1, "ok");
    assert_eq!(checked(&server, &t2).1, "ok");
    let t3 = login(&server, "alice", "alice-passphrase");
    assert_eq!(kid_of(&t3), k2);
    server.stop();
}
