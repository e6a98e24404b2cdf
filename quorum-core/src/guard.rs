//! Keeps `rewrite_corrupted` from overwriting newer data: a rewrite of blocks that a write
//! touched after the read was issued (or while it ran) is skipped, and a write that arrives
//! while a rewrite of its blocks is in flight waits for it. Lock-free: per-stripe atomic
//! counters in a fixed table shared by every reactor; a collision between unrelated blocks
//! only ever makes the guard more careful (a rewrite skipped, a write delayed briefly).
//!
//! The handshake is Dekker's: a writer bumps the stripe's generation and in-flight count,
//! then looks for a rewrite; a rewriter marks the stripe, then re-checks generation and
//! in-flight count. With sequentially consistent operations at least one of them sees the
//! other, so a rewrite never lands after a newer write.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

/// Bytes covered by one stripe.
const STRIPE_BYTES: u64 = 64 * 1024;
/// Stripes in the table; block ranges map onto them modulo this count.
const SLOTS: u64 = 4096;

#[derive(Default)]
struct Stripe {
    generation: AtomicU64,
    writes_in_flight: AtomicU32,
    rewrites_in_flight: AtomicU32,
}

/// What a read saw when it was issued; `None` when a write was in flight on its blocks.
pub type ReadTicket = Option<u64>;

/// The per-quorum table.
pub struct RewriteGuard {
    stripes: Box<[Stripe]>,
    stripe_blocks: u64,
}

impl RewriteGuard {
    /// A table for a bdev of `block_size` bytes per block.
    pub fn new(block_size: u32) -> RewriteGuard {
        RewriteGuard {
            stripes: (0..SLOTS).map(|_| Stripe::default()).collect(),
            stripe_blocks: (STRIPE_BYTES / block_size as u64).max(1),
        }
    }

    fn stripes(&self, offset_blocks: u64, num_blocks: u64) -> impl Iterator<Item = &Stripe> {
        let first = offset_blocks / self.stripe_blocks;
        let last = (offset_blocks + num_blocks.max(1) - 1) / self.stripe_blocks;
        let count = (last - first + 1).min(SLOTS);
        (first..first + count).map(move |s| &self.stripes[(s % SLOTS) as usize])
    }

    /// Called when a read is issued.
    pub fn read_ticket(&self, offset_blocks: u64, num_blocks: u64) -> ReadTicket {
        let mut sum = 0u64;
        for s in self.stripes(offset_blocks, num_blocks) {
            if s.writes_in_flight.load(SeqCst) != 0 {
                return None;
            }
            sum = sum.wrapping_add(s.generation.load(SeqCst));
        }
        Some(sum)
    }

    /// Called before a write is sent to the children; false means a rewrite of these
    /// blocks is in flight and the write must be retried later.
    pub fn begin_write(&self, offset_blocks: u64, num_blocks: u64) -> bool {
        for s in self.stripes(offset_blocks, num_blocks) {
            s.generation.fetch_add(1, SeqCst);
            s.writes_in_flight.fetch_add(1, SeqCst);
        }
        if self
            .stripes(offset_blocks, num_blocks)
            .any(|s| s.rewrites_in_flight.load(SeqCst) != 0)
        {
            self.end_write(offset_blocks, num_blocks);
            return false;
        }
        true
    }

    /// Called when a write begun with [`RewriteGuard::begin_write`] completed.
    pub fn end_write(&self, offset_blocks: u64, num_blocks: u64) {
        for s in self.stripes(offset_blocks, num_blocks) {
            s.writes_in_flight.fetch_sub(1, SeqCst);
        }
    }

    /// Claims the blocks for a rewrite if nothing wrote them since `ticket` was taken.
    pub fn begin_rewrite(&self, offset_blocks: u64, num_blocks: u64, ticket: ReadTicket) -> bool {
        let Some(seen) = ticket else {
            return false;
        };
        for s in self.stripes(offset_blocks, num_blocks) {
            s.rewrites_in_flight.fetch_add(1, SeqCst);
        }
        if self.read_ticket(offset_blocks, num_blocks) == Some(seen) {
            return true;
        }
        self.end_rewrite(offset_blocks, num_blocks);
        false
    }

    /// Releases blocks claimed by [`RewriteGuard::begin_rewrite`].
    pub fn end_rewrite(&self, offset_blocks: u64, num_blocks: u64) {
        for s in self.stripes(offset_blocks, num_blocks) {
            s.rewrites_in_flight.fetch_sub(1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_after_read_cancels_rewrite() {
        let g = RewriteGuard::new(512);
        let t = g.read_ticket(0, 8);
        assert!(g.begin_write(0, 8));
        g.end_write(0, 8);
        assert!(!g.begin_rewrite(0, 8, t));
    }

    #[test]
    fn write_in_flight_at_read_forbids_rewrite() {
        let g = RewriteGuard::new(512);
        assert!(g.begin_write(0, 8));
        let t = g.read_ticket(0, 8);
        g.end_write(0, 8);
        assert!(!g.begin_rewrite(0, 8, t));
    }

    #[test]
    fn write_waits_for_rewrite_and_other_blocks_do_not() {
        let g = RewriteGuard::new(512);
        let t = g.read_ticket(0, 8);
        assert!(g.begin_rewrite(0, 8, t));
        assert!(!g.begin_write(4, 1));
        assert!(g.begin_write(1024, 8), "another stripe is free");
        g.end_write(1024, 8);
        g.end_rewrite(0, 8);
        assert!(g.begin_write(4, 1));
        g.end_write(4, 1);
    }
}
