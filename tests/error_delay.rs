//! The error-injection and delay bdevs over malloc bases: every injection mode as SPDK's
//! vbdev_error does it, the delay bdev's latency and reset, their RPC methods, claims on the
//! base, and a save/load config round trip.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{delete, pattern, runtime};
use crossbeam_channel::{Receiver, Sender};
use quorum_bdev::bdev::blocking::{command, read, write};
use quorum_bdev::bdev::{Bdev, BdevRegistry, IoBuf, IoDone, IoHandle, IoType};
use quorum_bdev::control::config::load;
use quorum_bdev::control::methods;
use quorum_bdev::control::rpc::{call_blocking, Ctx, RpcError};
use quorum_bdev::modules::malloc;
use quorum_bdev::runtime::buf::DmaBuf;
use quorum_bdev::runtime::Runtime;
use serde_json::{json, Value};

const BS: usize = 512;

fn rpc(rt: &Runtime, method: &str, params: Value) -> Result<Value, RpcError> {
    let m = methods::find(method).unwrap_or_else(|| panic!("method {method} exists"));
    call_blocking(&Ctx { rt: rt.clone() }, &m, Some(params))
}

fn bdev(rt: &Runtime, name: &str) -> Arc<Bdev> {
    BdevRegistry::of(rt).get(name).unwrap()
}

/// Malloc `name` (64 blocks of 512 bytes) with `EE_<name>` on it.
fn error_over_malloc(rt: &Runtime, name: &str) -> (Arc<Bdev>, Arc<Bdev>) {
    let base = malloc::create(rt, Some(name.into()), 64, BS as u32, None).unwrap();
    assert_eq!(
        rpc(rt, "bdev_error_create", json!({"base_name": name})).unwrap(),
        json!(true)
    );
    (base, bdev(rt, &format!("EE_{name}")))
}

fn inject(rt: &Runtime, params: Value) -> Result<Value, RpcError> {
    rpc(rt, "bdev_error_inject_error", params)
}

type Outcome = Result<Vec<u8>, i32>;

/// Receives each I/O of a batch; the tag is the request's index.
struct Collector {
    bufs: RefCell<Vec<Option<DmaBuf>>>,
    tx: Sender<(usize, Outcome)>,
}

impl IoDone for Collector {
    fn io_done(&self, io: IoHandle) {
        let index = io.tag as usize;
        let data = self.bufs.borrow_mut()[index]
            .take()
            .map(|b| b.as_slice().to_vec())
            .unwrap_or_default();
        let _ = self.tx.send((index, io.status().map(|()| data)));
    }
}

/// One request of a batch: type, first block, blocks, payload (for reads: its length).
type Req = (IoType, u64, u64, Vec<u8>);

/// Submits `reqs` back to back inside one message on `reactor`, so all are outstanding
/// together (malloc completes only on the next completion pass); results arrive by index.
fn submit_all(
    rt: &Runtime,
    reactor: usize,
    bdev: &Arc<Bdev>,
    reqs: Vec<Req>,
) -> Receiver<(usize, Outcome)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let bdev = bdev.clone();
    rt.send_msg(reactor, move || {
        let channel = bdev.io_channel().expect("channel");
        let mut bufs = Vec::new();
        let mut views = Vec::new();
        for (_, _, _, data) in &reqs {
            if data.is_empty() {
                bufs.push(None);
                views.push(IoBuf::NONE);
            } else {
                let mut buf = DmaBuf::new(data.len());
                buf.as_mut_slice().copy_from_slice(data);
                // SAFETY: the buffer is kept by the collector until the I/O completes.
                views.push(unsafe { IoBuf::from_dma(&mut buf) });
                bufs.push(Some(buf));
            }
        }
        let collector = Rc::new(Collector {
            bufs: RefCell::new(bufs),
            tx,
        });
        for (i, (io_type, offset, blocks, _)) in reqs.into_iter().enumerate() {
            channel.submit_new(
                io_type,
                offset,
                blocks,
                views[i],
                collector.clone(),
                i as u64,
            );
        }
    });
    rx
}

