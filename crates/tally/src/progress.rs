//! A progress bar on standard error for long work (a bar on a terminal, a line
//! every 10% otherwise; nothing for work under 100,000 items).

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    label: &'static str,
    min_total: u64,
    started: Instant,
    tty: bool,
    shown: bool,
    last_decile: u64,
}

const MIN_TOTAL: u64 = 100_000;

impl Progress {
    pub fn new(label: &'static str) -> Progress {
        Progress {
            label,
            min_total: MIN_TOTAL,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            shown: false,
            last_decile: 0,
        }
    }

    /// A bar shown however small the work (for work that is slow per item).
    pub fn always(label: &'static str) -> Progress {
        Progress {
            min_total: 0,
            ..Progress::new(label)
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if total < self.min_total {
            return;
        }
        let pct = (done.min(total) * 100) / total.max(1);
        let mut err = std::io::stderr();
        if self.tty {
            let width = 30u64;
            let filled = (pct * width / 100) as usize;
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            let _ = write!(
                err,
                "\r{} [{}{}] {:>3}% {}/{} ({:.0}/s)",
                self.label,
                "#".repeat(filled),
                " ".repeat(width as usize - filled),
                pct,
                done,
                total,
                rate
            );
            self.shown = true;
        } else if pct / 10 > self.last_decile {
            self.last_decile = pct / 10;
            let _ = writeln!(err, "{}: {}% ({done}/{total})", self.label, pct);
        }
    }

    pub fn finish(&mut self) {
        if self.shown {
            let _ = writeln!(std::io::stderr());
            self.shown = false;
        }
    }
}
