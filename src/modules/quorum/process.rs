//! Background jobs of a quorum, one at a time, on reactor 0, driven by their I/O completions
//! and a timed poller (no thread per job), with one pooled buffer reused for every window:
//! - rebuild: copies a child's dirty regions (all of them for a child added with
//!   `sync: "full"`) from a voted read of the synced children, then marks it synced;
//! - scrub: reads every window of all synced children, votes, and writes the winner back to
//!   the children that lost (the quorum's repairing read), counting what it found.
//!
//! Both are paced by a bandwidth limit (`quorum_core::pacing`).
//!
//! A copy never overwrites a newer client write: the job takes the rewrite guard's read
//! ticket before its voted read and claims the region with `begin_rewrite` before writing;
//! a client write that touched the region meanwhile makes the claim fail (the region is
//! marked dirty again and copied later), and client writes arriving while the copy is
//! written wait for it (the guard's retry), as SPDK raid's process window holds them.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum_core::guard::ReadTicket;
use quorum_core::pacing;
use quorum_core::params::{ProcessInfo, Progress};
use quorum_core::replica::StateEvent;
use quorum_core::{Replica, StateReason};

use super::channel::QuorumChannel;
use super::{find, QuorumShared};
use crate::bdev::{BdevChannel, BdevError, IoBuf, IoChannel, IoDone, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::{register_poller, unregister_poller, PollerId, Runtime};

/// The reactor jobs run on.
const JOB_REACTOR: usize = 0;
/// How often a job waiting (for held I/O to drain, for a region a client write holds)
/// looks again.
const JOB_TICK: Duration = Duration::from_millis(1);

/// Process options of every quorum (`bdev_quorum_set_options`, SPDK raid's names).
#[derive(Default)]
pub struct ProcessOptions {
    /// Bytes a scrub reads per window; 0: SPDK raid's default, 1 MiB.
    window_kb: AtomicU64,
    /// Rebuild bandwidth limit in MiB/s; 0: none.
    max_bandwidth_mb_sec: AtomicU64,
}

/// SPDK raid's default process window.
const DEFAULT_WINDOW_KB: u64 = 1024;

impl ProcessOptions {
    /// Sets the options given; the others stay.
    pub fn set(&self, window_kb: Option<u64>, max_bandwidth_mb_sec: Option<u64>) {
        if let Some(w) = window_kb {
            self.window_kb.store(w, Ordering::Relaxed);
        }
        if let Some(b) = max_bandwidth_mb_sec {
            self.max_bandwidth_mb_sec.store(b, Ordering::Relaxed);
        }
    }

    fn window_bytes(&self) -> u64 {
        match self.window_kb.load(Ordering::Relaxed) {
            0 => DEFAULT_WINDOW_KB << 10,
            w => w << 10,
        }
    }
}

/// What the RPCs see of a running job; shared with the reactor running it.
pub(super) struct JobStatus {
    kind: &'static str,
    target: Arc<str>,
    /// The child a rebuild copies to; none for a scrub.
    child_id: Option<u64>,
    stop: AtomicBool,
    blocks_done: AtomicU64,
    blocks_total: AtomicU64,
    /// Bandwidth limit in MiB/s (0: none).
    limit_mb_sec: u64,
}

impl JobStatus {
    /// The `process` object of `bdev_quorum_get_bdevs`.
    pub(super) fn info(&self) -> ProcessInfo {
        let done = self.blocks_done.load(Ordering::Relaxed);
        let total = self.blocks_total.load(Ordering::Relaxed).max(1);
        ProcessInfo {
            kind: self.kind,
            target: self.target.to_string(),
            progress: Progress {
                blocks: done,
                percent: (done.saturating_mul(100) / total).min(100) as u32,
            },
        }
    }
}

/// Starts a resync (dirty regions only) or, for a synced child, a full rebuild of `child`
/// of quorum `name` (`bdev_quorum_rebuild_start`). Refused (EBUSY) while a job runs on the
/// quorum, EINVAL for a faulted child.
pub fn start(rt: &Runtime, name: &str, child: &str) -> Result<(), BdevError> {
    let (_, shared) = find(rt, name)?;
    let target = shared
        .children_snapshot()
        .into_iter()
        .find(|c| &*c.name == child)
        .ok_or_else(|| BdevError::NotFound(format!("{child} (not a child of {name})")))?;
    let mut slot = shared.process.lock().unwrap_or_else(|e| e.into_inner());
    refuse_if_running(name, slot.as_deref())?;
    let synced = target.replica.readable();
    if target.replica.apply(StateEvent::ProcessStarted).is_none() {
        return Err(BdevError::Invalid(format!(
            "child {child} of quorum {name} cannot be rebuilt now (faulted or rebuilding)"
        )));
    }
    if synced {
        // Asked for a synced child: a full rebuild.
        target.replica.mark_all_dirty();
    }
    let status = Arc::new(JobStatus {
        kind: "rebuild",
        target: target.name.clone(),
        child_id: Some(target.id),
        stop: AtomicBool::new(false),
        blocks_done: AtomicU64::new(0),
        blocks_total: AtomicU64::new(
            u64::from(target.replica.status().dirty) * target.replica.region_blocks(),
        ),
        limit_mb_sec: rt
            .context::<ProcessOptions>()
            .max_bandwidth_mb_sec
            .load(Ordering::Relaxed),
    });
    *slot = Some(status.clone());
    drop(slot);
    tracing::info!(quorum = name, child, "rebuild started");
    let region_bytes = target.replica.region_blocks() * u64::from(target.bdev.block_size());
    rt.send_msg(JOB_REACTOR, move || {
        let work = match target.bdev.io_channel() {
            Ok(channel) => Work::Rebuild {
                replica: target.replica.clone(),
                target: channel,
            },
            Err(e) => {
                tracing::error!(child = %target.name, "rebuild: no channel: {e}");
                target.replica.apply(StateEvent::ProcessStopped);
                return shared.end_process();
            }
        };
        Job::launch(shared, work, status, region_bytes)
    });
    Ok(())
}

/// Starts a scrub of quorum `name` (`bdev_quorum_scrub_start`): every window read from all
/// synced children and voted on, the losers rewritten; at most `max_bandwidth_mb_sec`
/// MiB/s (0: no limit). Refused (EBUSY) while a job runs on the quorum.
pub fn scrub_start(rt: &Runtime, name: &str, max_bandwidth_mb_sec: u64) -> Result<(), BdevError> {
    let (_, shared) = find(rt, name)?;
    let mut slot = shared.process.lock().unwrap_or_else(|e| e.into_inner());
    refuse_if_running(name, slot.as_deref())?;
    let num_blocks = shared.num_blocks();
    let status = Arc::new(JobStatus {
        kind: "scrub",
        target: Arc::from(name),
        child_id: None,
        stop: AtomicBool::new(false),
        blocks_done: AtomicU64::new(0),
        blocks_total: AtomicU64::new(num_blocks),
        limit_mb_sec: max_bandwidth_mb_sec,
    });
    *slot = Some(status.clone());
    drop(slot);
    shared.scrub_counts.reset();
    tracing::info!(quorum = name, "scrub started");
    let block_size = u64::from(shared.core.geometry().block_size);
    let window_bytes = rt.context::<ProcessOptions>().window_bytes();
    let window_blocks = (window_bytes / block_size).max(1);
    let shared = shared.clone();
    rt.send_msg(JOB_REACTOR, move || {
        let work = Work::Scrub {
            window_blocks,
            next_block: Cell::new(0),
        };
        Job::launch(shared, work, status, window_blocks * block_size)
    });
    Ok(())
}

/// Stops the scrub of quorum `name` (`bdev_quorum_scrub_stop`).
pub fn scrub_stop(rt: &Runtime, name: &str) -> Result<(), BdevError> {
    let (_, shared) = find(rt, name)?;
    let slot = shared.process.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(job) if job.child_id.is_none() => {
            job.stop.store(true, Ordering::SeqCst);
            Ok(())
        }
        _ => Err(BdevError::NotFound(format!(
            "no scrub running on quorum {name}"
        ))),
    }
}

