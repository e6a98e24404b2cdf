//! Each child's replica state (synced, out_of_sync, rebuilding, faulted) and the regions it
//! missed, shared lock-free by every thread serving the quorum's I/O.
//!
//! Why one atomic word for state, reason and dirty-region count: the only rule that keeps a
//! stale child out of reads is "a child becomes synced only while it has no dirty region".
//! A write missing a child sets its bit and then moves it out of synced; a copy job finishing
//! moves it to synced only if nothing is dirty. With state and count in one word, both are
//! single compare-and-swaps on the same value, so no interleaving of the two can leave a
//! synced child with a dirty region. The transitions themselves are the pure function
//! [`next`], tested on its own.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use serde::Serialize;

use crate::io::IoKind;
use crate::vote::ChildSet;

/// Where a child stands with respect to the quorum's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Holds every acknowledged write: reads and writes go to it.
    Synced,
    /// Missed writes (its dirty regions say which): writes go to it, reads do not.
    OutOfSync,
    /// A copy job is bringing it up to date: writes go to it, reads do not.
    Rebuilding,
    /// Unreachable or being removed: no I/O goes to it.
    Faulted,
}

/// Why a child is in its state, shown beside it in `bdev_quorum_get_bdevs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateReason {
    /// A child of the quorum since it was created.
    Created,
    /// Added with `sync: "none"`: trusted to hold the data already (QEMU's behaviour).
    AddedWithoutSync,
    /// Added with `sync: "full"`: every region must be copied to it.
    Added,
    /// A write failed on it while the quorum acknowledged it.
    WriteFailed,
    /// A write did not complete on it within `child_io_timeout_ms`.
    WriteTimedOut,
    /// A resync or rebuild is copying to it.
    ProcessRunning,
    /// A resync or rebuild copied every region it missed.
    ProcessFinished,
    /// A copy to it failed, or the job was stopped before it finished.
    ProcessStopped,
    /// Taken out of the quorum.
    Removed,
}

/// What happens to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateEvent {
    /// A write missed it (`reason`: failed or timed out); `newly_dirty` regions became dirty.
    Missed {
        /// Why it missed.
        reason: StateReason,
        /// Regions whose bit this miss set.
        newly_dirty: u32,
    },
    /// A copy job took a region off its dirty set to copy it.
    RegionTaken,
    /// A copy job starts.
    ProcessStarted,
    /// A copy job ends; it becomes synced only if nothing is dirty any more.
    ProcessDone,
    /// A copy job failed or was stopped.
    ProcessStopped,
    /// It is leaving the quorum.
    Removed,
}

/// State, reason and dirty-region count of one child, as [`next`] works on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Its state.
    pub state: ChildState,
    /// Why.
    pub reason: StateReason,
    /// How many regions it missed and nobody copied yet (counting one being copied as
    /// clean: the job re-marks it if the copy fails).
    pub dirty: u32,
}

/// The state machine: what `event` makes of `status`, or `None` when the event is refused
/// (a job started on a child already in one, or on a faulted child).
pub fn next(status: Status, event: StateEvent) -> Option<Status> {
    use ChildState::*;
    let mut s = status;
    match event {
        StateEvent::Missed {
            reason,
            newly_dirty,
        } => {
            s.dirty = s.dirty.saturating_add(newly_dirty);
            if s.state == Synced {
                s.state = OutOfSync;
                s.reason = reason;
            }
        }
        StateEvent::RegionTaken => s.dirty = s.dirty.saturating_sub(1),
        StateEvent::ProcessStarted => match s.state {
            Synced | OutOfSync => {
                s.state = Rebuilding;
                s.reason = StateReason::ProcessRunning;
            }
            Rebuilding | Faulted => return None,
        },
        StateEvent::ProcessDone => {
            if s.state != Rebuilding || s.dirty != 0 {
                return None;
            }
            s.state = Synced;
            s.reason = StateReason::ProcessFinished;
        }
        StateEvent::ProcessStopped => {
            if s.state != Rebuilding {
                return None;
            }
            s.state = OutOfSync;
            s.reason = StateReason::ProcessStopped;
        }
        StateEvent::Removed => {
            s.state = Faulted;
            s.reason = StateReason::Removed;
        }
    }
    Some(s)
}

const STATES: [ChildState; 4] = [
    ChildState::Synced,
    ChildState::OutOfSync,
    ChildState::Rebuilding,
    ChildState::Faulted,
];
const REASONS: [StateReason; 9] = [
    StateReason::Created,
    StateReason::AddedWithoutSync,
    StateReason::Added,
    StateReason::WriteFailed,
    StateReason::WriteTimedOut,
    StateReason::ProcessRunning,
    StateReason::ProcessFinished,
    StateReason::ProcessStopped,
    StateReason::Removed,
];

