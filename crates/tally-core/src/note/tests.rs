//! Tests of signed notes and checkpoints: Go's known answers and vectors,
//! hostile input, checkpoint round trips and interop with Go's
//! `golang.org/x/mod/sumdb/note` when a Go toolchain is present.

use super::format::ALG_ED25519;
use super::*;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// Test vectors from golang.org/x/mod/sumdb/note: note_test.go (TestNewSigner,
// TestNewVerifier, TestSign, TestOpen) and example_test.go (ExampleSign,
// ExampleOpen, ExampleSign_add_signatures, whose EnochRoot key comes from
// GenerateKey over an all-zero random source, i.e. an all-zero seed).
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter_seed() -> [u8; 32] {
    let raw = STANDARD
        .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
        .unwrap();
    assert_eq!(raw[0], ALG_ED25519);
    raw[1..].try_into().unwrap()
}

fn peter() -> NoteVerifier {
    NoteVerifier::from_verifier_key(PETER_VKEY).unwrap()
}

fn enoch() -> NoteVerifier {
    NoteVerifier::from_verifier_key(ENOCH_VKEY).unwrap()
}

fn sample_checkpoint(origin: &str) -> Checkpoint {
    Checkpoint {
        origin: origin.to_owned(),
        size: 20_852_163,
        root_hash: core::array::from_fn(|i| i as u8),
        extensions: vec![],
    }
}

// ---- Known answers from Go --------------------------------------------

#[test]
fn go_kat_peter_neumann_key_and_signature() {
    let signer = NoteSigner::from_seed("PeterNeumann", &peter_seed()).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_hash(), 0xc74f_20a3);
    assert_eq!(signer.verifier_key(), PETER_VKEY);
    assert_eq!(signer.verifier(), peter());
    // Ed25519 is deterministic, so the signed note is byte-for-byte Go's
    // ExampleSign / TestSign output.
    assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));

    let from_skey = NoteSigner::from_signer_key(PETER_SKEY).unwrap();
    assert_eq!(from_skey.verifier_key(), PETER_VKEY);
    assert_eq!(
        from_skey.sign(TEXT).unwrap(),
        format!("{TEXT}\n{PETER_SIG}")
    );
}

#[test]
fn go_kat_enoch_root_zero_seed() {
    let signer = NoteSigner::from_seed("EnochRoot", &[0u8; 32]).unwrap();
    assert_eq!(signer.verifier_key(), ENOCH_VKEY);
    assert_eq!(signer.key_hash(), 0xaf0c_fe78);
    assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{ENOCH_SIG}"));
}

#[test]
fn go_example_open() {
    let note = format!("{TEXT}\n{PETER_SIG}");
    let opened = peter().open(&note).unwrap();
    assert_eq!(opened.text(), TEXT);
    assert_eq!(opened.key_name(), "PeterNeumann");
    assert_eq!(opened.key_hash(), 0xc74f_20a3);
    assert!(opened.unverified_signatures().is_empty());
}

