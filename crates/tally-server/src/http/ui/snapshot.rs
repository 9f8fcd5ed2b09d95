//! The dashboard's feed as typed data: everything the dashboard shows, read
//! from the [`App`] in one go ([`Snapshot::read`], a round of store queries,
//! so it runs on a blocking thread). Incidents, their legal clocks and the
//! detections are `tally_incident`'s own types; the rest is what the server
//! knows (decision counts, signing keys, the ledger).

use tally_core::verdict::Verdict;
use tally_incident::clocks::{Clock, ClockStatus, IncidentState};
use tally_incident::store::{Incident, StoredDetection};
use tally_store::{KeyPurpose, KeyState};

use crate::app::App;

/// Detections shown, most recently seen first.
const DETECTIONS: usize = 15;
/// Signing keys shown, newest first.
const KEYS: usize = 8;

/// Everything the dashboard shows, at one time.
pub(super) struct Snapshot {
    /// When it was read (unix seconds).
    pub(super) now: i64,
    /// The incidents not closed, with their clocks.
    pub(super) incidents: Vec<IncidentView>,
    /// Decisions per minute by verdict, oldest first (minutes with traffic
    /// among the last 60).
    pub(super) per_minute: Vec<MinuteCounts>,
    /// Decisions by verdict since the process started, in
    /// [`Verdict::ALL`] order.
    pub(super) verdicts: Vec<(Verdict, u64)>,
    /// The latest detections.
    pub(super) detections: Vec<StoredDetection>,
    /// The newest token signing keys.
    pub(super) keys: Vec<KeyView>,
    /// The issuance ledger.
    pub(super) ledger: LedgerView,
}

/// An open incident and where each of its legal clocks stands.
pub(super) struct IncidentView {
    /// The incident.
    pub(super) incident: Incident,
    /// Its clocks, by due time, each with its status at [`Snapshot::now`].
    pub(super) clocks: Vec<(Clock, ClockStatus)>,
}

/// One minute's decisions.
pub(super) struct MinuteCounts {
    /// Unix minute (unix seconds / 60).
    pub(super) minute: i64,
    /// Decisions by verdict (only those with any).
    pub(super) counts: Vec<(Verdict, u64)>,
}

/// A token signing key (never its private part).
pub(super) struct KeyView {
    /// Key id.
    pub(super) kid: String,
    /// JOSE algorithm.
    pub(super) alg: String,
    /// Lifecycle state.
    pub(super) state: KeyState,
    /// When it was made (unix seconds).
    pub(super) created_at: i64,
    /// The custodians who hold it.
    pub(super) custodians: Vec<String>,
}

/// The issuance ledger's progress and integrity.
pub(super) struct LedgerView {
    /// Entries.
    pub(super) size: u64,
    /// Seconds since the size last changed.
    pub(super) checkpoint_age_secs: i64,
    /// Whether the last audit found it intact.
    pub(super) verified: bool,
    /// Tokens live in the gate's registry.
    pub(super) live_tokens: usize,
}

impl Snapshot {
    /// Reads everything from `app` (store queries: call off the async
    /// threads). A store that does not answer shows as empty.
    pub(super) fn read(app: &App) -> Snapshot {
        let now = app.clock.now();
        let store = &app.watch.store;
        let incidents = store
            .incidents()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.state != IncidentState::Closed)
            .map(|incident| {
                // As the incident's JSON and the reminders count them.
                let facts = tally_incident::facts::facts_of(store, &incident);
                let subs = store.submissions(incident.id).unwrap_or_default();
                let clocks =
                    tally_incident::report::clock_states(app.watch.regimes(), &facts, &subs, now);
                IncidentView { incident, clocks }
            })
            .collect();
        let per_minute = app
            .watch
            .minutes()
            .into_iter()
            .map(|(minute, counts)| MinuteCounts {
                minute,
                counts: counts
                    .into_iter()
                    .filter_map(|(code, n)| Some((Verdict::from_code(code)?, n)))
                    .collect(),
            })
            .collect();
        let verdicts = Verdict::ALL
            .iter()
            .map(|v| (*v, app.metrics.count(*v)))
            .collect();
        let keys = app
            .dir
            .state
            .keys(KeyPurpose::Token)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .take(KEYS)
            .map(|k| KeyView {
                custodians: app.dir.state.custodians(&k.kid).unwrap_or_default(),
                kid: k.kid,
                alg: k.alg,
                state: k.state,
                created_at: k.created_at,
            })
            .collect();
        let (size, since) = app.ledger_progress();
        Snapshot {
            now,
            incidents,
            per_minute,
            verdicts,
            detections: store.recent_detections(DETECTIONS).unwrap_or_default(),
            keys,
            ledger: LedgerView {
                size,
                checkpoint_age_secs: now - since,
                verified: app.ledger.tampered().is_none(),
                live_tokens: app.gate.registry().len(),
            },
        }
    }
}
