//! Every signature accounted for: reconciliation compares the signer's
//! durable per-key count with the ledger's records and catches a signature
//! made outside the issuance process.

use std::sync::Arc;

use serde_json::{Map, Value};
use tally_server::{App, Config, Overrides};
use tally_store::clock::now_unix;

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tally-reconcile-")
        .tempdir()
        .unwrap()
}

fn open(dir: &std::path::Path) -> Arc<App> {
    let config = Config::load(
        None,
        Overrides {
            data: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    App::open(config, &mut |_, _| {}).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_outside_the_ledger_is_caught() {
    let dir = temp_dir();
    let app = open(dir.path());
    app.dir
        .state
        .add_user("alice", "$argon2id$unused", 0)
        .unwrap();
    for _ in 0..5 {
        tally_server::issuance::issue(&app, "alice", "test", "pwd")
            .await
            .unwrap();
    }
    let kid = app.active_key().kid.clone();
    assert!(
        app.accounts
            .reconcile(&app.dir.state, now_unix())
            .is_empty()
    );
    let counts = app.active_key().account().counts();
    assert_eq!((counts.signed, counts.recorded, counts.withheld), (5, 5, 0));

    // Someone with access to the signer signs a token without the ledger.
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from("admin"));
    claims.insert("exp".into(), Value::from(now_unix() + 600));
    claims.insert("jti".into(), Value::from("outside"));
    app.active_key().sign_jwt("at+jwt", &claims).unwrap();

    let found = app.accounts.reconcile(&app.dir.state, now_unix());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].kid.as_str(), found[0].difference),
        (kid.as_str(), 1)
    );
    let events = app.dir.state.events(50).unwrap();
    let alarm = events
        .iter()
        .find(|e| e.event == "signer_ledger_mismatch")
        .expect("mismatch recorded in the key audit log");
    assert_eq!(alarm.kid.as_deref(), Some(kid.as_str()));
    assert!(
        alarm.detail.starts_with("1 signature(s) not in the ledger"),
        "{}",
        alarm.detail
    );
    // Reported once per new difference, but still returned while it lasts.
    assert_eq!(app.accounts.reconcile(&app.dir.state, now_unix()).len(), 1);
    let alarms = |app: &App| {
        app.dir
            .state
            .events(50)
            .unwrap()
            .iter()
            .filter(|e| e.event == "signer_ledger_mismatch")
            .count()
    };
    assert_eq!(alarms(&app), 1);

    // The count is durable: after a restart the difference is still there.
    app.accounts.flush(&app.dir.state).unwrap();
    app.ledger.close();
    drop(app);
    let app = open(dir.path());
    let found = app.accounts.reconcile(&app.dir.state, now_unix());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].difference, 1);
    assert_eq!(found[0].counts.recorded, 5);
    app.ledger.close();
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_behind_the_ledger_is_adopted_not_alarmed() {
    let dir = temp_dir();
    let app = open(dir.path());
    app.dir
        .state
        .add_user("bob", "$argon2id$unused", 0)
        .unwrap();
    for _ in 0..3 {
        tally_server::issuance::issue(&app, "bob", "test", "pwd")
            .await
            .unwrap();
    }
    // An unclean shutdown: the last counts never reached the disk.
    app.ledger.close();
    drop(app);
    let app = open(dir.path());
    assert!(
        app.accounts
            .reconcile(&app.dir.state, now_unix())
            .is_empty()
    );
    assert!(
        app.dir
            .state
            .events(50)
            .unwrap()
            .iter()
            .any(|e| e.event == "signature_counter_adopted")
    );
    let counts = app.active_key().account().counts();
    assert_eq!((counts.signed, counts.recorded), (3, 3));
    app.ledger.close();
    drop(dir);
}
