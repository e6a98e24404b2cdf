//! `quorum-perf`, a bdevperf for this project: loads an SPDK JSON config (so every bdev an RPC
//! can create is a target), runs one job per reactor per target bdev for `-t` seconds and
//! prints bdevperf's table or one JSON object. A run with any failed or miscompared I/O exits
//! non-zero, so scripts and tests can rely on the exit code.

pub mod args;
pub mod job;
pub mod memcpy;
pub mod report;
pub mod workload;

use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::Parser;
use thiserror::Error;

use crate::bdev::{Bdev, BdevRegistry};
use crate::control::config::{load_file, ConfigError};
use crate::control::rpc::Ctx;
use crate::runtime::{Runtime, RuntimeOptions};
use args::{OutputFormat, PerfArgs, Workload};
use job::{JobResult, JobSpec, Region};
use report::Summary;

/// How long stopped jobs may take to finish their in-flight I/O before the run is declared
/// stuck (bdevperf waits forever; a hung bdev should not hang a script).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a run could not be carried out; shown as one line.
#[derive(Debug, Error)]
pub enum PerfError {
    /// A combination of options that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// The reactors could not start.
    #[error("cannot start reactors: {0}")]
    Runtime(std::io::Error),
    /// The JSON config failed (the message names the entry).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bdev cannot be used as asked.
    #[error("bdev '{name}': {reason}")]
    Bdev {
        /// The bdev.
        name: String,
        /// Why.
        reason: String,
    },
    /// Stopped jobs did not finish their I/O in time.
    #[error("{pending} job(s) still had I/O in flight {waited:?} after the run ended")]
    Stalled {
        /// Jobs that never reported.
        pending: usize,
        /// How long they were given.
        waited: Duration,
    },
}

/// The validated parameters of a run, shared by every job and the report.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Pattern.
    pub workload: Workload,
    /// Reads per hundred for rw/randrw; 100 or 0 for the pure patterns.
    pub read_percent: u8,
    /// Slots per job.
    pub queue_depth: u32,
    /// Bytes per I/O.
    pub io_size: u64,
    /// Run time.
    pub duration: Duration,
    /// `-S` period.
    pub stats_period: Option<Duration>,
}

impl Plan {
    /// Checks what clap cannot check alone; returns the plan and warnings (bdevperf's
    /// "Ignoring -M option...").
    pub fn from_args(args: &PerfArgs) -> Result<(Plan, Vec<String>), PerfError> {
        let workload = args
            .workload
            .ok_or_else(|| PerfError::Invalid("-w is required".into()))?;
        let mut warnings = Vec::new();
        let read_percent = match (workload, args.read_percent) {
            (Workload::Randrw | Workload::Rw, Some(p)) => p,
            (Workload::Randrw | Workload::Rw, None) => {
                return Err(PerfError::Invalid(
                    "-M must be specified to value from 0 to 100 for rw or randrw".into(),
                ))
            }
            (w, m) => {
                if m.is_some() {
                    warnings.push(
                        "Ignoring -M option... Please use -M option only when using rw or randrw."
                            .into(),
                    );
                }
                if matches!(w, Workload::Read | Workload::Randread) {
                    100
                } else {
                    0
                }
            }
        };
        Ok((
            Plan {
                workload,
                read_percent,
                queue_depth: args.queue_depth,
                io_size: args.io_size,
                duration: Duration::from_secs(args.time),
                stats_period: args.stats_period.map(Duration::from_secs),
            },
            warnings,
        ))
    }
}

