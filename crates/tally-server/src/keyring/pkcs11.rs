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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::config::Pkcs11Config;
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde_json::{Map, Value};
use tally_core::jose::{Algorithm, MAX_TOKEN_BYTES, VerifyingKey};

/// DER of the Ed25519 curve OID 1.3.101.112 (RFC 8410), the `CKA_EC_PARAMS`
/// SoftHSM2 requires for Ed25519.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of the PKCS#11 3.0 curve name `PrintableString "edwards25519"`, which
/// some tokens report instead of the OID (accepted when reading keys only).
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
/// DER of the P-256 curve OID 1.2.840.10045.3.1.7 (`prime256v1`).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Length of the random `CKA_ID` given to generated keys.
const KEY_ID_LEN: usize = 16;
/// Most sessions opened per token; signing uses whichever is free.
const MAX_SESSIONS: usize = 4;
/// Message signed to prove that a public-key object matches its private key.
const PAIRING_CHECK: &[u8] = b"tally/pkcs11/pairing-check/v1";

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
fn ck(op: &'static str) -> impl FnOnce(CkError) -> HsmError {
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

/// One loaded module and how many [`Hsm`]s use it.
struct Module {
    ctx: Pkcs11,
    users: usize,
    /// Whether this module's `C_Initialize` was ours (and so the last user
    /// finalizes it); `false` when something else in the process had
    /// initialized it already.
    finalize_when_unused: bool,
}

/// Loaded modules by canonical path. Never shrinks: unloading a module that
/// registered exit handlers can crash the process later.
static MODULES: Mutex<Option<HashMap<PathBuf, Module>>> = Mutex::new(None);

fn modules() -> MutexGuard<'static, Option<HashMap<PathBuf, Module>>> {
    // The map is consistent after every statement, so a panic elsewhere while
    // holding the lock leaves nothing half-done.
    MODULES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One [`Hsm`]'s use of a module; dropping it finalizes the module when it
/// was the last user.
struct Lease {
    path: PathBuf,
    ctx: Pkcs11,
}

impl Lease {
    /// Loads (once per process) and initializes the module at `path`.
    fn acquire(configured: &Path) -> Result<Lease, HsmError> {
        let not_found = |why| HsmError::ModuleNotFound {
            path: configured.to_owned(),
            why,
        };
        if !configured.is_absolute() {
            return Err(not_found("the path must be absolute"));
        }
        let path = configured
            .canonicalize()
            .map_err(|_| not_found("no such file"))?;
        if !path.is_file() {
            return Err(not_found("not a file"));
        }
        let invalid = |detail: String| HsmError::ModuleInvalid {
            path: configured.to_owned(),
            detail,
        };
        let mut guard = modules();
        let map = guard.get_or_insert_with(HashMap::new);
        if !map.contains_key(&path) {
            let ctx = Pkcs11::new(&path).map_err(|e| invalid(format!("{e}")))?;
            map.insert(
                path.clone(),
                Module {
                    ctx,
                    users: 0,
                    finalize_when_unused: false,
                },
            );
        }
        let module = map
            .get_mut(&path)
            .ok_or_else(|| invalid("module registry lost the module".to_owned()))?;
        if module.users == 0 {
            match module
                .ctx
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            {
                Ok(()) => module.finalize_when_unused = true,
                Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    module.finalize_when_unused = false;
                }
                Err(e) => return Err(invalid(format!("C_Initialize: {e:?}"))),
            }
        }
        module.users += 1;
        Ok(Lease {
            path,
            ctx: module.ctx.clone(),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut guard = modules();
        let Some(module) = guard.as_mut().and_then(|m| m.get_mut(&self.path)) else {
            return;
        };
        module.users = module.users.saturating_sub(1);
        if module.users == 0 && module.finalize_when_unused {
            module.finalize_when_unused = false;
            if let Err(e) = module.ctx.clone().finalize() {
                tracing::warn!(module = %self.path.display(), error = ?e, "PKCS#11 C_Finalize failed");
            }
        }
    }
}

/// Distinguishes [`Hsm`] instances, so a [`HsmKey`] is only used with the
/// connection whose object handle it holds.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// An open PKCS#11 token: the module, a few logged-in sessions, the token's
/// mechanisms. `Send + Sync`; signing takes a free session (or waits for
/// one). Dropping it closes the sessions, which logs out, and finalizes the
/// module if this was its last user in the process.
pub struct Hsm {
    // Field order matters: the sessions close before the lease finalizes.
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    mechanisms: Vec<MechanismType>,
    instance: u64,
    slot: u64,
    token_label: String,
    lease: Lease,
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.lease.path)
            .field("slot", &self.slot)
            .field("token_label", &self.token_label)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the module, selects the token, opens sessions and logs in as the
    /// user with the PIN from the environment variable `cfg.pin_env`.
    ///
    /// # Errors
    /// [`HsmError::ModuleNotFound`], [`HsmError::ModuleInvalid`],
    /// [`HsmError::PinMissing`], [`HsmError::SlotNotFound`],
    /// [`HsmError::PinIncorrect`], [`HsmError::Locked`], [`HsmError::InUse`],
    /// [`HsmError::Failure`].
    pub fn open(cfg: &Pkcs11Config) -> Result<Hsm, HsmError> {
        let lease = Lease::acquire(&cfg.module)?;
        let pin = match std::env::var(&cfg.pin_env) {
            Ok(pin) if !pin.is_empty() => AuthPin::from(pin),
            _ => {
                return Err(HsmError::PinMissing {
                    var: cfg.pin_env.clone(),
                });
            }
        };
        let (slot, token_label) = select_slot(&lease.ctx, cfg)?;
        let info = lease
            .ctx
            .get_token_info(slot)
            .map_err(ck("C_GetTokenInfo"))?;
        if info.user_pin_locked() || !info.user_pin_initialized() {
            return Err(HsmError::Locked);
        }
        let mechanisms = lease
            .ctx
            .get_mechanism_list(slot)
            .map_err(ck("C_GetMechanismList"))?;
        let first = lease
            .ctx
            .open_rw_session(slot)
            .map_err(ck("C_OpenSession"))?;
        first
            .login(UserType::User, Some(&pin))
            .map_err(ck("C_Login"))?;
        drop(pin);
        let wanted = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_SESSIONS);
        let mut sessions = vec![Mutex::new(first)];
        while sessions.len() < wanted {
            // Sessions opened after the login share the token's login state.
            match lease.ctx.open_rw_session(slot) {
                Ok(s) => sessions.push(Mutex::new(s)),
                // A token with a small session limit: work with what we have.
                Err(_) => break,
            }
        }
        tracing::info!(
            module = %lease.path.display(),
            slot = slot.id(),
            token = %token_label,
            sessions = sessions.len(),
            "PKCS#11 token open"
        );
        Ok(Hsm {
            sessions,
            next: AtomicUsize::new(0),
            mechanisms,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            slot: slot.id(),
            token_label,
            lease,
        })
    }

    /// The slot id of the open token.
    #[must_use]
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// The label of the open token.
    #[must_use]
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// Runs `f` on a free session, or waits for one.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        for session in &self.sessions {
            if let Ok(guard) = session.try_lock() {
                return f(&guard);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len().max(1);
        let session = self.sessions.get(i).ok_or(HsmError::Failure {
            op: "session pool",
            detail: "no session".to_owned(),
        })?;
        // A panic inside `f` cannot leave an operation half-started: every
        // cryptoki call used here is a complete init-and-finish pair.
        let guard = session.lock().unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    }

    fn require(&self, mechanism: MechanismType, name: &'static str) -> Result<(), HsmError> {
        if self.mechanisms.contains(&mechanism) {
            Ok(())
        } else {
            Err(HsmError::UnsupportedMechanism(name))
        }
    }

    /// Generates a key pair for `alg` inside the token: persistent
    /// (`CKA_TOKEN`), private key sensitive, non-extractable and sign-only,
    /// both objects labelled `label` and identified by a fresh random
    /// 16-byte `CKA_ID`. The protection is read back and the pair proven by a
    /// test signature; a pair that fails either check is destroyed.
    ///
    /// # Errors
    /// [`HsmError::UnsupportedAlgorithm`] for `RS256`,
    /// [`HsmError::UnsupportedMechanism`], [`HsmError::KeyNotProtected`],
    /// [`HsmError::KeyMismatch`], [`HsmError::Failure`].
    pub fn generate(&self, alg: Algorithm, label: &str) -> Result<HsmKey, HsmError> {
        let (mechanism, key_type, params) = match alg {
            Algorithm::EdDSA => {
                self.require(
                    MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                    "CKM_EC_EDWARDS_KEY_PAIR_GEN",
                )?;
                self.require(MechanismType::EDDSA, "CKM_EDDSA")?;
                (
                    Mechanism::EccEdwardsKeyPairGen,
                    KeyType::EC_EDWARDS,
                    ED25519_OID,
                )
            }
            Algorithm::ES256 => {
                self.require(MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN")?;
                self.require(MechanismType::ECDSA, "CKM_ECDSA")?;
                (Mechanism::EccKeyPairGen, KeyType::EC, P256_OID)
            }
            other => return Err(HsmError::UnsupportedAlgorithm(other)),
        };
        let mut id = vec![0u8; KEY_ID_LEN];
        SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| HsmError::Failure {
                op: "key id",
                detail: "the system random source failed".to_owned(),
            })?;
        let label = label.as_bytes().to_vec();
        let public_template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Id(id.clone()),
            Attribute::Label(label.clone()),
        ];
        let private_template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label),
        ];
        self.with_session(|session| {
            let (public, private) = session
                .generate_key_pair(&mechanism, &public_template, &private_template)
                .map_err(ck(match alg {
                    Algorithm::EdDSA => "Ed25519 key generation (CKM_EC_EDWARDS_KEY_PAIR_GEN)",
                    _ => "P-256 key generation (CKM_EC_KEY_PAIR_GEN)",
                }))?;
            match self.load_pair(session, id, public, private) {
                Ok(key) => Ok(key),
                Err(e) => {
                    // Never leave a key behind that tally refused to use.
                    for object in [private, public] {
                        if let Err(d) = session.destroy_object(object) {
                            tracing::warn!(error = ?d, "could not destroy a refused PKCS#11 key");
                        }
                    }
                    Err(e)
                }
            }
        })
    }

    /// Finds the key pair whose objects have `CKA_ID` `id` (after a restart,
    /// say), with the same checks as [`Hsm::generate`].
    ///
    /// # Errors
    /// [`HsmError::KeyNotFound`] unless exactly one private and one public key
    /// carry the id, [`HsmError::UnsupportedKey`],
    /// [`HsmError::KeyNotProtected`], [`HsmError::KeyMismatch`],
    /// [`HsmError::Failure`].
    pub fn find(&self, id: &[u8]) -> Result<HsmKey, HsmError> {
        if id.is_empty() {
            return Err(HsmError::KeyNotFound("empty id"));
        }
        self.with_session(|session| {
            let one = |class: ObjectClass, what: &'static str| {
                let found = session
                    .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
                    .map_err(ck("C_FindObjects"))?;
                match found.as_slice() {
                    [one] => Ok(*one),
                    [] => Err(HsmError::KeyNotFound(what)),
                    _ => Err(HsmError::KeyNotFound("several objects share the id")),
                }
            };
            let private = one(ObjectClass::PRIVATE_KEY, "no private key")?;
            let public = one(ObjectClass::PUBLIC_KEY, "no public key")?;
            self.load_pair(session, id.to_vec(), public, private)
        })
    }

    /// Reads and checks a key pair: protection of the private key, type and
    /// curve, the public point, and a test signature.
    fn load_pair(
        &self,
        session: &Session,
        id: Vec<u8>,
        public: ObjectHandle,
        private: ObjectHandle,
    ) -> Result<HsmKey, HsmError> {
        let attrs = session
            .get_attributes(
                private,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Sign,
                ],
            )
            .map_err(ck("C_GetAttributeValue"))?;
        let (mut key_type, mut flags) = (None, [None; 5]);
        for attr in attrs {
            match attr {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Sensitive(v) => flags[0] = Some(v),
                Attribute::AlwaysSensitive(v) => flags[1] = Some(v),
                Attribute::Extractable(v) => flags[2] = Some(v),
                Attribute::NeverExtractable(v) => flags[3] = Some(v),
                Attribute::Sign(v) => flags[4] = Some(v),
                _ => {}
            }
        }
        match flags {
            [Some(true), Some(true), Some(false), Some(true), Some(true)] => {}
            [_, _, _, _, Some(true)] => {
                return Err(HsmError::KeyNotProtected(
                    "it must be sensitive, always sensitive, not extractable and never extractable",
                ));
            }
            _ => return Err(HsmError::UnsupportedKey("the private key cannot sign")),
        }

        let attrs = session
            .get_attributes(
                public,
                &[
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .map_err(ck("C_GetAttributeValue"))?;
        let (mut public_type, mut params, mut point) = (None, None, None);
        for attr in attrs {
            match attr {
                Attribute::KeyType(t) => public_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        if key_type.is_none() || key_type != public_type {
            return Err(HsmError::UnsupportedKey(
                "public and private key types differ",
            ));
        }
        let params = params.ok_or(HsmError::UnsupportedKey("no CKA_EC_PARAMS"))?;
        let point = point.ok_or(HsmError::UnsupportedKey("no CKA_EC_POINT"))?;
        let (alg, raw, jwk) = if key_type == Some(KeyType::EC_EDWARDS)
            && (params == ED25519_OID || params == ED25519_NAME)
        {
            let x = ec_point(&point, 32)?;
            let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)});
            (Algorithm::EdDSA, x.to_vec(), jwk)
        } else if key_type == Some(KeyType::EC) && params == P256_OID {
            let xy = ec_point(&point, 65)?;
            let (x, y) = match xy {
                [0x04, rest @ ..] => rest.split_at(32),
                _ => return Err(HsmError::UnsupportedKey("P-256 point is not uncompressed")),
            };
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)});
            (Algorithm::ES256, xy.to_vec(), jwk)
        } else {
            return Err(HsmError::UnsupportedKey(
                "only Ed25519 and P-256 keys are supported",
            ));
        };
        let verifying = VerifyingKey::from_jwk(&jwk)
            .map_err(|_| HsmError::UnsupportedKey("the token's public key is invalid"))?;
        let key = HsmKey {
            id,
            alg,
            public: verifying,
            handle: private,
            instance: self.instance,
            point: raw,
        };
        sign_with(session, &key, PAIRING_CHECK)?;
        Ok(key)
    }

    /// Signs `message` with `key` inside the token and returns the JWS
    /// signature: 64 bytes for both algorithms (`ES256` as `r || s`). The
    /// signature is verified against the key's public key before it is
    /// returned.
    ///
    /// # Errors
    /// [`HsmError::StaleKey`] for a key from another [`Hsm`],
    /// [`HsmError::KeyMismatch`], [`HsmError::Failure`].
    pub fn sign(&self, key: &HsmKey, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        if key.instance != self.instance {
            return Err(HsmError::StaleKey);
        }
        self.with_session(|session| sign_with(session, key, message))
    }
}

