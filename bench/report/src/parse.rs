//! Reads the figures out of each tool's own output (quorum-perf's JSON, qemu-img bench's text,
//! fio's JSON, quorum-perf's memcpy baseline), so the driver only has to pipe them here.
//! A run that reports failed I/O is refused: its rate would not be a rate of correct I/O.

use serde_json::Value;
use thiserror::Error;

/// Why a tool's output gave no figure.
#[derive(Debug, Error)]
pub enum ParseError {
    /// Not the JSON the tool prints.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field the figure needs is absent or not a number.
    #[error("no numeric field {0}")]
    Missing(String),
    /// The run itself reported an error.
    #[error("the run failed: {0}")]
    Failed(String),
    /// A line the text format always has was not found.
    #[error("no line like {0:?} in the output")]
    NoLine(&'static str),
}

/// IOPS and mean latency (µs) of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// I/Os per second.
    pub iops: f64,
    /// Mean latency in µs.
    pub lat_us: f64,
}

impl Rate {
    /// Refuses a run that did no I/O (fio, for one, reports a failed connection as a job
    /// with no error and zero IOPS).
    fn checked(self) -> Result<Rate, ParseError> {
        if self.iops > 0.0 && self.iops.is_finite() {
            Ok(self)
        } else {
            Err(ParseError::Failed(format!(
                "{} IOPS: no I/O completed",
                self.iops
            )))
        }
    }
}

fn number(v: &Value, path: &[&str]) -> Result<f64, ParseError> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .ok_or_else(|| ParseError::Missing(path.join(".")))
}

/// quorum-perf `--output json`: the Total row.
pub fn quorum_perf(text: &str) -> Result<Rate, ParseError> {
    let v: Value = serde_json::from_str(text)?;
    let failed = number(&v, &["total", "io_failed"])?;
    if failed > 0.0 {
        return Err(ParseError::Failed(format!("{failed} I/Os failed")));
    }
    Rate {
        iops: number(&v, &["total", "iops"])?,
        lat_us: number(&v, &["total", "avg_latency_us"])?,
    }
    .checked()
}

/// qemu-img bench's two lines, "Sending N read requests, ..." and "Run completed in S
/// seconds.": IOPS is N / S. It reports no latency, so the mean latency is derived from the
/// queue depth it kept full (Little's law: depth / IOPS).
pub fn qemu_img_bench(text: &str, depth: u32) -> Result<Rate, ParseError> {
    let count: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Sending ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or(ParseError::NoLine("Sending N read requests"))?;
    let seconds: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Run completed in ")?
                .strip_suffix(" seconds.")?
                .parse()
                .ok()
        })
        .ok_or(ParseError::NoLine("Run completed in S seconds."))?;
    if seconds <= 0.0 {
        return Err(ParseError::Failed(format!("elapsed time {seconds}")));
    }
    let iops = count / seconds;
    Rate {
        iops,
        lat_us: f64::from(depth) / iops * 1e6,
    }
    .checked()
}

/// fio `--output-format=json`: the first job's read or write side (`rw` decides which). fio's
/// nbd engine prints a line before the JSON, so everything before the first `{` is skipped.
pub fn fio(text: &str, rw: &str) -> Result<Rate, ParseError> {
    let start = text.find('{').ok_or(ParseError::NoLine("{"))?;
    let v: Value = serde_json::from_str(&text[start..])?;
    let job = v
        .get("jobs")
        .and_then(|j| j.get(0))
        .ok_or_else(|| ParseError::Missing("jobs[0]".into()))?;
    let error = number(job, &["error"])?;
    if error != 0.0 {
        return Err(ParseError::Failed(format!("fio job error {error}")));
    }
    let side = if rw.contains("read") { "read" } else { "write" };
    Rate {
        iops: number(job, &[side, "iops"])?,
        lat_us: number(job, &[side, "lat_ns", "mean"])? / 1000.0,
    }
    .checked()
}

