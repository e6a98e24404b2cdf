//! The bdev layer over malloc and null: data round trips, bounds, claims, channels, stats.

mod common;

use common::{delete, pattern, runtime};
use quorum_bdev::bdev::blocking::{command, read, run_io, write};
use quorum_bdev::bdev::{BdevError, BdevRegistry, IoType};
use quorum_bdev::modules::{malloc, null};
use quorum_bdev::runtime::channel;

#[test]
fn malloc_round_trip_on_every_reactor() {
    let rt = runtime(2);
    let m = malloc::create(&rt, None, 256, 512, None).unwrap();
    assert_eq!(m.name(), "Malloc0");
    let data = pattern(8 * 512, 3);
    write(&rt, &m, 10, &data).unwrap();
    assert_eq!(read(&rt, &m, 10, 8).unwrap(), data);
    // The other reactor sees the same blocks through its own channel.
    let got = run_io(&rt, 1, &m, IoType::Read, 10, 8, &vec![0; 8 * 512]).unwrap();
    assert_eq!(got, data);
    command(&rt, &m, IoType::WriteZeroes, 12, 2).unwrap();
    let got = read(&rt, &m, 10, 8).unwrap();
    assert_eq!(&got[..1024], &data[..1024]);
    assert!(got[1024..2048].iter().all(|&b| b == 0));
    assert_eq!(&got[2048..], &data[2048..]);
    rt.stop();
}

#[test]
fn null_reads_zeroes_and_discards_writes() {
    let rt = runtime(1);
    let n = null::create(&rt, "Null0".into(), 1024, 4096, None).unwrap();
    write(&rt, &n, 0, &pattern(4096, 1)).unwrap();
    assert_eq!(read(&rt, &n, 0, 1).unwrap(), vec![0; 4096]);
    rt.stop();
}

#[test]
fn out_of_range_and_misaligned_io_fail_with_einval() {
    let rt = runtime(1);
    let m = malloc::create(&rt, Some("M".into()), 16, 512, None).unwrap();
    assert_eq!(read(&rt, &m, 16, 1), Err(libc::EINVAL));
    assert_eq!(read(&rt, &m, 15, 2), Err(libc::EINVAL));
    assert_eq!(read(&rt, &m, u64::MAX, 2), Err(libc::EINVAL));
    assert_eq!(read(&rt, &m, 0, 0), Err(libc::EINVAL));
    // Buffer length that is not the block count times the block size.
    assert_eq!(
        run_io(&rt, 0, &m, IoType::Write, 0, 1, &[1; 100]),
        Err(libc::EINVAL)
    );
    assert_eq!(command(&rt, &m, IoType::Unmap, 10, 7), Err(libc::EINVAL));
    // Nothing was written by the refused requests.
    assert_eq!(read(&rt, &m, 0, 16).unwrap(), vec![0; 16 * 512]);
    rt.stop();
}

#[test]
fn names_are_unique_and_geometry_checked() {
    let rt = runtime(1);
    malloc::create(&rt, Some("A".into()), 16, 512, None).unwrap();
    assert!(matches!(
        malloc::create(&rt, Some("A".into()), 16, 512, None),
        Err(BdevError::Exists(_))
    ));
    assert!(matches!(
        malloc::create(&rt, Some("B".into()), 16, 500, None),
        Err(BdevError::Invalid(_))
    ));
    assert!(matches!(
        null::create(&rt, "C".into(), 0, 512, None),
        Err(BdevError::Invalid(_))
    ));
    rt.stop();
}

#[test]
fn claimed_bdev_refuses_delete_and_second_claim() {
    let rt = runtime(1);
    let m = malloc::create(&rt, Some("M".into()), 16, 512, None).unwrap();
    let registry = BdevRegistry::of(&rt);
    registry.claim_base("Q", &m, "quorum").unwrap();
    assert_eq!(m.claimed_by().as_deref(), Some("quorum Q"));
    assert!(matches!(
        registry.claim_base("R", &m, "raid"),
        Err(BdevError::Claimed { .. })
    ));
    let err = delete(&rt, "M").unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY);
    assert!(BdevRegistry::of(&rt).get("M").is_ok());
    m.release_claim();
    delete(&rt, "M").unwrap();
    assert!(BdevRegistry::of(&rt).get("M").is_err());
    assert_eq!(delete(&rt, "M").unwrap_err().errno(), libc::ENODEV);
    rt.stop();
}

