//! Tests of the legal clocks: the built-in regimes, business days,
//! reminders, statuses, the state machine, the wire format of regimes and
//! clocks, and overrides.

use super::deadline::{DAY, HOUR};
use super::*;
use ReminderLabel::{HalfTime, OneHour, Overdue, SixHours};
use serde_json::json;

// ---- test helpers ------------------------------------------------------

/// Unix seconds of a UTC civil date-time (Howard Hinnant's days_from_civil).
fn utc(y: i64, m: i64, d: i64, hh: i64, mm: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * DAY + hh * HOUR + mm * 60
}

fn regime(id: &str) -> Regime {
    default_regimes()
        .into_iter()
        .find(|r| r.id == id)
        .expect("default regime")
}

fn facts(aware_at: i64, affected_subjects: u64, outside_access: bool) -> IncidentFacts {
    IncidentFacts {
        aware_at,
        affected_subjects,
        outside_access,
        materiality_at: None,
        confirmed_facts_at: vec![],
    }
}

fn ids(cs: &[Clock]) -> Vec<&str> {
    cs.iter().map(|c| c.regime_id.as_str()).collect()
}

fn clock(starts_at: i64, due_at: i64) -> Clock {
    Clock {
        regime_id: "t".into(),
        name: "t".into(),
        starts_at,
        due_at,
        kind: ClockKind::Initial,
        reminders: reminders(starts_at, due_at),
    }
}

/// Weekday, Monday = 0, computed independently of `add_business_days`.
fn weekday(t: i64) -> i64 {
    (t.div_euclid(DAY) + 3).rem_euclid(7)
}

/// Obviously-correct reference: step one calendar day at a time.
fn add_business_days_slow(t: i64, n: u32) -> i64 {
    let mut t = t;
    let mut left = n;
    while left > 0 {
        t += DAY;
        if weekday(t) < 5 {
            left -= 1;
        }
    }
    t
}

const THU: (i64, i64, i64) = (2024, 3, 7);

#[test]
fn test_helper_dates() {
    assert_eq!(utc(1970, 1, 1, 0, 0), 0);
    assert_eq!(utc(2024, 1, 1, 0, 0), 1_704_067_200);
    assert_eq!(utc(2024, 3, 7, 10, 0), 1_709_805_600);
    assert_eq!(utc(2000, 2, 29, 12, 0), 951_825_600);
    assert_eq!(weekday(utc(2024, 1, 1, 0, 0)), 0); // Monday
    assert_eq!(weekday(utc(THU.0, THU.1, THU.2, 0, 0)), 3); // Thursday
    assert_eq!(weekday(0), 3); // 1970-01-01 was a Thursday
}

// ---- default regimes ---------------------------------------------------

#[test]
fn default_regimes_are_valid_and_as_specified() {
    let rs = default_regimes();
    assert_eq!(
        rs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["kr_network_act", "kr_pipa", "gdpr_art33", "sec_8k_105"]
    );
    for r in &rs {
        r.validate().unwrap();
        assert!(!r.required_fields.is_empty(), "{}", r.id);
        assert!(!r.authority.is_empty(), "{}", r.id);
    }
    let kr = &rs[0];
    assert_eq!(kr.deadline, Deadline::Hours(24));
    assert_eq!(kr.applies, Applicability::Always);
    assert_eq!(kr.supplementary_hours, Some(24));
    assert!(kr.enabled);
    let pipa = &rs[1];
    assert_eq!(pipa.deadline, Deadline::Hours(72));
    assert_eq!(
        pipa.applies,
        Applicability::MinSubjectsOrOutsideAccess(1000)
    );
    assert_eq!(pipa.supplementary_hours, None);
    assert!(pipa.enabled);
    let gdpr = &rs[2];
    assert_eq!(gdpr.deadline, Deadline::Hours(72));
    assert_eq!(gdpr.applies, Applicability::Always);
    assert!(gdpr.enabled);
    let sec = &rs[3];
    assert_eq!(sec.deadline, Deadline::BusinessDays(4));
    assert_eq!(sec.applies, Applicability::Materiality);
    assert!(!sec.enabled);
}

