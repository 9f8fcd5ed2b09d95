//! A flood of unknown tokens (each a registry miss, paid for with a signature
//! verification) from one client is cut off without starving anyone else, and
//! without touching that client's really issued tokens.

mod support;

use support::*;

fn verdict(server: &Server, token: &str, from: &str) -> (u16, String) {
    let r = client()
        .get(server.url("/v1/check"))
        .bearer_auth(token)
        .header("X-Forwarded-For", from)
        .send()
        .unwrap();
    (
        r.status().as_u16(),
        r.headers()["x-tally-verdict"].to_str().unwrap().to_string(),
    )
}

#[test]
fn misses_are_rate_limited_per_client() {
    let tmp = TempDir::new("flood");
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        "trusted_proxies = [\"127.0.0.1\"]\nmiss_rate_per_sec = 0.01\nmiss_burst = 5\n",
    )
    .unwrap();
    init(data.to_str().unwrap());
    tally_ok(
        &[
            "users",
            "add",
            "alice",
            "--password-stdin",
            "--data",
            data.to_str().unwrap(),
        ],
        Some("member-passphrase\n"),
    );
    let server = Server::start(&data, Some(&cfg));
    let token = login(&server, "alice", "member-passphrase");
    let attacker = "203.0.113.5";
    let mut verdicts = Vec::new();
    for i in 0..20 {
        verdicts.push(verdict(&server, &format!("garbage.token.{i}"), attacker));
    }
    assert!(
        verdicts[..5].iter().all(|v| v.1 == "malformed"),
        "{verdicts:?}"
    );
    assert!(
        verdicts[6..]
            .iter()
            .all(|v| *v == (503, "unavailable".to_string())),
        "{verdicts:?}"
    );
    // Someone else is not affected, and the flooding address's issued token still passes.
    assert_eq!(
        verdict(&server, "garbage.token.x", "198.51.100.7").1,
        "malformed"
    );
    assert_eq!(verdict(&server, &token, attacker), (200, "ok".to_string()));
    server.stop();
}
