//! What the bdev layer keeps per bdev per reactor behind an [`super::IoChannel`]: the
//! module's channel, the statistics and the count of I/O in flight. Submission (`channel`)
//! counts an I/O in, delivery (`completion`) counts it out; every I/O descriptor points
//! back here until it is delivered.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use super::io_type::IoType;
use super::stats::IoStats;
use super::{Bdev, BdevChannel};

/// Per-reactor state of one bdev's channel.
pub(crate) struct ChannelInner {
    bdev: Arc<Bdev>,
    backend: Rc<dyn BdevChannel>,
    stats: Cell<IoStats>,
    in_flight: Cell<u64>,
}

impl ChannelInner {
    pub(crate) fn new(bdev: Arc<Bdev>, backend: Rc<dyn BdevChannel>) -> Rc<ChannelInner> {
        Rc::new(ChannelInner {
            bdev,
            backend,
            stats: Cell::new(IoStats::default()),
            in_flight: Cell::new(0),
        })
    }

    pub(crate) fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    pub(crate) fn backend(&self) -> &Rc<dyn BdevChannel> {
        &self.backend
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.get()
    }

    pub(crate) fn stats(&self) -> IoStats {
        self.stats.get()
    }

    /// Counts an I/O handed to the module.
    pub(crate) fn enter(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// Counts an I/O delivered back: its type (`fua`: a write with FUA), size, outcome and
    /// latency.
    pub(crate) fn record_completion(
        &self,
        io_type: IoType,
        fua: bool,
        num_blocks: u64,
        ok: bool,
        latency_ticks: u64,
    ) {
        let mut s = self.stats.get();
        s.record(
            io_type,
            fua,
            num_blocks * self.bdev.block_size as u64,
            ok,
            latency_ticks,
        );
        self.stats.set(s);
        self.in_flight.set(self.in_flight.get() - 1);
    }
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        self.bdev.retire_stats(&self.stats.get());
    }
}
