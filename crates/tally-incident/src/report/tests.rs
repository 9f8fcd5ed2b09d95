//! Tests of the report's renderings: a typed report built from a fixed
//! case, and hostile values that must come out escaped.

use std::collections::{BTreeMap, BTreeSet};

use askama::filters::Escaper;
use serde_json::{Value, json};

use super::chart::chart_svg;
use super::document::{Case, build};
use super::html::html;
use super::impact::{AffectedSubject, Impact};
use super::markdown::{Markdown, markdown};
use super::model::{Minute, Report, Utc};
use crate::clocks::{IncidentState, default_regimes};
use crate::detect::{Actor, ActorKind, Containment, Detection, Rule, Severity};
use crate::store::{Incident, StoredDetection, Submission, TimelineEntry};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn detection(
    id: i64,
    rule: Rule,
    summary: &str,
    actors: Vec<Actor>,
    suggested: Vec<Containment>,
) -> StoredDetection {
    StoredDetection {
        id,
        incident_id: Some(7),
        detection: Detection {
            key: format!("{}:{id}", rule.code()),
            rule,
            severity: rule.severity(),
            first_seen: T0 + 60 * id,
            last_seen: T0 + 600,
            count: 4,
            actors,
            samples: vec![json!({"route": "/profile/cust-1"})],
            suggested,
            summary: summary.to_string(),
        },
    }
}

pub(super) fn case(title: &str, subject: &str) -> (Case, Impact) {
    let key = Actor {
        kind: ActorKind::Key,
        value: "k1".into(),
    };
    let ip = Actor {
        kind: ActorKind::Ip,
        value: "203.0.113.99".into(),
    };
    let case = Case {
        incident: Incident {
            id: 7,
            opened_at: T0,
            aware_at: T0 + 30,
            state: IncidentState::Open,
            severity: Severity::Critical,
            title: title.to_string(),
            materiality_at: None,
            updated_at: T0 + 900,
        },
        detections: vec![
            detection(
                1,
                Rule::ForgedToken,
                "forged token signed with k1",
                vec![key],
                vec![Containment::CompromiseKey { kid: "k1".into() }],
            ),
            detection(
                2,
                Rule::MassAccess,
                &format!("mass access | by 203.0.113.99 for {subject}"),
                vec![ip.clone()],
                vec![
                    Containment::BlockActor { actor: ip },
                    Containment::RevokeSubject {
                        subject: subject.into(),
                    },
                ],
            ),
        ],
        timeline: vec![
            TimelineEntry {
                id: 1,
                incident_id: 7,
                at: T0,
                actor: "tally".into(),
                kind: "opened".into(),
                body: json!({"title": title}),
            },
            TimelineEntry {
                id: 2,
                incident_id: 7,
                at: T0 + 40,
                actor: "tally".into(),
                kind: "action".into(),
                body: json!({"action": {"action": "compromise_key", "kid": "k1"}, "ok": true, "rule": "forged_token", "detail": null}),
            },
            TimelineEntry {
                id: 3,
                incident_id: 7,
                at: T0 + 50,
                actor: "admin:ann".into(),
                kind: "note".into(),
                body: json!(format!("called {subject}")),
            },
        ],
        submissions: vec![Submission {
            regime: "kr_network_act".into(),
            submitted_at: T0 + 3600,
            actor: "ann".into(),
            reference: "KISA-1".into(),
        }],
    };
    let mut impact = Impact {
        requests_exposed: 3,
        requests_attempted: 5,
        forged_requests: 6,
        first_ms: Some(T0 * 1000 + 1500),
        last_ms: Some(T0 * 1000 + 300_000),
        scanned: 1234,
        sources: vec!["access.db".into(), "node-2 | access.db".into()],
        ..Impact::default()
    };
    impact.subjects.insert(
        subject.to_string(),
        AffectedSubject {
            subject: subject.to_string(),
            categories: BTreeSet::from(["name".to_string(), "email".to_string()]),
            first_ms: T0 * 1000,
            last_ms: T0 * 1000 + 5000,
            status: "exposed",
            exposed_requests: 3,
            attempted_requests: 1,
        },
    );
    impact.subjects.insert(
        "cust-2".into(),
        AffectedSubject {
            subject: "cust-2".into(),
            categories: BTreeSet::from(["address".to_string()]),
            first_ms: T0 * 1000,
            last_ms: T0 * 1000 + 5000,
            status: "attempted",
            exposed_requests: 0,
            attempted_requests: 4,
        },
    );
    impact.per_minute.insert(
        T0 / 60,
        BTreeMap::from([("ok".to_string(), 3), ("not_issued".to_string(), 2)]),
    );
    impact
        .per_minute
        .insert(T0 / 60 + 3, BTreeMap::from([("blocked".to_string(), 3)]));
    (case, impact)
}

