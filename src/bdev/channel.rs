//! The bdev layer's per-reactor channel: validates every I/O before a module sees it (range,
//! buffer size, supported type) and hands it over, counted in (`layer`); `completion`
//! delivers it back.

use std::rc::Rc;
use std::sync::Arc;

use super::completion::{note_activity, with_chain_tick};
use super::io::{IoBuf, IoDone, IoHandle};
use super::io_type::IoType;
use super::layer::ChannelInner;
use super::{Bdev, BdevChannel};

/// Why the layer refuses `io` for `bdev` before any module sees it: ENOTSUP for a type the
/// bdev does not serve, EINVAL for a range past its end or a buffer not matching the blocks.
fn validate(bdev: &Bdev, io: &IoHandle) -> Result<(), i32> {
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

/// A reactor's handle for submitting I/O to one bdev. Obtain it on the reactor that will
/// use it ([`Bdev::io_channel`]) and keep it while I/O is in flight.
#[derive(Clone)]
pub struct IoChannel {
    pub(crate) inner: Rc<ChannelInner>,
}

impl IoChannel {
    /// The bdev this channel submits to.
    pub fn bdev(&self) -> &Arc<Bdev> {
        self.inner.bdev()
    }

    /// Submits a prepared I/O. Invalid requests (out of range, buffer size not matching the
    /// block count, unsupported type) complete with EINVAL or ENOTSUP and reach no module.
    pub fn submit(&self, mut io: IoHandle) {
        if let Err(errno) = validate(self.inner.bdev(), &io) {
            io.complete(Err(errno));
            return;
        }
        io.layer = Some(self.inner.clone());
        self.inner.enter();
        note_activity();
        with_chain_tick(|now| {
            io.submit_tick = now;
            self.inner.backend().submit(io);
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
        self.inner.backend()
    }
}
