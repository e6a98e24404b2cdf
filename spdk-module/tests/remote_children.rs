//! Children on other hosts: three network namespaces (made here with `ip netns` and veth
//! pairs on a private /30 each) each run an `nvmf_tgt` exporting one malloc namespace over
//! TCP; a fourth SPDK app outside (bdevperf, the module preloaded) attaches the three with
//! `bdev_nvme_attach_controller` and runs `verify` on a quorum of them. One target is
//! killed with SIGKILL mid-run: the run ends with no failed I/O and no miscompare, and
//! QUORUM_REPORT_BAD names the lost child. The target restarts, its namespace is attached
//! again and added back with `bdev_quorum_add_child`, and a second run uses all three.
//! Every process and namespace the test made is removed when it ends, pass or fail.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::App;
use serde_json::{json, Value};

const PORT: u16 = 4420;

/// Runs `ip` with `args`; fails the test if it fails (the test needs root and iproute2).
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs: scripts/test-all installs it");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's network namespaces, one per remote host, deleted (with their veth pairs)
/// when dropped.
struct Hosts {
    namespaces: Vec<String>,
}

impl Hosts {
    /// `n` namespaces; host `i` is reached at `Hosts::addr(i)` through veth pair `i`.
    fn new(n: usize) -> Hosts {
        let pid = std::process::id();
        let mut hosts = Hosts { namespaces: vec![] };
        for i in 0..n {
            let ns = format!("quorum-{pid}-{i}");
            let (outside, inside) = (format!("qv{pid}{i}h"), format!("qv{pid}{i}n"));
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["addr", "add", &format!("10.231.{i}.1/30"), "dev", &outside]);
            ip(&["link", "set", &outside, "up"]);
            let in_ns = |args: &[&str]| {
                let mut full = vec!["netns", "exec", &ns, "ip"];
                full.extend_from_slice(args);
                ip(&full);
            };
            in_ns(&[
                "addr",
                "add",
                &format!("{}/30", Hosts::addr(i)),
                "dev",
                &inside,
            ]);
            in_ns(&["link", "set", &inside, "up"]);
            in_ns(&["link", "set", "lo", "up"]);
        }
        hosts
    }

    fn addr(i: usize) -> String {
        format!("10.231.{i}.2")
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting the outside end of a veth pair deletes both ends.
        for (i, ns) in self.namespaces.iter().enumerate() {
            let outside = format!("qv{}{i}h", std::process::id());
            let _ = Command::new("ip").args(["link", "del", &outside]).status();
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `nvmf_tgt` in host `i`'s namespace exporting malloc `M` (16 MiB) on its address. `-R`:
/// its hugepage files are unlinked at start, so a SIGKILL leaves none behind.
fn remote_target(i: usize, dir: &Path) -> App {
    let dir = dir.join(format!("host{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let ns = format!("quorum-{}-{i}", std::process::id());
    let app = App::start_in(
        Some(&ns),
        0,
        "build/bin/nvmf_tgt",
        &dir,
        &json!({}),
        &["--interrupt-mode", "-R"],
    );
    app.rpc_script(
        &("bdev_malloc_create -b M 16 4096\n".to_string()
            + &common::nvmf_export_at(&["M"], &Hosts::addr(i), PORT)),
    );
    app
}

/// The quorum's child named `name` as `bdev_quorum_get_bdevs` shows it.
fn child(app: &App, name: &str) -> Option<Value> {
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs", "-b", "Top"]);
    quorums[0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// Waits until `cond` holds, failing the test after [`common::PATIENCE`].
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < common::PATIENCE,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// bdevperf's result of one `perform_tests` run, checked clean: no failed I/O, no
/// miscompare.
fn assert_clean(answer: &Value, app: &App) {
    let result = &answer["result"]["results"][0];
    let log = app.log();
    assert_eq!(result["job"], "Top", "{answer}\n{log}");
    assert_eq!(result["io_failed"], 0, "{answer}\n{log}");
    assert!(result["iops"].as_f64().unwrap() > 0.0, "{answer}");
    assert!(!log.contains("Buffer mismatch"), "{log}");
}

#[test]
fn a_quorum_of_remote_namespaces_survives_a_killed_host_and_takes_it_back() {
    let dir = common::tempdir();
    let hosts = Hosts::new(3);
    let mut targets: Vec<Option<App>> =
        (0..3).map(|i| Some(remote_target(i, dir.path()))).collect();

    let mut config = vec![json!({"method": "bdev_nvme_set_options",
        "params": {"bdev_retry_count": 0}})];
    config
        .extend((0..3).map(|i| common::nvme_attach(&format!("N{i}"), &Hosts::addr(i), PORT, "M")));
    config.push(
        json!({"method": "bdev_quorum_create", "params": {"name": "Top",
        "base_bdevs": ["N0n1", "N1n1", "N2n1"], "vote_threshold": 2}}),
    );
    // On the second core: a polling app beside interrupt-mode targets on the first.
    let app = App::start_in(
        None,
        1,
        "build/examples/bdevperf",
        dir.path(),
        &json!({"subsystems": [{"subsystem": "bdev", "config": config}]}),
        &[
            "-z", "-T", "Top", "-q", "32", "-o", "4096", "-t", "6", "-w", "verify",
        ],
    );

    // Host 1 dies while the run is well under way.
    let answer = std::thread::scope(|s| {
        let run = s.spawn(|| app.call("perform_tests", json!({})));
        wait_for("verify I/O on N1n1", || {
            child(&app, "N1n1").is_some_and(|c| c["writes"].as_u64().unwrap() > 500)
        });
        targets[1].take().unwrap().sigkill();
        run.join().unwrap()
    });
    assert_clean(&answer, &app);
    let lost = child(&app, "N1n1").expect("the lost child keeps its place");
    assert!(lost["io_errors"].as_u64().unwrap() > 0, "{lost}");
    let events = app.events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "QUORUM_REPORT_BAD" && e["data"]["node-name"] == "N1n1"),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "QUORUM_REPORT_BAD" && e["data"]["node-name"] != "N1n1"),
        "only the lost host is reported: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e["event"] == "QUORUM_FAILURE"),
        "{events:?}"
    );

    // The operator detaches the dead controller (its namespace bdev goes: a hot removal
    // for the quorum), drops the failed child, and adds the restarted host's namespace.
    app.rpc_ok(&["bdev_nvme_detach_controller", "N1"]);
    wait_for("N1n1 removed", || {
        !app.rpc(&["bdev_get_bdevs", "-b", "N1n1"]).status.success()
    });
    app.rpc_ok(&["bdev_quorum_remove_child", "Top", "N1n1"]);
    targets[1] = Some(remote_target(1, dir.path()));
    let attach = common::nvme_attach("N1", &Hosts::addr(1), PORT, "M");
    let answer = app.call("bdev_nvme_attach_controller", attach["params"].clone());
    assert_eq!(answer["result"], json!(["N1n1"]), "{answer}");
    app.rpc_ok(&["bdev_quorum_add_child", "Top", "N1n1"]);
    let quorums = app.rpc_json(&["bdev_quorum_get_bdevs", "-b", "Top"]);
    assert_eq!(quorums[0]["num_children"], 3, "{quorums}");

    let answer = app.call("perform_tests", json!({"time_in_sec": 2}));
    assert_clean(&answer, &app);
    let back = child(&app, "N1n1").unwrap();
    assert!(back["writes"].as_u64().unwrap() > 100, "{back}");
    assert!(back["reads"].as_u64().unwrap() > 100, "{back}");
    assert_eq!(back["io_errors"], 0, "{back}");
    assert_eq!(app.stop().code(), Some(0));
    for target in targets.into_iter().flatten() {
        assert_eq!(target.stop().code(), Some(0));
    }
    drop(hosts);
}
