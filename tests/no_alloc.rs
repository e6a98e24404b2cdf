//! The data path allocates nothing once warm: a counting global allocator watches the
//! reactor thread while quorum reads (which vote over pooled buffers) and writes run.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use common::runtime;
use quorum_bdev::bdev::{IoBuf, IoChannel, IoDone, IoHandle, IoType};
use quorum_bdev::modules::malloc;
use quorum_bdev::modules::quorum::{self, QuorumOptions, ReadPattern};
use quorum_bdev::runtime::buf::DmaBuf;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const QD: usize = 32;
const WARMUP: u64 = 20_000;
const MEASURED: u64 = 100_000;

/// Keeps QD I/Os in flight, alternating writes and reads per slot, and records the reactor
/// thread's allocation count when the measured window opens and closes.
struct Driver {
    me: Weak<Driver>,
    channel: IoChannel,
    buffers: RefCell<Vec<DmaBuf>>,
    completed: Cell<u64>,
    window_start: Cell<u64>,
    failures: Cell<u64>,
    done: crossbeam_channel::Sender<(u64, u64)>,
}

impl Driver {
    fn submit(&self, slot: usize, io_type: IoType) {
        // SAFETY: the buffers live in the driver, which outlives every I/O it submits.
        let buf = unsafe { IoBuf::from_dma(&mut self.buffers.borrow_mut()[slot]) };
        let offset = (slot as u64 * 8) % 2048;
        let tag = (slot as u64) << 1 | (io_type == IoType::Read) as u64;
        let me: Rc<Driver> = self.me.upgrade().unwrap();
        self.channel
            .submit(IoHandle::new(io_type, offset, 8, buf, me, tag));
    }
}

impl IoDone for Driver {
    fn io_done(&self, io: IoHandle) {
        if io.status().is_err() {
            self.failures.set(self.failures.get() + 1);
        }
        let slot = (io.tag >> 1) as usize;
        let was_read = io.tag & 1 == 1;
        drop(io);
        let n = self.completed.get() + 1;
        self.completed.set(n);
        let allocations = ALLOCATIONS.with(Cell::get);
        if n == WARMUP {
            self.window_start.set(allocations);
        }
        if n == WARMUP + MEASURED {
            let _ = self
                .done
                .send((allocations - self.window_start.get(), self.failures.get()));
        } else if n < WARMUP + MEASURED {
            self.submit(
                slot,
                if was_read {
                    IoType::Write
                } else {
                    IoType::Read
                },
            );
        }
    }
}

#[test]
fn quorum_reads_and_writes_do_not_allocate_once_warm() {
    let rt = runtime(1);
    let names: Vec<String> = (0..3)
        .map(|i| {
            malloc::create(&rt, Some(format!("M{i}")), 4096, 512, None)
                .unwrap()
                .name()
                .to_string()
        })
        .collect();
    let opts = QuorumOptions {
        vote_threshold: 2,
        read_pattern: ReadPattern::Quorum,
        blkverify: false,
        rewrite_corrupted: true,
    };
    let q = quorum::create(&rt, "Q", &names, opts, None).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    rt.send_msg(0, move || {
        let driver = Rc::new_cyclic(|me| Driver {
            me: me.clone(),
            channel: q.io_channel().unwrap(),
            buffers: RefCell::new((0..QD).map(|_| DmaBuf::zeroed(4096)).collect()),
            completed: Cell::new(0),
            window_start: Cell::new(0),
            failures: Cell::new(0),
            done: tx,
        });
        for slot in 0..QD {
            driver.submit(slot, IoType::Write);
        }
    });
    let (allocations, failures) = rx.recv().unwrap();
    assert_eq!(failures, 0);
    assert_eq!(
        allocations, 0,
        "allocations on the reactor during {MEASURED} quorum I/Os"
    );
    rt.stop();
}