/// The bdevs to run on: those named by `-b` (each must exist and be unclaimed), else every
/// bdev nobody claimed (bdevperf's leaf bdevs).
pub fn select_bdevs(rt: &Runtime, names: &[String]) -> Result<Vec<Arc<Bdev>>, PerfError> {
    let registry = BdevRegistry::of(rt);
    if names.is_empty() {
        let all: Vec<_> = registry
            .list()
            .into_iter()
            .filter(|b| b.claimed_by().is_none())
            .collect();
        if all.is_empty() {
            return Err(PerfError::Invalid(
                "no bdev to run on: give a config (-c) that creates one".into(),
            ));
        }
        return Ok(all);
    }
    let mut chosen: Vec<Arc<Bdev>> = Vec::new();
    for name in names {
        let bdev = registry.get(name).map_err(|_| PerfError::Bdev {
            name: name.clone(),
            reason: "not found".into(),
        })?;
        if let Some(owner) = bdev.claimed_by() {
            return Err(PerfError::Bdev {
                name: name.clone(),
                reason: format!("claimed by {owner}"),
            });
        }
        if !chosen.iter().any(|b| Arc::ptr_eq(b, &bdev)) {
            chosen.push(bdev);
        }
    }
    Ok(chosen)
}

/// Where one job runs and on what part of which bdev.
#[derive(Clone)]
pub struct Placement {
    reactor: usize,
    bdev: Arc<Bdev>,
    io_blocks: u64,
    region: Region,
    queue_depth: u32,
}

/// Splits each bdev among the reactors and checks the plan fits it (I/O size a multiple of the
/// block size, room for one I/O per job, I/O type supported); returns the placements and
/// warnings, so every refusal comes before any I/O.
pub fn place_jobs(
    rt: &Runtime,
    plan: &Plan,
    bdevs: &[Arc<Bdev>],
) -> Result<(Vec<Placement>, Vec<String>), PerfError> {
    let reactors = rt.num_reactors() as u64;
    let mut layout = Vec::new();
    let mut warnings = Vec::new();
    for bdev in bdevs {
        let fail = |reason: String| PerfError::Bdev {
            name: bdev.name().to_string(),
            reason,
        };
        let block_size = bdev.block_size() as u64;
        if !plan.io_size.is_multiple_of(block_size) {
            return Err(fail(format!(
                "IO size {} is not a multiple of its block size {block_size}",
                plan.io_size
            )));
        }
        let io_blocks = plan.io_size / block_size;
        let ios_per_job = bdev.num_blocks() / io_blocks / reactors;
        if ios_per_job == 0 {
            return Err(fail(format!(
                "{} blocks of {block_size} bytes cannot hold one {}-byte I/O per job ({reactors} jobs)",
                bdev.num_blocks(),
                plan.io_size
            )));
        }
        let io_type = match plan.workload {
            Workload::Flush => Some(crate::bdev::IoType::Flush),
            Workload::Unmap => Some(crate::bdev::IoType::Unmap),
            Workload::WriteZeroes => Some(crate::bdev::IoType::WriteZeroes),
            _ => None,
        };
        if let Some(t) = io_type.filter(|t| !bdev.io_type_supported(*t)) {
            return Err(fail(format!("does not support {}", t.spdk_name())));
        }
        let mut depth = plan.queue_depth;
        if plan.workload == Workload::Verify && depth as u64 > ios_per_job {
            depth = ios_per_job as u32;
            warnings.push(format!(
                "verify queue depth limited to {depth} on bdev '{}': each job has only {ios_per_job} I/O-sized blocks",
                bdev.name()
            ));
        }
        for r in 0..reactors {
            let region = Region {
                base_ios: r * ios_per_job,
                size_in_ios: ios_per_job,
            };
            layout.push(Placement {
                reactor: r as usize,
                bdev: bdev.clone(),
                io_blocks,
                region,
                queue_depth: depth,
            });
        }
    }
    check_buffer_memory(plan, &layout)?;
    Ok((layout, warnings))
}

/// Refuses a plan whose slot buffers could not fit in this machine's memory (`-q 1000000
/// -o 1M`), which would otherwise abort the process in the allocator mid-start.
fn check_buffer_memory(plan: &Plan, layout: &[Placement]) -> Result<(), PerfError> {
    let per_slot = match plan.workload {
        Workload::Flush | Workload::Unmap | Workload::WriteZeroes => 0,
        Workload::Verify => 2 * plan.io_size as u128,
        _ => plan.io_size as u128,
    };
    let needed: u128 = layout
        .iter()
        .map(|p| per_slot * p.queue_depth as u128)
        .sum();
    // SAFETY: plain queries without side effects.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = (pages.max(0) as u128) * (page_size.max(0) as u128);
    if physical > 0 && needed > physical / 2 {
        return Err(PerfError::Invalid(format!(
            "{} jobs × queue depth {} × IO size {} need {} MiB of buffers, more than half of \
             this machine's {} MiB",
            layout.len(),
            plan.queue_depth,
            plan.io_size,
            needed >> 20,
            physical >> 20
        )));
    }
    Ok(())
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// How long jobs run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunLength {
    /// Until stopped after the plan's run time.
    Timed,
    /// One pass over each job's region, then the job stops by itself.
    OnePass,
}