#[test]
fn channels_live_per_reactor_until_unregister() {
    let rt = runtime(2);
    let m = malloc::create(&rt, Some("M".into()), 16, 512, None).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let tx2 = tx.clone();
    m.subscribe_remove(move |name| tx2.send(name.to_string()).unwrap());
    for r in 0..2 {
        run_io(&rt, r, &m, IoType::Read, 0, 1, &[0; 512]).unwrap();
        assert_eq!(rt.run_on(r, channel::count), 1);
    }
    delete(&rt, "M").unwrap();
    assert_eq!(rx.recv().unwrap(), "M");
    for r in 0..2 {
        assert_eq!(rt.run_on(r, channel::count), 0);
    }
    // A stale handle cannot open a new channel.
    let m2 = m.clone();
    assert!(rt.run_on(0, move || m2.io_channel().is_err()));
    drop(tx);
    rt.stop();
}

#[test]
fn statistics_count_each_reactor() {
    let rt = runtime(2);
    let m = malloc::create(&rt, Some("M".into()), 64, 512, None).unwrap();
    write(&rt, &m, 0, &pattern(4 * 512, 1)).unwrap();
    run_io(&rt, 1, &m, IoType::Read, 0, 2, &[0; 1024]).unwrap();
    let _ = read(&rt, &m, 63, 2);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let m2 = m.clone();
    let rt2 = rt.clone();
    rt.send_msg(0, move || {
        m2.collect_stats(&rt2, move |s| tx.send(s).unwrap())
    });
    let s = rx.recv().unwrap();
    assert_eq!((s.num_write_ops, s.bytes_written), (1, 2048));
    assert_eq!((s.num_read_ops, s.bytes_read), (1, 1024));
    rt.stop();
}

#[test]
fn overlapping_io_in_flight_takes_effect_in_submission_order() {
    // Malloc moves data when a completion is delivered, not at submission; overlapping I/O
    // submitted in one go must still see each other's effects in submission order: a read
    // sees the writes submitted before it and none after it.
    let rt = runtime(1);
    let m = malloc::create(&rt, None, 64, 512, None).unwrap();
    let old = pattern(512, 1);
    write(&rt, &m, 5, &old).unwrap();
    let (a, b) = (pattern(512, 2), pattern(512, 3));
    let read_op = || (IoType::Read, vec![0; 512]);
    let ops = vec![
        read_op(),
        (IoType::Write, a.clone()),
        read_op(),
        (IoType::WriteZeroes, Vec::new()),
        read_op(),
        (IoType::Write, b.clone()),
        read_op(),
    ];
    let delivered = common::submit_together(&rt, &m, 5, 1, ops);
    let mut order = Vec::new();
    for d in &delivered {
        assert_eq!(d.status, Ok(()), "I/O {}", d.tag);
        order.push(d.tag);
    }
    assert_eq!(
        order,
        (0..7).collect::<Vec<_>>(),
        "completions in submission order"
    );
    assert_eq!(delivered[0].data, old, "read before every write");
    assert_eq!(delivered[2].data, a, "read after write A");
    assert!(
        delivered[4].data.iter().all(|&x| x == 0),
        "read after write_zeroes"
    );
    assert_eq!(delivered[6].data, b, "read after write B");
    assert_eq!(read(&rt, &m, 5, 1).unwrap(), b);
    rt.stop();
}

/// Records whether each completion arrived while `inside` was set, i.e. synchronously
/// within the call that finished the I/O.
struct SyncProbe {
    inside: std::rc::Rc<std::cell::Cell<bool>>,
    tx: crossbeam_channel::Sender<(u64, bool)>,
}

impl quorum_bdev::bdev::IoDone for SyncProbe {
    fn io_done(&self, io: quorum_bdev::bdev::IoHandle) {
        let _ = self.tx.send((io.tag, self.inside.get()));
    }
}