#[test]
fn kr_network_act_is_24_hours_from_awareness() {
    let aware = utc(2024, 3, 7, 10, 0);
    let cs = clocks(&[regime("kr_network_act")], &facts(aware, 1, false));
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].starts_at, aware);
    assert_eq!(cs[0].due_at, utc(2024, 3, 8, 10, 0));
    assert_eq!(cs[0].kind, ClockKind::Initial);
    assert_eq!(cs[0].name, "KR Network Act (MSIT/KISA)");
    // Hours are exact durations, weekends included.
    let fri = utc(2024, 3, 8, 22, 30);
    let cs = clocks(&[regime("kr_network_act")], &facts(fri, 0, false));
    assert_eq!(cs[0].due_at, utc(2024, 3, 9, 22, 30));
}

#[test]
fn kr_network_act_supplementary_clocks() {
    let aware = utc(2024, 3, 7, 10, 0);
    let mut f = facts(aware, 0, false);
    // Unsorted, with a duplicate and facts at/before awareness.
    f.confirmed_facts_at = vec![
        utc(2024, 3, 9, 8, 0),
        utc(2024, 3, 7, 15, 0),
        utc(2024, 3, 9, 8, 0),
        aware,
        aware - HOUR,
    ];
    let cs = clocks(&[regime("kr_network_act")], &f);
    let got: Vec<_> = cs.iter().map(|c| (c.kind, c.starts_at, c.due_at)).collect();
    assert_eq!(
        got,
        [
            (ClockKind::Initial, aware, utc(2024, 3, 8, 10, 0)),
            (
                ClockKind::Supplementary {
                    fact_at: utc(2024, 3, 7, 15, 0)
                },
                utc(2024, 3, 7, 15, 0),
                utc(2024, 3, 8, 15, 0)
            ),
            (
                ClockKind::Supplementary {
                    fact_at: utc(2024, 3, 9, 8, 0)
                },
                utc(2024, 3, 9, 8, 0),
                utc(2024, 3, 10, 8, 0)
            ),
        ]
    );
    assert_eq!(
        cs[1].name,
        "KR Network Act (MSIT/KISA): supplementary report"
    );
    assert!(cs.iter().all(|c| c.regime_id == "kr_network_act"));
    // Regimes without supplementary_hours ignore confirmed facts.
    let cs = clocks(&[regime("gdpr_art33")], &f);
    assert_eq!(cs.len(), 1);
}

#[test]
fn gdpr_is_72_hours_from_awareness_always() {
    let aware = utc(2024, 3, 7, 10, 0);
    let cs = clocks(&[regime("gdpr_art33")], &facts(aware, 0, false));
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].starts_at, aware);
    assert_eq!(cs[0].due_at, utc(2024, 3, 10, 10, 0)); // Sunday: hours ignore weekends
}

#[test]
fn pipa_threshold_and_outside_access() {
    let aware = utc(2024, 3, 7, 10, 0);
    let pipa = [regime("kr_pipa")];
    let table: &[(u64, bool, bool)] = &[
        (0, false, false),
        (999, false, false),
        (1000, false, true),
        (1001, false, true),
        (u64::MAX, false, true),
        (0, true, true),
        (1, true, true),
        (999, true, true),
        (1000, true, true),
    ];
    for &(n, outside, applies) in table {
        let cs = clocks(&pipa, &facts(aware, n, outside));
        assert_eq!(
            cs.len(),
            usize::from(applies),
            "{n} subjects, outside={outside}"
        );
        if applies {
            assert_eq!(cs[0].starts_at, aware);
            assert_eq!(cs[0].due_at, aware + 72 * HOUR);
        }
    }
}

#[test]
fn min_subjects_applicability() {
    let a = Applicability::MinSubjects(10);
    assert!(!a.matches(&facts(0, 9, true)));
    assert!(a.matches(&facts(0, 10, false)));
    assert!(Applicability::Always.matches(&facts(0, 0, false)));
    assert!(!Applicability::Materiality.matches(&facts(0, u64::MAX, true)));
}

