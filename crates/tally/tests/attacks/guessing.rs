//! Guessing secrets and locking rightful owners out: client secrets guessed at
//! the introspection endpoint, a stranger keeping a user locked out, a guesser
//! spread over many addresses, and the memory password checks leave behind.
//!
//! Two client addresses on one machine: the server trusts 127.0.0.1 as a
//! proxy, so each request's `X-Forwarded-For` names its client.

use std::time::Duration;

use crate::support::*;
use crate::{Attack, Run};

pub const ROWS: &[Attack] = &[
    Attack {
        id: "guessing.client-secret",
        item: 8,
        what: "60 wrong client secrets at /v1/introspect end in 429 + Retry-After, for unknown ids too",
        run: Run::Scenario(client_secret),
    },
    Attack {
        id: "guessing.lockout-from-elsewhere",
        item: 8,
        what: "wrong passwords for alice from elsewhere do not lock her out at home",
        run: Run::Scenario(lockout_from_elsewhere),
    },
    Attack {
        id: "guessing.distributed",
        item: 8,
        what: "one guess per address still ends in 429s for new addresses; alice's known one works",
        run: Run::Scenario(distributed),
    },
    Attack {
        id: "memory.argon2-buffers",
        item: 9,
        what: "400 logins, 8 at a time, leave the server under 150 MB resident",
        run: Run::Scenario(argon2_buffers),
    },
];

/// alice's own address, and a stranger's.
const HOME: &str = "198.51.100.4";
const STRANGER: &str = "203.0.113.7";

/// What an answer shows: status, error code, `Retry-After`, and whether it
/// asks for Basic authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    code: String,
    retry_after: Option<u64>,
    challenge: bool,
}

impl Answer {
    fn of(resp: reqwest::blocking::Response) -> Answer {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after").and_then(|v| v.parse().ok());
        let challenge = header("www-authenticate").is_some();
        let body: serde_json::Value = resp.json().unwrap_or_default();
        Answer {
            status,
            code: body["error"]["code"].as_str().unwrap_or("").to_string(),
            retry_after,
            challenge,
        }
    }

    /// `429 too_many_attempts` with a `Retry-After` of at least a second.
    fn throttled(&self) -> bool {
        self.status == 429
            && self.code == "too_many_attempts"
            && self.retry_after.is_some_and(|r| r >= 1)
    }
}

/// A server on a fresh directory whose users are `users`, behind a proxy on
/// 127.0.0.1.
fn start(tmp: &TempDir, users: &[(&str, &str)]) -> Server {
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    for (user, password) in users {
        add_user(d, user, password);
    }
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(&cfg, "trusted_proxies = [\"127.0.0.1\"]\n").unwrap();
    Server::start(&data, Some(&cfg))
}

fn login_from(server: &Server, from: &str, user: &str, password: &str) -> Answer {
    Answer::of(
        client()
            .post(server.url("/v1/login"))
            .header("x-forwarded-for", from)
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .unwrap(),
    )
}

