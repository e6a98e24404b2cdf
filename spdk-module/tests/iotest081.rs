//! QEMU iotest 081's quorum scenarios replayed inside stock `spdk_tgt` with the module
//! preloaded: SPDK's `bdev_aio` children on files, SPDK's `bdev_error` (`corrupt_data` on
//! reads) in front of some, the quorum exported over NVMe/TCP and read by SPDK's own
//! initiator, configured with SPDK's `spdk-rpc` and the repo's plugin. Also SPDK's hot
//! removal of a child, which the quorum treats as a failed child.

mod common;

use common::{image, App, Initiator};
use serde_json::{json, Value};

const IMAGE_LEN: usize = 1 << 20;
const GOOD: u8 = 0x32;
/// Where the scenarios read: away from the blocks SPDK's examine reads (the first and last).
const AT: u64 = 64 << 10;
const LEN: u64 = 4096;

/// A target with aio bdevs A0..A3 (512-byte blocks) on files of GOOD bytes, error bdevs
/// over the aio bdevs named in `errors`, a quorum `Q0` made by the `create` command, an
/// initiator for it, and the number of events SPDK's examine of Q0 caused.
struct Setup {
    dir: tempfile::TempDir,
    app: App,
    initiator: Initiator,
    examined: usize,
}

fn images() -> tempfile::TempDir {
    let dir = common::tempdir();
    for i in 0..4 {
        image(dir.path(), &format!("a{i}.img"), IMAGE_LEN, GOOD);
    }
    dir
}

fn setup(errors: &[&str], create: &str) -> Setup {
    setup_in(images(), errors, create)
}

fn setup_in(dir: tempfile::TempDir, errors: &[&str], create: &str) -> Setup {
    let app = App::spdk_tgt(dir.path(), &json!({}));
    let port = common::free_port();
    let mut script = String::new();
    for i in 0..4 {
        script += &format!(
            "bdev_aio_create {}/a{i}.img A{i} 512\n",
            dir.path().display()
        );
    }
    for base in errors {
        script += &format!("bdev_error_create {base}\n");
    }
    script += &format!("{create}\nbdev_wait_for_examine\n");
    script += &common::nvmf_export(&["Q0"], port);
    app.rpc_script(&script);
    let initiator = Initiator::new(dir.path(), "Q0", port);
    let examined = app.events().len();
    Setup {
        dir,
        app,
        initiator,
        examined,
    }
}

impl Setup {
    /// Events since the set-up, without ids and timestamps.
    fn new_events(&self) -> Vec<(String, Value)> {
        common::event_shapes(&self.app.events()[self.examined..])
    }
}

fn corrupt_reads(app: &App, bdev: &str, value: u8) {
    app.rpc_ok(&[
        "bdev_error_inject_error",
        bdev,
        "read",
        "corrupt_data",
        "-n",
        "1000",
        "--corrupt-offset",
        "7",
        "--corrupt-value",
        &value.to_string(),
    ]);
}

fn report_bad(child: &str, offset: u64, len: u64) -> (String, Value) {
    (
        "QUORUM_REPORT_BAD".to_string(),
        json!({"type": "read", "node-name": child, "sector-num": offset / 512, "sectors-count": len / 512}),
    )
}

#[test]
fn a_corrupted_child_is_outvoted_and_reported() {
    let s = setup(
        &["A1", "A2"],
        "bdev_quorum_create -b Q0 -t 2 A0 EE_A1 EE_A2",
    );
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert!(s.new_events().is_empty(), "agreement raises no event");
    corrupt_reads(&s.app, "EE_A2", 0x10);
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert_eq!(s.new_events(), [report_bad("EE_A2", AT, LEN)]);
    assert_eq!(s.app.failed_ios("Q0"), 0);
    // Mirrored into SPDK's notify library.
    let notes = s.app.rpc_json(&["notify_get_notifications"]);
    let mirrored = notes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "quorum_report_bad" && n["ctx"] == "EE_A2");
    assert_eq!(mirrored.count(), s.examined + 1, "{notes}");
    let counters = s.app.rpc_json(&["bdev_quorum_get_bdevs", "-b", "Q0"]);
    let children = &counters[0]["children"];
    assert_eq!(children[2]["name"], "EE_A2");
    assert_eq!(
        children[2]["bad_versions"].as_u64(),
        Some(s.examined as u64 + 1)
    );
    assert_eq!(children[0]["bad_versions"], 0);
}