#[test]
fn sec_is_disabled_by_default_and_needs_materiality() {
    let aware = utc(2024, 3, 4, 9, 0); // Monday
    let mut f = facts(aware, 1_000_000, true);
    f.materiality_at = Some(utc(2024, 3, 7, 16, 0)); // Thursday
    // Disabled by default: nothing, even when material.
    assert!(clocks(&[regime("sec_8k_105")], &f).is_empty());

    let mut sec = regime("sec_8k_105");
    sec.enabled = true;
    let cs = clocks(std::slice::from_ref(&sec), &f);
    assert_eq!(cs.len(), 1);
    // Starts at the materiality determination, not at awareness.
    assert_eq!(cs[0].starts_at, utc(2024, 3, 7, 16, 0));
    // Thursday + 4 business days = next Wednesday, same time of day.
    assert_eq!(cs[0].due_at, utc(2024, 3, 13, 16, 0));

    // Enabled but no materiality determination yet: no clock.
    f.materiality_at = None;
    assert!(clocks(&[sec], &f).is_empty());
}

#[test]
fn all_defaults_together_sorted_by_due_time() {
    let aware = utc(2024, 3, 7, 10, 0);
    let mut rs = default_regimes();
    rs[3].enabled = true;
    let mut f = facts(aware, 5000, false);
    f.materiality_at = Some(utc(2024, 3, 7, 12, 0));
    f.confirmed_facts_at = vec![utc(2024, 3, 9, 10, 0)];
    let cs = clocks(&rs, &f);
    // kr 24h (Fri 10:00), kr supp (Sun 10:00), pipa & gdpr 72h (Sun 10:00,
    // ties keep regime order), sec (Wed 12:00).
    assert_eq!(
        ids(&cs),
        [
            "kr_network_act",
            "kr_network_act",
            "kr_pipa",
            "gdpr_art33",
            "sec_8k_105"
        ]
    );
    let due: Vec<i64> = cs.iter().map(|c| c.due_at).collect();
    assert!(due.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(cs[4].due_at, utc(2024, 3, 13, 12, 0));
    for c in &cs {
        assert_eq!(c.reminders, reminders(c.starts_at, c.due_at));
    }
    // Disabled regimes vanish; below threshold PIPA vanishes.
    let cs = clocks(&default_regimes(), &facts(aware, 10, false));
    assert_eq!(ids(&cs), ["kr_network_act", "gdpr_art33"]);
    assert!(clocks(&[], &f).is_empty());
}

#[test]
fn supplementary_facts_are_relative_to_the_clock_start() {
    // A regime with supplementary reports whose clock starts at materiality.
    let r = Regime {
        id: "x".into(),
        name: "X".into(),
        authority: "A".into(),
        deadline: Deadline::Hours(10),
        applies: Applicability::Materiality,
        supplementary_hours: Some(2),
        enabled: true,
        required_fields: vec![],
    };
    let mut f = facts(100, 0, false);
    f.materiality_at = Some(1000);
    f.confirmed_facts_at = vec![500, 1000, 1001];
    let cs = clocks(&[r], &f);
    let got: Vec<_> = cs.iter().map(|c| (c.starts_at, c.due_at)).collect();
    assert_eq!(got, [(1001, 1001 + 2 * HOUR), (1000, 1000 + 10 * HOUR)]);
}

// ---- business days ------------------------------------------------------

#[test]
fn business_days_table() {
    // (start, n, expected)
    let table = [
        // Thursday + 4 = next Wednesday, time of day kept.
        (utc(2024, 3, 7, 10, 0), 4, utc(2024, 3, 13, 10, 0)),
        // Friday evening + 4 = next Thursday evening.
        (utc(2024, 3, 8, 20, 0), 4, utc(2024, 3, 14, 20, 0)),
        // Friday + 1 = Monday.
        (utc(2024, 3, 8, 23, 59), 1, utc(2024, 3, 11, 23, 59)),
        // Saturday + 4 = Thursday; Saturday + 1 = Monday.
        (utc(2024, 3, 9, 10, 0), 4, utc(2024, 3, 14, 10, 0)),
        (utc(2024, 3, 9, 10, 0), 1, utc(2024, 3, 11, 10, 0)),
        // Sunday late + 1 = Monday, same time.
        (utc(2024, 3, 10, 23, 0), 1, utc(2024, 3, 11, 23, 0)),
        (utc(2024, 3, 10, 0, 0), 5, utc(2024, 3, 15, 0, 0)),
        // Monday + 4 = Friday; + 5 = next Monday; + 10 = two weeks.
        (utc(2024, 3, 4, 9, 0), 4, utc(2024, 3, 8, 9, 0)),
        (utc(2024, 3, 4, 9, 0), 5, utc(2024, 3, 11, 9, 0)),
        (utc(2024, 3, 4, 9, 0), 10, utc(2024, 3, 18, 9, 0)),
        // Wednesday + 4 across a month and a leap day.
        (utc(2024, 2, 28, 12, 0), 4, utc(2024, 3, 5, 12, 0)),
        // Across a year end (holidays are not modelled).
        (utc(2024, 12, 31, 8, 0), 4, utc(2025, 1, 6, 8, 0)),
        // Zero: unchanged, even on a weekend.
        (utc(2024, 3, 9, 10, 0), 0, utc(2024, 3, 9, 10, 0)),
    ];
    for (start, n, want) in table {
        assert_eq!(add_business_days(start, n), want, "start {start} + {n}");
    }
}

#[test]
fn business_days_match_reference() {
    // Every hour-ish offset over two weeks, every n up to 3 weeks, plus
    // times before 1970.
    let base = utc(2024, 3, 4, 0, 0);
    for start in (0..14 * DAY).step_by(3 * 3600 + 7).map(|o| base + o) {
        for n in 0..16 {
            assert_eq!(
                add_business_days(start, n),
                add_business_days_slow(start, n)
            );
        }
    }
    for start in [
        -1,
        -DAY,
        -DAY - 1,
        utc(1969, 12, 27, 5, 0),
        utc(1900, 1, 6, 0, 0),
    ] {
        for n in 0..12 {
            assert_eq!(
                add_business_days(start, n),
                add_business_days_slow(start, n)
            );
        }
    }
}

#[test]
fn business_days_land_on_weekdays_and_do_not_overflow() {
    let start = utc(2024, 3, 9, 10, 0);
    for n in 1..40 {
        assert!(weekday(add_business_days(start, n)) < 5);
    }
    assert_eq!(add_business_days(i64::MAX - 10, 1_000), i64::MAX);
    // Large n is computed without stepping day by day.
    let far = add_business_days(utc(2024, 3, 4, 0, 0), u32::MAX);
    assert!(far > utc(2024, 3, 4, 0, 0));
}

// ---- reminders ----------------------------------------------------------

fn rem(label: ReminderLabel, at: i64) -> Reminder {
    Reminder { label, at }
}

#[test]
fn reminders_for_24_and_72_hours() {
    let s = utc(2024, 3, 7, 10, 0);
    assert_eq!(
        reminders(s, s + 24 * HOUR),
        [
            rem(HalfTime, s + 12 * HOUR),
            rem(SixHours, s + 18 * HOUR),
            rem(OneHour, s + 23 * HOUR),
            rem(Overdue, s + 24 * HOUR),
        ]
    );
    assert_eq!(
        reminders(s, s + 72 * HOUR),
        [
            rem(HalfTime, s + 36 * HOUR),
            rem(SixHours, s + 66 * HOUR),
            rem(OneHour, s + 71 * HOUR),
            rem(Overdue, s + 72 * HOUR),
        ]
    );
}

#[test]
fn reminders_short_deadlines() {
    let s = 1_000_000;
    // 3 h: six hours before would be before the start: skipped.
    assert_eq!(
        reminders(s, s + 3 * HOUR),
        [
            rem(HalfTime, s + 90 * 60),
            rem(OneHour, s + 2 * HOUR),
            rem(Overdue, s + 3 * HOUR),
        ]
    );
    // 6 h: six hours before is exactly the start: kept.
    assert_eq!(
        reminders(s, s + 6 * HOUR),
        [
            rem(SixHours, s),
            rem(HalfTime, s + 3 * HOUR),
            rem(OneHour, s + 5 * HOUR),
            rem(Overdue, s + 6 * HOUR),
        ]
    );
    // 8 h: six hours before comes before half time; order is by time.
    assert_eq!(
        reminders(s, s + 8 * HOUR),
        [
            rem(SixHours, s + 2 * HOUR),
            rem(HalfTime, s + 4 * HOUR),
            rem(OneHour, s + 7 * HOUR),
            rem(Overdue, s + 8 * HOUR),
        ]
    );
    // 30 min: only half time and overdue.
    assert_eq!(
        reminders(s, s + 1800),
        [rem(HalfTime, s + 900), rem(Overdue, s + 1800)]
    );
    // Zero length: only overdue (half time would duplicate it).
    assert_eq!(reminders(s, s), [rem(Overdue, s)]);
    // Due before start (invalid config): still an overdue reminder.
    assert_eq!(reminders(s, s - 10), [rem(Overdue, s - 10)]);
}

#[test]
fn reminders_dedup_keeps_the_more_urgent() {
    let s = 50_000;
    // 12 h: half time == six hours before.
    assert_eq!(
        reminders(s, s + 12 * HOUR),
        [
            rem(SixHours, s + 6 * HOUR),
            rem(OneHour, s + 11 * HOUR),
            rem(Overdue, s + 12 * HOUR),
        ]
    );
    // 2 h: half time == one hour before.
    assert_eq!(
        reminders(s, s + 2 * HOUR),
        [rem(OneHour, s + HOUR), rem(Overdue, s + 2 * HOUR)]
    );
    // 1 h: one hour before == start (kept), half time after it.
    assert_eq!(
        reminders(s, s + HOUR),
        [
            rem(OneHour, s),
            rem(HalfTime, s + 1800),
            rem(Overdue, s + HOUR)
        ]
    );
}

#[test]
fn reminders_invariants() {
    let s = utc(2024, 3, 7, 10, 0);
    for len in (0..100 * HOUR).step_by(599) {
        let rs = reminders(s, s + len);
        assert_eq!(rs.last(), Some(&rem(Overdue, s + len)));
        assert!(rs.windows(2).all(|w| w[0].at < w[1].at), "{len}: {rs:?}");
        assert!(rs.iter().all(|r| r.at >= s && r.at <= s + len));
        let mut labels: Vec<_> = rs.iter().map(|r| r.label).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), rs.len());
    }
    // Extreme values do not overflow.
    let _ = reminders(i64::MIN, i64::MAX);
    let _ = reminders(i64::MAX, i64::MIN);
}

