//! Differential test of the request-target normaliser: over a corpus of
//! request targets built to confuse routers, the route tally's gate decides
//! (seen as the upstream the request reached) is the route of the path that
//! Python's `http.server` resolves and of the `$uri` that nginx resolves,
//! and the path tally forwards routes the same way again. Targets tally
//! refuses (400) are counted, and must stay a minority.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::fixture::{Upstreams, gate_addr};
use crate::http;
use crate::support::nginx::{Nginx, nginx_binary, preamble, temp_paths};
use crate::support::*;

/// Route prefixes, longest first, and the upstream each goes to.
const ROUTES: &[(&str, &str)] = &[
    ("/api/v1", "api-v1"),
    ("/private", "private"),
    ("/public", "public"),
    ("/api", "api"),
    ("/", "root"),
];

/// The route of a decoded, resolved path, by whole segments (path
/// parameters after `;` ignored, as servlet containers read them).
fn route_of(path: &str) -> &'static str {
    let segs: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.split(';').next().unwrap_or(s))
        .collect();
    for (prefix, name) in ROUTES {
        let want: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        if segs.len() >= want.len() && segs[..want.len()] == want[..] {
            return name;
        }
    }
    "root"
}

/// Request targets built to confuse a router.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = [
        "/",
        "/public",
        "/public/",
        "/public/index.html",
        "/private/secret",
        "/api/v1/orders",
        "/api/v2/orders",
        "/api",
        "/apiv1",
        "/api/v1x/y",
        "/publicity/x",
        "/privateer/x",
        "/PRIVATE/secret",
        "/Private/secret",
        "/%70rivate/secret",
        "/priv%61te/secret",
        "/priv%41te/secret",
        "/%70%72%69%76%61%74%65/secret",
        "/private%20/secret",
        "/private%09/secret",
        "/private./secret",
        "/private../secret",
        "/.private/secret",
        "//private/secret",
        "///private//secret",
        "/public//private",
        "/public/%2fprivate",
        "/public%2fprivate",
        "/private;jsessionid=1/secret",
        "/private;/secret",
        "/public;x/../private/secret",
        "/public?/../private/secret",
        "/public?x=/private",
        "/public/..?/private/secret",
        "/public/%3f/../private",
        "/public/%23/../private",
        "/api/v1/%2e",
        "/api/v1/%2e%2e",
        "/api/v1/%2e%2e/",
        "/api/v1/..",
        "/api/v1/./../v1/x",
        "/api/./v1/x",
        "/api//v1/x",
        "/api/%2fv1/x",
        "/api/v1%2f../../private",
        "/public/%2e%2e%2fprivate/secret",
        "/public/..%2fprivate/secret",
        "/public/%2e%2e%5cprivate/secret",
        "/~/../private",
        "/%7e/../private",
        "/public/%7e%2e%2e/private",
        "/a/b/c/../../../private/x",
        "/a/b/c/../../../../private/x",
        "/a/./b/./../../private/x",
        "/public/...",
        "/public/..../private",
        "/public/.../../private/x",
        "/public/ ../private",
        "/public/%20../private",
        "/public/..%20/private",
        "/public/%c0%ae%c0%ae/private",
        "/public/%e0%80%ae%e0%80%ae/private",
        "/public/%u002e%u002e/private",
        "/public/%2%65%2e/private",
        "/public/%%32%65%2e/private",
        "/public/%",
        "/public/%zz/../private",
        "/public/.%00./private",
        "/public/%00/../private",
        "/api/v1/%252e%252e/private",
        "/api/v1/%25/private",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let froms = ["/public", "/api/v1", "/publicity", "/x/y"];
    let climbs = [
        "/../",
        "/%2e%2e/",
        "/.%2e/",
        "/%2E./",
        "/..%2f",
        "%2f..%2f",
        "/..\\",
        "\\..\\",
        "/./../",
        "//../",
        "/..//",
        "/.../",
        "/..;/",
        "/;/../",
        "/%252e%252e/",
        "/.%2E/./",
        "/%2e/../",
        "/..%5c",
        "/x/../../",
        "/%2E%2E/",
    ];
    let tos = ["private/secret", "private", "api/v1/x"];
    for from in froms {
        for climb in climbs {
            for to in tos {
                out.push(format!("{from}{climb}{to}"));
            }
        }
    }
    out.retain(|t| !t.contains(' '));
    out.sort();
    out.dedup();
    out
}

