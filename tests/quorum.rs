//! The quorum bdev over malloc children: every rule of CONTRACT section 3 that needs no
//! failing child (those are in quorum_failures.rs, over error bdevs), and QEMU iotest 081's
//! corruption sequence replayed at the bdev level.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{delete, pattern, runtime};
use quorum_bdev::bdev::blocking::{command, read, run_io, write};
use quorum_bdev::bdev::{Bdev, BdevRegistry, IoType};
use quorum_bdev::control::methods;
use quorum_bdev::control::rpc::{call_blocking, Ctx};
use quorum_bdev::modules::malloc;
use quorum_bdev::modules::quorum::{self, QuorumOptions, ReadPattern};
use quorum_bdev::runtime::Runtime;
use serde_json::{json, Value};

const BS: u32 = 512;
const BLOCKS: u64 = 2048;

fn children(rt: &Runtime, n: usize) -> Vec<Arc<Bdev>> {
    (0..n)
        .map(|i| malloc::create(rt, Some(format!("M{i}")), BLOCKS, BS, None).unwrap())
        .collect()
}

fn opts(threshold: usize) -> QuorumOptions {
    QuorumOptions {
        vote_threshold: threshold,
        read_pattern: ReadPattern::Quorum,
        blkverify: false,
        rewrite_corrupted: false,
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("M{i}")).collect()
}

fn rpc(
    rt: &Runtime,
    method: &str,
    params: Value,
) -> Result<Value, quorum_bdev::control::rpc::RpcError> {
    let ctx = Ctx { rt: rt.clone() };
    call_blocking(&ctx, &methods::find(method).unwrap(), Some(params))
}

fn events(rt: &Runtime, name: &str) -> Vec<Value> {
    rpc(rt, "bdev_quorum_get_events", json!({"name": name}))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn child_counters(rt: &Runtime, name: &str) -> Vec<Value> {
    let v = rpc(rt, "bdev_quorum_get_bdevs", json!({"name": name})).unwrap();
    v[0]["children"].as_array().unwrap().clone()
}

#[test]
fn writes_reach_every_child_and_reads_agree() {
    let rt = runtime(1);
    let kids = children(&rt, 3);
    let q = quorum::create(&rt, "Q", &names(3), opts(2), None).unwrap();
    let data = pattern(16 * 512, 1);
    write(&rt, &q, 100, &data).unwrap();
    for k in &kids {
        assert_eq!(read(&rt, k, 100, 16).unwrap(), data, "child {}", k.name());
    }
    assert_eq!(read(&rt, &q, 100, 16).unwrap(), data);
    assert!(events(&rt, "Q").is_empty());
    command(&rt, &q, IoType::Flush, 0, 0).unwrap();
    command(&rt, &q, IoType::WriteZeroes, 100, 4).unwrap();
    assert!(read(&rt, &kids[2], 100, 4).unwrap().iter().all(|&b| b == 0));
    let counters = child_counters(&rt, "Q");
    assert_eq!(counters.len(), 3);
    assert_eq!(counters[0]["writes"], 2);
    assert_eq!(counters[0]["reads"], 1);
    assert_eq!(counters[0]["flushes"], 1);
    rt.stop();
}

/// iotest 081: write a pattern, corrupt one child, the quorum still reads the right data
/// and names the bad child; with rewrite_corrupted the child is repaired; two corrupted
/// children break the quorum with EIO and QUORUM_FAILURE.
#[test]
fn iotest_081_sequence_at_bdev_level() {
    let rt = runtime(1);
    let kids = children(&rt, 3);
    let mut o = opts(2);
    o.rewrite_corrupted = true;
    let q = quorum::create(&rt, "Q", &names(3), o, None).unwrap();
    let good = pattern(20 * 512, 0xcd);
    write(&rt, &q, 0, &good).unwrap();

    // Corrupt child 2 behind the quorum's back.
    write(&rt, &kids[2], 0, &pattern(20 * 512, 0x32)).unwrap();
    assert_eq!(
        read(&rt, &q, 0, 20).unwrap(),
        good,
        "the vote corrects the read"
    );
    let ev = events(&rt, "Q");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["event"], "QUORUM_REPORT_BAD");
    assert_eq!(ev[0]["data"]["node-name"], "M2");
    assert_eq!(ev[0]["data"]["type"], "read");
    assert_eq!(ev[0]["data"]["sector-num"], 0);
    assert_eq!(ev[0]["data"]["sectors-count"], 20);
    assert!(
        ev[0]["data"].get("error").is_none(),
        "different data is not an error"
    );
    assert!(ev[0]["timestamp"]["seconds"].as_u64().unwrap() > 0);

    // rewrite_corrupted repaired the child before the read completed.
    assert_eq!(read(&rt, &kids[2], 0, 20).unwrap(), good);
    assert_eq!(read(&rt, &q, 0, 20).unwrap(), good);
    assert_eq!(events(&rt, "Q").len(), 1, "no new event once repaired");
    let counters = child_counters(&rt, "Q");
    assert_eq!(counters[2]["bad_versions"], 1);
    assert_eq!(counters[2]["rewrites"], 1);
    assert_eq!(counters[0]["rewrites"], 0);

    // Two children corrupted differently: no version reaches the threshold.
    write(&rt, &kids[1], 0, &pattern(20 * 512, 0x11)).unwrap();
    write(&rt, &kids[2], 0, &pattern(20 * 512, 0x22)).unwrap();
    assert_eq!(read(&rt, &q, 0, 20), Err(libc::EIO));
    let ev = events(&rt, "Q");
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "QUORUM_FAILURE");
    assert_eq!(last["data"]["reference"], "Q");
    assert_eq!(last["data"]["sectors-count"], 20);
    // QEMU reports no REPORT_BAD when the content vote fails, and nothing was rewritten.
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(read(&rt, &kids[1], 0, 20).unwrap(), pattern(20 * 512, 0x11));
    rt.stop();
}

