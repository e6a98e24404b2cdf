//! I/O descriptors: pooled per reactor so steady-state I/O never allocates, and completed
//! through a per-reactor queue so a completion never runs inside its own submission (no
//! re-entrancy, bounded stack), as SPDK defers completions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use super::channel::ChannelInner;
use crate::runtime::buf::DmaBuf;
use crate::runtime::clock::ticks;
use crate::runtime::register_poller;

/// The kinds of I/O a bdev may support (SPDK's `spdk_bdev_io_type` subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    /// Read blocks into the buffer.
    Read,
    /// Write the buffer to blocks.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Discard blocks.
    Unmap,
    /// Write zeroes without a data buffer.
    WriteZeroes,
    /// Abort everything in flight on the device.
    Reset,
    /// Read without a copy (SPDK's zcopy with populate): the module points the I/O's buffer
    /// at its own memory holding the blocks, so a submitter that only looks at the data (a
    /// quorum comparing a child's copy) saves a copy per block. The memory is the device's
    /// live contents: valid while the submitter holds its channel, changed by later writes.
    Zcopy,
}

impl IoType {
    /// Every type, in SPDK's `supported_io_types` order.
    pub const ALL: [IoType; 7] = [
        IoType::Read,
        IoType::Write,
        IoType::Unmap,
        IoType::WriteZeroes,
        IoType::Flush,
        IoType::Reset,
        IoType::Zcopy,
    ];

    /// Position in [`IoType::ALL`].
    pub fn index(self) -> usize {
        match self {
            IoType::Read => 0,
            IoType::Write => 1,
            IoType::Unmap => 2,
            IoType::WriteZeroes => 3,
            IoType::Flush => 4,
            IoType::Reset => 5,
            IoType::Zcopy => 6,
        }
    }

    /// SPDK's key in `supported_io_types`.
    pub fn spdk_name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Reset => "reset",
            IoType::Zcopy => "zcopy",
        }
    }

    /// Whether the I/O carries a data buffer.
    pub fn has_data(self) -> bool {
        matches!(self, IoType::Read | IoType::Write)
    }
}

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
    status: i32,
    work: Option<&'static DeferredWork>,
    done: Option<Rc<dyn IoDone>>,
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
    static COMPLETIONS: RefCell<VecDeque<IoHandle>> = const { RefCell::new(VecDeque::new()) };
    // The queue a drain pass works through, swapped with COMPLETIONS at the start of the
    // pass and kept here empty between passes so its capacity is reused.
    static DRAINING: Cell<VecDeque<IoHandle>> = const { Cell::new(VecDeque::new()) };
    // True while a submitter's completion callback runs.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    static DRAIN_REGISTERED: Cell<bool> = const { Cell::new(false) };
    static CHAIN_TICK: Cell<u64> = const { Cell::new(0) };
    // Submissions and callback-delivered completions so far on this reactor; see
    // `drain_completions` for why deliveries watch it.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with the tick at which the current chain of calls began (a completion being
/// delivered, or an application's submission), reading the clock only when no chain is
/// running. A quorum's fan-out submits its child I/Os, and a completion callback its next
/// I/O, within nanoseconds of that instant; the clock costs ~10 ns per read here, an eighth
/// of a whole null I/O, so the I/Os of one chain share one reading.
pub(super) fn with_chain_tick<R>(f: impl FnOnce(u64) -> R) -> R {
    let current = CHAIN_TICK.with(Cell::get);
    if current != 0 {
        return f(current);
    }
    let chain = Chain::start(ticks());
    f(chain.0)
}

/// Records that I/O was submitted or completed on this reactor, i.e. that the callback
/// running (if any) did more than bookkeeping.
pub(super) fn note_activity() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
}

/// The chain in progress on this reactor, ended when dropped (also on unwinding).
struct Chain(u64);

impl Chain {
    fn start(now: u64) -> Chain {
        Chain(set_chain_tick(now))
    }
}

/// Makes `now` the running chain's tick (never 0, which means "no chain") and returns it.
fn set_chain_tick(now: u64) -> u64 {
    let now = now.max(1);
    CHAIN_TICK.with(|c| c.set(now));
    now
}

impl Drop for Chain {
    fn drop(&mut self) {
        CHAIN_TICK.with(|c| c.set(0));
    }
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

    /// Finishes the I/O with `Ok(())` or `Err(errno)` (positive). The submitter's callback
    /// runs from this reactor's completion poller, never from inside this call.
    pub fn complete(mut self, status: Result<(), i32>) {
        self.set_status(status);
        COMPLETIONS.with(|q| q.borrow_mut().push_back(self));
        if !DRAIN_REGISTERED.with(|r| r.replace(true)) {
            register_poller(Box::new(drain_completions), None, None);
        }
    }