fn wait_all(rx: &Receiver<(usize, Outcome)>, n: usize) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = vec![None; n];
    for _ in 0..n {
        let (i, r) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("I/O completes");
        out[i] = Some(r);
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// I/O submitted to `bdev` and not completed yet, over every reactor.
fn in_flight(rt: &Runtime, bdev: &Arc<Bdev>) -> u64 {
    let (tx, rx) = crossbeam_channel::bounded(1);
    bdev.count_in_flight(rt, move |n| {
        let _ = tx.send(n);
    });
    rx.recv().unwrap()
}

/// Waits until `n` I/Os reached `bdev` and are held there; none of `rx`'s has completed.
fn wait_held(rt: &Runtime, bdev: &Arc<Bdev>, n: u64, rx: &Receiver<(usize, Outcome)>) {
    common::wait_until("the I/O to reach the bdev", || in_flight(rt, bdev) == n);
    assert!(rx.try_recv().is_err(), "a held I/O completed");
}

fn reads(n: usize, offset: u64) -> Vec<Req> {
    (0..n)
        .map(|_| (IoType::Read, offset, 1, vec![0; BS]))
        .collect()
}

#[test]
fn failure_hits_only_the_chosen_type_and_only_num_times() {
    let rt = runtime(1);
    let (base, ee) = error_over_malloc(&rt, "M0");
    let data = pattern(4 * BS, 1);
    write(&rt, &ee, 0, &data).unwrap();
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "write", "error_type": "failure", "num": 2}),
    )
    .unwrap();
    let other = pattern(4 * BS, 2);
    assert_eq!(write(&rt, &ee, 0, &other), Err(libc::EIO));
    // Reads, flushes and unmaps are untouched by a write injection.
    assert_eq!(read(&rt, &ee, 0, 4).unwrap(), data);
    command(&rt, &ee, IoType::Flush, 0, 64).unwrap();
    assert_eq!(write(&rt, &ee, 0, &other), Err(libc::EIO));
    // The failed writes never reached the base.
    assert_eq!(read(&rt, &base, 0, 4).unwrap(), data);
    write(&rt, &ee, 0, &other).unwrap();
    assert_eq!(read(&rt, &base, 0, 4).unwrap(), other);
    // num defaults to 1.
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "read", "error_type": "failure"}),
    )
    .unwrap();
    assert_eq!(read(&rt, &ee, 0, 4), Err(libc::EIO));
    assert_eq!(read(&rt, &ee, 0, 4).unwrap(), other);
    // num 0 disables.
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "unmap", "error_type": "failure", "num": 0}),
    )
    .unwrap();
    command(&rt, &ee, IoType::Unmap, 0, 1).unwrap();
    assert_eq!(&read(&rt, &base, 0, 1).unwrap(), &vec![0; BS]);
    rt.stop();
}

#[test]
fn all_targets_every_type_and_clear_stops_everything() {
    let rt = runtime(1);
    let (_base, ee) = error_over_malloc(&rt, "M0");
    let data = pattern(BS, 3);
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "all", "error_type": "failure", "num": 1}),
    )
    .unwrap();
    // Each type has its own count: one failure each.
    assert_eq!(read(&rt, &ee, 0, 1), Err(libc::EIO));
    assert_eq!(write(&rt, &ee, 0, &data), Err(libc::EIO));
    assert_eq!(command(&rt, &ee, IoType::Flush, 0, 1), Err(libc::EIO));
    assert_eq!(command(&rt, &ee, IoType::Unmap, 0, 1), Err(libc::EIO));
    // Types outside SPDK's injectable four are never affected.
    command(&rt, &ee, IoType::WriteZeroes, 0, 1).unwrap();
    write(&rt, &ee, 0, &data).unwrap();
    assert_eq!(read(&rt, &ee, 0, 1).unwrap(), data);

    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "all", "error_type": "failure", "num": 100}),
    )
    .unwrap();
    assert_eq!(read(&rt, &ee, 0, 1), Err(libc::EIO));
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "clear", "error_type": "failure"}),
    )
    .unwrap();
    assert_eq!(read(&rt, &ee, 0, 1).unwrap(), data);
    write(&rt, &ee, 0, &data).unwrap();
    command(&rt, &ee, IoType::Flush, 0, 1).unwrap();
    rt.stop();
}

