//! SPDK's own `bdevperf` with the module preloaded, `verify` workload (write a pattern, read
//! it back, compare) on three malloc children, one of them behind SPDK's error bdev with a
//! fault injected through bdevperf's RPC socket before `perform_tests`: the quorum ends with
//! no failed I/O and no miscompare; SPDK's raid1 of the same children stops at the first
//! corrupted read ("Buffer mismatch!"): what the quorum is for.

mod common;

use common::App;
use serde_json::{json, Value};

/// bdevperf waiting (`-z`) on a config of three 16 MiB mallocs, EE_M2 over M2, and `top`
/// (a create entry for bdev "Top" over M0, M1, EE_M2), for a verify workload.
fn bdevperf(top: Value) -> (tempfile::TempDir, App) {
    bdevperf_with(top, 4096, &["-w", "verify"])
}

/// As [`bdevperf`], with children of `blocks` 4 KiB blocks and `workload` (bdevperf's
/// workload arguments).
fn bdevperf_with(top: Value, blocks: u64, workload: &[&str]) -> (tempfile::TempDir, App) {
    let dir = common::tempdir();
    let mut config = vec![];
    for i in 0..3 {
        config.push(json!({"method": "bdev_malloc_create",
            "params": {"name": format!("M{i}"), "num_blocks": blocks, "block_size": 4096}}));
    }
    config.push(json!({"method": "bdev_error_create", "params": {"base_name": "M2"}}));
    config.push(top);
    let config = json!({"subsystems": [{"subsystem": "bdev", "config": config}]});
    let mut args = vec!["-z", "-T", "Top", "-q", "32", "-o", "4096", "-t", "2"];
    args.extend_from_slice(workload);
    let app = App::start("build/examples/bdevperf", dir.path(), &config, &args);
    (dir, app)
}

fn quorum_top() -> Value {
    json!({"method": "bdev_quorum_create",
        "params": {"name": "Top", "base_bdevs": ["M0", "M1", "EE_M2"], "vote_threshold": 2}})
}

/// Injects `error_type` on EE_M2's `io_type` I/O for the whole run, then runs the workload;
/// bdevperf's answer to `perform_tests`.
fn inject_and_run(app: &App, io_type: &str, error_type: &str) -> Value {
    let mut args = vec![
        "bdev_error_inject_error",
        "EE_M2",
        io_type,
        error_type,
        "-n",
        "10000000",
    ];
    if error_type == "corrupt_data" {
        args.extend(["--corrupt-offset", "100", "--corrupt-value", "255"]);
    }
    app.rpc_ok(&args);
    app.call("perform_tests", json!({}))
}

/// Runs the quorum with one fault and checks it ends clean; the quorum's counters of EE_M2.
fn quorum_ends_clean(io_type: &str, error_type: &str) -> Value {
    let (_dir, app) = bdevperf(quorum_top());
    let answer = inject_and_run(&app, io_type, error_type);
    let log = app.log();
    let result = &answer["result"]["results"][0];
    assert_eq!(result["job"], "Top", "{answer}\n{log}");
    assert_eq!(result["io_failed"], 0, "{answer}");
    assert!(result["iops"].as_f64().unwrap() > 0.0, "{answer}");
    assert!(!log.contains("Buffer mismatch"), "{log}");
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs"]);
    let ee = quorums[0]["children"][2].clone();
    assert_eq!(ee["name"], "EE_M2");
    assert_eq!(app.stop().code(), Some(0));
    ee
}

#[test]
fn quorum_outvotes_a_child_corrupting_reads() {
    let ee = quorum_ends_clean("read", "corrupt_data");
    assert!(
        ee["bad_versions"].as_u64().unwrap() > 100,
        "the fault was hit: {ee}"
    );
}

#[test]
fn quorum_survives_a_child_failing_reads() {
    let ee = quorum_ends_clean("read", "failure");
    assert!(
        ee["io_errors"].as_u64().unwrap() > 100,
        "the fault was hit: {ee}"
    );
}

#[test]
fn quorum_survives_a_child_failing_writes() {
    let ee = quorum_ends_clean("write", "failure");
    assert!(
        ee["io_errors"].as_u64().unwrap() > 100,
        "the fault was hit: {ee}"
    );
    // The child missed every write: its old data is outvoted on each read.
    assert!(ee["bad_versions"].as_u64().unwrap() > 100, "{ee}");
}