#[test]
fn due_reminders_window() {
    let s = 0;
    let c = clock(s, s + 24 * HOUR);
    assert!(due_reminders(&c, s, s + 12 * HOUR - 1).is_empty());
    assert_eq!(
        due_reminders(&c, s, s + 12 * HOUR),
        [rem(HalfTime, 12 * HOUR)]
    );
    // `since` is exclusive: the next run does not repeat it.
    assert!(due_reminders(&c, s + 12 * HOUR, s + 18 * HOUR - 1).is_empty());
    // A scheduler that slept through several sends them all, in order.
    assert_eq!(
        due_reminders(&c, s + 12 * HOUR, s + 30 * HOUR),
        [
            rem(SixHours, 18 * HOUR),
            rem(OneHour, 23 * HOUR),
            rem(Overdue, 24 * HOUR)
        ]
    );
    // Runs at arbitrary times send each reminder exactly once.
    let mut sent = Vec::new();
    let mut since = -1;
    for now in (0..30 * HOUR).step_by(1234) {
        sent.extend(due_reminders(&c, since, now));
        since = now;
    }
    sent.extend(due_reminders(&c, since, 30 * HOUR));
    assert_eq!(sent, c.reminders);
    // Empty or inverted window.
    assert!(due_reminders(&c, 30 * HOUR, 30 * HOUR).is_empty());
    assert!(due_reminders(&c, 30 * HOUR, 0).is_empty());
}

