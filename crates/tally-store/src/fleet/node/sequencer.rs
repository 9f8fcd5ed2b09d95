//! The sequencer thread: it competes for the advisory lock on a connection
//! of its own ([`LEADER_POLL`] apart) and, while it leads, steps the fleet's
//! [`Sequencer`]. Rows the sequencer set aside are reported as tampering; a
//! lost connection (and the lock with it) makes it a follower again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_core::note::NoteSigner;

use super::shared::{Shared, now_secs, sleep_unless_stopped};
use crate::fleet::{FleetError, Sequencer, Step};

/// How often a follower asks for the sequencer lock.
pub const LEADER_POLL: Duration = Duration::from_millis(500);

/// The sequencer thread's loop, until the node stops.
pub(super) fn sequencer(shared: Arc<Shared>, signer: NoteSigner) {
    enum State {
        Idle(NoteSigner),
        Connected(Box<Sequencer>),
    }
    let mut state = State::Idle(signer);
    while !shared.stop.load(Ordering::SeqCst) {
        state = match state {
            // The schema was migrated when the node opened.
            State::Idle(signer) => match crate::fleet::connect_to(
                &shared.target,
                None,
                Some(&format!(
                    "{}{}",
                    crate::fleet::SEQUENCER_APP,
                    shared.cfg.node
                )),
            ) {
                Ok(c) => State::Connected(Box::new(Sequencer::with_client(
                    c,
                    &shared.cfg.schema,
                    signer,
                    shared.mac.clone(),
                ))),
                Err(_) => {
                    sleep_unless_stopped(&shared, LEADER_POLL);
                    State::Idle(signer)
                }
            },
            State::Connected(mut s) => match s.step(1000, now_secs()) {
                Ok(Step::NotLeader) => {
                    shared.leader.store(false, Ordering::SeqCst);
                    sleep_unless_stopped(&shared, LEADER_POLL);
                    State::Connected(s)
                }
                Ok(step) => {
                    shared.leader.store(true, Ordering::SeqCst);
                    for r in s.take_rejected() {
                        shared.tamper(FleetError::Tampered {
                            index: r.seq.max(0) as u64,
                            reason: r.reason,
                        });
                    }
                    if step == Step::Idle {
                        sleep_unless_stopped(&shared, Duration::from_millis(50));
                    }
                    State::Connected(s)
                }
                Err(e) => {
                    // The lock went with the connection (or was never
                    // held): start over as a follower.
                    shared.leader.store(false, Ordering::SeqCst);
                    if matches!(e, FleetError::Tampered { .. }) {
                        shared.tamper(e);
                    }
                    sleep_unless_stopped(&shared, LEADER_POLL);
                    State::Idle(s.into_signer())
                }
            },
        };
    }
}