/// Signs on `session` and checks the result against `key`'s public point.
fn sign_with(session: &Session, key: &HsmKey, message: &[u8]) -> Result<Vec<u8>, HsmError> {
    let signature = match key.alg {
        Algorithm::EdDSA => session
            .sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                key.handle,
                message,
            )
            .map_err(ck("CKM_EDDSA signing"))?,
        Algorithm::ES256 => {
            let hash = digest::digest(&digest::SHA256, message);
            session
                .sign(&Mechanism::Ecdsa, key.handle, hash.as_ref())
                .map_err(ck("CKM_ECDSA signing"))?
        }
        other => return Err(HsmError::UnsupportedAlgorithm(other)),
    };
    let algorithm: &'static dyn VerificationAlgorithm = match key.alg {
        Algorithm::EdDSA => &ED25519,
        _ => &ECDSA_P256_SHA256_FIXED,
    };
    if signature.len() != 64
        || UnparsedPublicKey::new(algorithm, &key.point)
            .verify(message, &signature)
            .is_err()
    {
        return Err(HsmError::KeyMismatch);
    }
    Ok(signature)
}

/// The point inside `CKA_EC_POINT`: the DER `OCTET STRING` PKCS#11 specifies
/// (what SoftHSM2 returns), or the bare point some tokens return; `len` is
/// the bare point's length (32 for Ed25519, 65 for uncompressed P-256).
fn ec_point(value: &[u8], len: usize) -> Result<&[u8], HsmError> {
    match value {
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => Ok(rest),
        bare if bare.len() == len => Ok(bare),
        _ => Err(HsmError::UnsupportedKey("unexpected CKA_EC_POINT encoding")),
    }
}

