//! Sessions over HTTP: refresh rotation, reuse detection revoking the whole
//! session, RFC 7009 revocation, RFC 7662 introspection and logout, each
//! enforced by the gate on the next request.

mod support;

use serde_json::{Value, json};
use support::*;

fn login_pair(server: &Server) -> (String, String) {
    let body: Value = client()
        .post(server.url("/v1/login"))
        .json(&json!({"username": "alice", "password": "alice-passphrase", "client_id": "web"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    assert!(rt.starts_with("tally_rt_"), "{body}");
    (body["access_token"].as_str().unwrap().to_string(), rt)
}

fn refresh(server: &Server, rt: &str) -> (u16, Value) {
    let resp = client()
        .post(server.url("/v1/refresh"))
        .json(&json!({"refresh_token": rt}))
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

fn introspect(server: &Server, auth: Option<(&str, &str)>, token: &str) -> (u16, Value) {
    let mut req = client()
        .post(server.url("/v1/introspect"))
        .form(&[("token", token)]);
    if let Some((id, secret)) = auth {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

#[test]
fn refresh_rotation_reuse_revoke_introspect_logout() {
    let tmp = TempDir::new("sessions");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    tally_ok(
        &["users", "add", "alice", "--password-stdin", "--data", d],
        Some("alice-passphrase\n"),
    );
    tally_ok(
        &[
            "clients",
            "add",
            "billing-api",
            "--secret-stdin",
            "--data",
            d,
        ],
        Some("s3cret-of-billing\n"),
    );
    let dup = tally(
        &[
            "clients",
            "add",
            "billing-api",
            "--secret-stdin",
            "--data",
            d,
        ],
        Some("x\n"),
    );
    assert_eq!(dup.status.code(), Some(2));
    let server = Server::start(&data, None);

    // Rotation: each refresh spends the token and hands out a new pair.
    let (a1, r1) = login_pair(&server);
    assert_eq!(checked(&server, &a1).1, "ok");
    let (status, body) = refresh(&server, &r1);
    assert_eq!(status, 200, "{body}");
    let a2 = body["access_token"].as_str().unwrap().to_string();
    let r2 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert_eq!(payload(&a2)["sub"], "alice");
    assert_eq!(payload(&a2)["client_id"], "web");
    assert_eq!(checked(&server, &a2).1, "ok");
    assert_eq!(checked(&server, &a1).1, "ok");

    // Reuse of the spent r1: the whole session goes, access tokens included.
    let (status, body) = refresh(&server, &r1);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(checked(&server, &a1).1, "revoked");
    assert_eq!(checked(&server, &a2).1, "revoked");
    assert_eq!(
        refresh(&server, &r2).0,
        400,
        "the family's newest refresh token must die too"
    );
    for garbage in ["", "tally_rt_short", "not-a-token", &format!("{r2}x")] {
        let (status, body) = refresh(&server, garbage);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_grant")),
            "{garbage:?}"
        );
    }
    let metrics = get_text(&server, "/metrics");
    assert!(metrics.contains("tally_refresh_reuse_total 1"), "{metrics}");

    // Introspection needs a registered client.
    let (a3, r3) = login_pair(&server);
    assert_eq!(introspect(&server, None, &a3).0, 401);
    assert_eq!(
        introspect(&server, Some(("billing-api", "wrong")), &a3).0,
        401
    );
    assert_eq!(
        introspect(&server, Some(("nobody", "wrong")), &a3).1,
        introspect(&server, Some(("billing-api", "wrong")), &a3).1
    );
    let ok = Some(("billing-api", "s3cret-of-billing"));
    let (status, body) = introspect(&server, ok, &a3);
    assert_eq!(status, 200);
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["token_type"], "access_token");
    assert_eq!(body["jti"], payload(&a3)["jti"]);
    let (_, body) = introspect(&server, ok, &r3);
    assert_eq!(
        (body["active"].as_bool(), body["token_type"].as_str()),
        (Some(true), Some("refresh_token"))
    );
    assert_eq!(
        introspect(&server, ok, "garbage").1,
        json!({"active": false})
    );
    assert_eq!(introspect(&server, ok, &a1).1, json!({"active": false}));

    // RFC 7009 revocation (form-encoded) of an access token ends its session.
    let resp = client()
        .post(server.url("/v1/revoke"))
        .form(&[("token", a3.as_str()), ("token_type_hint", "access_token")])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(checked(&server, &a3).1, "revoked");
    assert_eq!(introspect(&server, ok, &a3).1, json!({"active": false}));
    assert_eq!(refresh(&server, &r3).0, 400);
    // JSON is accepted too; unknown tokens are a quiet 200; a bad body is 400.
    let resp = client()
        .post(server.url("/v1/revoke"))
        .json(&json!({"token": "whatever"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(server.url("/v1/revoke"))
        .body("token=x")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Revoking a refresh token ends its session's access tokens.
    let (a5, r5) = login_pair(&server);
    let resp = client()
        .post(server.url("/v1/revoke"))
        .form(&[("token", r5.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(checked(&server, &a5).1, "revoked");

    // Logout.
    let (a4, r4) = login_pair(&server);
    let resp = client()
        .post(server.url("/v1/logout"))
        .bearer_auth(&a4)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(checked(&server, &a4).1, "revoked");
    assert_eq!(refresh(&server, &r4).0, 400);
    // Logging out again with the revoked token: refused with its verdict.
    let resp = client()
        .post(server.url("/v1/logout"))
        .bearer_auth(&a4)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-tally-verdict"], "revoked");

    // Two concurrent uses of one refresh token: exactly one wins, and the
    // other is treated as reuse, which ends the session.
    let (_, r6) = login_pair(&server);
    let base = server.base.clone();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (base, r6) = (base.clone(), r6.clone());
            std::thread::spawn(move || {
                client()
                    .post(format!("{base}/v1/refresh"))
                    .json(&json!({"refresh_token": r6}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 400]);

    // Revocations survive a restart.
    server.stop();
    let server = Server::start(&data, None);
    assert_eq!(checked(&server, &a2).1, "revoked");
    assert_eq!(checked(&server, &a4).1, "revoked");
    server.stop();
}