#[test]
fn quorum_rewrites_a_corrupting_child_under_overlapping_io() {
    // 64 blocks at QD 32, reads and writes mixed: rewrites meet newer writes to the same
    // blocks (the rewrite guard holds the writes back), and every read votes on the memory
    // the mallocs lend, with the error bdev corrupting M2's.
    let top = json!({"method": "bdev_quorum_create", "params": {"name": "Top",
        "base_bdevs": ["M0", "M1", "EE_M2"], "vote_threshold": 2, "rewrite_corrupted": true}});
    let (_dir, app) = bdevperf_with(top, 64, &["-w", "randrw", "-M", "50"]);
    let answer = inject_and_run(&app, "read", "corrupt_data");
    let result = &answer["result"]["results"][0];
    assert_eq!(result["io_failed"], 0, "{answer}\n{}", app.log());
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs"]);
    // Lent answers are all sampled at the vote: overlapping writes never make a good child
    // look bad.
    for good in 0..2 {
        assert_eq!(quorums[0]["children"][good]["bad_versions"], 0, "{quorums}");
    }
    // Most rewrites give way to a newer write of the same blocks; some go through.
    let ee = &quorums[0]["children"][2];
    assert!(ee["bad_versions"].as_u64().unwrap() > 1000, "{ee}");
    assert!(ee["rewrites"].as_u64().unwrap() > 10, "{ee}");
    assert_eq!(app.stop().code(), Some(0));
}

#[test]
fn raid1_passes_a_corrupted_read_on() {
    let raid = json!({"method": "bdev_raid_create", "params": {"name": "Top", "raid_level": "raid1",
        "base_bdevs": ["M0", "M1", "EE_M2"], "strip_size_kb": 0}});
    let (_dir, mut app) = bdevperf(raid);
    let answer = inject_and_run(&app, "read", "corrupt_data");
    assert!(
        answer["error"].is_object(),
        "bdevperf reports the miscompare: {answer}"
    );
    assert_ne!(app.wait_exit().code(), Some(0));
    assert!(
        app.log().contains("Buffer mismatch! Target: Top"),
        "{}",
        app.log()
    );
}

#[test]
fn every_io_type_spdks_targets_use_is_served() {
    let (_dir, app) = bdevperf(quorum_top());
    for workload in ["write_zeroes", "unmap", "flush", "reset", "verify"] {
        let answer = app.call(
            "perform_tests",
            json!({"workload_type": workload, "time_in_sec": 1, "queue_depth": 8}),
        );
        let result = &answer["result"]["results"][0];
        assert_eq!(
            result["io_failed"],
            0,
            "{workload}: {answer}\n{}",
            app.log()
        );
        assert!(
            result["iops"].as_f64().unwrap() > 0.0,
            "{workload}: {answer}"
        );
    }
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs"]);
    for child in quorums[0]["children"].as_array().unwrap() {
        assert!(child["flushes"].as_u64().unwrap() > 0, "{child}");
        assert!(
            child["writes"].as_u64().unwrap() > 0,
            "write_zeroes and unmap: {child}"
        );
    }
    assert_eq!(app.stop().code(), Some(0));
}

#[test]
fn a_quorum_serves_the_io_types_all_its_children_serve() {
    let dir = common::tempdir();
    let mut config = vec![];
    for (i, method) in ["bdev_malloc_create", "bdev_null_create"]
        .iter()
        .enumerate()
    {
        config.push(json!({"method": method,
            "params": {"name": format!("C{i}"), "num_blocks": 1024, "block_size": 4096}}));
    }
    config.push(json!({"method": "bdev_quorum_create",
        "params": {"name": "Q", "base_bdevs": ["C0", "C1"], "vote_threshold": 1}}));
    let app = App::spdk_tgt(
        dir.path(),
        &json!({"subsystems": [{"subsystem": "bdev", "config": config}]}),
    );
    let bdevs = app.rpc_json(&["bdev_get_bdevs"]);
    let types = |name: &str| {
        bdevs
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()["supported_io_types"]
            .clone()
    };
    let (malloc, null, quorum) = (types("C0"), types("C1"), types("Q"));
    for (io_type, served) in quorum.as_object().unwrap() {
        let both = malloc[io_type] == true && null[io_type] == true;
        let ours = ["read", "write", "flush", "unmap", "write_zeroes", "reset"]
            .contains(&io_type.as_str());
        assert_eq!(
            served,
            &json!(both && ours),
            "{io_type}: malloc {malloc}, null {null}"
        );
    }
    assert_eq!(quorum["read"], true);
    assert_eq!(app.stop().code(), Some(0));
}