    /// Finishes a parent I/O from the completion callback of its last child I/O (a quorum's
    /// vote) and delivers it at once: that instant is already a delivery, so queueing would
    /// only cost another pass through the completion queue (a quorum write over null gained
    /// 7-15 %). Outside a completion callback it queues as [`IoHandle::complete`].
    ///
    /// Call it only on a path that starts in a child's completion callback, never from a
    /// module's `submit` (the parent's callback would then run inside its own submission),
    /// and hold no borrow of the module's state: the parent's callback may submit again.
    pub fn complete_from_callback(mut self, status: Result<(), i32>) {
        if !IN_CALLBACK.with(Cell::get) {
            return self.complete(status);
        }
        self.set_status(status);
        note_activity();
        // A read was voted on by comparing whole buffers since its last child's delivery
        // read the clock (µs at 64 KiB), which belongs to its latency: read the clock again,
        // and let what the parent's callback submits start from that reading. Other types
        // were only counted (a few ns) and keep the delivery's reading.
        let now = if self.io_type == IoType::Read {
            set_chain_tick(ticks())
        } else {
            CHAIN_TICK.with(Cell::get)
        };
        deliver(self, now);
    }

    /// Completes with success after `work` (the module's data movement) has run, which
    /// happens when the completion is delivered, just before the submitter's callback; its
    /// prefetch runs a few deliveries earlier. A memory module that copied at submission
    /// would fill a whole queue depth of buffers before the first is looked at (at QD 128 a
    /// quorum of 3 holds 384 child buffers, beyond L2); done here, a buffer is filled while
    /// the one who reads it next is about to.
    /// Completions are delivered in submission order per reactor, so the data effects of one
    /// channel's I/Os still apply in the order they were submitted.
    pub fn complete_after(mut self, work: &'static DeferredWork) {
        self.work = Some(work);
        self.complete(Ok(()));
    }

    fn set_status(&mut self, status: Result<(), i32>) {
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

/// Sets [`IN_CALLBACK`] for a scope and restores it when dropped (also on unwinding).
struct CallbackFlag(bool);

impl CallbackFlag {
    fn set(value: bool) -> CallbackFlag {
        CallbackFlag(IN_CALLBACK.with(|c| c.replace(value)))
    }
}

impl Drop for CallbackFlag {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.0));
    }
}

/// How many deliveries ahead a completion's [`DeferredWork::prefetch`] runs: enough for DRAM
/// to answer while the deliveries in between run, few enough that the prefetches in flight
/// do not crowd out the copy's own loads. Measured, 4 KiB QD 128 over malloc: 2 to 32 give the
/// same IOPS within noise; prefetching at submission instead (a queue's worth ahead) gained
/// as much on one malloc bdev but half as much under a quorum, whose three children's
/// prefetches stalled submission.
const PREFETCH_DISTANCE: usize = 4;

/// Runs the callbacks of I/O completed since the last pass. Only the entries present at the
/// start are handled, so an endless resubmit loop cannot starve the other pollers.
fn drain_completions() -> usize {
    let mut batch = DRAINING.with(Cell::take);
    COMPLETIONS.with(|q| std::mem::swap(&mut *q.borrow_mut(), &mut batch));
    let n = batch.len();
    for ahead in batch.iter().take(PREFETCH_DISTANCE) {
        prefetch(ahead);
    }
    let mut previous: Option<(u64, u64)> = None;
    while let Some(mut io) = batch.pop_front() {
        if let Some(ahead) = batch.get(PREFETCH_DISTANCE - 1) {
            prefetch(ahead);
        }
        let moved_data = io.work.take().map(|work| (work.run)(&io)).is_some();
        let activity = ACTIVITY.with(Cell::get);
        // The delivery instant: this I/O's completion time and the submission time of
        // whatever its callback submits. When nothing but bookkeeping ran since the previous
        // delivery read the clock (no data moved, its callback submitted and completed
        // nothing: a quorum's first children of a write), that reading is reused: it is some
        // tens of nanoseconds old and a clock read costs ~8 ns here.
        let now = match previous {
            Some((tick, seen)) if !moved_data && seen == activity => tick,
            _ => ticks(),
        };
        let chain = Chain::start(now);
        deliver(io, chain.0);
        drop(chain);
        previous = Some((now, ACTIVITY.with(Cell::get)));
    }
    DRAINING.with(|d| d.set(batch));
    n
}

/// Starts loading the memory of a completion about to be delivered.
#[inline]
fn prefetch(io: &IoHandle) {
    if let Some(work) = io.work {
        (work.prefetch)(io);
    }
}

/// Accounts a finished I/O at `now` and runs its submitter's callback.
#[inline]
fn deliver(mut io: IoHandle, now: u64) {
    if let Some(layer) = io.layer.take() {
        if io.status == libc::ENOMEM {
            // SPDK's NOMEM status: the module is out of resources; retry, don't fail.
            layer.resubmit(io);
            return;
        }
        layer.account(&mut io, now);
    }
    if let Some(done) = io.done.take() {
        let _flag = CallbackFlag::set(true);
        done.io_done(io);
    }
}