#[test]
fn go_test_open_vectors() {
    // One verified, one unverified.
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let opened = peter().open(&both).unwrap();
    assert_eq!(opened.text(), TEXT);
    let unverified = opened.unverified_signatures();
    assert_eq!(unverified.len(), 1);
    assert_eq!(unverified[0].name(), "EnochRoot");
    assert_eq!(unverified[0].key_hash(), 0xaf0c_fe78);
    assert_eq!(
        unverified[0].signature_base64(),
        "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
    );
    // The other key verifies the same note.
    let opened = enoch().open(&both).unwrap();
    assert_eq!(opened.unverified_signatures()[0].name(), "PeterNeumann");

    // Not signed by the verifier's key.
    let only_enoch = format!("{TEXT}\n{ENOCH_SIG}");
    assert_eq!(
        peter().open(&only_enoch).unwrap_err(),
        NoteError::NoVerifiableSignature {
            name: "PeterNeumann".into(),
            key_hash: 0xc74f_20a3
        }
    );

    // Too many signatures (101), and exactly the limit (100).
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert_eq!(
        peter().open(&many).unwrap_err(),
        NoteError::TooManySignatures {
            limit: MAX_SIGNATURES
        }
    );
    assert!(matches!(
        enoch().open(&many).unwrap_err(),
        NoteError::TooManySignatures { .. }
    ));
    let limit = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    assert_eq!(peter().open(&limit).unwrap().text(), TEXT);

    // Invalid signature (valid base64, wrong bytes).
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        peter().open(&bad).unwrap_err(),
        NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_hash: 0xc74f_20a3
        }
    );
    assert_eq!(
        peter().open(&bad).unwrap_err().to_string(),
        "invalid signature for key PeterNeumann+c74f20a3"
    );

    // Duplicated verified and unverified signatures: repeats are dropped.
    let enoch_abcd = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
    let dups = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}{enoch_abcd}");
    let opened = peter().open(&dups).unwrap();
    let names: Vec<_> = opened
        .unverified_signatures()
        .iter()
        .map(|u| u.signature_base64().to_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            ENOCH_SIG["— EnochRoot ".len()..ENOCH_SIG.len() - 1].to_owned(),
            enoch_abcd["— EnochRoot ".len()..enoch_abcd.len() - 1].to_owned(),
        ]
    );

    // Go's "invalid encoded message syntax" list (minus the non-UTF-8 one,
    // which a &str cannot hold).
    let bad_msgs = [
        TEXT.to_owned(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
    ];
    for msg in &bad_msgs {
        let err = peter().open(msg).unwrap_err();
        assert!(
            matches!(
                err,
                NoteError::MalformedNote { .. } | NoteError::ControlCharacter
            ),
            "{msg:?}: {err:?}"
        );
    }

    // A signature by the right name but a different key hash, and by the
    // right hash under a different name, are other keys: ignored.
    let wrong_hash = format!("{TEXT}\n{}", PETER_SIG.replace("x08g", "xxxx"));
    assert!(matches!(
        peter().open(&wrong_hash).unwrap_err(),
        NoteError::NoVerifiableSignature { .. }
    ));
    let misnamed = format!(
        "{TEXT}\n{}",
        PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    );
    let err = peter().open(&misnamed).unwrap_err();
    assert!(matches!(err, NoteError::NoVerifiableSignature { .. }));
}

#[test]
fn go_test_new_verifier_manglings() {
    assert!(NoteVerifier::from_verifier_key(PETER_VKEY).is_ok());
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let s = std::str::from_utf8(&b[i..j]).unwrap();
            assert!(NoteVerifier::from_verifier_key(s).is_err(), "{s:?}");
        }
    }
    let mut m = b.to_vec();
    for i in 0..m.len() {
        m[i] += 1;
        let s = std::str::from_utf8(&m).unwrap();
        assert!(NoteVerifier::from_verifier_key(s).is_err(), "{s:?}");
        m[i] -= 1;
    }
    // Wrong length key and unknown algorithm, each with an adjusted hash.
    assert!(matches!(
        NoteVerifier::from_verifier_key(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(NoteError::MalformedVerifierKey { .. })
    ));
    assert_eq!(
        NoteVerifier::from_verifier_key(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        ),
        Err(NoteError::UnsupportedAlgorithm { algorithm: 0x65 })
    );
    // Upper-case hash digits are accepted, as in Go; output is lower-case.
    let upper =
        NoteVerifier::from_verifier_key(&PETER_VKEY.replace("c74f20a3", "C74F20A3")).unwrap();
    assert_eq!(upper.verifier_key(), PETER_VKEY);
    // Sign prefixes that u32::from_str_radix would accept are not.
    assert!(NoteVerifier::from_verifier_key(&PETER_VKEY.replace("c74f20a3", "+74f20a3")).is_err());
    // Whitespace is not trimmed.
    assert!(NoteVerifier::from_verifier_key(&format!("{PETER_VKEY}\n")).is_err());
    assert!(NoteVerifier::from_verifier_key(&format!(" {PETER_VKEY}")).is_err());
}

