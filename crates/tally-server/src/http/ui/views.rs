//! The dashboard's HTML, through askama templates (`templates/ui/`) that
//! escape every value they are given: the sign-in and dashboard pages, and
//! the live sections the page's script swaps in by element id. What a
//! section shows (texts, classes, the chart's geometry) is computed here from
//! a [`Snapshot`]; the templates only lay it out.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_core::verdict::Verdict;
use tally_incident::clocks::{ClockStatus, format_duration};
use tally_incident::detect::Severity;
use tally_incident::timefmt;
use tally_store::KeyState;

use super::snapshot::{IncidentView, KeyView, LedgerView, MinuteCounts, Snapshot};

/// The sign-in page, with what went wrong on the last try.
#[derive(Template)]
#[template(path = "ui/login.html")]
pub(super) struct LoginPage<'a> {
    pub(super) error: Option<&'a str>,
}

/// The dashboard page: its sections as the feed renders them.
#[derive(Template)]
#[template(path = "ui/dashboard.html")]
pub(super) struct DashboardPage<'a> {
    /// The signed-in user.
    pub(super) who: &'a str,
    /// Its role (`admin` or `auditor`).
    pub(super) role: &'a str,
    /// The session's form token (for sign-out).
    pub(super) form_token: &'a str,
    pub(super) sections: Sections<'a>,
}

/// A page saying why a request was not answered (404, 400, 403, 409, 503):
/// a heading, a sentence, and a way back.
#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

/// [`ErrorPage`] as the response to send, with `status`.
pub(super) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut r = page(&ErrorPage { title, message });
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    r
}

/// A page as the response to send, under the dashboard's strict
/// Content-Security-Policy (inline style and script only, nothing external).
pub(super) fn page(t: &impl Template) -> Response {
    let Ok(html) = t.render() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
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

/// The live sections of the dashboard, one template each, named by the id
/// of the element they fill.
pub(super) struct Sections<'a> {
    incidents: Incidents<'a>,
    chart: Chart,
    verdicts: Verdicts,
    detections: Detections<'a>,
    keys: Keys<'a>,
    ledger: Ledger,
}

/// The sections as the page's script takes them from `/ui/events`: element
/// id to that element's new HTML.
#[derive(serde::Serialize)]
struct Rendered {
    incidents: String,
    chart: String,
    verdicts: String,
    detections: String,
    keys: String,
    ledger: String,
}

impl<'a> Sections<'a> {
    /// The sections showing `s`.
    pub(super) fn of(s: &'a Snapshot) -> Sections<'a> {
        Sections {
            incidents: Incidents {
                list: s
                    .incidents
                    .iter()
                    .map(|i| IncidentRow::of(i, s.now))
                    .collect(),
            },
            chart: Chart::of(&s.per_minute, s.now),
            verdicts: Verdicts::of(&s.verdicts),
            detections: Detections {
                rows: s.detections.iter().map(DetectionRow::of).collect(),
            },
            keys: Keys {
                rows: s.keys.iter().map(|k| KeyRow::of(k, s.now)).collect(),
            },
            ledger: Ledger::of(&s.ledger),
        }
    }

    /// The event the feed sends: a JSON object from element id to HTML.
    pub(super) fn to_json(&self) -> Result<String, askama::Error> {
        let r = Rendered {
            incidents: self.incidents.render()?,
            chart: self.chart.render()?,
            verdicts: self.verdicts.render()?,
            detections: self.detections.render()?,
            keys: self.keys.render()?,
            ledger: self.ledger.render()?,
        };
        serde_json::to_string(&r).map_err(|e| askama::Error::Custom(Box::new(e)))
    }
}

/// A section's template output is HTML with every value already escaped:
/// the dashboard page puts it in as it is.
macro_rules! html_safe {
    ($($t:ty),*) => { $(impl askama::filters::HtmlSafe for $t {})* };
}
html_safe!(
    Incidents<'_>,
    Chart,
    Verdicts,
    Detections<'_>,
    Keys<'_>,
    Ledger
);

/// `#incidents`: the open incidents and their reporting deadlines.
#[derive(Template)]
#[template(path = "ui/incidents.html")]
struct Incidents<'a> {
    list: Vec<IncidentRow<'a>>,
}

