//! Login sessions (refresh-token families), their refresh tokens (stored
//! only as hashes) and the access tokens issued in them. Sessions and
//! refresh tokens are sealed rows: spending a token verifies both MACs and
//! that the token names its session byte for byte. Spending is atomic
//! across nodes: of two uses of one token, one rotates and one is a reuse.

use super::error::StateError;
use super::store::{StateStore, count};
use crate::rows::{Field, RowMac};
use crate::sql::{SqlError, Tx, args};

/// A login session (a refresh-token family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Family id.
    pub family: String,
    /// Who logged in.
    pub subject: String,
    /// The client it was issued to.
    pub client_id: String,
    /// How the user authenticated.
    pub auth_context: String,
    /// The DPoP key (RFC 7638 thumbprint) the session is bound to, if any:
    /// its refresh tokens are then usable only with a proof by that key.
    pub jkt: Option<String>,
    /// The audience its access tokens are issued for (`None`: the server's).
    pub audience: Option<String>,
}

/// What presenting a refresh token amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now spent: issue the next pair in this session.
    Rotated(Session),
    /// Already spent before: a copy is in someone else's hands. The caller
    /// must revoke the whole family.
    Reused(Session),
    /// Unknown, expired, or its session ended.
    Invalid,
    /// The session is bound to a DPoP key and the request proved another
    /// one, or none. The refresh token is not spent: whoever holds the key
    /// can still use it.
    WrongKey(Session),
}

/// What a `sessions` row's MAC covers (not `revoked_at`: ending a session
/// is no forgery).
pub(super) fn session_fields(s: &Session, created_at: i64) -> [Field<'_>; 7] {
    [
        (&s.family).into(),
        (&s.subject).into(),
        (&s.client_id).into(),
        (&s.auth_context).into(),
        created_at.into(),
        s.jkt.as_deref().into(),
        s.audience.as_deref().into(),
    ]
}

/// What a `refresh_tokens` row's MAC covers (not `used_at`).
pub(super) fn refresh_fields<'a>(
    hash: &'a [u8],
    family: &'a str,
    created_at: i64,
    expires_at: i64,
) -> [Field<'a>; 4] {
    [
        hash.into(),
        family.into(),
        created_at.into(),
        expires_at.into(),
    ]
}

/// The session columns of `sessions s`, in the order [`session_at`] reads.
pub(super) const SESSION_COLUMNS: &str =
    "s.family, s.subject, s.client_id, s.auth_context, s.jkt, s.audience";

/// After [`SESSION_COLUMNS`] and `r.expires_at`: what
/// [`sealed_session`] needs to check both rows' MACs (columns 7 to 11).
const SEAL_COLUMNS: &str = "s.created_at, s.mac, r.family, r.created_at, r.mac";

/// The session and refresh-token expiry of a row of [`SESSION_COLUMNS`],
/// `r.expires_at` and [`SEAL_COLUMNS`], once both MACs verify.
fn sealed_session(
    r: &crate::sql::Row,
    mac: &RowMac,
    hash: &[u8; 32],
) -> Result<(Session, i64), StateError> {
    // A column of the wrong type was not written by tally either.
    let read = || -> Result<_, SqlError> {
        Ok((
            session_at(r, 0)?,
            r.i64(6)?,
            r.i64(7)?,
            r.opt_blob(8)?,
            r.text(9)?,
            r.i64(10)?,
            r.opt_blob(11)?,
        ))
    };
    let (session, expires_at, created_at, session_tag, family, refresh_created_at, refresh_tag) =
        read().map_err(|_| {
            StateError::Tampered("a session or refresh token row of the wrong shape".into())
        })?;
    if !mac.verify(
        "sessions",
        &session_fields(&session, created_at),
        session_tag.as_deref(),
    ) {
        return Err(StateError::Tampered(format!(
            "the session row {:?}",
            session.family
        )));
    }
    // The join paired them; the bytes must agree too (a collation of the
    // database's choosing must not pair a token with another session).
    if !mac.verify(
        "refresh_tokens",
        &refresh_fields(hash, &family, refresh_created_at, expires_at),
        refresh_tag.as_deref(),
    ) || family != session.family
    {
        return Err(StateError::Tampered(format!(
            "a refresh token row of session {family:?}"
        )));
    }
    Ok((session, expires_at))
}

