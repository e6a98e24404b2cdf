//! The fuzz set-up stays whole: every target has its cargo-fuzz binary, source and corpus,
//! and the RPC seeds call every method. Kept apart from the corpus replay
//! (`tests/fuzz_corpus.rs`), whose panic hook aborts its whole test binary.

use std::path::Path;

use quorum_bdev::fuzzing::{corpus_inputs, TARGETS};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// A target is the entry point, a corpus folder, a cargo-fuzz binary and its source: adding
/// one and forgetting a piece would leave it out of `scripts/fuzz` or of this replay.
#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    let manifest = std::fs::read_to_string(Path::new(FUZZ_DIR).join("Cargo.toml")).unwrap();
    for target in TARGETS {
        let source = format!("fuzz_targets/{}.rs", target.name);
        assert!(
            manifest.contains(&format!("name = \"{}\"", target.name))
                && manifest.contains(&format!("path = \"{source}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {}",
            target.name
        );
        assert!(Path::new(FUZZ_DIR).join(&source).exists(), "no {source}");
        assert!(
            !corpus_inputs(target.name).is_empty(),
            "no corpus for {}",
            target.name
        );
    }
}

/// The RPC target reaches a method's params only if some seed calls it: the fuzzer cannot
/// guess method names (a hash lookup gives it no comparison to learn from). A new method
/// needs a seed (`fuzz/seed` records what spdk-rpc sends).
#[test]
fn every_rpc_method_is_called_by_a_seed() {
    let seeds: Vec<String> = corpus_inputs("rpc")
        .iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
        .collect();
    for method in quorum_bdev::control::methods::all() {
        let quoted = format!("\"{}\"", method.name);
        assert!(
            seeds.iter().any(|s| s.contains(&quoted)),
            "no seed in fuzz/corpus/rpc calls {}",
            method.name
        );
    }
}