#[test]
fn without_rewrite_the_corrupted_child_stays_corrupted() {
    let rt = runtime(1);
    let kids = children(&rt, 3);
    let q = quorum::create(&rt, "Q", &names(3), opts(2), None).unwrap();
    let good = pattern(4096, 7);
    write(&rt, &q, 8, &good).unwrap();
    let bad = pattern(4096, 8);
    write(&rt, &kids[0], 8, &bad).unwrap();
    // Child 0 reads into the caller's buffer: the winner's data must replace it.
    assert_eq!(read(&rt, &q, 8, 8).unwrap(), good);
    assert_eq!(read(&rt, &kids[0], 8, 8).unwrap(), bad);
    assert_eq!(read(&rt, &q, 8, 8).unwrap(), good);
    assert_eq!(
        events(&rt, "Q").len(),
        2,
        "each read reports the bad child again"
    );
    rt.stop();
}

#[test]
fn identical_corruption_on_a_majority_wins_the_vote() {
    // A vote, not a checksum: QEMU returns what most children agree on.
    let rt = runtime(1);
    let kids = children(&rt, 3);
    let q = quorum::create(&rt, "Q", &names(3), opts(2), None).unwrap();
    write(&rt, &q, 0, &pattern(512, 1)).unwrap();
    let other = pattern(512, 2);
    write(&rt, &kids[0], 0, &other).unwrap();
    write(&rt, &kids[1], 0, &other).unwrap();
    assert_eq!(read(&rt, &q, 0, 1).unwrap(), other);
    let ev = events(&rt, "Q");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["node-name"], "M2");
    rt.stop();
}

#[test]
fn threshold_one_and_tie_follow_qemu() {
    // Two children, threshold 1, different data: a tie; QEMU's version list is newest
    // first with a strict '>' so the later child's version wins.
    let rt = runtime(1);
    // The winner, child 1, lends its blocks: they are copied into the caller's buffer.
    let kids = children(&rt, 2);
    let q = quorum::create(&rt, "Q", &names(2), opts(1), None).unwrap();
    write(&rt, &kids[0], 0, &pattern(512, 1)).unwrap();
    write(&rt, &kids[1], 0, &pattern(512, 2)).unwrap();
    assert_eq!(read(&rt, &q, 0, 1).unwrap(), pattern(512, 2));
    let ev = events(&rt, "Q");
    assert_eq!(ev[0]["data"]["node-name"], "M0");
    rt.stop();
}

#[test]
fn fifo_reads_the_first_child_without_voting() {
    let rt = runtime(1);
    let kids = children(&rt, 3);
    let mut o = opts(2);
    o.read_pattern = ReadPattern::Fifo;
    let q = quorum::create(&rt, "Q", &names(3), o, None).unwrap();
    write(&rt, &q, 0, &pattern(1024, 1)).unwrap();
    write(&rt, &kids[0], 0, &pattern(1024, 9)).unwrap();
    assert_eq!(read(&rt, &q, 0, 2).unwrap(), pattern(1024, 9));
    let counters = child_counters(&rt, "Q");
    assert_eq!(counters[0]["reads"], 1);
    assert_eq!(counters[1]["reads"], 0);
    assert!(events(&rt, "Q").is_empty());
    rt.stop();
}

