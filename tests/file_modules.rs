//! The file-backed modules (uring, aio) on real files: O_DIRECT on the disk, tmpfs, many I/Os
//! in flight on two reactors, flush/unmap/write_zeroes, errors, delete, and the RPC methods.

mod common;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::{pattern, runtime};
use quorum_bdev::bdev::blocking::{command, read, run_io, write};
use quorum_bdev::bdev::{Bdev, BdevError, BdevRegistry, IoBuf, IoDone, IoHandle, IoType};
use quorum_bdev::control::config::load;
use quorum_bdev::control::methods;
use quorum_bdev::control::rpc::{call_blocking, Ctx};
use quorum_bdev::modules::aio::{self, AioOptions};
use quorum_bdev::modules::uring;
use quorum_bdev::runtime::buf::DmaBuf;
use quorum_bdev::runtime::{Runtime, RuntimeOptions};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A directory on the real disk (the target dir), where O_DIRECT works.
fn disk_dir() -> TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A directory on tmpfs.
fn shm_dir() -> TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap()
}

/// A file of `len` bytes holding `pattern(len, seed)`.
fn file_with(dir: &TempDir, name: &str, len: usize, seed: u8) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, pattern(len, seed)).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn o_direct(bdev: &Bdev, module: &str) -> bool {
    bdev.info_json()["driver_specific"][module]["o_direct"]
        .as_bool()
        .unwrap()
}

fn bytes_at(path: &Path, offset: usize, len: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[offset..offset + len].to_vec()
}

/// One request of a batch submitted at once on one reactor.
#[derive(Clone)]
struct Req {
    io_type: IoType,
    offset: u64,
    blocks: u64,
    /// Write payload; for reads, its length is the read size.
    data: Vec<u8>,
    fua: bool,
    /// Bytes by which the buffer start is moved off the pool's 4 KiB alignment.
    skew: usize,
}

impl Req {
    fn write(offset: u64, data: Vec<u8>, bs: u64) -> Req {
        let blocks = data.len() as u64 / bs;
        Req {
            io_type: IoType::Write,
            offset,
            blocks,
            data,
            fua: false,
            skew: 0,
        }
    }

    fn read(offset: u64, blocks: u64, bs: u64) -> Req {
        Req {
            io_type: IoType::Read,
            offset,
            blocks,
            data: vec![0; (blocks * bs) as usize],
            fua: false,
            skew: 0,
        }
    }
}

type Outcome = Result<Vec<u8>, i32>;

struct Batch {
    bufs: RefCell<Vec<Option<(DmaBuf, usize, usize)>>>,
    results: RefCell<Vec<Option<Outcome>>>,
    left: Cell<usize>,
    tx: crossbeam_channel::Sender<Vec<Outcome>>,
}

impl IoDone for Batch {
    fn io_done(&self, io: IoHandle) {
        let i = io.tag as usize;
        let buf = self.bufs.borrow_mut()[i].take();
        let outcome = io.status().map(|()| match (io.io_type, buf) {
            (IoType::Read, Some((b, skew, len))) => b.as_slice()[skew..skew + len].to_vec(),
            _ => Vec::new(),
        });
        self.results.borrow_mut()[i] = Some(outcome);
        self.left.set(self.left.get() - 1);
        if self.left.get() == 0 {
            let all = self
                .results
                .take()
                .into_iter()
                .map(Option::unwrap)
                .collect();
            let _ = self.tx.send(all);
        }
    }
}

