//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`: seeds captured from real
//! clients and every input that once crashed) through the fuzz entry points, uninstrumented:
//! each input must return, as in a fuzzing run. A panic on any thread aborts the test binary
//! naming the input, like the fuzzer's panic hook; a hang is aborted by the watchdog.

use std::sync::Mutex;

use quorum_bdev::fuzzing::{corpus_inputs, TARGETS};

/// The input being replayed, for the panic hook.
static REPLAYING: Mutex<String> = Mutex::new(String::new());

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
        let files = corpus_inputs(target.name);
        assert!(!files.is_empty(), "no corpus for {}", target.name);
        for file in files {
            *REPLAYING.lock().unwrap() = file.display().to_string();
            (target.run)(&std::fs::read(&file).unwrap());
        }
    }
    let _ = std::fs::remove_dir_all(quorum_bdev::fuzzing::scratch_root());
}