/// Runs the plan's jobs where [`place_jobs`] put them: starts them on their reactors, calls
/// `interim` with running figures every `-S` period, stops them after the run time, waits
/// for their drain and returns their final figures in job order.
pub fn run_jobs(
    rt: &Runtime,
    plan: &Plan,
    layout: Vec<Placement>,
    interim: &mut dyn FnMut(Vec<JobResult>),
) -> Result<Vec<JobResult>, PerfError> {
    drive(rt, plan, layout, RunLength::Timed, interim)
}

/// `--prefill`: one sequential pass of writes over every job's region, with the run's I/O
/// size, depth and placement, so RAM-backed bdevs are backed by real memory (a fresh malloc
/// bdev reads the kernel's zero page) and the timed run pays no first-touch page faults.
pub fn prefill(rt: &Runtime, plan: &Plan, layout: Vec<Placement>) -> Result<(), PerfError> {
    let write = Plan {
        workload: Workload::Write,
        read_percent: 0,
        ..plan.clone()
    };
    let results = drive(rt, &write, layout, RunLength::OnePass, &mut |_| {})?;
    match results.iter().find(|r| r.failed > 0) {
        Some(r) => Err(PerfError::Bdev {
            name: r.name.clone(),
            reason: format!("{} prefill writes failed", r.failed),
        }),
        None => Ok(()),
    }
}

fn stop_all(rt: &Runtime) {
    for reactor in 0..rt.num_reactors() {
        rt.send_msg(reactor, job::stop_local);
    }
}

fn drive(
    rt: &Runtime,
    plan: &Plan,
    layout: Vec<Placement>,
    length: RunLength,
    interim: &mut dyn FnMut(Vec<JobResult>),
) -> Result<Vec<JobResult>, PerfError> {
    let run_seed = random_seed();
    let failures_shown = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut started = 0;
    let mut start_error = None;
    for (index, p) in layout.into_iter().enumerate() {
        let reactor = p.reactor;
        let spec = JobSpec {
            index,
            bdev: p.bdev,
            core: rt.core_of(reactor),
            workload: plan.workload,
            read_percent: plan.read_percent,
            queue_depth: p.queue_depth,
            io_blocks: p.io_blocks,
            region: p.region,
            io_limit: (length == RunLength::OnePass).then_some(p.region.size_in_ios),
            seed: run_seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F),
            run_seed,
            failures_shown: failures_shown.clone(),
            done: tx.clone(),
        };
        match rt.run_on(reactor, move || job::start(spec)) {
            Ok(()) => started += 1,
            Err(e) => {
                start_error = Some(e);
                break;
            }
        }
    }
    if start_error.is_none() && length == RunLength::Timed {
        wait_run(rt, plan, interim);
    }
    // A one-pass run ends by itself; it is only stopped early when a job could not start.
    let stop_now = length == RunLength::Timed || start_error.is_some();
    if stop_now {
        stop_all(rt);
    }
    let deadline = stop_now.then(|| Instant::now() + DRAIN_TIMEOUT);
    let mut results = Vec::with_capacity(started);
    while results.len() < started {
        let next = match deadline {
            Some(d) => rx.recv_deadline(d).ok(),
            None => rx.recv().ok(),
        };
        match next {
            Some(r) => results.push(r),
            None => {
                return Err(PerfError::Stalled {
                    pending: started - results.len(),
                    waited: DRAIN_TIMEOUT,
                })
            }
        }
    }
    if !stop_now {
        // Forget the finished jobs still listed on their reactors.
        stop_all(rt);
    }
    if let Some(e) = start_error {
        return Err(e);
    }
    results.sort_by_key(|r| r.index);
    Ok(results)
}