/// Finds the one slot matching `cfg.slot` and `cfg.token_label`.
fn select_slot(ctx: &Pkcs11, cfg: &Pkcs11Config) -> Result<(Slot, String), HsmError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(ck("C_GetSlotList"))?;
    let mut matches = Vec::new();
    for slot in slots {
        if cfg.slot.is_some_and(|want| want != slot.id()) {
            continue;
        }
        let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        let label = info.label().trim_end().to_owned();
        if cfg.token_label.as_deref().is_some_and(|want| want != label) {
            continue;
        }
        matches.push((slot, label));
    }
    let wanted = match (cfg.slot, cfg.token_label.as_deref()) {
        (Some(slot), Some(label)) => format!("slot {slot} with token label {label:?}"),
        (Some(slot), None) => format!("slot {slot} with an initialized token"),
        (None, Some(label)) => format!("token label {label:?}"),
        (None, None) => "an initialized token".to_owned(),
    };
    let count = matches.len();
    match (matches.pop(), count) {
        (Some(found), 1) => Ok(found),
        (None, _) => Err(HsmError::SlotNotFound(format!("no {wanted}"))),
        _ => Err(HsmError::SlotNotFound(format!(
            "{count} tokens match {wanted}; set slot or token_label"
        ))),
    }
}

/// A key pair in the token: its id, algorithm and public key, and the object
/// handle of the private key in the [`Hsm`] that found or generated it.
#[derive(Clone)]
pub struct HsmKey {
    /// `CKA_ID` of both objects: what to store to find the key again.
    pub id: Vec<u8>,
    /// The one algorithm the key signs with.
    pub alg: Algorithm,
    /// The public key read from the token (its `kid` is the RFC 7638
    /// thumbprint); [`Hsm::sign`] checks signatures against the point it was
    /// built from.
    pub public: VerifyingKey,
    handle: ObjectHandle,
    instance: u64,
    point: Vec<u8>,
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id: String = self.id.iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("HsmKey")
            .field("id", &id)
            .field("alg", &self.alg)
            .field("thumbprint", &self.public.thumbprint())
            .finish_non_exhaustive()
    }
}

