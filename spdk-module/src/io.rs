//! A quorum I/O on SPDK's threads. The parent `spdk_bdev_io` carries a [`QuorumBdevIo`] in
//! its `driver_ctx`: the core's state machine ([`QuorumIo`]), the view of the children it
//! started with, and the DMA buffers its reads use. This file only moves bytes and runs
//! callbacks; what to send where, the vote, events and counters are the core's
//! ([`quorum_core::io`]).
//!
//! Reads: one child reads straight into the parent's iovecs, the others into buffers of
//! SPDK's iobuf pool (DMA-safe, per-thread caches, no allocation once warm); the vote runs
//! on the polling thread when the last child completes. When every child lends its memory
//! (SPDK's zero-copy type: malloc, and vbdevs over it), each is read without a buffer and
//! the vote compares their memory in place, after the first child's answer is copied into
//! the parent: every answer is sampled at that one moment, so a write submitted after the
//! read cannot reach some children's lent memory and not others' before the vote. Writes go
//! out from the parent's iovecs; a rewrite from buffers the quorum owns. Nothing here
//! allocates per I/O.

use std::ffi::c_void;
use std::io::IoSlice;
use std::mem::offset_of;
use std::rc::Rc;

use quorum_core::io::{Completion, IoKind, Request, Rewrite, Submit};
use quorum_core::{ChildBytes, ChildSet, QuorumIo, Step};
use spdk_sys as sys;

use crate::channel::{self, QuorumChannel, View};
use crate::child_memory::ChildMemory;
use crate::log;
use crate::quorum_bdev::{self, QuorumBdev};
use crate::spdk_inline::bdev_io_from_ctx;

/// What a child is asked to do in the current round.
#[derive(Clone, Copy)]
enum ChildOp {
    /// The parent's operation, as the core's [`Submit`] says.
    Parent(IoKind),
    /// Write the winning data, which the parent holds by then, back (`rewrite_corrupted`).
    Rewrite,
}

/// The quorum's context in a parent bdev_io's `driver_ctx`.
#[repr(C)]
pub struct QuorumBdevIo {
    state: QuorumIo,
    /// The children this I/O started with: `Rc::into_raw` of the channel's view, given back
    /// when the parent completes.
    view: *const View,
    /// For reads, the child reading straight into the parent's iovecs.
    into_parent: Option<usize>,
    /// The current round's operation.
    op: ChildOp,
    /// This read's children are read without buffers and vote on the memory they lend.
    lend: bool,
    /// Children of the current round not sent yet (waiting for a buffer or a bdev_io).
    unsent: ChildSet,
    /// Children of the current round still without a buffer.
    unbuffered: ChildSet,
    /// The children's data outside the parent: buffers and lent memory.
    memory: ChildMemory,
    /// Waiting for an iobuf buffer.
    buf_wait: sys::spdk_iobuf_entry,
    /// Waiting for a child bdev_io (a child answered -ENOMEM).
    io_wait: sys::spdk_bdev_io_wait_entry,
}

/// Bytes of `driver_ctx` the module asks SPDK for. Every bdev_io of the app's pool carries
/// the largest module context, so it stays small: checked at compile time.
pub const CTX_SIZE: usize = std::mem::size_of::<QuorumBdevIo>();
const _: () = assert!(
    CTX_SIZE <= 1024,
    "the quorum's driver_ctx grows every bdev_io of the host app; keep it within 1 KiB"
);

/// A parent bdev_io of a quorum, with typed access to what the quorum keeps in it.
#[derive(Clone, Copy)]
struct Parent(*mut sys::spdk_bdev_io);

impl Parent {
    fn ctx(self) -> *mut QuorumBdevIo {
        // SAFETY: every parent handled here is a live bdev_io of a quorum bdev, whose
        // driver_ctx SPDK sized with `CTX_SIZE`.
        unsafe { (*self.0).driver_ctx.as_mut_ptr() as *mut QuorumBdevIo }
    }

