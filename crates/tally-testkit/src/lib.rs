//! The one skip rule of tally's test suites.
//!
//! Some tests need a tool or a service this machine may lack (PostgreSQL,
//! Redis, nginx, Caddy, SoftHSM2, Go, PyJWT, Chromium, promtool). Such a test
//! calls [`skip`] when what it needs is missing:
//!
//! * under `CI=true`, the one switch, a skip is a failure naming what is
//!   missing: CI installs everything, so nothing may silently not run;
//! * elsewhere the test prints `skipping: …`, returns, and [`skip`] adds a
//!   line to `target/tmp/tally-skipped.txt`. `tools/test` (the suite's
//!   command) empties that file first and ends the run with one line that
//!   counts the skipped tests and names why.
//!
//! A skipped test is never reported as a passed one by `tools/test`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io::Write;
use std::path::PathBuf;

/// Whether skips are failures here (`CI=true`).
pub fn strict() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Records that the calling test cannot run because `why` (what is missing
/// and how to get it); panics instead under `CI=true`. The caller returns
/// after it.
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    assert!(!strict(), "CI=true, and {test} would be skipped: {why}");
    eprintln!("skipping {test}: {why}");
    let Some(file) = skipped_file() else {
        return;
    };
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|s| {
                s.rsplit_once('-')
                    .map_or(s.clone(), |(name, _)| name.to_string())
            })
            .unwrap_or_default();
        let _ = writeln!(f, "{binary} {test}: {why}");
    }
}

/// `target/tmp/tally-skipped.txt` of the build the running test belongs to:
/// the test binary lives in `target/<profile>/deps/`.
fn skipped_file() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    Some(target.join("tmp").join("tally-skipped.txt"))
}
