//! `limits`: measures on the calling core how many blocks per second this machine can compare
//! (memcmp) and hash (SHA-256), from DRAM and from cache, and prints one sample line (the
//! results file's format) per operation and block size. `bench/run` pins it with taskset to
//! the core the in-process benchmarks use.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use quorum_bench_report::limits::{rate, Op, Region};
use quorum_bench_report::model::{Impl, Key, Sample, Suite};

#[derive(Debug, Parser)]
#[command(name = "limits", about = "memcmp and SHA-256 rates of one core")]
struct Args {
    /// Block sizes in bytes (repeatable).
    #[arg(long = "bs", required = true, value_parser = clap::value_parser!(u64).range(1..))]
    sizes: Vec<u64>,
    /// Region the DRAM blocks are drawn from, in bytes (much larger than the caches).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    region: u64,
    /// Seconds per operation and size.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        eprintln!("limits: --seconds must be in (0, 3600]");
        return ExitCode::FAILURE;
    }
    let Some(region) = usize::try_from(args.region).ok().and_then(Region::new) else {
        eprintln!("limits: cannot allocate a region of {} bytes", args.region);
        return ExitCode::FAILURE;
    };
    for &bs in &args.sizes {
        if bs > args.region {
            eprintln!("limits: block of {bs} bytes is larger than the region");
            return ExitCode::FAILURE;
        }
        for op in Op::ALL {
            let sample = Sample {
                key: Key {
                    suite: Suite::Limits,
                    imp: Impl::Machine,
                    target: op.name().into(),
                    rw: String::new(),
                    bs,
                    qd: 0,
                },
                iops: rate(
                    op,
                    &region,
                    bs as usize,
                    Duration::from_secs_f64(args.seconds),
                ),
                lat_us: None,
                lat_derived: false,
            };
            println!("{}", serde_json::to_string(&sample).expect("plain data"));
        }
    }
    ExitCode::SUCCESS
}