// ---- status ---------------------------------------------------------------

#[test]
fn status_around_the_due_time() {
    let due = 100 * HOUR;
    let c = clock(due - 24 * HOUR, due);
    assert_eq!(
        status(&c, c.starts_at, None),
        ClockStatus::Running {
            remaining_secs: 24 * HOUR
        }
    );
    assert_eq!(
        status(&c, due - 1, None),
        ClockStatus::Running { remaining_secs: 1 }
    );
    assert_eq!(status(&c, due, None), ClockStatus::Overdue { by_secs: 0 });
    assert_eq!(
        status(&c, due + 1, None),
        ClockStatus::Overdue { by_secs: 1 }
    );
    assert_eq!(
        status(&c, due + 3900, None),
        ClockStatus::Overdue { by_secs: 3900 }
    );
    // Submitted: `now` no longer matters.
    for now in [0, due - 1, due, due + 10 * HOUR] {
        assert_eq!(
            status(&c, now, Some(due - 5)),
            ClockStatus::Met { at: due - 5 }
        );
        assert_eq!(status(&c, now, Some(due)), ClockStatus::Met { at: due });
        assert_eq!(
            status(&c, now, Some(due + 1)),
            ClockStatus::Late {
                at: due + 1,
                by_secs: 1
            }
        );
    }
    // Submitted before the clock even started (early report) is met.
    assert_eq!(status(&c, due, Some(0)), ClockStatus::Met { at: 0 });
}

