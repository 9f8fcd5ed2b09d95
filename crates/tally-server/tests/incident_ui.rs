//! Who may do what on an incident's dashboard page, over real HTTP against
//! a real server: auditors and administrators read the page and the
//! report, only administrators act, and an action needs the session's form
//! token and the dashboard's own origin. Ids that are not numbers get `400`,
//! unknown ones `404`.

use std::sync::Arc;

use reqwest::StatusCode;
use tally_incident::clocks::IncidentState;
use tally_incident::detect::{Actor, ActorKind, Containment, Detection, Rule, Severity};
use tally_server::{App, Config, Overrides};

fn open_app(dir: &std::path::Path) -> Arc<App> {
    let config = Config::load(
        None,
        Overrides {
            listen: Some("127.0.0.1:0".into()),
            data: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    App::open(config, &mut |_, _| {}).unwrap()
}

/// The session cookie of `user`, as the dashboard's sign-in sets it.
async fn session(app: &Arc<App>, user: &str) -> String {
    let issued = tally_server::issuance::issue(app, user, "dashboard", "pwd")
        .await
        .unwrap();
    format!("tally_ui={}", issued.token)
}

/// The form token a page carries.
fn form_token(html: &str) -> String {
    hidden(html, "form_token")
}

/// The value of the first hidden field `name` on the page.
fn hidden(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} on the page"))
        + needle.len();
    html[at..].split('"').next().unwrap().to_string()
}

struct Site {
    base: String,
    http: reqwest::Client,
}

impl Site {
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        r.send().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Cookie", cookie)
            .form(form);
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        r.send().await.unwrap()
    }
}

