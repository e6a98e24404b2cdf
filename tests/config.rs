//! SPDK JSON config files applied through the RPC methods.

mod common;

use common::runtime;
use quorum_bdev::bdev::BdevRegistry;
use quorum_bdev::control::config::{load, ConfigError};
use quorum_bdev::control::rpc::Ctx;
use serde_json::json;

#[test]
fn config_creates_bdevs_in_order() {
    let rt = runtime(1);
    let ctx = Ctx { rt: rt.clone() };
    let cfg = json!({"subsystems": [
        {"subsystem": "accel", "config": null},
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 64, "block_size": 512}},
            {"method": "bdev_null_create", "params": {"name": "N0", "num_blocks": 64, "block_size": 4096}}
        ]}
    ]});
    load(&ctx, &cfg).unwrap();
    let names: Vec<String> = BdevRegistry::of(&rt)
        .list()
        .iter()
        .map(|b| b.name().to_string())
        .collect();
    assert_eq!(names, ["M0", "N0"]);
    rt.stop();
}

#[test]
fn failing_entry_is_named_and_stops_loading() {
    let rt = runtime(1);
    let ctx = Ctx { rt: rt.clone() };
    let cfg = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 64, "block_size": 512}},
        {"method": "bdev_malloc_create", "params": {"name": "M1", "num_blocks": 64, "block_size": 512, "bogus": 1}},
        {"method": "bdev_malloc_create", "params": {"name": "M2", "num_blocks": 64, "block_size": 512}}
    ]}]});
    let err = load(&ctx, &cfg).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Entry { index: 1, .. }), "{text}");
    assert!(
        text.contains("bdev_malloc_create") && text.contains("bogus"),
        "{text}"
    );
    assert!(BdevRegistry::of(&rt).get("M2").is_err());
    let cfg =
        json!({"subsystems": [{"subsystem": "bdev", "config": [{"method": "no_such_method"}]}]});
    assert!(load(&ctx, &cfg)
        .unwrap_err()
        .to_string()
        .contains("no_such_method"));
    rt.stop();
}
