//! `[passwords]`: what a new password must be (see
//! [`crate::passwords::Policy`]).

use serde::Deserialize;

use crate::passwords::{DEFAULT_MIN_CHARS, LEAST_MIN_CHARS, MOST_MIN_CHARS, Policy};

/// `[passwords]` in `tally.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PasswordsFile {
    /// The fewest characters a new password may have (default 12; at least
    /// 8, at most 256).
    pub min_length: Option<usize>,
}

/// The policy `[passwords]` asks for (the default without one), or what is
/// wrong with it, phrased for the operator.
pub(super) fn policy(file: Option<&PasswordsFile>) -> Result<Policy, String> {
    let min = file.and_then(|f| f.min_length).unwrap_or(DEFAULT_MIN_CHARS);
    if min < LEAST_MIN_CHARS {
        return Err(format!(
            "[passwords] min_length = {min} is below {LEAST_MIN_CHARS}, the least NIST SP \
             800-63B allows: set it to {LEAST_MIN_CHARS} or more (the default is \
             {DEFAULT_MIN_CHARS}), or remove it"
        ));
    }
    if min > MOST_MIN_CHARS {
        return Err(format!(
            "[passwords] min_length = {min} is above {MOST_MIN_CHARS}: passwords are at most \
             {} bytes, which not every password of {min} characters fits in; set it to \
             {MOST_MIN_CHARS} or less",
            crate::passwords::MAX_BYTES
        ));
    }
    Ok(Policy { min_chars: min })
}
