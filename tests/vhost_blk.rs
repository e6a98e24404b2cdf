//! The vhost-user-blk export, end to end: the real `quorum-tgt`, configured with `spdk-rpc`,
//! driven by libblkio's virtio-blk-vhost-user driver (the `blkio` crate) as cloud tools and
//! QEMU's blkio driver drive a storage daemon: data round trips through a quorum whose third
//! child corrupts every read, several queues on two reactors, scatter-gather requests,
//! flush, discard and write-zeroes, a client that disconnects mid-I/O, and the RPCs.

mod common;

use std::path::PathBuf;

use blkio::ReqFlags;
use common::pattern;
use common::target::Target;
use common::vhost_client::Client;
use serde_json::Value;

const MIB: usize = 1 << 20;

/// A target on `cpumask` with quorum `Q` (threshold 2) over malloc M0, M1 and M2 behind an
/// error bdev that corrupts every read, exported as controller `vq` in the target's
/// directory. Returns the target and the controller socket.
fn quorum_controller(cpumask: &str) -> (Target, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().to_str().unwrap().to_string();
    let t = Target::start_in(
        dir,
        &["-m", cpumask, "-S", &sock_dir, "-L", "exports::vhost_blk"],
    );
    t.rpc_script(
        "bdev_malloc_create -b M0 16 512\n\
         bdev_malloc_create -b M1 16 512\n\
         bdev_malloc_create -b M2 16 512\n\
         bdev_error_create M2\n\
         bdev_error_inject_error EE_M2 read corrupt_data -n 1000000 -o 100 -v 255\n\
         bdev_quorum_create -b Q -t 2 M0 M1 EE_M2\n\
         vhost_create_blk_controller vq Q\n",
    );
    let sock = t.dir.path().join("vq");
    (t, sock)
}

