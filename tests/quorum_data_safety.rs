//! Issue 13 defect 3: a child that corrupts data must never change what the quorum's other
//! children store or what a read returns. The error bdev corrupts a private copy of a write
//! (the caller's buffer is never touched), and a read returns exactly the winning version
//! even when the rewrite of a corrupted child passes through a child that corrupts writes.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::target::Target;
use common::{pattern, runtime, submit_together};
use quorum_bdev::bdev::blocking::{read, write};
use quorum_bdev::bdev::IoType;
use quorum_bdev::modules::error::{self, ErrorType, Injection, Target as Inject};
use quorum_bdev::modules::malloc;
use quorum_bdev::modules::quorum::{self, QuorumOptions, ReadPattern};
use quorum_bdev::runtime::Runtime;
use serde_json::Value;

/// Corrupts byte `offset` of the next `num` I/Os of `target` on error bdev `name`.
fn corrupt(rt: &Runtime, name: &str, target: Inject, offset: u64, num: u32) {
    let inj = Injection {
        target,
        error_type: ErrorType::CorruptData,
        num,
        queue_depth: 0,
        corrupt_offset: offset,
        corrupt_value: 0x5a,
    };
    error::inject(rt, name, &inj).unwrap();
}

#[test]
fn a_corrupted_write_changes_the_stored_copy_and_never_the_callers_buffer() {
    let rt = runtime(1);
    let base = malloc::create(&rt, Some("M0".into()), 64, 512, None).unwrap();
    let ee = error::create(&rt, "M0", None).unwrap();
    corrupt(&rt, "EE_M0", Inject::Only(IoType::Write), 100, 1);
    let data = pattern(4096, 3);
    let delivered = submit_together(&rt, &ee, 8, 8, vec![(IoType::Write, data.clone())]);
    assert_eq!(delivered[0].status, Ok(()));
    assert!(delivered[0].data == data, "the caller's buffer was changed");
    let mut stored = data.clone();
    stored[100] ^= 0x5a;
    let held = read(&rt, &base, 8, 8).unwrap();
    assert!(held == stored, "the base did not get the corrupted copy");
    // Reads still flip the byte in the data returned.
    corrupt(&rt, "EE_M0", Inject::Only(IoType::Read), 100, 1);
    assert!(
        read(&rt, &ee, 8, 8).unwrap() == data,
        "the read was not flipped back"
    );
    rt.stop();
}

/// rewrite_corrupted with child 2 corrupting both its reads (byte 100) and its writes (byte
/// 200): each read of it loses the vote, the rewrite of the winner goes through it and is
/// stored corrupted again, and every read must still return the two good children's data,
/// successfully.
#[test]
fn a_rewrite_through_a_child_that_corrupts_writes_never_reaches_the_reader() {
    let rt = runtime(1);
    let mut children = Vec::new();
    let mut bases = Vec::new();
    for i in 0..3 {
        bases.push(malloc::create(&rt, Some(format!("M{i}")), 256, 512, None).unwrap());
        children.push(
            error::create(&rt, &format!("M{i}"), None)
                .unwrap()
                .name()
                .to_string(),
        );
    }
    let opts = QuorumOptions {
        vote_threshold: 2,
        read_pattern: ReadPattern::Quorum,
        blkverify: false,
        rewrite_corrupted: true,
    };
    let q = quorum::create(&rt, "Q", &children, opts, None).unwrap();
    let good = pattern(4096, 0x77);
    write(&rt, &q, 0, &good).unwrap();
    corrupt(&rt, "EE_M2", Inject::Only(IoType::Read), 100, u32::MAX);
    corrupt(&rt, "EE_M2", Inject::Only(IoType::Write), 200, u32::MAX);
    for round in 0..4 {
        let got = read(&rt, &q, 0, 8);
        assert!(
            got == Ok(good.clone()),
            "read {round} did not return the good data"
        );
    }
    let (_, shared) = quorum::find(&rt, "Q").unwrap();
    let events = shared.events().since(0, usize::MAX);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events
        .iter()
        .all(|e| e.data["node-name"] == "EE_M2" && e.data.get("error").is_none()));
    let mut stored = good.clone();
    stored[200] ^= 0x5a;
    assert!(
        read(&rt, &bases[2], 0, 8).unwrap() == stored,
        "the rewrite was not stored corrupted"
    );
    for base in &bases[..2] {
        assert!(
            read(&rt, base, 0, 8).unwrap() == good,
            "a good child changed"
        );
    }
    rt.stop();
}

/// fio verify over the NBD export of quorum(A0, A1, EE_A2), file-backed aio children, with
/// EE_A2 corrupting every write: the two good children outvote it on every read, so fio sees
/// no verify error, and the quorum reports EE_A2's bad versions.
#[test]
fn fio_verify_passes_over_a_child_that_corrupts_every_write() {
    let files = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| files.path().join(format!("a{i}.raw")))
        .collect();
    for p in &paths {
        std::fs::write(p, vec![0u8; 16 << 20]).unwrap();
    }
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    let mut script: String = paths
        .iter()
        .enumerate()
        .map(|(i, p)| format!("bdev_aio_create {} A{i} 512\n", p.display()))
        .collect();
    script += "bdev_error_create A2\n\
               bdev_error_inject_error EE_A2 write corrupt_data -n 4000000000 -o 100 -v 255\n\
               bdev_quorum_create -b Q -t 2 A0 A1 EE_A2\n";
    script += &format!("nbd_server_start {}\nnbd_export_create Q\n", sock.display());
    t.rpc_script(&script);
    let uri = format!("nbd+unix:///Q?socket={}", sock.display());
    let out = Command::new("timeout")
        .args(["120", "fio", "--name=verify", "--ioengine=nbd"])
        .arg(format!("--uri={uri}"))
        .args([
            "--size=8M",
            "--bs=4k",
            "--iodepth=16",
            "--rw=randwrite",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
        ])
        .current_dir(t.dir.path())
        .output()
        .expect("fio must be installed (scripts/test-all)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fio failed: {text}");
    assert!(text.contains("err= 0"), "{text}");
    assert!(!text.contains("verify: bad"), "{text}");
    let events: Value = t.rpc_json(&[
        "--plugin",
        "quorum_rpc_plugin",
        "bdev_quorum_get_events",
        "--max",
        "100000",
    ]);
    let events = events.as_array().unwrap();
    assert!(!events.is_empty(), "no event for the corrupting child");
    for e in events {
        assert_eq!(e["event"], "QUORUM_REPORT_BAD", "{e}");
        assert_eq!(e["data"]["node-name"], "EE_A2", "{e}");
        assert_eq!(e["data"]["type"], "read", "{e}");
        assert!(e["data"].get("error").is_none(), "{e}");
    }
    // The good children hold what fio wrote and agree with each other; the bad one does not.
    let bytes = |p: &PathBuf| std::fs::read(p).unwrap();
    assert_eq!(bytes(&paths[0]), bytes(&paths[1]));
    assert_ne!(bytes(&paths[0]), bytes(&paths[2]));
}