/// Submits every request at once on `reactor` (so the kernel queue overflows when there are
/// more than its depth) and returns each outcome: the data for reads, empty otherwise.
fn batch(rt: &Runtime, reactor: usize, bdev: &Arc<Bdev>, reqs: Vec<Req>) -> Vec<Outcome> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let bdev = bdev.clone();
    let n = reqs.len();
    rt.send_msg(reactor, move || {
        let channel = bdev.io_channel().unwrap();
        let done = Rc::new(Batch {
            bufs: RefCell::new(Vec::new()),
            results: RefCell::new(vec![None; n]),
            left: Cell::new(n),
            tx,
        });
        let mut views = Vec::new();
        for r in &reqs {
            let len = r.data.len();
            if len == 0 {
                done.bufs.borrow_mut().push(None);
                views.push(IoBuf::NONE);
                continue;
            }
            let mut buf = DmaBuf::new(len + r.skew);
            buf.as_mut_slice()[r.skew..].copy_from_slice(&r.data);
            // SAFETY: the buffer lives in `done` until the I/O completes.
            views.push(unsafe { IoBuf::from_raw(buf.as_mut_ptr().add(r.skew), len) });
            done.bufs.borrow_mut().push(Some((buf, r.skew, len)));
        }
        for (i, (r, view)) in reqs.iter().zip(views).enumerate() {
            let mut io = IoHandle::new(r.io_type, r.offset, r.blocks, view, done.clone(), i as u64);
            io.fua = r.fua;
            channel.submit(io);
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("batch completed")
}

/// Runs `f` and fails the test instead of hanging if it does not finish in time.
fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("operation hung")
}

/// The error of a create call that must fail.
fn refused(r: Result<Arc<Bdev>, BdevError>) -> BdevError {
    match r {
        Ok(b) => panic!("bdev {} was created", b.name()),
        Err(e) => e,
    }
}

fn delete_rpc(rt: &Runtime, method: &str, name: &str) -> Result<Value, i32> {
    let ctx = Ctx { rt: rt.clone() };
    call_blocking(
        &ctx,
        &methods::find(method).unwrap(),
        Some(json!({"name": name})),
    )
    .map_err(|e| e.code)
}

/// Open descriptors of this process that point at `path`.
fn open_fds_to(path: &Path) -> usize {
    let target = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|link| *link == target)
        .count()
}

#[test]
fn uring_o_direct_round_trip_reaches_the_file() {
    let rt = runtime(2);
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 1 << 20, 9);
    let u = uring::create(&rt, "U0", s(&path), None).unwrap();
    let info = u.info_json();
    assert_eq!(info["product_name"], "URING bdev");
    assert_eq!(info["driver_specific"]["uring"]["filename"], s(&path));
    assert!(
        o_direct(&u, "uring"),
        "O_DIRECT engaged on the disk: {info}"
    );
    assert_eq!((u.block_size(), u.num_blocks()), (512, 2048));
    // The existing contents are the bdev's contents.
    assert_eq!(read(&rt, &u, 0, 8).unwrap(), pattern(1 << 20, 9)[..4096]);
    let data = pattern(16 * 512, 1);
    write(&rt, &u, 7, &data).unwrap();
    assert_eq!(read(&rt, &u, 7, 16).unwrap(), data);
    // Another reactor reads the same blocks through its own ring.
    let got = run_io(&rt, 1, &u, IoType::Read, 7, 16, &vec![0; data.len()]).unwrap();
    assert_eq!(got, data);
    let fua = pattern(4096, 2);
    let mut req = Req::write(100, fua.clone(), 512);
    req.fua = true;
    assert_eq!(batch(&rt, 1, &u, vec![req]), vec![Ok(Vec::new())]);
    command(&rt, &u, IoType::Flush, 0, 0).unwrap();
    assert_eq!(bytes_at(&path, 7 * 512, data.len()), data);
    assert_eq!(bytes_at(&path, 100 * 512, 4096), fua);
    rt.stop();
}

