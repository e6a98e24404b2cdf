//! The quorum bdev with failing and corrupting children (SPDK error bdevs over malloc):
//! error events, fifo failover, flush reporting and silent read corruption.

mod common;

use common::{pattern, runtime};
use quorum_bdev::bdev::blocking::{command, read, write};
use quorum_bdev::bdev::IoType;
use quorum_bdev::control::methods;
use quorum_bdev::control::rpc::{call_blocking, Ctx};
use quorum_bdev::modules::error::{self, ErrorType, Injection, Target};
use quorum_bdev::modules::malloc;
use quorum_bdev::modules::quorum::{self, QuorumOptions, ReadPattern};
use quorum_bdev::runtime::Runtime;
use serde_json::{json, Value};

const BLOCKS: u64 = 1024;

/// Three malloc bases behind error bdevs EE_M0..EE_M2, and a quorum Q over them.
fn setup(
    rt: &Runtime,
    read_pattern: ReadPattern,
    rewrite: bool,
) -> std::sync::Arc<quorum_bdev::bdev::Bdev> {
    let mut children = Vec::new();
    for i in 0..3 {
        let m = malloc::create(rt, Some(format!("M{i}")), BLOCKS, 512, None).unwrap();
        children.push(
            error::create(rt, m.name(), None)
                .unwrap()
                .name()
                .to_string(),
        );
    }
    let opts = QuorumOptions {
        vote_threshold: 2,
        read_pattern,
        blkverify: false,
        rewrite_corrupted: rewrite,
    };
    quorum::create(rt, "Q", &children, opts, None).unwrap()
}

fn inject(rt: &Runtime, child: &str, io: IoType, error_type: ErrorType, num: u32) {
    let inj = Injection {
        target: Target::Only(io),
        error_type,
        num,
        queue_depth: 0,
        corrupt_offset: 100,
        corrupt_value: 0x5a,
    };
    error::inject(rt, child, &inj).unwrap();
}

fn events(rt: &Runtime) -> Vec<Value> {
    let ctx = Ctx { rt: rt.clone() };
    let m = methods::find("bdev_quorum_get_events").unwrap();
    call_blocking(&ctx, &m, Some(json!({"name": "Q"})))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_failing_child_is_reported_with_its_error_and_left_out_of_reads() {
    let rt = runtime(1);
    let q = setup(&rt, ReadPattern::Quorum, false);
    inject(&rt, "EE_M1", IoType::Write, ErrorType::Failure, 1);
    let data = pattern(4096, 1);
    write(&rt, &q, 0, &data).unwrap();
    inject(&rt, "EE_M0", IoType::Read, ErrorType::Failure, 1);
    // EE_M1 missed the write: out_of_sync, it is not read. Child 0 fails, child 2 alone
    // succeeds: below threshold.
    assert_eq!(read(&rt, &q, 0, 8), Err(libc::EIO));
    let ev = events(&rt);
    assert_eq!(ev[0]["data"]["type"], "write");
    assert_eq!(ev[0]["data"]["node-name"], "EE_M1");
    assert_eq!(ev[0]["data"]["error"], "Input/output error");
    assert_eq!(ev[1]["data"]["type"], "read");
    assert_eq!(ev[1]["data"]["node-name"], "EE_M0");
    assert_eq!(ev[2]["event"], "QUORUM_FAILURE");
    // Without failures the two synced children agree; the stale one is never asked.
    assert_eq!(read(&rt, &q, 0, 8).unwrap(), data);
    assert_eq!(events(&rt).len(), 3, "no new event: EE_M1 was not read");
    let ctx = Ctx { rt: rt.clone() };
    let m = methods::find("bdev_quorum_get_bdevs").unwrap();
    let info = call_blocking(&ctx, &m, Some(json!({"name": "Q"}))).unwrap();
    let m1 = &info[0]["children"][1];
    assert_eq!(m1["state"], "out_of_sync", "{info}");
    assert_eq!(m1["reason"], "write_failed", "{info}");
    assert_eq!(m1["dirty_regions"], 1, "{info}");
    assert_eq!(m1["reads"], 0, "{info}");
    rt.stop();
}

#[test]
fn too_few_successful_writes_fail_with_the_children_errno() {
    let rt = runtime(1);
    let q = setup(&rt, ReadPattern::Quorum, false);
    inject(&rt, "EE_M0", IoType::Write, ErrorType::Failure, 1);
    inject(&rt, "EE_M2", IoType::Write, ErrorType::Failure, 1);
    assert_eq!(write(&rt, &q, 8, &pattern(512, 3)), Err(libc::EIO));
    let ev = events(&rt);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["QUORUM_REPORT_BAD", "QUORUM_REPORT_BAD", "QUORUM_FAILURE"]
    );
    assert_eq!(ev[2]["data"]["reference"], "Q");
    assert_eq!(ev[2]["data"]["sector-num"], 8);
    assert_eq!(ev[2]["data"]["sectors-count"], 1);
    rt.stop();
}

