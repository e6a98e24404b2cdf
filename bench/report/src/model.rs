//! The shape of `bench/results/<date>.json`: every measured figure with its runs, how it was
//! measured and on what. One file holds a whole `bench/run`, so RESULTS.md and the charts can
//! always be rebuilt from it alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which part of the suite a figure belongs to; the report has one section per suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// The load generator and the block layer in one process (quorum-perf, qemu-img bench).
    Inprocess,
    /// fio's nbd engine against a daemon's NBD export, over a Unix socket.
    Nbd,
    /// What this machine's core can do at best per block (memcpy, memcmp, SHA-256).
    Limits,
}

/// Whose code produced a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impl {
    /// This project (quorum-perf, quorum-tgt).
    Ours,
    /// QEMU (qemu-img bench, qemu-storage-daemon).
    Qemu,
    /// No storage stack: raw rates of the machine.
    Machine,
}

/// Identifies one measured point; runs of the same point share their key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// Part of the suite.
    pub suite: Suite,
    /// Whose code.
    #[serde(rename = "impl")]
    pub imp: Impl,
    /// What was driven: `quorum3-null`, `malloc`, `quorum3-null-co`, `memcmp-dram`, ...
    pub target: String,
    /// I/O pattern (`randread`, `randwrite`); empty for machine limits.
    pub rw: String,
    /// Bytes per I/O or per operation.
    pub bs: u64,
    /// Queue depth; 0 for machine limits.
    pub qd: u32,
}

/// One run of one point, as `bench-report sample` and `limits` append it to the samples file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The point.
    #[serde(flatten)]
    pub key: Key,
    /// Operations per second (I/Os, or blocks copied/compared/hashed).
    pub iops: f64,
    /// Mean latency in µs, when there is one.
    pub lat_us: Option<f64>,
    /// Whether `lat_us` was derived from the queue depth and IOPS (Little's law) because the
    /// tool reports no latency (qemu-img bench), rather than measured per I/O.
    #[serde(default)]
    pub lat_derived: bool,
}

/// Median, min and max over a point's runs, so noise shows next to the figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Median of the runs (mean of the two middle runs for an even count).
    pub median: f64,
    /// Lowest run.
    pub min: f64,
    /// Highest run.
    pub max: f64,
}

/// One point with all its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The point.
    #[serde(flatten)]
    pub key: Key,
    /// Operations per second over the runs.
    pub iops: Stat,
    /// Mean latency in µs over the runs, when known.
    pub lat_us: Option<Stat>,
    /// See [`Sample::lat_derived`].
    pub lat_derived: bool,
    /// Each run's operations per second, in run order.
    pub runs: Vec<f64>,
}

/// How the run was made: what a reader needs to judge the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// `full` or `quick`.
    pub mode: String,
    /// Runs per point (each figure is their median).
    pub runs_per_point: u32,
    /// Length of each timed run, in seconds.
    pub seconds_per_run: f64,
    /// Size of each RAM-backed child (malloc bdev, raw file in /dev/shm, memcpy region).
    pub child_bytes: u64,
    /// Free-form settings (QEMU's aio and cache modes, pinning, ...), shown as a list.
    pub settings: BTreeMap<String, String>,
}

/// What the figures were measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `lscpu`'s model name.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Whether the kernel says it runs under a hypervisor.
    pub hypervisor: Option<String>,
    /// First line of `--version` of each tool used, by tool name.
    pub versions: BTreeMap<String, String>,
    /// This repository's revision (with `-dirty` when the tree had changes).
    pub git_rev: String,
}

/// One symbol of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSymbol {
    /// Demangled name as perf prints it.
    pub symbol: String,
    /// Share of the samples spent in this symbol itself (not its callees), in percent.
    pub percent: f64,
    /// Which bucket of [`crate::profile::BUCKETS`] it was put in.
    pub bucket: String,
}

/// Where one profiled run spent its time, by symbol and by part of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// What was profiled (the command line).
    pub command: String,
    /// perf's sample count.
    pub samples: u64,
    /// IOPS of the profiled run (sampling slows it a little).
    pub iops: Option<f64>,
    /// Symbols by self time, highest first.
    pub symbols: Vec<ProfileSymbol>,
    /// Self time summed per bucket, highest first: (bucket, percent).
    pub buckets: Vec<(String, f64)>,
}

/// Everything one `bench/run` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Format version of this file.
    pub schema: u32,
    /// UTC start of the run, RFC 3339.
    pub date: String,
    /// How it was measured.
    pub method: Method,
    /// On what.
    pub machine: Machine,
    /// Why the NBD part did not run, when it did not.
    pub nbd_skipped: Option<String>,
    /// Every point, sorted by key.
    pub figures: Vec<Figure>,
    /// The profile of our quorum over null, when perf was available.
    pub profile: Option<Profile>,
}

/// Current value of [`Results::schema`].
pub const SCHEMA: u32 = 1;

impl Results {
    /// The figure of a point, if it was measured.
    pub fn get(&self, key: &Key) -> Option<&Figure> {
        self.figures
            .binary_search_by(|f| f.key.cmp(key))
            .ok()
            .map(|i| &self.figures[i])
    }
}