#[test]
fn creation_is_validated_like_qemu_and_changes_nothing_on_error() {
    let rt = runtime(1);
    children(&rt, 3);
    malloc::create(&rt, Some("Small".into()), 100, BS, None).unwrap();
    malloc::create(&rt, Some("Big4k".into()), BLOCKS / 8, 4096, None).unwrap();
    let cases = [
        (
            json!({"name": "Q", "base_bdevs": ["M0", "M1"], "vote_threshold": 0}),
            -22,
            "vote-threshold",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "M1"], "vote_threshold": 3}),
            -22,
            "threshold may not exceed children count",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "M1", "M2"], "vote_threshold": 2, "blkverify": true}),
            -22,
            "blkverify=on can only be set",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "M1"], "vote_threshold": 2, "blkverify": true, "rewrite_corrupted": true}),
            -22,
            "rewrite-corrupted=on cannot be used with blkverify=on",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "Small"], "vote_threshold": 1}),
            -22,
            "Small (100 blocks of 512 bytes)",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "Big4k"], "vote_threshold": 1}),
            -22,
            "Big4k (256 blocks of 4096 bytes)",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "Nope"], "vote_threshold": 1}),
            -19,
            "Nope",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0", "M0"], "vote_threshold": 1}),
            -22,
            "twice",
        ),
        (
            json!({"name": "M1", "base_bdevs": ["M0"], "vote_threshold": 1}),
            -17,
            "M1",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0"], "vote_threshold": 1, "read_pattern": "random"}),
            -32602,
            "read_pattern",
        ),
        (
            json!({"name": "Q", "base_bdevs": ["M0"], "vote_threshold": 1, "extra": 1}),
            -32602,
            "extra",
        ),
        (
            json!({"name": "Q", "base_bdevs": "M0", "vote_threshold": 1}),
            -32602,
            "base_bdevs",
        ),
    ];
    for (params, code, text) in cases {
        let err = rpc(&rt, "bdev_quorum_create", params.clone()).unwrap_err();
        assert_eq!(err.code, code, "{params}: {err:?}");
        assert!(err.message.contains(text), "{params}: {}", err.message);
    }
    // Nothing was claimed or registered by the refused calls.
    let reg = BdevRegistry::of(&rt);
    assert!(reg.get("Q").is_err());
    assert!(reg.list().iter().all(|b| b.claimed_by().is_none()));
    // Explicit false for the flags (what spdk-rpc sends) is accepted.
    let name = rpc(
        &rt,
        "bdev_quorum_create",
        json!({"name": "Q", "base_bdevs": ["M0", "M1", "M2"], "vote_threshold": 2,
               "read_pattern": "quorum", "blkverify": false, "rewrite_corrupted": false}),
    )
    .unwrap();
    assert_eq!(name, "Q");
    assert!(reg.get("M0").unwrap().claimed_by().is_some());
    assert_eq!(delete(&rt, "M0").unwrap_err().errno(), libc::EBUSY);
    let info = reg.get("Q").unwrap().info_json();
    assert_eq!(
        info["driver_specific"]["quorum"]["base_bdevs"],
        json!(["M0", "M1", "M2"])
    );
    assert_eq!(info["num_blocks"], BLOCKS);
    // Delete releases the children.
    assert_eq!(
        rpc(&rt, "bdev_quorum_delete", json!({"name": "Q"})).unwrap(),
        true
    );
    assert!(reg.get("M0").unwrap().claimed_by().is_none());
    assert_eq!(
        rpc(&rt, "bdev_quorum_delete", json!({"name": "Q"}))
            .unwrap_err()
            .code,
        -19
    );
    rt.stop();
}