// ---- format_duration ----------------------------------------------------

#[test]
fn format_duration_table() {
    let table: &[(i64, &str)] = &[
        (0, "0s"),
        (45, "45s"),
        (60, "1m 0s"),
        (12 * 60 + 5, "12m 5s"),
        (HOUR, "1h 0m"),
        (24 * HOUR - 1, "23h 59m"),
        (24 * HOUR, "1d 0h"),
        (3 * DAY + 4 * HOUR + 59 * 60, "3d 4h"),
        (-1, "-1s"),
        (-(HOUR + 5 * 60), "-1h 5m"),
        (-(HOUR + 5 * 60 + 59), "-1h 5m"),
        (-2 * DAY, "-2d 0h"),
    ];
    for &(secs, want) in table {
        assert_eq!(format_duration(secs), want, "{secs}");
    }
    assert!(format_duration(i64::MIN).starts_with('-'));
    assert!(format_duration(i64::MAX).ends_with('h'));
}

// ---- state machine --------------------------------------------------------

#[test]
fn state_machine_table() {
    use IncidentState::{Closed, Contained, Open, Reported};
    const TABLE: &[(IncidentState, IncidentState, bool)] = &[
        (Open, Open, false),
        (Open, Contained, true),
        (Open, Reported, true),
        (Open, Closed, true),
        (Contained, Open, false),
        (Contained, Contained, false),
        (Contained, Reported, true),
        (Contained, Closed, true),
        (Reported, Open, false),
        (Reported, Contained, false),
        (Reported, Reported, false),
        (Reported, Closed, true),
        (Closed, Open, false),
        (Closed, Contained, false),
        (Closed, Reported, false),
        (Closed, Closed, false),
    ];
    assert_eq!(
        TABLE.len(),
        IncidentState::ALL.len() * IncidentState::ALL.len()
    );
    for &(from, to, allowed) in TABLE {
        assert_eq!(from.can_move_to(to), allowed, "{from} -> {to}");
        match from.move_to(to) {
            Ok(next) => {
                assert!(allowed);
                assert_eq!(next, to);
            }
            Err(e) => {
                assert!(!allowed);
                assert_eq!(e, TransitionError { from, to });
                assert_eq!(
                    e.to_string(),
                    format!("an incident cannot move from {from} to {to}")
                );
            }
        }
    }
    for s in IncidentState::ALL {
        assert_eq!(s.is_terminal(), s == Closed);
        // Closing is allowed from every non-closed state.
        assert_eq!(s.can_move_to(Closed), s != Closed);
    }
}

#[test]
fn state_names_parse_and_serialize() {
    for s in IncidentState::ALL {
        assert_eq!(s.as_str().parse::<IncidentState>(), Ok(s));
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        assert_eq!(
            serde_json::from_value::<IncidentState>(json!(s.as_str())).unwrap(),
            s
        );
    }
    for bad in ["", "Open", "OPEN", " open", "closed ", "resolved"] {
        let err = bad.parse::<IncidentState>().unwrap_err();
        assert_eq!(err.input, bad);
        assert!(serde_json::from_value::<IncidentState>(json!(bad)).is_err());
    }
}

// ---- serde ----------------------------------------------------------------

#[test]
fn regimes_round_trip_through_json() {
    let rs = default_regimes();
    let text = serde_json::to_string(&rs).unwrap();
    let back: Vec<Regime> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rs);
}

