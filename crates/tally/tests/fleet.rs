//! Three `tally serve` nodes on one PostgreSQL (127.0.0.1:5432, database
//! `test`, or `TALLY_TEST_PG_URL`), reached through a TCP proxy the test
//! controls so that the database can be cut off and given back.
//!
//! Without a reachable PostgreSQL the test says it was skipped; with
//! `CI=true` it must run.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use support::*;

fn pg_url() -> String {
    std::env::var("TALLY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A TCP proxy in front of PostgreSQL. `cut` closes every connection and
/// refuses new ones until `restore`.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (c2, conns2, target) = (cut.clone(), conns.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut l = conns2.lock().unwrap();
                l.push(client.try_clone().unwrap());
                l.push(server.try_clone().unwrap());
                drop(l);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, conns }
    }

    fn url(&self, real: &str) -> String {
        // postgres://user@127.0.0.1:5432/db → the same through the proxy.
        let (head, tail) = real.rsplit_once('@').unwrap();
        let db = tail.split_once('/').map_or("", |(_, d)| d);
        format!("{head}@127.0.0.1:{}/{db}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The test's own schema, dropped at the end.
struct Schema {
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = tally_store::fleet::connect(&pg_url()) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn schema_or_skip(tag: &str) -> Option<Schema> {
    match tally_store::fleet::connect(&pg_url()) {
        Ok(_) => Some(Schema {
            name: format!("t_{tag}_{}", std::process::id()),
        }),
        Err(e) => {
            skip(&format!("PostgreSQL at {} is unreachable ({e})", pg_url()));
            None
        }
    }
}

/// One fleet at a time: three nodes hold about 35 PostgreSQL connections,
/// and the server's default limit is 100.
static ONE_FLEET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_fleet() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner())
}

const MASTER: &str = "5f1c2a9e0b7d4c3f8a6e2d1b0c9f8e7d6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";

/// A node's data directory (its own files) and configuration.
fn node_dir(root: &Path, name: &str, url: &str, schema: &str) -> (String, std::path::PathBuf) {
    node_dir_with(root, name, url, schema, "")
}

fn node_dir_with(
    root: &Path,
    name: &str,
    url: &str,
    schema: &str,
    extra: &str,
) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let data = root.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let key = data.join("master.key");
    std::fs::write(&key, format!("{MASTER}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = root.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("[storage]\nurl = \"{url}\"\nschema = \"{schema}\"\nnode = \"{name}\"\n{extra}"),
    )
    .unwrap();
    (data.to_str().unwrap().to_string(), config)
}

fn ready(server: &Server) -> Option<Value> {
    let r = client().get(server.url("/readyz")).send().ok()?;
    if r.status().is_success() {
        r.json().ok()
    } else {
        None
    }
}