#[test]
fn go_test_new_signer_manglings() {
    assert!(NoteSigner::from_signer_key(PETER_SKEY).is_ok());
    let b = PETER_SKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let s = std::str::from_utf8(&b[i..j]).unwrap();
            assert!(NoteSigner::from_signer_key(s).is_err(), "{s:?}");
        }
    }
    let mut m = b.to_vec();
    for i in 0..m.len() {
        m[i] += 1;
        let s = std::str::from_utf8(&m).unwrap();
        assert!(NoteSigner::from_signer_key(s).is_err(), "{s:?}");
        m[i] -= 1;
    }
    assert!(matches!(
        NoteSigner::from_signer_key(
            "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
        ),
        Err(NoteError::KeyHashMismatch {
            claimed: 0xc74f_20a4,
            computed: 0xc74f_20a3
        })
    ));
}

#[test]
fn key_errors_do_not_leak_key_material() {
    let bad = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF";
    let msg = NoteSigner::from_signer_key(bad).unwrap_err().to_string();
    assert!(!msg.contains("AYEKF"), "{msg}");
    let signer = NoteSigner::from_signer_key(PETER_SKEY).unwrap();
    let dbg = format!("{signer:?}");
    assert!(
        dbg.contains("PeterNeumann") && dbg.contains("c74f20a3"),
        "{dbg}"
    );
    assert!(!dbg.contains("AYEKF") && !dbg.contains("810a14"), "{dbg}");
}

// ---- Keys ---------------------------------------------------------------

#[test]
fn key_names_are_validated() {
    for bad in [
        "",
        "a b",
        "a+b",
        "a\tb",
        "a\nb",
        "a\u{a0}b",
        "a\u{2028}b",
        "a\u{1}b",
    ] {
        assert_eq!(
            NoteSigner::from_seed(bad, &[7; 32]).unwrap_err(),
            NoteError::InvalidKeyName,
            "{bad:?}"
        );
        assert!(NoteSigner::generate(bad).is_err());
        assert!(NoteVerifier::from_public_key(bad, &[7; 32]).is_err());
    }
    for good in [
        "example.com/log",
        "tally.example/ledger-2026",
        "ключ",
        "a/b?c=d",
    ] {
        let signer = NoteSigner::from_seed(good, &[7; 32]).unwrap();
        let vkey = signer.verifier_key();
        let verifier = NoteVerifier::from_verifier_key(&vkey).unwrap();
        assert_eq!(verifier.name(), good);
        assert_eq!(verifier, signer.verifier());
        assert_eq!(
            NoteVerifier::from_public_key(good, verifier.public_key()).unwrap(),
            verifier
        );
    }
}

#[test]
fn generate_round_trip() {
    let (signer, seed) = NoteSigner::generate("tally.example/log").unwrap();
    let (other, other_seed) = NoteSigner::generate("tally.example/log").unwrap();
    assert_ne!(*seed, *other_seed);
    assert_ne!(signer.verifier_key(), other.verifier_key());
    let again = NoteSigner::from_seed("tally.example/log", &seed).unwrap();
    assert_eq!(again.verifier_key(), signer.verifier_key());
    let note = signer.sign("hello\n").unwrap();
    assert_eq!(again.sign("hello\n").unwrap(), note);
    assert_eq!(signer.verifier().open(&note).unwrap().text(), "hello\n");
    assert!(matches!(
        other.verifier().open(&note).unwrap_err(),
        NoteError::NoVerifiableSignature { .. }
    ));
}

// ---- Signing ------------------------------------------------------------

#[test]
fn sign_rejects_bad_text() {
    let signer = NoteSigner::from_seed("k", &[1; 32]).unwrap();
    assert!(matches!(
        signer.sign(""),
        Err(NoteError::InvalidText { .. })
    ));
    assert!(matches!(
        signer.sign("no newline"),
        Err(NoteError::InvalidText { .. })
    ));
    for bad in ["a\r\n", "a\tb\n", "\0\n", "esc\x1b[0m\n"] {
        assert_eq!(
            signer.sign(bad),
            Err(NoteError::ControlCharacter),
            "{bad:?}"
        );
    }
    let huge = "a".repeat(MAX_NOTE_BYTES - 10) + "\n";
    assert!(matches!(
        signer.sign(&huge),
        Err(NoteError::TooLarge { .. })
    ));
    // Text with empty lines, a lone newline, and lines that look like
    // signatures all round-trip.
    for text in [
        "\n",
        "a\n\nb\n",
        "a\n\n",
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n",
        "— k AAAA\n",
    ] {
        let note = signer.sign(text).unwrap();
        assert_eq!(signer.verifier().open(&note).unwrap().text(), text);
    }
}

