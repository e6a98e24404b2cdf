//! One job: `queue_depth` slots driving I/O to one bdev from one reactor, each slot owning
//! its buffers from the start so the data path never allocates. A slot resubmits as soon as
//! its I/O completes, until the job is told to stop; then the job drains and hands its
//! figures to the main thread. Jobs live in their reactor's thread-local list, which is how
//! the main thread's messages (stop, snapshot) find them.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;

use super::args::Workload;
use super::workload::{fill_pattern, first_mismatch, pattern_salt, stripe_next, Op, Picker};
use super::PerfError;
use crate::bdev::{Bdev, IoBuf, IoChannel, IoDone, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::clock::{tick_rate, ticks};

/// Failures printed on stderr, over all jobs; the rest are only counted.
pub const FAILURES_SHOWN: usize = 10;

/// Longest latency the histogram resolves, in seconds; longer ones are clamped.
const HISTOGRAM_MAX_SECONDS: u64 = 3600;

/// The part of a bdev one job works on, in I/O units, disjoint from its sibling jobs' parts
/// so jobs on several reactors never race on the same blocks (bdevperf's `-C` split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First I/O unit.
    pub base_ios: u64,
    /// Number of I/O units (≥ 1).
    pub size_in_ios: u64,
}

/// Everything a job needs, built on the main thread and moved to its reactor.
pub struct JobSpec {
    /// Position in the report.
    pub index: usize,
    /// Target.
    pub bdev: Arc<Bdev>,
    /// Core of the reactor running the job, for the report's core mask.
    pub core: usize,
    /// Pattern.
    pub workload: Workload,
    /// Reads per hundred I/Os for mixed workloads.
    pub read_percent: u8,
    /// Slots (already limited to the region for verify).
    pub queue_depth: u32,
    /// Blocks per I/O.
    pub io_blocks: u64,
    /// Where the job works.
    pub region: Region,
    /// Stop by itself after submitting this many I/Os (`--prefill`'s single pass).
    pub io_limit: Option<u64>,
    /// Seed of the offset generator.
    pub seed: u64,
    /// Distinguishes this run's verify patterns from any earlier run's.
    pub run_seed: u64,
    /// Failures printed so far, shared by all jobs to cap the output.
    pub failures_shown: Arc<AtomicUsize>,
    /// Where the final figures go.
    pub done: Sender<JobResult>,
}

/// Latency figures in ticks, exact (the histogram serves percentiles only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Sum over every finished I/O, failed ones included (as bdevperf averages).
    pub sum_ticks: u64,
    /// Shortest.
    pub min_ticks: u64,
    /// Longest.
    pub max_ticks: u64,
}

/// What a job measured: a snapshot while running, the final figures once drained.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// Position in the report.
    pub index: usize,
    /// The bdev's name (bdevperf names jobs after their bdev).
    pub name: String,
    /// Core the job ran on.
    pub core: usize,
    /// Slots actually used.
    pub queue_depth: u32,
    /// The job's region in blocks (start, length), shown for verify as bdevperf does.
    pub region_blocks: (u64, u64),
    /// I/Os that succeeded (a verify I/O is the write and its read-back).
    pub completed: u64,
    /// I/Os that failed or miscompared.
    pub failed: u64,
    /// Of `failed`, those whose data did not match.
    pub miscompares: u64,
    /// Latency totals.
    pub latency: Latency,
    /// Latency distribution in ticks, present in final results.
    pub histogram: Option<Histogram<u64>>,
    /// Ticks from the job's start to its drain (or to the snapshot).
    pub runtime_ticks: u64,
}

struct Slot {
    data: Option<DmaBuf>,
    check: Option<DmaBuf>,
    data_view: IoBuf,
    check_view: IoBuf,
    offset_blocks: u64,
    start: u64,
    next_stripe: u64,
}

enum Failure {
    Io { io_type: IoType, errno: i32 },
    Miscompare { byte: usize },
}

struct Job {
    spec: JobSpec,
    channel: IoChannel,
    block_size: u64,
    verify: bool,
    expect_data: bool,
    slots: RefCell<Vec<Slot>>,
    picker: RefCell<Picker>,
    generation: Cell<u64>,
    completed: Cell<u64>,
    failed: Cell<u64>,
    miscompares: Cell<u64>,
    latency: Cell<Latency>,
    histogram: RefCell<Histogram<u64>>,
    in_flight: Cell<u32>,
    submitted: Cell<u64>,
    stopping: Cell<bool>,
    start: u64,
    /// The job as its own completion target; cleared after the drain to free the job.
    me: RefCell<Option<Rc<dyn IoDone>>>,
}

thread_local! {
    static JOBS: RefCell<Vec<Rc<Job>>> = const { RefCell::new(Vec::new()) };
}

