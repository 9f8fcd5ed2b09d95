//! `tally incident list` and `tally incident show`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;
use tally_incident::report::{clocks_json, incident_json};
use tally_incident::timefmt;

use super::store::Opened;
use crate::cmd::coded;
use crate::cmd::print_table;

/// `tally incident list`.
pub(super) fn list(o: &Opened, format: &str) -> Result<ExitCode> {
    let list = o
        .store
        .incidents()
        .map_err(coded)
        .context("cannot list the incidents")?;
    let rows: Vec<Value> = list
        .iter()
        .map(|i| incident_json(&o.store, i, &o.c.regimes, o.now, false))
        .collect();
    if format == "json" {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![[
        "ID".to_string(),
        "STATE".into(),
        "SEVERITY".into(),
        "AWARE".into(),
        "NEXT DEADLINE".into(),
        "TITLE".into(),
    ]];
    for r in &rows {
        let next = &r["next_deadline"];
        table.push([
            r["id"].to_string(),
            r["state"].as_str().unwrap_or("").into(),
            r["severity"].as_str().unwrap_or("").into(),
            timefmt::utc(r["aware_at"].as_i64().unwrap_or(0)),
            if next.is_null() {
                "-".into()
            } else {
                format!(
                    "{} in {}",
                    next["regime"].as_str().unwrap_or(""),
                    next["remaining"].as_str().unwrap_or("")
                )
            },
            r["title"].as_str().unwrap_or("").into(),
        ]);
    }
    print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// `tally incident show ID`.
pub(super) fn show(o: &Opened, id: i64, format: &str) -> Result<ExitCode> {
    let read = || format!("cannot read incident {id}");
    let inc = o
        .store
        .incident(id)
        .map_err(coded)
        .with_context(read)?
        .with_context(|| format!("no incident {id}"))?;
    let dets = o.store.detections(id).map_err(coded).with_context(read)?;
    let timeline = o.store.timeline(id).map_err(coded).with_context(read)?;
    let clocks = clocks_json(&o.store, &inc, &o.c.regimes, o.now);
    if format == "json" {
        let doc = incident_json(&o.store, &inc, &o.c.regimes, o.now, true);
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "incident {}  {}  severity {}",
        inc.id,
        inc.state.as_str(),
        inc.severity.as_str()
    );
    outln!("title      {}", inc.title);
    outln!("aware at   {}", timefmt::utc(inc.aware_at));
    outln!("opened at  {}", timefmt::utc(inc.opened_at));
    outln!("\nreporting deadlines");
    let mut t = vec![[
        "REGIME".to_string(),
        "DUE".into(),
        "STATUS".into(),
        "REMAINING".into(),
    ]];
    for k in &clocks {
        t.push([
            k["name"].as_str().unwrap_or("").into(),
            timefmt::utc(k["due_at"].as_i64().unwrap_or(0)),
            k["status"]["state"].as_str().unwrap_or("").into(),
            k["remaining"].as_str().unwrap_or("").into(),
        ]);
    }
    print_table(&t);
    outln!("\ndetections");
    let mut t = vec![[
        "ID".to_string(),
        "RULE".into(),
        "SEVERITY".into(),
        "FIRST SEEN".into(),
        "COUNT".into(),
        "SUMMARY".into(),
    ]];
    for d in &dets {
        t.push([
            d.id.to_string(),
            d.detection.rule.code().into(),
            d.detection.severity.as_str().into(),
            timefmt::utc(d.detection.first_seen),
            d.detection.count.to_string(),
            d.detection.summary.clone(),
        ]);
    }
    print_table(&t);
    outln!("\ntimeline");
    for t in &timeline {
        outln!(
            "  {}  {:<10} {:<20} {}",
            timefmt::utc(t.at),
            t.kind,
            t.actor,
            t.body
        );
    }
    Ok(ExitCode::SUCCESS)
}
