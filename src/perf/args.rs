//! The command line of `quorum-perf`, in bdevperf's spellings (`-q -o -w -M -t -m -c -S`), so
//! bdevperf users' commands and scripts carry over unchanged.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::runtime::cpumask::parse_cpumask;

/// bdevperf's `-w` patterns (`reset` aside: our bdevs have nothing to reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Random-offset reads.
    Randread,
    /// Random-offset writes.
    Randwrite,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random offsets, reads and writes mixed by `-M`.
    Randrw,
    /// Sequential offsets, reads and writes mixed by `-M`.
    Rw,
    /// Write a pattern, read it back, compare.
    Verify,
    /// Flush commands.
    Flush,
    /// Unmap (trim) commands.
    Unmap,
    /// Write-zeroes commands.
    #[value(name = "write_zeroes")]
    WriteZeroes,
}

impl Workload {
    /// bdevperf's name of the pattern, as printed in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Randread => "randread",
            Workload::Randwrite => "randwrite",
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Randrw => "randrw",
            Workload::Rw => "rw",
            Workload::Verify => "verify",
            Workload::Flush => "flush",
            Workload::Unmap => "unmap",
            Workload::WriteZeroes => "write_zeroes",
        }
    }

    /// Whether offsets are drawn at random (bdevperf's `is_random`).
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::Randread | Workload::Randwrite | Workload::Randrw
        )
    }

    /// Whether `-M` applies (bdevperf ignores it elsewhere, with a warning).
    pub fn is_mixed(self) -> bool {
        matches!(self, Workload::Randrw | Workload::Rw)
    }
}

/// What `--output` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// bdevperf's table.
    #[default]
    Text,
    /// One JSON object on stdout, nothing else there.
    Json,
}

/// The cores of `-m`, kept as one value so clap does not treat it as a list of arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

fn parse_mask(text: &str) -> Result<CoreList, String> {
    parse_cpumask(text).map(CoreList).map_err(|e| e.to_string())
}

/// Parses an I/O size as SPDK's `spdk_parse_capacity` does: bytes, or a number with a binary
/// unit `k`, `m` or `g` (either case, optionally followed by `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let bad = || format!("invalid size '{text}': expected bytes like 4096, 4k, 64K or 1M");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    let bytes = number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size '{text}' is too large"))?;
    if bytes == 0 {
        return Err(format!("size '{text}' must be greater than 0"));
    }
    Ok(bytes)
}

/// `quorum-perf`'s options.
#[derive(Debug, Parser)]
#[command(
    name = "quorum-perf",
    version,
    about = "bdevperf-like load generator over any bdev configuration"
)]
pub struct PerfArgs {
    /// I/O queue depth per job.
    #[arg(short = 'q', value_name = "DEPTH", value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_depth: u32,

    /// I/O size in bytes (4096, 4k, 64K, 1M).
    #[arg(short = 'o', value_name = "IO_SIZE", value_parser = parse_size)]
    pub io_size: u64,

    /// I/O pattern.
    #[arg(
        short = 'w',
        value_name = "TYPE",
        value_enum,
        required_unless_present = "memcpy_rate"
    )]
    pub workload: Option<Workload>,

    /// Percentage of reads for rw and randrw (rwmixread).
    #[arg(short = 'M', value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: Option<u8>,

    /// Run time in seconds.
    #[arg(short = 't', value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub time: u64,

    /// Reactor cores: hex mask (0x3) or list ([0,1]).
    #[arg(short = 'm', long = "cpumask", value_name = "MASK", default_value = "0x1", value_parser = parse_mask)]
    pub cores: CoreList,

    /// SPDK JSON config creating the bdevs.
    #[arg(short = 'c', long = "json", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Run only on this bdev (repeatable); default: every bdev not claimed by another.
    #[arg(short = 'b', visible_short_alias = 'T', value_name = "BDEV")]
    pub bdevs: Vec<String>,

    /// Print interim results every SECONDS seconds.
    #[arg(short = 'S', value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub stats_period: Option<u64>,

    /// Output format of the results.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Idle reactors sleep instead of polling (for tests and shared machines).
    #[arg(long)]
    pub interrupt_mode: bool,

    /// Write every block of the target bdevs once before the timed run, so RAM-backed bdevs
    /// read real memory rather than the kernel's shared zero page (ours, not bdevperf's).
    #[arg(long)]
    pub prefill: bool,

    /// Do not pin reactor threads to their cores (pinned by default, as SPDK does).
    #[arg(long)]
    pub no_pin: bool,

    /// Measure this machine's memcpy rate over a region of SIZE bytes, and its zero-fill rate
    /// over -q buffers, instead of running jobs (benchmark baseline; uses -o, -q, -t, -m).
    #[arg(long, hide = true, value_name = "SIZE", value_parser = parse_size)]
    pub memcpy_rate: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_spdk_spellings() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in ["", "k", "4x", "-1", "0", "4 k", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bdevperf_spellings_parse() {
        let a = PerfArgs::try_parse_from([
            "quorum-perf",
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "write_zeroes",
            "-t",
            "1",
            "-b",
            "A",
            "-T",
            "B",
            "-c",
            "x.json",
        ])
        .unwrap();
        assert_eq!(a.workload, Some(Workload::WriteZeroes));
        assert_eq!(a.bdevs, ["A", "B"]);
        assert_eq!(a.cores, CoreList(vec![0]));
        assert_eq!(a.output, OutputFormat::Text);
        assert!(PerfArgs::try_parse_from([
            "quorum-perf",
            "-q",
            "0",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1"
        ])
        .is_err());
        assert!(PerfArgs::try_parse_from([
            "quorum-perf",
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "rw",
            "-t",
            "1",
            "-M",
            "101"
        ])
        .is_err());
    }
}
