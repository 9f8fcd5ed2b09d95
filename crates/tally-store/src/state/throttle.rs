//! What the nodes of a fleet share about authentication attempts: login
//! failures and the locks they earn (a lock doubles per failure beyond the
//! free ones and never shortens), and the addresses each subject recently
//! authenticated from. Keys, subjects and addresses are stored as SHA-256
//! digests, never as user names or addresses.

use super::error::StateError;
use super::store::StateStore;
use crate::sql::args;

/// How a throttling key is stored: its SHA-256, in hex.
fn throttle_key(key: &str) -> String {
    tally_core::digest::TokenDigest::of(key.as_bytes()).to_hex()
}

impl StateStore {
    /// Shared login throttling (a fleet): the latest lock among `keys` at
    /// `now`, in seconds from now (0: none). Keys are stored as SHA-256
    /// digests, never as user names or addresses.
    pub fn login_locked_for(&self, keys: &[&str], now: i64) -> Result<i64, StateError> {
        let digests: Vec<String> = keys.iter().map(|k| throttle_key(k)).collect();
        self.db.read(move |tx| {
            let mut longest = 0;
            for d in &digests {
                if let Some(r) = tx.query_opt(
                    "SELECT locked_until FROM login_failures WHERE key = $1",
                    args![d.as_str()],
                )? {
                    longest = longest.max(r.i64(0)? - now);
                }
            }
            Ok(longest.max(0))
        })
    }

    /// Books a failed login for every key at `now` under `policy` (the lock
    /// doubles per failure beyond the free ones, never shortens; a key quiet
    /// for `forget_after_secs` starts again from zero). Returns the longest
    /// lock now in force, in seconds.
    pub fn login_failed(
        &self,
        keys: &[&str],
        now: i64,
        policy: tally_core::throttle::ThrottlePolicy,
    ) -> Result<i64, StateError> {
        let entries: Vec<(&str, tally_core::throttle::ThrottlePolicy)> =
            keys.iter().map(|k| (*k, policy)).collect();
        self.login_failed_each(&entries, now)
    }

    /// [`StateStore::login_failed`] with a policy per key, in one transaction
    /// (a pair, an address and a subject each have their own).
    pub fn login_failed_each(
        &self,
        entries: &[(&str, tally_core::throttle::ThrottlePolicy)],
        now: i64,
    ) -> Result<i64, StateError> {
        let mut digests: Vec<(String, tally_core::throttle::ThrottlePolicy)> = Vec::new();
        for (k, policy) in entries {
            let d = throttle_key(k);
            if !digests.iter().any(|(seen, _)| *seen == d) {
                digests.push((d, *policy));
            }
        }
        self.db.write(move |tx| {
            let mut longest = 0;
            for (d, policy) in &digests {
                let prev = tx.query_opt(
                    "SELECT failures, locked_until, last_failure FROM login_failures WHERE key = $1",
                    args![d.as_str()],
                )?;
                let (failures, locked_until) = match prev {
                    Some(r) => {
                        let (f, until, last) = (r.i64(0)?, r.i64(1)?, r.i64(2)?);
                        let forgotten = policy.forget_after_secs == 0
                            || (now - last >= policy.forget_after_secs as i64 && until <= now);
                        if forgotten { (1, 0) } else { (f + 1, until) }
                    }
                    None => (1, 0),
                };
                let delay = policy.delay_after(u32::try_from(failures).unwrap_or(u32::MAX));
                // A free failure locks nothing; a lock never shortens.
                let until = if delay == 0 {
                    locked_until
                } else {
                    locked_until.max(now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)))
                };
                tx.execute(
                    "INSERT INTO login_failures (key, failures, locked_until, last_failure)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
                       locked_until = excluded.locked_until, last_failure = excluded.last_failure",
                    args![d.as_str(), failures, until, now],
                )?;
                longest = longest.max(until - now);
            }
            Ok(longest.max(0))
        })
    }

    /// A successful login: forgets `key` (the user's key only, never an
    /// address another user may share).
    pub fn login_succeeded(&self, key: &str) -> Result<(), StateError> {
        let d = throttle_key(key);
        self.db.write(move |tx| {
            tx.execute(
                "DELETE FROM login_failures WHERE key = $1",
                args![d.as_str()],
            )?;
            Ok(())
        })
    }

    /// Forgets login failures older than `before` that lock nothing.
    pub fn forget_login_failures(&self, before: i64, now: i64) -> Result<u64, StateError> {
        self.db.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM login_failures WHERE last_failure < $1 AND locked_until <= $2",
                args![before, now],
            )?)
        })
    }

    /// Shared known addresses (a fleet): `subject` (a user's or client's
    /// throttling key) completed an authentication from `address` at `now`.
    /// Only its `keep` most recent addresses are kept. Both are stored as
    /// SHA-256 digests, as throttling keys are.
    pub fn remember_address(
        &self,
        subject: &str,
        address: &str,
        now: i64,
        keep: usize,
    ) -> Result<(), StateError> {
        let (s, a) = (throttle_key(subject), throttle_key(address));
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO known_addresses (subject, address, last_success) VALUES ($1, $2, $3)
                 ON CONFLICT (subject, address) DO UPDATE SET last_success =
                   CASE WHEN excluded.last_success > known_addresses.last_success
                        THEN excluded.last_success ELSE known_addresses.last_success END",
                args![s.as_str(), a.as_str(), now],
            )?;
            tx.execute(
                "DELETE FROM known_addresses WHERE subject = $1 AND address NOT IN
                   (SELECT address FROM known_addresses WHERE subject = $1
                    ORDER BY last_success DESC, address LIMIT $2)",
                args![s.as_str(), keep],
            )?;
            Ok(())
        })
    }

    /// Whether `subject` completed an authentication from `address` after `since`.
    pub fn address_known(
        &self,
        subject: &str,
        address: &str,
        since: i64,
    ) -> Result<bool, StateError> {
        let (s, a) = (throttle_key(subject), throttle_key(address));
        self.db.read(move |tx| {
            Ok(tx
                .query_opt(
                    "SELECT last_success FROM known_addresses WHERE subject = $1 AND address = $2",
                    args![s.as_str(), a.as_str()],
                )?
                .map(|r| r.i64(0))
                .transpose()?
                .is_some_and(|at| at > since))
        })
    }

    /// Forgets known addresses whose last success is at or before `before`.
    pub fn forget_known_addresses(&self, before: i64) -> Result<u64, StateError> {
        self.db.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM known_addresses WHERE last_success <= $1",
                args![before],
            )?)
        })
    }
}