fn pack(s: Status) -> u64 {
    let state = STATES.iter().position(|&x| x == s.state).unwrap_or(0) as u64;
    let reason = REASONS.iter().position(|&x| x == s.reason).unwrap_or(0) as u64;
    state | reason << 8 | u64::from(s.dirty) << 32
}

fn unpack(word: u64) -> Status {
    Status {
        state: STATES[(word & 0xff) as usize % STATES.len()],
        reason: REASONS[((word >> 8) & 0xff) as usize % REASONS.len()],
        dirty: (word >> 32) as u32,
    }
}

/// The dirty-region bitmap of one child: one bit per region of `region_blocks` blocks,
/// set with `fetch_or` from any thread (no lock, no allocation after creation).
struct DirtyMap {
    region_blocks: u64,
    regions: u64,
    words: Box<[AtomicU64]>,
}

impl DirtyMap {
    fn new(num_blocks: u64, region_blocks: u64) -> DirtyMap {
        let region_blocks = region_blocks.max(1);
        let regions = num_blocks.div_ceil(region_blocks);
        DirtyMap {
            region_blocks,
            regions,
            words: (0..regions.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Sets the bits of every region `offset..offset+num` touches; how many were clear.
    fn mark(&self, offset_blocks: u64, num_blocks: u64) -> u32 {
        if self.regions == 0 {
            return 0;
        }
        let first = offset_blocks / self.region_blocks;
        let last =
            ((offset_blocks + num_blocks.max(1) - 1) / self.region_blocks).min(self.regions - 1);
        let mut newly = 0;
        for r in first..=last {
            let bit = 1u64 << (r % 64);
            if self.words[(r / 64) as usize].fetch_or(bit, SeqCst) & bit == 0 {
                newly += 1;
            }
        }
        newly
    }

    /// Clears region `r`'s bit; whether it was set.
    fn take(&self, r: u64) -> bool {
        let bit = 1u64 << (r % 64);
        self.words[(r / 64) as usize].fetch_and(!bit, SeqCst) & bit != 0
    }

    /// The first dirty region at or after `from`, wrapping around once.
    fn next_dirty(&self, from: u64) -> Option<u64> {
        let scan = |lo: u64, hi: u64| {
            (lo..hi).find(|&r| self.words[(r / 64) as usize].load(SeqCst) & (1 << (r % 64)) != 0)
        };
        scan(from.min(self.regions), self.regions).or_else(|| scan(0, from.min(self.regions)))
    }
}

/// One child's replica state and dirty regions, shared by the threads serving the quorum
/// and by the copy jobs: every method is lock-free and allocation-free.
pub struct Replica {
    status: AtomicU64,
    dirty: DirtyMap,
    copied: AtomicU64,
    held: AtomicU64,
    holds: AtomicU64,
}

impl Replica {
    /// A child of `num_blocks` blocks tracked in regions of `region_blocks` blocks, starting
    /// in `state` for `reason`.
    pub fn new(
        num_blocks: u64,
        region_blocks: u64,
        state: ChildState,
        reason: StateReason,
    ) -> Replica {
        Replica {
            status: AtomicU64::new(pack(Status {
                state,
                reason,
                dirty: 0,
            })),
            dirty: DirtyMap::new(num_blocks, region_blocks),
            copied: AtomicU64::new(0),
            held: AtomicU64::new(0),
            holds: AtomicU64::new(0),
        }
    }

    /// Counts a child I/O the quorum stopped waiting for (timed out) and still holds the
    /// memory of: a copy to the child waits until none is left, so a late write can never
    /// land over what the copy wrote.
    pub fn hold(&self) {
        self.holds.fetch_add(1, SeqCst);
        self.held.fetch_add(1, SeqCst);
    }

    /// How many I/Os were ever held: a copy to the child is sound only if none was held
    /// when it was issued and this did not change before it completed (no late write can
    /// have raced it).
    pub fn hold_epoch(&self) -> u64 {
        self.holds.load(SeqCst)
    }

    /// One held I/O completed.
    pub fn release(&self) {
        self.held.fetch_sub(1, SeqCst);
    }

    /// Timed-out child I/Os not completed yet.
    pub fn held(&self) -> u64 {
        self.held.load(SeqCst)
    }

    /// Counts a region a job copied to it (shown as `copied_regions`: what a resync cost).
    pub fn count_copied(&self) {
        self.copied.fetch_add(1, SeqCst);
    }

    /// Regions jobs copied to it.
    pub fn copied_regions(&self) -> u64 {
        self.copied.load(SeqCst)
    }

    /// Its state, reason and dirty count now.
    pub fn status(&self) -> Status {
        unpack(self.status.load(SeqCst))
    }

    /// Its state now.
    pub fn state(&self) -> ChildState {
        self.status().state
    }

    /// Whether reads may go to it.
    pub fn readable(&self) -> bool {
        self.state() == ChildState::Synced
    }

    /// Whether writes go to it (every state but faulted).
    pub fn writable(&self) -> bool {
        self.state() != ChildState::Faulted
    }

    /// Blocks per dirty region.
    pub fn region_blocks(&self) -> u64 {
        self.dirty.region_blocks
    }

    /// Regions covering the child.
    pub fn regions(&self) -> u64 {
        self.dirty.regions
    }

    /// Applies `event`; the new status, or `None` if [`next`] refused it (nothing changed).
    pub fn apply(&self, event: StateEvent) -> Option<Status> {
        let mut word = self.status.load(SeqCst);
        loop {
            let new = next(unpack(word), event)?;
            match self
                .status
                .compare_exchange(word, pack(new), SeqCst, SeqCst)
            {
                Ok(_) => return Some(new),
                Err(seen) => word = seen,
            }
        }
    }

    /// Records that a write of `offset..offset+num` blocks missed the child: its regions
    /// become dirty, and a synced child out_of_sync. The bits are set before the state
    /// changes, so a job that sees the child clean sees no bit of this miss.
    pub fn missed(&self, offset_blocks: u64, num_blocks: u64, reason: StateReason) {
        let newly_dirty = self.dirty.mark(offset_blocks, num_blocks);
        self.apply(StateEvent::Missed {
            reason,
            newly_dirty,
        });
    }

    /// Marks every region dirty: a full rebuild copies them all.
    pub fn mark_all_dirty(&self) {
        let newly_dirty = self
            .dirty
            .mark(0, self.dirty.regions * self.dirty.region_blocks);
        self.apply(StateEvent::Missed {
            reason: StateReason::Added,
            newly_dirty,
        });
    }

    /// The next dirty region at or after `from` (wrapping), taken off the dirty set for a
    /// copy: the job calls [`Replica::missed`] on its blocks again if the copy fails.
    pub fn take_dirty(&self, from: u64) -> Option<u64> {
        loop {
            let r = self.dirty.next_dirty(from)?;
            if self.dirty.take(r) {
                self.apply(StateEvent::RegionTaken);
                return Some(r);
            }
        }
    }

    /// The blocks of region `r`, clipped to the child's end (`num_blocks`).
    pub fn region_range(&self, r: u64, num_blocks: u64) -> (u64, u64) {
        let start = r * self.dirty.region_blocks;
        (start, self.dirty.region_blocks.min(num_blocks - start))
    }
}

/// The children a request of `kind` goes to: reads (voted or fifo) to synced children only,
/// everything else to every child not faulted, so an out_of_sync or rebuilding child keeps
/// receiving the writes that happen while it catches up.
pub fn participants<'a>(kind: IoKind, replicas: impl Iterator<Item = &'a Replica>) -> ChildSet {
    replicas
        .enumerate()
        .filter(|(_, r)| match kind {
            IoKind::Read => r.readable(),
            _ => r.writable(),
        })
        .map(|(i, _)| i)
        .collect()
}

/// Options of a quorum's replica lifecycle, beside QEMU's [`crate::QuorumOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// How long a child may take to answer a write before the quorum completes without it
    /// (it then becomes out_of_sync); 0 waits forever, as QEMU.
    pub child_io_timeout_ms: u64,
    /// Size of a dirty region: the unit a resync copies.
    pub dirty_region_kb: u32,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            child_io_timeout_ms: 0,
            dirty_region_kb: DEFAULT_DIRTY_REGION_KB,
        }
    }
}

