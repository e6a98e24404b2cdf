//! The config target: the input is the file given to `quorum-tgt -c`. It is loaded the way
//! the daemon loads it (read, parse, every entry replayed through the RPC methods), and what
//! it built is torn down before the next input. Seeds: `save_config` output and examples.

use std::sync::OnceLock;

use super::{watchdog, Fixture};
use crate::control::config;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::start("config"))
}

/// Loads `data` as a config file; refusing it with an error is the expected outcome for most
/// inputs, anything but returning is a crash.
pub fn fuzz_config_file(data: &[u8]) {
    let f = fixture();
    let _watch = watchdog("config");
    let path = f.scratch().join("config.json");
    std::fs::write(&path, data).expect("scratch config file");
    let _ = config::load_file(&f.ctx, &path);
    f.reset();
}
