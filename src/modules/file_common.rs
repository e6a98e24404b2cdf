//! What the file-backed modules (uring, aio) share before any I/O is issued: opening the file
//! or block device with O_DIRECT when the file system allows it, and working out its geometry
//! the way SPDK's `create_uring_bdev` / `create_aio_bdev` do, so both modules accept and refuse
//! exactly the same files.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::bdev::{Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec};
use crate::runtime::buf::BUF_ALIGN;
use crate::runtime::Runtime;

/// Block size of a regular file when none is given. SPDK refuses to guess for files (its
/// auto-detection only knows block devices); 512 keeps every O_DIRECT-capable file system
/// usable and lets the caller pick 4096 when it wants that geometry.
pub const DEFAULT_FILE_BLOCK_SIZE: u32 = 512;

/// An open backing file or block device with its bdev geometry. The `File` is closed by
/// [`FileDisk::close`] when the bdev is destructed, even while someone still holds the
/// `Arc<Bdev>`, so deleting a bdev really releases the file; each channel works on its own
/// duplicate of the descriptor ([`FileDisk::dup`]), so a channel that outlives the bdev can never
/// write through a descriptor number the process has since reused.
pub struct FileDisk {
    /// The path as given, reported in `driver_specific` and `save_config`.
    pub filename: String,
    file: Mutex<Option<File>>,
    /// Whether the page cache is bypassed (O_DIRECT engaged).
    pub direct: bool,
    /// Opened O_RDONLY (aio's `readonly`).
    pub readonly: bool,
    /// Whether the user chose the block size (SPDK's `block_size_override`).
    pub block_size_override: bool,
    /// Bytes per bdev block.
    pub block_size: u32,
    /// Bdev size in blocks (the file size rounded down to whole blocks).
    pub num_blocks: u64,
    /// Alignment O_DIRECT demands of buffer addresses; 1 when buffered.
    pub mem_align: usize,
    punch_refused: AtomicBool,
    zero_range_refused: AtomicBool,
    /// Writes handed to the kernel with `RWF_DSYNC` (FUA), counted from the flags in the
    /// kernel's own submission structure: what shows that FUA reached the kernel.
    dsync_writes: AtomicU64,
}

/// The fallocate modes the modules use for unmap and write_zeroes; a file system that refuses
/// one is remembered, so later requests go straight to writing zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallocMode {
    /// `PUNCH_HOLE | KEEP_SIZE`: unmap, reads back zeroes afterwards.
    PunchHole,
    /// `ZERO_RANGE | KEEP_SIZE`: write_zeroes without moving data.
    ZeroRange,
}

impl FallocMode {
    /// The `mode` argument of fallocate(2).
    pub fn flags(self) -> i32 {
        match self {
            FallocMode::PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            FallocMode::ZeroRange => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        }
    }
}

impl FileDisk {
    /// Whether the file system already refused `mode`.
    pub fn refused(&self, mode: FallocMode) -> bool {
        self.refusal(mode).load(Ordering::Relaxed)
    }

    /// Records that the file system refused `mode`; logs the fallback once per bdev.
    pub fn refuse(&self, mode: FallocMode) {
        if !self.refusal(mode).swap(true, Ordering::Relaxed) {
            tracing::info!(
                filename = self.filename,
                ?mode,
                "file system refuses fallocate mode; writing zeroes instead"
            );
        }
    }

    fn refusal(&self, mode: FallocMode) -> &AtomicBool {
        match mode {
            FallocMode::PunchHole => &self.punch_refused,
            FallocMode::ZeroRange => &self.zero_range_refused,
        }
    }

    /// Counts `n` writes the kernel took with `RWF_DSYNC` in their flags.
    pub fn count_dsync_writes(&self, n: usize) {
        if n > 0 {
            self.dsync_writes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// `filename`, the O_DIRECT choice and the durable writes submitted, the part of
    /// `driver_specific` both modules report.
    pub fn info(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("filename".into(), self.filename.clone().into());
        map.insert("o_direct".into(), self.direct.into());
        map.insert(
            "dsync_writes".into(),
            self.dsync_writes.load(Ordering::Relaxed).into(),
        );
        map
    }

    /// A descriptor of the file for one channel, closed when the channel is dropped.
    pub fn dup(&self) -> std::io::Result<OwnedFd> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match file.as_ref() {
            Some(f) => Ok(f.as_fd().try_clone_to_owned()?),
            None => Err(std::io::Error::from_raw_os_error(libc::ENODEV)),
        }
    }

    /// Closes the file once the bdev is gone; later calls do nothing.
    pub fn close(&self) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner()).take();
        if file.is_some() {
            tracing::info!(filename = self.filename, "backing file closed");
        }
    }
}

/// Refuses a name already registered, before the file is even opened, so the error is the
/// one the user can act on.
pub fn check_name_free(rt: &Runtime, name: &str) -> Result<(), BdevError> {
    if name.is_empty() {
        return Err(BdevError::Invalid("bdev name must not be empty".into()));
    }
    match BdevRegistry::of(rt).get(name) {
        Ok(_) => Err(BdevError::Exists(name.to_string())),
        Err(_) => Ok(()),
    }
}