/// Creates the job on the calling reactor and submits its first `queue_depth` I/Os.
pub fn start(spec: JobSpec) -> Result<(), PerfError> {
    let bdev_error = |reason: String| PerfError::Bdev {
        name: spec.bdev.name().to_string(),
        reason,
    };
    let channel = spec
        .bdev
        .io_channel()
        .map_err(|e| bdev_error(e.to_string()))?;
    let high = tick_rate().saturating_mul(HISTOGRAM_MAX_SECONDS).max(2);
    let histogram = Histogram::new_with_bounds(1, high, 3)
        .map_err(|e| bdev_error(format!("latency histogram: {e}")))?;
    let block_size = spec.bdev.block_size() as u64;
    let io_bytes = (spec.io_blocks * block_size) as usize;
    let verify = spec.workload == Workload::Verify;
    let has_data = !matches!(
        spec.workload,
        Workload::Flush | Workload::Unmap | Workload::WriteZeroes
    );
    let slots = (0..spec.queue_depth as u64)
        .map(|slot| {
            let mut data = has_data.then(|| {
                let mut b = DmaBuf::new(io_bytes);
                fill_pattern(b.as_mut_slice(), 0, spec.run_seed);
                b
            });
            let mut check = verify.then(|| DmaBuf::zeroed(io_bytes));
            // SAFETY: the buffers live in the slot, untouched by anyone else, for as long as
            // the job exists, which outlives every I/O it submits.
            let data_view = data
                .as_mut()
                .map_or(IoBuf::NONE, |b| unsafe { IoBuf::from_dma(b) });
            // SAFETY: as above.
            let check_view = check
                .as_mut()
                .map_or(IoBuf::NONE, |b| unsafe { IoBuf::from_dma(b) });
            Slot {
                data,
                check,
                data_view,
                check_view,
                offset_blocks: 0,
                start: 0,
                next_stripe: slot,
            }
        })
        .collect();
    let picker = Picker::new(
        spec.workload,
        spec.read_percent,
        spec.region.size_in_ios,
        spec.seed,
    );
    let now = ticks();
    let job = Rc::new(Job {
        expect_data: spec.bdev.retains_data(),
        spec,
        channel,
        block_size,
        verify,
        slots: RefCell::new(slots),
        picker: RefCell::new(picker),
        generation: Cell::new(0),
        completed: Cell::new(0),
        failed: Cell::new(0),
        miscompares: Cell::new(0),
        latency: Cell::new(Latency {
            min_ticks: u64::MAX,
            ..Latency::default()
        }),
        histogram: RefCell::new(histogram),
        in_flight: Cell::new(0),
        submitted: Cell::new(0),
        stopping: Cell::new(false),
        start: now,
        me: RefCell::new(None),
    });
    *job.me.borrow_mut() = Some(job.clone() as Rc<dyn IoDone>);
    JOBS.with(|jobs| jobs.borrow_mut().push(job.clone()));
    for slot in 0..job.spec.queue_depth as usize {
        job.start_next(slot, now);
    }
    Ok(())
}

/// Tells every job of the calling reactor to stop submitting; each reports once drained.
pub fn stop_local() {
    let jobs = JOBS.with(|jobs| std::mem::take(&mut *jobs.borrow_mut()));
    for job in jobs {
        job.stop();
    }
}

/// The running figures of the calling reactor's jobs, for `-S` (no histogram).
pub fn snapshot_local() -> Vec<JobResult> {
    let now = ticks();
    JOBS.with(|jobs| jobs.borrow().iter().map(|j| j.result(now, false)).collect())
}