// ---- Hostile notes --------------------------------------------------------

#[test]
fn hostile_notes_are_rejected() {
    let signer = NoteSigner::from_seed("tally.example/log", &[9; 32]).unwrap();
    let v = signer.verifier();
    let good = signer.sign("origin\n1\n").unwrap();
    assert!(v.open(&good).is_ok());
    let (text, sig_line) = good.split_once("\n\n").unwrap();
    let text = format!("{text}\n");
    let b64 = sig_line
        .trim_end_matches('\n')
        .rsplit_once(' ')
        .unwrap()
        .1
        .to_owned();
    let blob = STANDARD.decode(&b64).unwrap();
    let malformed = |note: &str| {
        let err = v.open(note).unwrap_err();
        assert!(
            matches!(err, NoteError::MalformedNote { .. }),
            "{note:?}: {err:?}"
        );
    };

    // Structure.
    malformed("");
    malformed("origin\n1\n");
    malformed(&good.replacen("\n\n", "\n", 1)); // no blank line
    malformed(&format!("{good}\n")); // trailing blank line
    malformed(&good[..good.len() - 1]); // no final newline
    malformed(&good.replace('—', "-")); // hyphen, not em dash
    malformed(&good.replace('—', "–")); // en dash
    malformed(&good.replace("— ", "—")); // no space after the dash
    malformed(&good.replace("— ", "—  ")); // empty name
    malformed(&good.replace(" tally", "  tally"));
    malformed(&good.replace("tally.example/log", "tally example/log"));
    malformed(&good.replace("tally.example/log", "tally+example/log"));
    malformed(&format!("{text}\n— tally.example/log\n")); // no signature
    malformed(&format!("{text}\n— tally.example/log \n")); // empty signature
    malformed(&format!("{text}\n{} \n", sig_line.trim_end())); // trailing space

    // Base64.
    malformed(&format!("{text}\n— tally.example/log {}\n", &b64[1..]));
    malformed(&format!(
        "{text}\n— tally.example/log {}\n",
        b64.trim_end_matches('=')
    ));
    malformed(&format!("{text}\n— tally.example/log {b64}=\n"));
    malformed(&format!("{text}\n— tally.example/log !{}\n", &b64[1..]));
    // Non-canonical base64 (non-zero unused trailing bits): Go accepts
    // this, we do not.
    let last = b64.len() - 2; // 68 bytes: one '=' of padding
    let mut nc = b64.clone().into_bytes();
    let canon = nc[last];
    nc[last] = match canon {
        b'A'..=b'Y' | b'a'..=b'y' | b'0'..=b'8' => canon + 1,
        _ => b'A' + 1,
    };
    let nc = String::from_utf8(nc).unwrap();
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    assert_eq!(lenient.decode(&nc).unwrap(), blob);
    malformed(&format!("{text}\n— tally.example/log {nc}\n"));

    // Too-short signature: just a key hash.
    malformed(&format!(
        "{text}\n— tally.example/log {}\n",
        STANDARD.encode(&blob[..4])
    ));

    // Truncated signature with the right key hash: invalid.
    let truncated = STANDARD.encode(&blob[..4 + 32]);
    assert!(matches!(
        v.open(&format!("{text}\n— tally.example/log {truncated}\n")),
        Err(NoteError::InvalidSignature { .. })
    ));
    // Extended signature: invalid too.
    let mut long = blob.clone();
    long.push(0);
    assert!(matches!(
        v.open(&format!(
            "{text}\n— tally.example/log {}\n",
            STANDARD.encode(&long)
        )),
        Err(NoteError::InvalidSignature { .. })
    ));

    // Wrong key hash: another key, so no verifiable signature.
    let mut other_hash = blob.clone();
    other_hash[0] ^= 1;
    assert!(matches!(
        v.open(&format!(
            "{text}\n— tally.example/log {}\n",
            STANDARD.encode(&other_hash)
        )),
        Err(NoteError::NoVerifiableSignature { .. })
    ));

    // Duplicated good lines are accepted (as Go does); a second line by
    // this key with a bad signature is not (Go would skip it unverified).
    assert!(v.open(&format!("{good}{sig_line}")).is_ok());
    let mut bad_sig = blob.clone();
    bad_sig[10] ^= 1;
    let bad_line = format!("— tally.example/log {}\n", STANDARD.encode(&bad_sig));
    assert!(matches!(
        v.open(&format!("{good}{bad_line}")),
        Err(NoteError::InvalidSignature { .. })
    ));
    assert!(matches!(
        v.open(&format!("{text}\n{bad_line}{sig_line}")),
        Err(NoteError::InvalidSignature { .. })
    ));

    // Control characters anywhere.
    for bad in [
        good.replacen("origin", "ori\rgin", 1),
        good.replacen("origin", "ori\tgin", 1),
        good.replacen("origin", "ori\0gin", 1),
        good.replace('\n', "\r\n"),
        format!("{good}\x1b"),
    ] {
        assert_eq!(v.open(&bad), Err(NoteError::ControlCharacter), "{bad:?}");
    }

    // Over-long note.
    let huge = format!("{}\n{good}", "a".repeat(MAX_NOTE_BYTES));
    assert!(matches!(v.open(&huge), Err(NoteError::TooLarge { .. })));
}

