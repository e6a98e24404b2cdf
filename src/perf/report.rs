//! Turns job figures into bdevperf's output: its table (same columns, widths and units) and,
//! for `--output json`, the object bdevperf's `perform_tests` RPC returns (`results` per job
//! and `core_count`), plus a `total` object and latency percentiles, which bdevperf lacks.

use serde::Serialize;

use super::job::JobResult;
use super::Plan;
use crate::runtime::clock::ticks_to_us;
use crate::runtime::cpumask::format_cpumask;

/// Verified region of a job, in blocks.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyRange {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub length: u64,
}

/// One job's figures, under bdevperf's JSON names.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobReport {
    /// Job name: the bdev's name.
    pub job: String,
    /// Core of the job, as a hex mask.
    pub core_mask: String,
    /// Pattern name.
    pub workload: &'static str,
    /// Read percentage, for rw and randrw only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<u8>,
    /// "finished", or "failed" when any I/O failed or miscompared.
    pub status: &'static str,
    /// For verify: the job's region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_range: Option<VerifyRange>,
    /// Slots used.
    pub queue_depth: u32,
    /// Bytes per I/O.
    pub io_size: u64,
    /// Seconds the job ran, drain included.
    pub runtime: f64,
    /// Successful I/Os per second.
    pub iops: f64,
    /// Successful MiB per second.
    pub mibps: f64,
    /// Successful I/Os (ours; bdevperf only gives rates).
    pub io_completed: u64,
    /// Failed or miscompared I/Os.
    pub io_failed: u64,
    /// Timed-out I/Os (no I/O timeout is set, so always 0, as bdevperf without `-k`).
    pub io_timeout: u64,
    /// Of `io_failed`, the verify miscompares (ours).
    pub miscompares: u64,
    /// Mean latency in µs over every finished I/O.
    pub avg_latency_us: f64,
    /// Shortest latency in µs.
    pub min_latency_us: f64,
    /// Longest latency in µs.
    pub max_latency_us: f64,
    /// Median latency in µs (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_latency_us: Option<f64>,
    /// 90th percentile latency in µs (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_latency_us: Option<f64>,
    /// 99th percentile latency in µs (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_latency_us: Option<f64>,
    /// 99.9th percentile latency in µs (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_9_latency_us: Option<f64>,
}

/// The Total row: rates summed over jobs, latency over all their I/Os.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Totals {
    /// Sum of the jobs' IOPS.
    pub iops: f64,
    /// Sum of the jobs' MiB/s.
    pub mibps: f64,
    /// Sum of the jobs' failures per second.
    pub fail_per_sec: f64,
    /// Sum of the jobs' timeouts per second.
    pub timeout_per_sec: f64,
    /// Successful I/Os of all jobs.
    pub io_completed: u64,
    /// Failed I/Os of all jobs.
    pub io_failed: u64,
    /// Miscompares of all jobs.
    pub miscompares: u64,
    /// Mean latency in µs over all I/Os.
    pub avg_latency_us: f64,
    /// Shortest latency of any job, µs.
    pub min_latency_us: f64,
    /// Longest latency of any job, µs.
    pub max_latency_us: f64,
}

/// The whole result, as printed with `--output json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Per job, in job order.
    pub results: Vec<JobReport>,
    /// Distinct cores the jobs ran on.
    pub core_count: usize,
    /// The Total row.
    pub total: Totals,
}

impl Summary {
    /// Whether any I/O failed or miscompared: the run then exits non-zero.
    pub fn failed(&self) -> bool {
        self.total.io_failed > 0
    }
}

fn us(ticks: u64) -> f64 {
    ticks_to_us(ticks)
}

