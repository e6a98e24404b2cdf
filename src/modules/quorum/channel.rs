//! The quorum's per-reactor data path. Every parent I/O fans out to all children at once on
//! this reactor; child 0 reads straight into the caller's buffer and the others into pooled
//! buffers, so agreement costs one memcmp per extra child and no copy. When every child can
//! lend its memory (zcopy: a quorum of malloc bdevs), the children after the first are
//! compared in place instead of copied into pooled buffers first. Requests live in a
//! per-channel slab indexed by the child I/O's tag: no allocation per I/O once warm.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use arrayvec::ArrayVec;

use super::counters::ChildCounters;
use super::guard::ReadTicket;
use super::options::ReadPattern;
use super::vote::{first_difference, vote_read, vote_write, ChildResult, Verdict, MAX_CHILDREN};
use super::{events::op_type, QuorumShared};
use crate::bdev::{BdevChannel, IoBuf, IoChannel, IoDone, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::{register_poller, unregister_poller, PollerId};

/// One child as this reactor sees it.
pub(super) struct ChildEntry {
    pub(super) id: u64,
    pub(super) name: Arc<str>,
    pub(super) channel: IoChannel,
    pub(super) counters: Rc<ChildCounters>,
}

/// Where a child's read data is, for the vote.
enum ChildData {
    /// In the caller's buffer (child 0).
    Caller,
    /// In a pooled buffer the child read into.
    Pool(DmaBuf),
    /// In the child's own memory, lent by a zcopy; [`IoBuf::NONE`] until it completes.
    Lent(IoBuf),
}

impl ChildData {
    /// The child's data, `caller` being the parent's buffer.
    ///
    /// # Safety
    /// Only once the child's I/O completed, while the request holds the child's channel.
    unsafe fn bytes<'a>(&'a self, caller: &'a [u8]) -> &'a [u8] {
        match self {
            ChildData::Caller => caller,
            ChildData::Pool(b) => b.as_slice(),
            ChildData::Lent(view) => view.as_slice(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Free,
    FanOut,
    Fifo,
    Rewrite,
}

/// A parent I/O in flight.
struct Request {
    parent: Option<IoHandle>,
    children: Option<Rc<[ChildEntry]>>,
    phase: Phase,
    pending: usize,
    statuses: Vec<i32>,
    data: Vec<ChildData>,
    ticket: ReadTicket,
    guarded_write: bool,
}

/// How long a write waits before retrying when a rewrite holds its blocks.
const DEFERRED_WRITE_RETRY: Duration = Duration::from_micros(20);

/// Child tags: slot in the high bits, child index in the low byte.
fn tag(slot: usize, child: usize) -> u64 {
    ((slot as u64) << 8) | child as u64
}

/// The quorum's channel on one reactor.
pub(super) struct QuorumChannel {
    shared: Arc<QuorumShared>,
    me: Weak<QuorumChannel>,
    children: RefCell<Rc<[ChildEntry]>>,
    requests: RefCell<Vec<Request>>,
    free: RefCell<Vec<usize>>,
    deferred_writes: RefCell<VecDeque<IoHandle>>,
    retry_poller: Cell<Option<PollerId>>,
}

impl QuorumChannel {
    pub(super) fn new(shared: Arc<QuorumShared>) -> Rc<QuorumChannel> {
        let ch = Rc::new_cyclic(|me| QuorumChannel {
            shared,
            me: me.clone(),
            children: RefCell::new(Rc::from(Vec::new())),
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
            if let Some(existing) = current.iter().find(|c| c.id == child.id) {
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
            .iter()
            .filter(|c| !next.iter().any(|n| n.id == c.id))
        {
            self.shared
                .retire_counters(gone.id, &gone.counters.snapshot());
        }
        *self.children.borrow_mut() = Rc::from(next);
    }

    /// Counters of every child as seen from this reactor, for aggregation.
    pub(super) fn counters(&self) -> Vec<(u64, super::counters::CounterSnapshot)> {
        self.children
            .borrow()
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
        requests.push(Request {
            parent: None,
            children: None,
            phase: Phase::Free,
            pending: 0,
            statuses: Vec::with_capacity(MAX_CHILDREN),
            data: Vec::with_capacity(MAX_CHILDREN),
            ticket: None,
            guarded_write: false,
        });
        requests.len() - 1
    }

    fn free_slot(&self, slot: usize) -> IoHandle {
        let parent = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            r.children = None;
            r.phase = Phase::Free;
            r.data.clear();
            r.parent.take().expect("request has a parent")
        };
        self.free.borrow_mut().push(slot);
        parent
    }

    /// Sends the parent I/O to every child at once.
    fn fan_out(&self, io: IoHandle, guarded_write: bool) {
        let children = self.children.borrow().clone();
        let n = children.len();
        if n == 0 {
            io.complete(Err(libc::ENODEV));
            return;
        }
        let (io_type, offset, blocks, parent_buf, fua) =
            (io.io_type, io.offset_blocks, io.num_blocks, io.buf, io.fua);
        let is_read = io_type == IoType::Read;
        // Only when all lend: a lent view shows the child's memory as of the vote, while a
        // copying child's data is fixed when it completes. Children that all complete as
        // their completions are delivered (memory bdevs, in submission order) are voted on
        // before any later I/O's data moves; with a slower child among them, a write
        // submitted after the read could reach the lent memory first and be reported as a
        // bad version.
        let zcopy = is_read
            && children
                .iter()
                .all(|c| c.channel.bdev().io_type_supported(IoType::Zcopy));
        let slot = self.alloc_slot();
        let mut views = ArrayVec::<(IoType, IoBuf), MAX_CHILDREN>::new();
        {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            r.statuses.clear();
            r.statuses.resize(n, 0);
            r.data.clear();
            r.pending = n;
            r.phase = Phase::FanOut;
            r.guarded_write = guarded_write;
            r.ticket = match (&self.shared.guard, is_read) {
                (Some(guard), true) => guard.read_ticket(offset, blocks),
                _ => None,
            };
            for i in 0..n {
                if !is_read || i == 0 {
                    views.push((io_type, parent_buf));
                    r.data.push(ChildData::Caller);
                } else if zcopy {
                    views.push((IoType::Zcopy, IoBuf::NONE));
                    r.data.push(ChildData::Lent(IoBuf::NONE));
                } else {
                    let mut b = DmaBuf::new(parent_buf.len());
                    // SAFETY: the buffer stays in the request until the request is freed,
                    // after every child I/O using it completed.
                    views.push((io_type, unsafe { IoBuf::from_dma(&mut b) }));
                    r.data.push(ChildData::Pool(b));
                }
            }
            r.parent = Some(io);
            r.children = Some(children.clone());
        }
        let done = self.done_handle();
        for (i, (child, &(child_type, view))) in children.iter().zip(&views).enumerate() {
            child.counters.count_submit(child_type);
            let mut cio =
                IoHandle::new(child_type, offset, blocks, view, done.clone(), tag(slot, i));
            cio.fua = fua;
            child.channel.submit(cio);
        }
    }

    /// Fifo read: child 0 first, the next child on failure.
    fn start_fifo(&self, io: IoHandle) {
        let children = self.children.borrow().clone();
        if children.is_empty() {
            io.complete(Err(libc::ENODEV));
            return;
        }
        let slot = self.alloc_slot();
        {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            r.phase = Phase::Fifo;
            r.pending = 1;
            r.parent = Some(io);
            r.children = Some(children);
        }
        self.fifo_submit(slot, 0);
    }

    fn fifo_submit(&self, slot: usize, child: usize) {
        let (entry_channel, counters, offset, blocks, buf) = {
            let requests = self.requests.borrow();
            let r = &requests[slot];
            let parent = r.parent.as_ref().expect("parent");
            let entry = &r.children.as_ref().expect("children")[child];
            (
                entry.channel.clone(),
                entry.counters.clone(),
                parent.offset_blocks,
                parent.num_blocks,
                parent.buf,
            )
        };
        counters.count_submit(IoType::Read);
        entry_channel.submit(IoHandle::new(
            IoType::Read,
            offset,
            blocks,
            buf,
            self.done_handle(),
            tag(slot, child),
        ));
    }

    fn fifo_step(&self, slot: usize, child: usize, status: Result<(), i32>) {
        let errno = match status {
            Ok(()) => return self.free_slot(slot).complete_from_callback(Ok(())),
            Err(errno) => errno,
        };
        let (name, n, offset, len) = self.request_geometry(slot, child);
        self.shared
            .events
            .report_bad(&self.shared.rt, "read", &name, offset, len, Some(errno));
        if child + 1 < n {
            self.requests.borrow_mut()[slot].pending = 1;
            self.fifo_submit(slot, child + 1);
        } else {
            self.free_slot(slot).complete_from_callback(Err(errno));
        }
    }

    /// Name of `child`, child count, byte offset and length of request `slot`.
    fn request_geometry(&self, slot: usize, child: usize) -> (Arc<str>, usize, u64, u64) {
        let requests = self.requests.borrow();
        let r = &requests[slot];
        let children = r.children.as_ref().expect("children");
        let parent = r.parent.as_ref().expect("parent");
        let bs = self.shared.block_size as u64;
        (
            children[child].name.clone(),
            children.len(),
            parent.offset_blocks * bs,
            parent.num_blocks * bs,
        )
    }

    fn finish_fan_out(&self, slot: usize) {
        let io_type = self.requests.borrow()[slot]
            .parent
            .as_ref()
            .expect("parent")
            .io_type;
        if io_type == IoType::Read {
            self.finish_read(slot);
        } else {
            self.finish_write_like(slot, io_type);
        }
    }

    fn finish_read(&self, slot: usize) {
        let shared = &self.shared;
        let (verdict, children, offset, len, ticket) = {
            let requests = self.requests.borrow();
            let r = &requests[slot];
            let parent = r.parent.as_ref().expect("parent");
            // SAFETY: every child I/O finished; the parent's buffer is ours until completion.
            let parent_data = unsafe { parent.buf.as_slice() };
            // Only as many entries as children, pushed in place: a full MAX_CHILDREN array
            // cost a 1 KiB memset per read (a tenth of a quorum read over null), and
            // `collect` a 1 KiB move.
            let mut results = ArrayVec::<ChildResult<'_>, MAX_CHILDREN>::new();
            for (&status, data) in r.statuses.iter().zip(&r.data) {
                results.push(match status {
                    // SAFETY: the child's I/O completed; the request holds its channel.
                    0 => Ok(unsafe { data.bytes(parent_data) }),
                    errno => Err(errno),
                });
            }
            let bs = shared.block_size as u64;
            let offset = parent.offset_blocks * bs;
            if shared.options.blkverify {
                if let (Ok(a), Ok(b)) = (results[0], results[1]) {
                    if let Some(at) = first_difference(a, b) {
                        blkverify_stop(offset, a.len() as u64, at as u64);
                    }
                }
            }
            (
                vote_read(&results, shared.options.vote_threshold),
                r.children.clone().expect("children"),
                offset,
                parent.num_blocks * bs,
                r.ticket,
            )
        };
        self.report_failed_children(slot, &children, &verdict, "read", offset, len);
        match verdict {
            Verdict::Ok {
                winner, mismatched, ..
            } => {
                if winner != 0 {
                    let requests = self.requests.borrow();
                    let r = &requests[slot];
                    let parent = r.parent.as_ref().expect("parent");
                    // SAFETY: the parent's buffer is ours until completion and is not the
                    // winner's (child 0's); the winner's I/O completed and the request holds
                    // its channel; sizes match.
                    unsafe {
                        let src = r.data[winner].bytes(&[]);
                        parent.buf.as_mut_slice().copy_from_slice(src);
                    }
                }
                for i in mismatched.iter() {
                    children[i]
                        .counters
                        .bad_versions
                        .set(children[i].counters.bad_versions.get() + 1);
                    shared.events.report_bad(
                        &shared.rt,
                        "read",
                        &children[i].name,
                        offset,
                        len,
                        None,
                    );
                }
                if shared.options.rewrite_corrupted && !mismatched.is_empty() {
                    let blocks = len / shared.block_size as u64;
                    let start = offset / shared.block_size as u64;
                    let guard = shared.guard.as_ref().expect("rewrite has a guard");
                    if guard.begin_rewrite(start, blocks, ticket) {
                        return self.rewrite(slot, &children, mismatched.iter());
                    }
                    tracing::debug!(quorum = %shared.name, offset, "rewrite skipped: newer write");
                }
                self.free_slot(slot).complete_from_callback(Ok(()));
            }
            Verdict::Failed { errno, .. } => {
                shared.events.failure(&shared.rt, offset, len);
                self.free_slot(slot).complete_from_callback(Err(errno));
            }
        }
    }

    /// Writes the winning data (now in the parent's buffer) back to `losers`; the parent
    /// completes when they are done, whatever their outcome (QEMU ignores rewrite errors).
    fn rewrite(
        &self,
        slot: usize,
        children: &Rc<[ChildEntry]>,
        losers: impl Iterator<Item = usize> + Clone,
    ) {
        let (offset, blocks, buf) = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            r.phase = Phase::Rewrite;
            r.pending = losers.clone().count();
            let parent = r.parent.as_ref().expect("parent");
            (parent.offset_blocks, parent.num_blocks, parent.buf)
        };
        let done = self.done_handle();
        for i in losers {
            let counters = &children[i].counters;
            counters.rewrites.set(counters.rewrites.get() + 1);
            children[i].channel.submit(IoHandle::new(
                IoType::Write,
                offset,
                blocks,
                buf,
                done.clone(),
                tag(slot, i),
            ));
        }
    }

    fn finish_rewrite(&self, slot: usize) {
        let parent = self.free_slot(slot);
        if let Some(guard) = &self.shared.guard {
            guard.end_rewrite(parent.offset_blocks, parent.num_blocks);
        }
        parent.complete_from_callback(Ok(()));
    }

    fn finish_write_like(&self, slot: usize, io_type: IoType) {
        let shared = &self.shared;
        let (verdict, children, offset, len, guarded) = {
            let requests = self.requests.borrow();
            let r = &requests[slot];
            let parent = r.parent.as_ref().expect("parent");
            let mut results = ArrayVec::<Result<(), i32>, MAX_CHILDREN>::new();
            for &status in &r.statuses {
                results.push(if status == 0 { Ok(()) } else { Err(status) });
            }
            let bs = shared.block_size as u64;
            // QEMU reports a failed flush over the whole child (quorum_co_flush).
            let (offset, len) = if io_type == IoType::Flush {
                (0, shared.num_blocks * bs)
            } else {
                (parent.offset_blocks * bs, parent.num_blocks * bs)
            };
            (
                vote_write(&results, shared.options.vote_threshold),
                r.children.clone().expect("children"),
                offset,
                len,
                r.guarded_write,
            )
        };
        if io_type != IoType::Reset {
            self.report_failed_children(slot, &children, &verdict, op_type(io_type), offset, len);
        }
        let parent = self.free_slot(slot);
        if guarded {
            if let Some(guard) = &shared.guard {
                guard.end_write(parent.offset_blocks, parent.num_blocks);
            }
        }
        match verdict {
            Verdict::Ok { .. } => parent.complete_from_callback(Ok(())),
            Verdict::Failed { errno, .. } => {
                // QEMU emits QUORUM_FAILURE for writes, not for flushes.
                if matches!(io_type, IoType::Write | IoType::WriteZeroes | IoType::Unmap) {
                    shared.events.failure(&shared.rt, offset, len);
                }
                parent.complete_from_callback(Err(errno));
            }
        }
    }

    fn report_failed_children(
        &self,
        slot: usize,
        children: &[ChildEntry],
        verdict: &Verdict,
        op: &'static str,
        offset: u64,
        len: u64,
    ) {
        for i in verdict.failed().iter() {
            let errno = self.requests.borrow()[slot].statuses[i];
            self.shared.events.report_bad(
                &self.shared.rt,
                op,
                &children[i].name,
                offset,
                len,
                Some(errno),
            );
        }
    }

    /// Sends a write unless a rewrite holds its blocks, in which case it waits.
    fn submit_write(&self, io: IoHandle) {
        match &self.shared.guard {
            None => self.fan_out(io, false),
            Some(guard) => {
                if guard.begin_write(io.offset_blocks, io.num_blocks) {
                    self.fan_out(io, true);
                } else {
                    self.deferred_writes.borrow_mut().push_back(io);
                    self.arm_retry();
                }
            }
        }
    }

    fn arm_retry(&self) {
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
            self.submit_write(io);
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
        for c in self.children.borrow().iter() {
            self.shared.retire_counters(c.id, &c.counters.snapshot());
        }
        if let Some(id) = self.retry_poller.take() {
            unregister_poller(id);
        }
    }
}

impl BdevChannel for QuorumChannel {
    fn submit(&self, io: IoHandle) {
        match io.io_type {
            IoType::Read if self.shared.options.read_pattern == ReadPattern::Fifo => {
                self.start_fifo(io)
            }
            IoType::Read | IoType::Flush | IoType::Reset => self.fan_out(io, false),
            IoType::Write | IoType::WriteZeroes | IoType::Unmap => self.submit_write(io),
            // Not claimed (see `create`): the bdev layer refuses it before it gets here.
            IoType::Zcopy => io.complete(Err(libc::ENOTSUP)),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl IoDone for QuorumChannel {
    fn io_done(&self, io: IoHandle) {
        let slot = (io.tag >> 8) as usize;
        let child = (io.tag & 0xff) as usize;
        let status = io.status();
        let lent = (io.io_type == IoType::Zcopy && status.is_ok()).then_some(io.buf);
        drop(io);
        let (phase, all_done) = {
            let mut requests = self.requests.borrow_mut();
            let r = &mut requests[slot];
            if let (Some(view), Some(data)) = (lent, r.data.get_mut(child)) {
                *data = ChildData::Lent(view);
            }
            if r.phase != Phase::Rewrite {
                if let Err(errno) = status {
                    if let Some(s) = r.statuses.get_mut(child) {
                        *s = errno;
                    }
                    let counters = &r.children.as_ref().expect("children")[child].counters;
                    counters.io_errors.set(counters.io_errors.get() + 1);
                }
            }
            r.pending -= 1;
            (r.phase, r.pending == 0)
        };
        match phase {
            Phase::Fifo => self.fifo_step(slot, child, status),
            Phase::FanOut if all_done => self.finish_fan_out(slot),
            Phase::Rewrite if all_done => self.finish_rewrite(slot),
            _ => {}
        }
    }
}

/// blkverify's stop, as QEMU's quorum_compare: the message names the request and the
/// absolute offset of the first differing byte, then the process exits with status 1.
fn blkverify_stop(offset: u64, bytes: u64, at: u64) -> ! {
    eprintln!(
        "quorum: offset={offset} bytes={bytes} contents mismatch at offset {}",
        offset + at
    );
    std::process::exit(1);
}
