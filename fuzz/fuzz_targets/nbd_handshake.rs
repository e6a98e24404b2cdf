#![no_main]
// One input of the `nbd_handshake` target: see quorum_bdev::fuzzing.
libfuzzer_sys::fuzz_target!(|data: &[u8]| quorum_bdev::fuzzing::nbd::fuzz_handshake(data));
