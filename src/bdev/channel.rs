//! The bdev layer's per-reactor channel: validates every I/O before a module sees it (range,
//! buffer size, supported type), counts statistics, and retries I/O a module refused with NOMEM.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use super::io::{note_activity, with_chain_tick, IoBuf, IoDone, IoHandle, IoType};
use super::stats::IoStats;
use super::{Bdev, BdevChannel};

/// Per-reactor state behind an [`IoChannel`].
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

    pub(crate) fn account(&self, io: &mut IoHandle, now: u64) {
        let mut s = self.stats.get();
        let bytes = io.num_blocks * self.bdev.block_size as u64;
        io.complete_tick = now;
        s.record(
            io.io_type,
            io.fua,
            bytes,
            io.status().is_ok(),
            io.complete_tick.wrapping_sub(io.submit_tick),
        );
        self.stats.set(s);
        self.in_flight.set(self.in_flight.get() - 1);
    }

    pub(crate) fn resubmit(self: &Rc<Self>, mut io: IoHandle) {
        io.layer = Some(self.clone());
        note_activity();
        self.backend.submit(io);
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

    fn validate(&self, io: &IoHandle) -> Result<(), i32> {
        let bdev = &self.bdev;
        if !bdev.io_type_supported(io.io_type) {
            return Err(libc::ENOTSUP);
        }
        if io.io_type == IoType::Reset {
            return Ok(());
        }
        let end = io.offset_blocks.checked_add(io.num_blocks);
        if end.is_none_or(|end| end > bdev.num_blocks) {
            return Err(libc::EINVAL);
        }
        if io.io_type == IoType::Flush {
            return Ok(());
        }
        if io.num_blocks == 0 {
            return Err(libc::EINVAL);
        }
        if io.io_type.has_data() {
            let want = io.num_blocks.checked_mul(bdev.block_size as u64);
            if want != Some(io.buf.len() as u64) || io.buf.as_ptr().is_null() {
                return Err(libc::EINVAL);
            }
        }
        Ok(())
    }
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        self.bdev.retire_stats(&self.stats.get());
    }
}

/// A reactor's handle for submitting I/O to one bdev. Obtain it on the reactor that will
/// use it ([`Bdev::io_channel`]) and keep it while I/O is in flight.
#[derive(Clone)]
pub struct IoChannel {
    pub(crate) inner: Rc<ChannelInner>,
}

impl IoChannel {
    /// The bdev this channel submits to.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.inner.bdev
    }

    /// Submits a prepared I/O. Invalid requests (out of range, buffer size not matching the
    /// block count, unsupported type) complete with EINVAL or ENOTSUP and reach no module.
    pub fn submit(&self, mut io: IoHandle) {
        if let Err(errno) = self.inner.validate(&io) {
            io.complete(Err(errno));
            return;
        }
        io.layer = Some(self.inner.clone());
        self.inner.in_flight.set(self.inner.in_flight.get() + 1);
        note_activity();
        with_chain_tick(|now| {
            io.submit_tick = now;
            self.inner.backend.submit(io);
        });
    }

    /// Builds and submits an I/O in one call.
    pub fn submit_new(
        &self,
        io_type: IoType,
        offset_blocks: u64,
        num_blocks: u64,
        buf: IoBuf,
        done: Rc<dyn IoDone>,
        tag: u64,
    ) {
        self.submit(IoHandle::new(
            io_type,
            offset_blocks,
            num_blocks,
            buf,
            done,
            tag,
        ));
    }

    /// I/O submitted on this channel and not yet completed.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight()
    }

    /// The module's own channel object, for modules that stack on this bdev.
    pub fn backend(&self) -> &Rc<dyn BdevChannel> {
        &self.inner.backend
    }
}