#[test]
fn tmpfs_file_round_trip_unmap_and_write_zeroes() {
    let rt = runtime(1);
    let dir = shm_dir();
    let path = file_with(&dir, "shm.img", 256 << 10, 4);
    let u = uring::create(&rt, "U0", s(&path), Some(4096)).unwrap();
    assert!(!o_direct(&u, "uring"), "tmpfs files are served buffered");
    assert_eq!((u.block_size(), u.num_blocks()), (4096, 64));
    let data = pattern(8 * 4096, 5);
    write(&rt, &u, 10, &data).unwrap();
    assert_eq!(read(&rt, &u, 10, 8).unwrap(), data);
    // Unmap (punch hole) and write_zeroes (tmpfs refuses ZERO_RANGE: zeroes are written).
    command(&rt, &u, IoType::Unmap, 11, 2).unwrap();
    command(&rt, &u, IoType::WriteZeroes, 15, 2).unwrap();
    let got = read(&rt, &u, 10, 8).unwrap();
    let mut want = data.clone();
    want[4096..3 * 4096].fill(0);
    want[5 * 4096..7 * 4096].fill(0);
    assert_eq!(got, want);
    command(&rt, &u, IoType::Flush, 0, 0).unwrap();
    assert_eq!(bytes_at(&path, 10 * 4096, want.len()), want);
    // A second write_zeroes goes straight to writing zeroes and still works.
    command(&rt, &u, IoType::WriteZeroes, 10, 1).unwrap();
    assert_eq!(read(&rt, &u, 10, 1).unwrap(), vec![0; 4096]);
    rt.stop();
}

/// More I/O than the kernel queue holds, on two reactors: the excess waits in the channel.
fn many_in_flight(rt: &Runtime, bdev: &Arc<Bdev>, count: u64) {
    let bs = bdev.block_size() as u64;
    let writes: Vec<Req> = (0..count)
        .map(|i| {
            let mut r = Req::write(i, pattern(bs as usize, i as u8), bs);
            r.fua = i % 7 == 0;
            r
        })
        .collect();
    let results = batch(rt, 0, bdev, writes);
    assert!(results.iter().all(|r| r == &Ok(Vec::new())));
    let reads = (0..count).map(|i| Req::read(i, 1, bs)).collect();
    for (i, got) in batch(rt, 1, bdev, reads).into_iter().enumerate() {
        assert_eq!(got.unwrap(), pattern(bs as usize, i as u8), "block {i}");
    }
}

#[test]
fn uring_serves_more_io_than_its_ring_holds() {
    let rt = runtime(2);
    let dir = disk_dir();
    let path = file_with(&dir, "big.img", 700 * 4096, 0);
    let u = uring::create(&rt, "U0", s(&path), Some(4096)).unwrap();
    many_in_flight(&rt, &u, 700);
    rt.stop();
}

#[test]
fn aio_serves_more_io_than_its_context_holds() {
    let rt = runtime(2);
    let dir = disk_dir();
    let path = file_with(&dir, "big.img", 300 * 4096, 0);
    let a = aio::create(&rt, "A0", s(&path), AioOptions::default()).unwrap();
    assert!(o_direct(&a, "aio"));
    many_in_flight(&rt, &a, 300);
    rt.stop();
}

#[test]
fn out_of_range_and_misaligned_buffers_fail_with_einval() {
    let rt = runtime(1);
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 64 * 512, 3);
    for bdev in [
        uring::create(&rt, "U0", s(&path), None).unwrap(),
        aio::create(&rt, "A0", s(&path), AioOptions::default()).unwrap(),
    ] {
        assert_eq!(read(&rt, &bdev, 64, 1), Err(libc::EINVAL));
        assert_eq!(read(&rt, &bdev, 60, 8), Err(libc::EINVAL));
        assert_eq!(write(&rt, &bdev, 64, &[1; 512]), Err(libc::EINVAL));
        // O_DIRECT cannot take a buffer off the device alignment.
        let mut skewed = Req::write(0, vec![0xee; 512], 512);
        skewed.skew = 8;
        assert_eq!(batch(&rt, 0, &bdev, vec![skewed]), vec![Err(libc::EINVAL)]);
        let mut skewed = Req::read(0, 1, 512);
        skewed.skew = 8;
        assert_eq!(batch(&rt, 0, &bdev, vec![skewed]), vec![Err(libc::EINVAL)]);
    }
    // Nothing was written by the refused requests.
    assert_eq!(std::fs::read(&path).unwrap(), pattern(64 * 512, 3));
    rt.stop();
}

