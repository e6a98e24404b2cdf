//! Per-child counters of `bdev_quorum_get_bdevs`. Each host thread (a reactor, an SPDK
//! thread) counts in plain cells of its own (one writer, no atomics on the data path); the
//! RPC sums them across threads on demand. The state machine ([`crate::io`]) does the
//! counting, so both hosts count the same things.

use std::cell::Cell;

use serde::Serialize;

use crate::io::IoKind;

/// One host thread's counters for one child; only the state machine changes them.
#[derive(Default)]
pub struct ChildCounters {
    /// Reads sent to the child.
    reads: Cell<u64>,
    /// Writes, write_zeroes and unmaps sent to the child.
    writes: Cell<u64>,
    /// Flushes sent to the child.
    flushes: Cell<u64>,
    /// Child I/O that failed.
    io_errors: Cell<u64>,
    /// Reads where the child returned data that lost the vote.
    bad_versions: Cell<u64>,
    /// Rewrites of winning data to this child.
    rewrites: Cell<u64>,
}

/// Counters as numbers, for summing and reporting.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Reads sent to the child.
    pub reads: u64,
    /// Writes, write_zeroes and unmaps sent to the child.
    pub writes: u64,
    /// Flushes sent to the child.
    pub flushes: u64,
    /// Child I/O that failed.
    pub io_errors: u64,
    /// Reads where the child returned data that lost the vote.
    pub bad_versions: u64,
    /// Rewrites of winning data to this child.
    pub rewrites: u64,
}

impl ChildCounters {
    /// Counts an I/O sent to the child.
    pub(crate) fn count_submit(&self, kind: IoKind) {
        let cell = match kind {
            IoKind::Read => &self.reads,
            IoKind::Write | IoKind::WriteZeroes | IoKind::Unmap => &self.writes,
            IoKind::Flush => &self.flushes,
            IoKind::Reset => return,
        };
        bump(cell);
    }

    /// Counts a failed child I/O.
    pub(crate) fn count_error(&self) {
        bump(&self.io_errors);
    }

    /// Counts a read whose data lost the vote.
    pub(crate) fn count_bad_version(&self) {
        bump(&self.bad_versions);
    }

    /// Counts a rewrite of the winning data to the child.
    pub(crate) fn count_rewrite(&self) {
        bump(&self.rewrites);
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            reads: self.reads.get(),
            writes: self.writes.get(),
            flushes: self.flushes.get(),
            io_errors: self.io_errors.get(),
            bad_versions: self.bad_versions.get(),
            rewrites: self.rewrites.get(),
        }
    }
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

impl CounterSnapshot {
    /// Adds another reactor's counters.
    pub fn add(&mut self, o: &CounterSnapshot) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.flushes += o.flushes;
        self.io_errors += o.io_errors;
        self.bad_versions += o.bad_versions;
        self.rewrites += o.rewrites;
    }
}