fn login_status(server: &Server) -> u16 {
    client()
        .post(server.url("/v1/login"))
        .json(&serde_json::json!({"username": "member", "password": "correct horse 42"}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn checkpoint(server: &Server) -> (u64, String) {
    let note = get_text(server, "/v1/ledger/checkpoint");
    let mut lines = note.lines().skip(1);
    let size = lines.next().unwrap().parse().unwrap();
    let root = lines.next().unwrap().to_string();
    (size, root)
}

#[test]
fn three_nodes_one_ledger() {
    let _one = one_fleet();
    let Some(schema) = schema_or_skip("fleet3") else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432");
    let url = proxy.url(&pg_url());
    let root = TempDir::new("fleet3");
    let (data_a, cfg_a) = node_dir(root.path(), "a", &url, &schema.name);
    let (data_b, cfg_b) = node_dir(root.path(), "b", &url, &schema.name);
    let (data_c, cfg_c) = node_dir(root.path(), "c", &url, &schema.name);

    // The first node creates the fleet's keys; the others find them.
    let a = Server::start(Path::new(&data_a), Some(&cfg_a));
    let b = Server::start(Path::new(&data_b), Some(&cfg_b));
    let c = Server::start(Path::new(&data_c), Some(&cfg_c));
    for s in [&a, &b, &c] {
        let r = ready(s).expect("ready");
        assert_eq!(r["storage"], "postgres", "{r}");
    }
    // Admin commands work on the shared store from any node's directory.
    admin(
        &data_c,
        &cfg_c,
        &["users", "add", "member", "--password-stdin"],
        Some("correct horse 42\n"),
    );
    // The ledger's entries name customers: only an auditor may read them.
    admin(
        &data_c,
        &cfg_c,
        &["users", "role", "member", "auditor"],
        None,
    );
    assert_eq!(jwks(&a), jwks(&b), "one key set for the fleet");
    assert_eq!(jwks(&b), jwks(&c));

    // 1. Issued on A, honoured on B and C at once (B and C may not have
    //    followed it yet: a registry miss asks PostgreSQL).
    let token = login(&a, "member", "correct horse 42");
    assert_eq!(checked(&b, &token), (200, "ok".into()));
    assert_eq!(checked(&c, &token), (200, "ok".into()));
    let mut accepted = Vec::new();
    for _ in 0..20 {
        let t = login(&b, "member", "correct horse 42");
        let started = Instant::now();
        assert_eq!(checked(&c, &t), (200, "ok".into()));
        accepted.push(started.elapsed());
    }
    accepted.sort();
    eprintln!(
        "issued on B, accepted on C: median {:?}, max {:?}",
        accepted[10], accepted[19]
    );

    // 2. A key imported through one node's directory becomes the fleet's
    //    signing key everywhere; the copy an insider kept forges tokens with
    //    valid signatures, refused on every node as not issued.
    let insider = import_insider_key_in(root.path(), &data_a, &cfg_a, "insider-copy");
    let mut claims = payload(&token);
    claims["jti"] = serde_json::json!("forged-in-a-fleet");
    let forged = jws(
        &insider,
        &serde_json::json!({"alg":"EdDSA","kid":"insider-copy","typ":"at+jwt"}).to_string(),
        &claims.to_string(),
    );
    for s in [&a, &b, &c] {
        eventually("every node knows the new key", || {
            kid_of(&login(s, "member", "correct horse 42")) == "insider-copy"
        });
        for _ in 0..3 {
            assert_eq!(checked(s, &forged), (403, "not_issued".into()));
        }
    }

    // Password guessing spread over the nodes is throttled as on one node:
    // five free failures in all, then every node refuses for a while.
    let guess = |s: &Server| {
        client()
            .post(s.url("/v1/login"))
            .json(&serde_json::json!({"username": "someone-else", "password": "guess"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for i in 0..6 {
        assert_eq!(guess([&a, &b, &c][i % 3]), 401, "failure {i}");
    }
    // The sixth failure was booked on C; A, which saw two, refuses now. The
    // lock lasts a second at first: should a slow machine let it lapse
    // before A is asked, that guess is one more failure and the next lock
    // is twice as long.
    let answers: Vec<u16> = (0..4)
        .map(|_| guess(&a))
        .take_while(|s| *s != 429)
        .collect();
    assert!(answers.len() < 4, "never locked on A: {answers:?}");
    assert!(answers.iter().all(|s| *s == 401), "{answers:?}");

    // 3. Revoked on A: refused on B and C within the propagation time.
    let victim = login(&a, "member", "correct horse 42");
    assert_eq!(checked(&c, &victim), (200, "ok".into()));
    let r = client()
        .post(a.url("/v1/revoke"))
        .form(&[("token", victim.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let revoked_at = Instant::now();
    let mut seen = Vec::new();
    for s in [&b, &c] {
        eventually("the revocation reaches every node", || {
            checked(s, &victim) == (403, "revoked".into())
        });
        seen.push(revoked_at.elapsed());
    }
    eprintln!("revocation on A refused on B and C after {seen:?}");

    // 4. Sequencer fail-over: kill the leader; another node takes over and
    //    the ledger after is consistent with the ledger before.
    //    Before: nothing waits to be sequenced and every node has verified
    //    the same head.
    let fleet_status = || -> Value {
        serde_json::from_str(&admin(
            &data_c,
            &cfg_c,
            &["fleet", "status", "--format", "json"],
            None,
        ))
        .unwrap()
    };
    eventually("everything sequenced, one head everywhere", || {
        fleet_status()["backlog"] == 0
            && checkpoint(&a) == checkpoint(&b)
            && checkpoint(&b) == checkpoint(&c)
    });
    let (before_size, before_root) = checkpoint(&b);
    assert!(before_size >= 23, "{before_size}");
    let nodes = [a, b, c];
    let sequencing: Vec<usize> = (0..3)
        .filter(|&i| ready(&nodes[i]).is_some_and(|r| r["sequencer"] == true))
        .collect();
    assert_eq!(sequencing.len(), 1, "one sequencer at a time");
    let leader = sequencing[0];
    let mut nodes: Vec<Option<Server>> = nodes.into_iter().map(Some).collect();
    let dead = nodes[leader].take().unwrap();
    let killed = Instant::now();
    unsafe_free_kill(dead);
    let alive: Vec<&Server> = nodes.iter().flatten().collect();
    let after_token = login(alive[0], "member", "correct horse 42");
    eventually("another node sequences", || {
        alive
            .iter()
            .any(|s| ready(s).is_some_and(|r| r["sequencer"] == true))
    });
    // A record queued after the leader died is in a checkpoint only if
    // another node sequenced it.
    let after_jti = payload(&after_token)["jti"].as_str().unwrap().to_string();
    eventually("the new leader sequences the new record", || {
        client()
            .get(alive[1].url(&format!("/v1/ledger/proof/inclusion?token_id={after_jti}")))
            .send()
            .unwrap()
            .status()
            == 200
    });
    eprintln!("sequencer fail-over after {:?}", killed.elapsed());
    // The operator's view: three nodes reported, and the lock holder is a
    // node that is alive and says it sequences.
    let status = fleet_status();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3, "{status}");
    let holder = status["sequencer"]
        .as_str()
        .expect("a lock holder")
        .to_string();
    let dead_name = ["a", "b", "c"][leader];
    assert_ne!(holder, dead_name, "{status}");
    let holder_index = ["a", "b", "c"].iter().position(|n| *n == holder).unwrap();
    let holder_node = nodes[holder_index].as_ref().expect("alive");
    assert_eq!(ready(holder_node).unwrap()["sequencer"], true, "{status}");
    let (after_size, after_root) = checkpoint(alive[1]);
    let proof: Value = client()
        .get(alive[1].url(&format!(
            "/v1/ledger/proof/consistency?from={before_size}&to={after_size}"
        )))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let hashes: Vec<[u8; 32]> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h.as_str().unwrap()))
        .collect();
    tally_core::merkle::verify_consistency(
        before_size,
        after_size,
        &hashes,
        &b64(&before_root),
        &b64(&after_root),
    )
    .expect("the ledger after fail-over extends the ledger before");
    // And the record queued after the kill is in it, under that root.
    let inclusion: Value = client()
        .get(alive[1].url(&format!(
            "/v1/ledger/proof/inclusion?token_id={after_jti}&size={after_size}"
        )))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let index = inclusion["leaf_index"].as_u64().unwrap();
    assert!(
        index >= before_size,
        "sequenced after the kill: {inclusion}"
    );
    let entry: Value = client()
        .get(alive[1].url(&format!(
            "/v1/ledger/entries?start={index}&end={}",
            index + 1
        )))
        .bearer_auth(&after_token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let record = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(entry["entries"][0].as_str().unwrap())
            .unwrap()
    };
    let path: Vec<[u8; 32]> = inclusion["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h.as_str().unwrap()))
        .collect();
    tally_core::merkle::verify_inclusion(
        &tally_core::merkle::leaf_hash(&record),
        index,
        after_size,
        &path,
        &b64(&after_root),
    )
    .expect("the record issued after the kill is in the new leader's checkpoint");
    assert_eq!(checked(alive[1], &after_token), (200, "ok".into()));
    let verify = admin(&data_c, &cfg_c, &["ledger", "verify"], None);
    assert!(verify.contains("result       OK"), "{verify}");

    // 5. PostgreSQL goes away: known tokens keep working, unknown ones are
    //    `unavailable`, issuance answers 503, /readyz turns red.
    let known = login(alive[0], "member", "correct horse 42");
    assert_eq!(checked(alive[1], &known), (200, "ok".into()));
    proxy.cut();
    for s in &alive {
        eventually("readyz turns red", || ready(s).is_none());
    }
    assert_eq!(checked(alive[1], &known), (200, "ok".into()));
    claims["jti"] = serde_json::json!("forged-while-the-store-is-down");
    let unknown = jws(
        &insider,
        &serde_json::json!({"alg":"EdDSA","kid":"insider-copy","typ":"at+jwt"}).to_string(),
        &claims.to_string(),
    );
    assert_eq!(checked(alive[0], &unknown), (503, "unavailable".into()));
    // Nor can anything be revoked that the store cannot vouch for: the
    // caller is told, instead of a 200 that revoked nothing.
    let r = client()
        .post(alive[0].url("/v1/revoke"))
        .form(&[("token", unknown.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let refused = client()
        .post(alive[0].url("/v1/login"))
        .json(&serde_json::json!({"username": "member", "password": "correct horse 42"}))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    let body: Value = refused.json().unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
    let readyz = client().get(alive[0].url("/readyz")).send().unwrap();
    assert_eq!(readyz.status().as_u16(), 503, "red, not unreachable");
    eventually("the operator is told", || {
        alive[0].log_text().contains("ledger store unreachable")
    });
    let metrics = |s: &Server| get_text(s, "/metrics");
    assert!(metrics(alive[0]).contains("\ntally_store_reachable 0\n"));

    // 6. PostgreSQL returns: everything recovers without a restart.
    proxy.restore();
    for s in &alive {
        eventually("readyz turns green", || ready(s).is_some());
    }
    eventually("issuance works again", || login_status(alive[0]) == 200);
    assert!(metrics(alive[0]).contains("\ntally_store_reachable 1\n"));
    let fresh = login(alive[0], "member", "correct horse 42");
    assert_eq!(checked(alive[1], &fresh), (200, "ok".into()));
    // The forgery that was `unavailable` while the store was away is
    // `not_issued` now: nothing was remembered from the outage.
    for s in &alive {
        assert_eq!(checked(s, &unknown), (403, "not_issued".into()));
    }
}

fn b64(s: &str) -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap()
        .try_into()
        .unwrap()
}

/// SIGKILL: the node dies without closing anything, as a crash would.
fn unsafe_free_kill(server: Server) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status();
    drop(server);
}

/// `tally ARGS --data DATA --config CONFIG`: an admin command through a
/// fleet node's directory and configuration; asserts success.
fn admin(data: &str, config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--data", data, "--config", config.to_str().unwrap()]);
    tally_ok(&all, stdin)
}

/// [`import_insider_key`] through a fleet node's directory and configuration.
fn import_insider_key_in(dir: &Path, data: &str, config: &Path, kid: &str) -> RawKey {
    import_insider_key_with(
        dir,
        &["--data", data, "--config", config.to_str().unwrap()],
        kid,
    )
}

fn redis_url() -> String {
    std::env::var("TALLY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_or_skip() -> bool {
    let addr = redis_url().trim_start_matches("redis://").to_string();
    match TcpStream::connect(&addr) {
        Ok(_) => true,
        Err(e) => {
            skip(&format!("Redis at {addr} is unreachable ({e})"));
            false
        }
    }
}

/// The detections a node's incident store holds, as JSON.
fn detections(data: &str, config: &Path) -> Vec<Value> {
    let list: Value = serde_json::from_str(&admin(
        data,
        config,
        &["incident", "list", "--format", "json"],
        None,
    ))
    .unwrap();
    let mut out = Vec::new();
    for inc in list.as_array().unwrap() {
        let id = inc["id"].as_i64().unwrap().to_string();
        let shown: Value = serde_json::from_str(&admin(
            data,
            config,
            &["incident", "show", &id, "--format", "json"],
            None,
        ))
        .unwrap();
        out.extend(
            shown["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["detection"].clone()),
        );
    }
    out
}

#[test]
fn a_scrape_spread_over_three_nodes_is_counted_as_one() {
    let _one = one_fleet();
    let Some(schema) = schema_or_skip("fleetscrape") else {
        return;
    };
    if !redis_or_skip() {
        return;
    }
    let root = TempDir::new("fleetscrape");
    // Thirty distinct accounts per device trip mass_access; the scraper
    // spreads 36 over three nodes, 12 each: no node alone sees enough.
    let extra = format!(
        "redis_url = \"{}\"\n\n[detector]\nmass_access_threshold = 30\n",
        redis_url()
    );
    let nodes: Vec<(String, std::path::PathBuf)> = ["a", "b", "c"]
        .iter()
        .map(|n| node_dir_with(root.path(), n, &pg_url(), &schema.name, &extra))
        .collect();
    let servers: Vec<Server> = nodes
        .iter()
        .map(|(d, c)| Server::start(Path::new(d), Some(c)))
        .collect();
    let (data_a, cfg_a) = &nodes[0];
    let insider = import_insider_key_in(root.path(), data_a, cfg_a, "insider-copy");
    admin(
        data_a,
        cfg_a,
        &["users", "add", "member", "--password-stdin"],
        Some("correct horse 42\n"),
    );
    // The shop's customers are members: the report lists the affected ones
    // (tokens for member ids that do not exist are reported apart, as
    // evidence of minting).
    for i in 0..36 {
        admin(
            data_a,
            cfg_a,
            &[
                "users",
                "add",
                &format!("customer-{i:05}"),
                "--password-stdin",
            ],
            Some("customer password 42\n"),
        );
    }
    for s in &servers {
        eventually("every node knows the new key", || {
            kid_of(&login(s, "member", "correct horse 42")) == "insider-copy"
        });
    }
    let template = payload(&login(&servers[0], "member", "correct horse 42"));
    for i in 0..36 {
        let mut claims = template.clone();
        claims["jti"] = serde_json::json!(format!("scrape-{i}"));
        claims["sub"] = serde_json::json!(format!("customer-{i:05}"));
        let forged = jws(
            &insider,
            &serde_json::json!({"alg":"EdDSA","kid":"insider-copy","typ":"at+jwt"}).to_string(),
            &claims.to_string(),
        );
        let r = client()
            .get(servers[i % 3].url("/v1/check"))
            .bearer_auth(&forged)
            .header("X-Device-Id", "scraper-7")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
    }
    // The fleet's count finds the scrape; every node's own count stays below.
    let key = "mass_access:device=scraper-7";
    let mut fleet_finding = None;
    eventually("the fleet counts the scrape as one", || {
        for (d, c) in &nodes {
            for det in detections(d, c) {
                if det["key"] == key {
                    fleet_finding = Some(det);
                    return true;
                }
            }
        }
        false
    });
    let det = fleet_finding.unwrap();
    let evidence = &det["samples"][0];
    assert_eq!(evidence["counted_by"], "fleet", "{det}");
    let n = evidence["distinct_subjects"].as_u64().unwrap();
    assert!((31..=37).contains(&n), "about 36 distinct accounts: {det}");

    // One attack, one incident: once every node has stored what it saw of
    // the 36 forgeries (each node counts its own 12), there is a single
    // incident, and every node sees it.
    eventually("every node's forgeries stored", || {
        detections(&nodes[0].0, &nodes[0].1)
            .iter()
            .any(|d| d["rule"] == "forged_token" && d["count"].as_u64() >= Some(36))
    });
    let list = |(d, c): &(String, std::path::PathBuf)| -> Value {
        serde_json::from_str(&admin(
            d,
            c,
            &["incident", "list", "--format", "json"],
            None,
        ))
        .unwrap()
    };
    // What a listing says that does not depend on the moment it was asked:
    // the clocks' remaining time moves on between the two calls.
    let stable = |list: &Value| -> Vec<Value> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let dues: Vec<Value> = i["clocks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| serde_json::json!([c["regime"], c["starts_at"], c["due_at"]]))
                    .collect();
                serde_json::json!({
                    "id": i["id"], "title": i["title"], "state": i["state"],
                    "severity": i["severity"], "opened_at": i["opened_at"],
                    "aware_at": i["aware_at"], "clocks": dues,
                })
            })
            .collect()
    };
    let seen_by_a = list(&nodes[0]);
    assert_eq!(seen_by_a.as_array().unwrap().len(), 1, "{seen_by_a}");
    assert_eq!(
        stable(&seen_by_a),
        stable(&list(&nodes[2])),
        "one shared incident store"
    );
    // The affected customers: each node logged its own share of the scrape;
    // given every node's access log, the list is complete.
    let id = seen_by_a[0]["id"].as_i64().unwrap().to_string();
    let affected = |extra: &[String]| -> usize {
        let (d, c) = &nodes[0];
        let mut args: Vec<&str> = vec![
            "incident",
            "affected",
            &id,
            "--format",
            "json",
            "--data",
            d,
            "--config",
            c.to_str().unwrap(),
        ];
        for e in extra {
            args.push("--access-log");
            args.push(e);
        }
        let v: Value = serde_json::from_str(&tally_ok(&args, None)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["subject"].as_str().unwrap_or("").starts_with("customer-"))
            .count()
    };
    assert_eq!(affected(&[]), 12, "node a alone logged a third");
    let others: Vec<String> = nodes[1..]
        .iter()
        .map(|(d, _)| format!("{d}/access.db"))
        .collect();
    assert_eq!(affected(&others), 36, "every node's log: the whole scrape");
    let keys: Vec<String> = detections(&nodes[1].0, &nodes[1].1)
        .iter()
        .map(|d| d["key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        keys.contains(&"forged_token:kid=insider-copy".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&key.to_string()), "{keys:?}");

    // The key is compromised from another node's directory: the tokens it
    // signed anywhere in the fleet are revoked on every node.
    let honest = login(&servers[0], "member", "correct horse 42");
    assert_eq!(checked(&servers[2], &honest), (200, "ok".into()));

    // One token used from a different device on each node: each node sees
    // two places (the address and its device), the fleet four.
    for (i, s) in servers.iter().enumerate() {
        let r = client()
            .get(s.url("/v1/check"))
            .bearer_auth(&honest)
            .header("X-Device-Id", format!("phone-{i}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let replay = format!(
        "token_replay:token={}",
        payload(&honest)["jti"].as_str().unwrap()
    );
    eventually("the fleet sees one token used from many places", || {
        detections(&nodes[2].0, &nodes[2].1)
            .iter()
            .any(|d| d["key"] == replay.as_str() && d["samples"][0]["counted_by"] == "fleet")
    });
    let (data_b, cfg_b) = &nodes[1];
    let out = admin(data_b, cfg_b, &["keys", "compromise", "insider-copy"], None);
    let revoked: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("revoked"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revocation count in {out}"));
    // Five tokens were issued under the key, on all three nodes: one by
    // each node as it learnt the key, the template and the honest one on A.
    assert_eq!(revoked, 5, "every node's records were read: {out}");
    for s in &servers {
        eventually(
            "the compromised key's tokens are refused everywhere",
            || checked(s, &honest) == (403, "revoked".into()),
        );
    }
    drop(servers);
}