fn report(title: &str, subject: &str) -> Report {
    let (case, impact) = case(title, subject);
    let contacts = BTreeMap::from([("dpo".to_string(), "dpo@shop.example".to_string())]);
    build(&case, &impact, &default_regimes(), &contacts, T0 + 7200)
}

const HOSTILE_TITLE: &str = "Forged\n# tokens | `k1` <b>bold</b>";
const HOSTILE_SUBJECT: &str = "<script>alert(1)</script>|x`y`\n## z";

/// The JSON with every string made `""`, every number `0`, and every array
/// cut to its first element: the keys and value types readers rely on.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::String(_) => json!(""),
        Value::Number(_) => json!(0),
        other => other.clone(),
    }
}

#[test]
fn json_keeps_the_keys_and_types_of_the_report_document() {
    let r = serde_json::to_value(report("Forged tokens signed with k1", "cust-1")).unwrap();
    let expected = json!({
        "incident": {"id": 0, "title": "", "state": "", "severity": "", "opened_at": "", "aware_at": "", "materiality_at": null},
        "generated_at": "",
        "nature": "",
        "attack_vector": [""],
        "first_malicious_use": "",
        "last_malicious_use": "",
        "awareness": "",
        "affected": {
            "subjects_exposed": 0, "subjects_attempted_only": 0, "records_exposed": 0, "records_attempted": 0,
            "forged_requests": 0, "forged_refused_by_containment": 0, "requests_unexamined": 0, "requests_unexamined_unattributed": 0, "categories": [{"category": "", "subjects_exposed": 0, "subjects_attempted_only": 0}],
            "events_scanned": 0, "access_logs": [""],
            "records_refused": 0, "records_allowed_monitor": 0, "records_allowed_valid": 0,
            "unknown_subjects": 0, "unknown_subject_tokens": 0, "unknown_subject_requests": 0,
        },
        "likely_consequences": [""],
        "measures_taken": [{"at": "", "by": "", "kind": "", "what": {"action": {"action": "", "kid": ""}, "detail": null, "ok": true, "rule": ""}, "text": ""}],
        "measures_proposed": [{"action": "", "actor": {"kind": "", "value": ""}}],
        "contacts": {"dpo": ""},
        "regimes": [{
            "regime": "", "name": "", "authority": "", "clock_starts_at": "", "due_at": "", "due_at_unix": 0,
            "status": {"state": "", "at": 0}, "remaining": "", "required_fields": [""],
        }],
        "detections": [{
            "id": 0, "rule": "", "severity": "", "first_seen": "", "last_seen": "", "count": 0, "summary": "",
            "actors": [{"kind": "", "value": ""}], "samples": [{"route": ""}],
        }],
        "timeline": [{"at": "", "by": "", "kind": "", "what": {"title": ""}, "text": ""}],
        "per_minute": [{"minute": "", "by_verdict": {"not_issued": 0, "ok": 0}}],
    });
    assert_eq!(shape(&r), expected);
    assert_eq!(r["incident"]["opened_at"], "2026-01-01 00:00:00Z");
    assert_eq!(r["incident"]["state"], "open");
    assert_eq!(r["detections"][0]["rule"], "forged_token");
    assert_eq!(
        r["regimes"][0]["status"],
        json!({"state": "met", "at": T0 + 3600})
    );
    assert_eq!(r["regimes"][0]["due_at_unix"], T0 + 30 + 86_400);
    assert_eq!(r["per_minute"][1]["minute"], "2026-01-01 00:03:00Z");
    // The compromise_key taken is no longer proposed.
    assert_eq!(r["measures_proposed"].as_array().unwrap().len(), 2);
}

#[test]
fn json_of_an_incident_without_attack_requests_has_null_times() {
    let (case, _) = case("t", "cust-1");
    let r = build(&case, &Impact::default(), &[], &BTreeMap::new(), T0);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["first_malicious_use"], Value::Null);
    assert_eq!(v["last_malicious_use"], Value::Null);
    assert_eq!(v["regimes"], json!([]));
    assert_eq!(v["contacts"], json!({}));
    let md = markdown(&r);
    assert!(md.contains("First malicious use: -. Last: -."), "{md}");
    assert!(md.contains("access logs: none"), "{md}");
    assert!(
        md.contains("None configured (`[contacts]` in tally.toml)."),
        "{md}"
    );
    let page = html(&r);
    assert!(
        page.contains("No attack requests in the access log."),
        "{page}"
    );
    assert!(
        page.contains("<p>None configured (<code>[contacts]</code> in tally.toml).</p>"),
        "{page}"
    );
}

