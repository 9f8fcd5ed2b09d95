//! How a node is set up: its [`FleetConfig`] (the URL, never printed, the
//! schema, its name, its readers, whether it sequences, its witness file)
//! and the two callbacks through which it tells the server of every
//! authentic record ([`OnRecord`]) and of tampering ([`OnTamper`]).

use std::sync::Arc;

use crate::fleet::{FleetError, QueuedRecord};

/// How a fleet node connects and behaves.
#[derive(Clone)]
pub struct FleetConfig {
    /// `postgres://…`
    pub url: String,
    /// Schema holding the fleet's tables.
    pub schema: String,
    /// This node's name (recorded with each queued record).
    pub node: String,
    /// Reader connections for lookups.
    pub readers: usize,
    /// Whether this node competes to sequence.
    pub sequence: bool,
    /// Where this node keeps the latest checkpoint it verified (a file in its
    /// own directory): at the next start, the shared ledger must extend it,
    /// so a rollback or rewrite of the database is detected.
    pub witness: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("FleetConfig")
            .field("schema", &self.schema)
            .field("node", &self.node)
            .field("readers", &self.readers)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl FleetConfig {
    /// Defaults for `url` and `schema`: two readers, sequencing on.
    pub fn new(url: &str, schema: &str, node: &str) -> FleetConfig {
        FleetConfig {
            url: url.to_string(),
            schema: schema.to_string(),
            node: node.to_string(),
            readers: 2,
            sequence: true,
            witness: None,
        }
    }
}

/// Called with every authentic record the node learns of (at start and
/// while following), exactly once per record.
pub type OnRecord = Arc<dyn Fn(&QueuedRecord) + Send + Sync>;

/// Called when the follower or sequencer finds evidence of tampering.
pub type OnTamper = Arc<dyn Fn(&FleetError) + Send + Sync>;