fn plugin_json(t: &Target, args: &[&str]) -> Value {
    let mut full = vec!["--plugin", "quorum_rpc_plugin"];
    full.extend_from_slice(args);
    let text = t.rpc_ok(&full);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

#[test]
fn libblkio_round_trips_through_a_quorum_with_a_corrupting_child_on_two_queues() {
    let (t, sock) = quorum_controller("0x3");
    let mut c = Client::connect(&sock, 2, 4 * MIB).expect("libblkio connects");
    assert_eq!(c.capacity(), 16 * MIB as u64);

    // Plain reads and writes on both queues (one per reactor), sizes from a block to 1 MiB.
    for (q, offset, len, seed) in [
        (0, 0, 512, 1),
        (1, 4096, 4096, 2),
        (0, MIB as u64, 64 << 10, 3),
        (1, 5 * MIB as u64, MIB, 4),
        (0, 16 * MIB as u64 - 4096, 4096, 5),
    ] {
        let data = pattern(len, seed);
        assert_eq!(c.write(q, offset, &data), 0, "write {len} at {offset}");
        for read_q in 0..2 {
            let got = c.read(read_q, offset, len).unwrap();
            assert!(got == data, "read {len} at {offset} on queue {read_q}");
        }
    }

    // Every read was voted on: the corrupting child was outvoted and reported, and no bad
    // byte reached the client.
    let events = plugin_json(&t, &["bdev_quorum_get_events"]);
    let bad = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "QUORUM_REPORT_BAD" && e["data"]["node-name"] == "EE_M2")
        .count();
    assert!(bad >= 10, "{events}");

    // Scatter-gather: three pieces, not adjacent and not page-aligned, so the target must
    // bounce them through its own buffer both ways.
    let data = pattern(3 * 4096, 7);
    let pieces = [(512usize, 4096usize), (16384, 4096), (40960 + 512, 4096)];
    for (i, &(at, len)) in pieces.iter().enumerate() {
        c.buf()[at..at + len].copy_from_slice(&data[i * 4096..(i + 1) * 4096]);
    }
    let iov: Vec<libc::iovec> = pieces
        .iter()
        .map(|&(at, len)| libc::iovec {
            iov_base: c.ptr(at).cast(),
            iov_len: len,
        })
        .collect();
    let ret = c.one(0, |q| {
        q.writev(2 * MIB as u64, iov.as_ptr(), 3, 0, ReqFlags::empty())
    });
    assert_eq!(ret, 0);
    assert!(c.read(1, 2 * MIB as u64, 3 * 4096).unwrap() == data);
    for &(at, len) in &pieces {
        c.buf()[at..at + len].fill(0);
    }
    let ret = c.one(1, |q| {
        q.readv(2 * MIB as u64, iov.as_ptr(), 3, 0, ReqFlags::empty())
    });
    assert_eq!(ret, 0);
    for (i, &(at, len)) in pieces.iter().enumerate() {
        assert!(
            c.buf()[at..at + len] == data[i * 4096..(i + 1) * 4096],
            "piece {i}"
        );
    }

    // Flush, write-zeroes, discard.
    assert_eq!(c.one(0, |q| q.flush(0, ReqFlags::empty())), 0);
    let span = 3 * 4096;
    assert_eq!(
        c.one(1, |q| q.write_zeroes(
            2 * MIB as u64,
            span,
            0,
            ReqFlags::empty()
        )),
        0
    );
    assert!(c
        .read(0, 2 * MIB as u64, span as usize)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(
        c.one(0, |q| q.discard(MIB as u64, 64 << 10, 0, ReqFlags::empty())),
        0
    );

    // Requests the device must refuse: past the end, and not whole blocks.
    assert_eq!(c.read(0, 16 * MIB as u64, 4096), Err(-libc::EIO));
    let ptr = c.ptr(0);
    assert_ne!(
        c.one(0, |q| q.read(100, ptr, 512, 0, ReqFlags::empty())),
        0,
        "a read not on a block boundary fails"
    );

    let ctrls = t.rpc_json(&["vhost_get_controllers"]);
    assert_eq!(ctrls[0]["ctrlr"], "vq");
    assert_eq!(ctrls[0]["backend_specific"]["block"]["bdev"], "Q");
    assert_eq!(ctrls[0]["sessions"].as_array().unwrap().len(), 1, "{ctrls}");
    drop(c);
    // The quorum's children all hold the data written (the vote saw them agree or outvoted
    // the bad one); reading through a new connection still gives it back.
    let mut c = Client::connect(&sock, 1, MIB).expect("reconnects");
    assert!(c.read(0, 4096, 4096).unwrap() == pattern(4096, 2));
}

#[test]
fn a_client_that_disconnects_mid_io_leaves_the_target_serving_and_reconnects() {
    let (mut t, sock) = quorum_controller("0x1");
    let mut c = Client::connect(&sock, 1, 8 * MIB).unwrap();
    let data = pattern(64 << 10, 9);
    assert_eq!(c.write(0, 0, &data), 0);
    // 64 writes of 64 KiB in flight, then the client goes away without waiting for them.
    for i in 0..64usize {
        let at = i * (64 << 10);
        let chunk = pattern(64 << 10, i as u8);
        c.buf()[at..at + chunk.len()].copy_from_slice(&chunk);
        let ptr = c.ptr(at);
        c.queues[0].write((MIB + at) as u64, ptr, 64 << 10, i, ReqFlags::empty());
    }
    let mut none = [];
    let mut zero = std::time::Duration::ZERO;
    let _ = c.queues[0].do_io(&mut none, 0, Some(&mut zero), None);
    drop(c);
    for _ in 0..3 {
        let mut c = Client::connect(&sock, 1, MIB).expect("the controller takes a new client");
        assert!(c.read(0, 0, 64 << 10).unwrap() == data);
        let fresh = pattern(4096, 77);
        assert_eq!(c.write(0, 8 * MIB as u64, &fresh), 0);
        assert!(c.read(0, 8 * MIB as u64, 4096).unwrap() == fresh);
    }
    assert!(t.alive());
}

#[test]
fn rpcs_refuse_bad_requests_save_config_restores_controllers_and_delete_closes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("vhost");
    std::fs::create_dir(&sock_dir).unwrap();
    let s = sock_dir.to_str().unwrap().to_string();
    let t = Target::start_in(dir, &["-m", "0x3", "-S", &s]);
    t.rpc_script("bdev_malloc_create -b M0 8 4096\nbdev_null_create N0 8 512\n");
    let err = |args: &[&str]| t.rpc_err(args)["code"].as_i64().unwrap();
    assert_eq!(err(&["vhost_create_blk_controller", "c0", "nope"]), -19);
    assert_eq!(
        err(&[
            "vhost_create_blk_controller",
            "c0",
            "M0",
            "--cpumask",
            "0x4"
        ]),
        -22
    );
    assert_eq!(
        err(&["vhost_create_blk_controller", "c0", "M0", "--packed-ring"]),
        -22
    );
    assert_eq!(err(&["vhost_create_blk_controller", "../c0", "M0"]), -22);
    assert_eq!(err(&["vhost_delete_controller", "c0"]), -19);
    assert!(t
        .rpc_json(&["vhost_get_controllers"])
        .as_array()
        .unwrap()
        .is_empty());

    t.rpc_ok(&[
        "vhost_create_blk_controller",
        "c0",
        "M0",
        "--cpumask",
        "0x2",
    ]);
    t.rpc_ok(&["vhost_create_blk_controller", "c1", "N0", "-r"]);
    assert_eq!(err(&["vhost_create_blk_controller", "c0", "N0"]), -17);
    let ctrls = t.rpc_json(&["vhost_get_controllers", "-n", "c0"]);
    assert_eq!(ctrls[0]["cpumask"], "0x2");
    assert_eq!(
        ctrls[0]["socket"],
        sock_dir.join("c0").display().to_string()
    );

    // A read-only controller says so (libblkio opens it only when asked for read-only);
    // block size 4096 shows in the geometry.
    let err = Client::connect(&sock_dir.join("c1"), 1, MIB).err().unwrap();
    assert_eq!(err.errno().raw_os_error(), libc::EROFS, "{err:?}");
    let mut ro = Client::connect_with(&sock_dir.join("c1"), 1, MIB, true).unwrap();
    assert_eq!(ro.read(0, 0, 512).unwrap(), vec![0; 512]);
    drop(ro);
    let mut rw = Client::connect(&sock_dir.join("c0"), 1, MIB).unwrap();
    assert_eq!(rw.blkio.get_i32("request-alignment").unwrap(), 4096);
    assert_eq!(rw.write(0, 4096, &pattern(4096, 3)), 0);
    drop(rw);

    let config = t.rpc_ok(&["save_config"]);
    let json: Value = serde_json::from_str(&config).unwrap();
    let vhost = json["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "vhost_blk")
        .unwrap();
    assert_eq!(vhost["config"].as_array().unwrap().len(), 2, "{vhost}");

    t.rpc_ok(&["vhost_delete_controller", "c1"]);
    assert!(!sock_dir.join("c1").exists(), "delete removes the socket");
    assert!(Client::connect(&sock_dir.join("c1"), 1, MIB).is_err());
    let (status, dir) = t.signal(libc::SIGTERM);
    assert!(status.success());
    assert!(
        !sock_dir.join("c0").exists(),
        "shutdown removes the sockets"
    );

    // Restart on the saved config: both controllers come back (c1 too, saved before delete).
    let cfg = dir.path().join("saved.json");
    std::fs::write(&cfg, config).unwrap();
    let t = Target::start_in(dir, &["-m", "0x3", "-S", &s, "-c", cfg.to_str().unwrap()]);
    let ctrls = t.rpc_json(&["vhost_get_controllers"]);
    assert_eq!(ctrls.as_array().unwrap().len(), 2, "{ctrls}");
    let mut rw = Client::connect(&sock_dir.join("c0"), 1, MIB).unwrap();
    assert_eq!(rw.write(0, 0, &pattern(4096, 4)), 0);
    assert!(rw.read(0, 0, 4096).unwrap() == pattern(4096, 4));
}

#[test]
fn a_memory_table_change_waits_for_in_flight_io_before_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap().to_string();
    let t = Target::start_in(dir, &["-m", "0x1", "-S", &s]);
    // Writes take a second: in flight when the table changes, however loaded the machine.
    t.rpc_script(
        "bdev_malloc_create -b M0 8 512\n\
         bdev_delay_create -b M0 -d D0 -r 0 -t 0 -w 1000000 -n 1000000\n\
         vhost_create_blk_controller vd D0\n",
    );
    let mut c = Client::connect(&t.dir.path().join("vd"), 1, MIB).unwrap();
    let data = pattern(64 << 10, 5);
    c.buf()[..data.len()].copy_from_slice(&data);
    let ptr = c.ptr(0);
    let submitted = std::time::Instant::now();
    c.queues[0].write(4096, ptr, data.len(), 7, ReqFlags::empty());
    let mut none = [];
    let mut zero = std::time::Duration::ZERO;
    assert_eq!(
        c.queues[0]
            .do_io(&mut none, 0, Some(&mut zero), None)
            .unwrap(),
        0
    );
    // The write is in flight once the delay bdev holds it, which is after M0 did it; until
    // then it may still sit in the avail ring, which a table change does not wait for.
    common::wait_until("the write to be held by D0", || {
        t.rpc_json(&["bdev_get_iostat", "--names", "M0"])["bdevs"][0]["num_write_ops"] == 1
    });
    // A second buffer region: ADD_MEM_REG, acknowledged only once the rings drained, so
    // the write is complete when map_mem_region returns.
    let region = c.blkio.alloc_mem_region(MIB).unwrap();
    c.blkio.map_mem_region(&region).unwrap();
    // The write is held a second from its submission on: the table change waited for it.
    let waited = submitted.elapsed();
    let mut done: Vec<std::mem::MaybeUninit<blkio::Completion>> =
        vec![std::mem::MaybeUninit::uninit()];
    let mut zero = std::time::Duration::ZERO;
    let got = c.queues[0]
        .do_io(&mut done, 0, Some(&mut zero), None)
        .unwrap();
    assert_eq!(
        got, 1,
        "the write completed before the new table was acknowledged"
    );
    // SAFETY: do_io initialised the first completion.
    let first = unsafe { done[0].assume_init_ref() };
    assert_eq!((first.user_data, first.ret), (7, 0));
    assert!(
        waited >= std::time::Duration::from_millis(1000),
        "{waited:?}"
    );
    // The new region is usable: read the data back into it.
    let fresh = region.addr as *mut u8;
    let ret = c.one(0, |q| q.read(4096, fresh, 64 << 10, 0, ReqFlags::empty()));
    assert_eq!(ret, 0);
    // SAFETY: the region is mapped for MIB bytes.
    let back = unsafe { std::slice::from_raw_parts(fresh, 64 << 10) };
    assert!(back == data.as_slice());
}