#[test]
fn children_added_and_removed_with_io_running_on_every_reactor() {
    let rt = runtime(2);
    let kids = children(&rt, 4);
    let q = quorum::create(&rt, "Q", &names(3), opts(2), None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for reactor in 0..2usize {
        let (rt, q, stop, total) = (rt.clone(), q.clone(), stop.clone(), rounds.clone());
        workers.push(std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds < 50 {
                let lba = (reactor as u64) * 1000 + rounds % 64;
                let data = pattern(512, (rounds % 251) as u8);
                run_io(&rt, reactor, &q, IoType::Write, lba, 1, &data).unwrap();
                let got = run_io(&rt, reactor, &q, IoType::Read, lba, 1, &[0; 512]).unwrap();
                assert_eq!(got, data, "reactor {reactor} round {rounds}");
                rounds += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            rounds
        }));
    }
    let call =
        |method: &str, child: &str| rpc(&rt, method, json!({"name": "Q", "base_bdev": child}));
    // The topology changes while both reactors are in the middle of their rounds.
    let busy = |after: u64| {
        wait_for("I/O on both reactors", || {
            rounds.load(Ordering::Relaxed) >= after
        })
    };
    busy(20);
    // Removing down to the threshold is refused, as QEMU.
    call("bdev_quorum_remove_child", "M2").unwrap();
    let err = call("bdev_quorum_remove_child", "M1").unwrap_err();
    assert!(
        err.message
            .contains("cannot be lower than the vote threshold 2"),
        "{err:?}"
    );
    call("bdev_quorum_add_child", "M3").unwrap();
    assert_eq!(call("bdev_quorum_add_child", "M3").unwrap_err().code, -17);
    assert_eq!(
        call("bdev_quorum_remove_child", "Nope").unwrap_err().code,
        -19
    );
    busy(rounds.load(Ordering::Relaxed) + 20);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() >= 50);
    }
    assert!(kids[2].claimed_by().is_none(), "removed child released");
    assert!(kids[3].claimed_by().is_some());
    // After the add, writes reach the new child.
    let data = pattern(512, 77);
    write(&rt, &q, 1500, &data).unwrap();
    assert_eq!(read(&rt, &kids[3], 1500, 1).unwrap(), data);
    assert_eq!(read(&rt, &kids[2], 1500, 1).unwrap(), vec![0; 512]);
    let c = child_counters(&rt, "Q");
    let names: Vec<&str> = c.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["M0", "M1", "M3"]);
    rt.stop();
}

/// Waits until `condition` holds, failing the test after a deadline.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Operations of `kind` (`num_read_ops`, `num_write_ops`) bdev `name` completed, from
/// `bdev_get_iostat`.
fn completed(rt: &Runtime, name: &str, kind: &str) -> u64 {
    let stats = rpc(rt, "bdev_get_iostat", json!({ "name": name })).unwrap();
    stats["bdevs"][0][kind].as_u64().unwrap()
}

/// Quorum Q (rewrite_corrupted) over M0, M1 and a third child D2 = delay over EE_M2 (error
/// over M2), so the third child can corrupt a read and be slow to complete.
fn quorum_with_slow_corrupting_child(rt: &Runtime, slow_child: usize) -> Vec<Arc<Bdev>> {
    use quorum_bdev::modules::{delay, error};
    let kids = children(rt, 3);
    error::create(rt, "M2", None).unwrap();
    let no_delay = delay::Latencies {
        avg_read: 0,
        p99_read: 0,
        avg_write: 0,
        p99_write: 0,
    };
    let base = if slow_child == 2 { "EE_M2" } else { "M0" };
    delay::create(rt, "D".into(), base, no_delay, None).unwrap();
    let mut names = vec!["M0".to_string(), "M1".to_string(), "EE_M2".to_string()];
    names[slow_child] = "D".into();
    let mut o = opts(2);
    o.rewrite_corrupted = true;
    quorum::create(rt, "Q", &names, o, None).unwrap();
    kids
}

fn set_delay(rt: &Runtime, kind: &str, us: u64) {
    use quorum_bdev::modules::delay::{update_latency, LatencyType};
    for t in [format!("avg_{kind}"), format!("p99_{kind}")] {
        update_latency(rt, "D", LatencyType::from_spdk_name(&t).unwrap(), us).unwrap();
    }
}

fn corrupt_next_read(rt: &Runtime, child: &str) {
    use quorum_bdev::modules::error::{self, ErrorType, Injection, Target};
    let inj = Injection {
        target: Target::Only(IoType::Read),
        error_type: ErrorType::CorruptData,
        num: 1,
        queue_depth: 0,
        corrupt_offset: 7,
        corrupt_value: 0x80,
    };
    error::inject(rt, child, &inj).unwrap();
}