struct IncidentRow<'a> {
    id: i64,
    severity: &'static str,
    state: &'static str,
    title: &'a str,
    clocks: Vec<ClockRow<'a>>,
}

struct ClockRow<'a> {
    name: &'a str,
    /// Unix seconds (the page's script counts down to it).
    due: i64,
    due_utc: String,
    /// Less than six hours left (or overdue).
    urgent: bool,
    /// `running`, `overdue`, `met` or `late`.
    state: &'static str,
    /// The countdown, or that the report was made.
    left: String,
}

impl<'a> IncidentRow<'a> {
    fn of(i: &'a IncidentView, now: i64) -> IncidentRow<'a> {
        IncidentRow {
            id: i.incident.id,
            severity: i.incident.severity.as_str(),
            state: i.incident.state.as_str(),
            title: &i.incident.title,
            clocks: i
                .clocks
                .iter()
                .map(|(c, status)| {
                    let state = clock_state(status);
                    ClockRow {
                        name: &c.name,
                        due: c.due_at,
                        due_utc: timefmt::utc(c.due_at),
                        urgent: c.due_at - now < 6 * 3600,
                        state,
                        left: match status {
                            ClockStatus::Met { .. } | ClockStatus::Late { .. } => {
                                format!("reported ({state})")
                            }
                            _ => countdown(c.due_at - now),
                        },
                    }
                })
                .collect(),
        }
    }
}

/// A clock status's name, as its JSON `state` tag.
pub(super) fn clock_state(s: &ClockStatus) -> &'static str {
    match s {
        ClockStatus::Running { .. } => "running",
        ClockStatus::Overdue { .. } => "overdue",
        ClockStatus::Met { .. } => "met",
        ClockStatus::Late { .. } => "late",
    }
}

/// A ticking countdown: `1d 23h 59m`, `23h 59m 58s`, `4m 2s`, `-1h 0m 5s`
/// (as the page's script ticks it).
pub(super) fn countdown(secs: i64) -> String {
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

/// `#chart`: decisions in the last hour, one bar per minute, allowed in
/// green on refused in red, as inline SVG.
#[derive(Template)]
#[template(path = "ui/chart.svg")]
struct Chart {
    width: f64,
    /// The drawing's height, the labels' line included.
    view_height: f64,
    /// The labels' baseline.
    label_y: f64,
    /// The busiest minute's decisions (the bars' full height).
    max: u64,
    bars: Vec<Bar>,
}

/// One minute's bar: the allowed part on top of the refused one.
struct Bar {
    x: Px,
    width: Px,
    ok: u64,
    ok_y: Px,
    ok_height: Px,
    bad: u64,
    bad_y: Px,
    bad_height: Px,
}

/// A coordinate, to a tenth.
struct Px(f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

impl Chart {
    fn of(minutes: &[MinuteCounts], now: i64) -> Chart {
        let (w, h) = (600.0f64, 140.0f64);
        let this = now.div_euclid(60);
        let mut max = 1u64;
        let mut slots = Vec::new();
        for m in minutes {
            let ago = this - m.minute;
            if !(0..60).contains(&ago) {
                continue;
            }
            let ok: u64 = m
                .counts
                .iter()
                .filter(|(v, _)| *v == Verdict::Ok)
                .map(|(_, n)| n)
                .sum();
            let all: u64 = m.counts.iter().map(|(_, n)| n).sum();
            max = max.max(all);
            slots.push((59 - ago, ok, all - ok));
        }
        let bw = w / 60.0;
        let bars = slots
            .into_iter()
            .map(|(slot, ok, bad)| {
                let x = slot as f64 * bw;
                let hb = bad as f64 / max as f64 * h;
                let ho = ok as f64 / max as f64 * h;
                Bar {
                    x: Px(x),
                    width: Px(bw - 1.0),
                    ok,
                    ok_y: Px(h - ho - hb),
                    ok_height: Px(ho),
                    bad,
                    bad_y: Px(h - hb),
                    bad_height: Px(hb),
                }
            })
            .collect();
        Chart {
            width: w,
            view_height: h + 20.0,
            label_y: h + 17.0,
            max,
            bars,
        }
    }
}

/// `#verdicts`: decisions by verdict (`ok` and `not_issued` always, the
/// others once they happen).
#[derive(Template)]
#[template(path = "ui/verdicts.html")]
struct Verdicts {
    rows: Vec<VerdictRow>,
}

struct VerdictRow {
    code: &'static str,
    /// `ok`, `bad` (a forgery) or none.
    class: &'static str,
    decisions: u64,
}

impl Verdicts {
    fn of(counts: &[(Verdict, u64)]) -> Verdicts {
        Verdicts {
            rows: counts
                .iter()
                .filter(|(v, n)| *n > 0 || matches!(v, Verdict::Ok | Verdict::NotIssued))
                .map(|(v, n)| {
                    // A verdict nobody got is neutral, whatever it means.
                    let class = match v {
                        _ if *n == 0 => "muted",
                        Verdict::Ok => "ok",
                        Verdict::NotIssued | Verdict::Altered => "bad",
                        _ => "",
                    };
                    VerdictRow {
                        code: v.code(),
                        class,
                        decisions: *n,
                    }
                })
                .collect(),
        }
    }
}

/// `#detections`: the latest detections.
#[derive(Template)]
#[template(path = "ui/detections.html")]
struct Detections<'a> {
    rows: Vec<DetectionRow<'a>>,
}

struct DetectionRow<'a> {
    rule: &'static str,
    severity: &'static str,
    /// High or critical.
    serious: bool,
    summary: &'a str,
    count: u64,
}

