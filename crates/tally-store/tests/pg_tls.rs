//! TLS to PostgreSQL, against the real server (127.0.0.1:5432, database
//! `test`, or `TALLY_TEST_PG_URL`), with libpq's `sslmode` names. Skipped,
//! with a message, when the server is unreachable (unless `CI=true`) or has
//! TLS switched off.

use tally_store::StateStore;
use tally_store::fleet;

mod support;

use support::{postgres_reachable, url};

fn with(params: &str) -> String {
    let u = url();
    let sep = if u.contains('?') { '&' } else { '?' };
    format!("{u}{sep}{params}")
}

/// Whether this connection is encrypted, as the server sees it.
fn encrypted(c: &mut postgres::Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .unwrap()
    .get(0)
}

fn server_with_tls() -> bool {
    if !postgres_reachable() {
        return false;
    }
    let mut c = fleet::connect(&url()).unwrap();
    let on: String = c.query_one("SHOW ssl", &[]).unwrap().get(0);
    if on != "on" {
        skipped(&format!("the PostgreSQL server at {} has ssl = off", url()));
        return false;
    }
    true
}

/// Says that part of a test was not run; under `CI=true` that is a failure.
fn skipped(why: &str) {
    tally_testkit::skip(why);
}

/// The server's own certificate file, when it is readable here (Debian's
/// self-signed "snakeoil" certificate is).
fn server_certificate() -> Option<String> {
    let mut c = fleet::connect(&url()).ok()?;
    let path: String = c.query_one("SHOW ssl_cert_file", &[]).ok()?.get(0);
    let path = if path.starts_with('/') {
        path
    } else {
        let dir: String = c.query_one("SHOW data_directory", &[]).ok()?.get(0);
        format!("{dir}/{path}")
    };
    std::fs::read(&path).ok().map(|_| path)
}

#[test]
fn connections_are_encrypted_when_asked_and_verified_when_asked() {
    if !server_with_tls() {
        return;
    }
    let mut plain = fleet::connect(&url()).unwrap();
    assert!(!encrypted(&mut plain), "sslmode defaults to disable");
    let mut tls = fleet::connect(&with("sslmode=require")).unwrap();
    assert!(encrypted(&mut tls), "require encrypts");
    // The shared state store goes through the same connector.
    let schema = format!("t_tls_{}", std::process::id());
    let state = StateStore::connect_postgres(&with("sslmode=require"), &schema).unwrap();
    state.set_meta("k", "v").unwrap();
    assert_eq!(state.meta("k").unwrap().as_deref(), Some("v"));
    drop(state);
    let _ = plain.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));

    // verify-ca with a CA that did not sign the server's certificate fails.
    let dir = std::env::temp_dir().join(format!("tally-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stranger = dir.join("stranger-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-keyout", dir.join("k.pem").to_str().unwrap()])
        .args([
            "-out",
            stranger.to_str().unwrap(),
            "-days",
            "2",
            "-subj",
            "/CN=stranger",
        ])
        .output();
    if made.is_ok_and(|o| o.status.success()) {
        let e = fleet::connect(&with(&format!(
            "sslmode=verify-ca&sslrootcert={}",
            stranger.display()
        )))
        .err()
        .expect("a certificate from another CA is refused");
        assert_eq!(e.code(), "store_unavailable", "{e}");
    } else {
        skipped("openssl is not available; the wrong-CA case was not run");
    }
    // verify-ca with the server's own (self-signed) certificate succeeds;
    // verify-full also checks the name, which 127.0.0.1 is not.
    match server_certificate() {
        Some(cert) => {
            let mut c =
                fleet::connect(&with(&format!("sslmode=verify-ca&sslrootcert={cert}"))).unwrap();
            assert!(encrypted(&mut c));
            let host_is_ip = url().contains("@127.0.0.1");
            let full = fleet::connect(&with(&format!("sslmode=verify-full&sslrootcert={cert}")));
            if host_is_ip {
                let e = full
                    .err()
                    .expect("the certificate does not name 127.0.0.1")
                    .to_string();
                assert!(e.contains("not valid for name"), "{e}");
            }
        }
        None => {
            skipped("the server's certificate is not readable here; verify-ca success was not run")
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