fn refuse_if_running(name: &str, running: Option<&JobStatus>) -> Result<(), BdevError> {
    match running {
        Some(job) => Err(BdevError::Busy(format!(
            "quorum {name} already runs a {} of {}",
            job.kind, job.target
        ))),
        None => Ok(()),
    }
}

/// Stops the job copying to `child` of quorum `name` (`bdev_quorum_rebuild_stop`); the
/// child stays out_of_sync with what is left dirty.
pub fn stop(rt: &Runtime, name: &str, child: &str) -> Result<(), BdevError> {
    let (_, shared) = find(rt, name)?;
    let slot = shared.process.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(job) if job.child_id.is_some() && &*job.target == child => {
            job.stop.store(true, Ordering::SeqCst);
            Ok(())
        }
        _ => Err(BdevError::NotFound(format!(
            "no rebuild of {child} running on quorum {name}"
        ))),
    }
}

/// Stops the job of a quorum, if it copies to `child_id` (being removed) or to any child
/// (`None`: the quorum is being deleted). Waits for nothing: the job sees its flag at its
/// next step and ends there, its last copy finished.
pub(super) fn stop_for(shared: &QuorumShared, child_id: Option<u64>) {
    let slot = shared.process.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(job) = slot
        .as_ref()
        .filter(|j| child_id.is_none_or(|id| j.child_id == Some(id)))
    {
        job.stop.store(true, Ordering::SeqCst);
    }
}

