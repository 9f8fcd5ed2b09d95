//! The affected customers as CSV, for the notification of data subjects.
//!
//! Invariant: every field is quoted, and a value a spreadsheet would take
//! for a formula is defused with a leading `'`.

use super::impact::Impact;
use crate::timefmt::utc;

/// Affected customers as CSV (`subject,categories,first_access,last_access,status,exposed_requests,attempted_requests`).
pub fn affected_csv(impact: &Impact) -> String {
    let mut o = String::from(
        "subject,categories,first_access,last_access,status,exposed_requests,attempted_requests\n",
    );
    // Every field quoted (a `;` must not split a cell in semicolon locales),
    // and a value a spreadsheet would take for a formula defused with `'`.
    let field = |s: &str| {
        let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    };
    for a in impact.subjects.values() {
        o.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            field(&a.subject),
            field(&a.categories.iter().cloned().collect::<Vec<_>>().join(";")),
            utc(a.first_ms.div_euclid(1000)),
            utc(a.last_ms.div_euclid(1000)),
            a.status,
            a.exposed_requests,
            a.attempted_requests
        ));
    }
    o
}