#[test]
fn nomem_is_retried_until_the_io_succeeds() {
    let rt = runtime(1);
    let (base, ee) = error_over_malloc(&rt, "M0");
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "write", "error_type": "nomem", "num": 3}),
    )
    .unwrap();
    let data = pattern(2 * BS, 4);
    write(&rt, &ee, 5, &data).unwrap();
    assert_eq!(read(&rt, &base, 5, 2).unwrap(), data);
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "read", "error_type": "nomem", "num": 5}),
    )
    .unwrap();
    assert_eq!(read(&rt, &ee, 5, 2).unwrap(), data);
    rt.stop();
}

#[test]
fn pending_io_stays_until_a_reset_aborts_it_on_every_reactor() {
    let rt = runtime(2);
    let (base, ee) = error_over_malloc(&rt, "M0");
    let old = pattern(BS, 5);
    write(&rt, &ee, 0, &old).unwrap();
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "write", "error_type": "pending", "num": 2}),
    )
    .unwrap();
    // Held on reactor 1's channel.
    let rx = submit_all(&rt, 1, &ee, vec![(IoType::Write, 0, 1, pattern(BS, 6))]);
    wait_held(&rt, &ee, 1, &rx);
    // It never reached the base, and other types still pass.
    assert_eq!(read(&rt, &base, 0, 1).unwrap(), old);
    assert_eq!(read(&rt, &ee, 0, 1).unwrap(), old);
    // A reset submitted on reactor 0 aborts it (so it was held, not completed late); the
    // reset itself succeeds.
    command(&rt, &ee, IoType::Reset, 0, 0).unwrap();
    assert_eq!(wait_all(&rx, 1), vec![Err(libc::ECANCELED)]);
    // The reset does not clear the injection: the second pending write is held too.
    let rx = submit_all(&rt, 0, &ee, vec![(IoType::Write, 0, 1, pattern(BS, 7))]);
    wait_held(&rt, &ee, 1, &rx);
    command(&rt, &ee, IoType::Reset, 0, 0).unwrap();
    assert_eq!(wait_all(&rx, 1), vec![Err(libc::ECANCELED)]);
    // Both counted: writes pass again.
    let new = pattern(BS, 8);
    write(&rt, &ee, 0, &new).unwrap();
    assert_eq!(read(&rt, &base, 0, 1).unwrap(), new);
    rt.stop();
}

#[test]
fn corrupt_data_on_read_flips_one_byte_of_the_returned_data_only() {
    let rt = runtime(1);
    let (base, ee) = error_over_malloc(&rt, "M0");
    let data = pattern(2 * BS, 9);
    write(&rt, &ee, 8, &data).unwrap();
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
               "corrupt_offset": 700, "corrupt_value": 0x5a}),
    )
    .unwrap();
    let got = read(&rt, &ee, 8, 2).unwrap();
    let mut expected = data.clone();
    expected[700] ^= 0x5a;
    assert_eq!(got, expected);
    // The disk below is intact, and only num (1) reads were corrupted.
    assert_eq!(read(&rt, &base, 8, 2).unwrap(), data);
    assert_eq!(read(&rt, &ee, 8, 2).unwrap(), data);
    // An offset past the data changes nothing (the injection is still consumed).
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
               "corrupt_offset": 5000, "corrupt_value": 1}),
    )
    .unwrap();
    assert_eq!(read(&rt, &ee, 8, 2).unwrap(), data);
    rt.stop();
}

