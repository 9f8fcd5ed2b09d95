//! Forged tokens outside the gate: every endpoint that accepts a token
//! (logout, revocation, introspection) runs the gate's decision, reports a
//! forgery as the gate would, counts unknown tokens against the caller's
//! address, and asks a sender-constrained token for its proof.

use std::process::Command;

use serde_json::{Value, json};

use crate::fixture::{CLIENT_SECRET, Fixture};
use crate::gateways::dpop;
use crate::support::*;
use crate::{Attack, Run};

/// Waits until the access log holds an event for `route` about token `jti`
/// with `verdict`.
fn booked(f: &Fixture, route: &str, jti: &str, verdict: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = f.events();
        if events
            .iter()
            .any(|e| e["route"] == route && e["token_id"] == jti && e["verdict"] == verdict)
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "no {verdict} event on route {route} for {jti}; newest: {:?}",
                events.iter().take(3).collect::<Vec<_>>()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A forged token presented to `/v1/logout`.
fn logout_forged(f: &Fixture) -> Result<(), String> {
    let forged = f.forge("forged-at-logout", "root");
    let r = client()
        .post(f.server.url("/v1/logout"))
        .bearer_auth(&forged)
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != 403 || r.headers()["x-tally-verdict"] != "not_issued" {
        return Err(format!("logout answered {} {:?}", r.status(), r.headers()));
    }
    booked(f, "logout", "forged-at-logout", "not_issued")?;
    if !f.server.log_text().contains("forged_token") {
        return Err("no forged_token report in the server log".into());
    }
    Ok(())
}

/// A forged token presented to `/v1/revoke` (RFC 7009: still a quiet 200).
fn revoke_forged(f: &Fixture) -> Result<(), String> {
    let forged = f.forge("forged-at-revoke", "root");
    let r = client()
        .post(f.server.url("/v1/revoke"))
        .form(&[("token", forged.as_str())])
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("revoke answered {}", r.status()));
    }
    booked(f, "revoke", "forged-at-revoke", "not_issued")
}

/// A forged token shown to `/v1/introspect` by a resource server.
fn introspect_forged(f: &Fixture) -> Result<(), String> {
    let forged = f.forge("forged-at-introspect", "root");
    let r = client()
        .post(f.server.url("/v1/introspect"))
        .basic_auth(f.client, Some(CLIENT_SECRET))
        .form(&[("token", forged.as_str())])
        .send()
        .map_err(|e| e.to_string())?;
    let body: Value = r.json().map_err(|e| e.to_string())?;
    if body != json!({"active": false}) {
        return Err(format!("introspection answered {body}"));
    }
    booked(f, "introspect", "forged-at-introspect", "not_issued")
}

/// Unknown tokens at logout, revocation and introspection count against the
/// caller's address like at the gate (the fixture allows 20 at once, then 1
/// a second).
fn miss_limit(f: &Fixture) -> Result<(), String> {
    let c = client();
    let mut limited = 0;
    for i in 0..90 {
        let forged = f.forge(&format!("forged-flood-{i}"), &format!("member-{i}"));
        let from = ("X-Forwarded-For", "192.0.2.77");
        let r = match i % 3 {
            0 => c
                .post(f.server.url("/v1/logout"))
                .bearer_auth(&forged)
                .header(from.0, from.1),
            1 => c
                .post(f.server.url("/v1/revoke"))
                .form(&[("token", forged.as_str())])
                .header(from.0, from.1),
            _ => c
                .post(f.server.url("/v1/introspect"))
                .basic_auth(f.client, Some(CLIENT_SECRET))
                .form(&[("token", forged.as_str())])
                .header(from.0, from.1),
        }
        .send()
        .map_err(|e| e.to_string())?;
        if r.headers()
            .get("x-tally-verdict")
            .is_some_and(|v| v == "unavailable")
        {
            limited += 1;
        }
    }
    if limited < 30 {
        return Err(format!(
            "only {limited} of 90 unknown tokens were held back by the per-address limit"
        ));
    }
    Ok(())
}