#[test]
fn every_single_byte_change_is_rejected() {
    let signer = NoteSigner::from_seed("log.example", &[3; 32]).unwrap();
    let v = signer.verifier();
    let good = signer.sign("log.example\n42\nAAAA\n").unwrap();
    let bytes = good.as_bytes();
    for i in 0..bytes.len() {
        for replacement in [b'A', b'0', b'\n', b' ', b'+', b'=', b'/', b'a'] {
            if bytes[i] == replacement {
                continue;
            }
            let mut m = bytes.to_vec();
            m[i] = replacement;
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(v.open(s).is_err(), "accepted mutation at {i}: {s:?}");
            }
        }
    }
    for end in 0..bytes.len() {
        if let Ok(s) = std::str::from_utf8(&bytes[..end]) {
            assert!(v.open(s).is_err(), "accepted truncation to {end}");
        }
    }
}

// ---- Checkpoints ----------------------------------------------------------

#[test]
fn checkpoint_spec_example_parses() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::parse(text).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20_852_163);
    assert_eq!(cp.root_hash[..3], [0x0a, 0xc5, 0x18]);
    assert!(cp.extensions.is_empty());
    assert_eq!(cp.to_text().unwrap(), text);
}

#[test]
fn checkpoint_round_trip() {
    let mut cps = vec![
        sample_checkpoint("tally.example/log"),
        Checkpoint {
            origin: "o".into(),
            size: 0,
            root_hash: [0; 32],
            extensions: vec![],
        },
        Checkpoint {
            origin: "o".into(),
            size: u64::MAX,
            root_hash: [0xff; 32],
            extensions: vec!["ext one".into(), "— looks like a sig".into(), "x".into()],
        },
    ];
    cps[0].extensions.push("Timestamp: 1700000000".into());
    for cp in cps {
        let text = cp.to_text().unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 3 + cp.extensions.len());
        assert_eq!(Checkpoint::parse(&text).unwrap(), cp);
    }
    assert_eq!(
        Checkpoint::parse(
            "o\n18446744073709551615\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        )
        .unwrap()
        .size,
        u64::MAX
    );
}