const READ: u64 = 0;
const WRITE: u64 = 1;
const RESET: u64 = 2;

/// What a job does with each window.
enum Work {
    /// Copy the child's dirty regions to it.
    Rebuild {
        replica: Arc<Replica>,
        target: IoChannel,
    },
    /// Read, vote and repair every window in order.
    Scrub {
        window_blocks: u64,
        next_block: Cell<u64>,
    },
}

/// Where the job is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between windows: the next [`Job::pump`] starts one.
    Ready,
    /// A reset was sent to abort the child's timed-out I/O; waiting for it to drain.
    Draining,
    /// Reading window `(offset, blocks)` through the quorum's vote.
    Reading(u64, u64, ReadTicket),
    /// Writing it to the child; the child's hold epoch when the write was issued.
    Writing(u64, u64, u64),
    /// Finished or stopped.
    Over,
}

/// One job on the job reactor.
struct Job {
    shared: Arc<QuorumShared>,
    status: Arc<JobStatus>,
    work: Work,
    me: Weak<Job>,
    /// A private quorum channel: its reads are the quorum's voted reads over synced children.
    reader: Rc<QuorumChannel>,
    buf: RefCell<DmaBuf>,
    phase: Cell<Phase>,
    cursor: Cell<u64>,
    reset_sent: Cell<bool>,
    started: Instant,
    bytes_done: Cell<u64>,
    poller: Cell<Option<PollerId>>,
}

impl Job {
    fn launch(shared: Arc<QuorumShared>, work: Work, status: Arc<JobStatus>, window_bytes: u64) {
        let job = Rc::new_cyclic(|me| Job {
            reader: QuorumChannel::new(shared.clone()),
            shared,
            status,
            work,
            me: me.clone(),
            buf: RefCell::new(DmaBuf::new(window_bytes as usize)),
            phase: Cell::new(Phase::Ready),
            cursor: Cell::new(0),
            reset_sent: Cell::new(false),
            started: Instant::now(),
            bytes_done: Cell::new(0),
            poller: Cell::new(None),
        });
        // The poller owns the job; completions hold it only while their I/O is out.
        let me = job.clone();
        let id = register_poller(Box::new(move || me.pump()), Some(JOB_TICK), None);
        job.poller.set(Some(id));
        job.pump();
    }

