//! Hang detection that works with or without libFuzzer: a thread that aborts the process
//! when one input has been running longer than [`HANG_LIMIT`]. libFuzzer's own `-timeout`
//! would do in a fuzzing run, but the corpus replay in `cargo test` has no such guard, and an
//! input that makes the daemon wait forever must fail there too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest one input may take. Every target answers a normal input in milliseconds; the
/// bound leaves room for a loaded machine.
pub const HANG_LIMIT: Duration = Duration::from_secs(10);

/// The running input's start, in milliseconds since [`epoch`]; 0 while idle.
static RUNNING_SINCE_MS: AtomicU64 = AtomicU64::new(0);
/// The target whose input is running (corpus replay runs every target in one process).
static RUNNING_TARGET: Mutex<&str> = Mutex::new("");

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// While alive, the input being run is watched; dropped when it returned.
pub struct Watch(());

impl Drop for Watch {
    fn drop(&mut self) {
        RUNNING_SINCE_MS.store(0, Ordering::SeqCst);
    }
}

/// Starts watching one input of `target` (the name goes into the hang message).
pub fn watchdog(target: &'static str) -> Watch {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(watch_forever)
            .expect("watchdog thread");
    });
    *RUNNING_TARGET.lock().unwrap_or_else(|e| e.into_inner()) = target;
    let now = epoch().elapsed().as_millis() as u64;
    RUNNING_SINCE_MS.store(now.max(1), Ordering::SeqCst);
    Watch(())
}

fn watch_forever() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let since = RUNNING_SINCE_MS.load(Ordering::SeqCst);
        let now = epoch().elapsed().as_millis() as u64;
        if since != 0 && now.saturating_sub(since) > HANG_LIMIT.as_millis() as u64 {
            let target = *RUNNING_TARGET.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("fuzz target {target}: hang, one input ran longer than {HANG_LIMIT:?}");
            std::process::abort();
        }
    }
}