/// Sleeps through the run time, taking a snapshot every `-S` period.
fn wait_run(rt: &Runtime, plan: &Plan, interim: &mut dyn FnMut(Vec<JobResult>)) {
    let start = Instant::now();
    let end = start + plan.duration;
    let mut next_stats = plan.stats_period.map(|p| start + p);
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        match next_stats {
            Some(at) if at < end => {
                std::thread::sleep(at.saturating_duration_since(now));
                let mut snapshot: Vec<JobResult> = (0..rt.num_reactors())
                    .flat_map(|r| rt.run_on(r, job::snapshot_local))
                    .collect();
                snapshot.sort_by_key(|r| r.index);
                interim(snapshot);
                next_stats = plan.stats_period.map(|p| at + p);
            }
            _ => std::thread::sleep(end - now),
        }
    }
}

/// The outcome of a whole invocation.
pub struct Outcome {
    /// Whether any I/O failed or miscompared.
    pub failed: bool,
}

fn print_summary(plan: &Plan, summary: &Summary, format: OutputFormat) {
    match format {
        OutputFormat::Text => print!("{}{}", report::header(), report::rows(plan, summary)),
        OutputFormat::Json => match serde_json::to_string_pretty(summary) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("quorum-perf: cannot encode the results: {e}"),
        },
    }
}

fn run_with_runtime(
    rt: &Runtime,
    args: &PerfArgs,
    plan: Option<Plan>,
) -> Result<Outcome, PerfError> {
    let Some(plan) = plan else {
        let region = args.memcpy_rate.unwrap_or(0);
        let rate = memcpy::measure(rt, region, args.io_size, args.queue_depth, args.time)?;
        match args.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&rate).unwrap_or_default()
            ),
            OutputFormat::Text => println!(
                "memcpy of {}-byte blocks at random offsets of a {}-byte region: \
                 read {:.0} blocks/s, write {:.0} blocks/s; zero-fill {:.0} blocks/s",
                rate.block_size,
                rate.region_bytes,
                rate.read_blocks_per_sec,
                rate.write_blocks_per_sec,
                rate.zero_blocks_per_sec
            ),
        }
        return Ok(Outcome { failed: false });
    };
    if let Some(path) = &args.config {
        load_file(&Ctx { rt: rt.clone() }, path)?;
    }
    let bdevs = select_bdevs(rt, &args.bdevs)?;
    let (layout, warnings) = place_jobs(rt, &plan, &bdevs)?;
    for w in &warnings {
        eprintln!("quorum-perf: warning: {w}");
    }
    if args.prefill {
        prefill(rt, &plan, layout.clone())?;
    }
    let text = args.output == OutputFormat::Text;
    if text {
        println!("Running I/O for {} seconds...", args.time);
        if plan.stats_period.is_some() {
            print!("{}", report::header());
        }
    }
    let mut interim = |snapshot: Vec<JobResult>| {
        let rows = report::rows(&plan, &report::summarize(&plan, &snapshot));
        if text {
            println!("{rows}");
        } else {
            eprintln!("{rows}");
        }
    };
    let results = run_jobs(rt, &plan, layout, &mut interim)?;
    let summary = report::summarize(&plan, &results);
    print_summary(&plan, &summary, args.output);
    Ok(Outcome {
        failed: summary.failed(),
    })
}

/// Runs a parsed command line: starts the reactors, does the work, stops them.
pub fn run(args: &PerfArgs) -> Result<Outcome, PerfError> {
    let plan = match args.memcpy_rate {
        Some(_) => None,
        None => {
            let (plan, warnings) = Plan::from_args(args)?;
            for w in &warnings {
                eprintln!("quorum-perf: warning: {w}");
            }
            Some(plan)
        }
    };
    let rt = Runtime::start(RuntimeOptions {
        cores: args.cores.0.clone(),
        interrupt_mode: args.interrupt_mode,
        pin_threads: !args.no_pin,
    })
    .map_err(PerfError::Runtime)?;
    let outcome = run_with_runtime(&rt, args, plan);
    rt.stop();
    outcome
}

