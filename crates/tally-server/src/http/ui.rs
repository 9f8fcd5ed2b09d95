//! The dashboard at `/ui`: server-rendered, no external resources, live
//! through server-sent events (`/ui/events`, one snapshot per second).
//!
//! Sign-in goes through the issuer's own login (throttles and TOTP included);
//! the access token it returns is kept in an `HttpOnly`, `SameSite=Strict`
//! cookie scoped to `/ui`, and every page and event stream passes the full
//! gate decision plus the `admin` role check of the admin API. The pages only
//! read; the only forms are sign-in and sign-out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::request::peer_of;
use crate::app::App;
use tally_incident::report::esc;

const COOKIE: &str = "tally_ui";

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The signed-in administrator, or the response to send instead (a
/// redirect to the sign-in page). A page request is booked as any admin
/// request is; the stream's repeated checks are not.
async fn admin(
    app: &Arc<App>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    uri: &Uri,
    booking: super::admin::Booking,
) -> Result<String, Response> {
    let Some(h) = bearer_headers(headers) else {
        return Err(to_login());
    };
    let facts = super::request::Facts::read(app, &h, peer);
    signed_in(
        super::admin::check_role(app, &facts, &Method::GET, uri, booking, super::admin::ADMIN)
            .await,
    )
}

fn to_login() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui/login"))],
    )
        .into_response()
}

/// `headers` with the session cookie's token as `Authorization: Bearer`
/// (and the cookie itself removed), if there is one.
fn bearer_headers(headers: &HeaderMap) -> Option<HeaderMap> {
    let token = cookie_token(headers)?;
    let mut h = headers.clone();
    h.remove(header::COOKIE);
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    Some(h)
}

/// A refusal for want of the admin role is shown; any other sends the
/// browser to sign in. (The same `Result` as the handlers around it.)
#[allow(clippy::result_large_err)]
fn signed_in(r: Result<super::admin::Admin, Response>) -> Result<String, Response> {
    match r {
        Ok(super::admin::Admin(name)) => Ok(name),
        Err(resp) if resp.status() == StatusCode::FORBIDDEN => Err(resp),
        Err(_) => Err(to_login()),
    }
}

const STYLE: &str = "
:root{--bg:#f8fafc;--fg:#0f172a;--muted:#475569;--card:#fff;--line:#e2e8f0;--bad:#b91c1c;--ok:#15803d;--warn:#b45309;--focus:#2563eb}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;padding:.75rem 1rem;background:#0f172a;color:#fff}
header h1{font-size:1.1rem;margin:0}header form{margin:0}
main{display:grid;gap:1rem;padding:1rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr))}
section{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.75rem 1rem;min-width:0;overflow-x:auto}
section h2{font-size:1rem;margin:.25rem 0 .5rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .4rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:break-word}th{white-space:nowrap}code{word-break:break-all}
.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:var(--bad);font-weight:600}.ok{color:var(--ok)}.warn{color:var(--warn)}
.incident{border-left:4px solid var(--bad);padding:.25rem .6rem;margin:.5rem 0}.muted{color:var(--muted)}
button,input{font:inherit;padding:.4rem .7rem;border-radius:.35rem;border:1px solid #94a3b8}button{background:#1e293b;color:#fff;cursor:pointer}
a:focus,button:focus,input:focus,[tabindex]:focus{outline:3px solid var(--focus);outline-offset:2px}
svg{max-width:100%;height:auto}.wide{grid-column:1/-1}
.login{max-width:22rem;margin:4rem auto;display:grid;gap:.6rem;background:var(--card);padding:1.25rem;border:1px solid var(--line);border-radius:.5rem}
";

fn page(title: &str, body: &str, script: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>{body}{script}</body></html>",
        esc(title)
    );
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
                ),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        html,
    )
        .into_response()
}

/// `GET /ui/login`.
pub(super) async fn login_page() -> Response {
    login_form(None)
}

