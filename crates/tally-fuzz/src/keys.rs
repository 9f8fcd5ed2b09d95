//! Fixed keys the harness signs with. They are derived from constant seeds,
//! so a seed corpus that names them (a DPoP proof's `jwk`, a JWS `kid`) stays
//! valid from run to run. They protect nothing.

use std::sync::OnceLock;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tally_core::jose::{KeySet, VerifyingKey};
use tally_core::note::{NoteSigner, NoteVerifier};

/// The `kid` under which the JWS key is trusted.
pub const KID: &str = "fuzz";
/// The name of the checkpoint-signing key (and so the checkpoints' origin).
pub const NOTE_ORIGIN: &str = "tally.example/fuzz";

struct Keys {
    pair: Ed25519KeyPair,
    verifying: VerifyingKey,
    set: KeySet,
    note: NoteSigner,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[0x5a; 32]).expect("a 32-byte seed");
        let jwk = serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        let verifying = VerifyingKey::from_jwk(&jwk).expect("a valid Ed25519 JWK");
        let mut set = KeySet::new();
        set.insert(verifying.clone().with_kid(KID.into()));
        let note = NoteSigner::from_seed(NOTE_ORIGIN, &[0xa5; 32]).expect("a valid key name");
        Keys {
            pair,
            verifying,
            set,
            note,
        }
    })
}

/// Signs `input` with the Ed25519 key.
pub fn sign(input: &[u8]) -> Vec<u8> {
    keys().pair.sign(input).as_ref().to_vec()
}

/// The Ed25519 key's public JWK (without `kid`).
pub fn jwk() -> serde_json::Value {
    keys().verifying.to_jwk()
}

/// The RFC 7638 thumbprint of [`jwk`].
pub fn thumbprint() -> String {
    keys().verifying.thumbprint()
}

/// The key set a JWS is verified against: the Ed25519 key as [`KID`].
pub fn key_set() -> &'static KeySet {
    &keys().set
}

/// The checkpoint signer, named [`NOTE_ORIGIN`].
pub fn note_signer() -> &'static NoteSigner {
    &keys().note
}

/// The verifier of [`note_signer`].
pub fn note_verifier() -> NoteVerifier {
    keys().note.verifier()
}

/// `base64url(header) . base64url(payload) . base64url(signature)`, signed
/// with the Ed25519 key.
pub fn compact(header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}
