//! Token-signing keys held in a PKCS#11 token (an HSM, or SoftHSM2 in tests).
//!
//! The private key is generated inside the token as sensitive and
//! non-extractable and never leaves it: tally keeps only the key's `CKA_ID`,
//! and signs by asking the token. Two algorithms are supported, the ones whose
//! JWS signature is exactly what the token returns:
//!
//! * `EdDSA` (Ed25519): `CKM_EC_EDWARDS_KEY_PAIR_GEN`, `CKM_EDDSA`;
//! * `ES256` (P-256): `CKM_EC_KEY_PAIR_GEN`, `CKM_ECDSA` over SHA-256 of the
//!   signing input, whose output is the fixed 64-byte `r || s` JWS needs.
//!
//! # Guarantees
//!
//! * A key is used only if the token reports it `CKA_SENSITIVE`,
//!   `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE` and not
//!   `CKA_EXTRACTABLE`, whether it was just generated ([`Hsm::generate`]) or
//!   found again ([`Hsm::find`]); otherwise [`HsmError::KeyNotProtected`].
//! * The public key is read from the token's public-key object and then proven
//!   to belong to the private key by a test signature; every signature
//!   [`Hsm::sign`] returns has been verified against that public key (in
//!   software, with AWS-LC), so a swapped object or a faulty token yields
//!   [`HsmError::KeyMismatch`], never a bad token.
//! * The user PIN is read from an environment variable whose *name* is
//!   configured; it is never logged, and no error or `Debug` output carries it.
//!   (The variable itself stays in the process environment: with
//!   `#![forbid(unsafe_code)]` and edition 2024 it cannot be removed here.)
//!
//! # PKCS#11 is process-wide
//!
//! A module is initialized once per process (`C_Initialize`), and login state
//! is per token for the whole process. This module keeps one loaded context
//! per module path: the first [`Hsm`] initializes it, and dropping the last
//! one finalizes it (SoftHSM2 re-reads `SOFTHSM2_CONF` at the next
//! initialization). The library stays loaded for the life of the process.
//! Opening a token that an [`Hsm`] of this process already has open is
//! refused ([`HsmError::InUse`]): a second login would not check its PIN.
//!
//! All calls block (the token may be a network device): from async code, call
//! them inside `spawn_blocking`.

mod error;
mod hsm;
mod jwt;
mod module;

pub use error::HsmError;
pub use hsm::{Hsm, HsmKey};
pub use jwt::sign_jwt;
