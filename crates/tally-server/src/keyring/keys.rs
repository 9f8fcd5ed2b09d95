//! The key ring: unsealing token-signing keys, the active signer, and the key
//! set the gate trusts.

use super::material::{random_hex, seal_context};
use std::sync::Arc;

use tally_core::jose::{Algorithm, KeySet, SigningKey, VerifyingKey};
use tally_store::{KeyPurpose, KeyRow, KeyState};

use super::datadir::DataDir;

pub(super) use tally_store::clock::now_unix;

/// Key-ring failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// No active token-signing key.
    #[error("no active token-signing key (run `tally keys import` or restart to generate one)")]
    NoActiveKey,
    /// A stored key did not unseal or parse.
    #[error("key {kid}: {reason}")]
    BadKey {
        /// Key id.
        kid: String,
        /// Why.
        reason: String,
    },
    /// Storage failed.
    #[error("{0}")]
    Store(String),
}

/// The row of a software key: sealed under the master key, `kid` defaulting
/// to the RFC 7638 thumbprint.
fn software_row(
    dir: &DataDir,
    key: &SigningKey,
    kid: Option<&str>,
    source: &str,
    now: i64,
) -> Result<KeyRow, KeyRingError> {
    let vk = key.verifying_key();
    let kid = kid.map(str::to_string).unwrap_or_else(|| vk.thumbprint());
    let der = key.to_pkcs8_der().map_err(|e| KeyRingError::BadKey {
        kid: kid.clone(),
        reason: e.to_string(),
    })?;
    let sealed = dir
        .master
        .seal(&seal_context(&kid), &der)
        .map_err(|e| KeyRingError::Store(e.to_string()))?;
    Ok(KeyRow {
        kid: kid.clone(),
        alg: key.algorithm().name().to_string(),
        purpose: KeyPurpose::Token,
        state: KeyState::Active,
        created_at: now,
        state_changed_at: now,
        public: vk.with_kid(kid).to_jwk().to_string(),
        sealed,
        source: source.to_string(),
    })
}

/// Seals and stores `key` as the new active token key (the previous active key
/// becomes `retiring`). `kid` defaults to the RFC 7638 thumbprint.
pub fn store_token_key(
    dir: &DataDir,
    key: &SigningKey,
    kid: Option<&str>,
    source: &str,
) -> Result<String, KeyRingError> {
    let row = software_row(dir, key, kid, source, now_unix())?;
    dir.state
        .insert_active_token_key(&row)
        .map_err(|e| KeyRingError::Store(e.to_string()))?;
    Ok(row.kid)
}

/// The active signing key with its id.
pub struct ActiveKey {
    /// Key id.
    pub kid: String,
    /// The private key; it signs only through [`ActiveKey::sign_jwt`], which
    /// counts every signature.
    key: Material,
    account: Arc<super::accounting::KeyAccount>,
}

/// Where a signing key's private half is.
enum Material {
    /// In memory, unsealed from state.db (zeroized on drop).
    Software(SigningKey),
    /// Inside a PKCS#11 token, non-extractable.
    Hsm(Arc<super::pkcs11::Hsm>, super::pkcs11::HsmKey),
}

/// `source` of keys generated inside a PKCS#11 token; their `sealed` column
/// holds the key's `CKA_ID` (not a secret).
pub(super) const PKCS11_SOURCE: &str = "pkcs11";

/// Generates a new token-signing key (inside the PKCS#11 token when one is
/// configured, else in software, sealed under the master key) and returns its
/// row, not yet stored. The kid is the RFC 7638 thumbprint.
pub fn new_token_key(dir: &DataDir, alg: Algorithm, now: i64) -> Result<KeyRow, KeyRingError> {
    if dir.pkcs11.is_some() {
        let hsm = dir.hsm().map_err(|e| KeyRingError::Store(e.to_string()))?;
        let label = format!("tally-token-{}", random_hex(6));
        let key = hsm
            .generate(alg, &label)
            .map_err(|e| KeyRingError::BadKey {
                kid: "(new)".into(),
                reason: format!("{} ({})", e, e.code()),
            })?;
        let kid = key.public.thumbprint();
        return Ok(KeyRow {
            kid: kid.clone(),
            alg: alg.name().to_string(),
            purpose: KeyPurpose::Token,
            state: KeyState::Active,
            created_at: now,
            state_changed_at: now,
            public: key.public.clone().with_kid(kid).to_jwk().to_string(),
            sealed: key.id.clone(),
            source: PKCS11_SOURCE.into(),
        });
    }
    let key = SigningKey::generate(alg).map_err(|e| KeyRingError::BadKey {
        kid: "(new)".into(),
        reason: e.to_string(),
    })?;
    software_row(dir, &key, None, "generated", now)
}

