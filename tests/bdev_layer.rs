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
    m.claim("quorum").unwrap();
    assert!(matches!(m.claim("raid"), Err(BdevError::Claimed { .. })));
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
