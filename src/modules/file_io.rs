//! The per-reactor channel of the file-backed modules, independent of the kernel interface:
//! it turns bdev I/O into file operations, queues what the kernel queue cannot take yet,
//! resubmits short transfers, falls back to writing zeroes when fallocate is refused, and
//! drives one poller per (bdev, reactor). An [`Engine`] (io_uring, Linux AIO) only moves
//! operations to and from the kernel, so both modules share every decision made here.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::file_common::{FallocMode, FileDisk};
use crate::bdev::{BdevChannel, BdevError, BdevIo, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::{register_poller, unregister_poller, PollerId, Runtime};

/// Largest transfer handed to the kernel in one operation; longer requests continue as
/// "short" transfers, which also keeps lengths within io_uring's 32-bit field.
const MAX_OP_BYTES: u64 = 1 << 30;
/// Size of the zero buffer used when the file system refuses fallocate.
const ZERO_CHUNK: usize = 256 << 10;
/// `driver_ctx[1]` marker: this unmap/write_zeroes is being served by writing zeroes.
const ZERO_FILL: u64 = 1;

/// One file operation for the kernel. Pointers stay valid until the operation completes: they
/// point into the I/O's buffer (owned by its submitter until completion) or the channel's
/// zero buffer (alive as long as the channel, which outlives its I/O).
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// pread into `buf`.
    Read {
        /// Destination.
        buf: *mut u8,
        /// Bytes.
        len: u32,
        /// File offset.
        offset: u64,
    },
    /// pwrite from `buf`; `dsync` makes it durable on completion (RWF_DSYNC, for FUA).
    Write {
        /// Source.
        buf: *const u8,
        /// Bytes.
        len: u32,
        /// File offset.
        offset: u64,
        /// Complete only once durable.
        dsync: bool,
    },
    /// fdatasync: makes completed writes durable.
    Fdatasync,
    /// fallocate(mode) over a byte range.
    Fallocate {
        /// Which operation.
        mode: FallocMode,
        /// Start.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// A kernel interface that runs [`Op`]s asynchronously and reports them by `user_data`.
pub trait Engine {
    /// Queues `op` for the next [`Engine::submit`]; the channel never queues more than the
    /// depth it was built with, so there is always room.
    fn push(&mut self, op: Op, user_data: u64);

    /// Hands queued operations to the kernel (one system call for the batch); returns how many
    /// left the queue, including any the engine finished on the spot.
    fn submit(&mut self) -> usize;

    /// Appends finished operations as `(user_data, result)` (bytes or negative errno), without
    /// exceeding `out`'s capacity.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>);
}

struct State<E> {
    engine: E,
    depth: usize,
    /// Operations pushed into the engine and not yet reaped.
    outstanding: usize,
    /// I/O waiting for room in the engine, FIFO; sized for the depth so that steady state
    /// never allocates.
    pending: VecDeque<IoHandle>,
    reaped: Vec<(u64, i32)>,
    zeroes: Option<DmaBuf>,
    /// Completions were reaped since the eventfd was last drained.
    wake_dirty: bool,
}

/// A file bdev's channel on one reactor: one kernel queue (ring or AIO context) and the poller
/// that submits and reaps it.
pub struct FileChannel<E: Engine> {
    disk: Arc<FileDisk>,
    state: RefCell<State<E>>,
    wake: Option<Rc<OwnedFd>>,
    /// This channel's descriptor of the file, which the engine uses; closed after the engine.
    _file: OwnedFd,
}

impl<E: Engine + 'static> FileChannel<E> {
    /// Builds the calling reactor's channel: `make_engine` gets the channel's descriptor of the
    /// file and the eventfd it must signal on completions (interrupt mode only; polling
    /// reactors need no wake-up and skip the syscalls); a poller is registered with that fd as
    /// its wake-up.
    pub fn new(
        disk: Arc<FileDisk>,
        depth: usize,
        make_engine: impl FnOnce(RawFd, Option<RawFd>) -> std::io::Result<E>,
    ) -> Result<Rc<Self>, BdevError> {
        let file = disk.dup().map_err(|source| BdevError::Os {
            context: format!("duplicating the descriptor of {}", disk.filename),
            source,
        })?;
        let interrupt = Runtime::current().is_none_or(|rt| rt.interrupt_mode());
        let wake = if interrupt {
            // SAFETY: plain syscall; the new fd is owned by the OwnedFd at once.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(BdevError::Os {
                    context: "creating an eventfd".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: fd is a fresh descriptor nobody else owns.
            Some(Rc::new(unsafe { OwnedFd::from_raw_fd(fd) }))
        } else {
            None
        };
        let engine = make_engine(file.as_raw_fd(), wake.as_ref().map(|w| w.as_raw_fd())).map_err(
            |source| BdevError::Os {
                context: format!("setting up the I/O queue for {}", disk.filename),
                source,
            },
        )?;
        let channel = Rc::new(FileChannel {
            disk,
            state: RefCell::new(State {
                engine,
                depth,
                outstanding: 0,
                pending: VecDeque::with_capacity(depth),
                reaped: Vec::with_capacity(depth),
                zeroes: None,
                wake_dirty: false,
            }),
            wake: wake.clone(),
            _file: file,
        });
        let weak: Weak<Self> = Rc::downgrade(&channel);
        // The channel is owned by the bdev layer; when it is dropped the poller finds the weak
        // reference dead and unregisters itself (a Drop impl could not: it may run while the
        // reactor shuts down). The poller holds the eventfd, so the fd the reactor sleeps on
        // stays open exactly as long as the poller.
        let own_id: Rc<Cell<Option<PollerId>>> = Rc::new(Cell::new(None));
        let own_id2 = own_id.clone();
        let wake_fd = wake.as_ref().map(|w| w.as_raw_fd());
        let id = register_poller(
            Box::new(move || {
                let _keep_fd_open = &wake;
                match weak.upgrade() {
                    Some(ch) => ch.poll(),
                    None => {
                        if let Some(id) = own_id2.get() {
                            unregister_poller(id);
                        }
                        0
                    }
                }
            }),
            None,
            wake_fd,
        );
        own_id.set(Some(id));
        Ok(channel)
    }

    /// One poller pass: reap, refill from the pending queue, then submit everything queued
    /// since the last pass in one system call. It runs on every reactor iteration, so I/O
    /// queued by anything on this reactor reaches the kernel before the reactor can sleep.
    fn poll(&self) -> usize {
        let mut st = self.state.borrow_mut();
        let mut work = 0;
        if st.outstanding > 0 || st.wake_dirty {
            if let Some(wake) = &self.wake {
                drain_eventfd(wake.as_raw_fd());
                st.wake_dirty = false;
            }
        }
        if st.outstanding > 0 {
            let mut reaped = std::mem::take(&mut st.reaped);
            st.engine.reap(&mut reaped);
            work += reaped.len();
            st.wake_dirty |= !reaped.is_empty();
            for (user_data, res) in reaped.drain(..) {
                st.outstanding -= 1;
                // SAFETY: every user_data the engine reports came from into_raw in push_op and
                // is reported once.
                let io = unsafe { IoHandle::from_raw(user_data as *mut BdevIo) };
                self.finished(&mut st, io, res);
            }
            st.reaped = reaped;
        }
        while st.outstanding < st.depth {
            let Some(io) = st.pending.pop_front() else {
                break;
            };
            self.push_op(&mut st, io);
        }
        work + st.engine.submit()
    }

    /// Queues `io` behind earlier waiting I/O, or gives it to the engine if there is room.
    fn dispatch(&self, st: &mut State<E>, io: IoHandle) {
        if !st.pending.is_empty() || st.outstanding >= st.depth {
            st.pending.push_back(io);
        } else {
            self.push_op(st, io);
        }
    }

    /// The next operation for `io` given its progress (`driver_ctx[0]` bytes done).
    fn push_op(&self, st: &mut State<E>, io: IoHandle) {
        let block_size = self.disk.block_size as u64;
        let base = io.offset_blocks * block_size;
        let total = io.num_blocks * block_size;
        let done = io.driver_ctx[0];
        let chunk = |limit: u64| (total - done).min(limit) as u32;
        let op = match io.io_type {
            IoType::Read => Op::Read {
                // SAFETY: done < total = the buffer's length, checked by the bdev layer.
                buf: unsafe { io.buf.as_ptr().add(done as usize) },
                len: chunk(MAX_OP_BYTES),
                offset: base + done,
            },
            IoType::Write => Op::Write {
                // SAFETY: as above.
                buf: unsafe { io.buf.as_ptr().add(done as usize) },
                len: chunk(MAX_OP_BYTES),
                offset: base + done,
                dsync: io.fua,
            },
            IoType::Unmap | IoType::WriteZeroes if io.driver_ctx[1] == ZERO_FILL => {
                let zeroes = st.zeroes.get_or_insert_with(|| {
                    let len = (ZERO_CHUNK / block_size as usize).max(1) * block_size as usize;
                    DmaBuf::zeroed(len)
                });
                Op::Write {
                    buf: zeroes.as_mut_ptr(),
                    len: chunk(zeroes.len() as u64),
                    offset: base + done,
                    dsync: false,
                }
            }
            IoType::Unmap | IoType::WriteZeroes => Op::Fallocate {
                mode: falloc_mode(io.io_type),
                offset: base,
                len: total,
            },
            IoType::Flush | IoType::Reset => Op::Fdatasync,
            IoType::Zcopy => unreachable!("zcopy is refused in submit"),
        };
        st.engine.push(op, io.into_raw() as u64);
        st.outstanding += 1;
    }

    /// Handles one finished operation: completes the I/O, or continues it (short transfer,
    /// EAGAIN, fallocate refused).
    fn finished(&self, st: &mut State<E>, mut io: IoHandle, res: i32) {
        let zero_fill = io.driver_ctx[1] == ZERO_FILL;
        let moves_data = io.io_type.has_data() || zero_fill;
        if res < 0 {
            let errno = -res;
            if errno == libc::EAGAIN {
                return self.dispatch(st, io);
            }
            if errno == libc::EOPNOTSUPP && !moves_data && io.io_type != IoType::Flush {
                self.disk.refuse(falloc_mode(io.io_type));
                io.driver_ctx[1] = ZERO_FILL;
                return self.dispatch(st, io);
            }
            return io.complete(Err(errno));
        }
        if !moves_data {
            return io.complete(Ok(()));
        }
        if res == 0 {
            // End of file inside the bdev: the file shrank under us.
            return io.complete(Err(libc::EIO));
        }
        io.driver_ctx[0] += res as u64;
        if io.driver_ctx[0] < io.num_blocks * self.disk.block_size as u64 {
            self.dispatch(st, io);
        } else {
            io.complete(Ok(()));
        }
    }
}

fn falloc_mode(io_type: IoType) -> FallocMode {
    if io_type == IoType::Unmap {
        FallocMode::PunchHole
    } else {
        FallocMode::ZeroRange
    }
}

fn drain_eventfd(fd: RawFd) {
    let mut value = 0u64;
    // SAFETY: reading 8 bytes into a u64 from our own non-blocking eventfd.
    unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
}

impl<E: Engine + 'static> BdevChannel for FileChannel<E> {
    fn submit(&self, mut io: IoHandle) {
        let disk = &self.disk;
        match io.io_type {
            // Nothing to abort: the kernel owns what is in flight and finishes it.
            IoType::Reset => return io.complete(Ok(())),
            // A file's blocks live in the kernel, there is no memory of ours to lend (the
            // backends do not claim the type; this keeps `push_op` total).
            IoType::Zcopy => return io.complete(Err(libc::ENOTSUP)),
            IoType::Write | IoType::Unmap | IoType::WriteZeroes if disk.readonly => {
                return io.complete(Err(libc::EROFS))
            }
            // O_DIRECT refuses unaligned memory; say so before the kernel does, per request.
            IoType::Read | IoType::Write
                if !(io.buf.as_ptr() as usize).is_multiple_of(disk.mem_align) =>
            {
                return io.complete(Err(libc::EINVAL))
            }
            IoType::Unmap | IoType::WriteZeroes if disk.refused(falloc_mode(io.io_type)) => {
                io.driver_ctx[1] = ZERO_FILL;
            }
            _ => {}
        }
        let mut st = self.state.borrow_mut();
        self.dispatch(&mut st, io);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
