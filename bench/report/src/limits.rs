//! The per-block work a quorum cannot avoid, measured on one core of this machine: comparing
//! two blocks (our vote) and hashing one with SHA-256 (QEMU's vote hashes every child's
//! buffer). Each is measured with blocks drawn at random from a region much larger than the
//! caches ("dram") and on two buffers that stay in cache ("hot"), since a vote compares
//! buffers the children have just filled. memcpy, the malloc child's work, is measured by
//! quorum-perf's own baseline so that it is the same code perf_base.sh uses.

use std::alloc::Layout;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// The operations measured, under the target names the results file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Compare two equal blocks at random offsets of the region.
    MemcmpDram,
    /// Compare two equal blocks that stay in cache.
    MemcmpHot,
    /// SHA-256 of a block at a random offset of the region.
    Sha256Dram,
    /// SHA-256 of a block that stays in cache.
    Sha256Hot,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 4] = [Op::MemcmpDram, Op::MemcmpHot, Op::Sha256Dram, Op::Sha256Hot];

    /// Target name in the results file.
    pub fn name(self) -> &'static str {
        match self {
            Op::MemcmpDram => "memcmp-dram",
            Op::MemcmpHot => "memcmp-hot",
            Op::Sha256Dram => "sha256-dram",
            Op::Sha256Hot => "sha256-hot",
        }
    }
}

/// A page-aligned region every block of which holds the same bytes, so that comparisons run
/// the whole length as they do when children agree.
pub struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    /// Allocates and writes `len` bytes (so they are real memory, not the zero page).
    pub fn new(len: usize) -> Option<Region> {
        let layout = Layout::from_size_align(len, 2 << 20).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: non-zero size; checked for null below.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: ptr is valid for len bytes.
        unsafe { std::ptr::write_bytes(ptr, 0x5a, len) };
        Some(Region { ptr, layout })
    }

    fn block(&self, index: usize, bs: usize) -> &[u8] {
        assert!((index + 1) * bs <= self.layout.size());
        // SAFETY: in bounds (checked above); the region is initialized and lives as long as
        // the returned borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.add(index * bs), bs) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in Region::new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Runs `op` on `bs`-byte blocks for `time`; returns operations per second.
pub fn rate(op: Op, region: &Region, bs: usize, time: Duration) -> f64 {
    let blocks = region.layout.size() / bs;
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let hot_a = vec![0x5au8; bs];
    let hot_b = vec![0x5au8; bs];
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        for _ in 0..256 {
            let (a, b) = match op {
                Op::MemcmpDram | Op::Sha256Dram => (
                    region.block(rng.gen_range(0..blocks), bs),
                    region.block(rng.gen_range(0..blocks), bs),
                ),
                Op::MemcmpHot | Op::Sha256Hot => (&hot_a[..], &hot_b[..]),
            };
            match op {
                Op::MemcmpDram | Op::MemcmpHot => {
                    black_box(black_box(a) == black_box(b));
                }
                Op::Sha256Dram | Op::Sha256Hot => {
                    black_box(Sha256::digest(black_box(a)));
                }
            }
            ops += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= time {
            return ops as f64 / elapsed.as_secs_f64();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_runs_for_its_time() {
        let region = Region::new(8 << 20).unwrap();
        let t = Duration::from_millis(20);
        let rates: Vec<f64> = Op::ALL
            .iter()
            .map(|&op| rate(op, &region, 4096, t))
            .collect();
        assert!(rates.iter().all(|&r| r.is_finite() && r > 0.0), "{rates:?}");
        assert!(Region::new(0).is_none());
    }
}
