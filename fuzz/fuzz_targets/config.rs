#![no_main]
// One input of the `config` target: see quorum_bdev::fuzzing.
libfuzzer_sys::fuzz_target!(|data: &[u8]| quorum_bdev::fuzzing::config::fuzz_config_file(data));
