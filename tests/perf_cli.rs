//! `quorum-perf` driven as a user would: the real binary, real SPDK JSON config files, short
//! runs on one core in interrupt mode. Checks exit codes, that stdout is the documented JSON,
//! and that every bad input ends in one clean line on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_quorum-perf");

fn write_config(dir: &Path, entries: Value) -> PathBuf {
    let path = dir.join("bdevs.json");
    let config = json!({"subsystems": [{"subsystem": "bdev", "config": entries}]});
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// A malloc and a null bdev, both large enough for a second of 4 KiB I/O.
fn malloc_and_null(dir: &Path) -> PathBuf {
    write_config(
        dir,
        json!([
            {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 8192, "block_size": 512}},
            {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 1024, "block_size": 4096}}
        ]),
    )
}

fn perf(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--interrupt-mode", "--no-pin"])
        .args(args)
        .output()
        .expect("quorum-perf runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs with `--output json` and returns the parsed stdout, asserting stdout is only JSON.
fn perf_json(args: &[&str]) -> (Output, Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = perf(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {text}\nstderr: {}",
            stderr(&out)
        )
    });
    (out, value)
}

/// A refusal: non-zero exit, nothing on stdout, one line on stderr, no panic.
fn assert_clean_error(out: &Output, what: &str) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: exited 0");
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: stderr is not one line: {err:?}"
    );
    assert!(err.starts_with("quorum-perf: "), "{what}: {err:?}");
    assert!(!err.contains("panicked"), "{what}: {err:?}");
    err
}