#[test]
fn checkpoint_parse_is_strict() {
    let root = STANDARD.encode([7u8; 32]);
    let ok = format!("o\n5\n{root}\n");
    assert!(Checkpoint::parse(&ok).is_ok());
    let cases: Vec<String> = vec![
        String::new(),
        "\n".into(),
        format!("o\n5\n{root}"),                      // no trailing newline
        format!("\n5\n{root}\n"),                     // empty origin
        "o\n5\n".into(),                              // no root
        "o\n".into(),                                 // no size
        format!("o\n05\n{root}\n"),                   // leading zero
        format!("o\n00\n{root}\n"),                   // leading zero
        format!("o\n+5\n{root}\n"),                   // sign
        format!("o\n-5\n{root}\n"),                   // sign
        format!("o\n5a\n{root}\n"),                   // non-digit
        format!("o\n 5\n{root}\n"),                   // space
        format!("o\n5 \n{root}\n"),                   // space
        format!("o\n0x5\n{root}\n"),                  // hex
        format!("o\n١\n{root}\n"),                    // non-ASCII digit
        format!("o\n\n{root}\n"),                     // empty size
        format!("o\n18446744073709551616\n{root}\n"), // overflow
        format!("o\n99999999999999999999999\n{root}\n"), // overflow
        format!("o\n5\n{}\n", STANDARD.encode([7u8; 31])), // 31 bytes
        format!("o\n5\n{}\n", STANDARD.encode([7u8; 33])), // 33 bytes
        format!("o\n5\n{}\n", root.trim_end_matches('=')), // unpadded
        format!("o\n5\n{}\n", root.replace('B', "-")), // URL-safe alphabet
        format!("o\n5\n{root} \n"),                   // trailing space
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n".into(), // non-canonical
        format!("o\n5\n\n{root}\n"),                  // extra blank line
        format!("o\n5\n{root}\n\n"),                  // trailing blank line
        format!("o\n5\n{root}\n\next\n"),             // empty extension line
        format!("o\n5\n{root}\next"),                 // extension without newline
    ];
    for case in &cases {
        let err = Checkpoint::parse(case).unwrap_err();
        assert!(
            matches!(err, NoteError::MalformedCheckpoint { .. }),
            "{case:?}: {err:?}"
        );
    }
    for case in [
        format!("o\r\n5\n{root}\n"),
        format!("o\n5\r\n{root}\n"),
        format!("o\n5\n{root}\r\n"),
        format!("o\n5\n{root}\nex\tt\n"),
    ] {
        assert_eq!(
            Checkpoint::parse(&case),
            Err(NoteError::ControlCharacter),
            "{case:?}"
        );
    }
    let huge = format!("o\n5\n{root}\n{}\n", "e".repeat(MAX_NOTE_BYTES));
    assert!(matches!(
        Checkpoint::parse(&huge),
        Err(NoteError::TooLarge { .. })
    ));
}

#[test]
fn checkpoint_to_text_rejects_unrepresentable() {
    let mut cp = sample_checkpoint("");
    assert!(matches!(
        cp.to_text(),
        Err(NoteError::MalformedCheckpoint { .. })
    ));
    cp.origin = "a\nb".into();
    assert!(matches!(
        cp.to_text(),
        Err(NoteError::MalformedCheckpoint { .. })
    ));
    cp.origin = "a\rb".into();
    assert_eq!(cp.to_text(), Err(NoteError::ControlCharacter));
    cp.origin = "o".into();
    cp.extensions = vec![String::new()];
    assert!(matches!(
        cp.to_text(),
        Err(NoteError::MalformedCheckpoint { .. })
    ));
    cp.extensions = vec!["a\nb".into()];
    assert!(matches!(
        cp.to_text(),
        Err(NoteError::MalformedCheckpoint { .. })
    ));
    cp.extensions = vec!["a\u{7}".into()];
    assert_eq!(cp.to_text(), Err(NoteError::ControlCharacter));
    cp.extensions = vec!["e".repeat(MAX_NOTE_BYTES)];
    assert!(matches!(cp.to_text(), Err(NoteError::TooLarge { .. })));
}

