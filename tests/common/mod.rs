//! Helpers shared by the integration tests: a small runtime per test, data patterns, and
//! (in `target`) the real daemon driven from outside.
#![allow(dead_code)]

pub mod clients;
pub mod target;
pub mod vhost_client;

use quorum_bdev::runtime::{Runtime, RuntimeOptions};

/// A runtime of `n` reactors in interrupt mode, unpinned, so tests share the machine.
pub fn runtime(n: usize) -> Runtime {
    Runtime::start(RuntimeOptions {
        cores: (0..n).map(|i| i % 2).collect(),
        interrupt_mode: true,
        pin_threads: false,
    })
    .expect("runtime starts")
}

/// Waits until `cond` holds, checking every few milliseconds; fails the test naming `what`
/// if it does not within [`target::PATIENCE`]. How tests wait for a state instead of sleeping
/// for a time they hope is enough.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + target::PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Deterministic, position-dependent bytes, so a misplaced block never matches.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

/// Unregisters a bdev and waits.
pub fn delete(rt: &Runtime, name: &str) -> Result<(), quorum_bdev::bdev::BdevError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    quorum_bdev::bdev::BdevRegistry::of(rt).unregister(rt, name, None, move |r| {
        let _ = tx.send(r);
    });
    rx.recv().unwrap()
}

/// What one I/O of [`submit_together`] ended with.
pub struct Delivery {
    /// Position in the submitted list.
    pub tag: u64,
    /// How it ended.
    pub status: Result<(), i32>,
    /// Its buffer's bytes when its completion was delivered: what a read read, what a zcopy
    /// lent (empty for a data-less type or a refused zcopy).
    pub data: Vec<u8>,
}

/// Sends each I/O's [`Delivery`] as its completion is delivered.
struct Recorder {
    tx: crossbeam_channel::Sender<Delivery>,
}

impl quorum_bdev::bdev::IoDone for Recorder {
    fn io_done(&self, io: quorum_bdev::bdev::IoHandle) {
        // SAFETY: the I/O completed and its memory is alive while its callback runs: the
        // submitter's buffers wait on the test thread for every completion, and lent memory
        // belongs to the bdev, registered until the test ends.
        let data = unsafe { io.buf.as_slice() }.to_vec();
        let _ = self.tx.send(Delivery {
            tag: io.tag,
            status: io.status(),
            data,
        });
    }
}

/// One I/O for [`submit_all`].
pub struct Op {
    /// Where it goes.
    pub bdev: std::sync::Arc<quorum_bdev::bdev::Bdev>,
    /// What it is.
    pub io_type: quorum_bdev::bdev::IoType,
    /// First block.
    pub offset_blocks: u64,
    /// Block count.
    pub num_blocks: u64,
    /// Its data: empty for a data-less type or a zcopy; a read's is its buffer's length.
    pub data: Vec<u8>,
}

/// Submits `ops` to the same blocks of `bdev` in one go on reactor 0, all in flight at once
/// (each with its data, empty for a data-less type or a zcopy; a read's is its buffer's
/// length), and waits for them. Returns their deliveries in the order they came.
pub fn submit_together(
    rt: &Runtime,
    bdev: &std::sync::Arc<quorum_bdev::bdev::Bdev>,
    offset_blocks: u64,
    num_blocks: u64,
    ops: Vec<(quorum_bdev::bdev::IoType, Vec<u8>)>,
) -> Vec<Delivery> {
    let ops = ops
        .into_iter()
        .map(|(io_type, data)| Op {
            bdev: bdev.clone(),
            io_type,
            offset_blocks,
            num_blocks,
            data,
        })
        .collect();
    submit_all(rt, ops)
}

/// Submits `ops` in order in one go on reactor 0, all in flight at once, and waits for them.
/// Returns their deliveries (tagged with their position) in the order they came.
pub fn submit_all(rt: &Runtime, ops: Vec<Op>) -> Vec<Delivery> {
    use quorum_bdev::bdev::{IoBuf, IoHandle};
    use quorum_bdev::runtime::buf::DmaBuf;
    let n = ops.len();
    let (tx, rx) = crossbeam_channel::unbounded();
    let (bufs_tx, bufs_rx) = crossbeam_channel::bounded(1);
    rt.send_msg(0, move || {
        let done: std::rc::Rc<dyn quorum_bdev::bdev::IoDone> = std::rc::Rc::new(Recorder { tx });
        let mut bufs: Vec<Option<DmaBuf>> = Vec::new();
        for (tag, op) in ops.into_iter().enumerate() {
            let mut buf = (!op.data.is_empty()).then(|| {
                let mut b = DmaBuf::new(op.data.len());
                b.as_mut_slice().copy_from_slice(&op.data);
                b
            });
            // SAFETY: the buffers go to the test thread, which keeps them until every
            // completion arrived.
            let view = buf
                .as_mut()
                .map_or(IoBuf::NONE, |b| unsafe { IoBuf::from_dma(b) });
            bufs.push(buf);
            let io = IoHandle::new(
                op.io_type,
                op.offset_blocks,
                op.num_blocks,
                view,
                done.clone(),
                tag as u64,
            );
            op.bdev.io_channel().unwrap().submit(io);
        }
        let _ = bufs_tx.send(bufs);
    });
    let bufs = bufs_rx.recv().unwrap();
    let delivered = (0..n).map(|_| rx.recv().unwrap()).collect();
    drop(bufs);
    delivered
}

/// `n` sparse files of `bytes` each outside tmpfs (so file children use O_DIRECT), in a
/// directory removed with the returned guard.
pub fn sparse_files(n: usize, bytes: u64) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let paths: Vec<std::path::PathBuf> = (0..n)
        .map(|i| dir.path().join(format!("{i}.raw")))
        .collect();
    for p in &paths {
        std::fs::File::create(p).unwrap().set_len(bytes).unwrap();
    }
    (dir, paths)
}

/// The events named `kind` (`QUORUM_REPORT_BAD`, `QUORUM_FAILURE`) in an answer of
/// `bdev_quorum_get_events`.
pub fn events_of<'a>(events: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    events
        .as_array()
        .expect("bdev_quorum_get_events answers a list")
        .iter()
        .filter(|e| e["event"] == kind)
        .collect()
}