/// The dirty-region size when none is asked for: SPDK raid's default process window.
pub const DEFAULT_DIRTY_REGION_KB: u32 = 1024;

impl ReplicaOptions {
    /// Checks the options for children of `block_size` bytes.
    pub fn validate(&self, block_size: u32) -> Result<(), crate::Refused> {
        let bytes = u64::from(self.dirty_region_kb) * 1024;
        if bytes == 0 || bytes % u64::from(block_size.max(1)) != 0 || bytes > 64 << 20 {
            return Err(crate::Refused::Invalid(format!(
                "dirty_region_kb must be a multiple of the block size ({block_size} bytes) \
                 between 1 KiB and 64 MiB, not {} KiB",
                self.dirty_region_kb
            )));
        }
        Ok(())
    }

    /// Blocks per dirty region for children of `block_size` bytes.
    pub fn region_blocks(&self, block_size: u32) -> u64 {
        (u64::from(self.dirty_region_kb) * 1024 / u64::from(block_size.max(1))).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ChildState::*;

    fn st(state: ChildState, dirty: u32) -> Status {
        Status {
            state,
            reason: StateReason::Created,
            dirty,
        }
    }

    const MISS: StateEvent = StateEvent::Missed {
        reason: StateReason::WriteFailed,
        newly_dirty: 1,
    };

    #[test]
    fn transitions() {
        let s = next(st(Synced, 0), MISS).unwrap();
        assert_eq!(
            (s.state, s.reason, s.dirty),
            (OutOfSync, StateReason::WriteFailed, 1)
        );
        let r = next(s, StateEvent::ProcessStarted).unwrap();
        assert_eq!(r.state, Rebuilding);
        assert_eq!(
            next(r, StateEvent::ProcessStarted),
            None,
            "one job at a time"
        );
        assert_eq!(next(r, StateEvent::ProcessDone), None, "still dirty");
        let r = next(r, StateEvent::RegionTaken).unwrap();
        let done = next(r, StateEvent::ProcessDone).unwrap();
        assert_eq!(
            (done.state, done.reason),
            (Synced, StateReason::ProcessFinished)
        );
        let again = next(r, MISS).unwrap();
        assert_eq!(
            again.state, Rebuilding,
            "a miss while rebuilding re-dirties only"
        );
        assert_eq!(
            next(again, StateEvent::ProcessStopped).unwrap().state,
            OutOfSync
        );
        assert_eq!(next(st(Faulted, 0), StateEvent::ProcessStarted), None);
        assert_eq!(next(st(Faulted, 0), MISS).unwrap().state, Faulted);
        assert_eq!(
            next(st(OutOfSync, 0), StateEvent::Removed).unwrap().state,
            Faulted
        );
    }

    #[test]
    fn packing_round_trips() {
        for state in STATES {
            for reason in REASONS {
                let s = Status {
                    state,
                    reason,
                    dirty: 123_456,
                };
                assert_eq!(unpack(pack(s)), s);
            }
        }
    }

    #[test]
    fn bitmap_marks_regions_once_and_takes_them_in_order() {
        let r = Replica::new(1000, 64, Synced, StateReason::Created);
        assert_eq!(r.regions(), 16);
        r.missed(60, 10, StateReason::WriteTimedOut);
        assert_eq!(r.status().dirty, 2);
        assert_eq!(r.state(), OutOfSync);
        r.missed(64, 1, StateReason::WriteFailed);
        assert_eq!(r.status().dirty, 2, "region 1 was dirty already");
        assert_eq!(
            r.status().reason,
            StateReason::WriteTimedOut,
            "first reason kept"
        );
        assert_eq!(r.take_dirty(1), Some(1));
        assert_eq!(r.take_dirty(1), Some(0), "wraps around");
        assert_eq!(r.take_dirty(0), None);
        assert_eq!(r.region_range(15, 1000), (960, 40), "last region clipped");
        r.mark_all_dirty();
        assert_eq!(r.status().dirty, 16);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Miss(u64),
        Start,
        Take,
        Finish,
        Stop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..8).prop_map(Op::Miss),
            Just(Op::Start),
            Just(Op::Take),
            Just(Op::Finish),
            Just(Op::Stop),
        ]
    }

    proptest! {
        /// Against a model (a set of dirty regions): the count always matches the set, and
        /// the child is synced only when the set is empty and never while it has a miss no
        /// job copied afterwards.
        #[test]
        fn synced_only_when_nothing_missed(ops in proptest::collection::vec(op(), 1..60)) {
            let r = Replica::new(8, 1, Synced, StateReason::Created);
            let mut model = std::collections::BTreeSet::new();
            for o in ops {
                match o {
                    Op::Miss(region) => {
                        r.missed(region, 1, StateReason::WriteFailed);
                        model.insert(region);
                    }
                    Op::Start => { r.apply(StateEvent::ProcessStarted); }
                    Op::Take => {
                        if r.state() == Rebuilding {
                            if let Some(t) = r.take_dirty(0) {
                                prop_assert!(model.remove(&t));
                            }
                        }
                    }
                    Op::Finish => { r.apply(StateEvent::ProcessDone); }
                    Op::Stop => { r.apply(StateEvent::ProcessStopped); }
                }
                let s = r.status();
                prop_assert_eq!(s.dirty as usize, model.len());
                if s.state == Synced {
                    prop_assert!(model.is_empty());
                }
            }
        }
    }
}
