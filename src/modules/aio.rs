//! The aio bdev (SPDK's bdev_aio): a regular file or block device served through Linux native
//! AIO — `io_setup`/`io_submit`/`io_getevents` called directly as system calls (no libaio),
//! one AIO context per (bdev, reactor). Reads and writes are `IOCB_CMD_PREAD`/`PWRITE`
//! (FUA as `RWF_DSYNC`), flush is `IOCB_CMD_FDSYNC`; in interrupt mode every iocb carries
//! `IOCB_FLAG_RESFD` so the kernel signals the reactor's eventfd on completion. Requests are
//! batched into one `io_submit` per reactor pass; completions are taken straight from the
//! context's completion ring, which the kernel maps into the process, without a system call
//! (SPDK's `bdev_user_io_getevents`), or with a non-blocking `io_getevents` on a kernel whose
//! ring layout is not the known one.
//!
//! As in SPDK: `readonly` opens the file O_RDONLY and writes fail (EROFS here); unmap and
//! write_zeroes exist only with `fallocate`, and are then a synchronous fallocate(2) on the
//! reactor (AIO has no fallocate command), falling back to written zeroes when the file system
//! refuses. The queueing, short-transfer and O_DIRECT rules are those of the uring bdev
//! (`file_io`).

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use super::file_common::{self, FileDisk};
use super::file_io::{Engine, FileChannel, Op};
use crate::bdev::{Bdev, BdevBackend, BdevChannel, BdevError, IoType};
use crate::runtime::Runtime;

/// SPDK's product name for aio bdevs.
pub const PRODUCT_NAME: &str = "AIO disk";

/// Operations per AIO context (SPDK's SPDK_AIO_QUEUE_DEPTH); counts against fs.aio-max-nr.
const QUEUE_DEPTH: usize = 128;

/// `linux/aio_abi.h` commands and flags.
const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_FDSYNC: u16 = 3;
const IOCB_FLAG_RESFD: u32 = 1;

/// The header of the completion ring an AIO context id points at (`struct aio_ring` of
/// `fs/aio.c`); the events follow it at `header_length`.
#[repr(C)]
struct AioRing {
    id: u32,
    size: u32,
    head: u32,
    tail: u32,
    magic: u32,
    compat_features: u32,
    incompat_features: u32,
    header_length: u32,
}

/// `AIO_RING_MAGIC`: the ring layout above.
const AIO_RING_MAGIC: u32 = 0xa10a10a1;

/// `struct io_event` of `linux/aio_abi.h`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// Options of `bdev_aio_create` beyond name and file.
#[derive(Debug, Clone, Default)]
pub struct AioOptions {
    /// Block size; None or 0: auto-detect (the device's logical block size, 512 for files).
    pub block_size: Option<u32>,
    /// Open O_RDONLY; writes, unmaps and write_zeroes fail.
    pub readonly: bool,
    /// Serve unmap and write_zeroes with fallocate(2) (SPDK's opt-in).
    pub fallocate: bool,
    /// Identity; random when None.
    pub uuid: Option<Uuid>,
}