/// quorum-perf `--memcpy-rate ... --output json`: (read, write, zero-fill) blocks per second.
pub fn memcpy(text: &str) -> Result<(f64, f64, f64), ParseError> {
    let v: Value = serde_json::from_str(text)?;
    Ok((
        number(&v, &["read_blocks_per_sec"])?,
        number(&v, &["write_blocks_per_sec"])?,
        number(&v, &["zero_blocks_per_sec"])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of `quorum-perf ... --output json` (fields trimmed to those read, plus others).
    const PERF: &str = r#"{"results":[{"job":"Q","iops":1071497.04}],"core_count":1,
        "total":{"iops":1071497.0428259827,"mibps":4185.5,"fail_per_sec":0.0,"timeout_per_sec":0.0,
        "io_completed":2150528,"io_failed":0,"miscompares":0,"avg_latency_us":119.45887339473293,
        "min_latency_us":56.5,"max_latency_us":23955.9}}"#;

    #[test]
    fn quorum_perf_total_row_and_failed_runs_refused() {
        let r = quorum_perf(PERF).unwrap();
        assert!((r.iops - 1071497.0428).abs() < 1e-3, "{r:?}");
        assert!((r.lat_us - 119.4588).abs() < 1e-3, "{r:?}");
        let failed = PERF.replace("\"io_failed\":0", "\"io_failed\":3");
        assert!(matches!(quorum_perf(&failed), Err(ParseError::Failed(_))));
        assert!(matches!(quorum_perf("{}"), Err(ParseError::Missing(_))));
        assert!(matches!(quorum_perf("oops"), Err(ParseError::Json(_))));
    }

    #[test]
    fn qemu_img_bench_count_over_elapsed() {
        let out = "Sending 200000 read requests, 4096 bytes each, 128 in parallel (starting at \
                   offset 0, step size 4096)\nRun completed in 0.800 seconds.\n";
        let r = qemu_img_bench(out, 128).unwrap();
        assert!((r.iops - 250_000.0).abs() < 1e-6);
        assert!((r.lat_us - 512.0).abs() < 1e-6);
        let w = "Sending 1000 write requests, 65536 bytes each, 1 in parallel (starting at \
                 offset 0, step size 65536)\nRun completed in 0.010 seconds.\n";
        assert!((qemu_img_bench(w, 1).unwrap().iops - 100_000.0).abs() < 1e-6);
        assert!(qemu_img_bench("qemu-img: Failed request: Input/output error\n", 1).is_err());
    }

    #[test]
    fn fio_skips_the_nbd_engine_banner_and_picks_the_side() {
        let out = r#"fio: connected to NBD server
{"fio version":"fio-3.33","jobs":[{"jobname":"j","error":0,
 "read":{"iops":250000.5,"lat_ns":{"mean":510000.0}},
 "write":{"iops":0.0,"lat_ns":{"mean":0.0}}}]}"#;
        let r = fio(out, "randread").unwrap();
        assert_eq!(r.iops, 250000.5);
        assert_eq!(r.lat_us, 510.0);
        // A job that never connected: no error field set, zero IOPS.
        assert!(matches!(fio(out, "randwrite"), Err(ParseError::Failed(_))));
        let bad = out.replace("\"error\":0", "\"error\":5");
        assert!(matches!(fio(&bad, "randread"), Err(ParseError::Failed(_))));
        assert!(fio("fio: engine nbd not loadable", "randread").is_err());
    }

    #[test]
    fn memcpy_rates() {
        let out = r#"{"block_size":4096,"region_bytes":536870912,
            "read_blocks_per_sec":2500000.0,"write_blocks_per_sec":2000000.0,
            "zero_blocks_per_sec":10000000.0}"#;
        assert_eq!(
            memcpy(out).unwrap(),
            (2_500_000.0, 2_000_000.0, 10_000_000.0)
        );
        assert!(matches!(
            memcpy(&out.replace("zero_blocks", "other")),
            Err(ParseError::Missing(_))
        ));
    }
}