#[test]
fn rewrite_corrupted_repairs_the_file() {
    let dir = images();
    // As 081 does: one child's file is corrupted behind the quorum's back.
    let mut bad = vec![GOOD; IMAGE_LEN];
    bad[AT as usize..(AT + 512) as usize].fill(0x42);
    std::fs::write(dir.path().join("a2.img"), &bad).unwrap();
    let s = setup_in(
        dir,
        &[],
        "bdev_quorum_create -b Q0 -t 2 --rewrite-corrupted A0 A1 A2",
    );
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert_eq!(s.new_events(), [report_bad("A2", AT, LEN)]);
    let file = std::fs::read(s.dir.path().join("a2.img")).unwrap();
    assert_eq!(
        file,
        vec![GOOD; IMAGE_LEN],
        "the winner was written back over the bad block"
    );
    let counters = s.app.rpc_json(&["bdev_quorum_get_bdevs"]);
    assert_eq!(counters[0]["children"][2]["rewrites"], 1);
    // Repaired: the next read agrees.
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert_eq!(s.new_events().len(), 1);
}

#[test]
fn two_different_corruptions_break_the_quorum() {
    let s = setup(
        &["A1", "A2"],
        "bdev_quorum_create -b Q0 -t 2 A0 EE_A1 EE_A2",
    );
    corrupt_reads(&s.app, "EE_A1", 0x10);
    corrupt_reads(&s.app, "EE_A2", 0x20);
    assert_ne!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert_eq!(
        s.app.failed_ios("Q0"),
        1,
        "three versions, threshold 2: the read fails (EIO)"
    );
    assert_eq!(
        s.new_events(),
        [(
            "QUORUM_FAILURE".to_string(),
            json!({"reference": "Q0", "sector-num": AT / 512, "sectors-count": LEN / 512})
        )]
    );
}

#[test]
fn blkverify_stops_on_a_mismatch_with_the_offset() {
    let mut s = setup(
        &["A1"],
        "bdev_quorum_create -b Q0 -t 2 --blkverify A0 EE_A1",
    );
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    corrupt_reads(&s.app, "EE_A1", 0x10);
    // The target stops during the read; the initiator's read then fails.
    let _ = std::panic::catch_unwind(|| s.initiator.read(AT, LEN));
    let status = s.app.wait_exit();
    let log = s.app.log();
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!(
        "quorum: offset={AT} bytes={LEN} contents mismatch at offset {}",
        AT + 7
    );
    assert!(log.contains(&expected), "{log}");
}