#[test]
fn fifo_fails_over_in_child_order() {
    let rt = runtime(1);
    let q = setup(&rt, ReadPattern::Fifo, false);
    let data = pattern(1024, 5);
    write(&rt, &q, 4, &data).unwrap();
    inject(&rt, "EE_M0", IoType::Read, ErrorType::Failure, 1);
    assert_eq!(read(&rt, &q, 4, 2).unwrap(), data);
    let ev = events(&rt);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["node-name"], "EE_M0");
    assert_eq!(ev[0]["data"]["error"], "Input/output error");
    // Every child failing: the last child's error, reported for each, no QUORUM_FAILURE.
    for c in ["EE_M0", "EE_M1", "EE_M2"] {
        inject(&rt, c, IoType::Read, ErrorType::Failure, 1);
    }
    assert_eq!(read(&rt, &q, 4, 2), Err(libc::EIO));
    let ev = events(&rt);
    assert_eq!(ev.len(), 4);
    assert!(ev.iter().all(|e| e["event"] == "QUORUM_REPORT_BAD"));
    rt.stop();
}

#[test]
fn failed_flush_is_reported_over_the_whole_child() {
    let rt = runtime(1);
    let q = setup(&rt, ReadPattern::Quorum, false);
    inject(&rt, "EE_M2", IoType::Flush, ErrorType::Failure, 1);
    command(&rt, &q, IoType::Flush, 0, 0).unwrap();
    let ev = events(&rt);
    assert_eq!(ev[0]["data"]["type"], "flush");
    assert_eq!(ev[0]["data"]["sector-num"], 0);
    assert_eq!(ev[0]["data"]["sectors-count"], BLOCKS);
    inject(&rt, "EE_M0", IoType::Flush, ErrorType::Failure, 1);
    inject(&rt, "EE_M1", IoType::Flush, ErrorType::Failure, 1);
    assert_eq!(command(&rt, &q, IoType::Flush, 0, 0), Err(libc::EIO));
    // QEMU's quorum_co_flush emits no QUORUM_FAILURE.
    assert!(events(&rt)
        .iter()
        .all(|e| e["event"] == "QUORUM_REPORT_BAD"));
    rt.stop();
}

#[test]
fn silent_read_corruption_is_voted_out_and_repaired() {
    let rt = runtime(1);
    let q = setup(&rt, ReadPattern::Quorum, true);
    let data = pattern(4096, 9);
    write(&rt, &q, 16, &data).unwrap();
    // The error bdev flips a byte in what child 2 returns, once.
    inject(&rt, "EE_M2", IoType::Read, ErrorType::CorruptData, 1);
    assert_eq!(read(&rt, &q, 16, 8).unwrap(), data);
    let ev = events(&rt);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["node-name"], "EE_M2");
    assert!(ev[0]["data"].get("error").is_none());
    let counters = call_blocking(
        &Ctx { rt: rt.clone() },
        &methods::find("bdev_quorum_get_bdevs").unwrap(),
        None,
    )
    .unwrap();
    let child2 = &counters[0]["children"][2];
    assert_eq!(child2["bad_versions"], 1);
    assert_eq!(child2["rewrites"], 1);
    assert_eq!(child2["io_errors"], 0);
    rt.stop();
}