#[test]
fn reading_past_a_shrunken_file_fails_with_eio() {
    let rt = runtime(1);
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 64 << 10, 6);
    let u = uring::create(&rt, "U0", s(&path), Some(4096)).unwrap();
    let opts = AioOptions {
        block_size: Some(4096),
        ..Default::default()
    };
    let a = aio::create(&rt, "A0", s(&path), opts).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(40 << 10)
        .unwrap();
    for bdev in [&u, &a] {
        assert_eq!(read(&rt, bdev, 15, 1), Err(libc::EIO));
        // A read crossing the new end: the part before it arrives short, the rest is EOF.
        assert_eq!(read(&rt, bdev, 8, 4), Err(libc::EIO));
        assert_eq!(read(&rt, bdev, 0, 2).unwrap(), pattern(64 << 10, 6)[..8192]);
    }
    rt.stop();
}

#[test]
fn create_errors_are_clear_and_change_nothing() {
    let rt = runtime(1);
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 64 << 10, 1);
    let missing = dir.path().join("missing.img");
    let err = refused(uring::create(&rt, "U0", s(&missing), None));
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(err.to_string().contains("missing.img"), "{err}");
    let err = refused(aio::create(&rt, "A0", s(&missing), AioOptions::default()));
    assert_eq!(err.errno(), libc::ENOENT);

    let empty = file_with(&dir, "empty.img", 0, 0);
    let err = refused(uring::create(&rt, "U0", s(&empty), None));
    assert!(matches!(err, BdevError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("empty.img"), "{err}");
    let err = refused(uring::create(&rt, "U0", s(&path), Some(1000)));
    assert!(err.to_string().contains("power of two"), "{err}");
    let err = refused(aio::create(&rt, "A0", s(dir.path()), AioOptions::default()));
    assert_eq!(err.errno(), libc::EISDIR, "{err}");
    assert!(BdevRegistry::of(&rt).list().is_empty());

    let u = uring::create(&rt, "U0", s(&path), None).unwrap();
    let other = file_with(&dir, "other.img", 64 << 10, 2);
    let err = refused(uring::create(&rt, "U0", s(&other), None));
    assert_eq!(err.errno(), libc::EEXIST);
    let err = refused(aio::create(&rt, "U0", s(&other), AioOptions::default()));
    assert_eq!(err.errno(), libc::EEXIST);
    // The existing bdev is untouched and the refused file was not kept open.
    assert_eq!(read(&rt, &u, 0, 1).unwrap(), pattern(64 << 10, 1)[..512]);
    assert_eq!(open_fds_to(&other), 0);
    assert_eq!(BdevRegistry::of(&rt).list().len(), 1);
    rt.stop();
}

#[test]
fn delete_closes_the_file_and_checks_the_module() {
    let rt = runtime(2);
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 64 << 10, 1);
    let u = uring::create(&rt, "U0", s(&path), None).unwrap();
    let a = aio::create(&rt, "A0", s(&path), AioOptions::default()).unwrap();
    for r in 0..2 {
        run_io(&rt, r, &u, IoType::Read, 0, 1, &[0; 512]).unwrap();
        run_io(&rt, r, &a, IoType::Read, 0, 1, &[0; 512]).unwrap();
    }
    // The bdev's descriptor and one per reactor's channel, for each bdev.
    assert_eq!(open_fds_to(&path), 6);
    // Each delete method only deletes its own module's bdevs (ENODEV, as SPDK).
    assert_eq!(delete_rpc(&rt, "bdev_aio_delete", "U0"), Err(-libc::ENODEV));
    assert_eq!(
        delete_rpc(&rt, "bdev_uring_delete", "A0"),
        Err(-libc::ENODEV)
    );
    assert_eq!(delete_rpc(&rt, "bdev_uring_delete", "U0"), Ok(json!(true)));
    assert_eq!(open_fds_to(&path), 3);
    assert_eq!(delete_rpc(&rt, "bdev_aio_delete", "A0"), Ok(json!(true)));
    assert_eq!(open_fds_to(&path), 0);
    assert_eq!(delete_rpc(&rt, "bdev_aio_delete", "A0"), Err(-libc::ENODEV));
    // Handles kept by the caller cannot reach the closed file.
    let u2 = u.clone();
    assert!(rt.run_on(0, move || u2.io_channel().is_err()));
    drop(a);
    rt.stop();
}