/// Someone who stole a DPoP-bound token (and its refresh token) cannot use
/// either to end its owner's session; the owner can, with a proof.
fn stolen_bound_token() -> Result<(), String> {
    if Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        skip("PyJWT is not installed (stolen DPoP-bound token)");
        return Ok(());
    }
    let tmp = TempDir::new("stolen-bound");
    let data = tmp.path().join("data");
    init(data.to_str().unwrap());
    add_user(data.to_str().unwrap(), "alice", "alice-passphrase");
    let server = Server::start(&data, None);
    let keys = tmp.path().join("dpop");
    std::fs::create_dir_all(&keys).unwrap();
    dpop(&keys, &["keygen"])?;
    let c = client();
    let proof = |method: &str, path: &str, token: Option<&str>| {
        let url = server.url(path);
        let mut args = vec!["proof", method, url.as_str()];
        if let Some(t) = token {
            args.push(t);
        }
        dpop(&keys, &args)
    };
    let r = c
        .post(server.url("/v1/login"))
        .header("DPoP", proof("POST", "/v1/login", None)?)
        .json(&json!({"username": "alice", "password": "alice-passphrase"}))
        .send()
        .map_err(|e| e.to_string())?;
    let body: Value = r.json().map_err(|e| e.to_string())?;
    let token = body["access_token"].as_str().ok_or("no token")?.to_string();
    let refresh = body["refresh_token"]
        .as_str()
        .ok_or("no refresh")?
        .to_string();
    let still_valid = |what: &str| -> Result<(), String> {
        let p = proof("GET", "/orders", Some(&token))?;
        let r = c
            .get(server.url("/v1/check"))
            .header("Authorization", format!("DPoP {token}"))
            .header("X-Original-URI", "/orders")
            .header("DPoP", p)
            .send()
            .map_err(|e| e.to_string())?;
        if r.headers()["x-tally-verdict"] != "ok" {
            return Err(format!(
                "after {what}, the owner's token is {:?}",
                r.headers()
            ));
        }
        Ok(())
    };
    // The thief, without the key.
    for (what, req) in [
        (
            "logout as Bearer",
            c.post(server.url("/v1/logout")).bearer_auth(&token),
        ),
        (
            "logout as DPoP without a proof",
            c.post(server.url("/v1/logout"))
                .header("Authorization", format!("DPoP {token}")),
        ),
        (
            "revoke",
            c.post(server.url("/v1/revoke"))
                .form(&[("token", token.as_str())]),
        ),
        (
            "revoke the refresh token",
            c.post(server.url("/v1/revoke"))
                .form(&[("token", refresh.as_str())]),
        ),
    ] {
        let r = req.send().map_err(|e| e.to_string())?;
        if r.status() != 401 && r.status() != 403 {
            return Err(format!("{what}: {} {:?}", r.status(), r.text()));
        }
        still_valid(what)?;
    }
    // The owner, with the key.
    let r = c
        .post(server.url("/v1/logout"))
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof("POST", "/v1/logout", Some(&token))?)
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != 204 {
        return Err(format!("owner's logout: {} {:?}", r.status(), r.text()));
    }
    Ok(())
}

pub const ROWS: &[Attack] = &[
    Attack {
        id: "token-endpoints.logout-forged",
        item: 4,
        what: "a forged token at /v1/logout is refused and reported as a forgery",
        run: Run::WithFixture(logout_forged),
    },
    Attack {
        id: "token-endpoints.revoke-forged",
        item: 4,
        what: "a forged token at /v1/revoke is reported as a forgery",
        run: Run::WithFixture(revoke_forged),
    },
    Attack {
        id: "token-endpoints.introspect-forged",
        item: 4,
        what: "a forged token shown to /v1/introspect is reported as a forgery",
        run: Run::WithFixture(introspect_forged),
    },
    Attack {
        id: "token-endpoints.miss-limit",
        item: 4,
        what: "unknown tokens at logout, revoke and introspect are limited per address",
        run: Run::WithFixture(miss_limit),
    },
    Attack {
        id: "token-endpoints.stolen-bound-token",
        item: 4,
        what: "a stolen DPoP-bound token cannot log its owner out or revoke the session",
        run: Run::Scenario(stolen_bound_token),
    },
];