/// What both races must end with: the read returned the `old` data it voted on, every
/// child holds the `new` write, and child 2's corruption was outvoted. Returns the counters.
fn after_the_race(
    rt: &Runtime,
    reader: std::thread::JoinHandle<Result<Vec<u8>, i32>>,
    kids: &[Arc<Bdev>],
    lba: u64,
    (old, new): (&[u8], &[u8]),
) -> Vec<Value> {
    let got = reader.join().unwrap();
    assert!(
        got.as_deref() == Ok(old),
        "the read returns what it voted on"
    );
    for k in kids {
        let held = read(rt, k, lba, 8).unwrap();
        assert!(held == new, "{} lost the newer write", k.name());
    }
    let c = child_counters(rt, "Q");
    assert_eq!(c[2]["bad_versions"], 1, "the corrupting child was outvoted");
    c
}

/// rewrite_corrupted must never overwrite data newer than what the read returned. A write
/// that arrives while the rewrite of its blocks is in flight waits for it: the rewrite to a
/// slow, corrupting child is held for seconds when the write comes from another reactor,
/// and the write may complete only after the rewrite did.
#[test]
fn a_write_waits_for_a_rewrite_in_flight_on_its_blocks() {
    let rt = runtime(2);
    let kids = quorum_with_slow_corrupting_child(&rt, 2);
    let q = BdevRegistry::of(&rt).get("Q").unwrap();
    let (old, new) = (pattern(4096, 0x0d), pattern(4096, 0x0e));
    write(&rt, &q, 64, &old).unwrap();
    corrupt_next_read(&rt, "EE_M2");
    set_delay(&rt, "write", 3_000_000);
    let (rt1, q1) = (rt.clone(), q.clone());
    let reader = std::thread::spawn(move || run_io(&rt1, 0, &q1, IoType::Read, 64, 8, &[0; 4096]));
    wait_for("the rewrite to start", || {
        child_counters(&rt, "Q")[2]["rewrites"] == 1
    });
    assert!(
        !reader.is_finished(),
        "the read completes only after its rewrite"
    );
    let writes_before = completed(&rt, "D", "num_write_ops");
    // Writes to D from reactor 1 are held no longer: only the guard can make this one wait.
    set_delay(&rt, "write", 0);
    run_io(&rt, 1, &q, IoType::Write, 64, 8, &new).unwrap();
    assert_eq!(
        completed(&rt, "D", "num_write_ops"),
        writes_before + 2,
        "the write completed before the rewrite it raced with"
    );
    let c = after_the_race(&rt, reader, &kids, 64, (&old, &new));
    assert_eq!(c[2]["rewrites"], 1, "the rewrite went through");
    rt.stop();
}

/// The other half of the rule: a read that a write overtook does not rewrite its stale
/// winner. The read waits for a slow child while a write of new data to the same blocks
/// completes on every child; its vote then finds the corrupting child outvoted by the old
/// data, and the rewrite is skipped, so no child loses the newer write.
#[test]
fn a_read_overtaken_by_a_write_skips_its_rewrite() {
    let rt = runtime(2);
    let kids = quorum_with_slow_corrupting_child(&rt, 0);
    let q = BdevRegistry::of(&rt).get("Q").unwrap();
    let (old, new) = (pattern(4096, 0x1d), pattern(4096, 0x1e));
    write(&rt, &q, 128, &old).unwrap();
    corrupt_next_read(&rt, "EE_M2");
    set_delay(&rt, "read", 3_000_000);
    let done_before = ["M1", "EE_M2"].map(|c| completed(&rt, c, "num_read_ops"));
    let (rt1, q1) = (rt.clone(), q.clone());
    let reader = std::thread::spawn(move || run_io(&rt1, 0, &q1, IoType::Read, 128, 8, &[0; 4096]));
    // The write may come once the fast children hold what they read.
    wait_for("the read's fast children", || {
        ["M1", "EE_M2"]
            .iter()
            .zip(done_before)
            .all(|(c, before)| completed(&rt, c, "num_read_ops") > before)
    });
    run_io(&rt, 1, &q, IoType::Write, 128, 8, &new).unwrap();
    assert!(!reader.is_finished(), "the write overtook the read");
    let c = after_the_race(&rt, reader, &kids, 128, (&old, &new));
    assert_eq!(c[2]["rewrites"], 0, "the stale rewrite was skipped");
    rt.stop();
}

const BLKVERIFY_CHILD: &str = "QUORUM_TEST_BLKVERIFY_CHILD";