#[test]
fn verify_passes_on_malloc_and_null() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    let (out, v) = perf_json(&[
        "-c",
        cfg.to_str().unwrap(),
        "-q",
        "8",
        "-o",
        "4k",
        "-w",
        "verify",
        "-t",
        "1",
    ]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    let results = v["results"].as_array().unwrap();
    let names: Vec<&str> = results.iter().map(|r| r["job"].as_str().unwrap()).collect();
    assert_eq!(names, ["Malloc0", "Null0"]);
    for r in results {
        assert_eq!(r["workload"], "verify");
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(r["io_failed"], 0, "{r}");
        assert_eq!(r["miscompares"], 0, "{r}");
        assert!(r["iops"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["io_completed"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["verify_range"]["start"], 0);
    }
    assert_eq!(results[0]["verify_range"]["length"], 8192);
    assert_eq!(results[1]["verify_range"]["length"], 1024);
    assert_eq!(v["total"]["io_failed"], 0);
}

#[test]
fn verify_on_two_cores_splits_each_bdev() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    let (out, v) = perf_json(&[
        "-c",
        cfg.to_str().unwrap(),
        "-q",
        "4",
        "-o",
        "4096",
        "-w",
        "verify",
        "-t",
        "1",
        "-m",
        "[0,1]",
        "-b",
        "Malloc0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = v["results"].as_array().unwrap();
    let layout: Vec<(&str, u64, u64)> = results
        .iter()
        .map(|r| {
            (
                r["core_mask"].as_str().unwrap(),
                r["verify_range"]["start"].as_u64().unwrap(),
                r["verify_range"]["length"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(layout, [("0x1", 0, 4096), ("0x2", 4096, 4096)]);
    assert_eq!(v["core_count"], 2);
    assert!(results
        .iter()
        .all(|r| r["io_failed"] == 0 && r["iops"].as_f64().unwrap() > 0.0));
}

#[test]
fn randrw_with_mix_reports_its_percentage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    let (out, v) = perf_json(&[
        "-c",
        cfg.to_str().unwrap(),
        "-b",
        "Malloc0",
        "-q",
        "16",
        "-o",
        "4k",
        "-w",
        "randrw",
        "-M",
        "70",
        "-t",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = &v["results"][0];
    assert_eq!(r["workload"], "randrw");
    assert_eq!(r["percentage"], 70);
    assert!(r["iops"].as_f64().unwrap() > 0.0);
    assert_eq!(
        v["results"].as_array().unwrap().len(),
        1,
        "-b limits the run"
    );
}

#[test]
fn json_output_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    let (out, v) = perf_json(&[
        "-c",
        cfg.to_str().unwrap(),
        "-b",
        "Null0",
        "-q",
        "4",
        "-o",
        "4k",
        "-w",
        "randread",
        "-t",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = &v["results"][0];
    for field in [
        "job",
        "core_mask",
        "workload",
        "status",
        "queue_depth",
        "io_size",
        "runtime",
        "iops",
        "mibps",
        "io_completed",
        "io_failed",
        "io_timeout",
        "miscompares",
        "avg_latency_us",
        "min_latency_us",
        "max_latency_us",
        "p50_latency_us",
        "p90_latency_us",
        "p99_latency_us",
        "p99_9_latency_us",
    ] {
        assert!(r.get(field).is_some(), "results[0] lacks {field}: {r}");
    }
    assert_eq!(r["job"], "Null0");
    assert_eq!(r["core_mask"], "0x1");
    assert_eq!(r["queue_depth"], 4);
    assert_eq!(r["io_size"], 4096);
    assert!(r.get("percentage").is_none() && r.get("verify_range").is_none());
    let runtime = r["runtime"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&runtime), "runtime {runtime}");
    let iops = r["iops"].as_f64().unwrap();
    let mibps = r["mibps"].as_f64().unwrap();
    assert!((mibps - iops * 4096.0 / 1048576.0).abs() < 1e-6 * iops.max(1.0));
    let (min, p50, p99, max) = (
        r["min_latency_us"].as_f64().unwrap(),
        r["p50_latency_us"].as_f64().unwrap(),
        r["p99_latency_us"].as_f64().unwrap(),
        r["max_latency_us"].as_f64().unwrap(),
    );
    assert!(
        min > 0.0 && min <= p50 * 1.01 && p50 <= p99 && p99 <= max * 1.01,
        "{r}"
    );
    for field in [
        "iops",
        "mibps",
        "fail_per_sec",
        "timeout_per_sec",
        "io_completed",
        "io_failed",
        "miscompares",
        "avg_latency_us",
        "min_latency_us",
        "max_latency_us",
    ] {
        assert!(v["total"].get(field).is_some(), "total lacks {field}");
    }
    assert_eq!(v["core_count"], 1);
    assert_eq!(v["total"]["io_completed"], r["io_completed"]);
}

#[test]
fn every_workload_runs_and_the_table_is_bdevperfs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    for w in [
        "read",
        "write",
        "randwrite",
        "flush",
        "unmap",
        "write_zeroes",
    ] {
        let out = perf(&[
            "-c",
            cfg.to_str().unwrap(),
            "-b",
            "Malloc0",
            "-q",
            "4",
            "-o",
            "8k",
            "-w",
            w,
            "-t",
            "1",
        ]);
        assert!(out.status.success(), "{w}: {}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("Running I/O for 1 seconds...\n"), "{text}");
        assert!(text.contains(" Device Information          : runtime(s)       IOPS      MiB/s     Fail/s     TO/s    Average        min        max\n"), "{text}");
        assert!(
            text.contains(&format!(
                "Job: Malloc0 (Core Mask 0x1, workload: {w}, depth: 4, IO size: 8192)\n"
            )),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("\t Malloc0 "))
            .expect("job row");
        let figures: Vec<f64> = row
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(figures.len(), 8, "{row}");
        assert!(figures[1] > 0.0, "{w}: IOPS {row}");
        assert_eq!(figures[3], 0.0, "{w}: Fail/s {row}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(" Total                       :")),
            "{text}"
        );
    }
}

#[test]
fn periodic_stats_print_interim_totals() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    let out = perf(&[
        "-c",
        cfg.to_str().unwrap(),
        "-b",
        "Null0",
        "-q",
        "4",
        "-o",
        "4k",
        "-w",
        "read",
        "-t",
        "2",
        "-S",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let totals = text.lines().filter(|l| l.starts_with(" Total ")).count();
    assert_eq!(totals, 2, "one interim and one final Total row: {text}");
    // With JSON output the interim rows go to stderr and stdout stays one JSON object.
    let (out, v) = perf_json(&[
        "-c",
        cfg.to_str().unwrap(),
        "-b",
        "Null0",
        "-q",
        "4",
        "-o",
        "4k",
        "-w",
        "read",
        "-t",
        "2",
        "-S",
        "1",
    ]);
    assert!(out.status.success());
    assert!(stderr(&out).contains(" Total "), "{}", stderr(&out));
    assert!(v["total"]["iops"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_flags_give_one_clean_line_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = malloc_and_null(dir.path());
    let cfg = cfg.to_str().unwrap();
    let base = ["-c", cfg, "-q", "4", "-o", "4k", "-w", "read", "-t", "1"];
    let with = |change: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        for pair in change.chunks(2) {
            match args.iter().position(|a| a == pair[0]) {
                Some(i) if pair.len() == 2 => args[i + 1] = pair[1].to_string(),
                Some(i) => {
                    args.drain(i..i + 2);
                }
                None => args.extend(pair.iter().map(|s| s.to_string())),
            }
        }
        args
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with(&["-q", "0"]), "-q"),
        (with(&["-q", "many"]), "-q"),
        (with(&["-o", "0"]), "-o"),
        (with(&["-o", "4x"]), "4x"),
        (with(&["-w", "sideways"]), "sideways"),
        (with(&["-t", "0"]), "-t"),
        (with(&["-t", "99999999999999"]), "-t"),
        (with(&["-q", "100000000", "-o", "1M"]), "MiB of buffers"),
        (with(&["-w", "randrw"]), "-M"),
        (with(&["-w", "rw", "-M", "101"]), "-M"),
        (with(&["-m", "zz"]), "zz"),
        (with(&["-m", "0x0"]), "0x0"),
        (with(&["-m", "[4096]"]), "4096"),
        (with(&["-w"]), "-w"),
        (with(&["-S", "0"]), "-S"),
        (with(&["--bogus", "1"]), "--bogus"),
        (with(&["-b", "Nope"]), "'Nope'"),
        (with(&["-o", "1000"]), "'Malloc0'"),
        (
            with(&["-c", "/nonexistent/bdevs.json"]),
            "/nonexistent/bdevs.json",
        ),
        (with(&["-c"]), "no bdev"),
    ];
    for (args, needle) in cases {
        let out = perf(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = assert_clean_error(&out, &args.join(" "));
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} does not mention {needle}"
        );
    }
}

#[test]
fn config_errors_name_the_failing_entry() {
    let dir = tempfile::tempdir().unwrap();
    let run = |entries: Value| {
        let cfg = write_config(dir.path(), entries);
        perf(&[
            "-c",
            cfg.to_str().unwrap(),
            "-q",
            "1",
            "-o",
            "4k",
            "-w",
            "read",
            "-t",
            "1",
        ])
    };
    let out = run(json!([
        {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 64, "block_size": 512}},
        {"method": "bdev_malloc_create", "params": {"name": "M1", "num_blocks": 64, "block_size": 512, "colour": "red"}}
    ]));
    let err = assert_clean_error(&out, "unknown param");
    assert!(
        err.contains("entry 1") && err.contains("bdev_malloc_create") && err.contains("colour"),
        "{err}"
    );
    let out = run(json!([{"method": "bdev_teleport_create", "params": {}}]));
    let err = assert_clean_error(&out, "unknown method");
    assert!(err.contains("bdev_teleport_create"), "{err}");
    let out = run(
        json!([{"method": "bdev_null_create", "params": {"name": "N", "num_blocks": 8, "block_size": 100}}]),
    );
    let err = assert_clean_error(&out, "bad block size");
    assert!(
        err.contains("bdev_null_create") && err.contains("block_size"),
        "{err}"
    );
    std::fs::write(dir.path().join("bdevs.json"), b"{ not json").unwrap();
    let out = perf(&[
        "-c",
        dir.path().join("bdevs.json").to_str().unwrap(),
        "-q",
        "1",
        "-o",
        "4k",
        "-w",
        "read",
        "-t",
        "1",
    ]);
    let err = assert_clean_error(&out, "not json");
    assert!(err.contains("bdevs.json"), "{err}");
}

#[test]
fn help_and_version_exit_zero() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "-q <DEPTH>",
        "-o <IO_SIZE>",
        "-w <TYPE>",
        "-M <PERCENT>",
        "-t <SECONDS>",
        "--cpumask",
        "--json",
        "-S <SECONDS>",
        "--output",
        "--interrupt-mode",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
    assert!(!text.contains("memcpy"), "the benchmark mode stays hidden");
    assert!(Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap()
        .status
        .success());
}

/// `-w verify -q 32` on `bdev`, from the config `entries`; returns (exit ok, JSON, stderr).
fn verify_run(entries: Value, bdev: &str) -> (bool, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), entries);
    let (out, v) = perf_json(&[
        "-c",
        cfg.to_str().unwrap(),
        "-b",
        bdev,
        "-q",
        "32",
        "-o",
        "4k",
        "-w",
        "verify",
        "-t",
        "1",
    ]);
    (out.status.success(), v, stderr(&out))
}

fn corrupt_reads(name: &str, value: u8) -> Value {
    json!({"method": "bdev_error_inject_error", "params": {"name": name, "io_type": "read",
        "error_type": "corrupt_data", "num": 4_000_000_000u32, "corrupt_offset": 7, "corrupt_value": value}})
}

#[test]
fn verify_passes_on_a_uring_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; 16 << 20]).unwrap();
    let (ok, v, err) = verify_run(
        json!([{"method": "bdev_uring_create", "params": {"name": "U0", "filename": file, "block_size": 4096}}]),
        "U0",
    );
    assert!(ok, "{err}");
    assert_eq!(v["total"]["io_failed"], 0);
    assert!(v["results"][0]["io_completed"].as_u64().unwrap() > 0);
}

#[test]
fn verify_reports_the_miscompares_of_an_error_bdev_corrupting_reads() {
    let (ok, v, err) = verify_run(
        json!([
            {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 8192, "block_size": 512}},
            {"method": "bdev_error_create", "params": {"base_name": "M0"}},
            corrupt_reads("EE_M0", 0x40)
        ]),
        "EE_M0",
    );
    assert!(!ok, "a miscompare must fail the run");
    assert!(v["results"][0]["miscompares"].as_u64().unwrap() > 0, "{v}");
    assert!(err.contains("miscompare"), "{err}");
}

