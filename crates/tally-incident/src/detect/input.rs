//! What the detector is fed: an [`Observation`] per access decision, and a
//! [`Signal`] for each fact raised outside the gate.
//!
//! An observation borrows from the access event it describes (no copy on
//! the hot path); times are unix seconds, given by the caller.

/// One access decision as the detector sees it.
#[derive(Clone, Debug, Default)]
pub struct Observation<'a> {
    /// Unix seconds.
    pub at: i64,
    /// Client address.
    pub client_ip: Option<&'a str>,
    /// Device id.
    pub device: Option<&'a str>,
    /// Token subject (for refused tokens only when the signature verified).
    pub subject: Option<&'a str>,
    /// Token id.
    pub token_id: Option<&'a str>,
    /// Signing key id.
    pub kid: Option<&'a str>,
    /// Route.
    pub route: &'a str,
    /// The verdict's stable code.
    pub verdict: &'a str,
    /// The refusal's detail, if any (e.g. [`tally_core::gate::ECDSA_TWIN`]).
    pub detail: Option<&'a str>,
    /// For a request refused before its token decided anything (a blocked
    /// address): what the token alone got.
    pub examined: Option<tally_core::gate::Examined>,
    /// A third party asked about the token (a resource server introspecting
    /// it): the caller's address and device say nothing about where the
    /// token is used, so they are not counted against it (`mass_access`,
    /// `token_replay`). A forgery it reveals is one all the same.
    pub inquiry: bool,
}

impl Observation<'_> {
    /// Whether the request carried a token that proves a signing key is in
    /// the wrong hands, whatever it was refused for
    /// ([`tally_core::gate::proves_stolen_key`]).
    pub fn carries_forgery(&self) -> bool {
        tally_core::gate::proves_stolen_key(self.verdict, self.detail)
            || self.examined.is_some_and(|e| e.proves_stolen_key())
    }

    /// The verdict of the token itself: the examined one for a request
    /// refused by containment first, else the request's.
    pub fn token_verdict(&self) -> &str {
        self.examined.map_or(self.verdict, |e| e.verdict.code())
    }
}

/// A fact raised outside the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Issuance asked for a subject that is not in the directory.
    UnknownSubject {
        /// The subject asked for.
        subject: String,
        /// Who asked (client id or issuer).
        requested_by: String,
    },
    /// A spent refresh token was presented again; the session was revoked.
    RefreshReuse {
        /// The session's subject.
        subject: String,
        /// The session (family) id.
        session: String,
    },
    /// A key's signature count and the ledger disagree.
    SignerLedgerMismatch {
        /// The key.
        kid: String,
        /// Signatures counted.
        signed: u64,
        /// Records in the ledger.
        recorded: u64,
    },
    /// The ledger's stored history no longer verifies.
    LedgerTampered {
        /// What was found.
        detail: String,
    },
    /// A state row that grants access (user, client, session, refresh
    /// token) fails its MAC: someone wrote it without the master key.
    StateTampered {
        /// Which row.
        detail: String,
    },
    /// The active key is past its maximum age.
    KeyTooOld {
        /// The key.
        kid: String,
        /// Its age in seconds.
        age_secs: i64,
    },
    /// A key guarded by an offboarded custodian still signs.
    DepartedCustodianKey {
        /// The key.
        kid: String,
        /// The custodian.
        custodian: String,
    },
    /// The access log's budget bit: refusals were counted, not written one
    /// by one (every one is still accounted for).
    AccessFlood {
        /// Refusals counted because the byte budget was spent.
        for_bytes: u64,
        /// Refusals counted because the writer's queue was full.
        for_queue: u64,
        /// Refusals counted per verdict because too many actors came at once.
        for_actors: u64,
    },
}