#[test]
fn corrupt_data_on_write_corrupts_the_payload_before_it_goes_down() {
    let rt = runtime(1);
    let (base, ee) = error_over_malloc(&rt, "M0");
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "write", "error_type": "corrupt_data",
               "corrupt_offset": 3, "corrupt_value": 0xff}),
    )
    .unwrap();
    let data = pattern(2 * BS, 10);
    write(&rt, &ee, 0, &data).unwrap();
    let mut expected = data.clone();
    expected[3] ^= 0xff;
    assert_eq!(read(&rt, &base, 0, 2).unwrap(), expected);
    assert_eq!(read(&rt, &ee, 0, 2).unwrap(), expected);
    write(&rt, &ee, 0, &data).unwrap();
    assert_eq!(read(&rt, &base, 0, 2).unwrap(), data);
    rt.stop();
}

#[test]
fn queue_depth_injects_only_when_that_many_ios_are_at_the_base() {
    let rt = runtime(1);
    let (_base, ee) = error_over_malloc(&rt, "M0");
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "read", "error_type": "failure",
               "num": 1, "queue_depth": 2}),
    )
    .unwrap();
    // Alone, a read finds 0 I/Os at the base: not affected, and the count is kept.
    read(&rt, &ee, 0, 1).unwrap();
    // In a batch of three, the third finds two reads at the base.
    let rx = submit_all(&rt, 0, &ee, reads(3, 0));
    let got: Vec<_> = wait_all(&rx, 3)
        .into_iter()
        .map(|r| r.map(|_| ()))
        .collect();
    assert_eq!(got, vec![Ok(()), Ok(()), Err(libc::EIO)]);
    // The only count is used up.
    let rx = submit_all(&rt, 0, &ee, reads(3, 0));
    assert!(wait_all(&rx, 3).iter().all(Result::is_ok));
    rt.stop();
}

#[test]
fn bad_injection_params_are_refused_and_change_nothing() {
    let rt = runtime(1);
    let (_base, ee) = error_over_malloc(&rt, "M0");
    malloc::create(&rt, Some("Plain".into()), 8, BS as u32, None).unwrap();
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "read", "error_type": "failure", "num": 1}),
    )
    .unwrap();
    let code = |params: Value| inject(&rt, params).unwrap_err().code;
    // corrupt_value 0 could corrupt nothing: EINVAL, as SPDK.
    assert_eq!(
        code(
            json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
                    "corrupt_offset": 1, "corrupt_value": 0})
        ),
        -libc::EINVAL
    );
    assert_eq!(
        code(json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data"})),
        -libc::EINVAL
    );
    assert_eq!(
        code(json!({"name": "nope", "io_type": "read", "error_type": "failure"})),
        -libc::ENODEV
    );
    assert_eq!(
        code(json!({"name": "Plain", "io_type": "read", "error_type": "failure"})),
        -libc::ENODEV
    );
    for bad in [
        json!({"name": "EE_M0", "io_type": "reed", "error_type": "failure"}),
        json!({"name": "EE_M0", "io_type": "read", "error_type": "explode"}),
        json!({"name": "EE_M0", "io_type": "read", "error_type": "failure", "num": -1}),
        json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
               "corrupt_value": 256}),
        json!({"name": "EE_M0", "io_type": "read", "error_type": "failure", "bogus": 1}),
        json!({"name": "EE_M0", "io_type": "read"}),
    ] {
        let err = inject(&rt, bad.clone()).unwrap_err();
        assert_eq!(err.code, -32602, "{bad}: {err}");
    }
    let err = inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "reed", "error_type": "failure"}),
    )
    .unwrap_err();
    assert!(err.message.contains("io_type"), "{err}");
    // The earlier injection is still exactly as it was: one read failure, then success.
    assert_eq!(read(&rt, &ee, 0, 1), Err(libc::EIO));
    read(&rt, &ee, 0, 1).unwrap();
    write(&rt, &ee, 0, &pattern(BS, 1)).unwrap();
    rt.stop();
}