impl<'a> DetectionRow<'a> {
    fn of(d: &'a tally_incident::store::StoredDetection) -> DetectionRow<'a> {
        let d = &d.detection;
        DetectionRow {
            rule: d.rule.code(),
            severity: d.severity.as_str(),
            serious: d.severity >= Severity::High,
            summary: &d.summary,
            count: d.count,
        }
    }
}

/// `#keys`: the newest token signing keys and who holds them.
#[derive(Template)]
#[template(path = "ui/keys.html")]
struct Keys<'a> {
    rows: Vec<KeyRow<'a>>,
}

struct KeyRow<'a> {
    kid: &'a str,
    alg: &'a str,
    state: &'static str,
    class: &'static str,
    age: String,
    custodians: String,
}

impl<'a> KeyRow<'a> {
    fn of(k: &'a KeyView, now: i64) -> KeyRow<'a> {
        KeyRow {
            kid: &k.kid,
            alg: &k.alg,
            state: k.state.as_str(),
            class: match k.state {
                KeyState::Compromised => "bad",
                KeyState::Active => "ok",
                _ => "",
            },
            age: timefmt::age(now - k.created_at),
            custodians: k.custodians.join(", "),
        }
    }
}

/// `#ledger`: the issuance ledger's size, last checkpoint and integrity.
#[derive(Template)]
#[template(path = "ui/ledger.html")]
struct Ledger {
    size: u64,
    checkpoint_age: String,
    verified: bool,
    live_tokens: usize,
}

impl Ledger {
    fn of(l: &LedgerView) -> Ledger {
        Ledger {
            size: l.size,
            checkpoint_age: format_duration(l.checkpoint_age_secs),
            verified: l.verified,
            live_tokens: l.live_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use tally_incident::clocks::{Clock, ClockKind, IncidentState};
    use tally_incident::detect::{Detection, Rule};
    use tally_incident::store::{Incident, StoredDetection};

    use super::*;

    /// Text that would run, or break out of an attribute, if it went in raw.
    const HOSTILE: &str = "<script>alert(\"x\")</script> & 'y'";
    /// [`HOSTILE`] as it must appear.
    const ESCAPED: &str = "&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#39;y&#39;";

    const NOW: i64 = 1_800_000_000;

    fn clock(name: &str, due_at: i64) -> Clock {
        Clock {
            regime_id: "r".into(),
            name: name.into(),
            starts_at: NOW - 3600,
            due_at,
            kind: ClockKind::Initial,
            reminders: vec![],
        }
    }

    fn snapshot(text: &str) -> Snapshot {
        Snapshot {
            now: NOW,
            incidents: vec![IncidentView {
                incident: Incident {
                    id: 7,
                    opened_at: NOW - 3600,
                    aware_at: NOW - 3600,
                    state: IncidentState::Open,
                    severity: Severity::Critical,
                    title: format!("forged tokens: {text}"),
                    materiality_at: None,
                    updated_at: NOW,
                },
                clocks: vec![
                    (
                        clock(&format!("KR Network Act {text}"), NOW + 3600 + 65),
                        ClockStatus::Running {
                            remaining_secs: 3665,
                        },
                    ),
                    (
                        clock("GDPR Art. 33", NOW + 72 * 3600),
                        ClockStatus::Met { at: NOW - 60 },
                    ),
                ],
            }],
            per_minute: vec![MinuteCounts {
                minute: NOW / 60,
                counts: vec![(Verdict::Ok, 3), (Verdict::NotIssued, 2)],
            }],
            verdicts: Verdict::ALL
                .iter()
                .map(|v| {
                    let n = match v {
                        Verdict::Ok => 3,
                        Verdict::NotIssued => 2,
                        _ => 0,
                    };
                    (*v, n)
                })
                .collect(),
            detections: vec![StoredDetection {
                id: 1,
                incident_id: Some(7),
                detection: Detection {
                    key: "k".into(),
                    rule: Rule::ForgedToken,
                    severity: Severity::Critical,
                    first_seen: NOW - 60,
                    last_seen: NOW,
                    count: 3,
                    actors: vec![],
                    samples: vec![],
                    suggested: vec![],
                    summary: format!("a token for subject {text} not issued here"),
                },
            }],
            keys: vec![KeyView {
                kid: format!("kid-{text}"),
                alg: "EdDSA".into(),
                state: KeyState::Compromised,
                created_at: NOW - 3 * 3600,
                custodians: vec![format!("eve {text}"), "bob".into()],
            }],
            ledger: LedgerView {
                size: 42,
                checkpoint_age_secs: 75,
                verified: false,
                live_tokens: 5,
            },
        }
    }

    fn rendered(s: &Sections<'_>) -> serde_json::Value {
        serde_json::from_str(&s.to_json().unwrap()).unwrap()
    }

    #[test]
    fn hostile_values_are_escaped_everywhere() {
        let snap = snapshot(HOSTILE);
        let sections = Sections::of(&snap);
        let doc = rendered(&sections);
        for id in [
            "incidents",
            "chart",
            "verdicts",
            "detections",
            "keys",
            "ledger",
        ] {
            let html = doc[id].as_str().unwrap();
            assert!(!html.contains("<script"), "{id}: {html}");
            assert!(!html.contains("alert(\""), "{id}: {html}");
        }
        let incidents = doc["incidents"].as_str().unwrap();
        assert!(incidents.contains(&format!("<div>forged tokens: {ESCAPED}</div>")));
        assert!(incidents.contains(&format!("<td>KR Network Act {ESCAPED}</td>")));
        let detections = doc["detections"].as_str().unwrap();
        assert!(detections.contains(&format!("subject {ESCAPED} not issued")));
        let keys = doc["keys"].as_str().unwrap();
        assert!(keys.contains(&format!("<code>kid-{ESCAPED}</code> EdDSA")));
        assert!(keys.contains(&format!("<td>eve {ESCAPED}, bob</td>")));

        // The page: its own script only, the administrator's name escaped.
        let html = DashboardPage {
            who: HOSTILE,
            role: "auditor",
            form_token: "tok",
            sections,
        }
        .render()
        .unwrap();
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(html.contains(&format!("signed in as {ESCAPED} (auditor) ·")));
        assert!(html.contains(
            "<form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"form_token\" value=\"tok\">"
        ));
        assert!(html.contains(&format!("<div>forged tokens: {ESCAPED}</div>")));
        for id in [
            "incidents",
            "chart",
            "verdicts",
            "detections",
            "keys",
            "ledger",
            "live",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}");
        }

        let login = LoginPage {
            error: Some(HOSTILE),
        }
        .render()
        .unwrap();
        assert!(!login.contains("<script"), "{login}");
        assert!(login.contains(&format!("<p role=\"alert\" class=\"bad\">{ESCAPED}</p>")));
    }

    #[test]
    fn the_sections_show_the_snapshot() {
        let snap = snapshot("");
        let doc = rendered(&Sections::of(&snap));
        let incidents = doc["incidents"].as_str().unwrap();
        assert!(incidents.contains("data-incident=\"7\""));
        assert!(incidents.contains(
            "<strong><a href=\"/ui/incidents/7\">Incident 7</a> · critical · open</strong>"
        ));
        let due = NOW + 3665;
        assert!(incidents.contains(&format!(
            "<td>{}</td><td class=\"num bad\"><time data-due=\"{due}\" data-state=\"running\">1h 1m 5s</time>",
            timefmt::utc(due)
        )));
        assert!(incidents.contains("data-state=\"met\">reported (met)</time>"));
        assert!(incidents.contains("<td class=\"num\"><time"), "{incidents}");

        let chart = doc["chart"].as_str().unwrap();
        assert!(chart.starts_with("<svg viewBox=\"0 0 600 160\""), "{chart}");
        assert!(chart.contains(
            "<rect x=\"590.0\" y=\"0.0\" width=\"9.0\" height=\"84.0\" fill=\"#15803d\"><title>3 allowed</title></rect>"
        ), "{chart}");
        assert!(chart.contains("<title>2 refused</title>"));
        assert!(chart.contains("now (max 5/min)</text></svg>"));
        assert!(chart.contains("<p class=\"legend\"><span style=\"--c:#15803d\">allowed</span>"));

        let verdicts = doc["verdicts"].as_str().unwrap();
        assert!(verdicts.contains("<td class=\"ok\">ok</td><td class=\"num\">3</td>"));
        assert!(verdicts.contains("<td class=\"bad\">not_issued</td><td class=\"num\">2</td>"));
        assert!(
            !verdicts.contains("expired"),
            "a verdict never seen is left out"
        );

        let detections = doc["detections"].as_str().unwrap();
        assert!(detections.contains("<td>forged_token</td><td class=\"bad\">critical</td>"));
        assert!(detections.contains("<td class=\"num\">3</td>"));

        let keys = doc["keys"].as_str().unwrap();
        assert!(
            keys.contains("<td class=\"bad\">compromised</td><td>3h</td>"),
            "{keys}"
        );

        let ledger = doc["ledger"].as_str().unwrap();
        assert!(ledger.contains("<td class=\"num\">42</td>"));
        assert!(ledger.contains("<td class=\"num\">1m 15s ago</td>"));
        assert!(ledger.contains("TAMPERED: issuance stopped"));
        assert!(ledger.contains("<td class=\"num\">5</td>"));
    }

    #[test]
    fn no_incident_says_so() {
        let mut snap = snapshot("");
        snap.incidents.clear();
        snap.ledger.verified = true;
        let doc = rendered(&Sections::of(&snap));
        assert_eq!(doc["incidents"], "<p class=\"ok\">No open incident.</p>");
        assert!(
            doc["ledger"]
                .as_str()
                .unwrap()
                .contains("<td class=\"num ok\">verified (audited every second)</td>")
        );
    }

    #[test]
    fn countdowns_tick_as_the_script_does() {
        assert_eq!(countdown(2 * 86_400 - 1), "1d 23h 59m");
        assert_eq!(countdown(86_399), "23h 59m 59s");
        assert_eq!(countdown(242), "4m 2s");
        assert_eq!(countdown(-3605), "-1h 0m 5s");
        assert_eq!(countdown(0), "0s");
    }
}