#[test]
fn invalid_settings_are_refused_with_qemus_messages() {
    let s = setup(&["A1"], "bdev_quorum_create -b Q0 -t 2 A0 A3");
    let cases: [(&[&str], &str); 5] = [
        (
            &["-t", "3", "A2", "EE_A1"],
            "threshold may not exceed children count",
        ),
        (
            &["-t", "0", "A2", "EE_A1"],
            "Parameter 'vote-threshold' expects a value >= 1",
        ),
        (
            &["-t", "1", "--blkverify", "A2", "EE_A1"],
            "blkverify=on can only be set if there are exactly two files and vote-threshold is 2",
        ),
        (
            &[
                "-t",
                "2",
                "--blkverify",
                "--rewrite-corrupted",
                "A2",
                "EE_A1",
            ],
            "rewrite-corrupted=on cannot be used with blkverify=on",
        ),
        (&["-t", "1", "A2", "A2"], "child 'A2' is listed twice"),
    ];
    for (args, message) in cases {
        let mut all = vec!["bdev_quorum_create", "-b", "Q1"];
        all.extend_from_slice(args);
        let e = s.app.rpc_err(&all);
        assert_eq!(e["code"], -22, "{all:?}: {e}");
        assert_eq!(e["message"], message, "{all:?}");
    }
    let e = s
        .app
        .rpc_err(&["bdev_quorum_create", "-b", "Q1", "-t", "1", "nope"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (Some(-19), Some("bdev 'nope' not found"))
    );
    let e = s
        .app
        .rpc_err(&["bdev_quorum_create", "-b", "Q0", "-t", "1", "A2"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (Some(-17), Some("bdev 'Q0' already exists"))
    );
    // A child another module holds: SPDK's refusal.
    let e = s
        .app
        .rpc_err(&["bdev_quorum_create", "-b", "Q1", "-t", "1", "A2", "A1"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (Some(-1), Some("bdev 'A1' is already claimed"))
    );
    // Nothing half-made: the children of refused quorums are free.
    s.app
        .rpc_ok(&["bdev_quorum_create", "-b", "Q1", "-t", "1", "A2", "EE_A1"]);
    let quorums = s.app.rpc_json(&["bdev_quorum_get_bdevs"]);
    assert_eq!(quorums.as_array().unwrap().len(), 2);
}

#[test]
fn children_come_and_go_under_qemus_threshold_rule() {
    let s = setup(&["A2"], "bdev_quorum_create -b Q0 -t 2 A0 A1");
    let e = s.app.rpc_err(&["bdev_quorum_remove_child", "Q0", "A1"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (
            Some(-22),
            Some("The number of children cannot be lower than the vote threshold 2")
        )
    );
    s.app.rpc_ok(&["bdev_quorum_add_child", "Q0", "EE_A2"]);
    let e = s.app.rpc_err(&["bdev_quorum_add_child", "Q0", "EE_A2"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (
            Some(-17),
            Some("bdev 'EE_A2 (already a child of Q0)' already exists")
        )
    );
    corrupt_reads(&s.app, "EE_A2", 0x10);
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert_eq!(s.new_events(), [report_bad("EE_A2", AT, LEN)]);
    s.app.rpc_ok(&["bdev_quorum_remove_child", "Q0", "EE_A2"]);
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    assert_eq!(
        s.new_events().len(),
        1,
        "the removed child is not read any more"
    );
    let info = s.app.rpc_json(&["bdev_get_bdevs", "-b", "Q0"]);
    assert_eq!(
        info[0]["driver_specific"]["quorum"]["base_bdevs"],
        json!(["A0", "A1"])
    );
    // The removed child is released: another quorum may claim it.
    s.app
        .rpc_ok(&["bdev_quorum_create", "-b", "Q1", "-t", "1", "EE_A2"]);
    // A quorum never contains itself, directly or through other quorums (quorum-tgt's words).
    let e = s.app.rpc_err(&["bdev_quorum_add_child", "Q0", "Q0"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (Some(-22), Some("bdev graph loop: Q0 -> Q0"))
    );
    // (Q0 is claimed by the NVMe-oF target exporting it: Q2 and Q3 show the loop.)
    s.app
        .rpc_script("bdev_quorum_create -b Q2 -t 1 A3\nbdev_quorum_create -b Q3 -t 1 Q2\n");
    let e = s.app.rpc_err(&["bdev_quorum_add_child", "Q2", "Q3"]);
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (Some(-22), Some("bdev graph loop: Q2 -> Q3 -> Q2"))
    );
    // Writes reach every child.
    let data: Vec<u8> = (0..LEN as usize).map(|i| (i * 7) as u8).collect();
    s.initiator.write(AT, &data);
    for i in 0..2 {
        let file = std::fs::read(s.dir.path().join(format!("a{i}.img"))).unwrap();
        assert_eq!(
            &file[AT as usize..(AT + LEN) as usize],
            &data[..],
            "child A{i}"
        );
    }
    assert_eq!(s.initiator.read(AT, LEN), data);
}

#[test]
fn a_child_spdk_removes_becomes_a_failed_child() {
    let s = setup(&[], "bdev_quorum_create -b Q0 -t 2 A0 A1 A2");
    // SPDK unregisters the claimed child; the quorum lets go of it (the RPC returns once
    // the child is gone) and keeps it in the vote order as a failed child.
    s.app.rpc_ok(&["bdev_aio_delete", "A2"]);
    let gone = s.app.rpc(&["bdev_get_bdevs", "-b", "A2"]);
    assert!(!gone.status.success(), "A2 is unregistered");
    assert_eq!(s.initiator.read(AT, LEN), vec![GOOD; LEN as usize]);
    let mut bad = report_bad("A2", AT, LEN);
    bad.1["error"] = json!("No such device");
    assert_eq!(s.new_events(), [bad]);
    let info = s.app.rpc_json(&["bdev_get_bdevs", "-b", "Q0"]);
    assert_eq!(
        info[0]["driver_specific"]["quorum"]["base_bdevs"],
        json!(["A0", "A1", "A2"])
    );
    // Writes go on with the two left (threshold 2).
    let data: Vec<u8> = (0..LEN as usize).map(|i| (i * 3) as u8).collect();
    s.initiator.write(AT, &data);
    assert_eq!(s.initiator.read(AT, LEN), data);
    s.app.rpc_ok(&["bdev_quorum_remove_child", "Q0", "A2"]);
    let info = s.app.rpc_json(&["bdev_get_bdevs", "-b", "Q0"]);
    assert_eq!(
        info[0]["driver_specific"]["quorum"]["base_bdevs"],
        json!(["A0", "A1"])
    );
    let before = s.app.events().len();
    assert_eq!(s.initiator.read(AT, LEN), data);
    assert_eq!(s.app.events().len(), before, "no failed child any more");
}
