//! Signed notes and checkpoints ([`tally_core::note`]): the note grammar,
//! signature lines, checkpoint bodies and verifier keys.
//!
//! Input modes, by first byte:
//! * `s` then a text: the harness signs the text as a note, so the fuzzer
//!   explores checkpoint bodies behind a valid signature;
//! * `v` then a verifier key (`name+hash+key`) to parse;
//! * anything else: the whole input is a signed note (and a checkpoint
//!   body) to parse.

use tally_core::note::{Checkpoint, NoteVerifier, SignedCheckpoint};

use crate::keys;

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = keys::note_verifier();
    match text.split_at_checked(1) {
        Some(("s", body)) => {
            if let Ok(note) = keys::note_signer().sign(body) {
                let opened = verifier.open(&note).expect("a note we signed opens");
                assert_eq!(
                    opened.text(),
                    body,
                    "the opened text differs from what was signed"
                );
                let as_checkpoint = SignedCheckpoint::verify(&note, &verifier);
                match Checkpoint::parse(body) {
                    Ok(cp) if cp.origin == keys::NOTE_ORIGIN => {
                        let signed = as_checkpoint.expect("a signed checkpoint verifies");
                        assert_eq!(signed.checkpoint(), &cp);
                    }
                    _ => assert!(as_checkpoint.is_err(), "a bad checkpoint body verified"),
                }
            }
            checkpoint(body);
        }
        Some(("v", vkey)) => {
            if let Ok(v) = NoteVerifier::from_verifier_key(vkey) {
                // Written out again, the key reads back as the same key, and
                // only the hash's hexadecimal case may differ (Go's
                // sumdb/note reads upper-case hash digits too).
                let canonical = v.verifier_key();
                let again = NoteVerifier::from_verifier_key(&canonical).expect("canonical key");
                assert_eq!(
                    (again.name(), again.key_hash(), again.public_key()),
                    (v.name(), v.key_hash(), v.public_key())
                );
                // name+hash+keydata: names hold no `+`, base64 key data may.
                let parts =
                    |k: &str| -> Vec<String> { k.splitn(3, '+').map(str::to_owned).collect() };
                let (have, want) = (parts(vkey), parts(&canonical));
                assert_eq!(have.len(), 3);
                assert_eq!(have[0], want[0], "key name differs");
                assert!(have[1].eq_ignore_ascii_case(&want[1]), "key hash differs");
                assert_eq!(have[2], want[2], "key data is not canonical base64");
            }
        }
        _ => {
            if let Ok(opened) = verifier.open(text) {
                // Only a note whose signature line verifies under our key opens.
                assert!(text.starts_with(opened.text()));
            }
            let _ = SignedCheckpoint::verify(text, &verifier);
            checkpoint(text);
        }
    }
}

/// A checkpoint body that parses is in canonical form: writing it out gives
/// the same text.
fn checkpoint(text: &str) {
    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(
            cp.to_text().as_deref(),
            Ok(text),
            "checkpoint text is not canonical"
        );
    }
}
