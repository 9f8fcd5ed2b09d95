//! One token: sessions, key generation inside it, finding keys again by
//! `CKA_ID`, and signing with every signature checked against the public key.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tally_core::jose::{Algorithm, VerifyingKey};

use super::error::{HsmError, ck};
use super::module::Lease;
use crate::config::Pkcs11Config;

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

/// base64url without padding, as JOSE writes it.
pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
