//! The report as Markdown, made from the report document.
//!
//! Invariant: every value taken from the document goes through one escape
//! ([`s`]), so that a hostile value (a forged subject with newlines, pipes
//! or markup) cannot fake a heading, a table cell or a link.

use serde_json::Value;

/// A value for the Markdown report: control characters (a forged `sub` may
/// carry newlines to fake a heading) become spaces, and `<`, `>`, `|`, `*`,
/// `_`, `` ` ``, `[`, `]`, `#` are escaped.
pub(super) fn s(v: &Value) -> String {
    let raw = match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' | '*' | '_' | '`' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The report as Markdown.
pub fn markdown(r: &Value) -> String {
    let mut o = String::new();
    let inc = &r["incident"];
    o.push_str(&format!(
        "# Incident {} — {}\n\n",
        s(&inc["id"]),
        s(&inc["title"])
    ));
    o.push_str(&format!(
        "State **{}**, severity **{}**. Opened {}; aware since {}. Report generated {}.\n\n",
        s(&inc["state"]),
        s(&inc["severity"]),
        s(&inc["opened_at"]),
        s(&inc["aware_at"]),
        s(&r["generated_at"])
    ));
    o.push_str("## Nature of the breach\n\n");
    o.push_str(&format!("{}\n\n", s(&r["nature"])));
    o.push_str("## Attack vector\n\n");
    for v in r["attack_vector"].as_array().into_iter().flatten() {
        o.push_str(&format!("- {}\n", s(v)));
    }
    o.push_str(&format!(
        "\nFirst malicious use: {}. Last: {}. Awareness: {}.\n\n",
        s(&r["first_malicious_use"]),
        s(&r["last_malicious_use"]),
        s(&r["awareness"])
    ));
    let a = &r["affected"];
    o.push_str("## Affected subjects and records\n\n");
    o.push_str("| | exposed (allowed) | attempted (blocked) |\n| --- | ---: | ---: |\n");
    o.push_str(&format!(
        "| subjects | {} | {} |\n",
        s(&a["subjects_exposed"]),
        s(&a["subjects_attempted_only"])
    ));
    o.push_str(&format!(
        "| records (requests) | {} | {} |\n\n",
        s(&a["records_exposed"]),
        s(&a["records_attempted"])
    ));
    o.push_str(
        "| data category | subjects exposed | subjects attempted only |\n| --- | ---: | ---: |\n",
    );
    for c in a["categories"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "| {} | {} | {} |\n",
            s(&c["category"]),
            s(&c["subjects_exposed"]),
            s(&c["subjects_attempted_only"])
        ));
    }
    let logs: Vec<String> = a["access_logs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    o.push_str(&format!(
        "\n{} access events examined (access logs: {}); {} requests carried forged tokens.\n\n",
        s(&a["events_scanned"]),
        if logs.is_empty() {
            "none".to_string()
        } else {
            logs.join(", ")
        },
        s(&a["forged_requests"])
    ));
    o.push_str("## Likely consequences\n\n");
    for c in r["likely_consequences"].as_array().into_iter().flatten() {
        o.push_str(&format!("- {}\n", s(c)));
    }
    o.push_str("\n## Measures taken\n\n");
    let taken = r["measures_taken"].as_array().cloned().unwrap_or_default();
    if taken.is_empty() {
        o.push_str("None yet.\n");
    }
    for m in &taken {
        o.push_str(&format!(
            "- {} — {} ({}): {}\n",
            s(&m["at"]),
            s(&m["kind"]),
            s(&m["by"]),
            s(&m["what"])
        ));
    }
    o.push_str("\n## Measures proposed\n\n");
    let proposed = r["measures_proposed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if proposed.is_empty() {
        o.push_str("None outstanding.\n");
    }
    for m in &proposed {
        o.push_str(&format!("- {}\n", s(m)));
    }
    o.push_str("\n## Contacts\n\n");
    let contacts = r["contacts"].as_object().cloned().unwrap_or_default();
    if contacts.is_empty() {
        o.push_str("None configured (`[contacts]` in tally.toml).\n");
    }
    for (k, v) in &contacts {
        o.push_str(&format!("- {k}: {}\n", s(v)));
    }
    o.push_str("\n## Reporting obligations\n\n");
    for g in r["regimes"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "### {} — {}\n\nClock started {}; due **{}** ({}). Status: {}.\n\nThe report must contain:\n\n",
            s(&g["name"]), s(&g["authority"]), s(&g["clock_starts_at"]), s(&g["due_at"]), s(&g["remaining"]), s(&g["status"]["state"])
        ));
        for f in g["required_fields"].as_array().into_iter().flatten() {
            o.push_str(&format!("- {}\n", s(f)));
        }
        o.push('\n');
    }
    o.push_str("## Detections\n\n| id | rule | severity | first seen | last seen | count | summary |\n| --- | --- | --- | --- | --- | ---: | --- |\n");
    for d in r["detections"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s(&d["id"]),
            s(&d["rule"]),
            s(&d["severity"]),
            s(&d["first_seen"]),
            s(&d["last_seen"]),
            s(&d["count"]),
            s(&d["summary"])
        ));
    }
    o.push_str("\n## Timeline\n\n");
    for t in r["timeline"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "- {} — {} by {}: {}\n",
            s(&t["at"]),
            s(&t["kind"]),
            s(&t["by"]),
            s(&t["what"])
        ));
    }
    o
}