    /// The context; no other reference to it may be alive.
    ///
    /// # Safety
    /// The context was initialised by `submit_request` for the current I/O.
    #[allow(clippy::mut_from_ref)]
    unsafe fn state<'a>(self) -> &'a mut QuorumBdevIo {
        // SAFETY: the caller's promise; callbacks of one I/O never overlap (one thread).
        unsafe { &mut *self.ctx() }
    }

    fn quorum<'a>(self) -> &'a QuorumBdev {
        // SAFETY: the parent's bdev is a registered quorum while it has I/O.
        unsafe { quorum_bdev::from_ctx((*(*self.0).bdev).ctxt) }
    }

    fn channel<'a>(self) -> &'a mut QuorumChannel {
        // SAFETY: the parent's channel is the quorum's channel on this thread.
        unsafe { channel::from_io_channel(sys::spdk_bdev_io_get_io_channel(self.0)) }
    }

    fn block_params<'a>(self) -> &'a sys::spdk_bdev_io_block_params {
        // SAFETY: every parent served here carries block params except resets, for which
        // only `len` is computed (never used: resets have no buffers).
        unsafe { &(*self.0).u.bdev }
    }

    fn len(self) -> u64 {
        self.block_params().num_blocks * u64::from(self.quorum().core().geometry().block_size)
    }

    /// Whether the caller gave a data buffer (SPDK lets reads leave it to the bdev).
    fn has_buffer(self) -> bool {
        let p = self.block_params();
        // SAFETY: a non-null iovec array of the parent holds at least one entry.
        p.iovcnt > 0 && !p.iovs.is_null() && !unsafe { (*p.iovs).iov_base }.is_null()
    }

