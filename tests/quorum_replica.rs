//! Replicas kept in sync (issue 17), end to end on the real daemon: file-backed children
//! (aio over raw files, behind error bdevs), configured with `spdk-rpc`, written and read
//! with qemu-io over NBD, and the children's backing files read directly to see what each
//! replica really holds.

mod common;

use std::path::{Path, PathBuf};

use common::clients::{qemu_io, unix_uri};
use common::target::Target;
use common::{sparse_files, wait_until};
use serde_json::Value;

/// Bytes of each child.
const CHILD_BYTES: u64 = 8 << 20;
/// Dirty-region size the quorums are created with.
const REGION: u64 = 64 << 10;

/// A target with quorum `Q` (threshold 2, `extra` options) over EE_A0..EE_A2 (error bdevs
/// over aio bdevs A0..A2 on `paths`), exported over NBD on a Unix socket; returns the
/// target and the export's URI.
fn quorum_on_files(paths: &[PathBuf], extra: &str) -> (Target, String) {
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    let mut script = String::new();
    for (i, p) in paths.iter().take(3).enumerate() {
        script += &format!(
            "bdev_aio_create {} A{i} 512\nbdev_error_create A{i}\n",
            p.display()
        );
    }
    script += &format!(
        "bdev_quorum_create -b Q -t 2 --dirty-region-kb {} {extra} EE_A0 EE_A1 EE_A2\n\
         nbd_server_start {}\n\
         nbd_export_create Q\n",
        REGION >> 10,
        sock.display()
    );
    t.rpc_script(&script);
    (t, unix_uri(&sock, "Q"))
}

/// Quorum `Q` as `bdev_quorum_get_bdevs` shows it.
fn quorum_info(t: &Target) -> Value {
    let v = t.rpc_json(&[
        "--plugin",
        "quorum_rpc_plugin",
        "bdev_quorum_get_bdevs",
        "-b",
        "Q",
    ]);
    v[0].clone()
}

/// Child `name` of `Q` as `bdev_quorum_get_bdevs` shows it.
fn child(t: &Target, name: &str) -> Value {
    let q = quorum_info(t);
    q["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {q}"))
        .clone()
}

fn plugin(t: &Target, args: &[&str]) {
    let mut full = vec!["--plugin", "quorum_rpc_plugin"];
    full.extend_from_slice(args);
    t.rpc_ok(&full);
}

/// `len` bytes at `offset` of file `path`.
fn file_bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let all = std::fs::read(path).unwrap();
    all[offset as usize..(offset + len) as usize].to_vec()
}

#[test]
fn a_hung_child_is_left_behind_after_the_timeout_and_resynced_from_its_dirty_regions_only() {
    let (_dir, paths) = sparse_files(3, CHILD_BYTES);
    let (t, uri) = quorum_on_files(&paths, "--child-io-timeout-ms 200");
    qemu_io(&uri, &["write -P 0x11 0 1M", "flush"]);
    assert_eq!(child(&t, "EE_A2")["state"], "synced");

    // EE_A2 holds every write from now on: it never answers them.
    t.rpc_ok(&[
        "bdev_error_inject_error",
        "EE_A2",
        "write",
        "pending",
        "-n",
        "1000",
    ]);
    // Two writes: 64 KiB in region 2, and 4 KiB in region 8 (twice: one dirty region).
    qemu_io(
        &uri,
        &[
            "write -P 0x22 128k 64k",
            "write -P 0x33 512k 4k",
            "write -P 0x44 516k 4k",
            "flush",
        ],
    );
    let hung = child(&t, "EE_A2");
    assert_eq!(hung["state"], "out_of_sync", "{hung}");
    assert_eq!(hung["reason"], "write_timed_out", "{hung}");
    assert_eq!(hung["dirty_regions"], 2, "{hung}");
    assert_eq!(child(&t, "EE_A0")["state"], "synced");
    // Reads come from the synced children only: what was acknowledged.
    qemu_io(
        &uri,
        &[
            "read -P 0x11 0 128k",
            "read -P 0x22 128k 64k",
            "read -P 0x11 192k 320k",
            "read -P 0x33 512k 4k",
            "read -P 0x44 516k 4k",
        ],
    );
    // The hung child's file really missed the writes.
    assert_eq!(
        file_bytes(&paths[2], 128 << 10, 64 << 10),
        vec![0x11; 64 << 10]
    );
    assert_eq!(
        file_bytes(&paths[0], 128 << 10, 64 << 10),
        vec![0x22; 64 << 10]
    );

    // The child answers again; the resync aborts what it still holds, then copies only the
    // two dirty regions.
    t.rpc_ok(&["bdev_error_inject_error", "EE_A2", "clear", "failure"]);
    plugin(&t, &["bdev_quorum_rebuild_start", "Q", "EE_A2"]);
    wait_until("EE_A2 synced", || child(&t, "EE_A2")["state"] == "synced");
    let synced = child(&t, "EE_A2");
    assert_eq!(synced["reason"], "process_finished", "{synced}");
    assert_eq!(synced["dirty_regions"], 0, "{synced}");
    assert_eq!(
        synced["copied_regions"], 2,
        "only the dirty regions: {synced}"
    );
    assert!(quorum_info(&t).get("process").is_none(), "the job is over");
    qemu_io(&uri, &["flush"]);
    // Every replica now holds the same bytes, the acknowledged ones.
    let expected = std::fs::read(&paths[0]).unwrap();
    assert_eq!(
        file_bytes(&paths[2], 128 << 10, 64 << 10),
        vec![0x22; 64 << 10]
    );
    for p in &paths[1..] {
        assert!(
            std::fs::read(p).unwrap() == expected,
            "{} differs",
            p.display()
        );
    }
    // Writes reach it again, and reads use it again.
    qemu_io(
        &uri,
        &["write -P 0x55 1M 64k", "flush", "read -P 0x55 1M 64k"],
    );
    assert_eq!(
        file_bytes(&paths[2], 1 << 20, 64 << 10),
        vec![0x55; 64 << 10]
    );
    assert_eq!(child(&t, "EE_A2")["state"], "synced");
}

