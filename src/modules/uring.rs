//! The uring bdev (SPDK's bdev_uring): a regular file or block device served through io_uring,
//! one ring per (bdev, reactor). Requests become SQEs as they arrive and the channel's poller
//! submits them in one `io_uring_enter` per reactor pass, then reaps completions from the
//! shared CQ ring without a system call. In interrupt mode an eventfd registered with the ring
//! wakes the reactor when completions arrive.
//!
//! Beyond SPDK, which serves only read and write here, flush (fdatasync), unmap
//! (fallocate PUNCH_HOLE), write_zeroes (fallocate ZERO_RANGE, or written zeroes when the file
//! system refuses) and reset (nothing to abort: succeeds) are served too, so a quorum over
//! files supports every operation. O_DIRECT is used when the file system allows it; then a
//! request whose buffer is not aligned to the device's direct-I/O alignment fails with EINVAL
//! (the pooled `DmaBuf`s always are).

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use io_uring::{opcode, types, IoUring};
use serde_json::{json, Value};
use uuid::Uuid;

use super::file_common::{self, FileDisk};
use super::file_io::{Engine, FileChannel, Op};
use crate::bdev::{Bdev, BdevBackend, BdevChannel, BdevError, IoType};
use crate::runtime::Runtime;

/// SPDK's product name for uring bdevs.
pub const PRODUCT_NAME: &str = "URING bdev";

/// Ring entries per channel (SPDK's SPDK_URING_QUEUE_DEPTH); the completion ring has twice as
/// many, and the channel never has more operations outstanding, so completions cannot overflow.
const QUEUE_DEPTH: u32 = 512;

/// One reactor's ring for one file.
struct UringEngine {
    ring: IoUring,
    fd: types::Fd,
    /// Where durable (`RWF_DSYNC`) submissions are counted.
    disk: Arc<FileDisk>,
}

impl UringEngine {
    fn new(fd: RawFd, wake: Option<RawFd>, disk: Arc<FileDisk>) -> std::io::Result<UringEngine> {
        let ring = IoUring::new(QUEUE_DEPTH)?;
        if let Some(wake) = wake {
            ring.submitter().register_eventfd(wake)?;
        }
        Ok(UringEngine {
            ring,
            fd: types::Fd(fd),
            disk,
        })
    }
}

impl Engine for UringEngine {
    fn push(&mut self, op: Op, user_data: u64) {
        let fd = self.fd;
        let entry = match op {
            Op::Read { buf, len, offset } => opcode::Read::new(fd, buf, len).offset(offset).build(),
            Op::Write {
                buf,
                len,
                offset,
                dsync,
            } => {
                let rw_flags = if dsync { libc::RWF_DSYNC } else { 0 };
                self.disk
                    .count_dsync_writes((rw_flags & libc::RWF_DSYNC != 0) as usize);
                opcode::Write::new(fd, buf, len)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            }
            Op::Fdatasync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Fallocate { mode, offset, len } => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(mode.flags())
                .build(),
        }
        .user_data(user_data);
        // SAFETY: the memory an Op points to outlives the operation (see `Op`).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        // Outstanding operations never exceed the SQ size, and an SQE is outstanding from push
        // until its completion is reaped, so the queue always has room.
        pushed.expect("uring channel exceeded its ring depth");
    }

    fn submit(&mut self) -> usize {
        if self.ring.submission().is_empty() {
            return 0;
        }
        match self.ring.submitter().submit() {
            Ok(n) => n,
            // Transient: the SQEs stay queued and the next pass submits them.
            Err(e) => {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                ) {
                    tracing::warn!(error = %e, "io_uring_enter failed; retrying");
                }
                0
            }
        }
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        let room = out.capacity() - out.len();
        for cqe in self.ring.completion().take(room) {
            out.push((cqe.user_data(), cqe.result()));
        }
    }
}

/// One uring bdev: the shared open file.
pub struct UringBdev {
    disk: Arc<FileDisk>,
}

impl BdevBackend for UringBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    /// Everything but zcopy: the file's blocks live in the kernel, not in memory to lend.
    fn io_type_supported(&self, io_type: IoType) -> bool {
        io_type != IoType::Zcopy
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        let disk = self.disk.clone();
        Ok(FileChannel::new(
            self.disk.clone(),
            QUEUE_DEPTH as usize,
            move |fd, wake| UringEngine::new(fd, wake, disk),
        )?)
    }

    /// SPDK's `{"uring": {"filename"}}`, plus whether O_DIRECT is engaged.
    fn driver_specific(&self) -> Value {
        json!({ "uring": self.disk.info() })
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        Some((
            "bdev_uring_create",
            json!({
                "name": bdev.name(),
                "block_size": bdev.block_size(),
                "filename": self.disk.filename,
                "uuid": bdev.uuid().to_string(),
            }),
        ))
    }

    fn destruct(&self) {
        self.disk.close();
    }
}

/// Creates and registers a uring bdev over `filename` (`bdev_uring_create`); `block_size`
/// None: the device's logical block size, or 512 for a regular file.
pub fn create(
    rt: &Runtime,
    name: &str,
    filename: &str,
    block_size: Option<u32>,
) -> Result<Arc<Bdev>, BdevError> {
    create_with_uuid(rt, name, filename, block_size, None)
}

/// [`create`] with a chosen identity, as newer SPDK accepts and `save_config` replays.
pub fn create_with_uuid(
    rt: &Runtime,
    name: &str,
    filename: &str,
    block_size: Option<u32>,
    uuid: Option<Uuid>,
) -> Result<Arc<Bdev>, BdevError> {
    file_common::check_name_free(rt, name)?;
    let disk = file_common::open(filename, block_size, false)?;
    file_common::register(rt, name, uuid, disk, |disk| Box::new(UringBdev { disk }))
}
