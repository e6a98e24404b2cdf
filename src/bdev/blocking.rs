//! Blocking I/O for callers outside the reactors (tests, tools, start-up checks): the I/O is
//! submitted on a chosen reactor and the caller waits for its completion. Never used on the
//! data path.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{Bdev, IoBuf, IoDone, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::Runtime;

struct Waiter {
    tx: Sender<(Result<(), i32>, Option<DmaBuf>)>,
    buf: std::cell::RefCell<Option<DmaBuf>>,
}

impl IoDone for Waiter {
    fn io_done(&self, io: IoHandle) {
        let _ = self.tx.send((io.status(), self.buf.borrow_mut().take()));
    }
}

/// An I/O submitted by [`submit`], to be waited for.
pub struct Pending {
    rx: crossbeam_channel::Receiver<(Result<(), i32>, Option<DmaBuf>)>,
}

impl Pending {
    /// Waits for the I/O; a read's data comes back.
    pub fn wait(self) -> Result<Vec<u8>, i32> {
        Self::outcome(self.rx.recv().map_err(|_| libc::EIO)?)
    }

    /// Waits until `deadline` at most: None if the I/O is still running then (it goes on,
    /// and its completion is dropped).
    pub fn wait_until(self, deadline: Instant) -> Option<Result<Vec<u8>, i32>> {
        match self.rx.recv_deadline(deadline) {
            Ok(done) => Some(Self::outcome(done)),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(libc::EIO)),
        }
    }

    fn outcome((status, buf): (Result<(), i32>, Option<DmaBuf>)) -> Result<Vec<u8>, i32> {
        status.map(|()| buf.map(|b| b.as_slice().to_vec()).unwrap_or_default())
    }
}

/// Submits one I/O of `io_type` on reactor `reactor` without waiting. For writes `data` is
/// the payload; for reads `data.len()` bytes are read.
pub fn submit(
    rt: &Runtime,
    reactor: usize,
    bdev: &Arc<Bdev>,
    io_type: IoType,
    offset_blocks: u64,
    num_blocks: u64,
    data: &[u8],
) -> Pending {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let bdev = bdev.clone();
    let payload = data.to_vec();
    rt.send_msg(reactor, move || {
        let channel = match bdev.io_channel() {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send((Err(e.errno()), None));
                return;
            }
        };
        let mut buf = DmaBuf::new(payload.len());
        buf.as_mut_slice().copy_from_slice(&payload);
        let view = if payload.is_empty() {
            IoBuf::NONE
        } else {
            // SAFETY: the buffer moves into the waiter, which keeps it until the I/O
            // completes.
            unsafe { IoBuf::from_dma(&mut buf) }
        };
        let waiter = Rc::new(Waiter {
            tx,
            buf: std::cell::RefCell::new(Some(buf)),
        });
        channel.submit(IoHandle::new(
            io_type,
            offset_blocks,
            num_blocks,
            view,
            waiter,
            0,
        ));
    });
    Pending { rx }
}

/// Runs one I/O of `io_type` on reactor `reactor` and waits. For writes `data` is the
/// payload; for reads `data.len()` bytes are read and returned.
pub fn run_io(
    rt: &Runtime,
    reactor: usize,
    bdev: &Arc<Bdev>,
    io_type: IoType,
    offset_blocks: u64,
    num_blocks: u64,
    data: &[u8],
) -> Result<Vec<u8>, i32> {
    submit(rt, reactor, bdev, io_type, offset_blocks, num_blocks, data).wait()
}

/// Writes `data` at block `offset_blocks` (whole blocks).
pub fn write(rt: &Runtime, bdev: &Arc<Bdev>, offset_blocks: u64, data: &[u8]) -> Result<(), i32> {
    let blocks = data.len() as u64 / bdev.block_size() as u64;
    run_io(rt, 0, bdev, IoType::Write, offset_blocks, blocks, data).map(|_| ())
}

/// Reads `num_blocks` blocks at `offset_blocks`.
pub fn read(
    rt: &Runtime,
    bdev: &Arc<Bdev>,
    offset_blocks: u64,
    num_blocks: u64,
) -> Result<Vec<u8>, i32> {
    let len = (num_blocks * bdev.block_size() as u64) as usize;
    run_io(
        rt,
        0,
        bdev,
        IoType::Read,
        offset_blocks,
        num_blocks,
        &vec![0; len],
    )
}

/// Runs a data-less I/O (flush, unmap, write_zeroes, reset).
pub fn command(
    rt: &Runtime,
    bdev: &Arc<Bdev>,
    io_type: IoType,
    offset_blocks: u64,
    num_blocks: u64,
) -> Result<(), i32> {
    run_io(rt, 0, bdev, io_type, offset_blocks, num_blocks, &[]).map(|_| ())
}