/// One reactor's AIO context for one file.
struct AioEngine {
    ctx: libc::c_ulong,
    fd: RawFd,
    wake: Option<RawFd>,
    /// iocbs waiting for the next io_submit; the kernel copies them during the call.
    batch: Vec<libc::iocb>,
    ptrs: Vec<*mut libc::iocb>,
    /// Operations finished without the kernel queue (fallocate, refused submissions).
    ready: Vec<(u64, i32)>,
    events: Box<[IoEvent]>,
    in_kernel: usize,
    /// Where durable (`RWF_DSYNC`) submissions are counted.
    disk: Arc<FileDisk>,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl AioEngine {
    fn new(fd: RawFd, wake: Option<RawFd>, disk: Arc<FileDisk>) -> std::io::Result<AioEngine> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context id into `ctx`.
        if unsafe { libc::syscall(libc::SYS_io_setup, QUEUE_DEPTH as libc::c_long, &mut ctx) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(AioEngine {
            ctx,
            fd,
            wake,
            batch: Vec::with_capacity(QUEUE_DEPTH),
            ptrs: Vec::with_capacity(QUEUE_DEPTH),
            ready: Vec::with_capacity(QUEUE_DEPTH),
            events: vec![IoEvent::default(); QUEUE_DEPTH].into_boxed_slice(),
            in_kernel: 0,
            disk,
        })
    }

    fn iocb(&self, opcode: u16, buf: *const u8, len: u32, offset: u64) -> libc::iocb {
        // SAFETY: iocb is plain data; all-zero is its documented initial state.
        let mut cb: libc::iocb = unsafe { std::mem::zeroed() };
        cb.aio_lio_opcode = opcode;
        cb.aio_fildes = self.fd as u32;
        cb.aio_buf = buf as u64;
        cb.aio_nbytes = len as u64;
        cb.aio_offset = offset as i64;
        if let Some(wake) = self.wake {
            cb.aio_flags = IOCB_FLAG_RESFD;
            cb.aio_resfd = wake as u32;
        }
        cb
    }
}

impl Engine for AioEngine {
    fn push(&mut self, op: Op, user_data: u64) {
        let mut cb = match op {
            Op::Read { buf, len, offset } => self.iocb(IOCB_CMD_PREAD, buf, len, offset),
            Op::Write {
                buf,
                len,
                offset,
                dsync,
            } => {
                let mut cb = self.iocb(IOCB_CMD_PWRITE, buf, len, offset);
                if dsync {
                    cb.aio_rw_flags = libc::RWF_DSYNC;
                }
                cb
            }
            Op::Fdatasync => self.iocb(IOCB_CMD_FDSYNC, std::ptr::null(), 0, 0),
            Op::Fallocate { mode, offset, len } => {
                // SAFETY: fallocate on our own descriptor; no memory is passed.
                let rc =
                    unsafe { libc::fallocate(self.fd, mode.flags(), offset as i64, len as i64) };
                self.ready
                    .push((user_data, if rc == 0 { 0 } else { -errno() }));
                return;
            }
        };
        cb.aio_data = user_data;
        self.batch.push(cb);
    }

    fn submit(&mut self) -> usize {
        let mut submitted = 0;
        while !self.batch.is_empty() {
            self.ptrs.clear();
            self.ptrs
                .extend(self.batch.iter_mut().map(|cb| cb as *mut libc::iocb));
            // SAFETY: ptrs points at initialised iocbs that live through the call; the kernel
            // copies them before returning.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    self.ctx,
                    self.ptrs.len() as libc::c_long,
                    self.ptrs.as_mut_ptr(),
                )
            };
            if rc > 0 {
                let n = rc as usize;
                let dsync = self.batch[..n]
                    .iter()
                    .filter(|cb| cb.aio_rw_flags & libc::RWF_DSYNC != 0)
                    .count();
                self.disk.count_dsync_writes(dsync);
                self.batch.drain(..n);
                self.in_kernel += n;
                submitted += n;
                continue;
            }
            let err = if rc < 0 { errno() } else { libc::EAGAIN };
            if matches!(err, libc::EAGAIN | libc::EINTR) {
                break; // Kernel queue busy: the rest goes in the next pass.
            }
            // The first iocb was refused (EINVAL for a command the file cannot do...).
            let refused = self.batch.remove(0);
            self.ready.push((refused.aio_data, -err));
        }
        submitted + self.ready.len()
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let room = out.capacity() - out.len();
        let now = self.ready.len().min(room);
        out.extend(self.ready.drain(..now));
        let room = room - now;
        if room == 0 || self.in_kernel == 0 {
            return;
        }
        if let Some(n) = self.reap_ring(room, out) {
            self.in_kernel -= n;
            return;
        }
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: events has room for `room` entries; a zero timeout never blocks.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.ctx,
                0 as libc::c_long,
                room.min(self.events.len()) as libc::c_long,
                self.events.as_mut_ptr(),
                &zero,
            )
        };
        if n <= 0 {
            return;
        }
        let n = n as usize;
        self.in_kernel -= n;
        out.extend(self.events[..n].iter().map(|e| (e.data, e.res as i32)));
    }
}