#[test]
fn html_escapes_hostile_values() {
    let page = html(&report(HOSTILE_TITLE, HOSTILE_SUBJECT));
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(
        page.contains("<h1>Incident 7 — Forged\n# tokens | `k1` &#60;b&#62;bold&#60;/b&#62;</h1>"),
        "{page}"
    );
    // Markdown means nothing in the page: the value is shown as it is.
    assert!(page.contains("|x`y`\n## z</td></tr>"), "{page}");
    assert!(!page.contains("<h2>z"), "{page}");
    // One row per detection, and the page ends where the template ends.
    let detections = page
        .split("<h2>Detections</h2>")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(detections.matches("<tr>").count(), 3, "{detections}");
    assert_eq!(detections.matches("<td>").count(), 14, "{detections}");
    assert!(page.ends_with("</body></html>\n"));
    assert!(!page.contains("http://") && !page.contains("https://"));
}

#[test]
fn html_keeps_every_fact_of_the_report() {
    let page = html(&report("Forged tokens signed with k1", "cust-1"));
    for needle in [
        "<title>Incident 7 report</title>",
        "<h1>Incident 7 — Forged tokens signed with k1</h1>",
        "State <strong>open</strong>, severity <strong>critical</strong>.",
        "<h2>Nature of the breach</h2>",
        "<li>tokens signed with key k1 that the ledger cannot tally (the key is in the wrong hands)</li>",
        "First malicious use: 2026-01-01 00:00:01Z. Last: 2026-01-01 00:05:00Z. Awareness: 2026-01-01 00:00:30Z.",
        "<svg",
        "<tr><td>subjects</td><td>1</td><td>1</td></tr>",
        "<tr><td>records (requests)</td><td>3</td><td>5</td></tr>",
        "<tr><td>email</td><td>1</td><td>0</td></tr>",
        "1234 access events examined (access logs: access.db, node-2 | access.db); 6 requests carried forged tokens.",
        "<h2>Likely consequences</h2>",
        "<li>2026-01-01 00:00:50Z — admin:ann: called cust-1</li>",
        "<li>revoke every live token of subject cust-1</li>",
        "<li>block ip 203.0.113.99 at the gate</li>",
        "<li>dpo: dpo@shop.example</li>",
        "<h3>KR Network Act (MSIT/KISA) — MSIT / KISA</h3>",
        "due <strong>2026-01-02 00:00:30Z</strong> (22h 0m). Status: met.",
        "<li>Nature of the personal data breach</li>",
        "<tr><td>1</td><td>forged_token</td><td>critical</td><td>2026-01-01 00:01:00Z</td><td>2026-01-01 00:10:00Z</td><td>4</td><td>forged token signed with k1</td></tr>",
        "<li>2026-01-01 00:00:40Z — tally: declared key k1 compromised (incident 7, forged_token)</li>",
        "<li>2026-01-01 00:00:00Z — tally: incident 7 opened</li>",
        "<tr><td>refused (blocked)</td><td>0</td></tr>",
    ] {
        assert!(
            page.contains(needle),
            "HTML report lacks {needle:?}:\n{page}"
        );
    }
}

#[test]
fn markdown_escapes_hostile_values_and_keeps_its_structure() {
    let md = markdown(&report(HOSTILE_TITLE, HOSTILE_SUBJECT));
    // Newlines in values cannot start a heading, a list item or a row.
    let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headings[0],
        "# Incident 7 — Forged \\# tokens \\| \\`k1\\` &lt;b&gt;bold&lt;/b&gt;"
    );
    assert!(headings.iter().all(|h| !h.contains(" z")), "{headings:?}");
    assert_eq!(headings.len(), 1 + 10 + 5, "{headings:?}");
    assert!(!md.contains("<script"), "{md}");
    assert!(
        md.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\|x\\`y\\` \\#\\# z"),
        "{md}"
    );
    // Every row of a table has as many cells as its header.
    for table in md.split("\n\n").filter(|b| b.starts_with('|')) {
        let cells = |row: &str| {
            let (mut n, mut escaped) = (0, false);
            for c in row.chars() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '|' => n += 1,
                    _ => {}
                }
            }
            n
        };
        let mut rows = table.lines();
        let header = cells(rows.next().unwrap());
        for row in rows {
            assert_eq!(cells(row), header, "row {row:?} of\n{table}");
        }
    }
    let detections = md
        .split("## Detections\n\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    assert_eq!(detections.lines().count(), 4, "{detections}");
}

