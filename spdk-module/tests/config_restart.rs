//! `save_config` of an spdk_tgt with quorums, and a restart with `-c` on what it returned:
//! the same quorums come back, with their options, children in vote order, and identity.

mod common;

use common::{image, App};
use serde_json::{json, Value};

fn quorum_entries(config: &Value) -> Vec<Value> {
    config["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["subsystem"] == "bdev")
        .flat_map(|s| s["config"].as_array().unwrap().clone())
        .filter(|e| e["method"] == "bdev_quorum_create")
        .collect()
}

/// What the target says about its quorums: (name, uuid, driver_specific.quorum).
fn quorums(app: &App) -> Vec<(Value, Value, Value)> {
    let mut all: Vec<_> = app
        .rpc_json(&["bdev_get_bdevs"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["product_name"] == "Quorum disk")
        .map(|b| {
            (
                b["name"].clone(),
                b["uuid"].clone(),
                b["driver_specific"]["quorum"].clone(),
            )
        })
        .collect();
    all.sort_by_key(|q| q.0.to_string());
    all
}

#[test]
fn save_config_brings_the_quorums_back() {
    let dir = common::tempdir();
    for i in 0..6 {
        image(dir.path(), &format!("a{i}.img"), 1 << 20, 0x32);
    }
    let app = App::spdk_tgt(dir.path(), &json!({}));
    let mut script = String::new();
    for i in 0..6 {
        script += &format!(
            "bdev_aio_create {}/a{i}.img A{i} 512\n",
            dir.path().display()
        );
    }
    script += "bdev_error_create A2\n";
    script += "bdev_quorum_create -b Q0 -t 2 A0 A1 EE_A2\n";
    script += "bdev_quorum_create -b Q1 -t 1 --read-pattern fifo --rewrite-corrupted A3\n";
    script += "bdev_quorum_add_child Q1 A4\n";
    script += "bdev_quorum_create -b Q2 -t 2 --blkverify A5 Q1\n";
    app.rpc_script(&script);
    let before = quorums(&app);
    assert_eq!(before.len(), 3);
    // No replica states in this host yet: every child synced, as it joined.
    let child = |name: &str, reason: &str| {
        json!({"name": name, "state": "synced", "reason": reason, "dirty_regions": 0,
               "copied_regions": 0})
    };
    assert_eq!(
        before[1].2,
        json!({"vote_threshold": 1, "read_pattern": "fifo", "blkverify": false,
               "rewrite_corrupted": true, "base_bdevs": ["A3", "A4"],
               "children": [child("A3", "created"), child("A4", "added_without_sync")]})
    );

    let saved = app.rpc_json(&["save_config"]);
    let entries = quorum_entries(&saved);
    assert_eq!(entries.len(), 3, "{saved}");
    assert_eq!(
        entries[0]["params"]["base_bdevs"],
        json!(["A0", "A1", "EE_A2"])
    );
    assert_eq!(app.stop().code(), Some(0));

    let app = App::spdk_tgt(dir.path(), &saved);
    // The restart creates Q1 over both children: A4 now joined with it.
    let mut want = before.clone();
    want[1].2["children"][1] = child("A4", "created");
    assert_eq!(
        quorums(&app),
        want,
        "same names, uuids, options and children"
    );
    // And they serve I/O: the events ring is empty, the counters run.
    app.rpc_ok(&["bdev_wait_for_examine"]);
    let counters = app.rpc_json(&["bdev_quorum_get_bdevs", "-b", "Q0"]);
    assert!(
        counters[0]["children"][0]["reads"].as_u64().unwrap() > 0,
        "examine read through Q0"
    );
    assert_eq!(app.stop().code(), Some(0));
}