impl AioEngine {
    /// Takes up to `max` completions from the context's ring in user memory, as libaio and
    /// SPDK do: a system call per child per reactor pass was a fifth of the target's system
    /// calls under an NBD write load. None when the ring is not in the layout we know (the
    /// caller then asks the kernel).
    fn reap_ring(&mut self, max: usize, out: &mut Vec<(u64, i32)>) -> Option<usize> {
        let ring = self.ctx as *mut AioRing;
        // SAFETY: an AIO context id is the address of its ring, mapped read-write into this
        // process by io_setup until io_destroy (in Drop). The kernel writes `tail` and the
        // events and reads `head`; we write only `head`, after copying the events out, with
        // the fences SPDK uses between the two sides.
        // The header is only ever accessed through raw places: the kernel changes it under us,
        // so no Rust reference to it may exist.
        unsafe {
            use std::ptr::{addr_of, addr_of_mut};
            if addr_of!((*ring).magic).read_volatile() != AIO_RING_MAGIC
                || addr_of!((*ring).incompat_features).read_volatile() != 0
            {
                return None;
            }
            let size = addr_of!((*ring).size).read_volatile();
            let head = addr_of!((*ring).head).read_volatile();
            let tail = addr_of!((*ring).tail).read_volatile();
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            if size == 0 || head >= size || tail >= size {
                return None;
            }
            let available = if tail >= head {
                tail - head
            } else {
                tail + size - head
            };
            let count = (available as usize).min(max);
            let header_length = addr_of!((*ring).header_length).read_volatile() as usize;
            let events = (ring as *const u8).add(header_length) as *const IoEvent;
            for k in 0..count {
                let e = std::ptr::read_volatile(events.add((head as usize + k) % size as usize));
                out.push((e.data, e.res as i32));
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            addr_of_mut!((*ring).head)
                .write_volatile(((head as usize + count) % size as usize) as u32);
            Some(count)
        }
    }
}

impl Drop for AioEngine {
    fn drop(&mut self) {
        // SAFETY: destroys the context created in new; waits for anything still in flight.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}

/// One aio bdev: the shared open file and its options.
pub struct AioBdev {
    disk: Arc<FileDisk>,
    fallocate: bool,
}

impl BdevBackend for AioBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    /// SPDK's set: read, write, flush, reset; unmap and write_zeroes only with `fallocate`.
    fn io_type_supported(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Unmap | IoType::WriteZeroes => self.fallocate,
            IoType::Zcopy => false,
            _ => true,
        }
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        let disk = self.disk.clone();
        Ok(FileChannel::new(
            self.disk.clone(),
            QUEUE_DEPTH,
            move |fd, wake| AioEngine::new(fd, wake, disk),
        )?)
    }

    /// SPDK's `{"aio": {filename, block_size_override, readonly, fallocate}}`, plus whether
    /// O_DIRECT is engaged.
    fn driver_specific(&self) -> Value {
        let mut info = self.disk.info();
        info.insert(
            "block_size_override".into(),
            self.disk.block_size_override.into(),
        );
        info.insert("readonly".into(), self.disk.readonly.into());
        info.insert("fallocate".into(), self.fallocate.into());
        json!({ "aio": info })
    }

    /// As SPDK: block_size only when the user chose it, so auto-detection runs again.
    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        let mut params = json!({
            "name": bdev.name(),
            "filename": self.disk.filename,
            "readonly": self.disk.readonly,
            "fallocate": self.fallocate,
            "uuid": bdev.uuid().to_string(),
        });
        if self.disk.block_size_override {
            params["block_size"] = bdev.block_size().into();
        }
        Some(("bdev_aio_create", params))
    }

    fn destruct(&self) {
        self.disk.close();
    }
}

/// Creates and registers an aio bdev over `filename` (`bdev_aio_create`).
pub fn create(
    rt: &Runtime,
    name: &str,
    filename: &str,
    opts: AioOptions,
) -> Result<Arc<Bdev>, BdevError> {
    file_common::check_name_free(rt, name)?;
    let disk = file_common::open(filename, opts.block_size, opts.readonly)?;
    file_common::register(rt, name, opts.uuid, disk, |disk| {
        Box::new(AioBdev {
            disk,
            fallocate: opts.fallocate,
        })
    })
}
