//! `[pkcs11]`: where the token that holds the signing keys is, and how to
//! log in to it. Holds no secret: the PIN is read from the environment.

use std::path::PathBuf;

use serde::Deserialize;

/// The environment variable that holds the user PIN unless configured
/// otherwise.
pub const DEFAULT_PIN_ENV: &str = "TALLY_PKCS11_PIN";

/// Where the token is and how to log in to it (`[pkcs11]` in `tally.toml`
/// when `signer = "pkcs11"`). Holds no secret: the PIN is read from the
/// environment variable named by `pin_env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Absolute path of the PKCS#11 module (shared library), e.g.
    /// `/usr/lib/softhsm/libsofthsm2.so`. Loading it runs its code: it is
    /// trusted configuration.
    pub module: PathBuf,
    /// The slot id. With `token_label` too, both must match.
    #[serde(default)]
    pub slot: Option<u64>,
    /// The token label (`CKA_LABEL` of the token, without padding). Without
    /// `slot` or `token_label`, the module must have exactly one token.
    #[serde(default)]
    pub token_label: Option<String>,
    /// Name of the environment variable holding the user PIN (default
    /// [`DEFAULT_PIN_ENV`]).
    #[serde(default = "default_pin_env")]
    pub pin_env: String,
}

fn default_pin_env() -> String {
    DEFAULT_PIN_ENV.to_owned()
}

impl Pkcs11Config {
    /// A configuration for `module` that selects its only token and reads the
    /// PIN from [`DEFAULT_PIN_ENV`].
    #[must_use]
    pub fn new(module: impl Into<PathBuf>) -> Self {
        Self {
            module: module.into(),
            slot: None,
            token_label: None,
            pin_env: default_pin_env(),
        }
    }
}
