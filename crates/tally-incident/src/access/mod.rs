//! The access log: every gate decision, as an [`AccessEvent`] queued by the
//! request path ([`AccessEvents`], bounded in bytes, flood-accounted),
//! written in batches to the hash-chained [`AccessLog`] and shown to the
//! detector once written.

mod event;
mod log;
mod writer;

pub use event::{AccessEvent, Request, bounded, event, limits};
pub use log::{AccessError, AccessLog, AccessReport, Hold};
pub use writer::{AccessEvents, FOLD_BYTES, QUEUE_BUDGET_BYTES};
