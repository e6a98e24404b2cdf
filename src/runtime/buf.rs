//! Block-aligned data buffers from per-core pools, so the data path never calls the
//! allocator. Buffers come from 2 MiB hugepages when the host reserved some
//! (`/proc/sys/vm/nr_hugepages`), from 4 KiB-aligned heap memory otherwise; the choice is
//! logged once. 4 KiB alignment also satisfies O_DIRECT on every file system.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::OnceLock;

/// Alignment of every buffer: a page, enough for O_DIRECT and any block size up to 4 KiB.
pub const BUF_ALIGN: usize = 4096;
const MIN_CLASS_SHIFT: u32 = 12; // 4 KiB
const NUM_CLASSES: usize = 9; // 4 KiB ..= 1 MiB
const HUGEPAGE: usize = 2 << 20;
/// Bytes of free buffers kept per size class per thread before extra ones are returned to
/// the system (at least a few buffers of every class stay pooled).
const MAX_POOLED_BYTES_PER_CLASS: usize = 64 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backing {
    Hugepages,
    Heap,
}

fn backing() -> Backing {
    static BACKING: OnceLock<Backing> = OnceLock::new();
    *BACKING.get_or_init(|| {
        let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if reserved > 0 && map_hugepage().is_some() {
            tracing::info!(reserved, "I/O buffers: 2 MiB hugepages");
            Backing::Hugepages
        } else {
            tracing::info!(
                reserved,
                "I/O buffers: 4 KiB-aligned heap memory (no hugepages reserved)"
            );
            Backing::Heap
        }
    })
}

fn map_hugepage() -> Option<NonNull<u8>> {
    // SAFETY: anonymous private mapping; checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            HUGEPAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

fn class_of(len: usize) -> Option<usize> {
    let size = len.max(1).next_power_of_two().max(1 << MIN_CLASS_SHIFT);
    let class = (size.trailing_zeros() - MIN_CLASS_SHIFT) as usize;
    (class < NUM_CLASSES).then_some(class)
}

fn class_size(class: usize) -> usize {
    1 << (class as u32 + MIN_CLASS_SHIFT)
}

struct Pool {
    free: [Vec<NonNull<u8>>; NUM_CLASSES],
}

impl Pool {
    fn take(&mut self, class: usize) -> NonNull<u8> {
        if let Some(p) = self.free[class].pop() {
            return p;
        }
        match backing() {
            Backing::Hugepages => self.refill_from_hugepage(class),
            Backing::Heap => heap_alloc(class_size(class)),
        }
    }

    /// Carves a fresh hugepage into buffers of `class`; hugepage memory stays in the pools
    /// for the life of the process, as SPDK's mempools do.
    fn refill_from_hugepage(&mut self, class: usize) -> NonNull<u8> {
        let size = class_size(class);
        let Some(page) = map_hugepage() else {
            return heap_alloc(size);
        };
        for i in 1..HUGEPAGE / size {
            // SAFETY: offsets stay inside the 2 MiB mapping.
            self.free[class].push(unsafe { NonNull::new_unchecked(page.as_ptr().add(i * size)) });
        }
        page
    }

    fn give(&mut self, class: usize, p: NonNull<u8>) {
        let limit = (MAX_POOLED_BYTES_PER_CLASS / class_size(class)).max(16);
        if self.free[class].len() < limit || backing() == Backing::Hugepages {
            self.free[class].push(p);
        } else {
            heap_free(p, class_size(class));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if backing() == Backing::Heap {
            for (class, list) in self.free.iter_mut().enumerate() {
                for p in list.drain(..) {
                    heap_free(p, class_size(class));
                }
            }
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { free: Default::default() });
}

fn heap_alloc(size: usize) -> NonNull<u8> {
    let layout = Layout::from_size_align(size, BUF_ALIGN).expect("buffer layout");
    // SAFETY: layout has non-zero size. Zeroed so a fresh buffer never exposes old memory.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

fn heap_free(p: NonNull<u8>, size: usize) {
    let layout = Layout::from_size_align(size, BUF_ALIGN).expect("buffer layout");
    // SAFETY: p was allocated by heap_alloc with this same layout.
    unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
}

/// An aligned I/O buffer owned by its user and recycled through the current thread's pool.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    class: Option<usize>,
}

// SAFETY: DmaBuf uniquely owns its memory, like a Box<[u8]>.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// A buffer of `len` bytes; contents are whatever its last user left (initialised memory).
    pub fn new(len: usize) -> DmaBuf {
        match class_of(len) {
            Some(class) => DmaBuf {
                ptr: POOL.with(|p| p.borrow_mut().take(class)),
                len,
                class: Some(class),
            },
            None => DmaBuf {
                ptr: heap_alloc(len.next_multiple_of(BUF_ALIGN)),
                len,
                class: None,
            },
        }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> DmaBuf {
        let mut b = DmaBuf::new(len);
        b.as_mut_slice().fill(0);
        b
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer, for handing the memory to an I/O descriptor or the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        match self.class {
            Some(class) => {
                let ptr = self.ptr;
                // During thread teardown the pool may be gone; then free directly.
                if POOL.try_with(|p| p.borrow_mut().give(class, ptr)).is_err()
                    && backing() == Backing::Heap
                {
                    heap_free(ptr, class_size(class));
                }
            }
            None => heap_free(self.ptr, self.len.next_multiple_of(BUF_ALIGN)),
        }
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_recycled() {
        let mut a = DmaBuf::new(4096);
        assert_eq!(a.as_mut_ptr() as usize % BUF_ALIGN, 0);
        a.as_mut_slice().fill(7);
        let p = a.as_mut_ptr();
        drop(a);
        let mut b = DmaBuf::new(3000);
        assert_eq!(b.as_mut_ptr(), p, "same class comes back from the pool");
        assert_eq!(b.len(), 3000);
        let big = DmaBuf::zeroed(3 << 20);
        assert!(big.as_slice().iter().all(|&x| x == 0));
    }
}