/// Completes a held parent I/O from the completion callback of its child, as a quorum does.
struct Forwarder {
    parent: std::cell::RefCell<Option<quorum_bdev::bdev::IoHandle>>,
    inside: std::rc::Rc<std::cell::Cell<bool>>,
}

impl quorum_bdev::bdev::IoDone for Forwarder {
    fn io_done(&self, child: quorum_bdev::bdev::IoHandle) {
        assert_eq!(child.status(), Ok(()));
        let parent = self.parent.borrow_mut().take().expect("one child");
        self.inside.set(true);
        parent.complete_from_callback(Ok(()));
        self.inside.set(false);
    }
}

#[test]
fn a_parent_finished_from_a_child_callback_is_delivered_at_once_and_otherwise_queued() {
    use quorum_bdev::bdev::{IoBuf, IoHandle};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    let rt = runtime(1);
    let n = null::create(&rt, "Null0".into(), 64, 512, None).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    rt.send_msg(0, move || {
        let inside = Rc::new(Cell::new(false));
        let probe: Rc<dyn quorum_bdev::bdev::IoDone> = Rc::new(SyncProbe {
            inside: inside.clone(),
            tx,
        });
        // Tag 1: finished outside any completion callback, so it must be queued.
        let lone = IoHandle::new(IoType::Flush, 0, 0, IoBuf::NONE, probe.clone(), 1);
        inside.set(true);
        lone.complete_from_callback(Ok(()));
        inside.set(false);
        // Tag 2: finished from its child's callback, so it is delivered right there.
        let parent = IoHandle::new(IoType::Flush, 0, 0, IoBuf::NONE, probe, 2);
        let forwarder = Rc::new(Forwarder {
            parent: RefCell::new(Some(parent)),
            inside,
        });
        let channel = n.io_channel().unwrap();
        channel.submit(IoHandle::new(
            IoType::Flush,
            0,
            0,
            IoBuf::NONE,
            forwarder,
            3,
        ));
    });
    let got: Vec<(u64, bool)> = (0..2).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(got, [(1, false), (2, true)]);
    rt.stop();
}

/// Submits a zcopy on reactor 0 and returns its status and the bytes it lent.
fn zcopy(
    rt: &quorum_bdev::runtime::Runtime,
    bdev: &std::sync::Arc<quorum_bdev::bdev::Bdev>,
    offset_blocks: u64,
    num_blocks: u64,
) -> (Result<(), i32>, Vec<u8>) {
    let ops = vec![(IoType::Zcopy, Vec::new())];
    let d = common::submit_together(rt, bdev, offset_blocks, num_blocks, ops).remove(0);
    (d.status, d.data)
}

#[test]
fn malloc_lends_its_blocks_for_zcopy_and_null_refuses() {
    let rt = runtime(1);
    let m = malloc::create(&rt, Some("M".into()), 64, 512, None).unwrap();
    assert_eq!(m.info_json()["supported_io_types"]["zcopy"], true);
    let data = pattern(3 * 512, 4);
    write(&rt, &m, 7, &data).unwrap();
    assert_eq!(zcopy(&rt, &m, 7, 3), (Ok(()), data.clone()));
    // The view is the disk itself: a later write shows in the next zcopy.
    let newer = pattern(512, 5);
    write(&rt, &m, 8, &newer).unwrap();
    let (status, lent) = zcopy(&rt, &m, 8, 1);
    assert_eq!((status, lent), (Ok(()), newer));
    assert_eq!(zcopy(&rt, &m, 63, 2).0, Err(libc::EINVAL), "past the end");

    let n = null::create(&rt, "Null0".into(), 64, 512, None).unwrap();
    assert_eq!(n.info_json()["supported_io_types"]["zcopy"], false);
    assert_eq!(zcopy(&rt, &n, 0, 1).0, Err(libc::ENOTSUP));

    // SPDK counts a zcopy as a read.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (m2, rt2) = (m.clone(), rt.clone());
    rt.send_msg(0, move || {
        m2.collect_stats(&rt2, move |s| tx.send(s).unwrap())
    });
    let s = rx.recv().unwrap();
    assert_eq!((s.num_read_ops, s.bytes_read), (2, 4 * 512));
    rt.stop();
}