/// Builds the report of `results` (sorted by job) for `plan`.
pub fn summarize(plan: &Plan, results: &[JobResult]) -> Summary {
    let mut reports = Vec::with_capacity(results.len());
    let mut total_ios = 0u64;
    let mut total_ticks = 0u64;
    let mut cores: Vec<usize> = results.iter().map(|r| r.core).collect();
    cores.sort_unstable();
    cores.dedup();
    let mut total = Totals {
        iops: 0.0,
        mibps: 0.0,
        fail_per_sec: 0.0,
        timeout_per_sec: 0.0,
        io_completed: 0,
        io_failed: 0,
        miscompares: 0,
        avg_latency_us: 0.0,
        min_latency_us: f64::MAX,
        max_latency_us: 0.0,
    };
    for r in results {
        let seconds = (us(r.runtime_ticks) / 1e6).max(1e-9);
        let iops = r.completed as f64 / seconds;
        let ios = r.completed + r.failed;
        let avg = if ios == 0 {
            0.0
        } else {
            us(r.latency.sum_ticks) / ios as f64
        };
        let quantile = |q: f64| {
            r.histogram
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| us(h.value_at_quantile(q)))
        };
        let report = JobReport {
            job: r.name.clone(),
            core_mask: format_cpumask(&[r.core]),
            workload: plan.workload.name(),
            percentage: plan.workload.is_mixed().then_some(plan.read_percent),
            status: if r.failed > 0 { "failed" } else { "finished" },
            verify_range: (plan.workload == super::args::Workload::Verify).then_some(VerifyRange {
                start: r.region_blocks.0,
                length: r.region_blocks.1,
            }),
            queue_depth: r.queue_depth,
            io_size: plan.io_size,
            runtime: seconds,
            iops,
            mibps: iops * plan.io_size as f64 / (1024.0 * 1024.0),
            io_completed: r.completed,
            io_failed: r.failed,
            io_timeout: 0,
            miscompares: r.miscompares,
            avg_latency_us: avg,
            min_latency_us: us(r.latency.min_ticks),
            max_latency_us: us(r.latency.max_ticks),
            p50_latency_us: quantile(0.5),
            p90_latency_us: quantile(0.9),
            p99_latency_us: quantile(0.99),
            p99_9_latency_us: quantile(0.999),
        };
        total.iops += report.iops;
        total.mibps += report.mibps;
        total.fail_per_sec += r.failed as f64 / seconds;
        total.io_completed += r.completed;
        total.io_failed += r.failed;
        total.miscompares += r.miscompares;
        total.min_latency_us = total.min_latency_us.min(report.min_latency_us);
        total.max_latency_us = total.max_latency_us.max(report.max_latency_us);
        total_ios += ios;
        total_ticks += r.latency.sum_ticks;
        reports.push(report);
    }
    if total_ios > 0 {
        total.avg_latency_us = us(total_ticks) / total_ios as f64;
    }
    if total.min_latency_us == f64::MAX {
        total.min_latency_us = 0.0;
    }
    Summary {
        results: reports,
        core_count: cores.len(),
        total,
    }
}

/// bdevperf's column header (printed once before the rows).
pub fn header() -> String {
    format!(
        "\n{:>107}\n {:<28}: {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}\n",
        "Latency(us)",
        "Device Information",
        "runtime(s)",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "TO/s",
        "Average",
        "min",
        "max"
    )
}

/// One job's lines: the "Job:" line, bdevperf's error and verify lines, and the figures.
fn job_lines(plan: &Plan, r: &JobReport) -> String {
    let mut out = String::new();
    let percentage = r
        .percentage
        .map_or(String::new(), |p| format!("percentage: {p}, "));
    out.push_str(&format!(
        "Job: {} (Core Mask {}, workload: {}, {percentage}depth: {}, IO size: {})\n",
        r.job, r.core_mask, r.workload, r.queue_depth, plan.io_size
    ));
    if r.io_failed > 0 {
        out.push_str(&format!(
            "Job: {} ended in about {:.2} seconds with error\n",
            r.job, r.runtime
        ));
    }
    if let Some(range) = &r.verify_range {
        out.push_str(&format!(
            "\t Verification LBA range: start 0x{:x} length 0x{:x}\n",
            range.start, range.length
        ));
    }
    let timeouts = r.io_timeout as f64 / r.runtime;
    out.push_str(&format!(
        "\t {:<20}: {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2}\n",
        r.job,
        r.runtime,
        r.iops,
        r.mibps,
        r.io_failed as f64 / r.runtime,
        timeouts,
        r.avg_latency_us,
        r.min_latency_us,
        r.max_latency_us
    ));
    out
}