/// Opens `filename` for a bdev: O_DIRECT first, buffered when the file system refuses it
/// (tmpfs) or cannot do direct I/O at this block size; the choice is logged. `block_size`
/// None or 0 means auto-detect (the device's logical block size, or 512 for a file), as in
/// SPDK, which also refuses sizes below the device's logical block size or not a power of two.
pub fn open(
    filename: &str,
    block_size: Option<u32>,
    readonly: bool,
) -> Result<FileDisk, BdevError> {
    let requested = block_size.filter(|&b| b != 0);
    if let Some(b) = requested {
        if b < 512 || !b.is_power_of_two() {
            return Err(BdevError::Invalid(format!(
                "invalid block_size {b}: must be a power of two, at least 512"
            )));
        }
    }
    let os_err = |what: &str, source: std::io::Error| BdevError::Os {
        context: format!("{what} {filename}"),
        source,
    };
    let (file, mut direct) = open_file(filename, readonly).map_err(|e| os_err("cannot open", e))?;
    if direct && on_tmpfs(file.as_raw_fd()) {
        // tmpfs is the page cache itself: O_DIRECT saves no copy there, and io_uring hands
        // every O_DIRECT request on it to a kernel worker thread (measured over NBD, quorum
        // of 3 on /dev/shm: 35 K randread IOPS with O_DIRECT, 54 K buffered).
        clear_direct(file.as_raw_fd()).map_err(|e| os_err("cannot clear O_DIRECT on", e))?;
        direct = false;
    }
    let meta = file.metadata().map_err(|e| os_err("cannot stat", e))?;
    let is_blkdev = meta.file_type().is_block_device();
    if !is_blkdev && !meta.is_file() {
        return Err(BdevError::Invalid(format!(
            "{filename} is neither a regular file nor a block device"
        )));
    }
    let fd = file.as_raw_fd();
    let (size, logical) = if is_blkdev {
        let size = device_size(fd).map_err(|e| os_err("cannot size", e))?;
        let logical =
            logical_block_size(fd).map_err(|e| os_err("cannot query block size of", e))?;
        (size, logical)
    } else {
        (meta.len(), DEFAULT_FILE_BLOCK_SIZE)
    };
    let chosen = match requested {
        Some(b) if is_blkdev && b < logical => {
            return Err(BdevError::Invalid(format!(
                "block_size {b} is smaller than the logical block size {logical} of {filename}"
            )))
        }
        Some(b) => b,
        None => logical,
    };
    let num_blocks = size / chosen as u64;
    if num_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "{filename} holds {size} bytes, less than one block of {chosen}: nothing to serve"
        )));
    }
    if size % chosen as u64 != 0 {
        tracing::warn!(
            filename,
            size,
            block_size = chosen,
            "size is not a multiple of the block size; the tail is not exposed"
        );
    }
    let mut mem_align = 1;
    if direct {
        let (mem, offset) = if is_blkdev {
            (logical as usize, logical)
        } else {
            dio_alignment(fd).unwrap_or((DEFAULT_FILE_BLOCK_SIZE as usize, DEFAULT_FILE_BLOCK_SIZE))
        };
        if chosen % offset != 0 || mem > BUF_ALIGN {
            tracing::info!(
                filename,
                block_size = chosen,
                dio_offset_align = offset,
                dio_mem_align = mem,
                "direct I/O impossible at this block size; using buffered I/O"
            );
            clear_direct(fd).map_err(|e| os_err("cannot clear O_DIRECT on", e))?;
            direct = false;
        } else {
            mem_align = mem;
        }
    }
    tracing::info!(
        filename,
        o_direct = direct,
        block_size = chosen,
        num_blocks,
        readonly,
        "backing file opened"
    );
    Ok(FileDisk {
        filename: filename.to_string(),
        file: Mutex::new(Some(file)),
        direct,
        readonly,
        block_size_override: requested.is_some(),
        block_size: chosen,
        num_blocks,
        mem_align,
        punch_refused: AtomicBool::new(false),
        zero_range_refused: AtomicBool::new(false),
        dsync_writes: AtomicU64::new(0),
    })
}

/// Whether `fd` lives on tmpfs (or shmem), where direct I/O buys nothing.
fn on_tmpfs(fd: i32) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // SAFETY: statfs is plain data filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid out-pointer.
    unsafe { libc::fstatfs(fd, &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC }
}

fn open_file(filename: &str, readonly: bool) -> std::io::Result<(File, bool)> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .write(!readonly)
            .custom_flags(flags | libc::O_CLOEXEC)
            .open(filename)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        // EINVAL is how open(2) says the file system has no O_DIRECT (tmpfs).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0).map(|f| (f, false)),
        Err(e) => Err(e),
    }
}

fn clear_direct(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; only status flags change.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn device_size(fd: RawFd) -> std::io::Result<u64> {
    // SAFETY: lseek on a descriptor we own; a block device reports its size as its end.
    let end = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
    if end < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(end as u64)
}

fn logical_block_size(fd: RawFd) -> std::io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size as u32)
}

/// The file's O_DIRECT (memory, offset) alignment from statx, when the kernel reports it.
fn dio_alignment(fd: RawFd) -> Option<(usize, u32)> {
    // SAFETY: statx is plain data; all-zero is a valid value of it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx fills the struct we own; the empty path with AT_EMPTY_PATH means `fd`.
    let rc = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some((stx.stx_dio_mem_align as usize, stx.stx_dio_offset_align))
}

/// Registers a bdev over an opened `disk` with `backend` (the module's [`BdevBackend`]).
pub fn register(
    rt: &Runtime,
    name: &str,
    uuid: Option<Uuid>,
    disk: FileDisk,
    backend: impl FnOnce(Arc<FileDisk>) -> Box<dyn BdevBackend>,
) -> Result<Arc<Bdev>, BdevError> {
    let spec = BdevSpec {
        name: name.to_string(),
        block_size: disk.block_size,
        num_blocks: disk.num_blocks,
        uuid,
    };
    BdevRegistry::of(rt).register(rt, Bdev::new(spec, backend(Arc::new(disk)))?)
}