#[test]
fn error_bdev_claims_its_base_until_deleted() {
    let rt = runtime(1);
    let (base, ee) = error_over_malloc(&rt, "M0");
    assert_eq!(ee.num_blocks(), base.num_blocks());
    assert_eq!(ee.block_size(), base.block_size());
    let info = ee.info_json();
    assert_eq!(info["product_name"], "Error Injection Disk");
    assert_eq!(
        info["driver_specific"],
        json!({"error_disk": {"base_bdev": "M0"}})
    );
    assert_eq!(base.info_json()["claimed"], json!(true));
    // The claimed base refuses deletion; a second error bdev on it already exists.
    let err = rpc(&rt, "bdev_malloc_delete", json!({"name": "M0"})).unwrap_err();
    assert_eq!(err.code, -libc::EBUSY);
    let err = rpc(&rt, "bdev_error_create", json!({"base_name": "M0"})).unwrap_err();
    assert_eq!(err.code, -libc::EEXIST);
    let err = rpc(&rt, "bdev_error_create", json!({"base_name": "missing"})).unwrap_err();
    assert_eq!(err.code, -libc::ENODEV);
    // Delete methods of other modules do not touch it.
    let err = rpc(&rt, "bdev_malloc_delete", json!({"name": "EE_M0"})).unwrap_err();
    assert_eq!(err.code, -libc::ENODEV);
    assert_eq!(
        rpc(&rt, "bdev_error_delete", json!({"name": "EE_M0"})).unwrap(),
        json!(true)
    );
    assert!(base.claimed_by().is_none());
    assert_eq!(
        rpc(&rt, "bdev_error_delete", json!({"name": "EE_M0"}))
            .unwrap_err()
            .code,
        -libc::ENODEV
    );
    // A new error bdev on the same base starts without injections.
    let uuid = "7d5c8e2a-2b9a-4c5e-9a4e-3f1f7f0b8c11";
    rpc(
        &rt,
        "bdev_error_create",
        json!({"base_name": "M0", "uuid": uuid}),
    )
    .unwrap();
    let ee = bdev(&rt, "EE_M0");
    assert_eq!(ee.uuid().to_string(), uuid);
    read(&rt, &ee, 0, 1).unwrap();
    delete(&rt, "EE_M0").unwrap();
    delete(&rt, "M0").unwrap();
    rt.stop();
}

fn delay_params(name: &str, base: &str, read_us: u64, write_us: u64) -> Value {
    json!({"base_bdev_name": base, "name": name,
           "avg_read_latency": read_us, "p99_read_latency": read_us,
           "avg_write_latency": write_us, "p99_write_latency": write_us})
}

/// Runs `f` and returns how long it took.
fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

#[test]
fn delay_adds_at_least_the_configured_latency_and_passes_data() {
    let rt = runtime(1);
    let base = malloc::create(&rt, Some("M1".into()), 64, BS as u32, None).unwrap();
    assert_eq!(
        rpc(
            &rt,
            "bdev_delay_create",
            delay_params("D1", "M1", 2000, 3000)
        )
        .unwrap(),
        json!("D1")
    );
    let d = bdev(&rt, "D1");
    assert_eq!(d.info_json()["product_name"], "delay");
    let data = pattern(4 * BS, 11);
    let (r, took) = timed(|| write(&rt, &d, 4, &data));
    r.unwrap();
    assert!(took >= Duration::from_millis(3), "write took {took:?}");
    assert_eq!(read(&rt, &base, 4, 4).unwrap(), data);
    let (got, took) = timed(|| read(&rt, &d, 4, 4));
    assert_eq!(got.unwrap(), data);
    assert!(took >= Duration::from_millis(2), "read took {took:?}");
    // Many at once: each held for its latency, all complete with their data.
    let (got, took) = timed(|| wait_all(&submit_all(&rt, 0, &d, reads(8, 4)), 8));
    assert!(got.iter().all(|r| r.as_deref() == Ok(&data[..BS])));
    assert!(took >= Duration::from_millis(2), "batch took {took:?}");
    // Raising a latency applies to the next I/O.
    assert_eq!(
        rpc(
            &rt,
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "D1", "latency_type": "avg_read", "latency_us": 5000})
        )
        .unwrap(),
        json!(true)
    );
    rpc(
        &rt,
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D1", "latency_type": "p99_read", "latency_us": 5000}),
    )
    .unwrap();
    let (got, took) = timed(|| read(&rt, &d, 4, 4));
    assert_eq!(got.unwrap(), data);
    assert!(took >= Duration::from_millis(5), "read took {took:?}");
    assert_eq!(
        d.info_json()["driver_specific"]["delay"],
        json!({"name": "D1", "base_bdev_name": "M1", "uuid": d.uuid().to_string(),
               "avg_read_latency": 5000, "p99_read_latency": 5000,
               "avg_write_latency": 3000, "p99_write_latency": 3000})
    );
    rt.stop();
}

