//! The quorum behind SPDK's iSCSI target: `iscsi_tgt` with the module preloaded exports a
//! malloc LUN and a quorum LUN (three mallocs, the third behind SPDK's error bdev corrupting
//! every read) on 127.0.0.1:3260 with SPDK's iscsi RPCs, and libiscsi's conformance suite
//! `iscsi-test-cu` (Debian's libiscsi-bin) runs against both: every test that passes on the
//! malloc LUN passes on the quorum LUN. Both lists are printed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::App;
use serde_json::json;

/// `iscsi-test-cu`'s verdicts on target node `node`'s LUN 0: the tests that passed, and the
/// others (failed, or skipped as not applicable to the device).
fn conformance(dir: &Path, node: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let url = format!("iscsi://127.0.0.1:3260/iqn.2016-06.io.spdk:{node}/0");
    let out = Command::new("iscsi-test-cu")
        .args(["--dataloss", "--verbose", &url])
        .current_dir(dir)
        .output()
        .expect("iscsi-test-cu runs: scripts/test-all installs libiscsi-bin");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.join(format!("iscsi-test-cu-{node}.log")), &text).unwrap();
    let (mut passed, mut others) = (BTreeSet::new(), BTreeSet::new());
    let mut suite = String::new();
    for line in text.lines() {
        if let Some(s) = line.trim().strip_prefix("Suite: ") {
            suite = s.trim().to_string();
        } else if let Some(t) = line.trim().strip_prefix("Test: ") {
            let name = format!("{suite}.{}", t.split(" ...").next().unwrap_or(t).trim());
            if t.ends_with("passed") {
                passed.insert(name);
            } else {
                others.insert(name);
            }
        }
    }
    assert!(!passed.is_empty(), "no test passed on {node}: {text}");
    (passed, others)
}

#[test]
fn iscsi_test_cu_passes_on_the_quorum_lun_what_it_passes_on_a_malloc_lun() {
    let dir = common::tempdir();
    let app = App::start("build/bin/iscsi_tgt", dir.path(), &json!({}), &[]);
    app.rpc_script(
        "bdev_malloc_create -b Single 64 512\n\
         bdev_malloc_create -b M0 64 512\n\
         bdev_malloc_create -b M1 64 512\n\
         bdev_malloc_create -b M2 64 512\n\
         bdev_error_create M2\n\
         bdev_quorum_create -b Top -t 2 M0 M1 EE_M2\n\
         bdev_wait_for_examine\n\
         bdev_error_inject_error EE_M2 read corrupt_data -n 100000000 -o 100 -v 255\n\
         iscsi_create_portal_group 1 127.0.0.1:3260\n\
         iscsi_create_initiator_group 2 ANY 127.0.0.1/32\n\
         iscsi_create_target_node malloc malloc Single:0 1:2 64 -d\n\
         iscsi_create_target_node quorum quorum Top:0 1:2 64 -d\n",
    );
    let (malloc_passed, malloc_others) = conformance(dir.path(), "malloc");
    let (quorum_passed, quorum_others) = conformance(dir.path(), "quorum");
    println!(
        "malloc LUN: {} passed: {malloc_passed:?}",
        malloc_passed.len()
    );
    println!(
        "malloc LUN: {} failed or skipped: {malloc_others:?}",
        malloc_others.len()
    );
    println!(
        "quorum LUN: {} passed: {quorum_passed:?}",
        quorum_passed.len()
    );
    println!(
        "quorum LUN: {} failed or skipped: {quorum_others:?}",
        quorum_others.len()
    );
    let lost: Vec<_> = malloc_passed.difference(&quorum_passed).collect();
    assert!(
        lost.is_empty(),
        "pass on malloc, not on the quorum: {lost:?}"
    );
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs", "-b", "Top"]);
    assert!(
        quorums[0]["children"][2]["bad_versions"].as_u64().unwrap() > 0,
        "the corrupting child was read and outvoted: {quorums}"
    );
    assert_eq!(app.stop().code(), Some(0));
}
