//! The quorum's per-reactor data path: the host side of `quorum_core`'s per-I/O state
//! machine. A parent I/O takes a slot of this channel's request slab (no allocation per I/O
//! once warm), the state machine says what to do, and this file moves the bytes: child 0
//! reads straight into the caller's buffer and the others into pooled buffers, so agreement
//! costs one memcmp per extra child and no copy. When every child can lend its memory
//! (zcopy: a quorum of malloc bdevs), the children after the first are compared in place
//! instead of copied into pooled buffers first. A rewrite goes out from pooled copies of the
//! winner, never from the caller's buffer.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use arrayvec::ArrayVec;
use quorum_core::io::{tag, Completion, Rewrite, Submit};
use quorum_core::{
    ChildBytes, ChildCounters, ChildSet, Children, CounterSnapshot, IoKind, QuorumIo, Request,
    Step, MAX_CHILDREN,
};

use super::QuorumShared;
use crate::bdev::{BdevChannel, IoBuf, IoChannel, IoDone, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::{register_poller, unregister_poller, PollerId};

/// One child as this reactor sees it.
struct ChildEntry {
    id: u64,
    name: Arc<str>,
    channel: IoChannel,
    counters: Rc<ChildCounters>,
}

/// The children a request works on, as the state machine indexes them.
struct ChildList(Vec<ChildEntry>);

impl Children for ChildList {
    fn name(&self, child: usize) -> &str {
        &self.0[child].name
    }

    fn counters(&self, child: usize) -> &ChildCounters {
        &self.0[child].counters
    }
}

/// Where a child's data is.
enum ChildData {
    /// Nothing of the request's (a write's child, or a child not read).
    Unused,
    /// In the caller's buffer (the child reading into the parent).
    Parent,
    /// In a pooled buffer: what the child read, or the copy of the winner it is rewritten
    /// from.
    Pool(DmaBuf),
    /// In the child's own memory, lent by a zcopy; [`IoBuf::NONE`] until it completes.
    Lent(IoBuf),
}

impl ChildData {
    /// The child's data, `parent` being the caller's buffer.
    ///
    /// # Safety
    /// Only once the child's I/O completed, while the request holds the child's channel.
    unsafe fn bytes<'a>(&'a self, parent: &'a [u8]) -> &'a [u8] {
        match self {
            ChildData::Unused => &[],
            ChildData::Parent => parent,
            ChildData::Pool(b) => b.as_slice(),
            ChildData::Lent(view) => view.as_slice(),
        }
    }
}

/// A parent I/O in flight.
struct RequestSlot {
    parent: Option<IoHandle>,
    children: Option<Rc<ChildList>>,
    io: QuorumIo,
    /// Per child of `children` (reads only); as many entries as the most children a read
    /// had, `Unused` between requests, so it is not resized per I/O.
    data: Vec<ChildData>,
}

/// How long a write waits before retrying when a rewrite holds its blocks.
const DEFERRED_WRITE_RETRY: Duration = Duration::from_micros(20);

/// The state machine's name for a bdev I/O type; `None` for zcopy, which a quorum never
/// claims to support (the bdev layer refuses it before it gets here).
fn kind_of(io_type: IoType) -> Option<IoKind> {
    Some(match io_type {
        IoType::Read => IoKind::Read,
        IoType::Write => IoKind::Write,
        IoType::WriteZeroes => IoKind::WriteZeroes,
        IoType::Unmap => IoKind::Unmap,
        IoType::Flush => IoKind::Flush,
        IoType::Reset => IoKind::Reset,
        IoType::Zcopy => return None,
    })
}

/// The bdev I/O type of a child I/O the state machine asks for.
fn io_type_of(kind: IoKind) -> IoType {
    match kind {
        IoKind::Read => IoType::Read,
        IoKind::Write => IoType::Write,
        IoKind::WriteZeroes => IoType::WriteZeroes,
        IoKind::Unmap => IoType::Unmap,
        IoKind::Flush => IoType::Flush,
        IoKind::Reset => IoType::Reset,
    }
}

/// The quorum's channel on one reactor.
pub(super) struct QuorumChannel {
    shared: Arc<QuorumShared>,
    me: Weak<QuorumChannel>,
    children: RefCell<Rc<ChildList>>,
    requests: RefCell<Vec<RequestSlot>>,
    free: RefCell<Vec<usize>>,
    deferred_writes: RefCell<VecDeque<IoHandle>>,
    retry_poller: Cell<Option<PollerId>>,
}

impl QuorumChannel {
    pub(super) fn new(shared: Arc<QuorumShared>) -> Rc<QuorumChannel> {
        let ch = Rc::new_cyclic(|me| QuorumChannel {
            shared,
            me: me.clone(),
            children: RefCell::new(Rc::new(ChildList(Vec::new()))),
            requests: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            deferred_writes: RefCell::new(VecDeque::new()),
            retry_poller: Cell::new(None),
        });
        ch.refresh_children();
        ch
    }

    /// Rebuilds this reactor's view of the children from the quorum's list, keeping the
    /// channels and counters of children that stay. In-flight requests keep the view they
    /// started with, so a removed child's channel lives until they finish.
    pub(super) fn refresh_children(&self) {
        let current = self.children.borrow().clone();
        let wanted = self.shared.children_snapshot();
        let mut next = Vec::with_capacity(wanted.len());
        for child in wanted {
            if let Some(existing) = current.0.iter().find(|c| c.id == child.id) {
                next.push(ChildEntry {
                    id: existing.id,
                    name: existing.name.clone(),
                    channel: existing.channel.clone(),
                    counters: existing.counters.clone(),
                });
                continue;
            }
            match child.bdev.io_channel() {
                Ok(channel) => next.push(ChildEntry {
                    id: child.id,
                    name: child.name.clone(),
                    channel,
                    counters: Rc::new(ChildCounters::default()),
                }),
                Err(e) => tracing::error!(child = %child.name, "quorum child channel: {e}"),
            }
        }
        for gone in current
            .0
            .iter()
            .filter(|c| !next.iter().any(|n| n.id == c.id))
        {
            self.shared
                .retire_counters(gone.id, &gone.counters.snapshot());
        }
        *self.children.borrow_mut() = Rc::new(ChildList(next));
    }

    /// Counters of every child as seen from this reactor, for aggregation.
    pub(super) fn counters(&self) -> Vec<(u64, CounterSnapshot)> {
        self.children
            .borrow()
            .0
            .iter()
            .map(|c| (c.id, c.counters.snapshot()))
            .collect()
    }

    fn done_handle(&self) -> Rc<dyn IoDone> {
        self.me.upgrade().expect("channel alive while submitting")
    }

    fn alloc_slot(&self) -> usize {
        if let Some(slot) = self.free.borrow_mut().pop() {
            return slot;
        }
        let mut requests = self.requests.borrow_mut();
        requests.push(RequestSlot {
            parent: None,
            children: None,
            io: QuorumIo::new(),
            data: Vec::with_capacity(MAX_CHILDREN),
        });
        requests.len() - 1
    }

    fn free_slot(&self, slot: usize) -> IoHandle {
        let parent = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            r.children = None;
            // Entries stay (no resizing per I/O); a read's buffers go back to the pool.
            if r.io.kind() == IoKind::Read {
                for d in r.data.iter_mut() {
                    *d = ChildData::Unused;
                }
            }
            r.parent.take().expect("request has a parent")
        };
        self.free.borrow_mut().push(slot);
        parent
    }

    /// Starts a parent I/O over every current child.
    fn start(&self, io: IoHandle, kind: IoKind) {
        let children = self.children.borrow().clone();
        let slot = self.alloc_slot();
        let step = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            let request = Request {
                kind,
                offset_blocks: io.offset_blocks,
                num_blocks: io.num_blocks,
            };
            let participants = ChildSet::first(children.0.len());
            let step =
                r.io.start(&self.shared.core, &*children, request, participants);
            r.parent = Some(io);
            r.children = Some(children);
            step
        };
        // The usual first step, without the step loop's frame.
        match step {
            Step::Submit(submit) => self.submit_children(slot, submit),
            step => self.advance(slot, step, false),
        }
    }

    /// Carries out `step` and the steps that follow at once. `in_callback`: the path began
    /// in a child's completion callback, where the parent may be delivered at once.
    fn advance(&self, slot: usize, mut step: Step, in_callback: bool) {
        loop {
            step = match step {
                Step::Wait => return,
                Step::Submit(submit) => return self.submit_children(slot, submit),
                Step::Vote => self.vote(slot),
                Step::Rewrite(rewrite) => return self.rewrite(slot, rewrite),
                Step::Complete(c) => return self.complete(slot, c, in_callback),
                Step::Retry => return self.defer_write(slot),
                Step::Stop(mismatch) => {
                    // blkverify's stop, as QEMU's quorum_compare: message, then exit 1.
                    eprintln!("{mismatch}");
                    std::process::exit(1);
                }
            };
        }
    }

    /// Sends the parent's operation to the children the state machine named.
    fn submit_children(&self, slot: usize, submit: Submit) {
        let mut views = ArrayVec::<(usize, IoType, IoBuf), MAX_CHILDREN>::new();
        let (children, offset, blocks, fua) = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            let parent = r.parent.as_ref().expect("parent");
            let children = r.children.clone().expect("children");
            let is_read = submit.kind == IoKind::Read;
            // Only when all lend: a lent view shows the child's memory as of the vote, while
            // a copying child's data is fixed when it completes. Children that all complete
            // as their completions are delivered (memory bdevs, in submission order) are
            // voted on before any later I/O's data moves; with a slower child among them, a
            // write submitted after the read could reach the lent memory first and be
            // reported as a bad version.
            let zcopy = is_read
                && children
                    .0
                    .iter()
                    .all(|c| c.channel.bdev().io_type_supported(IoType::Zcopy));
            if is_read && r.data.len() < children.0.len() {
                r.data.resize_with(children.0.len(), || ChildData::Unused);
            }
            for c in submit.children {
                let view = if !is_read {
                    (io_type_of(submit.kind), parent.buf)
                } else if submit.into_parent == Some(c) {
                    r.data[c] = ChildData::Parent;
                    (IoType::Read, parent.buf)
                } else if zcopy {
                    r.data[c] = ChildData::Lent(IoBuf::NONE);
                    (IoType::Zcopy, IoBuf::NONE)
                } else {
                    let mut b = DmaBuf::new(parent.buf.len());
                    // SAFETY: the buffer stays in the request until the request is freed,
                    // after every child I/O using it completed.
                    let view = unsafe { IoBuf::from_dma(&mut b) };
                    r.data[c] = ChildData::Pool(b);
                    (IoType::Read, view)
                };
                views.push((c, view.0, view.1));
            }
            (
                children,
                parent.offset_blocks,
                parent.num_blocks,
                parent.fua,
            )
        };
        let done = self.done_handle();
        // By reference: moving the array into an iterator would copy all its 64 entries.
        for &(c, io_type, view) in &views {
            let mut cio = IoHandle::new(
                io_type,
                offset,
                blocks,
                view,
                done.clone(),
                tag::encode(slot, c),
            );
            cio.fua = fua;
            children.0[c].channel.submit(cio);
        }
    }

    /// Hands the children's data to the state machine's vote.
    fn vote(&self, slot: usize) -> Step {
        let mut requests = self.requests.borrow_mut();
        let r = &mut requests[slot];
        let parent = r.parent.as_ref().expect("parent");
        // SAFETY: every child I/O finished; the parent's buffer is ours until completion.
        let parent_data = unsafe { parent.buf.as_slice() };
        let data = &r.data;
        let children = r.children.as_deref().expect("children");
        r.io.vote(&self.shared.core, children, |c| {
            // SAFETY: the child's I/O completed; the request holds its channel.
            ChildBytes::Flat(unsafe { data[c].bytes(parent_data) })
        })
    }

    /// Writes the winner back to the children that lost the vote, each from a pooled copy
    /// of its own: the caller's buffer is never handed to a child, so nothing a child does
    /// with the memory it writes from reaches the caller.
    fn rewrite(&self, slot: usize, rewrite: Rewrite) {
        let mut views = ArrayVec::<(usize, IoBuf), MAX_CHILDREN>::new();
        let (children, offset, blocks) = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            let parent = r.parent.as_ref().expect("parent");
            // SAFETY: the parent's buffer is ours until completion and no child holds it
            // now; the winner's I/O completed and the request holds its channel.
            let winning = unsafe {
                let winning = parent.buf.as_mut_slice();
                if rewrite.copy_to_parent {
                    winning.copy_from_slice(r.data[rewrite.winner].bytes(&[]));
                }
                winning
            };
            for c in rewrite.children {
                let mut b = DmaBuf::new(winning.len());
                b.as_mut_slice().copy_from_slice(winning);
                // SAFETY: the buffer stays in the request until it is freed, after the
                // rewrite completed.
                views.push((c, unsafe { IoBuf::from_dma(&mut b) }));
                r.data[c] = ChildData::Pool(b);
            }
            let children = r.children.clone().expect("children");
            (children, parent.offset_blocks, parent.num_blocks)
        };
        let done = self.done_handle();
        for &(c, view) in &views {
            children.0[c].channel.submit(IoHandle::new(
                IoType::Write,
                offset,
                blocks,
                view,
                done.clone(),
                tag::encode(slot, c),
            ));
        }
    }

    /// Completes the parent as the state machine decided.
    fn complete(&self, slot: usize, completion: Completion, in_callback: bool) {
        if let Some(winner) = completion.copy_from {
            let requests = self.requests.borrow();
            let r = &requests[slot];
            let parent = r.parent.as_ref().expect("parent");
            // SAFETY: the parent's buffer is ours until completion and is not the winner's;
            // the winner's I/O completed and the request holds its channel; sizes match.
            unsafe {
                parent
                    .buf
                    .as_mut_slice()
                    .copy_from_slice(r.data[winner].bytes(&[]));
            }
        }
        let parent = self.free_slot(slot);
        if in_callback {
            parent.complete_from_callback(completion.result);
        } else {
            parent.complete(completion.result);
        }
    }

    /// Keeps a write a rewrite holds back, and retries it shortly.
    fn defer_write(&self, slot: usize) {
        let io = self.free_slot(slot);
        self.deferred_writes.borrow_mut().push_back(io);
        if self.retry_poller.get().is_some() {
            return;
        }
        let me = self.me.clone();
        let id = register_poller(
            Box::new(move || me.upgrade().map_or(0, |ch| ch.retry_deferred_writes())),
            Some(DEFERRED_WRITE_RETRY),
            None,
        );
        self.retry_poller.set(Some(id));
    }

    fn retry_deferred_writes(&self) -> usize {
        let waiting = std::mem::take(&mut *self.deferred_writes.borrow_mut());
        let n = waiting.len();
        for io in waiting {
            self.submit(io);
        }
        if self.deferred_writes.borrow().is_empty() {
            if let Some(id) = self.retry_poller.take() {
                unregister_poller(id);
            }
        }
        n
    }
}

impl Drop for QuorumChannel {
    fn drop(&mut self) {
        for c in self.children.borrow().0.iter() {
            self.shared.retire_counters(c.id, &c.counters.snapshot());
        }
        if let Some(id) = self.retry_poller.take() {
            unregister_poller(id);
        }
    }
}

impl BdevChannel for QuorumChannel {
    fn submit(&self, io: IoHandle) {
        match kind_of(io.io_type) {
            Some(kind) => self.start(io, kind),
            None => io.complete(Err(libc::ENOTSUP)),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl IoDone for QuorumChannel {
    fn io_done(&self, io: IoHandle) {
        let (slot, child) = tag::decode(io.tag);
        let status = io.status();
        let lent = (io.io_type == IoType::Zcopy && status.is_ok()).then_some(io.buf);
        drop(io);
        let step = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            if let Some(view) = lent {
                r.data[child] = ChildData::Lent(view);
            }
            let children = r.children.as_deref().expect("children");
            r.io.on_child_done(&self.shared.core, children, child, status)
        };
        // Most completions only wait for the others: skip the step loop's frame for them.
        if step != Step::Wait {
            self.advance(slot, step, true);
        }
    }
}