    fn iovs<'a>(self) -> &'a [IoSlice<'a>] {
        let p = self.block_params();
        if p.iovs.is_null() || p.iovcnt <= 0 {
            return &[];
        }
        // SAFETY: IoSlice is guaranteed ABI-compatible with `struct iovec` on Unix; the
        // parent's iovecs stay valid until it completes.
        unsafe { std::slice::from_raw_parts(p.iovs as *const IoSlice<'a>, p.iovcnt as usize) }
    }

    fn iovs_mut<'a>(self) -> &'a mut [std::io::IoSliceMut<'a>] {
        let p = self.block_params();
        if p.iovs.is_null() || p.iovcnt <= 0 {
            return &mut [];
        }
        // SAFETY: as `iovs`; the quorum is the only writer of the parent's buffer until it
        // completes, and no child reads into it at this point.
        unsafe {
            std::slice::from_raw_parts_mut(
                p.iovs as *mut std::io::IoSliceMut<'a>,
                p.iovcnt as usize,
            )
        }
    }

    fn view<'a>(self) -> &'a View {
        // SAFETY: set from a live Rc for the I/O's life.
        unsafe { &*(*self.ctx()).view }
    }
}

fn io_kind(io_type: sys::spdk_bdev_io_type) -> Option<IoKind> {
    Some(match io_type {
        sys::SPDK_BDEV_IO_TYPE_READ => IoKind::Read,
        sys::SPDK_BDEV_IO_TYPE_WRITE => IoKind::Write,
        sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES => IoKind::WriteZeroes,
        sys::SPDK_BDEV_IO_TYPE_UNMAP => IoKind::Unmap,
        sys::SPDK_BDEV_IO_TYPE_FLUSH => IoKind::Flush,
        sys::SPDK_BDEV_IO_TYPE_RESET => IoKind::Reset,
        _ => return None,
    })
}

/// SPDK's `submit_request` for quorum bdevs.
pub unsafe extern "C" fn submit_request(
    ch: *mut sys::spdk_io_channel,
    bdev_io: *mut sys::spdk_bdev_io,
) {
    let parent = Parent(bdev_io);
    // SAFETY: a live bdev_io SPDK hands to this module.
    let io_type = unsafe { (*bdev_io).type_ } as sys::spdk_bdev_io_type;
    let Some(kind) = io_kind(io_type) else {
        // Not advertised (see io_type_supported): SPDK's answer for anything else.
        // SAFETY: completing the bdev_io we were given, once.
        return unsafe { sys::spdk_bdev_io_complete(bdev_io, sys::SPDK_BDEV_IO_STATUS_FAILED) };
    };
    if kind == IoKind::Read && !parent.has_buffer() {
        // The caller left the buffer to the bdev: SPDK's pool provides it, then we start.
        // SAFETY: a read bdev_io; SPDK calls back once with the buffer set (or failure).
        return unsafe {
            sys::spdk_bdev_io_get_buf(bdev_io, Some(parent_buffer_ready), parent.len())
        };
    }
    // SAFETY: SPDK submits on the thread of `ch`, the quorum's channel there.
    start(parent, kind, unsafe { channel::from_io_channel(ch) });
}

unsafe extern "C" fn parent_buffer_ready(
    ch: *mut sys::spdk_io_channel,
    bdev_io: *mut sys::spdk_bdev_io,
    success: bool,
) {
    if !success {
        // SAFETY: completing the read we were given, once.
        return unsafe { sys::spdk_bdev_io_complete(bdev_io, sys::SPDK_BDEV_IO_STATUS_NOMEM) };
    }
    // SAFETY: SPDK calls back on the thread of `ch`, the quorum's channel there.
    start(Parent(bdev_io), IoKind::Read, unsafe {
        channel::from_io_channel(ch)
    });
}

/// Sets up the context and hands the parent to the state machine.
fn start(parent: Parent, kind: IoKind, channel: &QuorumChannel) {
    let q = parent.quorum();
    if kind == IoKind::Read
        && parent.iovs().iter().map(|s| s.len() as u64).sum::<u64>() != parent.len()
    {
        let len = parent.len();
        // The vote compares exactly the requested bytes; SPDK's callers size iovecs so.
        log::error(&format!(
            "quorum {}: read iovecs do not match its length {len}",
            q.name()
        ));
        // SAFETY: completing the bdev_io we were given, once.
        return unsafe { sys::spdk_bdev_io_complete(parent.0, sys::SPDK_BDEV_IO_STATUS_FAILED) };
    }
    let view = channel.view().clone();
    let participants = view.everyone();
    let p = parent.block_params();
    // A reset names no blocks (its params are another member of the union).
    let (offset_blocks, num_blocks) = match kind {
        IoKind::Reset => (0, 0),
        _ => (p.offset_blocks, p.num_blocks),
    };
    // SAFETY: driver_ctx is ours and sized for QuorumBdevIo; fields are written before any
    // reference to the whole context is made (the memory's slots stay uninitialised until
    // used).
    unsafe {
        let ctx = parent.ctx();
        std::ptr::addr_of_mut!((*ctx).state).write(QuorumIo::new());
        std::ptr::addr_of_mut!((*ctx).view).write(Rc::into_raw(view));
        std::ptr::addr_of_mut!((*ctx).into_parent).write(None);
        std::ptr::addr_of_mut!((*ctx).op).write(ChildOp::Parent(kind));
        std::ptr::addr_of_mut!((*ctx).lend).write(false);
        std::ptr::addr_of_mut!((*ctx).unsent).write(ChildSet::EMPTY);
        std::ptr::addr_of_mut!((*ctx).unbuffered).write(ChildSet::EMPTY);
        (*std::ptr::addr_of_mut!((*ctx).memory)).clear();
    }
    let req = Request {
        kind,
        offset_blocks,
        num_blocks,
    };
    let view = parent.view();
    // SAFETY: initialised just above.
    let step = unsafe { parent.state() }
        .state
        .start(q.core(), view, req, participants);
    run(parent, step);
}

/// Does what the state machine says until it waits for SPDK.
fn run(parent: Parent, mut step: Step) {
    loop {
        step = match step {
            Step::Wait => return,
            Step::Submit(submit) => return begin_round(parent, submit_round(submit)),
            Step::Vote => vote(parent),
            Step::Rewrite(rewrite) => {
                prepare_rewrite(parent, rewrite);
                return begin_round(
                    parent,
                    Round {
                        op: ChildOp::Rewrite,
                        children: rewrite.children,
                        into_parent: None,
                    },
                );
            }
            Step::Complete(completion) => return complete(parent, completion),
            Step::Retry => {
                // A rewrite holds the blocks: SPDK retries NOMEM I/O once other I/O of the
                // channel completes, which is when rewrites finish.
                release(parent);
                // SAFETY: completing the parent once; SPDK resubmits it.
                return unsafe {
                    sys::spdk_bdev_io_complete(parent.0, sys::SPDK_BDEV_IO_STATUS_NOMEM)
                };
            }
            Step::Stop(mismatch) => {
                log::error(&mismatch.to_string());
                eprintln!("{mismatch}");
                std::process::exit(1);
            }
        };
    }
}

/// The vote of a read whose children all completed. Kept out of `run`: its per-child table
/// would otherwise sit in the stack frame of every write as well.
#[inline(never)]
fn vote(parent: Parent) -> Step {
    let view = parent.view();
    // SAFETY: the context is initialised; the vote reads memory whose child reads all
    // completed.
    let io = unsafe { parent.state() };
    let len = parent.len();
    let into_parent = io.into_parent;
    if io.lend {
        if let Some(first) = into_parent.filter(|&c| io.memory.holds(c)) {
            // SAFETY: the first child's lent answer, copied where the core expects it.
            ChildBytes::Flat(unsafe { io.memory.data(first, len) })
                .copy_to_segments(parent.iovs_mut());
        }
    }
    let memory = &io.memory;
    let iovs = parent.iovs();
    io.state.vote(parent.quorum().core(), view, |c| {
        if Some(c) == into_parent {
            ChildBytes::Segments(iovs)
        } else {
            // SAFETY: a successful child read, completed, into a buffer or lent memory.
            ChildBytes::Flat(unsafe { memory.data(c, len) })
        }
    })
}

/// One round of child I/O: an operation sent to a set of children.
struct Round {
    op: ChildOp,
    children: ChildSet,
    into_parent: Option<usize>,
}

fn submit_round(s: Submit) -> Round {
    Round {
        op: ChildOp::Parent(s.kind),
        children: s.children,
        into_parent: s.into_parent,
    }
}

/// Starts a round: buffers for reads that do not go into the parent, then the child I/Os.
fn begin_round(parent: Parent, round: Round) {
    let view = parent.view();
    // SAFETY: the context is initialised.
    let io = unsafe { parent.state() };
    io.op = round.op;
    io.unsent = round.children;
    let held = io.memory.buffered();
    io.unbuffered = match round.op {
        ChildOp::Parent(IoKind::Read) => {
            io.into_parent = round.into_parent;
            // A vote over children that all lend reads them all without buffers.
            io.lend = view.all_lend() && round.children.len() > 1;
            let mut own = round.children;
            if let Some(c) = round.into_parent {
                own.remove(c);
            }
            if io.lend {
                ChildSet::EMPTY
            } else {
                ChildSet(own.0 & !held.0)
            }
        }
        // Every loser writes from a buffer of its own holding the winner.
        ChildOp::Rewrite => ChildSet(round.children.0 & !held.0),
        ChildOp::Parent(_) => ChildSet::EMPTY,
    };
    continue_round(parent);
}

/// Gets the round's missing buffers (waiting for the pool if it must), then sends what is
/// unsent; children that cannot be sent fail at once.
fn continue_round(parent: Parent) {
    let view = parent.view();
    // SAFETY: the context is initialised.
    let io = unsafe { parent.state() };
    while let Some(c) = io.unbuffered.iter().next() {
        let len = parent.len();
        // SAFETY: the thread's iobuf channel; the wait entry lives in the context until the
        // buffer arrives (the I/O cannot complete while waiting).
        let buf = unsafe {
            sys::spdk_iobuf_get(
                parent.channel().iobuf(),
                len,
                &mut io.buf_wait,
                Some(buffer_ready),
            )
        };
        if buf.is_null() {
            return; // buffer_ready continues
        }
        give_buffer(io, c, buf);
    }
    let q = parent.quorum();
    while let Some(c) = io.unsent.iter().next() {
        let slot = &view.slots[c];
        let rc = match (&slot.channel, &slot.desc) {
            (Some(ch), Some(desc)) => send(parent, io, c, desc.raw(), ch.raw()),
            _ => -libc::ENODEV, // hot-removed: a failed child
        };
        if rc == -libc::ENOMEM {
            // No bdev_io left for the child: SPDK calls back when one is free.
            io.io_wait.bdev = slot.bdev;
            io.io_wait.cb_fn = Some(resume_round);
            io.io_wait.cb_arg = parent.0 as *mut c_void;
            let ch = slot
                .channel
                .as_ref()
                .map_or(std::ptr::null_mut(), |ch| ch.raw());
            // SAFETY: the entry lives in the context, which outlives the wait.
            if unsafe { sys::spdk_bdev_queue_io_wait(slot.bdev, ch, &mut io.io_wait) } == 0 {
                return;
            }
        }
        io.unsent.remove(c);
        if rc != 0 {
            // A child that cannot be sent fails now. Until the last child is sent the
            // state machine waits for it, so only the last failure can finish the parent,
            // after which nothing of it may be touched.
            let step = io.state.on_child_done(q.core(), view, c, Err(-rc));
            if step != Step::Wait {
                return run(parent, step);
            }
        }
    }
}

fn give_buffer(io: &mut QuorumBdevIo, c: usize, buf: *mut c_void) {
    io.memory.give_buffer(c, buf);
    io.unbuffered.remove(c);
}

unsafe extern "C" fn buffer_ready(entry: *mut sys::spdk_iobuf_entry, buf: *mut c_void) {
    // SAFETY: `entry` is the `buf_wait` of a waiting parent's context, which sits in its
    // bdev_io's driver_ctx.
    let parent = Parent(unsafe {
        let ctx = (entry as *mut u8).sub(offset_of!(QuorumBdevIo, buf_wait));
        bdev_io_from_ctx(ctx as *mut c_void)
    });
    // SAFETY: the context is initialised; nothing else refers to it now.
    let io = unsafe { parent.state() };
    if let Some(c) = io.unbuffered.iter().next() {
        give_buffer(io, c, buf);
    }
    continue_round(parent);
}

unsafe extern "C" fn resume_round(arg: *mut c_void) {
    continue_round(Parent(arg as *mut sys::spdk_bdev_io));
}

/// Sends child `c` its part of the round; SPDK's return code (0, or -errno).
fn send(
    parent: Parent,
    io: &QuorumBdevIo,
    c: usize,
    desc: *mut sys::spdk_bdev_desc,
    ch: *mut sys::spdk_io_channel,
) -> i32 {
    let p = parent.block_params();
    let (offset, blocks) = (p.offset_blocks, p.num_blocks);
    let cb = Some(child_done as unsafe extern "C" fn(*mut sys::spdk_bdev_io, bool, *mut c_void));
    let arg = parent.0 as *mut c_void;
    // SAFETY: an open descriptor and this thread's channel of the child; the parent's iovecs
    // and the context's buffers stay valid until the child completes (the parent waits for
    // every child).
    unsafe {
        match io.op {
            ChildOp::Parent(IoKind::Read) if io.lend => {
                sys::spdk_bdev_read_blocks(desc, ch, std::ptr::null_mut(), offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::Read) if io.into_parent == Some(c) => {
                sys::spdk_bdev_readv_blocks(desc, ch, p.iovs, p.iovcnt, offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::Read) => {
                sys::spdk_bdev_read_blocks(desc, ch, io.memory.buffer(c), offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::Write) => {
                sys::spdk_bdev_writev_blocks(desc, ch, p.iovs, p.iovcnt, offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::WriteZeroes) => {
                sys::spdk_bdev_write_zeroes_blocks(desc, ch, offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::Unmap) => {
                sys::spdk_bdev_unmap_blocks(desc, ch, offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::Flush) => {
                sys::spdk_bdev_flush_blocks(desc, ch, offset, blocks, cb, arg)
            }
            ChildOp::Parent(IoKind::Reset) => sys::spdk_bdev_reset(desc, ch, cb, arg),
            ChildOp::Rewrite => {
                // From this loser's own copy of the winner (the parent holds it): a child
                // may change the memory it writes from (SPDK's error bdev does).
                ChildBytes::Segments(parent.iovs()).copy_to(io.memory.buffer_mut(c, parent.len()));
                sys::spdk_bdev_write_blocks(desc, ch, io.memory.buffer(c), offset, blocks, cb, arg)
            }
        }
    }
}

/// Before a rewrite: the winner's data into the parent, if it is not there; lent memory is
/// not needed after that (each loser writes from a copy of the parent).
fn prepare_rewrite(parent: Parent, rewrite: Rewrite) {
    // SAFETY: the context is initialised; every child read completed.
    let io = unsafe { parent.state() };
    if rewrite.copy_to_parent {
        // SAFETY: the winner did not read into the parent: its buffer or lent memory.
        ChildBytes::Flat(unsafe { io.memory.data(rewrite.winner, parent.len()) })
            .copy_to_segments(parent.iovs_mut());
    }
    io.memory.release_lent();
}

unsafe extern "C" fn child_done(child_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    let parent = Parent(arg as *mut sys::spdk_bdev_io);
    let view = parent.view();
    // SAFETY: SPDK hands the completed child bdev_io, ours until freed.
    let bdev = unsafe { (*child_io).bdev };
    let result = if success {
        Ok(())
    } else {
        let mut aio = 0;
        // SAFETY: the completed child bdev_io.
        unsafe { sys::spdk_bdev_io_get_aio_status(child_io, &mut aio) };
        Err(if aio < 0 { -aio } else { libc::EIO })
    };
    // SAFETY: the context is initialised; nothing else refers to it now.
    let io = unsafe { parent.state() };
    let lent = success && io.lend && matches!(io.op, ChildOp::Parent(IoKind::Read));
    let Some(c) = view.position(bdev) else {
        // SAFETY: the completed child bdev_io, freed once.
        unsafe { sys::spdk_bdev_free_io(child_io) };
        return log::error(&format!(
            "quorum {}: completion from a bdev that is not its child",
            parent.quorum().name()
        ));
    };
    if lent {
        // Its iovec points at the memory the child lent: kept until the vote is done.
        io.memory.keep_lent(c, child_io);
    } else {
        // SAFETY: the completed child bdev_io, freed once.
        unsafe { sys::spdk_bdev_free_io(child_io) };
    }
    let step = io
        .state
        .on_child_done(parent.quorum().core(), view, c, result);
    run(parent, step);
}

/// Gives back the buffers, the lent memory and the view.
fn release(parent: Parent) {
    // SAFETY: the context is initialised; the I/O has no child I/O left.
    let io = unsafe { parent.state() };
    if !io.memory.is_empty() {
        // SAFETY: the buffers came from this thread's iobuf channel with the parent's length.
        unsafe { io.memory.release(parent.channel().iobuf(), parent.len()) };
    }
    // SAFETY: the view was leaked from an Rc at start, and is taken back once.
    drop(unsafe { Rc::from_raw(io.view) });
}

fn complete(parent: Parent, completion: Completion) {
    if let Some(winner) = completion.copy_from {
        // SAFETY: the context is initialised.
        let io = unsafe { parent.state() };
        // SAFETY: the winner did not read into the parent: its buffer or lent memory holds
        // its answer.
        let answer = unsafe { io.memory.data(winner, parent.len()) };
        ChildBytes::Flat(answer).copy_to_segments(parent.iovs_mut());
    }
    release(parent);
    // SAFETY: completing the parent once; it is not touched afterwards.
    unsafe {
        match completion.result {
            Ok(()) => sys::spdk_bdev_io_complete(parent.0, sys::SPDK_BDEV_IO_STATUS_SUCCESS),
            Err(libc::EIO) => sys::spdk_bdev_io_complete(parent.0, sys::SPDK_BDEV_IO_STATUS_FAILED),
            Err(errno) => sys::spdk_bdev_io_complete_aio_status(parent.0, -errno),
        }
    }
}
