//! Entry points for coverage-guided fuzzing (`fuzz/`, cargo-fuzz) and for replaying the
//! committed corpus in the test suite. Each target feeds hostile bytes to the same code the
//! daemon runs, on a real runtime: the RPC server on its Unix socket, the config loader on a
//! file, the NBD server on a socketpair. A target returns normally whatever the input; a
//! panic (the fuzzer's panic hook aborts), an abort, or a hang (the [`watchdog`] aborts after
//! [`HANG_LIMIT`]) is a crash.
//!
//! Adding a target: a `pub fn(&[u8])` in a module here, a line in [`TARGETS`], and a
//! three-line file in `fuzz/fuzz_targets/` with its `[[bin]]` entry in `fuzz/Cargo.toml`.

mod client;
pub mod config;
pub mod nbd;
pub mod rpc;
mod watchdog;

use std::path::{Path, PathBuf};

use crate::control::rpc::Ctx;
use crate::runtime::{Runtime, RuntimeOptions};

pub use client::converse;
pub use watchdog::{watchdog, HANG_LIMIT};

/// A fuzz target: its name (the corpus folder and the cargo-fuzz binary) and its entry point.
pub struct Target {
    /// `fuzz/corpus/<name>/`, `cargo fuzz run <name>`.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
}

/// Every target, for `scripts/fuzz` (through cargo-fuzz) and the corpus replay test.
pub const TARGETS: &[Target] = &[
    Target {
        name: "rpc",
        run: rpc::fuzz_rpc_stream,
    },
    Target {
        name: "config",
        run: config::fuzz_config_file,
    },
    Target {
        name: "nbd_handshake",
        run: nbd::fuzz_handshake,
    },
    Target {
        name: "nbd_transmission",
        run: nbd::fuzz_transmission,
    },
];

/// The shutdown bound of [`Fixture::reset`]: well under [`HANG_LIMIT`] for its two waits.
const SHUTDOWN_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// A file the RPC and config seeds name as the backing file of aio and uring bdevs: those
/// inputs reach the file modules instead of stopping at "no such file". Nothing an RPC call
/// or a config entry can do writes to it.
pub const FILE_CHILD: &str = "/tmp/quorum-fuzz-disk";

/// The committed corpus of a target (`fuzz/corpus/<target>/`), sorted: the suite replays it
/// and checks it covers every target and RPC method, so a run on any machine sees the same
/// inputs in the same order.
pub fn corpus_inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus directory entry").path())
        .collect();
    files.sort();
    files
}

/// This process's scratch directories, one per target: `scripts/fuzz` and the corpus replay
/// remove it once the process is gone or done.
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("quorum-fuzz-{}", std::process::id()))
}

/// A runtime of one reactor in interrupt mode (the fuzzer shares the machine) with a scratch
/// directory for the sockets and files a target needs. One per target and process: state a
/// target creates is removed after each input, so an input replays the same way alone.
pub struct Fixture {
    /// The handlers' context.
    pub ctx: Ctx,
    scratch: PathBuf,
}

impl Fixture {
    /// Starts the runtime; `name` keeps the scratch directories of targets apart.
    pub fn start(name: &str) -> Fixture {
        let scratch = scratch_root().join(name);
        std::fs::create_dir_all(&scratch).expect("scratch directory for a fuzz target");
        if !Path::new(FILE_CHILD).exists() {
            let file = std::fs::File::create(FILE_CHILD).expect("the fuzz file child");
            file.set_len(1 << 20).expect("the fuzz file child's size");
        }
        let rt = Runtime::start(RuntimeOptions::default()).expect("a reactor for a fuzz target");
        // A mutated NBD client URI must not reach beyond this machine, nor a silent peer
        // hold an input past the hang limit.
        rt.context::<crate::modules::nbd_client::ConnectLimits>()
            .restrict(1000);
        // vhost-user controllers an input creates listen in the scratch directory, never in
        // the fuzzer's working directory.
        let vhost_sockets = scratch.join("vhost");
        std::fs::create_dir_all(&vhost_sockets).expect("vhost socket directory for fuzzing");
        crate::exports::vhost_blk::set_socket_dir(&rt, vhost_sockets);
        Fixture {
            ctx: Ctx { rt },
            scratch,
        }
    }

    /// Where the target keeps its sockets and files.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The runtime.
    pub fn rt(&self) -> &Runtime {
        &self.ctx.rt
    }

    /// Takes away what an input built the way the daemon shuts down (NBD stopped, I/O
    /// drained, every bdev flushed, then unregistered), so a stack an input left that cannot
    /// be flushed or torn down within the bound is caught here. A bound missed is the
    /// daemon's documented outcome (reported, not a crash); a hang past it is one.
    pub fn reset(&self) {
        let _ = crate::control::app::wind_down(self.rt(), SHUTDOWN_BOUND);
    }
}