/// blkverify stops the process at the first differing byte, printing its absolute offset
/// the way QEMU does. The scenario runs in a child process (this same test binary).
#[test]
fn blkverify_stops_on_first_differing_byte() {
    if std::env::var_os(BLKVERIFY_CHILD).is_some() {
        let rt = runtime(1);
        let kids = children(&rt, 2);
        let mut o = opts(2);
        o.blkverify = true;
        let q = quorum::create(&rt, "Q", &names(2), o, None).unwrap();
        let data = pattern(8 * 512, 3);
        write(&rt, &q, 16, &data).unwrap();
        assert_eq!(
            read(&rt, &q, 16, 8).unwrap(),
            data,
            "identical children pass"
        );
        let mut bad = data.clone();
        bad[1234] ^= 0x40;
        write(&rt, &kids[1], 16, &bad).unwrap();
        let _ = read(&rt, &q, 16, 8);
        unreachable!("blkverify must stop the process");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "blkverify_stops_on_first_differing_byte",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(BLKVERIFY_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let offset = 16 * 512 + 1234;
    assert!(
        stderr.contains(&format!(
            "quorum: offset=8192 bytes=4096 contents mismatch at offset {offset}"
        )),
        "stderr: {stderr}"
    );
}

#[test]
fn a_child_that_cannot_lend_makes_the_quorum_copy_every_child() {
    // An error bdev cannot lend its memory, so this quorum copies every child's data: child
    // 0 into the caller's buffer, the others into pooled buffers. A corrupted child of each
    // place loses the vote. (The quorums of mallocs in the other tests lend, zcopy.)
    let rt = runtime(1);
    let kids = children(&rt, 3);
    let e1 = quorum_bdev::modules::error::create(&rt, "M1", None).unwrap();
    let names = vec!["M0".to_string(), e1.name().to_string(), "M2".to_string()];
    let q = quorum::create(&rt, "Q", &names, opts(2), None).unwrap();
    assert_eq!(q.info_json()["supported_io_types"]["zcopy"], false);
    let good = pattern(8 * 512, 0x41);
    write(&rt, &q, 32, &good).unwrap();
    assert_eq!(read(&rt, &q, 32, 8).unwrap(), good);
    assert!(events(&rt, "Q").is_empty());
    for (corrupt, seed) in [(2, 0x42), (1, 0x43), (0, 0x44)] {
        write(&rt, &kids[corrupt], 32, &pattern(8 * 512, seed)).unwrap();
        assert_eq!(
            read(&rt, &q, 32, 8).unwrap(),
            good,
            "child {corrupt} corrupted"
        );
        write(&rt, &kids[corrupt], 32, &good).unwrap();
    }
    let bad: Vec<_> = events(&rt, "Q")
        .iter()
        .map(|e| e["data"]["node-name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bad, ["M2", "EE_M1", "M0"]);
    assert_eq!(child_counters(&rt, "Q")[2]["reads"], 4);
    rt.stop();
}

#[test]
fn a_read_is_voted_on_data_older_than_a_write_submitted_after_it() {
    // A slow child (delay) next to mallocs: the read's vote waits for the slow child, and the
    // write submitted right after the read reaches the mallocs before that. Malloc data is
    // fixed when its read completes, so the vote sees three old versions; had the mallocs
    // lent their memory (zcopy), it would see the write's data there and report the slow
    // child as bad. The quorum lends only when every child does.
    use quorum_bdev::modules::delay::{self, Latencies};

    let rt = runtime(1);
    let _kids = children(&rt, 3);
    let slow = Latencies {
        avg_read: 2000,
        p99_read: 2000,
        avg_write: 2000,
        p99_write: 2000,
    };
    delay::create(&rt, "D0".into(), "M0", slow, None).unwrap();
    let names = vec!["D0".to_string(), "M1".to_string(), "M2".to_string()];
    let q = quorum::create(&rt, "Q", &names, opts(2), None).unwrap();
    let (old, new) = (pattern(4096, 1), pattern(4096, 2));
    write(&rt, &q, 0, &old).unwrap();
    let ops = vec![(IoType::Read, vec![0; 4096]), (IoType::Write, new.clone())];
    let mut delivered = common::submit_together(&rt, &q, 0, 8, ops);
    delivered.sort_by_key(|d| d.tag);
    let statuses: Vec<_> = delivered.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Ok(()), Ok(())]);
    assert_eq!(delivered[0].data, old, "the read's vote took the old data");
    assert!(events(&rt, "Q").is_empty(), "{:?}", events(&rt, "Q"));
    assert_eq!(read(&rt, &q, 0, 8).unwrap(), new);
    rt.stop();
}
