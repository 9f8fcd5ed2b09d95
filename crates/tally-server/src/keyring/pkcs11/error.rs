//! Why an HSM operation failed, with a stable code; never a PIN or key
//! material in a message.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};
use tally_core::jose::Algorithm;

/// Why an HSM operation failed. Messages name paths, slots and variable
/// names, never a PIN or key material; [`HsmError::code`] is stable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The module path does not exist or is not absolute.
    #[error("PKCS#11 module not found: {path} ({why})")]
    ModuleNotFound {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The module exists but could not be loaded or initialized.
    #[error("PKCS#11 module {path} could not be loaded: {detail}")]
    ModuleInvalid {
        /// The configured path.
        path: PathBuf,
        /// The loader's or the module's answer.
        detail: String,
    },
    /// The PIN environment variable is unset, empty or not UTF-8.
    #[error(
        "the PKCS#11 user PIN is missing: environment variable {var} is unset, empty or not UTF-8"
    )]
    PinMissing {
        /// The variable's name.
        var: String,
    },
    /// No token matches the configured slot and label (or several do).
    #[error("PKCS#11 token not found: {0}")]
    SlotNotFound(String),
    /// The token refused the user PIN (`CKR_PIN_INCORRECT`).
    #[error("the PKCS#11 token refused the user PIN (CKR_PIN_INCORRECT)")]
    PinIncorrect,
    /// The user PIN is locked after too many failures (`CKR_PIN_LOCKED`),
    /// or the user PIN was never initialized.
    #[error(
        "the PKCS#11 token's user PIN is locked or not initialized; the security officer must reset it"
    )]
    Locked,
    /// This process already has the token open through another [`Hsm`].
    #[error("the PKCS#11 token is already open in this process")]
    InUse,
    /// The algorithm cannot be held in a token here (only `EdDSA` and
    /// `ES256` can).
    #[error("algorithm {0} is not supported for PKCS#11 keys")]
    UnsupportedAlgorithm(Algorithm),
    /// The token does not offer a mechanism or curve the algorithm needs.
    #[error("the PKCS#11 token does not support {0}")]
    UnsupportedMechanism(&'static str),
    /// No key pair with this `CKA_ID` (or several).
    #[error("no single PKCS#11 key pair with this id: {0}")]
    KeyNotFound(&'static str),
    /// The token's key is of a type or curve tally does not sign with.
    #[error("unsupported PKCS#11 key: {0}")]
    UnsupportedKey(&'static str),
    /// The private key is, or once was, extractable or not sensitive.
    #[error("the PKCS#11 private key is not protected: {0}")]
    KeyNotProtected(&'static str),
    /// A signature from the token does not verify under the key's public key.
    #[error("the PKCS#11 token's signature does not match the key's public key")]
    KeyMismatch,
    /// The key was found or generated through another [`Hsm`] (object
    /// handles are only valid in the session that produced them).
    #[error("this key belongs to another HSM connection; find it again by id")]
    StaleKey,
    /// Claims handed to [`sign_jwt`] would not pass the JOSE verifier.
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
    /// The token would exceed [`MAX_TOKEN_BYTES`].
    #[error("token would exceed the maximum token size")]
    TokenTooLarge,
    /// Any other failure of the token or the module.
    #[error("PKCS#11 {op} failed: {detail}")]
    Failure {
        /// The operation.
        op: &'static str,
        /// The module's answer (a return-value name, never an argument).
        detail: String,
    },
}

impl HsmError {
    /// The stable code: `hsm_module_not_found`, `hsm_module_invalid`,
    /// `hsm_pin_missing`, `hsm_slot_not_found`, `hsm_pin_incorrect`,
    /// `hsm_locked`, `hsm_in_use`, `hsm_unsupported_algorithm`,
    /// `hsm_unsupported_mechanism`, `hsm_key_not_found`,
    /// `hsm_unsupported_key`, `hsm_key_not_protected`, `hsm_key_mismatch`,
    /// `hsm_stale_key`, `hsm_invalid_claims`, `hsm_token_too_large` or
    /// `hsm_failure`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::ModuleNotFound { .. } => "hsm_module_not_found",
            Self::ModuleInvalid { .. } => "hsm_module_invalid",
            Self::PinMissing { .. } => "hsm_pin_missing",
            Self::SlotNotFound(_) => "hsm_slot_not_found",
            Self::PinIncorrect => "hsm_pin_incorrect",
            Self::Locked => "hsm_locked",
            Self::InUse => "hsm_in_use",
            Self::UnsupportedAlgorithm(_) => "hsm_unsupported_algorithm",
            Self::UnsupportedMechanism(_) => "hsm_unsupported_mechanism",
            Self::KeyNotFound(_) => "hsm_key_not_found",
            Self::UnsupportedKey(_) => "hsm_unsupported_key",
            Self::KeyNotProtected(_) => "hsm_key_not_protected",
            Self::KeyMismatch => "hsm_key_mismatch",
            Self::StaleKey => "hsm_stale_key",
            Self::InvalidClaims(_) => "hsm_invalid_claims",
            Self::TokenTooLarge => "hsm_token_too_large",
            Self::Failure { .. } => "hsm_failure",
        }
    }
}

/// Maps a module error of operation `op` to an [`HsmError`]. The detail is
/// the error's `Debug` form: a return-value and function name, or the
/// loader's message; cryptoki errors never carry call arguments.
pub(super) fn ck(op: &'static str) -> impl FnOnce(CkError) -> HsmError {
    move |e| match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => HsmError::PinIncorrect,
        CkError::Pkcs11(RvError::PinLocked | RvError::UserPinNotInitialized, _) => HsmError::Locked,
        CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _) => HsmError::InUse,
        CkError::Pkcs11(RvError::MechanismInvalid | RvError::CurveNotSupported, _) => {
            HsmError::UnsupportedMechanism(op)
        }
        other => HsmError::Failure {
            op,
            detail: format!("{other:?}"),
        },
    }
}
