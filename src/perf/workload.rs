//! What each I/O of a job does and where: offsets (random, sequential, or per-slot stripes for
//! verify), the read/write mix, and the verify data patterns and comparison. Pure functions
//! and a small generator, so the rules can be tested without a runtime.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::args::Workload;

/// The operation of one I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read into the slot's buffer.
    Read,
    /// Write the slot's buffer.
    Write,
    /// Flush.
    Flush,
    /// Unmap.
    Unmap,
    /// Write zeroes.
    WriteZeroes,
}

/// Draws offsets and operations for one job. Offsets are in I/O units (`io_size`), relative to
/// the job's region, so every I/O is aligned to the I/O size as bdevperf's are.
pub struct Picker {
    rng: SmallRng,
    workload: Workload,
    read_percent: u8,
    size_in_ios: u64,
    next_seq: u64,
}

impl Picker {
    /// A generator over a region of `size_in_ios` I/Os (must be ≥ 1).
    pub fn new(workload: Workload, read_percent: u8, size_in_ios: u64, seed: u64) -> Picker {
        debug_assert!(size_in_ios > 0);
        Picker {
            rng: SmallRng::seed_from_u64(seed),
            workload,
            read_percent,
            size_in_ios,
            next_seq: 0,
        }
    }

    /// The next offset, in I/O units: uniform for random workloads, else sequential with
    /// wrap-around.
    #[inline]
    pub fn next_offset(&mut self) -> u64 {
        if self.workload.is_random() {
            self.rng.gen_range(0..self.size_in_ios)
        } else {
            let at = self.next_seq;
            self.next_seq = if at + 1 == self.size_in_ios {
                0
            } else {
                at + 1
            };
            at
        }
    }

    /// The next operation (verify's write-then-read is driven by the job, not drawn here).
    #[inline]
    pub fn next_op(&mut self) -> Op {
        match self.workload {
            Workload::Flush => Op::Flush,
            Workload::Unmap => Op::Unmap,
            Workload::WriteZeroes => Op::WriteZeroes,
            Workload::Verify => Op::Write,
            _ => match self.read_percent {
                100 => Op::Read,
                0 => Op::Write,
                p => {
                    if self.rng.gen_range(0..100u8) < p {
                        Op::Read
                    } else {
                        Op::Write
                    }
                }
            },
        }
    }
}

/// Verify offsets: slot `slot` of `depth` owns offsets `slot, slot + depth, slot + 2·depth…`
/// of the region, so no two in-flight slots ever touch the same blocks (bdevperf keeps an
/// "outstanding" bitmap for the same purpose). Returns the offset after `current`, wrapping
/// to the slot's first. Requires `depth ≤ size_in_ios`.
#[inline]
pub fn stripe_next(current: u64, slot: u64, depth: u64, size_in_ios: u64) -> u64 {
    let next = current + depth;
    if next >= size_in_ios {
        slot
    } else {
        next
    }
}

/// A write's pattern key: differs for every write of a run (`generation`) and between runs
/// (`run_seed`), so a stale block from an earlier write or an earlier run never compares equal.
#[inline]
pub fn pattern_salt(run_seed: u64, generation: u64) -> u64 {
    // An odd multiplier is a bijection on u64: distinct generations give distinct salts.
    run_seed
        .wrapping_add(generation)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Fills `buf` with the pattern of data living at byte `byte_offset` of the bdev: each 8-byte
/// word is its own absolute word index mixed with `salt`, so misplaced data never matches.
pub fn fill_pattern(buf: &mut [u8], byte_offset: u64, salt: u64) {
    let first_word = byte_offset / 8;
    for (i, word) in buf.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&((first_word + i as u64) ^ salt).to_le_bytes());
    }
}

/// Position of the first byte of `got` that differs from `expected`, or from zero when
/// `expected` is None (bdevs that keep no data, like null, read back zeroes).
pub fn first_mismatch(expected: Option<&[u8]>, got: &[u8]) -> Option<usize> {
    match expected {
        Some(want) => {
            if want == got {
                None
            } else {
                Some(
                    want.iter()
                        .zip(got)
                        .position(|(a, b)| a != b)
                        .unwrap_or(want.len().min(got.len())),
                )
            }
        }
        // OR-folding vectorises; the byte search only runs on a mismatch.
        None => (got.iter().fold(0u8, |acc, &b| acc | b) != 0)
            .then(|| got.iter().position(|&b| b != 0).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_offsets_stay_in_the_region() {
        let mut p = Picker::new(Workload::Randread, 100, 7, 1);
        let seen: HashSet<u64> = (0..1000).map(|_| p.next_offset()).collect();
        assert_eq!(seen, (0..7).collect());
        assert!((0..100).all(|_| p.next_op() == Op::Read));
    }

    #[test]
    fn sequential_offsets_wrap() {
        let mut p = Picker::new(Workload::Write, 0, 3, 1);
        let got: Vec<u64> = (0..7).map(|_| p.next_offset()).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        assert!((0..100).all(|_| p.next_op() == Op::Write));
    }

    #[test]
    fn mix_follows_the_read_percentage() {
        let mut p = Picker::new(Workload::Randrw, 30, 100, 42);
        let reads = (0..10_000).filter(|_| p.next_op() == Op::Read).count();
        assert!((2_700..3_300).contains(&reads), "{reads} reads of 10000");
    }

    #[test]
    fn verify_stripes_are_disjoint_and_cover_the_region() {
        for (depth, size) in [(1u64, 5u64), (3, 10), (4, 4), (5, 17)] {
            let mut owner = vec![None; size as usize];
            for slot in 0..depth {
                let mut at = slot;
                for _ in 0..3 * size {
                    assert!(at < size);
                    match owner[at as usize] {
                        None => owner[at as usize] = Some(slot),
                        Some(o) => assert_eq!(o, slot, "offset {at} shared by two slots"),
                    }
                    at = stripe_next(at, slot, depth, size);
                }
            }
            assert!(owner.iter().all(Option::is_some), "region not covered");
        }
    }

    #[test]
    fn patterns_differ_in_every_word_by_offset_generation_and_run() {
        let every_word_differs = |a: &[u8], b: &[u8]| {
            a.chunks_exact(8)
                .zip(b.chunks_exact(8))
                .all(|(x, y)| x != y)
        };
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut a, 8192, pattern_salt(7, 1));
        fill_pattern(&mut b, 8192, pattern_salt(7, 1));
        assert_eq!(first_mismatch(Some(&a), &b), None);
        fill_pattern(&mut b, 8192, pattern_salt(7, 2));
        assert!(every_word_differs(&a, &b), "stale generation");
        fill_pattern(&mut b, 12288, pattern_salt(7, 1));
        assert!(every_word_differs(&a, &b), "misplaced block");
        fill_pattern(&mut b, 8192, pattern_salt(8, 1));
        assert!(every_word_differs(&a, &b), "earlier run");
        assert!(first_mismatch(Some(&a), &b).is_some());
    }

    #[test]
    fn mismatch_reports_the_first_differing_byte() {
        let a = vec![3u8; 512];
        let mut b = a.clone();
        b[300] = 4;
        b[400] = 4;
        assert_eq!(first_mismatch(Some(&a), &b), Some(300));
        let mut z = vec![0u8; 512];
        assert_eq!(first_mismatch(None, &z), None);
        z[511] = 1;
        assert_eq!(first_mismatch(None, &z), Some(511));
    }
}