impl ActiveKey {
    /// The key's signature account.
    pub fn account(&self) -> &Arc<super::accounting::KeyAccount> {
        &self.account
    }

    /// Signs a JWT and counts the signature in the key's account.
    pub fn sign_jwt(
        &self,
        typ: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, tally_core::jose::KeyError> {
        let token = match &self.key {
            Material::Software(key) => key.sign_jwt(&self.kid, typ, claims)?,
            Material::Hsm(hsm, key) => {
                super::pkcs11::sign_jwt(hsm, key, &self.kid, typ, claims).map_err(|e| {
                    tracing::error!(code = e.code(), error = %e, kid = %self.kid, "PKCS#11 signing failed");
                    tally_core::jose::KeyError::Crypto
                })?
            }
        };
        self.account.signed();
        Ok(token)
    }
}

/// What the server loads from the state store.
pub struct KeyRing {
    /// Signs new tokens.
    pub active: Arc<ActiveKey>,
    /// Verifies tokens: the active key, and retiring or compromised keys while a
    /// token they signed can still be unexpired.
    pub keyset: KeySet,
}

/// Seconds after a key stops signing during which it keeps verifying even
/// with no recorded token: covers a token signed just before the change whose
/// record is still being committed.
pub(super) const STOP_GRACE_SECS: i64 = 5;

/// Whether a key in `state` (since `changed_at`) still verifies at `now`: the
/// active key always; a retiring or compromised key until the last token it
/// signed (`last_expiry`, from the ledger) has expired, allowing `leeway`.
pub fn still_verifies(
    state: KeyState,
    changed_at: i64,
    last_expiry: Option<i64>,
    now: i64,
    leeway: i64,
) -> bool {
    match state {
        KeyState::Active => true,
        KeyState::Retiring | KeyState::Compromised => {
            now < changed_at
                .saturating_add(leeway)
                .saturating_add(STOP_GRACE_SECS)
                || last_expiry.is_some_and(|e| now < e.saturating_add(leeway))
        }
        KeyState::Retired => false,
    }
}

impl KeyRing {
    /// Loads the key ring from the state store at time `now`. Every verifying
    /// key is unsealed and its public half re-derived: a public key the state
    /// database merely claims (not sealed under the master key) is refused.
    pub fn load(
        dir: &DataDir,
        now: i64,
        leeway: i64,
        last_expiry: &dyn Fn(&str) -> Option<i64>,
        accounts: &super::accounting::Accounts,
    ) -> Result<KeyRing, KeyRingError> {
        let rows = dir
            .state
            .keys(KeyPurpose::Token)
            .map_err(|e| KeyRingError::Store(e.to_string()))?;
        let mut keyset = KeySet::new();
        let mut active = None;
        for row in &rows {
            if !still_verifies(
                row.state,
                row.state_changed_at,
                last_expiry(&row.kid),
                now,
                leeway,
            ) {
                continue;
            }
            let bad = |reason: String| KeyRingError::BadKey {
                kid: row.kid.clone(),
                reason,
            };
            let (key, vk) = if row.source == PKCS11_SOURCE {
                let hsm = dir.hsm().map_err(|e| bad(e.to_string()))?;
                let key = hsm
                    .find(&row.sealed)
                    .map_err(|e| bad(format!("{e} ({})", e.code())))?;
                let vk = key.public.clone().with_kid(row.kid.clone());
                (Material::Hsm(hsm, key), vk)
            } else {
                let der = dir
                    .master
                    .open(&seal_context(&row.kid), &row.sealed)
                    .map_err(|e| bad(e.to_string()))?;
                let key = SigningKey::from_pkcs8_der(&der).map_err(|e| bad(e.to_string()))?;
                let vk = key.verifying_key().with_kid(row.kid.clone());
                (Material::Software(key), vk)
            };
            let stored: serde_json::Value =
                serde_json::from_str(&row.public).map_err(|e| bad(e.to_string()))?;
            let stored = VerifyingKey::from_jwk(&stored)
                .map_err(|e| bad(e.to_string()))?
                .with_kid(row.kid.clone());
            if stored != vk || Algorithm::from_name(&row.alg) != Some(vk.algorithm()) {
                return Err(bad(
                    "the stored public key does not belong to the private key \
                     (state.db altered?)"
                        .into(),
                ));
            }
            keyset.insert(vk);
            if row.state == KeyState::Active {
                active = Some(ActiveKey {
                    kid: row.kid.clone(),
                    key,
                    account: accounts.account(&row.kid),
                });
            }
        }
        let active = active.ok_or(KeyRingError::NoActiveKey)?;
        Ok(KeyRing {
            active: Arc::new(active),
            keyset,
        })
    }
}
