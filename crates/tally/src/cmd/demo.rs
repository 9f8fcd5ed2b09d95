//! `tally demo`: the breach replayed, against signature-only verification and
//! against tally; prints the comparison.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tally_demo::{Options, Phase};

use super::print_table;

pub(crate) struct DemoArgs {
    pub(crate) customers: usize,
    pub(crate) seed: u64,
    pub(crate) keep: Option<PathBuf>,
    pub(crate) out: PathBuf,
    pub(crate) format: String,
}

fn fmt_n(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("not detected".into(), |m| {
        if m < 1000.0 {
            format!("{m:.0} ms")
        } else {
            format!("{:.1} s", m / 1000.0)
        }
    })
}

fn refused(p: &Phase) -> u64 {
    p.attack_refused.values().sum()
}

/// `given`: the global arguments written on the command line (`data`,
/// `storage`), which the demo refuses rather than ignores.
pub(crate) fn run(given: &[&str], args: DemoArgs) -> Result<ExitCode> {
    if let Some(flag) = given.first() {
        bail!(
            "tally demo makes throwaway data directories of its own and takes no --{flag}: \
             drop it (--keep DIR keeps the demo's data directories)"
        );
    }
    if args.customers == 0 || args.customers > 1_000_000 {
        bail!("--customers must be between 1 and 1,000,000");
    }
    let (dir, _cleanup) = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create {} (--keep)", d.display()))?;
            if std::fs::read_dir(d)
                .map(|mut r| r.next().is_some())
                .unwrap_or(false)
            {
                bail!(
                    "{} is not empty: --keep needs a new or empty directory",
                    d.display()
                );
            }
            (d.clone(), None)
        }
        None => {
            let d = tempfile::Builder::new()
                .prefix("tally-demo-")
                .tempdir()
                .context("creating a temporary directory for the demo (or pass --keep DIR)")?;
            (d.path().to_path_buf(), Some(d))
        }
    };
    let opts = Options {
        customers: args.customers,
        browsing: 200.min(args.customers / 10).max(1),
        ghosts: (args.customers / 10).max(1),
        seed: args.seed,
        dir,
        out: args.out.clone(),
        concurrency: 32,
    };
    let tty = std::io::stderr().is_terminal() && args.format != "json";
    // The CLI's progress bar, one per step, shown whatever the size.
    let bar: std::sync::Mutex<Option<(&'static str, crate::progress::Progress)>> =
        std::sync::Mutex::new(None);
    let progress = move |what: &'static str, done: u64, total: u64| {
        if !tty {
            return;
        }
        let mut bar = bar.lock().unwrap_or_else(|e| e.into_inner());
        if bar.as_ref().is_none_or(|(label, _)| *label != what) {
            if let Some((_, mut old)) = bar.take() {
                old.finish();
            }
            *bar = Some((what, crate::progress::Progress::always(what)));
        }
        if let Some((_, b)) = bar.as_mut() {
            b.update(done, total);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let started = std::time::Instant::now();
    if tty {
        eprintln!(
            "(a) the gate in monitor mode: the shop checks signatures only, as the breached company did"
        );
    }
    let (a, b) = rt.block_on(async {
        let a = tally_demo::phase(&opts, tally_server::config::GateMode::Monitor, &progress)
            .await
            .map_err(anyhow::Error::msg)
            .context("demo phase (a), signature-only verification, failed")?;
        if tty {
            eprintln!("\n(b) tally enforcing");
        }
        let b = tally_demo::phase(&opts, tally_server::config::GateMode::Enforce, &progress)
            .await
            .map_err(anyhow::Error::msg)
            .context("demo phase (b), tally enforcing, failed")?;
        Ok::<_, anyhow::Error>((a, b))
    })?;
    if tty {
        eprintln!();
    }
    let total = started.elapsed().as_secs_f64();
    if args.format == "json" {
        let doc = json!({
            "customers": args.customers, "seed": args.seed, "seconds": total,
            "signature_only": a, "tally": b, "varies_between_runs": VARIES,
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 3]> = vec![
        ["".into(), "(a) signature only".into(), "(b) tally".into()],
        [
            "customer records exposed".into(),
            fmt_n(a.records_exposed),
            fmt_n(b.records_exposed),
        ],
        [
            "customers exposed".into(),
            fmt_n(a.customers_exposed),
            fmt_n(b.customers_exposed),
        ],
        [
            "forged tokens minted (ghost members)".into(),
            format!("{} ({})", fmt_n(a.forged_tokens), fmt_n(a.ghost_tokens)),
            format!("{} ({})", fmt_n(b.forged_tokens), fmt_n(b.ghost_tokens)),
        ],
        [
            "attack requests let through / refused".into(),
            format!("{} / {}", fmt_n(a.attack_let_through), fmt_n(refused(&a))),
            format!("{} / {}", fmt_n(b.attack_let_through), fmt_n(refused(&b))),
        ],
        [
            "report: requests with forged tokens".into(),
            fmt_n(a.report_forged_requests),
            fmt_n(b.report_forged_requests),
        ],
        [
            "  requests for ghost members refused".into(),
            fmt_n(a.ghost_requests_refused),
            fmt_n(b.ghost_requests_refused),
        ],
        [
            "first forged request -> detection".into(),
            ms(a.detection_ms),
            ms(b.detection_ms),
        ],
        [
            "first forged request -> incident".into(),
            ms(a.incident_ms),
            ms(b.incident_ms),
        ],
        [
            "ordinary requests allowed".into(),
            format!("{}/{}", fmt_n(a.legit_allowed), fmt_n(a.legit_requests)),
            format!("{}/{}", fmt_n(b.legit_allowed), fmt_n(b.legit_requests)),
        ],
    ];
    print_table(&rows);
    if !b.attack_refused.is_empty() {
        let parts: Vec<String> = b
            .attack_refused
            .iter()
            .map(|(v, n)| format!("{v} {}", fmt_n(*n)))
            .collect();
        outln!("\n(b) refusals by verdict: {}", parts.join(", "));
    }
    outln!(
        "\nThe same seed gives the same figures, in this table and in the reports, except: {VARIES}."
    );
    if !b.deadlines.is_empty() {
        outln!(
            "\nreporting deadlines of incident {} (b):",
            b.incident.unwrap_or(0)
        );
        for (name, due) in &b.deadlines {
            outln!("  {name:<45} due {due}");
        }
    }
    for (label, p) in [("(a)", &a), ("(b)", &b)] {
        if let (Some(r), Some(c)) = (&p.report, &p.affected) {
            outln!(
                "{label} report {}  affected customers {}",
                r.display(),
                c.display()
            );
        }
    }
    outln!(
        "\n{} customers, seed {}, {:.1} s; data in {}",
        fmt_n(args.customers as u64),
        args.seed,
        total,
        if args.keep.is_some() {
            opts.dir.display().to_string()
        } else {
            "a temporary directory (removed; --keep DIR keeps it)".into()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// What differs between two runs of one seed, and why.
const VARIES: &str = "the times to detection and to the incident (measured), and in (b) how the \
refusals split between not_issued and blocked_actor (it depends on how many of the insider's \
requests were in flight when the automatic block took effect; every one of them is counted as \
forged either way, since the gate examines the tokens of blocked requests for the record)";
