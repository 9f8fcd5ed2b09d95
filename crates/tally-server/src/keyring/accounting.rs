//! Every signature accounted for.
//!
//! Each token-signing key has an account: how many signatures the signer made
//! (`signed`, kept durably in `state.db`), how many of those tokens were
//! withheld because their record could not be made durable (`withheld`), and
//! how many records the ledger holds for the key (`recorded`). With no
//! issuance in flight, `signed = recorded + withheld` must hold; otherwise a
//! signature exists that the ledger cannot account for, and reconciliation
//! raises `signer_ledger_mismatch` naming the key and the difference.
//!
//! In a fleet every node keeps its own accounts (its signatures, its
//! records), stored per key and node: a node cannot see another's signatures
//! as they are made, so only per-node accounts balance.
//!
//! The durable count is flushed every second, so after an unclean shutdown it
//! may be behind (never ahead of) the truth; a count found behind the ledger
//! is adopted and noted in the key audit log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tally_store::{KeyEvent, StateError, StateStore};

/// Counts for one key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Signatures made by the signer.
    pub signed: u64,
    /// Tokens signed but withheld because their record did not become durable.
    pub withheld: u64,
    /// Records in the ledger for tokens this key signed.
    pub recorded: u64,
    /// Issuances between signing and their ledger answer.
    pub in_flight: u64,
    unflushed_signed: u64,
    unflushed_withheld: u64,
}

/// One key's account.
#[derive(Debug, Default)]
pub struct KeyAccount {
    counts: Mutex<Counts>,
}

impl KeyAccount {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a signature (the signer calls this for every signature it makes).
    pub fn signed(&self) {
        let mut c = self.lock();
        c.signed += 1;
        c.unflushed_signed += 1;
    }

    /// An issuance starts: its signature is about to be made and recorded.
    pub fn begin(&self) {
        self.lock().in_flight += 1;
    }

    /// An issuance ends before anything was signed (signing failed).
    pub fn abandon(&self) {
        let mut c = self.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
    }

    /// An issuance ends: its record is durable (`recorded`) or it was withheld.
    pub fn end(&self, recorded: bool) {
        let mut c = self.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
        if recorded {
            c.recorded += 1;
        } else {
            c.withheld += 1;
            c.unflushed_withheld += 1;
        }
    }

    /// A snapshot.
    pub fn counts(&self) -> Counts {
        *self.lock()
    }
}

/// A key whose signatures and records disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The key.
    pub kid: String,
    /// `signed - withheld - recorded`: positive means signatures the ledger
    /// cannot account for.
    pub difference: i64,
    /// The counts behind it.
    pub counts: Counts,
}

/// The accounts of every key.
#[derive(Default)]
pub struct Accounts {
    keys: Mutex<HashMap<String, Arc<KeyAccount>>>,
    reported: Mutex<HashMap<String, i64>>,
    /// This node's name in a fleet, empty for one node.
    node: String,
}

impl Accounts {
    /// Accounts from the durable counts and the ledger's records per key.
    pub fn load(
        state: &StateStore,
        recorded: &HashMap<String, u64>,
    ) -> Result<Accounts, StateError> {
        Accounts::load_for(state, recorded, None)
    }

    /// [`Accounts::load`] for one node of a fleet (`recorded`: that node's
    /// records only).
    pub fn load_for(
        state: &StateStore,
        recorded: &HashMap<String, u64>,
        node: Option<&str>,
    ) -> Result<Accounts, StateError> {
        let accounts = Accounts {
            node: node.unwrap_or_default().to_string(),
            ..Default::default()
        };
        for (kid, (signed, withheld)) in state.signature_counts(&accounts.node)? {
            let a = accounts.account(&kid);
            let mut c = a.lock();
            c.signed = signed;
            c.withheld = withheld;
        }
        for (kid, n) in recorded {
            accounts.account(kid).lock().recorded = *n;
        }
        Ok(accounts)
    }

    /// The account of `kid` (created empty on first use).
    pub fn account(&self, kid: &str) -> Arc<KeyAccount> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kid.to_string())
            .or_default()
            .clone()
    }

    /// Writes the counts made since the last flush to the state store.
    pub fn flush(&self, state: &StateStore) -> Result<(), StateError> {
        let keys: Vec<(String, Arc<KeyAccount>)> = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        let mut deltas = Vec::new();
        for (kid, a) in &keys {
            let mut c = a.lock();
            if c.unflushed_signed + c.unflushed_withheld > 0 {
                deltas.push((kid.clone(), c.unflushed_signed, c.unflushed_withheld));
                c.unflushed_signed = 0;
                c.unflushed_withheld = 0;
            }
        }
        if deltas.is_empty() {
            return Ok(());
        }
        if let Err(e) = state.add_signature_counts(&self.node, &deltas) {
            // Put them back for the next try.
            for (kid, s, w) in deltas {
                let a = self.account(&kid);
                let mut c = a.lock();
                c.unflushed_signed += s;
                c.unflushed_withheld += w;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Compares signatures with records for every key with nothing in flight.
    /// A count behind the ledger (an unclean shutdown lost its last flush) is
    /// adopted and noted; a count ahead of it is a mismatch, reported once per
    /// new difference (returned, logged and written to the key audit log).
    pub fn reconcile(&self, state: &StateStore, now: i64) -> Vec<Mismatch> {
        let keys: Vec<(String, Arc<KeyAccount>)> = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        let mut out = Vec::new();
        for (kid, a) in keys {
            let mut c = a.lock();
            if c.in_flight > 0 {
                continue;
            }
            let accounted = c.recorded + c.withheld;
            if c.signed < accounted {
                let behind = accounted - c.signed;
                c.signed = accounted;
                c.unflushed_signed += behind;
                drop(c);
                tracing::warn!(kid = %kid, behind, "signature counter behind the ledger (unclean shutdown?); adopted");
                let _ = state.record_event(&KeyEvent {
                    at: now,
                    kid: Some(kid.clone()),
                    event: "signature_counter_adopted".into(),
                    actor: "tally".into(),
                    detail: format!("durable counter was {behind} behind the ledger"),
                });
                continue;
            }
            let difference = (c.signed - accounted) as i64;
            let counts = *c;
            drop(c);
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            let last = reported.get(&kid).copied().unwrap_or(0);
            if difference != last {
                reported.insert(kid.clone(), difference);
                if difference > 0 {
                    tracing::error!(
                        event = "signer_ledger_mismatch",
                        kid = %kid,
                        difference,
                        signed = counts.signed,
                        recorded = counts.recorded,
                        withheld = counts.withheld,
                        "signatures made with this key that the ledger cannot account for"
                    );
                    let _ = state.record_event(&KeyEvent {
                        at: now,
                        kid: Some(kid.clone()),
                        event: "signer_ledger_mismatch".into(),
                        actor: "tally".into(),
                        detail: format!(
                            "{difference} signature(s) not in the ledger (signed {}, recorded {}, withheld {})",
                            counts.signed, counts.recorded, counts.withheld
                        ),
                    });
                }
            }
            if difference > 0 {
                out.push(Mismatch {
                    kid,
                    difference,
                    counts,
                });
            }
        }
        out
    }
}