#[test]
fn delay_reset_aborts_the_io_it_holds() {
    let rt = runtime(2);
    malloc::create(&rt, Some("M1".into()), 64, BS as u32, None).unwrap();
    rpc(&rt, "bdev_delay_create", delay_params("D1", "M1", 0, 0)).unwrap();
    let d = bdev(&rt, "D1");
    for t in ["avg_read", "p99_read"] {
        rpc(
            &rt,
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "D1", "latency_type": t, "latency_us": 60_000_000u64}),
        )
        .unwrap();
    }
    let rx = submit_all(&rt, 1, &d, reads(2, 0));
    // Held for a minute: the reset below aborts both, which only held I/O can be. The delay
    // holds a read once its base has answered it: a read still at the base when the reset
    // comes is not held yet, and would be held for the minute after it.
    wait_held(&rt, &d, 2, &rx);
    let base = bdev(&rt, "M1");
    common::wait_until("the reads to come back from the base", || {
        in_flight(&rt, &base) == 0
    });
    command(&rt, &d, IoType::Reset, 0, 0).unwrap();
    assert_eq!(
        wait_all(&rx, 2),
        vec![Err(libc::ECANCELED), Err(libc::ECANCELED)]
    );
    // Writes were never delayed by the read latencies.
    write(&rt, &d, 0, &pattern(BS, 12)).unwrap();
    rt.stop();
}

