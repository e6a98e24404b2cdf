//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`: seeds captured from real
//! clients and every input that once crashed) through the fuzz entry points, uninstrumented:
//! each input must return, as in a fuzzing run. A panic on any thread aborts the test binary
//! naming the input, like the fuzzer's panic hook; a hang is aborted by the watchdog.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quorum_bdev::fuzzing::TARGETS;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// The input being replayed, for the panic hook.
static REPLAYING: Mutex<String> = Mutex::new(String::new());

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(FUZZ_DIR).join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_returns() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let input = REPLAYING.lock().map(|s| s.clone()).unwrap_or_default();
        eprintln!("crash while replaying {input}");
        std::process::abort();
    }));
    for target in TARGETS {
        let files = inputs(target.name);
        assert!(!files.is_empty(), "no corpus for {}", target.name);
        for file in files {
            *REPLAYING.lock().unwrap() = file.display().to_string();
            (target.run)(&std::fs::read(&file).unwrap());
        }
    }
    let _ = std::fs::remove_dir_all(quorum_bdev::fuzzing::scratch_root());
}

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
            !inputs(target.name).is_empty(),
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
    let seeds: Vec<String> = inputs("rpc")
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
