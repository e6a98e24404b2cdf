//! Bandwidth limits of background jobs (rebuild, scrub) as a pure function of time, so a
//! host only asks "may the next copy start now?" and the rule is tested without a clock.

/// Whether a job that moved `bytes_done` bytes in `elapsed_ns` nanoseconds may start moving
/// `next_bytes` more under a limit of `limit_mb_per_sec` MiB/s (0: no limit). The job stays
/// at or under the limit on average from its start: the next window starts once the time it
/// takes at the limit has passed.
pub fn may_start(bytes_done: u64, next_bytes: u64, elapsed_ns: u64, limit_mb_per_sec: u64) -> bool {
    if limit_mb_per_sec == 0 {
        return true;
    }
    let budget = u128::from(limit_mb_per_sec << 20) * u128::from(elapsed_ns) / 1_000_000_000;
    u128::from(bytes_done) + u128::from(next_bytes) <= budget.max(u128::from(next_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn no_limit_never_waits() {
        assert!(may_start(u64::MAX / 2, MIB, 0, 0));
    }

    #[test]
    fn the_first_window_goes_at_once_and_the_rate_holds_on_average() {
        assert!(may_start(0, MIB, 0, 10));
        assert!(!may_start(MIB, MIB, 0, 10));
        // 10 MiB/s: the second MiB may start 200 ms in, not before.
        assert!(!may_start(MIB, MIB, SEC / 5 - 1_000_000, 10));
        assert!(may_start(MIB, MIB, SEC / 5, 10));
        // Simulated job: windows of 256 KiB started whenever allowed, for 2 s.
        let (mut done, mut t) = (0u64, 0u64);
        while t <= 2 * SEC {
            if may_start(done, 256 << 10, t, 10) {
                done += 256 << 10;
            }
            t += 1_000_000;
        }
        let rate = done as f64 / MIB as f64 / 2.0;
        assert!((9.0..=10.2).contains(&rate), "{rate} MiB/s");
    }
}