#[test]
fn delay_params_are_checked_and_the_base_claimed_until_delete() {
    let rt = runtime(1);
    let base = malloc::create(&rt, Some("M1".into()), 64, BS as u32, None).unwrap();
    let mut p99_below_avg = delay_params("D1", "M1", 100, 100);
    p99_below_avg["p99_write_latency"] = json!(99);
    assert_eq!(
        rpc(&rt, "bdev_delay_create", p99_below_avg)
            .unwrap_err()
            .code,
        -libc::EINVAL
    );
    let mut missing = delay_params("D1", "M1", 100, 100);
    missing.as_object_mut().unwrap().remove("avg_read_latency");
    assert_eq!(
        rpc(&rt, "bdev_delay_create", missing).unwrap_err().code,
        -32602
    );
    assert_eq!(
        rpc(&rt, "bdev_delay_create", delay_params("D1", "nope", 1, 1))
            .unwrap_err()
            .code,
        -libc::ENODEV
    );
    assert!(base.claimed_by().is_none(), "refused creates claim nothing");
    assert!(BdevRegistry::of(&rt).get("D1").is_err());

    rpc(&rt, "bdev_delay_create", delay_params("D1", "M1", 10, 10)).unwrap();
    assert_eq!(
        rpc(&rt, "bdev_delay_create", delay_params("D2", "M1", 10, 10))
            .unwrap_err()
            .code,
        -libc::EBUSY
    );
    assert_eq!(
        rpc(&rt, "bdev_delay_create", delay_params("M1", "M1", 10, 10))
            .unwrap_err()
            .code,
        -libc::EEXIST
    );
    // An error bdev cannot stack on a base the delay bdev claimed.
    assert_eq!(
        rpc(&rt, "bdev_error_create", json!({"base_name": "M1"}))
            .unwrap_err()
            .code,
        -libc::EBUSY
    );
    let update = |params: Value| rpc(&rt, "bdev_delay_update_latency", params);
    let err = update(json!({"delay_bdev_name": "D1", "latency_type": "avg", "latency_us": 1}))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (-32602, "Please specify a valid latency type.")
    );
    let err = update(json!({"delay_bdev_name": "M1", "latency_type": "avg_read", "latency_us": 1}))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (-32602, "The requested bdev does not exist.")
    );
    assert_eq!(
        bdev(&rt, "D1").info_json()["driver_specific"]["delay"]["avg_read_latency"],
        json!(10)
    );
    assert_eq!(
        rpc(&rt, "bdev_malloc_delete", json!({"name": "M1"}))
            .unwrap_err()
            .code,
        -libc::EBUSY
    );
    assert_eq!(
        rpc(&rt, "bdev_error_delete", json!({"name": "D1"}))
            .unwrap_err()
            .code,
        -libc::ENODEV
    );
    assert_eq!(
        rpc(&rt, "bdev_delay_delete", json!({"name": "D1"})).unwrap(),
        json!(true)
    );
    assert!(base.claimed_by().is_none());
    delete(&rt, "M1").unwrap();
    rt.stop();
}

/// What `save_config` emits for the bdev subsystem: each bdev's creating call, in order.
fn bdev_config(rt: &Runtime) -> Value {
    let entries: Vec<Value> = BdevRegistry::of(rt)
        .list()
        .iter()
        .filter_map(|b| {
            b.backend()
                .config_entry(b)
                .map(|(method, params)| json!({"method": method, "params": params}))
        })
        .collect();
    json!({"subsystems": [{"subsystem": "bdev", "config": entries}]})
}

fn describe(rt: &Runtime) -> Vec<Value> {
    BdevRegistry::of(rt)
        .list()
        .iter()
        .map(|b| b.info_json())
        .collect()
}

#[test]
fn config_round_trip_recreates_error_and_delay_bdevs() {
    let rt = runtime(1);
    error_over_malloc(&rt, "M0");
    malloc::create(&rt, Some("M1".into()), 32, 4096, None).unwrap();
    rpc(&rt, "bdev_delay_create", delay_params("D1", "M1", 300, 700)).unwrap();
    rpc(
        &rt,
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D1", "latency_type": "p99_read", "latency_us": 900}),
    )
    .unwrap();
    // Injections are not part of the config, as in SPDK.
    inject(
        &rt,
        json!({"name": "EE_M0", "io_type": "all", "error_type": "failure", "num": 5}),
    )
    .unwrap();
    let config = bdev_config(&rt);
    let entries = config["subsystems"][0]["config"].as_array().unwrap();
    let methods: Vec<&str> = entries
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "bdev_malloc_create",
            "bdev_error_create",
            "bdev_malloc_create",
            "bdev_delay_create"
        ]
    );
    let before = describe(&rt);
    rt.stop();

    let rt2 = runtime(1);
    load(&Ctx { rt: rt2.clone() }, &config).unwrap();
    assert_eq!(describe(&rt2), before);
    assert_eq!(bdev_config(&rt2), config);
    let ee = bdev(&rt2, "EE_M0");
    let data = pattern(BS, 13);
    write(&rt2, &ee, 1, &data).unwrap();
    assert_eq!(read(&rt2, &ee, 1, 1).unwrap(), data);
    let d = bdev(&rt2, "D1");
    let data = pattern(4096, 14);
    write(&rt2, &d, 1, &data).unwrap();
    assert_eq!(read(&rt2, &d, 1, 1).unwrap(), data);
    rt2.stop();
}