#[test]
fn an_added_child_is_rebuilt_in_full_or_trusted_with_sync_none() {
    let (_dir, paths) = sparse_files(5, CHILD_BYTES);
    let (t, uri) = quorum_on_files(&paths, "");
    qemu_io(
        &uri,
        &["write -P 0x61 0 3M", "write -P 0x62 7M 1M", "flush"],
    );
    t.rpc_script(&format!(
        "bdev_aio_create {} A3 512\nbdev_aio_create {} A4 512\n",
        paths[3].display(),
        paths[4].display()
    ));
    plugin(&t, &["bdev_quorum_add_child", "Q", "A3"]);
    wait_until("A3 rebuilt", || child(&t, "A3")["state"] == "synced");
    let rebuilt = child(&t, "A3");
    assert_eq!(
        rebuilt["copied_regions"],
        CHILD_BYTES / REGION,
        "a full rebuild copies every region: {rebuilt}"
    );
    qemu_io(&uri, &["flush"]);
    assert!(std::fs::read(&paths[3]).unwrap() == std::fs::read(&paths[0]).unwrap());

    plugin(&t, &["bdev_quorum_add_child", "Q", "A4", "--sync", "none"]);
    let trusted = child(&t, "A4");
    assert_eq!(trusted["state"], "synced", "{trusted}");
    assert_eq!(trusted["reason"], "added_without_sync", "{trusted}");
    assert_eq!(trusted["copied_regions"], 0, "{trusted}");

    // States are in bdev_get_bdevs' driver_specific too.
    let bdevs = t.rpc_json(&["bdev_get_bdevs", "-b", "Q"]);
    let states = &bdevs[0]["driver_specific"]["quorum"]["children"];
    assert_eq!(states.as_array().unwrap().len(), 5, "{bdevs}");
    assert_eq!(states[3]["name"], "A3");
    assert_eq!(states[3]["state"], "synced");
}

#[test]
fn rebuild_requests_that_make_no_sense_are_refused_and_change_nothing() {
    let (_dir, paths) = sparse_files(3, CHILD_BYTES);
    let (t, _uri) = quorum_on_files(&paths, "");
    let err = |args: &[&str]| {
        let mut full = vec!["--plugin", "quorum_rpc_plugin"];
        full.extend_from_slice(args);
        t.rpc_err(&full)
    };
    assert_eq!(err(&["bdev_quorum_rebuild_start", "Q", "X"])["code"], -19);
    assert_eq!(
        err(&["bdev_quorum_rebuild_stop", "Q", "EE_A1"])["code"],
        -19
    );
    assert_eq!(
        err(&["bdev_quorum_rebuild_start", "NOPE", "EE_A1"])["code"],
        -19
    );
    let refused = t.rpc_err(&[
        "--plugin",
        "quorum_rpc_plugin",
        "bdev_quorum_create",
        "-b",
        "Q2",
        "-t",
        "1",
        "--dirty-region-kb",
        "0",
        "A0",
    ]);
    assert_eq!(refused["code"], -22, "{refused}");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("dirty_region_kb"));
    for c in ["EE_A0", "EE_A1", "EE_A2"] {
        assert_eq!(child(&t, c)["state"], "synced");
    }
}

#[test]
fn scrub_repairs_every_corruption_planted_in_the_backing_files() {
    let (_dir, paths) = sparse_files(3, CHILD_BYTES);
    let (t, uri) = quorum_on_files(&paths, "");
    qemu_io(&uri, &["write -P 0x71 0 8M", "flush"]);
    // One corruption per child, each on its own region, written into the files directly.
    let planted = [(0usize, 100u64 << 10), (1, 3 << 20), (2, (7 << 20) + 4095)];
    for &(child, at) in &planted {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&paths[child])
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xee; 7], at).unwrap();
        f.sync_all().unwrap();
    }
    assert!(std::fs::read(&paths[0]).unwrap() != std::fs::read(&paths[1]).unwrap());
    plugin(&t, &["bdev_quorum_set_options", "-w", "256"]);
    plugin(&t, &["bdev_quorum_scrub_start", "Q"]);
    wait_until("scrub over", || quorum_info(&t).get("process").is_none());
    let scrub = quorum_info(&t)["scrub"].clone();
    assert_eq!(scrub["checked"], CHILD_BYTES / (256 << 10), "{scrub}");
    assert_eq!(scrub["mismatched"], planted.len(), "{scrub}");
    assert_eq!(scrub["repaired"], planted.len(), "{scrub}");
    assert_eq!(scrub["unrecoverable"], 0, "{scrub}");
    let expected = vec![0x71; CHILD_BYTES as usize];
    for p in &paths {
        assert!(
            std::fs::read(p).unwrap() == expected,
            "{} not repaired",
            p.display()
        );
    }
    // The job's reads count like the clients': each child was rewritten once.
    wait_until("the scrub's counters summed", || {
        ["EE_A0", "EE_A1", "EE_A2"]
            .iter()
            .all(|c| child(&t, c)["rewrites"] == 1)
    });
}
