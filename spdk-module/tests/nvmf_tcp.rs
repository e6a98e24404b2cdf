//! The quorum behind SPDK's NVMe-oF/TCP target: `nvmf_tgt` with the module preloaded exports
//! a quorum of three mallocs (the third behind SPDK's error bdev) on 127.0.0.1 with SPDK's
//! own nvmf RPCs, and SPDK's own initiators use it as a host would: `spdk_nvme_perf` (the
//! NVMe driver over TCP) reads and writes it, `bdevperf` (`bdev_nvme_attach_controller -t
//! tcp`) verifies every block it wrote while the target-side child corrupts reads.

mod common;

use common::App;
use serde_json::{json, Value};

/// `nvmf_tgt` with M0, M1, M2 (16 MiB each), EE_M2 over M2, quorum `Top` over M0, M1,
/// EE_M2 (threshold 2), exported as one namespace on 127.0.0.1; its port.
fn target(dir: &std::path::Path) -> (App, u16) {
    let app = App::start("build/bin/nvmf_tgt", dir, &json!({}), &["--interrupt-mode"]);
    let port = common::free_port();
    app.rpc_script(
        &("bdev_malloc_create -b M0 16 4096\n\
           bdev_malloc_create -b M1 16 4096\n\
           bdev_malloc_create -b M2 16 4096\n\
           bdev_error_create M2\n\
           bdev_quorum_create -b Top -t 2 M0 M1 EE_M2\n\
           bdev_wait_for_examine\n"
            .to_string()
            + &common::nvmf_export(&["Top"], port)),
    );
    (app, port)
}

/// The quorum's children as `bdev_quorum_get_bdevs` shows them.
fn children(app: &App) -> Vec<Value> {
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs", "-b", "Top"]);
    quorums[0]["children"].as_array().unwrap().clone()
}

#[test]
fn spdk_nvme_perf_reads_and_writes_a_quorum_namespace() {
    let dir = common::tempdir();
    let (app, port) = target(dir.path());
    let out = common::nvme_perf(
        &common::nvmf_trid("Top", port),
        &["-w", "randrw", "-M", "50"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "spdk_nvme_perf failed: {text}");
    let iops = common::nvme_perf_total_iops(&text);
    assert!(iops > 0.0, "{text}");
    assert_eq!(app.failed_ios("Top"), 0, "{text}");
    // Every read was voted on by all three children: none ever disagreed, so every write
    // reached all three.
    for child in children(&app) {
        assert!(child["reads"].as_u64().unwrap() > 100, "{child}");
        assert!(child["writes"].as_u64().unwrap() > 100, "{child}");
        assert_eq!(child["bad_versions"], 0, "{child}");
        assert_eq!(child["io_errors"], 0, "{child}");
    }
    assert_eq!(app.stop().code(), Some(0));
}

#[test]
fn bdevperf_over_tcp_verifies_while_a_target_child_corrupts_reads() {
    let dir = common::tempdir();
    let (target, port) = target(dir.path());
    target.rpc_ok(&[
        "bdev_error_inject_error",
        "EE_M2",
        "read",
        "corrupt_data",
        "-n",
        "10000000",
        "--corrupt-offset",
        "100",
        "--corrupt-value",
        "255",
    ]);
    let initiator = json!({"subsystems": [{"subsystem": "bdev", "config": [
        common::nvme_attach("N", "127.0.0.1", port, "Top")]}]});
    let bdevperf = App::start(
        "build/examples/bdevperf",
        dir.path(),
        &initiator,
        &[
            "-z", "-T", "Nn1", "-q", "32", "-o", "4096", "-t", "3", "-w", "verify",
        ],
    );
    let answer = bdevperf.call("perform_tests", json!({}));
    let log = bdevperf.log();
    let result = &answer["result"]["results"][0];
    assert_eq!(result["job"], "Nn1", "{answer}\n{log}");
    assert_eq!(result["io_failed"], 0, "{answer}\n{log}");
    assert!(result["iops"].as_f64().unwrap() > 0.0, "{answer}");
    assert!(!log.contains("Buffer mismatch"), "{log}");
    assert_eq!(bdevperf.stop().code(), Some(0));
    // The corruption was hit on the target and outvoted there.
    let ee = &children(&target)[2];
    assert_eq!(ee["name"], "EE_M2");
    assert!(ee["bad_versions"].as_u64().unwrap() > 100, "{ee}");
    assert_eq!(target.failed_ios("Top"), 0);
    assert_eq!(target.stop().code(), Some(0));
}
