//! Key custody: the data directory and its master key, the token-signing
//! keys (sealed at rest, or held in a PKCS#11 token), the signature
//! accounts that match every signature to a ledger record, and the key
//! lifecycle (rotation, compromise, custodians, offboarding).

mod accounting;
mod datadir;
mod keys;
pub mod lifecycle;
mod material;
mod pkcs11;

pub use accounting::{Accounts, KeyAccount};
pub use datadir::{DataDir, DataDirError, DataDirLock};
pub use keys::{ActiveKey, KeyRing, KeyRingError, new_token_key, still_verifies, store_token_key};
pub use material::{random_hex, seal_context};
pub use pkcs11::{Hsm, HsmError, HsmKey, sign_jwt};