#[test]
fn markdown_escaper_escapes_markup_and_control_characters() {
    let mut out = String::new();
    Markdown
        .write_escaped_str(&mut out, "a|b\n`c` <d> *e* _f_ [g] #h\r\t")
        .unwrap();
    assert_eq!(
        out,
        "a\\|b \\`c\\` &lt;d&gt; \\*e\\* \\_f\\_ \\[g\\] \\#h  "
    );
}

#[test]
fn chart_escapes_verdicts_and_marks_exposed_requests() {
    let per_minute = vec![Minute {
        minute: Utc(T0),
        by_verdict: BTreeMap::from([("ok".to_string(), 2), ("<x>".to_string(), 1)]),
    }];
    let svg = chart_svg(&per_minute);
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert!(!svg.contains("<x>"), "{svg}");
    assert!(svg.contains("&#60;x&#62;"), "{svg}");
    assert!(
        svg.contains("fill=\"#b91c1c\"><title>2026-01-01 00:00:00Z ok: 2</title>"),
        "{svg}"
    );
    assert!(svg.contains(">ok (exposed)</text>"), "{svg}");
    assert!(svg.contains(">3 / min</text>"), "{svg}");
    assert!(chart_svg(&[]).contains("No attack requests in the access log."));
}

#[test]
fn monitor_mode_and_member_ids_that_do_not_exist_are_said_in_words() {
    let (case, mut impact) = case("Forged tokens signed with k1", "cust-1");
    impact.requests_allowed_monitor = 8;
    impact.unknown_subjects = BTreeMap::from([("m9000001".into(), 3), ("m9000002".into(), 3)]);
    impact.unknown_subject_tokens = 2;
    let r = build(&case, &impact, &[], &BTreeMap::new(), T0);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["affected"]["unknown_subjects"], 2);
    assert_eq!(v["affected"]["unknown_subject_requests"], 6);
    assert_eq!(v["affected"]["records_allowed_monitor"], 8);
    let md = markdown(&r);
    for needle in [
        "| allowed (monitor mode): judged invalid, let through | 8 |",
        "8 attack requests it judged invalid were allowed (monitor mode), not blocked",
        "2 tokens named 2 member ids that do not exist (6 requests): evidence of minting, not affected people.",
        "- 2026-01-01 00:00:40Z — tally: declared key k1 compromised (incident 7, forged\\_token)",
    ] {
        assert!(md.contains(needle), "Markdown lacks {needle:?}:\n{md}");
    }
    assert!(!md.contains("attempted (blocked)"), "{md}");
    assert!(
        !md.contains("{\""),
        "no JSON in the report's sentences:\n{md}"
    );
    let page = html(&r);
    assert!(
        page.contains("were allowed (monitor mode), not blocked"),
        "{page}"
    );
}

#[test]
fn each_rule_has_its_own_nature_of_the_breach() {
    let (mut case, _) = case("Refresh token reused", "cust-1");
    case.detections = vec![detection(
        1,
        Rule::RefreshReuse,
        "refresh token reused",
        vec![],
        vec![],
    )];
    let r = build(&case, &Impact::default(), &[], &BTreeMap::new(), T0);
    assert!(
        r.nature
            .starts_with("A refresh token that had already been spent was presented again"),
        "{}",
        r.nature
    );
    assert!(
        r.nature.ends_with("1 detection(s): refresh_reuse."),
        "{}",
        r.nature
    );
    let texts: BTreeSet<&str> = Rule::ALL
        .iter()
        .map(|r| super::words::rule_nature(*r))
        .collect();
    assert_eq!(texts.len(), Rule::ALL.len());
}

#[test]
fn a_mass_access_estimate_is_followed_by_the_exact_count() {
    let (mut case, mut impact) = case("Scrape", "cust-1");
    case.detections[1].detection.summary =
        "ip 203.0.113.99 touched about 101 distinct accounts in 1m".into();
    impact.subjects_by_actor =
        BTreeMap::from([("ip 203.0.113.99".into(), 330), ("key k1".into(), 77)]);
    let r = build(&case, &impact, &[], &BTreeMap::new(), T0);
    // A stolen key's forged tokens: the exact count of subjects they named.
    assert!(
        r.attack_vector[0].starts_with("tokens signed with key k1 ")
            && r.attack_vector[0].ends_with("naming exactly 77 distinct subjects (customers, and any member ids that do not exist)"),
        "{}",
        r.attack_vector[0]
    );
    assert_eq!(
        r.attack_vector[1],
        "ip 203.0.113.99 touched about 101 distinct accounts in 1m (the detector's estimate, from a sketch over its window); in the whole access log, ip 203.0.113.99 asked for exactly 330 distinct subjects"
    );
}