/// What Python's http.server resolves each target to.
fn python_resolves(targets: &[String]) -> Vec<Option<String>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attacks/resolve.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let input = serde_json::to_vec(targets).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sends `target` raw to `addr`.
fn raw_get(addr: &str, target: &str) -> Result<http::Answer, String> {
    http::send(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn routes_agree_with_python_and_nginx() {
    let targets = corpus();
    assert!(targets.len() >= 200, "corpus of {}", targets.len());
    let tmp = TempDir::new("differential");
    let names: Vec<&str> = ROUTES.iter().map(|(_, n)| *n).collect();
    let up = Upstreams::start_named(tmp.path(), &names);
    let mut cfg = String::from("[gate]\nlisten = \"127.0.0.1:0\"\n");
    for ((prefix, _), (_, port)) in ROUTES.iter().zip(&up.named) {
        cfg.push_str(&format!(
            "\n[[gate.routes]]\nprefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:{port}\"\nrequire_token = false\n"
        ));
    }
    let cfg_path = tmp.path().join("tally.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let server = Server::start(&tmp.path().join("data"), Some(&cfg_path));
    let gate = gate_addr(&server);

    let nginx = match nginx_binary() {
        Some(bin) => {
            let dir = tmp.path().join("nginx");
            Some(Nginx::start(&bin, &dir.clone(), |port| {
                format!(
                    "{}events {{}}\nhttp {{\n    access_log off;\n    {}\n    server {{\n        \
                     listen 127.0.0.1:{port};\n        location / {{ return 200 \"$uri\"; }}\n    }}\n}}\n",
                    preamble(&dir),
                    temp_paths(&dir)
                )
            }))
        }
        None => {
            skip("differential routes: nginx is not installed (compared with Python only)");
            None
        }
    };
    let python = python_resolves(&targets);

    let (mut refused, mut compared_nginx, mut compared_python) = (0, 0, 0);
    let mut wrong = Vec::new();
    for (target, py) in targets.iter().zip(&python) {
        let answer = raw_get(&gate, target).unwrap_or_else(|e| panic!("{target}: {e}"));
        if answer.status == 400 {
            refused += 1;
            continue;
        }
        assert_eq!(answer.status, 200, "{target}: {answer:?}");
        let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        let decided = seen["server"].as_str().unwrap().to_string();
        let forwarded = seen["path"].as_str().unwrap();
        if route_of(forwarded) != decided {
            wrong.push(format!(
                "{target}: tally decided {decided} but forwarded {forwarded:?}, which is {}",
                route_of(forwarded)
            ));
        }
        if let Some(py) = py {
            compared_python += 1;
            if route_of(py) != decided {
                wrong.push(format!(
                    "{target}: tally decided {decided}, Python's http.server serves {py:?} ({})",
                    route_of(py)
                ));
            }
        }
        if let Some(n) = &nginx {
            let a = raw_get(&n.addr, target).unwrap();
            if a.status == 200 {
                compared_nginx += 1;
                if route_of(&a.body) != decided {
                    wrong.push(format!(
                        "{target}: tally decided {decided}, nginx's $uri is {:?} ({})",
                        a.body,
                        route_of(&a.body)
                    ));
                }
            }
        }
    }
    eprintln!(
        "differential routes: {} targets, {refused} refused by tally (400), {compared_python} \
         compared with Python's http.server, {compared_nginx} with nginx's $uri",
        targets.len()
    );
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        refused * 2 < targets.len(),
        "tally refused {refused} of {} targets: the comparison would say little",
        targets.len()
    );
    assert!(compared_python >= 100, "{compared_python}");
    if nginx.is_some() {
        assert!(compared_nginx >= 100, "{compared_nginx}");
    }
}