impl Job {
    /// Prepares and submits the next I/O of `slot`, whose latency clock starts at `now`; a
    /// job with an I/O limit stops instead once it has submitted that many.
    fn start_next(&self, slot: usize, now: u64) {
        if let Some(limit) = self.spec.io_limit {
            let submitted = self.submitted.get();
            if submitted == limit {
                self.stop();
                return;
            }
            self.submitted.set(submitted + 1);
        }
        let (io_type, offset_blocks, view) = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[slot];
            s.start = now;
            let (op, ios) = if self.verify {
                let ios = s.next_stripe;
                s.next_stripe = stripe_next(
                    ios,
                    slot as u64,
                    self.spec.queue_depth as u64,
                    self.spec.region.size_in_ios,
                );
                (Op::Write, ios)
            } else {
                let mut picker = self.picker.borrow_mut();
                (picker.next_op(), picker.next_offset())
            };
            let offset_blocks = (self.spec.region.base_ios + ios) * self.spec.io_blocks;
            s.offset_blocks = offset_blocks;
            if self.verify {
                let generation = self.generation.get();
                self.generation.set(generation + 1);
                if let Some(data) = s.data.as_mut() {
                    fill_pattern(
                        data.as_mut_slice(),
                        offset_blocks * self.block_size,
                        pattern_salt(self.spec.run_seed, generation),
                    );
                }
            }
            let (io_type, view) = match op {
                Op::Read => (IoType::Read, s.data_view),
                Op::Write => (IoType::Write, s.data_view),
                Op::Flush => (IoType::Flush, IoBuf::NONE),
                Op::Unmap => (IoType::Unmap, IoBuf::NONE),
                Op::WriteZeroes => (IoType::WriteZeroes, IoBuf::NONE),
            };
            (io_type, offset_blocks, view)
        };
        self.submit(io_type, offset_blocks, view, slot);
    }

    fn submit(&self, io_type: IoType, offset_blocks: u64, view: IoBuf, slot: usize) {
        let Some(done) = self.me.borrow().clone() else {
            return;
        };
        self.in_flight.set(self.in_flight.get() + 1);
        self.channel.submit(IoHandle::new(
            io_type,
            offset_blocks,
            self.spec.io_blocks,
            view,
            done,
            slot as u64,
        ));
    }

    /// Compares a verify read-back with what the slot wrote (zeroes for bdevs keeping no data).
    fn compare(&self, slot: usize) -> Option<Failure> {
        let slots = self.slots.borrow();
        let s = &slots[slot];
        let got = s.check.as_ref()?.as_slice();
        let expected = if self.expect_data {
            Some(s.data.as_ref()?.as_slice())
        } else {
            None
        };
        first_mismatch(expected, got).map(|byte| Failure::Miscompare { byte })
    }

    fn record(&self, latency_ticks: u64, ok: bool) {
        let mut l = self.latency.get();
        l.sum_ticks += latency_ticks;
        l.min_ticks = l.min_ticks.min(latency_ticks);
        l.max_ticks = l.max_ticks.max(latency_ticks);
        self.latency.set(l);
        self.histogram
            .borrow_mut()
            .saturating_record(latency_ticks.max(1));
        if ok {
            self.completed.set(self.completed.get() + 1);
        } else {
            self.failed.set(self.failed.get() + 1);
        }
    }

    /// Counts a failure and prints the first few, with where they happened.
    fn report(&self, slot: usize, failure: Failure) {
        if matches!(failure, Failure::Miscompare { .. }) {
            self.miscompares.set(self.miscompares.get() + 1);
        }
        if self.spec.failures_shown.fetch_add(1, Ordering::Relaxed) >= FAILURES_SHOWN {
            return;
        }
        let offset_blocks = self.slots.borrow()[slot].offset_blocks;
        let name = self.spec.bdev.name();
        let blocks = self.spec.io_blocks;
        match failure {
            Failure::Io { io_type, errno } => eprintln!(
                "quorum-perf: {name}: {} of {blocks} blocks at block {offset_blocks} failed: {}",
                io_type.spdk_name(),
                std::io::Error::from_raw_os_error(errno)
            ),
            Failure::Miscompare { byte } => eprintln!(
                "quorum-perf: {name}: miscompare reading back {blocks} blocks at block \
                 {offset_blocks}: first wrong byte at bdev offset {}",
                offset_blocks * self.block_size + byte as u64
            ),
        }
    }

    fn stop(&self) {
        if self.stopping.replace(true) {
            return;
        }
        if self.in_flight.get() == 0 {
            self.finish(ticks());
        }
    }

    fn finish(&self, now: u64) {
        let _ = self.spec.done.send(self.result(now, true));
        self.me.borrow_mut().take();
    }

    fn result(&self, now: u64, with_histogram: bool) -> JobResult {
        let mut latency = self.latency.get();
        if latency.min_ticks == u64::MAX {
            latency.min_ticks = 0;
        }
        let region = self.spec.region;
        JobResult {
            index: self.spec.index,
            name: self.spec.bdev.name().to_string(),
            core: self.spec.core,
            queue_depth: self.spec.queue_depth,
            region_blocks: (
                region.base_ios * self.spec.io_blocks,
                region.size_in_ios * self.spec.io_blocks,
            ),
            completed: self.completed.get(),
            failed: self.failed.get(),
            miscompares: self.miscompares.get(),
            latency,
            histogram: with_histogram.then(|| self.histogram.borrow().clone()),
            runtime_ticks: now.wrapping_sub(self.start),
        }
    }
}

impl IoDone for Job {
    fn io_done(&self, io: IoHandle) {
        let slot = io.tag as usize;
        let status = io.status();
        let io_type = io.io_type;
        let completed_at = io.completion_tick();
        drop(io);
        self.in_flight.set(self.in_flight.get() - 1);
        if self.verify && io_type == IoType::Write && status.is_ok() {
            let (offset_blocks, view) = {
                let slots = self.slots.borrow();
                (slots[slot].offset_blocks, slots[slot].check_view)
            };
            self.submit(IoType::Read, offset_blocks, view, slot);
            return;
        }
        let now = if completed_at != 0 {
            completed_at
        } else {
            ticks()
        };
        let failure = match status {
            Err(errno) => Some(Failure::Io { io_type, errno }),
            Ok(()) if self.verify => self.compare(slot),
            Ok(()) => None,
        };
        let started = self.slots.borrow()[slot].start;
        self.record(now.wrapping_sub(started), failure.is_none());
        if let Some(failure) = failure {
            self.report(slot, failure);
        }
        if self.stopping.get() {
            if self.in_flight.get() == 0 {
                self.finish(now);
            }
            return;
        }
        self.start_next(slot, now);
    }
}
