//! Revoked tokens: one row per token id (revoking twice is a no-op), read
//! in sequence order so that nodes can follow the list incrementally.

use super::error::StateError;
use super::store::{StateStore, count};
use crate::sql::args;

/// A revoked token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Its `jti`.
    pub token_id: String,
    /// SHA-256 of its bytes (the registry key).
    pub token_sha256: [u8; 32],
    /// Its `exp`.
    pub expires_at: i64,
}

impl StateStore {
    /// Revokes tokens (idempotent per token id). Returns how many were new.
    pub fn revoke(
        &self,
        tokens: &[Revocation],
        reason: &str,
        now: i64,
    ) -> Result<usize, StateError> {
        let tokens = tokens.to_vec();
        let reason = reason.to_owned();
        self.db.write(move |tx| {
            let mut n = 0;
            for t in tokens {
                n += tx.execute(
                    "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id) DO NOTHING",
                    args![
                        t.token_id,
                        t.token_sha256.as_slice(),
                        t.expires_at,
                        now,
                        &reason
                    ],
                )?;
            }
            Ok(count(n))
        })
    }

    /// Revocations recorded after sequence number `after`, in order.
    pub fn revocations_after(&self, after: i64) -> Result<Vec<(i64, Revocation)>, StateError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT seq, token_id, token_sha256, expires_at FROM revocations WHERE seq > $1 ORDER BY seq",
                args![after],
            )?
            .iter()
            .map(|r| {
                let digest = r.blob(2)?;
                let mut d = [0u8; 32];
                if digest.len() == 32 {
                    d.copy_from_slice(&digest);
                }
                Ok((
                    r.i64(0)?,
                    Revocation {
                        token_id: r.text(1)?,
                        token_sha256: d,
                        expires_at: r.i64(3)?,
                    },
                ))
            })
            .collect()
        })
    }

    /// Whether `token_id` is revoked.
    pub fn is_revoked(&self, token_id: &str) -> Result<bool, StateError> {
        let token_id = token_id.to_owned();
        self.db.read(move |tx| {
            Ok(tx
                .query_opt(
                    "SELECT 1 FROM revocations WHERE token_id = $1",
                    args![token_id],
                )?
                .is_some())
        })
    }
}
