//! Per-child counters of `bdev_quorum_get_bdevs`. Each reactor counts in plain cells (one
//! writer, no atomics on the data path); the RPC sums them across reactors on demand.

use std::cell::Cell;

use serde::Serialize;

use crate::bdev::IoType;

/// One reactor's counters for one child.
#[derive(Default)]
pub struct ChildCounters {
    /// Reads sent to the child.
    pub reads: Cell<u64>,
    /// Writes, write_zeroes and unmaps sent to the child.
    pub writes: Cell<u64>,
    /// Flushes sent to the child.
    pub flushes: Cell<u64>,
    /// Child I/O that failed.
    pub io_errors: Cell<u64>,
    /// Reads where the child returned data that lost the vote.
    pub bad_versions: Cell<u64>,
    /// Rewrites of winning data to this child.
    pub rewrites: Cell<u64>,
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
    pub fn count_submit(&self, io_type: IoType) {
        let cell = match io_type {
            IoType::Read | IoType::Zcopy => &self.reads,
            IoType::Write | IoType::WriteZeroes | IoType::Unmap => &self.writes,
            IoType::Flush => &self.flushes,
            IoType::Reset => return,
        };
        cell.set(cell.get() + 1);
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