#[test]
fn aio_round_trip_readonly_and_fallocate() {
    let rt = runtime(1);
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 128 << 10, 7);
    let a = aio::create(&rt, "A0", s(&path), AioOptions::default()).unwrap();
    let info = a.info_json();
    assert_eq!(info["product_name"], "AIO disk");
    assert_eq!(
        info["driver_specific"]["aio"],
        json!({"filename": s(&path), "o_direct": true, "block_size_override": false,
               "readonly": false, "fallocate": false, "dsync_writes": 0})
    );
    assert_eq!(info["supported_io_types"]["unmap"], false);
    let data = pattern(6 * 512, 8);
    let mut req = Req::write(20, data.clone(), 512);
    req.fua = true;
    assert_eq!(batch(&rt, 0, &a, vec![req]), vec![Ok(Vec::new())]);
    assert_eq!(read(&rt, &a, 20, 6).unwrap(), data);
    command(&rt, &a, IoType::Flush, 0, 0).unwrap();
    assert_eq!(bytes_at(&path, 20 * 512, data.len()), data);
    assert_eq!(command(&rt, &a, IoType::Unmap, 0, 1), Err(libc::ENOTSUP));

    let ro_opts = AioOptions {
        readonly: true,
        ..Default::default()
    };
    let ro = aio::create(&rt, "RO", s(&path), ro_opts).unwrap();
    assert_eq!(read(&rt, &ro, 20, 6).unwrap(), data);
    assert_eq!(write(&rt, &ro, 20, &[0; 512]), Err(libc::EROFS));
    assert_eq!(read(&rt, &ro, 20, 6).unwrap(), data);

    let shm = shm_dir();
    let shm_path = file_with(&shm, "shm.img", 64 << 10, 2);
    let fa_opts = AioOptions {
        fallocate: true,
        block_size: Some(4096),
        ..Default::default()
    };
    let fa = aio::create(&rt, "FA", s(&shm_path), fa_opts).unwrap();
    assert!(!o_direct(&fa, "aio"), "tmpfs files are served buffered");
    command(&rt, &fa, IoType::Unmap, 1, 2).unwrap();
    command(&rt, &fa, IoType::WriteZeroes, 4, 2).unwrap();
    let mut want = pattern(64 << 10, 2)[..8 * 4096].to_vec();
    want[4096..3 * 4096].fill(0);
    want[4 * 4096..6 * 4096].fill(0);
    assert_eq!(read(&rt, &fa, 0, 8).unwrap(), want);
    assert_eq!(bytes_at(&shm_path, 0, want.len()), want);
    rt.stop();
}

#[test]
fn idle_interrupt_mode_reactors_wake_for_completions() {
    let rt = runtime(1);
    assert!(rt.interrupt_mode());
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 64 << 10, 1);
    let u = uring::create(&rt, "U0", s(&path), None).unwrap();
    let a = aio::create(&rt, "A0", s(&path), AioOptions::default()).unwrap();
    for bdev in [u, a] {
        // Let the reactor fall asleep with the channel's poller registered, then ask again.
        run_io(&rt, 0, &bdev, IoType::Read, 0, 1, &[0; 512]).unwrap();
        common::wait_until("reactor 0 to fall asleep", || rt.reactor_asleep(0));
        let (rt2, b2) = (rt.clone(), bdev.clone());
        let data = pattern(4096, 3);
        let d2 = data.clone();
        within(5, move || {
            write(&rt2, &b2, 3, &d2).unwrap();
            command(&rt2, &b2, IoType::Flush, 0, 0).unwrap();
        });
        common::wait_until("reactor 0 to fall asleep", || rt.reactor_asleep(0));
        let (rt2, b2) = (rt.clone(), bdev.clone());
        assert_eq!(within(5, move || read(&rt2, &b2, 3, 8).unwrap()), data);
    }
    rt.stop();
}