fn kinds(app: &App) -> Vec<(String, String)> {
    app.watch
        .store
        .timeline(1)
        .unwrap()
        .into_iter()
        .map(|t| (t.kind, t.actor))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_act_with_the_session_form_token() {
    let dir = tempfile::Builder::new()
        .prefix("tally-incident-ui-")
        .tempdir()
        .unwrap();
    let app = open_app(dir.path());
    let users: Vec<(String, String)> = ["root", "audrey", "alice"]
        .iter()
        .map(|u| (u.to_string(), "$argon2id$unused".to_string()))
        .collect();
    app.dir.state.add_users(&users, 0).unwrap();
    app.dir.state.set_role("root", "admin").unwrap();
    app.dir.state.set_role("audrey", "auditor").unwrap();
    let now = app.clock.now();
    let block = Containment::BlockActor {
        actor: Actor {
            kind: ActorKind::Ip,
            value: "203.0.113.9".into(),
        },
    };
    app.watch
        .store
        .record(
            &[(
                Detection {
                    key: "mass:203.0.113.9".into(),
                    rule: Rule::MassAccess,
                    severity: Severity::Critical,
                    first_seen: now,
                    last_seen: now,
                    count: 1,
                    actors: vec![],
                    samples: vec![],
                    suggested: vec![block],
                    summary: "203.0.113.9 read 500 accounts <b>".into(),
                },
                true,
            )],
            now,
        )
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tally_server::serve(app.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let site = Site {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let root = session(&app, "root").await;
    let audrey = session(&app, "audrey").await;
    let alice = session(&app, "alice").await;

    // Reading: signed in with a role, or sent to sign in.
    let r = site.get("/ui/incidents/1", None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/login");
    let r = site.get("/ui/incidents/1", Some(&alice)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("needs the role auditor or admin")
    );
    let r = site.get("/ui/incidents/1", Some(&audrey)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let auditor_page = r.text().await.unwrap();
    assert!(auditor_page.contains("Incident 1: "), "{auditor_page}");
    assert!(auditor_page.contains("read 500 accounts &#60;b&#62;"));
    assert!(!auditor_page.contains("/ui/incidents/1/ack"));
    assert_eq!(auditor_page.matches("<button").count(), 1, "sign-out only");
    let auditor_token = form_token(&auditor_page);
    let admin_page = site.get("/ui/incidents/1", Some(&root)).await;
    assert_eq!(admin_page.status(), StatusCode::OK);
    let admin_page = admin_page.text().await.unwrap();
    for action in ["ack", "note", "contain"] {
        assert!(
            admin_page.contains(&format!("action=\"/ui/incidents/1/{action}\"")),
            "{admin_page}"
        );
    }
    let root_token = form_token(&admin_page);
    assert_ne!(root_token, auditor_token);

    // Ids.
    for (path, status) in [
        ("/ui/incidents/abc", StatusCode::BAD_REQUEST),
        ("/ui/incidents/-1", StatusCode::BAD_REQUEST),
        (
            "/ui/incidents/99999999999999999999999",
            StatusCode::BAD_REQUEST,
        ),
        ("/ui/incidents/99", StatusCode::NOT_FOUND),
        ("/ui/incidents/99/report.json", StatusCode::NOT_FOUND),
        ("/ui/incidents/1/secrets.txt", StatusCode::NOT_FOUND),
        ("/ui/incidents/x/report.html", StatusCode::BAD_REQUEST),
    ] {
        let r = site.get(path, Some(&audrey)).await;
        assert_eq!(r.status(), status, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
    }

    // Acting: an auditor is refused by the server, whatever the form says.
    let r = site
        .post(
            "/ui/incidents/1/ack",
            &audrey,
            &[("form_token", &auditor_token)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("needs the role admin"));
    let r = site
        .post(
            "/ui/incidents/1/contain",
            &audrey,
            &[("form_token", &auditor_token), ("apply_suggested", "yes")],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // An administrator's post needs the session's own form token, and the
    // dashboard's origin.
    for form in [
        vec![],
        vec![("form_token", "")],
        vec![("form_token", auditor_token.as_str())],
        vec![("form_token", "AAAA")],
    ] {
        let r = site.post("/ui/incidents/1/ack", &root, &form, None).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form:?}");
    }
    let r = site
        .post(
            "/ui/incidents/1/ack",
            &root,
            &[("form_token", &root_token)],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        !kinds(&app).iter().any(|(k, _)| k == "ack"),
        "nothing refused reached the timeline"
    );
    // Without a session, to sign in.
    let r = site
        .http
        .post(format!("{}/ui/incidents/1/ack", site.base))
        .form(&[("form_token", &root_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // The administrator acts.
    let r = site
        .post(
            "/ui/incidents/1/ack",
            &root,
            &[("form_token", &root_token)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/incidents/1");
    assert!(kinds(&app).contains(&("ack".into(), "root (dashboard)".into())));
    for (path, text, status) in [
        ("/ui/incidents/1/note", "  ", StatusCode::BAD_REQUEST),
        (
            "/ui/incidents/1/note",
            "insider <suspected>",
            StatusCode::SEE_OTHER,
        ),
        ("/ui/incidents/99/ack", "", StatusCode::NOT_FOUND),
    ] {
        let fields = [("form_token", root_token.as_str()), ("text", text)];
        let r = site.post(path, &root, &fields, None).await;
        assert_eq!(r.status(), status, "{path} {text:?}");
    }
    // Taking the suggested steps needs the digest of the steps the page
    // showed: a stale or missing one takes nothing.
    for stale in ["", "00"] {
        let r = site
            .post(
                "/ui/incidents/1/contain",
                &root,
                &[
                    ("form_token", &root_token),
                    ("apply_suggested", "yes"),
                    ("steps", stale),
                ],
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(app.dir.state.blocks(app.clock.now()).unwrap().is_empty());
    }
    let steps = hidden(&admin_page, "steps");
    let r = site
        .post(
            "/ui/incidents/1/contain",
            &root,
            &[
                ("form_token", &root_token),
                ("apply_suggested", "yes"),
                ("steps", &steps),
            ],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let inc = app.watch.store.incident(1).unwrap().unwrap();
    assert_eq!(inc.state, IncidentState::Contained);
    let blocks = app.dir.state.blocks(app.clock.now()).unwrap();
    assert!(
        blocks
            .iter()
            .any(|b| b.value == "203.0.113.9/32" && b.reason == "incident 1"),
        "{blocks:?}"
    );
    assert_eq!(app.blocks().len(), 1, "in force on this server at once");
    assert!(kinds(&app).contains(&("action".into(), "root (dashboard)".into())));
    let r = site
        .post(
            "/ui/incidents/1/contain",
            &root,
            &[("form_token", &root_token)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // The page and the report say what was done, in words.
    let page = site
        .get("/ui/incidents/1", Some(&audrey))
        .await
        .text()
        .await
        .unwrap();
    for needle in [
        "root (dashboard): incident acknowledged",
        "root (dashboard): note: insider &#60;suspected&#62;",
        "root (dashboard): blocked ip 203.0.113.9 (incident 1)",
        "<dd id=\"state\">contained</dd>",
    ] {
        assert!(page.contains(needle), "no {needle} in {page}");
    }
    let r = site.get("/ui/incidents/1/report.json", Some(&audrey)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["incident"]["id"], 1);
    assert_eq!(report["incident"]["state"], "contained");
    assert!(
        report["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["text"] == "incident acknowledged")
    );
    let r = site.get("/ui/incidents/1/report.html", Some(&audrey)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert!(r.text().await.unwrap().contains("<h1>Incident 1"));
    let r = site
        .get("/ui/incidents/1/affected.csv", Some(&audrey))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(r.text().await.unwrap().starts_with("subject,categories,"));
    assert_eq!(
        site.get("/ui/incidents/1/report.json", Some(&alice))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Signing out needs the form token too.
    let r = site.post("/ui/logout", &root, &[], None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = site
        .post("/ui/logout", &root, &[("form_token", &root_token)], None)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        site.get("/ui/incidents/1", Some(&root)).await.status(),
        StatusCode::SEE_OTHER,
        "the session ended"
    );

    let _ = stop.send(());
    let _ = server.await;
    app.ledger.close();
}