#[test]
fn signed_checkpoint_sign_and_verify() {
    let (signer, _) = NoteSigner::generate("tally.example/log").unwrap();
    let verifier = NoteVerifier::from_verifier_key(&signer.verifier_key()).unwrap();
    let cp = sample_checkpoint("tally.example/log");
    let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();
    assert_eq!(signed.checkpoint(), &cp);
    assert!(signed.note().starts_with(&cp.to_text().unwrap()));
    let verified = SignedCheckpoint::verify(signed.note(), &verifier).unwrap();
    assert_eq!(verified, signed);

    // A witness cosignature by another key is kept, unverified.
    let (witness, _) = NoteSigner::generate("witness.example").unwrap();
    let wnote = witness.sign(&cp.to_text().unwrap()).unwrap();
    let wline = wnote.split_once("\n\n").unwrap().1;
    let cosigned = format!("{}{wline}", signed.note());
    let verified = SignedCheckpoint::verify(&cosigned, &verifier).unwrap();
    assert_eq!(verified.checkpoint(), &cp);
    assert_eq!(verified.note(), cosigned);
    // ... but the witness alone is not the log.
    assert!(matches!(
        SignedCheckpoint::verify(&wnote, &verifier),
        Err(NoteError::NoVerifiableSignature { .. })
    ));

    // Origin must equal the key name, when signing and when verifying.
    assert_eq!(
        SignedCheckpoint::sign(sample_checkpoint("other.example/log"), &signer),
        Err(NoteError::OriginMismatch {
            key_name: "tally.example/log".into()
        })
    );
    let foreign = signer
        .sign(&sample_checkpoint("other.example/log").to_text().unwrap())
        .unwrap();
    assert_eq!(
        SignedCheckpoint::verify(&foreign, &verifier),
        Err(NoteError::OriginMismatch {
            key_name: "tally.example/log".into()
        })
    );

    // A validly signed note whose text is not a checkpoint.
    let not_cp = signer.sign("tally.example/log\n007\nAAAA\n").unwrap();
    assert!(matches!(
        SignedCheckpoint::verify(&not_cp, &verifier),
        Err(NoteError::MalformedCheckpoint { .. })
    ));

    // Tampering with the size.
    let tampered = signed.note().replacen("20852163", "20852164", 1);
    assert!(matches!(
        SignedCheckpoint::verify(&tampered, &verifier),
        Err(NoteError::InvalidSignature { .. })
    ));

    // Bad checkpoint bodies are refused before signing.
    assert!(
        SignedCheckpoint::sign(
            Checkpoint {
                extensions: vec![String::new()],
                ..sample_checkpoint("tally.example/log")
            },
            &signer
        )
        .is_err()
    );
}

#[test]
fn error_messages_are_stable() {
    assert_eq!(
        NoteError::ControlCharacter.to_string(),
        "input contains an ASCII control character other than newline"
    );
    assert_eq!(
        NoteError::NoVerifiableSignature {
            name: "log".into(),
            key_hash: 0xab
        }
        .to_string(),
        "note has no signature by key log+000000ab"
    );
    assert_eq!(
        NoteError::UnsupportedAlgorithm { algorithm: 2 }.to_string(),
        "unsupported key algorithm 0x02: only Ed25519 (0x01) is supported"
    );
}

// ---- Go interoperability ----------------------------------------------------

/// Where golang.org/x/mod/sumdb/note is found in GOPATH mode (the Debian
/// golang-golang-x-mod-dev package); override with TALLY_GOPATH.
fn gopath() -> PathBuf {
    std::env::var_os("TALLY_GOPATH")
        .map_or_else(|| PathBuf::from("/usr/share/gocode"), PathBuf::from)
}

/// Finds tools/notecheck/main.go: $TALLY_NOTECHECK_GO, else relative to
/// the tally-core crate, else relative to this source file (which works
/// when the module is compiled from elsewhere via an absolute #[path]).
fn locate_notecheck() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TALLY_NOTECHECK_GO") {
        return Some(PathBuf::from(p));
    }
    let from_manifest = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/notecheck/main.go"
    ));
    let from_source = Path::new(file!())
        .parent()
        .map(|src| src.join("../../../../tools/notecheck/main.go"));
    std::iter::once(from_manifest)
        .chain(from_source)
        .find(|p| p.is_file())
}