/// The job rows, a rule and the Total row (what bdevperf prints after the header, and what
/// `-S` prints every period).
pub fn rows(plan: &Plan, s: &Summary) -> String {
    let mut out: String = s.results.iter().map(|r| job_lines(plan, r)).collect();
    let t = &s.total;
    out.push_str(&format!(" {}\n", "=".repeat(115)));
    out.push_str(&format!(
        " {:<28}: {:>10} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2}\n",
        "Total",
        "",
        t.iops,
        t.mibps,
        t.fail_per_sec,
        t.timeout_per_sec,
        t.avg_latency_us,
        t.min_latency_us,
        t.max_latency_us
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::args::Workload;
    use crate::perf::job::Latency;
    use crate::runtime::clock::tick_rate;
    use hdrhistogram::Histogram;
    use std::time::Duration;

    fn plan(workload: Workload) -> Plan {
        Plan {
            workload,
            read_percent: 70,
            queue_depth: 4,
            io_size: 4096,
            duration: Duration::from_secs(1),
            stats_period: None,
        }
    }

    fn result(core: usize, completed: u64, failed: u64, miscompares: u64) -> JobResult {
        let rate = tick_rate();
        let mut h = Histogram::new_with_bounds(1, rate * 10, 3).unwrap();
        for _ in 0..(completed + failed) {
            h.record(rate / 1_000_000 * 10).unwrap();
        }
        JobResult {
            index: core,
            name: "Malloc0".into(),
            core,
            queue_depth: 4,
            region_blocks: (0, 64),
            completed,
            failed,
            miscompares,
            latency: Latency {
                sum_ticks: (completed + failed) * (rate / 1_000_000 * 10),
                min_ticks: rate / 1_000_000 * 5,
                max_ticks: rate / 1_000_000 * 20,
            },
            histogram: Some(h),
            runtime_ticks: rate * 2,
        }
    }

    #[test]
    fn miscompares_fail_the_run_and_show_in_every_output() {
        let p = plan(Workload::Verify);
        let s = summarize(&p, &[result(0, 1000, 3, 2), result(1, 500, 0, 0)]);
        assert!(s.failed());
        assert_eq!(s.results[0].status, "failed");
        assert_eq!(s.results[1].status, "finished");
        assert_eq!(s.total.io_failed, 3);
        assert_eq!(s.total.miscompares, 2);
        assert!(
            (s.results[0].iops - 500.0).abs() < 1.0,
            "{}",
            s.results[0].iops
        );
        assert!((s.total.iops - 750.0).abs() < 1.0);
        assert!((s.total.fail_per_sec - 1.5).abs() < 0.01);
        assert!((s.total.avg_latency_us - 10.0).abs() < 0.1);
        assert_eq!(s.core_count, 2);
        let p50 = s.results[0].p50_latency_us.unwrap();
        assert!((p50 - 10.0).abs() < 0.1, "{p50}");
        let text = rows(&p, &s);
        assert!(
            text.contains("Job: Malloc0 ended in about 2.00 seconds with error"),
            "{text}"
        );
        assert!(
            text.contains("Verification LBA range: start 0x0 length 0x40"),
            "{text}"
        );
        assert!(text.contains("1.50"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["results"][0]["io_failed"], 3);
        assert_eq!(json["results"][0]["miscompares"], 2);
        assert_eq!(json["total"]["io_failed"], 3);
        assert!(json["results"][0].get("percentage").is_none());
    }

    #[test]
    fn clean_run_passes_and_mixed_runs_show_their_percentage() {
        let p = plan(Workload::Randrw);
        let s = summarize(&p, &[result(0, 100, 0, 0)]);
        assert!(!s.failed());
        assert_eq!(s.results[0].percentage, Some(70));
        assert!(s.results[0].verify_range.is_none());
        let text = rows(&p, &s);
        assert!(text.starts_with(
            "Job: Malloc0 (Core Mask 0x1, workload: randrw, percentage: 70, depth: 4, IO size: 4096)\n"
        ));
        let row = text.lines().nth(1).unwrap();
        // bdevperf: "\t %-20s: %10.2f" then 6 × " %10.2f" and one " %8.2f".
        assert_eq!(row.len(), 2 + 20 + 2 + 10 + 6 * 11 + 9, "{row:?}");
        assert!(header().contains("Device Information          : runtime(s)"));
    }
}