#[test]
fn regime_wire_format() {
    let v = serde_json::to_value(regime("kr_network_act")).unwrap();
    assert_eq!(v["deadline"], json!({"hours": 24}));
    assert_eq!(v["applies"], json!("always"));
    assert_eq!(v["supplementary_hours"], json!(24));
    assert_eq!(v["enabled"], json!(true));
    let v = serde_json::to_value(regime("kr_pipa")).unwrap();
    assert_eq!(
        v["applies"],
        json!({"min_subjects_or_outside_access": 1000})
    );
    assert!(v.get("supplementary_hours").is_none());
    let v = serde_json::to_value(regime("sec_8k_105")).unwrap();
    assert_eq!(v["deadline"], json!({"business_days": 4}));
    assert_eq!(v["applies"], json!("materiality"));
    assert_eq!(v["enabled"], json!(false));
    assert_eq!(
        serde_json::to_value(Applicability::MinSubjects(5)).unwrap(),
        json!({"min_subjects": 5})
    );
}

#[test]
fn regime_defaults_and_unknown_fields() {
    let r: Regime = serde_json::from_value(json!({
        "id": "x", "name": "X", "authority": "A",
        "deadline": {"hours": 48}, "applies": {"min_subjects": 1}
    }))
    .unwrap();
    assert!(r.enabled);
    assert_eq!(r.supplementary_hours, None);
    assert!(r.required_fields.is_empty());
    assert!(
        serde_json::from_value::<Regime>(json!({
            "id": "x", "name": "X", "authority": "A",
            "deadline": {"hours": 48}, "applies": "always", "deadlne": 1
        }))
        .is_err()
    );
    assert!(serde_json::from_value::<Deadline>(json!({"days": 2})).is_err());
    assert!(serde_json::from_value::<Deadline>(json!({"business_days": -1})).is_err());
    assert!(serde_json::from_value::<Applicability>(json!("sometimes")).is_err());
}

#[test]
fn clocks_and_statuses_round_trip() {
    let aware = utc(2024, 3, 7, 10, 0);
    let mut f = facts(aware, 2000, true);
    f.confirmed_facts_at = vec![aware + 5 * HOUR];
    f.materiality_at = Some(aware + HOUR);
    let fv = serde_json::to_value(&f).unwrap();
    assert_eq!(serde_json::from_value::<IncidentFacts>(fv).unwrap(), f);
    // Optional facts may be omitted; the counts may not.
    let minimal: IncidentFacts = serde_json::from_value(json!({
        "aware_at": 5, "affected_subjects": 0, "outside_access": false
    }))
    .unwrap();
    assert_eq!(minimal, facts(5, 0, false));
    assert!(
        serde_json::from_value::<IncidentFacts>(json!({"aware_at": 5, "outside_access": false}))
            .is_err()
    );

    let cs = clocks(&default_regimes(), &f);
    let text = serde_json::to_string(&cs).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Clock>>(&text).unwrap(), cs);
    let v = serde_json::to_value(&cs[0]).unwrap();
    assert_eq!(v["kind"], json!("initial"));
    assert_eq!(
        v["reminders"][0],
        json!({"label": "half_time", "at": aware + 12 * HOUR})
    );
    let supp = cs
        .iter()
        .find(|c| matches!(c.kind, ClockKind::Supplementary { .. }))
        .unwrap();
    assert_eq!(
        serde_json::to_value(supp).unwrap()["kind"],
        json!({"supplementary": {"fact_at": aware + 5 * HOUR}})
    );

    for st in [
        ClockStatus::Running { remaining_secs: 5 },
        ClockStatus::Overdue { by_secs: 0 },
        ClockStatus::Met { at: 7 },
        ClockStatus::Late { at: 9, by_secs: 2 },
    ] {
        let v = serde_json::to_value(st).unwrap();
        assert_eq!(serde_json::from_value::<ClockStatus>(v).unwrap(), st);
    }
    assert_eq!(
        serde_json::to_value(ClockStatus::Late { at: 9, by_secs: 2 }).unwrap(),
        json!({"state": "late", "at": 9, "by_secs": 2})
    );
    for l in [HalfTime, SixHours, OneHour, Overdue] {
        assert_eq!(serde_json::to_value(l).unwrap(), json!(l.as_str()));
        assert_eq!(l.to_string(), l.as_str());
    }
}