/// clap's error on one line: its message without the usage block.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let message = text.split("\n\n").next().unwrap_or(&text);
    let message = message.strip_prefix("error: ").unwrap_or(message);
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The whole program: exit 0 on a clean run, 1 when I/O failed or the run could not be done,
/// 2 on a bad command line.
pub fn main() -> ExitCode {
    let args = match PerfArgs::try_parse() {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("quorum-perf: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(&args) {
        Ok(Outcome { failed: false }) => ExitCode::SUCCESS,
        Ok(Outcome { failed: true }) => ExitCode::from(1),
        Err(e) => {
            eprintln!("quorum-perf: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::{blocking, BdevBackend, BdevChannel, BdevError, BdevSpec, IoHandle, IoType};
    use std::rc::Rc;

    /// A disk that claims to keep data but reads back a fixed byte, or fails every I/O:
    /// what verify must catch.
    struct Faulty {
        errno: Option<i32>,
    }

    impl BdevChannel for Faulty {
        fn submit(&self, io: IoHandle) {
            if let Some(errno) = self.errno {
                return io.complete(Err(errno));
            }
            if io.io_type == IoType::Read {
                // SAFETY: the bdev layer checked the buffer; the I/O is ours until completed.
                unsafe { io.buf.as_mut_slice() }.fill(0xa5);
            }
            io.complete(Ok(()));
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    impl BdevBackend for Faulty {
        fn product_name(&self) -> &'static str {
            "Faulty test disk"
        }

        fn io_type_supported(&self, _: IoType) -> bool {
            true
        }

        fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
            Ok(Rc::new(Faulty { errno: self.errno }))
        }

        fn config_entry(&self, _: &Bdev) -> Option<(&'static str, serde_json::Value)> {
            None
        }
    }

    fn runtime(reactors: usize) -> Runtime {
        Runtime::start(RuntimeOptions {
            cores: vec![0; reactors],
            interrupt_mode: true,
            pin_threads: false,
        })
        .unwrap()
    }

    fn add(rt: &Runtime, name: &str, errno: Option<i32>) -> Arc<Bdev> {
        let spec = BdevSpec {
            name: name.into(),
            block_size: 512,
            num_blocks: 256,
            uuid: None,
        };
        BdevRegistry::of(rt)
            .register(rt, Bdev::new(spec, Box::new(Faulty { errno })).unwrap())
            .unwrap()
    }

    fn verify_plan() -> Plan {
        Plan {
            workload: Workload::Verify,
            read_percent: 0,
            queue_depth: 4,
            io_size: 4096,
            duration: Duration::from_millis(200),
            stats_period: None,
        }
    }

    fn run(rt: &Runtime, plan: &Plan) -> (Vec<JobResult>, Summary) {
        let bdevs = select_bdevs(rt, &[]).unwrap();
        let (layout, _) = place_jobs(rt, plan, &bdevs).unwrap();
        let results = run_jobs(rt, plan, layout, &mut |_| {}).unwrap();
        let summary = report::summarize(plan, &results);
        (results, summary)
    }

    #[test]
    fn verify_counts_miscompares_and_io_errors_per_bdev() {
        let rt = runtime(1);
        crate::modules::malloc::create(&rt, Some("Good".into()), 256, 512, None).unwrap();
        add(&rt, "Garbage", None);
        add(&rt, "Broken", Some(libc::EIO));
        let (results, summary) = run(&rt, &verify_plan());
        let by_name = |n: &str| results.iter().find(|r| r.name == n).unwrap();
        let good = by_name("Good");
        assert!(good.completed > 0);
        assert_eq!((good.failed, good.miscompares), (0, 0));
        let garbage = by_name("Garbage");
        assert_eq!(garbage.completed, 0);
        assert!(garbage.failed > 0);
        assert_eq!(garbage.miscompares, garbage.failed);
        let broken = by_name("Broken");
        assert_eq!(broken.completed, 0);
        assert!(broken.failed > 0);
        assert_eq!(broken.miscompares, 0);
        assert!(summary.failed());
        assert_eq!(summary.total.io_failed, garbage.failed + broken.failed);
        rt.stop();
    }

    #[test]
    fn jobs_on_several_reactors_get_disjoint_regions_and_verify_clean() {
        let rt = runtime(2);
        crate::modules::malloc::create(&rt, Some("M".into()), 1000, 512, None).unwrap();
        let plan = verify_plan();
        let bdevs = select_bdevs(&rt, &[]).unwrap();
        let (layout, _) = place_jobs(&rt, &plan, &bdevs).unwrap();
        let regions: Vec<(usize, Region)> = layout.iter().map(|p| (p.reactor, p.region)).collect();
        // 1000 blocks = 125 I/Os of 8 blocks, 62 per job.
        assert_eq!(
            regions,
            [
                (
                    0,
                    Region {
                        base_ios: 0,
                        size_in_ios: 62
                    }
                ),
                (
                    1,
                    Region {
                        base_ios: 62,
                        size_in_ios: 62
                    }
                ),
            ]
        );
        let (results, summary) = run(&rt, &plan);
        assert_eq!(results.len(), 2);
        assert!(!summary.failed(), "{summary:?}");
        assert!(results.iter().all(|r| r.completed > 0));
        rt.stop();
    }

    #[test]
    fn prefill_writes_every_block_the_run_touches() {
        let rt = runtime(2);
        // 100 I/Os of 4 KiB: 50 per reactor.
        let m = crate::modules::malloc::create(&rt, Some("M".into()), 800, 512, None).unwrap();
        let plan = Plan {
            workload: Workload::Randread,
            ..verify_plan()
        };
        let (layout, _) = place_jobs(&rt, &plan, std::slice::from_ref(&m)).unwrap();
        prefill(&rt, &plan, layout).unwrap();
        let data = blocking::read(&rt, &m, 0, 800).unwrap();
        let first = &data[..4096];
        assert!(first.iter().any(|&b| b != 0));
        assert!(
            data.chunks(4096).all(|io| io == first),
            "a block was not written"
        );
        assert_eq!(
            rt.run_on(0, || job::snapshot_local().len()),
            0,
            "jobs forgotten"
        );
        let broken = add(&rt, "Broken", Some(libc::EIO));
        let (layout, _) = place_jobs(&rt, &plan, &[broken]).unwrap();
        let err = prefill(&rt, &plan, layout).err().unwrap().to_string();
        assert!(
            err.contains("'Broken'") && err.contains("prefill writes failed"),
            "{err}"
        );
        rt.stop();
    }

    #[test]
    fn plans_are_refused_with_the_bdev_named() {
        let rt = runtime(1);
        crate::modules::malloc::create(&rt, Some("Small".into()), 4, 512, None).unwrap();
        let bdevs = select_bdevs(&rt, &[]).unwrap();
        let mut plan = verify_plan();
        let err = place_jobs(&rt, &plan, &bdevs).err().unwrap().to_string();
        assert!(
            err.contains("'Small'") && err.contains("cannot hold"),
            "{err}"
        );
        plan.io_size = 1000;
        let err = place_jobs(&rt, &plan, &bdevs).err().unwrap().to_string();
        assert!(err.contains("'Small'") && err.contains("multiple"), "{err}");
        plan.io_size = 512;
        let (layout, warnings) = place_jobs(&rt, &plan, &bdevs).unwrap();
        assert_eq!(layout[0].queue_depth, 4);
        assert!(warnings.is_empty());
        plan.queue_depth = 9;
        let (layout, warnings) = place_jobs(&rt, &plan, &bdevs).unwrap();
        assert_eq!(
            layout[0].queue_depth, 4,
            "verify depth limited to the region"
        );
        assert_eq!(warnings.len(), 1);
        let err = select_bdevs(&rt, &["Nope".into()])
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "bdev 'Nope': not found");
        rt.stop();
    }
}
