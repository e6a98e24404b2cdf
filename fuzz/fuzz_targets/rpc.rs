#![no_main]
// One input of the `rpc` target: see quorum_bdev::fuzzing.
libfuzzer_sys::fuzz_target!(|data: &[u8]| quorum_bdev::fuzzing::rpc::fuzz_rpc_stream(data));