fn quorum_over_error_children(corrupting: &[(&str, u8)]) -> Value {
    let mut entries = Vec::new();
    for i in 0..3 {
        entries.push(json!({"method": "bdev_malloc_create", "params": {"name": format!("M{i}"), "num_blocks": 8192, "block_size": 512}}));
        entries
            .push(json!({"method": "bdev_error_create", "params": {"base_name": format!("M{i}")}}));
    }
    entries.extend(
        corrupting
            .iter()
            .map(|(name, value)| corrupt_reads(name, *value)),
    );
    entries.push(
        json!({"method": "bdev_quorum_create", "params": {"name": "Q", "vote_threshold": 2,
        "base_bdevs": ["EE_M0", "EE_M1", "EE_M2"]}}),
    );
    Value::Array(entries)
}

#[test]
fn quorum_verify_sees_no_miscompare_when_one_child_corrupts_every_read() {
    let (ok, v, err) = verify_run(quorum_over_error_children(&[("EE_M2", 0x01)]), "Q");
    assert!(ok, "{err}");
    assert_eq!(v["total"]["io_failed"], 0, "{v}");
    assert_eq!(v["results"][0]["miscompares"], 0, "{v}");
    assert!(v["results"][0]["io_completed"].as_u64().unwrap() > 100);
}

#[test]
fn quorum_with_two_corrupting_children_fails_reads_but_never_returns_wrong_data() {
    let (ok, v, _) = verify_run(
        quorum_over_error_children(&[("EE_M1", 0x01), ("EE_M2", 0x02)]),
        "Q",
    );
    assert!(!ok, "failed reads must fail the run");
    let r = &v["results"][0];
    assert!(r["io_failed"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(r["miscompares"], 0, "wrong data returned: {v}");
}