    fn done_handle(&self) -> Rc<dyn IoDone> {
        self.me.upgrade().expect("job alive while it has I/O")
    }

    /// Moves the job on if it is between windows; returns how much it did (poller contract).
    fn pump(&self) -> usize {
        match self.phase.get() {
            Phase::Ready | Phase::Draining => {}
            _ => return 0,
        }
        if self.status.stop.load(Ordering::SeqCst) {
            self.finish(false);
            return 1;
        }
        let block_size = u64::from(self.shared.core.geometry().block_size);
        let window = (self.buf.borrow().len() as u64).min(self.shared.num_blocks() * block_size);
        let elapsed = self.started.elapsed().as_nanos() as u64;
        if !pacing::may_start(
            self.bytes_done.get(),
            window,
            elapsed,
            self.status.limit_mb_sec,
        ) {
            return 0;
        }
        let next = match &self.work {
            Work::Rebuild { replica, target } => self.next_dirty(replica, target),
            Work::Scrub {
                window_blocks,
                next_block,
            } => {
                let offset = next_block.get();
                let blocks = (*window_blocks).min(self.shared.num_blocks() - offset);
                next_block.set(offset + blocks);
                (blocks > 0).then_some((offset, blocks))
            }
        };
        let Some((offset, blocks)) = next else {
            return 0;
        };
        let ticket = self
            .shared
            .core
            .guard()
            .and_then(|g| g.read_ticket(offset, blocks));
        self.phase.set(Phase::Reading(offset, blocks, ticket));
        let io = IoHandle::new(
            IoType::Read,
            offset,
            blocks,
            self.view(blocks),
            self.done_handle(),
            READ,
        );
        match self.work {
            Work::Rebuild { .. } => self.reader.submit(io),
            Work::Scrub { .. } => self.reader.submit_repairing_read(io),
        }
        1
    }

    /// The next dirty region of a rebuild's child, taken off its bitmap; `None` while it
    /// waits (held I/O draining) or once it finished (the job is then over).
    fn next_dirty(&self, replica: &Replica, target: &IoChannel) -> Option<(u64, u64)> {
        if replica.held() > 0 {
            // Writes it timed out on are still out: abort them (SPDK's reset aborts what a
            // child holds) and copy only once none can land over the copies. One reset per
            // wait.
            if !self.reset_sent.replace(true) {
                let reset = self.done_handle();
                target.submit_new(IoType::Reset, 0, 0, IoBuf::NONE, reset, RESET);
            }
            self.phase.set(Phase::Draining);
            return None;
        }
        self.reset_sent.set(false);
        self.phase.set(Phase::Ready);
        let Some(region) = replica.take_dirty(self.cursor.get()) else {
            // Nothing dirty: synced, unless a write missed it again since the last region
            // (then round once more).
            if replica.apply(StateEvent::ProcessDone).is_some() {
                self.finish(true);
            }
            return None;
        };
        self.cursor.set(region + 1);
        Some(replica.region_range(region, self.shared.num_blocks()))
    }

    /// The first `blocks` blocks of the job's buffer, as an I/O's memory.
    fn view(&self, blocks: u64) -> IoBuf {
        let len = (blocks * u64::from(self.shared.core.geometry().block_size)) as usize;
        let mut buf = self.buf.borrow_mut();
        debug_assert!(len <= buf.len());
        // SAFETY: the buffer (at least `len` bytes: a window) lives as long as the job,
        // which outlives its I/O (the completion holds the job), and only one I/O uses it
        // at a time.
        unsafe { IoBuf::from_raw(buf.as_mut_ptr(), len) }
    }

