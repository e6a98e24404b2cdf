//! The module preloaded into each of SPDK's stock apps the issue names (spdk_tgt's siblings
//! nvmf_tgt, iscsi_tgt and vhost; bdevperf and spdk_tgt have tests of their own): it
//! registers its RPC methods and notification types, and a quorum over mallocs is created,
//! shown in `driver_specific` and deleted.

mod common;

use common::App;
use serde_json::json;

fn quorum_works_in(binary: &str) {
    let dir = common::tempdir();
    let app = App::start(binary, dir.path(), &json!({}), &["--interrupt-mode"]);
    let methods = app.rpc_json(&["rpc_get_methods"]);
    for m in [
        "bdev_quorum_create",
        "bdev_quorum_delete",
        "bdev_quorum_add_child",
        "bdev_quorum_remove_child",
        "bdev_quorum_get_bdevs",
        "bdev_quorum_get_events",
    ] {
        assert!(
            methods.as_array().unwrap().iter().any(|v| v == m),
            "{binary}: no {m}"
        );
    }
    let types = app.rpc_json(&["notify_get_types"]);
    assert!(
        types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "quorum_report_bad"),
        "{types}"
    );
    assert!(
        types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "quorum_failure"),
        "{types}"
    );
    app.rpc_script(
        "bdev_malloc_create -b M0 8 512\nbdev_malloc_create -b M1 8 512\n\
         bdev_quorum_create -b Q0 -t 2 M0 M1\n",
    );
    let q = app.rpc_json(&["bdev_get_bdevs", "-b", "Q0"]);
    assert_eq!(
        q[0]["driver_specific"]["quorum"]["base_bdevs"],
        json!(["M0", "M1"]),
        "{binary}"
    );
    app.rpc_ok(&["bdev_quorum_delete", "Q0"]);
    // Deleted, its children released: a new quorum may claim them.
    app.rpc_ok(&["bdev_quorum_create", "-b", "Q1", "-t", "1", "M0", "M1"]);
    assert_eq!(app.stop().code(), Some(0), "{binary}");
}

#[test]
fn nvmf_tgt() {
    quorum_works_in("build/bin/nvmf_tgt");
}

#[test]
fn iscsi_tgt() {
    quorum_works_in("build/bin/iscsi_tgt");
}

#[test]
fn vhost() {
    quorum_works_in("build/bin/vhost");
}