fn go_command(gocache: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GO111MODULE", "off")
        .env("GOPATH", gopath())
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0");
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", gocache);
    }
    cmd
}

fn run_with_stdin(bin: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn notecheck");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for notecheck")
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn go_sumdb_note_interop() {
    let skip = |why: &str| tally_testkit::skip(why);
    let go_ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_ok {
        return skip("`go` is not on PATH");
    }
    let xmod = gopath().join("src/golang.org/x/mod/sumdb/note/note.go");
    if !xmod.is_file() {
        return skip(&format!("{} not found (set TALLY_GOPATH)", xmod.display()));
    }
    let Some(src) = locate_notecheck() else {
        return skip("tools/notecheck/main.go not found (set TALLY_NOTECHECK_GO)");
    };

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = TempDir(
        std::env::temp_dir().join(format!("tally-notecheck-{}-{nanos}", std::process::id())),
    );
    std::fs::create_dir_all(&tmp.0).unwrap();
    let bin = tmp.0.join("notecheck");
    let build = go_command(&tmp.0.join("gocache"))
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run go build");
    assert!(
        build.status.success(),
        "go build {} failed: {}",
        src.display(),
        String::from_utf8_lossy(&build.stderr)
    );

    let name = "tally.example/interop-log";
    let (signer, seed) = NoteSigner::generate(name).unwrap();
    let vkey = signer.verifier_key();
    let cp = Checkpoint {
        origin: name.to_owned(),
        size: 1_234_567,
        root_hash: [0x5a; 32],
        extensions: vec!["tally ext — ünïcode".to_owned()],
    };
    let text = cp.to_text().unwrap();
    let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();

    // Go accepts the Rust-signed note and recovers the identical text.
    let out = run_with_stdin(&bin, &[&vkey], signed.note());
    assert!(
        out.status.success(),
        "Go rejected a Rust note: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);

    // Go rejects the note with one byte of text changed.
    let tampered = signed.note().replacen("1234567", "1234568", 1);
    assert_ne!(tampered, signed.note());
    let out = run_with_stdin(&bin, &[&vkey], &tampered);
    assert!(!out.status.success(), "Go accepted a tampered note");
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Go rejects a note signed by a different key under the same name.
    let (impostor, _) = NoteSigner::generate(name).unwrap();
    assert_ne!(impostor.key_hash(), signer.key_hash());
    let forged = SignedCheckpoint::sign(cp.clone(), &impostor).unwrap();
    let out = run_with_stdin(&bin, &[&vkey], forged.note());
    assert!(!out.status.success(), "Go accepted an impostor note");
    assert!(out.stdout.is_empty());

    // Go signs with a Go-format signer key from the same seed; Rust
    // verifies it, and (Ed25519 being deterministic) the notes are equal.
    let mut raw = Zeroizing::new(vec![ALG_ED25519]);
    raw.extend_from_slice(seed.as_ref());
    let skey = Zeroizing::new(format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        signer.key_hash(),
        STANDARD.encode(raw.as_slice())
    ));
    assert_eq!(
        NoteSigner::from_signer_key(&skey).unwrap().verifier_key(),
        vkey
    );
    let out = run_with_stdin(&bin, &["-sign", &skey], &text);
    assert!(
        out.status.success(),
        "Go -sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let go_note = String::from_utf8(out.stdout).unwrap();
    let verified = SignedCheckpoint::verify(&go_note, &signer.verifier()).unwrap();
    assert_eq!(verified.checkpoint(), &cp);
    assert_eq!(go_note, signed.note());

    // Go signs with the Go test-vector key; Rust verifies.
    let out = run_with_stdin(&bin, &["-sign", PETER_SKEY], TEXT);
    assert!(out.status.success());
    let go_note = String::from_utf8(out.stdout).unwrap();
    assert_eq!(peter().open(&go_note).unwrap().text(), TEXT);

    // Go agrees with Rust on a multi-signature, multi-paragraph note.
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let out = run_with_stdin(&bin, &[ENOCH_VKEY], &both);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), TEXT);
}