    fn read_done(&self, io: &IoHandle, ticket: ReadTicket) {
        let (offset, blocks) = (io.offset_blocks, io.num_blocks);
        let (replica, target) = match &self.work {
            Work::Scrub { .. } => return self.scrubbed(io),
            Work::Rebuild { replica, target } => (replica, target),
        };
        if let Err(errno) = io.status() {
            tracing::warn!(quorum = %self.shared.name(), errno, "rebuild: voted read failed");
            replica.missed(offset, blocks, StateReason::ProcessStopped);
            return self.finish(false);
        }
        let guard = self
            .shared
            .core
            .guard()
            .expect("replica options give a guard");
        let epoch = replica.hold_epoch();
        if replica.held() > 0 || !guard.begin_rewrite(offset, blocks, ticket) {
            // A client write reached these blocks since the read was issued (what was read
            // may be older than what the child holds), or a write to the child timed out
            // and could land late: copy it again later.
            replica.missed(offset, blocks, StateReason::ProcessRunning);
            self.phase.set(Phase::Ready);
            return;
        }
        self.phase.set(Phase::Writing(offset, blocks, epoch));
        let view = self.view(blocks);
        target.submit_new(
            IoType::Write,
            offset,
            blocks,
            view,
            self.done_handle(),
            WRITE,
        );
    }

    /// Counts what a scrub's window found, and goes on.
    fn scrubbed(&self, io: &IoHandle) {
        let counts = &self.shared.scrub_counts;
        let [mismatched, rewritten] = io.driver_ctx;
        match io.status() {
            Ok(()) => counts.add(1, u64::from(mismatched != 0), rewritten, 0),
            Err(_) => counts.add(1, 0, 0, 1),
        }
        self.window_done(io.num_blocks);
    }

    fn write_done(&self, offset: u64, blocks: u64, epoch: u64, status: Result<(), i32>) {
        let Work::Rebuild { replica, .. } = &self.work else {
            return;
        };
        if let Some(guard) = self.shared.core.guard() {
            guard.end_rewrite(offset, blocks);
        }
        if status.is_err() {
            replica.missed(offset, blocks, StateReason::ProcessStopped);
            return self.finish(false);
        }
        if replica.hold_epoch() != epoch {
            // A write to the child timed out while the copy was written: it may land over
            // the copy later. The region is copied again once it drained.
            replica.missed(offset, blocks, StateReason::ProcessRunning);
        }
        replica.count_copied();
        self.window_done(blocks);
    }

    fn window_done(&self, blocks: u64) {
        let bytes = blocks * u64::from(self.shared.core.geometry().block_size);
        self.bytes_done.set(self.bytes_done.get() + bytes);
        self.status.blocks_done.fetch_add(blocks, Ordering::Relaxed);
        self.phase.set(Phase::Ready);
        if let Work::Scrub { next_block, .. } = &self.work {
            if next_block.get() >= self.shared.num_blocks() {
                return self.finish(true);
            }
        }
        self.pump();
    }

    /// Ends the job: `completed` if it did all it had to.
    fn finish(&self, completed: bool) {
        self.phase.set(Phase::Over);
        if let (false, Work::Rebuild { replica, .. }) = (completed, &self.work) {
            replica.apply(StateEvent::ProcessStopped);
        }
        tracing::info!(
            quorum = %self.shared.name(),
            kind = self.status.kind,
            target = %self.status.target,
            completed,
            blocks = self.status.blocks_done.load(Ordering::Relaxed),
            "quorum job finished"
        );
        self.shared.end_process();
        if let Some(id) = self.poller.take() {
            unregister_poller(id);
        }
    }
}

impl IoDone for Job {
    fn io_done(&self, io: IoHandle) {
        match (io.tag, self.phase.get()) {
            (READ, Phase::Reading(_, _, ticket)) => self.read_done(&io, ticket),
            (WRITE, Phase::Writing(offset, blocks, epoch)) => {
                let status = io.status();
                drop(io);
                self.write_done(offset, blocks, epoch, status)
            }
            // The reset's completion: the poller sees the held I/O drain.
            _ => {}
        }
    }
}
