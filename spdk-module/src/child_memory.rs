//! Where each child's data of one parent I/O lives, outside the parent's own iovecs: a
//! buffer of SPDK's iobuf pool (DMA-safe, per-thread caches) the child read into or a
//! rewrite writes from, or memory the child lent (a read sent without a buffer to a child
//! serving SPDK's zero-copy type, whose bdev_io is kept until the vote so the memory stays
//! the child's answer). One pointer per child, in the bdev_io's `driver_ctx`: no allocation.

use std::ffi::c_void;
use std::mem::MaybeUninit;

use quorum_core::{ChildSet, MAX_CHILDREN};
use spdk_sys as sys;

/// The per-child memory of one parent I/O.
#[repr(C)]
pub struct ChildMemory {
    /// Children holding an iobuf buffer in `slots`.
    buffered: ChildSet,
    /// Children whose completed read lent memory: `slots` holds their bdev_io.
    lent: ChildSet,
    /// A buffer (buffered) or a child bdev_io (lent); meaningless otherwise.
    slots: [MaybeUninit<*mut c_void>; MAX_CHILDREN],
}

impl ChildMemory {
    /// Resets to "nothing held" without touching the slots.
    pub fn clear(&mut self) {
        self.buffered = ChildSet::EMPTY;
        self.lent = ChildSet::EMPTY;
    }

    /// Children already holding a buffer.
    pub fn buffered(&self) -> ChildSet {
        self.buffered
    }

    /// Whether child `c`'s answer is here (a buffer or lent memory).
    pub fn holds(&self, c: usize) -> bool {
        self.buffered.contains(c) || self.lent.contains(c)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buffered.is_empty() && self.lent.is_empty()
    }

    /// Child `c` now holds iobuf buffer `buf`.
    pub fn give_buffer(&mut self, c: usize, buf: *mut c_void) {
        self.slots[c] = MaybeUninit::new(buf);
        self.buffered.insert(c);
    }

    /// Child `c`'s buffer, for a child I/O to read into or write from.
    pub fn buffer(&self, c: usize) -> *mut c_void {
        debug_assert!(self.buffered.contains(c));
        // SAFETY: buffered children's slots were written by give_buffer.
        unsafe { self.slots[c].assume_init() }
    }

    /// Child `c` completed a read without a buffer: keep its bdev_io, whose iovec points
    /// at the memory it lent, until [`ChildMemory::release`].
    pub fn keep_lent(&mut self, c: usize, child_io: *mut sys::spdk_bdev_io) {
        self.slots[c] = MaybeUninit::new(child_io as *mut c_void);
        self.lent.insert(c);
    }

    /// Child `c`'s data, `len` bytes: its buffer, or the memory it lent.
    ///
    /// # Safety
    /// `c` is buffered or lent, and no child I/O writing that memory is in flight.
    pub unsafe fn data<'a>(&self, c: usize, len: u64) -> &'a [u8] {
        // SAFETY: the caller's promise; a lent read's bdev_io is kept alive, and its first
        // iovec covers the read (SPDK's reads without a buffer answer with one iovec).
        unsafe {
            let ptr = if self.lent.contains(c) {
                let child_io = self.slots[c].assume_init() as *mut sys::spdk_bdev_io;
                (*(*child_io).u.bdev.iovs).iov_base as *const u8
            } else {
                self.buffer(c) as *const u8
            };
            std::slice::from_raw_parts(ptr, len as usize)
        }
    }

    /// Child `c`'s buffer as bytes to fill.
    ///
    /// # Safety
    /// `c` is buffered and no child I/O uses its buffer.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn buffer_mut<'a>(&self, c: usize, len: u64) -> &'a mut [u8] {
        // SAFETY: the caller's promise; iobuf buffers are at least `len` long.
        unsafe { std::slice::from_raw_parts_mut(self.buffer(c) as *mut u8, len as usize) }
    }

    /// Gives the lent memory back (frees the kept child bdev_ios).
    pub fn release_lent(&mut self) {
        for c in self.lent {
            // SAFETY: each lent child's bdev_io was kept unfreed by keep_lent.
            unsafe {
                sys::spdk_bdev_free_io(self.slots[c].assume_init() as *mut sys::spdk_bdev_io)
            };
        }
        self.lent = ChildSet::EMPTY;
    }

    /// Gives everything back: lent memory, and buffers of `len` bytes to `iobuf`.
    ///
    /// # Safety
    /// `iobuf` is the channel the buffers came from; no child I/O uses them.
    pub unsafe fn release(&mut self, iobuf: *mut sys::spdk_iobuf_channel, len: u64) {
        self.release_lent();
        for c in self.buffered {
            // SAFETY: the caller's promise; each buffer came from `iobuf` with this length.
            unsafe { sys::spdk_iobuf_put(iobuf, self.buffer(c), len) };
        }
        self.buffered = ChildSet::EMPTY;
    }
}