#[test]
fn polling_reactor_serves_file_io_without_eventfd() {
    let rt = Runtime::start(RuntimeOptions {
        cores: vec![0],
        interrupt_mode: false,
        pin_threads: false,
    })
    .unwrap();
    let dir = disk_dir();
    let path = file_with(&dir, "disk.img", 64 << 10, 1);
    let u = uring::create(&rt, "U0", s(&path), None).unwrap();
    let a = aio::create(&rt, "A0", s(&path), AioOptions::default()).unwrap();
    for (i, bdev) in [u, a].iter().enumerate() {
        let data = pattern(2048, i as u8);
        write(&rt, bdev, 4, &data).unwrap();
        assert_eq!(read(&rt, bdev, 4, 4).unwrap(), data);
    }
    rt.stop();
}

#[test]
fn config_load_creates_file_bdevs_and_saved_entries_load_back() {
    let rt = runtime(1);
    let ctx = Ctx { rt: rt.clone() };
    let dir = disk_dir();
    let upath = file_with(&dir, "u.img", 256 << 10, 1);
    let apath = file_with(&dir, "a.img", 256 << 10, 2);
    let cfg = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_uring_create", "params": {"name": "U0", "filename": s(&upath)}},
        {"method": "bdev_aio_create", "params": {"name": "A0", "filename": s(&apath),
            "block_size": 4096, "readonly": false, "fallocate": true}}
    ]}]});
    load(&ctx, &cfg).unwrap();
    let registry = BdevRegistry::of(&rt);
    let u = registry.get("U0").unwrap();
    let a = registry.get("A0").unwrap();
    assert_eq!(u.info_json()["product_name"], "URING bdev");
    assert_eq!((a.block_size(), a.num_blocks()), (4096, 64));
    assert_eq!(a.info_json()["supported_io_types"]["write_zeroes"], true);
    write(&rt, &u, 1, &pattern(512, 9)).unwrap();
    write(&rt, &a, 1, &pattern(4096, 9)).unwrap();

    // What save_config would emit, in registration order.
    let entries: Vec<Value> = registry
        .list()
        .iter()
        .map(|b| {
            let (method, params) = b.backend().config_entry(b).unwrap();
            json!({"method": method, "params": params})
        })
        .collect();
    assert_eq!(entries[0]["method"], "bdev_uring_create");
    assert_eq!(entries[1]["params"]["fallocate"], true);
    let uuids = (u.uuid(), a.uuid());
    drop((u, a));
    assert_eq!(delete_rpc(&rt, "bdev_uring_delete", "U0"), Ok(json!(true)));
    assert_eq!(delete_rpc(&rt, "bdev_aio_delete", "A0"), Ok(json!(true)));

    load(
        &ctx,
        &json!({"subsystems": [{"subsystem": "bdev", "config": entries}]}),
    )
    .unwrap();
    let u = registry.get("U0").unwrap();
    let a = registry.get("A0").unwrap();
    assert_eq!((u.uuid(), a.uuid()), uuids);
    assert_eq!((u.block_size(), u.num_blocks()), (512, 512));
    assert_eq!(read(&rt, &u, 1, 1).unwrap(), pattern(512, 9));
    assert_eq!(read(&rt, &a, 1, 1).unwrap(), pattern(4096, 9));

    // Bad params are refused with the field named, and create nothing.
    let bad = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_uring_create", "params": {"name": "U1", "filename": s(&upath), "readonly": true}}
    ]}]});
    let err = load(&ctx, &bad).unwrap_err().to_string();
    assert!(err.contains("readonly"), "{err}");
    let missing = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_aio_create", "params": {"name": "A1", "filename": "/nonexistent/x.img"}}
    ]}]});
    let err = load(&ctx, &missing).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/x.img"), "{err}");
    assert_eq!(registry.list().len(), 2);
    rt.stop();
}