fn login_form(error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p role=\"alert\" class=\"bad\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "tally: sign in",
        &format!(
            "<form class=\"login\" method=\"post\" action=\"/ui/login\"><h1>tally dashboard</h1>{err}\
<label>User <input name=\"username\" autocomplete=\"username\" required autofocus></label>\
<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<label>One-time code (if enrolled) <input name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\"></label>\
<button type=\"submit\">Sign in</button></form>"
        ),
        "",
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

/// `POST /ui/login` (form): the issuer's login, then the admin role.
pub(super) async fn login(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return login_form(Some("Fill in user and password."));
    };
    let totp = form.totp.filter(|t| !t.trim().is_empty());
    let req = super::login::LoginRequest::new(form.username, form.password, totp);
    let resp = super::login::login(
        State(app.clone()),
        ext.clone(),
        headers.clone(),
        Ok(axum::Json(req)),
    )
    .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let msg = match e.code() {
                "too_many_attempts" => "Too many failed attempts; wait and retry.",
                "totp_required" | "invalid_totp" => "This account needs a valid one-time code.",
                _ => "Sign-in failed.",
            };
            return login_form(Some(msg));
        }
    };
    let Ok(bytes) = axum::body::to_bytes(resp.into_body(), 64 * 1024).await else {
        return login_form(Some("Sign-in failed."));
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (Some(token), Some(ttl)) = (doc["access_token"].as_str(), doc["expires_in"].as_i64())
    else {
        return login_form(Some("Sign-in failed."));
    };
    // The role is checked now too, so a non-admin gets a clear answer.
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    let uri: Uri = "/ui".parse().unwrap_or_default();
    let facts = super::request::Facts::read(&app, &h, peer_of(&ext));
    if super::admin::check_role(
        &app,
        &facts,
        &Method::GET,
        &uri,
        super::admin::Booking::Recheck,
        super::admin::ADMIN,
    )
    .await
    .is_err()
    {
        return login_form(Some("This account is not an administrator."));
    }
    let secure = super::request::from_trusted_proxy(&app, peer_of(&ext))
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            == Some("https");
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={ttl}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui"))],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether a form post comes from the dashboard itself: browsers send
/// `Sec-Fetch-Site` and `Origin`; a cross-site post (login CSRF, forced
/// sign-out) is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return false;
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => {
            let o = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or("");
            o == host
                || headers
                    .get("x-forwarded-host")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|fh| fh == o)
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn cross_site() -> Response {
    (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response()
}

/// `POST /ui/logout`: ends the session (the token is revoked, not only the
/// cookie cleared).
pub(super) async fn logout(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    if let Some(token) = cookie_token(&headers)
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        // The same request, with the cookie's token as its credential: the
        // decision sees the client's address and device as for any other.
        let mut h = headers.clone();
        h.insert(header::AUTHORIZATION, v);
        let _ = super::sessions::logout(State(app), ext, h).await;
    }
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui/login"))],
    )
        .into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tally_ui=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// Everything the dashboard shows, as JSON.
pub(super) fn snapshot(app: &App) -> Value {
    let now = app.clock.now();
    let store = &app.watch.store;
    let incidents: Vec<Value> = store
        .incidents()
        .unwrap_or_default()
        .iter()
        .filter(|i| i.state != tally_incident::clocks::IncidentState::Closed)
        .map(|i| tally_incident::report::incident_json(store, i, app.watch.regimes(), now, false))
        .collect();
    let detections: Vec<Value> = store
        .recent_detections(15)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "incident": d.incident_id, "rule": d.detection.rule.code(),
                "severity": d.detection.severity.as_str(), "summary": d.detection.summary,
                "count": d.detection.count, "last_seen": d.detection.last_seen,
            })
        })
        .collect();
    let keys: Vec<Value> = app
        .dir
        .state
        .keys(tally_store::KeyPurpose::Token)
        .unwrap_or_default()
        .iter()
        .rev()
        .take(8)
        .map(|k| {
            json!({
                "kid": k.kid, "alg": k.alg, "state": k.state.as_str(),
                "age": tally_incident::timefmt::age(now - k.created_at),
                "custodians": app.dir.state.custodians(&k.kid).unwrap_or_default(),
            })
        })
        .collect();
    let verdicts: serde_json::Map<String, Value> = tally_core::verdict::Verdict::ALL
        .iter()
        .map(|v| (v.code().to_string(), Value::from(app.metrics.count(*v))))
        .collect();
    let minutes: Vec<Value> = app
        .watch
        .minutes()
        .into_iter()
        .map(|(m, counts)| json!({"minute": m, "counts": counts.into_iter().map(|(k, n)| (k.to_string(), Value::from(n))).collect::<serde_json::Map<_, _>>()}))
        .collect();
    let (size, since) = app.ledger_progress();
    json!({
        "now": now,
        "verdicts": verdicts,
        "minutes": minutes,
        "incidents": incidents,
        "detections": detections,
        "keys": keys,
        "ledger": {
            "size": size,
            "checkpoint_age_secs": now - since,
            "verified": app.ledger.tampered().is_none(),
            "healthy": app.ledger.is_healthy(),
            "registry_live_tokens": app.gate.registry().len(),
        },
    })
}

