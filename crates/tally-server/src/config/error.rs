//! The one error of configuration loading.

/// A configuration problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);
