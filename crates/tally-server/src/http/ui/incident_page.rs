//! The page of one incident (`ui/incident.html`): what the incident's
//! regulator-ready report says (`tally_incident::report::Report`: state,
//! severity, the nature of the breach, the legal clocks, the affected
//! counts, the detections, the timeline in words), laid out for the
//! dashboard, and for administrators the forms that act on it.
//!
//! Nothing here counts or words anything itself: the counts, the clocks and
//! the sentences are the report's, so the page and the report always agree.

use askama::Template;
use axum::response::Response;
use tally_incident::clocks::{ClockStatus, IncidentState, format_duration};
use tally_incident::detect::{Containment, Severity};
use tally_incident::report::{Obligation, Report, containment_words};
use tally_incident::timefmt;

use super::views::{clock_state, countdown, page};

/// Who is looking at the page.
pub(super) struct Viewer<'a> {
    /// The signed-in user.
    pub(super) who: &'a str,
    /// Its role.
    pub(super) role: &'a str,
    /// The session's form token.
    pub(super) form_token: &'a str,
    /// Whether it may act (the `admin` role): only then are the forms shown.
    pub(super) admin: bool,
}

/// What the page shows besides the report.
pub(super) struct Context {
    /// Every step the incident's detections suggest (what "take the
    /// suggested steps" does).
    pub(super) suggested: Vec<Containment>,
    /// The incident is a drill (`tally serve --dev`).
    pub(super) drill: bool,
    /// The server is a node of a fleet (other nodes keep their own access
    /// logs).
    pub(super) fleet: bool,
    /// When the page is made (unix seconds).
    pub(super) now: i64,
}

#[derive(Template)]
#[template(path = "ui/incident.html")]
struct IncidentPage<'a> {
    who: &'a str,
    role: &'a str,
    form_token: &'a str,
    admin: bool,
    r: &'a Report,
    drill: bool,
    fleet: bool,
    /// High or critical.
    serious: bool,
    /// The rules of its detections, each once.
    kinds: String,
    clocks: Vec<ClockRow>,
    can_contain: bool,
    suggested: Vec<Suggested>,
    /// The digest of the suggested steps shown ([`steps_digest`]): taking
    /// them is refused if they changed since.
    steps: String,
    max_note: usize,
}