// ---- overrides ------------------------------------------------------------

fn overrides(v: serde_json::Value) -> Vec<RegimeOverride> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn overrides_adjust_defaults_by_id() {
    let out = merge_regimes(
        default_regimes(),
        &overrides(json!([
            {"id": "sec_8k_105", "enabled": true},
            {"id": "kr_network_act", "supplementary_hours": 0},
            {"id": "gdpr_art33", "deadline": {"hours": 48}, "authority": "CNIL"},
        ])),
    )
    .unwrap();
    assert_eq!(out.len(), 4);
    assert!(out[3].enabled);
    assert_eq!(out[3].deadline, Deadline::BusinessDays(4)); // untouched
    assert_eq!(out[0].supplementary_hours, None);
    assert_eq!(out[0].deadline, Deadline::Hours(24));
    assert_eq!(out[2].deadline, Deadline::Hours(48));
    assert_eq!(out[2].authority, "CNIL");
    assert_eq!(out[2].name, "GDPR Art. 33");
    assert_eq!(out[1], regime("kr_pipa"));
    // No overrides: unchanged.
    assert_eq!(
        merge_regimes(default_regimes(), &[]).unwrap(),
        default_regimes()
    );
}

#[test]
fn overrides_add_new_regimes() {
    let out = merge_regimes(
        default_regimes(),
        &overrides(json!([{
            "id": "uk_gdpr_art33", "name": "UK GDPR Art. 33 (ICO)", "authority": "ICO",
            "deadline": {"hours": 72}, "applies": "always",
            "required_fields": ["Nature of the breach"]
        }])),
    )
    .unwrap();
    assert_eq!(out.len(), 5);
    let r = &out[4];
    assert_eq!(r.id, "uk_gdpr_art33");
    assert!(r.enabled);
    assert_eq!(r.supplementary_hours, None);
    assert_eq!(r.required_fields, ["Nature of the breach"]);
}

#[test]
fn overrides_are_checked() {
    let merge = |v| merge_regimes(default_regimes(), &overrides(v)).unwrap_err();
    assert_eq!(
        merge(json!([{"id": "new", "name": "N", "authority": "A", "applies": "always"}])),
        RegimeError::Missing {
            id: "new".into(),
            field: "deadline"
        }
    );
    assert_eq!(
        merge(json!([{"id": "new"}])),
        RegimeError::Missing {
            id: "new".into(),
            field: "name"
        }
    );
    assert_eq!(
        merge(json!([{"id": "gdpr_art33", "enabled": false}, {"id": "gdpr_art33"}])),
        RegimeError::Duplicate {
            id: "gdpr_art33".into()
        }
    );
    assert_eq!(
        merge(json!([{"id": "gdpr_art33", "deadline": {"hours": 0}}])),
        RegimeError::BadDeadline {
            id: "gdpr_art33".into()
        }
    );
    assert_eq!(
        merge(json!([{"id": "sec_8k_105", "deadline": {"business_days": 0}}])),
        RegimeError::BadDeadline {
            id: "sec_8k_105".into()
        }
    );
    assert_eq!(
        merge(json!([{"id": "kr_network_act", "supplementary_hours": -1}])),
        RegimeError::BadSupplementary {
            id: "kr_network_act".into()
        }
    );
    assert_eq!(
        merge(json!([{"id": "kr_pipa", "name": "  "}])),
        RegimeError::EmptyName {
            id: "kr_pipa".into()
        }
    );
    assert_eq!(
        merge(json!([{"id": "Bad-Id", "name": "N", "authority": "A",
                      "deadline": {"hours": 1}, "applies": "always"}])),
        RegimeError::BadId {
            id: "Bad-Id".into()
        }
    );
    // Typos in an override table are refused by name.
    let err = serde_json::from_value::<Vec<RegimeOverride>>(json!([{"id": "x", "enabeld": true}]))
        .unwrap_err();
    assert!(err.to_string().contains("enabeld"), "{err}");
    // Duplicates in the base are refused too.
    let mut base = default_regimes();
    base.push(regime("gdpr_art33"));
    assert_eq!(
        merge_regimes(base, &[]).unwrap_err(),
        RegimeError::Duplicate {
            id: "gdpr_art33".into()
        }
    );
}