fn chart(minutes: &[Value], now: i64) -> String {
    // The last hour, one bar per minute: allowed in green, refused in red.
    let (w, h) = (600.0f64, 140.0f64);
    let this = now.div_euclid(60);
    let mut max = 1u64;
    let mut bars = Vec::new();
    for m in minutes {
        let minute = m["minute"].as_i64().unwrap_or(0);
        let ago = this - minute;
        if !(0..60).contains(&ago) {
            continue;
        }
        let counts = m["counts"].as_object().cloned().unwrap_or_default();
        let ok = counts.get("ok").and_then(Value::as_u64).unwrap_or(0);
        let all: u64 = counts.values().filter_map(Value::as_u64).sum();
        max = max.max(all);
        bars.push((59 - ago, ok, all - ok));
    }
    let bw = w / 60.0;
    let mut o = format!(
        "<svg viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"decisions per minute, last hour\">",
        h + 16.0
    );
    for (slot, ok, bad) in bars {
        let x = slot as f64 * bw;
        let hb = bad as f64 / max as f64 * h;
        let ho = ok as f64 / max as f64 * h;
        o.push_str(&format!("<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ho:.1}\" fill=\"#15803d\"><title>{ok} allowed</title></rect>", h - ho - hb, bw - 1.0));
        o.push_str(&format!("<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hb:.1}\" fill=\"#b91c1c\"><title>{bad} refused</title></rect>", h - hb, bw - 1.0));
    }
    o.push_str(&format!("<text x=\"0\" y=\"{}\" font-size=\"11\">-60 min</text><text x=\"{w}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">now (max {max}/min)</text></svg>", h + 14.0, h + 14.0));
    o
}

/// Renders the dashboard's sections from a snapshot (also used by the page's
/// script, through `/ui/events`, so both stay one rendering).
pub(super) fn render_sections(s: &Value) -> Value {
    let now = s["now"].as_i64().unwrap_or(0);
    let mut incidents = String::new();
    let list = s["incidents"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        incidents.push_str("<p class=\"ok\">No open incident.</p>");
    }
    for i in &list {
        incidents.push_str(&format!(
            "<div class=\"incident\" data-incident=\"{}\"><strong>Incident {} · {} · {}</strong><div>{}</div><table><tr><th>Regime</th><th>Due (UTC)</th><th class=\"num\">Time left</th></tr>",
            i["id"], i["id"], esc(i["severity"].as_str().unwrap_or("")), esc(i["state"].as_str().unwrap_or("")), esc(i["title"].as_str().unwrap_or(""))
        ));
        for c in i["clocks"].as_array().into_iter().flatten() {
            let due = c["due_at"].as_i64().unwrap_or(0);
            let state = c["status"]["state"].as_str().unwrap_or("");
            let left = if state == "met" || state == "late" {
                format!("reported ({state})")
            } else {
                countdown(due - now)
            };
            incidents.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"num{}\"><time data-due=\"{due}\" data-state=\"{}\">{}</time></td></tr>",
                esc(c["name"].as_str().unwrap_or("")),
                esc(&tally_incident::timefmt::utc(due)),
                if due - now < 6 * 3600 { " bad" } else { "" },
                esc(state),
                esc(&left)
            ));
        }
        incidents.push_str("</table></div>");
    }
    let mut detections = String::from(
        "<table><tr><th>Rule</th><th>Severity</th><th>What</th><th class=\"num\">Count</th></tr>",
    );
    for d in s["detections"].as_array().into_iter().flatten() {
        let sev = d["severity"].as_str().unwrap_or("");
        detections.push_str(&format!(
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(d["rule"].as_str().unwrap_or("")),
            if sev == "critical" || sev == "high" {
                "bad"
            } else {
                "warn"
            },
            esc(sev),
            esc(d["summary"].as_str().unwrap_or("")),
            d["count"]
        ));
    }
    detections.push_str("</table>");
    let mut verdicts =
        String::from("<table><tr><th>Verdict</th><th class=\"num\">Decisions</th></tr>");
    for (k, v) in s["verdicts"].as_object().into_iter().flatten() {
        let n = v.as_u64().unwrap_or(0);
        if n == 0 && k != "ok" && k != "not_issued" {
            continue;
        }
        let class = if k == "ok" {
            "ok"
        } else if k == "not_issued" || k == "altered" {
            "bad"
        } else {
            ""
        };
        verdicts.push_str(&format!(
            "<tr><td class=\"{class}\">{}</td><td class=\"num\">{n}</td></tr>",
            esc(k)
        ));
    }
    verdicts.push_str("</table>");
    let mut keys =
        String::from("<table><tr><th>Key</th><th>State</th><th>Age</th><th>Custodians</th></tr>");
    for k in s["keys"].as_array().into_iter().flatten() {
        let state = k["state"].as_str().unwrap_or("");
        keys.push_str(&format!(
            "<tr><td><code>{}</code> {}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(k["kid"].as_str().unwrap_or("")),
            esc(k["alg"].as_str().unwrap_or("")),
            if state == "compromised" {
                "bad"
            } else if state == "active" {
                "ok"
            } else {
                ""
            },
            esc(state),
            esc(k["age"].as_str().unwrap_or("")),
            esc(&k["custodians"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
        ));
    }
    keys.push_str("</table>");
    let l = &s["ledger"];
    let ledger = format!(
        "<table><tr><td>Entries</td><td class=\"num\">{}</td></tr><tr><td>Last checkpoint</td><td class=\"num\">{} ago</td></tr><tr><td>Verification</td><td class=\"num {}\">{}</td></tr><tr><td>Live tokens</td><td class=\"num\">{}</td></tr></table>",
        l["size"],
        esc(&tally_incident::clocks::format_duration(
            l["checkpoint_age_secs"].as_i64().unwrap_or(0)
        )),
        if l["verified"] == json!(true) {
            "ok"
        } else {
            "bad"
        },
        if l["verified"] == json!(true) {
            "verified (audited every second)"
        } else {
            "TAMPERED: issuance stopped"
        },
        l["registry_live_tokens"]
    );
    json!({
        "incidents": incidents,
        "detections": detections,
        "verdicts": verdicts,
        "chart": chart(s["minutes"].as_array().map(Vec::as_slice).unwrap_or(&[]), now),
        "keys": keys,
        "ledger": ledger,
    })
}

/// A ticking countdown: `1d 23h 59m`, `23h 59m 58s`, `4m 2s`, `-1h 0m 5s`.
fn countdown(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{sign}{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{sign}{h}h {m}m {sec}s")
    } else if m > 0 {
        format!("{sign}{m}m {sec}s")
    } else {
        format!("{sign}{sec}s")
    }
}

const SCRIPT: &str = "<script>
(function(){
  function tick(){
    var now=Date.now()/1000;
    document.querySelectorAll('time[data-due]').forEach(function(t){
      var st=t.getAttribute('data-state'); if(st==='met'||st==='late'){return;}
      var left=Math.round(parseInt(t.getAttribute('data-due'),10)-now), neg=left<0, s=Math.abs(left);
      var d=Math.floor(s/86400), h=Math.floor(s%86400/3600), m=Math.floor(s%3600/60), sec=s%60;
      var txt=d>0?d+'d '+h+'h '+m+'m':h>0?h+'h '+m+'m '+sec+'s':m>0?m+'m '+sec+'s':sec+'s';
      t.textContent=(neg?'-':'')+txt;
    });
  }
  setInterval(tick,1000);
  var es=new EventSource('/ui/events');
  es.onmessage=function(e){
    var s=JSON.parse(e.data);
    Object.keys(s).forEach(function(k){var el=document.getElementById(k); if(el){el.innerHTML=s[k];}});
    tick();
    var live=document.getElementById('live'); if(live){live.textContent='live';}
  };
  es.onerror=function(){var live=document.getElementById('live'); if(live){live.textContent='reconnecting';}};
})();
</script>";

/// `GET /ui`.
pub(super) async fn dashboard(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let who = match admin(
        &app,
        &headers,
        peer_of(&ext),
        &uri,
        super::admin::Booking::Request,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let a = app.clone();
    let Ok(snap) = tokio::task::spawn_blocking(move || snapshot(&a)).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let s = render_sections(&snap);
    let sec = |id: &str| s[id].as_str().unwrap_or("").to_string();
    let body = format!(
        "<header><h1>tally</h1><span>signed in as {} · <span id=\"live\" aria-live=\"polite\">connecting</span></span><form method=\"post\" action=\"/ui/logout\"><button type=\"submit\">Sign out</button></form></header>\
<main>\
<section class=\"wide\" aria-labelledby=\"h-inc\"><h2 id=\"h-inc\">Open incidents and reporting deadlines</h2><div id=\"incidents\" aria-live=\"polite\">{}</div></section>\
<section aria-labelledby=\"h-chart\"><h2 id=\"h-chart\">Decisions, last hour</h2><div id=\"chart\">{}</div></section>\
<section aria-labelledby=\"h-ver\"><h2 id=\"h-ver\">Decisions by verdict</h2><div id=\"verdicts\">{}</div></section>\
<section aria-labelledby=\"h-det\"><h2 id=\"h-det\">Detections</h2><div id=\"detections\">{}</div></section>\
<section aria-labelledby=\"h-keys\"><h2 id=\"h-keys\">Signing keys</h2><div id=\"keys\">{}</div></section>\
<section aria-labelledby=\"h-led\"><h2 id=\"h-led\">Ledger</h2><div id=\"ledger\">{}</div></section>\
</main>",
        esc(&who),
        sec("incidents"),
        sec("chart"),
        sec("verdicts"),
        sec("detections"),
        sec("keys"),
        sec("ledger"),
    );
    page("tally dashboard", &body, SCRIPT)
}

/// `GET /ui/events`: one rendered snapshot per second (server-sent events).
pub(super) async fn events(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let peer = peer_of(&ext);
    if let Err(r) = admin(&app, &headers, peer, &uri, super::admin::Booking::Request).await {
        return r;
    }
    let stream = futures_stream(app, headers, peer, uri);
    let mut r = axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn futures_stream(
    app: Arc<App>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    uri: Uri,
) -> impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut sections = feed(&app);
    tokio::spawn(async move {
        let mut n = 0u64;
        // Each new rendering of the sections, as the process's one feed
        // makes it every second.
        while sections.changed().await.is_ok() {
            n += 1;
            // The stream outlives its request: the token, blocks and the
            // admin role are checked again every few seconds, and the stream
            // ends when they no longer hold.
            if n.is_multiple_of(5)
                && admin(&app, &headers, peer, &uri, super::admin::Booking::Recheck)
                    .await
                    .is_err()
            {
                break;
            }
            let data = sections.borrow_and_update().as_ref().clone();
            if tx
                .send(Ok(axum::response::sse::Event::default().data(data)))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio_stream_from(rx)
}

/// The dashboard's sections, rendered once a second by one task per process
/// however many dashboards are open (and not at all while none is): each
/// rendering costs a round of store queries, in a fleet over the network.
fn feed(app: &Arc<App>) -> tokio::sync::watch::Receiver<Arc<String>> {
    app.ui_feed
        .get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(String::new()));
            let app = Arc::downgrade(app);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(a) = app.upgrade() else { break };
                    // The feed keeps one receiver of its own.
                    if tx.receiver_count() <= 1 {
                        continue;
                    }
                    let Ok(snap) = tokio::task::spawn_blocking(move || snapshot(&a)).await else {
                        continue;
                    };
                    let _ = tx.send(Arc::new(render_sections(&snap).to_string()));
                }
            });
            rx
        })
        .clone()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
