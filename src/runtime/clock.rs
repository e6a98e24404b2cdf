//! A cheap monotonic tick counter: I/O latency and reactor busy time are measured per I/O,
//! so the clock must cost a few nanoseconds (the TSC), like SPDK's `spdk_get_ticks`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Current tick count (TSC on x86_64, nanoseconds elsewhere); compare only with other ticks.
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no memory effects and exists on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        epoch().elapsed().as_nanos() as u64
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Ticks per second, calibrated once against the OS clock (reported as SPDK's `tick_rate`).
pub fn tick_rate() -> u64 {
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(|| {
        if cfg!(not(target_arch = "x86_64")) {
            return 1_000_000_000;
        }
        let start_instant = Instant::now();
        let start = ticks();
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = start_instant.elapsed();
        let delta = ticks().wrapping_sub(start);
        ((delta as f64) / elapsed.as_secs_f64()) as u64
    })
}

/// Converts a tick interval to microseconds, for latency reports.
pub fn ticks_to_us(delta: u64) -> f64 {
    delta as f64 * 1e6 / tick_rate() as f64
}

/// Converts a duration to ticks, for timed pollers.
pub fn duration_to_ticks(d: Duration) -> u64 {
    (d.as_secs_f64() * tick_rate() as f64) as u64
}