/// The digest of a list of containment steps, as the contain form carries
/// it: the steps taken must be the steps the administrator saw.
pub(super) fn steps_digest(steps: &[Containment]) -> String {
    let bytes = serde_json::to_vec(steps).unwrap_or_default();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One legal clock.
struct ClockRow {
    name: String,
    authority: String,
    /// Unix seconds (the page's script counts down to it).
    due: i64,
    due_utc: String,
    /// `running`, `overdue`, `met` or `late`.
    state: &'static str,
    /// The countdown (negative once overdue).
    left: String,
    /// Less than six hours left, or overdue, and still running.
    urgent: bool,
    /// The report was made: the clock no longer runs.
    stopped: bool,
    /// Where it stands, in words.
    status: String,
    class: &'static str,
}

impl ClockRow {
    fn of(o: &Obligation, now: i64) -> ClockRow {
        let due = o.due_at_unix;
        let (stopped, status, class) = match o.status {
            ClockStatus::Running { .. } => (false, "running".to_string(), ""),
            ClockStatus::Overdue { by_secs } => (
                false,
                format!("overdue by {}", format_duration(by_secs)),
                "bad",
            ),
            ClockStatus::Met { at } => (true, format!("met: reported {}", timefmt::utc(at)), "ok"),
            ClockStatus::Late { at, by_secs } => (
                true,
                format!(
                    "late: reported {}, {} after the deadline",
                    timefmt::utc(at),
                    format_duration(by_secs)
                ),
                "bad",
            ),
        };
        ClockRow {
            name: o.name.clone(),
            authority: o.authority.clone().unwrap_or_else(|| "-".into()),
            due,
            due_utc: o.due_at.to_string(),
            state: clock_state(&o.status),
            left: countdown(due - now),
            urgent: !stopped && due - now < 6 * 3600,
            stopped,
            status,
            class,
        }
    }
}

/// A suggested containment step, and whether it was taken with success
/// already (the report no longer proposes it).
struct Suggested {
    text: String,
    taken: bool,
}

/// The incident page for `viewer`, from the incident's report.
pub(super) fn incident_page(viewer: &Viewer<'_>, r: &Report, cx: &Context) -> Response {
    page(&render(viewer, r, cx))
}

fn render<'a>(viewer: &Viewer<'a>, r: &'a Report, cx: &Context) -> IncidentPage<'a> {
    let mut kinds: Vec<&str> = Vec::new();
    for d in &r.detections {
        if !kinds.contains(&d.rule.code()) {
            kinds.push(d.rule.code());
        }
    }
    IncidentPage {
        who: viewer.who,
        role: viewer.role,
        form_token: viewer.form_token,
        admin: viewer.admin,
        r,
        drill: cx.drill,
        fleet: cx.fleet,
        serious: r.incident.severity >= Severity::High,
        kinds: if kinds.is_empty() {
            "no detection yet".into()
        } else {
            kinds.join(", ")
        },
        clocks: r.regimes.iter().map(|o| ClockRow::of(o, cx.now)).collect(),
        can_contain: r.incident.state.can_move_to(IncidentState::Contained),
        suggested: cx
            .suggested
            .iter()
            .map(|c| Suggested {
                text: containment_words(c),
                taken: !r.measures_proposed.contains(c),
            })
            .collect(),
        steps: steps_digest(&cx.suggested),
        max_note: tally_incident::act::MAX_NOTE,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tally_incident::clocks::ClockStatus;
    use tally_incident::detect::{Actor, ActorKind, Rule};
    use tally_incident::report::{Affected, DetectionRow, Entry, IncidentHead, Utc};

    use super::*;

    const HOSTILE: &str = "<script>alert(\"x\")</script> & 'y'";
    const ESCAPED: &str = "&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#39;y&#39;";
    const NOW: i64 = 1_800_000_000;

    fn block(ip: &str) -> Containment {
        Containment::BlockActor {
            actor: Actor {
                kind: ActorKind::Ip,
                value: ip.into(),
            },
        }
    }

    fn report(text: &str) -> Report {
        let obligation = |name: &str, status, due| Obligation {
            regime: "r".into(),
            name: name.into(),
            authority: Some(format!("authority {text}")),
            clock_starts_at: Utc(NOW - 3600),
            due_at: Utc(due),
            due_at_unix: due,
            status,
            remaining: String::new(),
            required_fields: vec![],
        };
        Report {
            incident: IncidentHead {
                id: 7,
                title: format!("forged tokens {text}"),
                state: IncidentState::Open,
                severity: Severity::Critical,
                opened_at: Utc(NOW - 3600),
                aware_at: Utc(NOW - 3600),
                materiality_at: None,
            },
            generated_at: Utc(NOW),
            nature: format!("nature {text}"),
            attack_vector: vec![],
            first_malicious_use: Some(Utc(NOW - 3000)),
            last_malicious_use: None,
            awareness: Utc(NOW - 3600),
            affected: Affected {
                subjects_exposed: 11,
                subjects_attempted_only: 12,
                records_exposed: 13,
                records_attempted: 14,
                forged_requests: 15,
                forged_refused_by_containment: 7,
                requests_unexamined: 0,
                requests_unexamined_unattributed: 0,
                records_refused: 16,
                records_allowed_monitor: 17,
                records_allowed_valid: 18,
                unknown_subjects: 2,
                unknown_subject_tokens: 3,
                unknown_subject_requests: 19,
                categories: vec![],
                events_scanned: 99,
                access_logs: vec![format!("/data/{text}/access.db")],
            },
            likely_consequences: vec![],
            measures_taken: vec![],
            measures_proposed: vec![block("203.0.113.2")],
            contacts: BTreeMap::new(),
            regimes: vec![
                obligation(
                    &format!("KR Network Act {text}"),
                    ClockStatus::Running {
                        remaining_secs: 3665,
                    },
                    NOW + 3665,
                ),
                obligation(
                    "GDPR Art. 33",
                    ClockStatus::Late {
                        at: NOW - 60,
                        by_secs: 7200,
                    },
                    NOW - 7260,
                ),
            ],
            detections: vec![DetectionRow {
                id: 1,
                rule: Rule::ForgedToken,
                severity: Severity::Critical,
                first_seen: Utc(NOW - 3600),
                last_seen: Utc(NOW),
                count: 3,
                summary: format!("summary {text}"),
                actors: vec![],
                samples: vec![],
            }],
            timeline: vec![Entry {
                at: Utc(NOW - 60),
                by: format!("root {text}"),
                kind: "note".into(),
                what: serde_json::json!({"text": text}),
                text: format!("note: {text}"),
            }],
            per_minute: vec![],
        }
    }

    fn html(admin: bool, r: &Report) -> String {
        let viewer = Viewer {
            who: HOSTILE,
            role: if admin { "admin" } else { "auditor" },
            form_token: "tok-en_1",
            admin,
        };
        let cx = Context {
            suggested: vec![block("203.0.113.1"), block("203.0.113.2")],
            drill: false,
            fleet: true,
            now: NOW,
        };
        render(&viewer, r, &cx).render().unwrap()
    }

    #[test]
    fn every_value_is_escaped() {
        let r = report(HOSTILE);
        let page = html(true, &r);
        // The page's own script only.
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        for needle in [
            format!("signed in as {ESCAPED} (admin)"),
            format!("Incident 7: forged tokens {ESCAPED}</h1>"),
            format!("<p>nature {ESCAPED}</p>"),
            format!("<td>KR Network Act {ESCAPED}</td><td>authority {ESCAPED}</td>"),
            format!("<td>summary {ESCAPED}</td>"),
            format!(
                "<li>{} · root {ESCAPED}: note: {ESCAPED}</li>",
                Utc(NOW - 60)
            ),
            format!("/data/{ESCAPED}/access.db"),
        ] {
            assert!(page.contains(&needle), "no {needle} in {page}");
        }
    }

    #[test]
    fn the_page_shows_the_report() {
        let r = report("");
        let page = html(true, &r);
        for needle in [
            "<dd id=\"state\">open</dd>".to_string(),
            "<dd class=\"bad\">critical</dd>".into(),
            "<dt>Kind</dt><dd>forged_token</dd>".into(),
            format!(
                "<td>{}</td><td class=\"num bad\"><time data-due=\"{}\" data-state=\"running\">1h 1m 5s</time></td><td class=\"\">running</td>",
                timefmt::utc(NOW + 3665),
                NOW + 3665
            ),
            format!(
                "<td class=\"num\">stopped</td><td class=\"bad\">late: reported {}, 2h 0m after the deadline</td>",
                timefmt::utc(NOW - 60)
            ),
            "<tr><td>Customers</td><td class=\"num\">11</td><td class=\"num\">12</td></tr>".into(),
            "<tr><td>With a forged token</td><td class=\"num\">15</td></tr>".into(),
            "(2 ids, 3 tokens)</td><td class=\"num\">19</td>".into(),
            "Counted exactly from 99 access events".into(),
            "--access-log".into(),
            "href=\"/ui/incidents/7/report.html\"".into(),
            "href=\"/ui/incidents/7/affected.csv\"".into(),
            "<li>block ip 203.0.113.1 at the gate (taken already)</li>".into(),
            "<li>block ip 203.0.113.2 at the gate</li>".into(),
        ] {
            assert!(page.contains(&needle), "no {needle} in {page}");
        }
        for action in ["ack", "note", "contain"] {
            assert!(page.contains(&format!(
                "<form method=\"post\" action=\"/ui/incidents/7/{action}\"><input type=\"hidden\" name=\"form_token\" value=\"tok-en_1\">"
            )));
        }
    }

    #[test]
    fn an_auditor_gets_no_form_but_sign_out() {
        let r = report("");
        let page = html(false, &r);
        assert_eq!(page.matches("<form").count(), 1, "{page}");
        assert_eq!(page.matches("<button").count(), 1, "{page}");
        assert!(page.contains("action=\"/ui/logout\""));
        assert!(page.contains("signed in as"));
    }

    #[test]
    fn a_drill_says_so_and_a_contained_incident_offers_no_containment() {
        let mut r = report("");
        r.regimes.clear();
        r.incident.state = IncidentState::Contained;
        let viewer = Viewer {
            who: "root",
            role: "admin",
            form_token: "t",
            admin: true,
        };
        let cx = Context {
            suggested: vec![],
            drill: true,
            fleet: false,
            now: NOW,
        };
        let page = render(&viewer, &r, &cx).render().unwrap();
        assert!(page.contains("<p class=\"drill\" id=\"drill\"><strong>Drill</strong>"));
        assert!(page.contains("No legal reporting clock runs for this incident (a drill)."));
        assert!(!page.contains("/contain\""));
        assert!(page.contains("it cannot be marked contained again"));
        assert!(!page.contains("--access-log"));
    }
}
