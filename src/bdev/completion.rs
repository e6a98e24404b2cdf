//! The per-reactor completion queue and delivery: a completion never runs inside its own
//! submission (no re-entrancy, bounded stack), as SPDK defers completions; each completion
//! is accounted on its channel (or resubmitted after NOMEM) and handed to its submitter's
//! callback, with the clock read once per chain of calls.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use super::io::{DeferredWork, IoHandle};
use super::io_type::IoType;
use super::layer::ChannelInner;
use crate::runtime::clock::ticks;
use crate::runtime::register_poller;

thread_local! {
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
    /// Finishes the I/O with `Ok(())` or `Err(errno)` (positive). The submitter's callback
    /// runs from this reactor's completion poller, never from inside this call.
    #[inline]
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

/// Hands an I/O its module refused for lack of resources (NOMEM) to the module again.
fn resubmit(layer: Rc<ChannelInner>, mut io: IoHandle) {
    io.layer = Some(layer.clone());
    note_activity();
    layer.backend().submit(io);
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
            return resubmit(layer, io);
        }
        io.complete_tick = now;
        let latency = now.wrapping_sub(io.submit_tick);
        layer.record_completion(io.io_type, io.fua, io.num_blocks, io.status == 0, latency);
    }
    if let Some(done) = io.done.take() {
        let _flag = CallbackFlag::set(true);
        done.io_done(io);
    }
}
