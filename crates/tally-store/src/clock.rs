//! The one clock: every part of tally that needs the time asks a [`Clock`].
//!
//! A server holds one and reads it once per request, so a decision, its log
//! line and its detector observation carry the same instant. Tests make a
//! [`Clock::fixed`] one and move it by hand ([`Clock::set`],
//! [`Clock::advance`]) to reach expiry, retention or a legal deadline without
//! waiting. The system clock before 1970 reads as 0 rather than panicking.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The time source: the system clock, or a fixed instant tests move.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds since the epoch, when fixed; `None` reads the system.
    fixed_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { fixed_ms: None }
    }

    /// A clock standing at `unix_secs` until moved. Clones share it.
    pub fn fixed(unix_secs: i64) -> Clock {
        Clock {
            fixed_ms: Some(Arc::new(AtomicI64::new(unix_secs.saturating_mul(1000)))),
        }
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        match &self.fixed_ms {
            Some(ms) => ms.load(Ordering::Relaxed),
            None => system_ms(),
        }
    }

    /// Moves a fixed clock to `unix_secs`; a system clock is left alone
    /// (returns false).
    pub fn set(&self, unix_secs: i64) -> bool {
        match &self.fixed_ms {
            Some(ms) => {
                ms.store(unix_secs.saturating_mul(1000), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Moves a fixed clock forward by `secs`; a system clock is left alone
    /// (returns false).
    pub fn advance(&self, secs: i64) -> bool {
        match &self.fixed_ms {
            Some(ms) => {
                ms.fetch_add(secs.saturating_mul(1000), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix seconds on the system clock, for code that has no [`Clock`] at hand
/// (command-line tools, background threads started before a server exists).
pub fn now_unix() -> i64 {
    system_ms().div_euclid(1000)
}

/// Unix milliseconds on the system clock.
pub fn now_ms() -> i64 {
    system_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told_and_clones_share_it() {
        let c = Clock::fixed(1_700_000_000);
        let d = c.clone();
        assert_eq!(c.now(), 1_700_000_000);
        assert!(d.advance(90));
        assert_eq!(c.now(), 1_700_000_090);
        assert_eq!(c.now_ms(), 1_700_000_090_000);
        assert!(c.set(5));
        assert_eq!(d.now(), 5);
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let c = Clock::system();
        assert!(!c.set(5));
        assert!(!c.advance(5));
        assert!(c.now() > 1_600_000_000);
    }
}
