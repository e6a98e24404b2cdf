//! I/O descriptors: pooled per reactor so steady-state I/O never allocates. How they are
//! completed and delivered is `completion`'s job.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use super::io_type::IoType;
use super::layer::ChannelInner;
use crate::runtime::buf::DmaBuf;

/// A raw view of I/O memory, as SPDK's iovec: the submitter guarantees the memory outlives
/// the I/O, which is what lets a quorum hand one buffer to a child without copying.
#[derive(Debug, Clone, Copy)]
pub struct IoBuf {
    ptr: *mut u8,
    len: usize,
}

impl IoBuf {
    /// No buffer (flush, unmap, write_zeroes, reset).
    pub const NONE: IoBuf = IoBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes until the I/O completes, and
    /// nobody else may touch that memory meanwhile.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> IoBuf {
        IoBuf { ptr, len }
    }

    /// # Safety
    /// `buf` must stay alive and untouched until the I/O using this view completes.
    pub unsafe fn from_dma(buf: &mut DmaBuf) -> IoBuf {
        IoBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no memory.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw pointer for modules that hand the memory to the kernel.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The memory as bytes.
    ///
    /// # Safety
    /// Only while the I/O owning this view is in the caller's hands (between submit and
    /// completion for a module, after completion for the submitter).
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        std::slice::from_raw_parts(self.ptr, self.len)
    }

    /// The memory as writable bytes.
    ///
    /// # Safety
    /// As [`IoBuf::as_slice`], and no other live reference to the memory.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice<'a>(&self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(self.ptr, self.len)
    }
}

/// Receives completed I/O. One object usually serves many I/Os and tells them apart by
/// [`BdevIo::tag`], so that submitting needs no allocation.
pub trait IoDone {
    /// Called on the submitting reactor once the I/O finished; `io.status()` says how.
    fn io_done(&self, io: IoHandle);
}

/// Data movement a memory module leaves to the delivery of its completion (see
/// [`IoHandle::complete_after`]).
pub struct DeferredWork {
    /// Starts loading the memory `run` will touch; called a few deliveries ahead, so the
    /// memory arrives while earlier I/Os are delivered (the copy would otherwise wait on DRAM).
    pub prefetch: fn(&BdevIo),
    /// Moves the data.
    pub run: fn(&BdevIo),
}

/// One I/O request. Fields are public for the bdev modules that serve it.
pub struct BdevIo {
    /// What to do.
    pub io_type: IoType,
    /// First block.
    pub offset_blocks: u64,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Data memory for reads and writes.
    pub buf: IoBuf,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
    /// The submitter's tag, handed back at completion.
    pub tag: u64,
    /// Scratch space for the module serving the I/O.
    pub driver_ctx: [u64; 2],
    pub(super) status: i32,
    pub(super) work: Option<&'static DeferredWork>,
    pub(super) done: Option<Rc<dyn IoDone>>,
    pub(super) layer: Option<Rc<ChannelInner>>,
    pub(super) submit_tick: u64,
    pub(super) complete_tick: u64,
}

/// Owned handle to a pooled [`BdevIo`]; dropping it returns the descriptor to the pool.
pub struct IoHandle(ManuallyDrop<Box<BdevIo>>);

thread_local! {
    // Boxed on purpose: descriptors are handed out as owned boxes and must not move when
    // the pool grows.
    #[allow(clippy::vec_box)]
    static IO_POOL: RefCell<Vec<Box<BdevIo>>> = const { RefCell::new(Vec::new()) };
}

impl IoHandle {
    /// A descriptor from this reactor's pool (allocates only while the pool warms up).
    pub fn new(
        io_type: IoType,
        offset_blocks: u64,
        num_blocks: u64,
        buf: IoBuf,
        done: Rc<dyn IoDone>,
        tag: u64,
    ) -> IoHandle {
        let mut b = IO_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| {
            Box::new(BdevIo {
                io_type,
                offset_blocks: 0,
                num_blocks: 0,
                buf: IoBuf::NONE,
                fua: false,
                tag: 0,
                driver_ctx: [0; 2],
                status: 0,
                work: None,
                done: None,
                layer: None,
                submit_tick: 0,
                complete_tick: 0,
            })
        });
        b.io_type = io_type;
        b.offset_blocks = offset_blocks;
        b.num_blocks = num_blocks;
        b.buf = buf;
        b.fua = false;
        b.tag = tag;
        b.driver_ctx = [0; 2];
        b.status = 0;
        b.complete_tick = 0;
        b.work = None;
        b.done = Some(done);
        IoHandle(ManuallyDrop::new(b))
    }

    pub(super) fn set_status(&mut self, status: Result<(), i32>) {
        self.status = match status {
            Ok(()) => 0,
            Err(errno) => errno.max(1),
        };
    }

    /// How the I/O ended: `Err(errno)` with a positive errno.
    pub fn status(&self) -> Result<(), i32> {
        if self.status == 0 {
            Ok(())
        } else {
            Err(self.status)
        }
    }

    /// When the bdev layer saw the I/O complete, in [`crate::runtime::clock::ticks`]; lets a
    /// submitter measure latency without reading the clock again. 0 for an I/O the layer
    /// refused before submission.
    pub fn completion_tick(&self) -> u64 {
        self.complete_tick
    }

    /// Gives up ownership for a module that tracks the I/O by address (io_uring user_data).
    pub fn into_raw(self) -> *mut BdevIo {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so the box is moved out exactly once.
        Box::into_raw(unsafe { ManuallyDrop::take(&mut me.0) })
    }

    /// # Safety
    /// `raw` must come from [`IoHandle::into_raw`] and be used once.
    pub unsafe fn from_raw(raw: *mut BdevIo) -> IoHandle {
        IoHandle(ManuallyDrop::new(Box::from_raw(raw)))
    }
}

impl Deref for IoHandle {
    type Target = BdevIo;
    fn deref(&self) -> &BdevIo {
        &self.0
    }
}

impl DerefMut for IoHandle {
    fn deref_mut(&mut self) -> &mut BdevIo {
        &mut self.0
    }
}

impl Drop for IoHandle {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the handle is not used afterwards.
        let mut b = unsafe { ManuallyDrop::take(&mut self.0) };
        b.done = None;
        b.layer = None;
        let _ = IO_POOL.try_with(|p| p.borrow_mut().push(b));
    }
}
