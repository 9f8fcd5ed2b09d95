//! Store calls off the async runtime: the one helper every handler uses,
//! and the one mapping from a store's failure to an answer (503 with the
//! store's stable code, the reason in the log, never in the response).

use tally_incident::access::AccessError;
use tally_incident::store::IncidentError;
use tally_store::{LedgerError, StateError};

use crate::error::ApiError;

/// A store failure as an HTTP answer.
pub(crate) trait StoreFailure: std::fmt::Display + Send + 'static {
    /// The answer, after logging the failure.
    fn answer(self) -> ApiError;
}

impl StoreFailure for StateError {
    fn answer(self) -> ApiError {
        tracing::error!(code = self.code(), error = %self, "state store failed");
        ApiError::unavailable(self.code())
    }
}

impl StoreFailure for LedgerError {
    fn answer(self) -> ApiError {
        match self {
            LedgerError::OutOfRange(m) => ApiError::bad_request("out_of_range", m),
            other => {
                tracing::error!(code = other.code(), error = %other, "ledger read failed");
                ApiError::unavailable(other.code())
            }
        }
    }
}

impl StoreFailure for IncidentError {
    fn answer(self) -> ApiError {
        tracing::error!(code = self.code(), error = %self, "incident store failed");
        ApiError::unavailable("store_unavailable")
    }
}

impl StoreFailure for AccessError {
    fn answer(self) -> ApiError {
        tracing::error!(code = self.code(), error = %self, "access log failed");
        ApiError::unavailable("store_unavailable")
    }
}

/// Runs `f` (a store call) on the blocking pool; its failure becomes the
/// store's answer, a panic in it a 503 `internal`.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: StoreFailure,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::unavailable("internal"))?
        .map_err(StoreFailure::answer)
}