/// The header [`sign_jwt`] writes, member order fixed (as
/// `SigningKey::sign_jwt` writes it).
#[derive(serde::Serialize)]
struct OutHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs a JWT with an HSM key exactly as `SigningKey::sign_jwt` does: header
/// `{"alg","kid","typ"}`, `claims` as payload, base64url without padding. The
/// claims are first checked with the rules the JOSE verifier applies, and the
/// token must fit in [`MAX_TOKEN_BYTES`], so every token returned is one
/// `tally_core::jose::verify` accepts under `key.public` (with `kid`).
///
/// # Errors
/// [`HsmError::InvalidClaims`], [`HsmError::TokenTooLarge`], then as
/// [`Hsm::sign`].
pub fn sign_jwt(
    hsm: &Hsm,
    key: &HsmKey,
    kid: &str,
    typ: &str,
    claims: &Map<String, Value>,
) -> Result<String, HsmError> {
    check_claims(claims).map_err(HsmError::InvalidClaims)?;
    let header = serde_json::to_vec(&OutHeader {
        alg: key.alg.name(),
        kid,
        typ,
    })
    .map_err(|_| HsmError::InvalidClaims("header is not serializable"))?;
    let payload =
        serde_json::to_vec(claims).map_err(|_| HsmError::InvalidClaims("not serializable"))?;
    let mut token = b64(&header);
    token.push('.');
    token.push_str(&b64(&payload));
    // Both signatures are 64 bytes, 86 characters.
    if token.len() + 1 + 86 > MAX_TOKEN_BYTES {
        return Err(HsmError::TokenTooLarge);
    }
    let signature = hsm.sign(key, token.as_bytes())?;
    token.push('.');
    token.push_str(&b64(&signature));
    if token.len() > MAX_TOKEN_BYTES {
        return Err(HsmError::TokenTooLarge);
    }
    Ok(token)
}

/// The claim types `tally_core::jose::Claims` requires: `iss`, `sub`, `jti`,
/// `client_id` strings; `aud` a string or an array of strings; `exp`, `nbf`,
/// `iat` integers that fit in `i64`.
fn check_claims(claims: &Map<String, Value>) -> Result<(), &'static str> {
    for (name, err) in [
        ("iss", "iss is not a string"),
        ("sub", "sub is not a string"),
        ("jti", "jti is not a string"),
        ("client_id", "client_id is not a string"),
    ] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(err);
        }
    }
    for (name, err) in [
        ("exp", "exp is not an integer"),
        ("nbf", "nbf is not an integer"),
        ("iat", "iat is not an integer"),
    ] {
        if claims.get(name).is_some_and(|v| v.as_i64().is_none()) {
            return Err(err);
        }
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err("aud is not a string or an array of strings"),
    }
}
