//! Per-bdev I/O statistics in SPDK's `bdev_get_iostat` shape. Each channel counts its own
//! I/O in plain cells (one writer, no atomics); totals are summed across reactors on demand.

use serde::Serialize;

use super::io_type::IoType;

/// Counters of one channel, or the sum of many.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct IoStats {
    /// Bytes read.
    pub bytes_read: u64,
    /// Read operations completed.
    pub num_read_ops: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Write operations completed.
    pub num_write_ops: u64,
    /// Of those, writes that carried FUA (not in SPDK's shape): how a user, or a test, sees
    /// that a force-unit-access request reached this bdev as one.
    pub num_fua_write_ops: u64,
    /// Bytes unmapped.
    pub bytes_unmapped: u64,
    /// Unmap operations completed.
    pub num_unmap_ops: u64,
    /// Write-zeroes operations completed.
    pub num_write_zeroes_ops: u64,
    /// Flush operations completed.
    pub num_flush_ops: u64,
    /// Operations that completed with an error.
    pub num_io_errors: u64,
    /// Sum of read latencies in ticks.
    pub read_latency_ticks: u64,
    /// Sum of write latencies in ticks.
    pub write_latency_ticks: u64,
    /// Sum of unmap latencies in ticks.
    pub unmap_latency_ticks: u64,
}

impl IoStats {
    /// Counts one completed I/O (`fua`: a write that carried FUA).
    pub fn record(&mut self, io_type: IoType, fua: bool, bytes: u64, ok: bool, latency_ticks: u64) {
        if !ok {
            self.num_io_errors += 1;
            return;
        }
        match io_type {
            // SPDK counts a populating zcopy as a read.
            IoType::Read | IoType::Zcopy => {
                self.bytes_read += bytes;
                self.num_read_ops += 1;
                self.read_latency_ticks += latency_ticks;
            }
            IoType::Write => {
                self.bytes_written += bytes;
                self.num_write_ops += 1;
                self.num_fua_write_ops += fua as u64;
                self.write_latency_ticks += latency_ticks;
            }
            IoType::Unmap => {
                self.bytes_unmapped += bytes;
                self.num_unmap_ops += 1;
                self.unmap_latency_ticks += latency_ticks;
            }
            IoType::WriteZeroes => self.num_write_zeroes_ops += 1,
            IoType::Flush => self.num_flush_ops += 1,
            IoType::Reset => {}
        }
    }

    /// Adds another set of counters, for summing channels.
    pub fn add(&mut self, o: &IoStats) {
        self.bytes_read += o.bytes_read;
        self.num_read_ops += o.num_read_ops;
        self.bytes_written += o.bytes_written;
        self.num_write_ops += o.num_write_ops;
        self.num_fua_write_ops += o.num_fua_write_ops;
        self.bytes_unmapped += o.bytes_unmapped;
        self.num_unmap_ops += o.num_unmap_ops;
        self.num_write_zeroes_ops += o.num_write_zeroes_ops;
        self.num_flush_ops += o.num_flush_ops;
        self.num_io_errors += o.num_io_errors;
        self.read_latency_ticks += o.read_latency_ticks;
        self.write_latency_ticks += o.write_latency_ticks;
        self.unmap_latency_ticks += o.unmap_latency_ticks;
    }
}