/// Inserts a sealed refresh token.
fn insert_refresh(
    tx: &mut dyn Tx,
    mac: &RowMac,
    hash: &[u8; 32],
    family: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StateError> {
    let tag = mac.tag(
        "refresh_tokens",
        &refresh_fields(hash, family, now, expires_at),
    );
    tx.execute(
        "INSERT INTO refresh_tokens (hash, family, created_at, expires_at, mac) VALUES ($1, $2, $3, $4, $5)",
        args![hash.as_slice(), family, now, expires_at, tag],
    )?;
    Ok(())
}

/// A [`Session`] from six columns starting at `i` (see [`SESSION_COLUMNS`]).
pub(super) fn session_at(r: &crate::sql::Row, i: usize) -> Result<Session, SqlError> {
    Ok(Session {
        family: r.text(i)?,
        subject: r.text(i + 1)?,
        client_id: r.text(i + 2)?,
        auth_context: r.text(i + 3)?,
        jkt: r.opt_text(i + 4)?,
        audience: r.opt_text(i + 5)?,
    })
}

impl StateStore {
    /// Starts a session with its first refresh token (stored only as a hash).
    pub fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8; 32],
        refresh_expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        let mac = self.mac()?;
        let session = session.clone();
        let refresh_hash = *refresh_hash;
        self.db.write(move |tx| {
            let tag = mac.tag("sessions", &session_fields(&session, now));
            tx.execute(
                "INSERT INTO sessions (family, subject, client_id, auth_context, created_at, jkt, audience, mac)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &session.family,
                    &session.subject,
                    &session.client_id,
                    &session.auth_context,
                    now,
                    session.jkt.clone(),
                    session.audience.clone(),
                    tag
                ],
            )?;
            insert_refresh(tx, &mac, &refresh_hash, &session.family, now, refresh_expires_at)
        })
    }

    /// Adds the next refresh token of a live session.
    pub fn add_refresh_token(
        &self,
        family: &str,
        refresh_hash: &[u8; 32],
        expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        let mac = self.mac()?;
        let family = family.to_owned();
        let refresh_hash = *refresh_hash;
        self.db
            .write(move |tx| insert_refresh(tx, &mac, &refresh_hash, &family, now, expires_at))
    }

    /// Records that access token `token_id` belongs to session `family`.
    pub fn add_session_token(
        &self,
        family: &str,
        token_id: &str,
        token_sha256: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StateError> {
        let (family, token_id) = (family.to_owned(), token_id.to_owned());
        let token_sha256 = *token_sha256;
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO session_tokens (token_id, family, token_sha256, expires_at) VALUES ($1, $2, $3, $4)",
                args![token_id, family, token_sha256.as_slice(), expires_at],
            )?;
            Ok(())
        })
    }

    /// Spends a refresh token, atomically: of two concurrent uses of the same
    /// token, exactly one is `Rotated` and the other is `Reused` (also across
    /// nodes sharing a PostgreSQL database: writers are serialised).
    pub fn use_refresh_token(
        &self,
        hash: &[u8; 32],
        proven_jkt: Option<&str>,
        now: i64,
    ) -> Result<RefreshUse, StateError> {
        let mac = self.mac()?;
        let hash = *hash;
        let proven_jkt = proven_jkt.map(str::to_owned);
        self.noticed(self.db.write(move |tx| {
            let Some(r) = tx.query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS}, r.expires_at, {SEAL_COLUMNS}, r.used_at, s.revoked_at
                     FROM refresh_tokens r JOIN sessions s ON s.family = r.family WHERE r.hash = $1"
                ),
                args![hash.as_slice()],
            )?
            else {
                return Ok(RefreshUse::Invalid);
            };
            let (session, expires_at) = sealed_session(&r, &mac, &hash)?;
            let used_at = r.opt_i64(12)?;
            let revoked_at = r.opt_i64(13)?;
            if used_at.is_some() {
                return Ok(RefreshUse::Reused(session));
            }
            if revoked_at.is_some() || now >= expires_at {
                return Ok(RefreshUse::Invalid);
            }
            if let Some(bound) = session.jkt.as_deref() {
                // A thumbprint of a public key: nothing secret to time.
                if proven_jkt.as_deref() != Some(bound) {
                    return Ok(RefreshUse::WrongKey(session));
                }
            }
            tx.execute(
                "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
                args![hash.as_slice(), now],
            )?;
            Ok(RefreshUse::Rotated(session))
        }))
    }

    /// The session of a refresh token, whether it is still usable.
    pub fn refresh_token_status(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<(Session, i64, bool)>, StateError> {
        let mac = self.mac()?;
        let hash = *hash;
        self.noticed(self.db.read(move |tx| {
            let Some(r) = tx.query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS}, r.expires_at, {SEAL_COLUMNS},
                            CASE WHEN r.used_at IS NULL AND s.revoked_at IS NULL AND r.expires_at > $2
                                 THEN 1 ELSE 0 END
                     FROM refresh_tokens r JOIN sessions s ON s.family = r.family WHERE r.hash = $1"
                ),
                args![hash.as_slice(), now],
            )?
            else {
                return Ok(None);
            };
            let (session, expires_at) = sealed_session(&r, &mac, &hash)?;
            Ok(Some((session, expires_at, r.i64(12)? != 0)))
        }))
    }

    /// The session an access token belongs to.
    pub fn session_of_token(&self, token_id: &str) -> Result<Option<String>, StateError> {
        let token_id = token_id.to_owned();
        self.db.read(move |tx| {
            Ok(tx
                .query_opt(
                    "SELECT family FROM session_tokens WHERE token_id = $1",
                    args![token_id],
                )?
                .map(|r| r.text(0))
                .transpose()?)
        })
    }

    /// Ends a session: its refresh tokens stop working and its unexpired
    /// access tokens are revoked, in one transaction. Returns how many access
    /// tokens were newly revoked (0 if it had already ended).
    pub fn revoke_session(
        &self,
        family: &str,
        reason: &str,
        now: i64,
    ) -> Result<usize, StateError> {
        let (family, reason) = (family.to_owned(), reason.to_owned());
        self.db.write(move |tx| {
            tx.execute(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE family = $1 AND revoked_at IS NULL",
                args![&family, now, &reason],
            )?;
            let n = tx.execute(
                "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                 SELECT token_id, token_sha256, expires_at, $2, $3 FROM session_tokens
                 WHERE family = $1 AND expires_at > $2
                 ON CONFLICT (token_id) DO NOTHING",
                args![family, now, reason],
            )?;
            Ok(count(n))
        })
    }
}
