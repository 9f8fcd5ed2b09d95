//! Replays every seed corpus file and every regression input under
//! `fuzz/` through the fuzz targets' checks. A crash the fuzzer found is
//! saved in `fuzz/regressions/<target>/` and stays here as a test.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Runs `check` over every file of `dir`, naming the file that panics.
fn replay(target: &str, check: tally_fuzz::Check, dir: &Path) -> usize {
    let files = inputs(dir);
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} breaks a property (cargo +nightly fuzz run {target} {})",
            file.display(),
            file.display()
        );
    }
    files.len()
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in tally_fuzz::TARGETS {
        let n = inputs(&fuzz_dir().join("seeds").join(name)).len();
        assert!(
            n >= 5,
            "fuzz/seeds/{name} holds {n} seeds; every target keeps at least 5"
        );
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(source.is_file(), "no fuzz target {}", source.display());
    }
}

#[test]
fn seed_corpora_hold_every_property() {
    for (name, check) in tally_fuzz::TARGETS {
        replay(name, *check, &fuzz_dir().join("seeds").join(name));
    }
}

#[test]
fn regression_inputs_hold_every_property() {
    for (name, check) in tally_fuzz::TARGETS {
        replay(name, *check, &fuzz_dir().join("regressions").join(name));
    }
}

/// The seeds are worth their name: some of each target's seeds get all the
/// way through the parser (otherwise the properties above would hold
/// vacuously).
#[test]
fn seeds_reach_past_the_parsers() {
    use tally_core::dpop::{DpopPolicy, verify_proof};
    use tally_core::note::{Checkpoint, SignedCheckpoint};
    use tally_fuzz::keys;

    let seeds = |name: &str| -> Vec<Vec<u8>> {
        inputs(&fuzz_dir().join("seeds").join(name))
            .iter()
            .map(|p| std::fs::read(p).expect("readable seed"))
            .collect()
    };
    let count = |name: &str, accepted: &dyn Fn(&[u8]) -> bool| -> usize {
        seeds(name).iter().filter(|d| accepted(d)).count()
    };
    let signed = tally_fuzz::signed;

    let jws = count("jws", &|d| {
        signed(d).is_some_and(|t| tally_core::jose::verify(t.as_bytes(), keys::key_set()).is_ok())
            || tally_core::jose::verify(d, keys::key_set()).is_ok()
    });
    let dpop = count("dpop", &|d| {
        let proof = signed(d).unwrap_or_else(|| String::from_utf8_lossy(d).into_owned());
        verify_proof(
            &proof,
            tally_fuzz::dpop::METHOD,
            tally_fuzz::dpop::URL,
            Some(tally_fuzz::dpop::ACCESS_TOKEN),
            None,
            tally_fuzz::dpop::NOW,
            &DpopPolicy::default(),
        )
        .is_ok()
    });
    let note = count("note", &|d| {
        let text = String::from_utf8_lossy(d);
        match text.strip_prefix('s') {
            Some(body) => Checkpoint::parse(body).is_ok(),
            None => SignedCheckpoint::verify(&text, &keys::note_verifier()).is_ok(),
        }
    });
    let record = count("record", &|d| {
        tally_core::record::IssuanceRecord::decode(d).is_ok()
    });
    let target = count("target", &|d| {
        tally_core::target::RequestTarget::parse(&String::from_utf8_lossy(d)).is_ok()
    });
    let config = count("config", &|d| {
        tally_server::config::Config::from_toml(
            &String::from_utf8_lossy(d),
            tally_server::config::Overrides::default(),
        )
        .is_ok()
    });
    for (name, n) in [
        ("jws", jws),
        ("dpop", dpop),
        ("note", note),
        ("record", record),
        ("target", target),
        ("config", config),
    ] {
        assert!(n >= 2, "only {n} {name} seeds are accepted by the parser");
    }
}