fn introspect(server: &Server, id: &str, secret: &str) -> Answer {
    Answer::of(
        client()
            .post(server.url("/v1/introspect"))
            .basic_auth(id, Some(secret))
            .form(&[("token", "not-a-token")])
            .send()
            .unwrap(),
    )
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// Waits out the lock `a` announces.
fn wait_out(a: &Answer) {
    std::thread::sleep(
        Duration::from_secs(a.retry_after.unwrap_or(1)) + Duration::from_millis(200),
    );
}

fn client_secret() -> Result<(), String> {
    let tmp = TempDir::new("guess-client");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    tally_ok(
        &["clients", "add", "billing", "--secret-stdin", "--data", d],
        Some("s3cret-billing-7\n"),
    );
    let server = Server::start(&data, None);
    // One address guesses the secret of a client that exists, and of one
    // that does not: the answers cannot tell them apart.
    let mut runs = Vec::new();
    for id in ["billing", "no-such-client"] {
        let answers: Vec<Answer> = (0..60)
            .map(|i| introspect(&server, id, &format!("guess-{i}")))
            .collect();
        let first_throttled = answers.iter().position(Answer::throttled);
        ensure(first_throttled.is_some(), || {
            format!("{id}: 60 wrong secrets and never a 429: {:?}", answers[59])
        })?;
        let refused = answers.iter().filter(|a| a.status == 401).count();
        ensure(refused <= 10, || {
            format!("{id}: {refused} of 60 wrong secrets were checked (wanted a few, then 429s)")
        })?;
        for a in answers.iter().filter(|a| a.status == 401) {
            ensure(a.code == "invalid_client" && a.challenge, || {
                format!("{id}: a refusal that is not invalid_client with a challenge: {a:?}")
            })?;
        }
        ensure(
            answers.iter().all(|a| a.status == 401 || a.throttled()),
            || format!("{id}: an answer that is neither 401 nor 429 with Retry-After"),
        )?;
        // What the caller sees, less the exact seconds to wait (they depend
        // on where in a second each failure fell).
        let seen: Vec<(u16, String, bool, bool)> = answers[..7]
            .iter()
            .map(|a| {
                (
                    a.status,
                    a.code.clone(),
                    a.challenge,
                    a.retry_after.is_some(),
                )
            })
            .collect();
        runs.push((id, first_throttled, seen));
    }
    ensure(runs[0].1 == runs[1].1 && runs[0].2 == runs[1].2, || {
        format!("a known and an unknown client are answered differently: {runs:?}")
    })?;

    // The right secret from the guessing address waits out the backoff too.
    // A lock is first waited out and one more wrong secret doubles it, so
    // that the right one surely arrives while it holds.
    let last = introspect(&server, "billing", "guess-again");
    if last.throttled() {
        wait_out(&last);
    }
    let failed = introspect(&server, "billing", "guess-once-more");
    ensure(failed.status == 401, || {
        format!("after the lock: {failed:?}")
    })?;
    let right = introspect(&server, "billing", "s3cret-billing-7");
    ensure(right.throttled(), || {
        format!("the right secret during the backoff: {right:?}")
    })?;
    // Once the backoff is over the right secret works.
    wait_out(&right);
    let later = introspect(&server, "billing", "s3cret-billing-7");
    ensure(later.status == 200, || {
        format!("the right secret after the backoff: {later:?}")
    })?;
    server.stop();
    Ok(())
}

fn lockout_from_elsewhere() -> Result<(), String> {
    let tmp = TempDir::new("guess-lockout");
    let server = start(
        &tmp,
        &[("alice", "alice-passphrase-9"), ("bob", "bob-passphrase-9")],
    );
    let home = login_from(&server, HOME, "alice", "alice-passphrase-9");
    ensure(home.status == 200, || format!("alice at home: {home:?}"))?;
    // A stranger guesses alice's password, then bob's (who never logged in
    // from his address), until refused; waits that out and guesses once more,
    // which renews the lock a per-user throttle puts on the account. The
    // owner then logs in from their own address while that lock holds.
    for (user, password, own) in [
        ("alice", "alice-passphrase-9", HOME),
        ("bob", "bob-passphrase-9", "198.51.100.77"),
    ] {
        let mut checked = 0;
        let refused = loop {
            let a = login_from(&server, STRANGER, user, &format!("guess-{checked}"));
            if a.throttled() {
                break a;
            }
            ensure(a.status == 401, || {
                format!("{user}: guess {checked}: {a:?}")
            })?;
            checked += 1;
            ensure(checked <= 10, || {
                format!("{user}: the stranger was never throttled")
            })?;
        };
        wait_out(&refused);
        let again = login_from(&server, STRANGER, user, "guess-again");
        ensure(again.status == 401, || {
            format!("{user}: after the lock: {again:?}")
        })?;
        let owner = login_from(&server, own, user, password);
        ensure(owner.status == 200, || {
            format!("{user} locked out of their own address by a stranger: {owner:?}")
        })?;
    }
    server.stop();
    Ok(())
}

fn distributed() -> Result<(), String> {
    let tmp = TempDir::new("guess-distributed");
    let server = start(&tmp, &[("alice", "alice-passphrase-9")]);
    let home = login_from(&server, HOME, "alice", "alice-passphrase-9");
    ensure(home.status == 200, || format!("alice at home: {home:?}"))?;
    // One wrong password from each of many addresses: no address and no
    // (user, address) pair fails twice, yet the user's backoff builds up.
    let from = |i: u32| format!("203.0.{}.{}", 113 + i / 250, 1 + i % 250);
    let mut next = 0u32;
    let mut checked = 0;
    let first = loop {
        let a = login_from(&server, &from(next), "alice", &format!("guess-{next}"));
        next += 1;
        if a.throttled() {
            break a;
        }
        ensure(a.status == 401, || format!("guess {next}: {a:?}"))?;
        checked += 1;
        ensure(next < 60, || {
            "60 addresses, one guess each, never a 429".into()
        })?;
    };
    ensure(checked >= 20, || {
        format!("only {checked} guesses from fresh addresses were checked: locked too early")
    })?;
    // Waited out, one more guess doubles the lock; while it holds, a new
    // address is refused even with the right password…
    wait_out(&first);
    let again = login_from(&server, &from(next), "alice", "guess-again");
    next += 1;
    ensure(again.status == 401, || format!("after the lock: {again:?}"))?;
    let right = login_from(&server, &from(next), "alice", "alice-passphrase-9");
    ensure(right.throttled(), || {
        format!("the right password from a new address during the backoff: {right:?}")
    })?;
    // …while alice at her known address is not locked out.
    let alice = login_from(&server, HOME, "alice", "alice-passphrase-9");
    ensure(alice.status == 200, || {
        format!("alice at her known address during a distributed guess: {alice:?}")
    })?;
    server.stop();
    Ok(())
}

/// Resident and peak memory of `pid`, in kB, from `/proc/PID/status`.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn argon2_buffers() -> Result<(), String> {
    const LOGINS: usize = 400;
    const CLIENTS: usize = 8;
    const BOUND_KB: u64 = 150 * 1024;
    let tmp = TempDir::new("guess-memory");
    let server = start(&tmp, &[("alice", "alice-passphrase-9")]);
    let before = memory_kb(server.pid());
    let url = server.url("/v1/login");
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut failed = 0;
                for _ in 0..LOGINS / CLIENTS {
                    let r = c
                        .post(&url)
                        .json(&serde_json::json!({"username": "alice", "password": "alice-passphrase-9"}))
                        .send();
                    if !r.is_ok_and(|r| r.status() == 200) {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let failed: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let (rss, hwm) = memory_kb(server.pid());
    eprintln!(
        "memory.argon2-buffers: VmRSS {} kB before, {rss} kB after {LOGINS} logins ({CLIENTS} at a time), VmHWM {hwm} kB",
        before.0
    );
    ensure(failed == 0, || {
        format!("{failed} of {LOGINS} logins failed")
    })?;
    ensure(rss < BOUND_KB, || {
        format!("VmRSS {rss} kB after {LOGINS} logins (bound {BOUND_KB} kB)")
    })?;
    server.stop();
    Ok(())
}
