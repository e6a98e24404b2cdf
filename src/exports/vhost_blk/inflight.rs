//! Inflight I/O tracking (vhost-user's INFLIGHT_SHMFD): a shared-memory record of which
//! descriptor heads each queue has taken from the guest and not yet returned, so that a
//! daemon restarted after a crash resubmits them instead of leaving the guest waiting for
//! completions that never come. The frontend (QEMU) asks for the region once
//! (GET_INFLIGHT_FD), keeps its file descriptor across our restarts and hands it to the
//! next daemon (SET_INFLIGHT_FD); only we read what is in it.
//!
//! The layout is the one QEMU's vhost-user specification gives for split virtqueues (and
//! libvhost-user uses), one region per queue, each 64-byte aligned:
//! a 16-byte header `features: u64, version: u16, desc_num: u16, last_batch_head: u16,
//! used_idx: u16`, then `desc_num` entries of 16 bytes `inflight: u8, padding: [u8; 5],
//! next: u16, counter: u64`. Taking a head sets its counter (pop order) then its inflight
//! byte; returning it records it as the last batch, publishes the used ring, then clears
//! the byte and records the used index, so a crash between the two is detected on
//! reconnect (region `used_idx` behind the ring's) and that head is not resubmitted.

use std::fs::File;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vm_memory::{FileOffset, MmapRegion};

use super::memory::memfd;

/// Bytes of a queue region's header.
const HEADER_LEN: usize = 16;
/// Bytes of one descriptor's state.
const DESC_LEN: usize = 16;
/// Queue regions start on this boundary.
const QUEUE_ALIGN: usize = 64;
/// The layout version written into an initialised region.
const VERSION: u16 = 1;

// Header field offsets.
const VERSION_AT: usize = 8;
const DESC_NUM_AT: usize = 10;
const LAST_BATCH_HEAD_AT: usize = 12;
const USED_IDX_AT: usize = 14;
// Descriptor field offsets (within one entry).
const INFLIGHT_AT: usize = 0;
const NEXT_AT: usize = 6;
const COUNTER_AT: usize = 8;

/// Bytes one queue's region takes for `queue_size` heads (QEMU's formula: header plus one
/// entry per head, rounded up to 64).
pub fn queue_region_size(queue_size: u16) -> usize {
    (HEADER_LEN + DESC_LEN * queue_size as usize).next_multiple_of(QUEUE_ALIGN)
}

/// The whole shared region, mapped; shared (`Arc`) by the control thread and each running
/// queue, so it stays mapped while any queue writes to it.
pub struct InflightRegion {
    map: MmapRegion,
    num_queues: u16,
    queue_size: u16,
}

impl InflightRegion {
    /// A new zeroed region on a memfd for `num_queues` queues of `queue_size` heads
    /// (GET_INFLIGHT_FD); returns it, its file for the frontend and its size in bytes.
    pub fn create(num_queues: u16, queue_size: u16) -> Result<(Arc<Self>, File, u64), String> {
        let size = queue_region_size(queue_size) * num_queues as usize;
        let file = memfd(c"vhost-inflight", size as u64).map_err(|e| e.to_string())?;
        let frontend_copy = file.try_clone().map_err(|e| e.to_string())?;
        let region = Self::map(file, 0, size as u64, num_queues, queue_size)?;
        Ok((region, frontend_copy, size as u64))
    }

    /// Maps a region the frontend hands back (SET_INFLIGHT_FD); refuses one too small for
    /// the queues it claims to hold.
    pub fn map(
        file: File,
        offset: u64,
        size: u64,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<Arc<Self>, String> {
        let needed = queue_region_size(queue_size) as u64 * num_queues as u64;
        if num_queues == 0 || queue_size == 0 || size < needed {
            return Err(format!(
                "inflight region of {size} bytes cannot hold {num_queues} queues of {queue_size}"
            ));
        }
        let map = MmapRegion::from_file(FileOffset::new(file, offset), needed as usize)
            .map_err(|e| format!("cannot map the inflight region: {e}"))?;
        if !(map.as_ptr() as usize).is_multiple_of(QUEUE_ALIGN) {
            return Err("inflight region mapped unaligned".into());
        }
        Ok(Arc::new(InflightRegion {
            map,
            num_queues,
            queue_size,
        }))
    }

    /// The part of the region that records queue `index` of `ring_size` heads, if the
    /// region has one that large.
    pub fn queue(self: &Arc<Self>, index: usize, ring_size: u16) -> Option<InflightQueue> {
        if index >= self.num_queues as usize || ring_size > self.queue_size {
            return None;
        }
        Some(InflightQueue {
            _region: self.clone(),
            // SAFETY: index < num_queues, so the queue's region lies inside the mapping.
            base: unsafe {
                self.map
                    .as_ptr()
                    .add(index * queue_region_size(self.queue_size))
            },
            desc_num: self.queue_size,
        })
    }
}

/// One queue's record, written by the queue's data path (no lock: one queue, one reactor).
pub struct InflightQueue {
    /// Keeps the mapping alive while the queue runs.
    _region: Arc<InflightRegion>,
    base: *mut u8,
    desc_num: u16,
}

// SAFETY: the queue record is moved to one reactor and only used there; the region it
// points into stays mapped as long as `region` is held.
unsafe impl Send for InflightQueue {}

/// What a queue resumes from after a reconnect.
#[derive(Debug, PartialEq, Eq)]
pub struct Resume {
    /// Heads still in flight from before, oldest first: to be served again.
    pub heads: Vec<u16>,
    /// The next counter value to give a taken head.
    pub next_counter: u64,
    /// Whether the region held a previous instance's record (false: fresh region).
    pub restored: bool,
}

impl InflightQueue {
    fn read<T: Copy>(&self, at: usize) -> T {
        debug_assert!(at + std::mem::size_of::<T>() <= queue_region_size(self.desc_num));
        // SAFETY: every offset used is a naturally aligned field inside this queue's region.
        unsafe { self.base.add(at).cast::<T>().read_volatile() }
    }

    fn write<T: Copy>(&self, at: usize, value: T) {
        debug_assert!(at + std::mem::size_of::<T>() <= queue_region_size(self.desc_num));
        // SAFETY: as in `read`; the region is shared memory only this queue writes.
        unsafe { self.base.add(at).cast::<T>().write_volatile(value) }
    }

    fn desc(head: u16) -> usize {
        HEADER_LEN + DESC_LEN * head as usize
    }

    /// Reads the record at queue start: a fresh region is initialised and nothing resumes;
    /// otherwise the last completion is settled against the used ring's index `used_idx`
    /// (a crash after publishing it but before clearing its head) and the heads still
    /// marked are returned, oldest first.
    pub fn resume(&self, used_idx: u16) -> Resume {
        if self.read::<u16>(VERSION_AT) == 0 {
            self.write(DESC_NUM_AT, self.desc_num.to_le());
            self.write(LAST_BATCH_HEAD_AT, 0u16);
            self.write(USED_IDX_AT, used_idx.to_le());
            fence(Ordering::Release);
            self.write(VERSION_AT, VERSION.to_le());
            return Resume {
                heads: Vec::new(),
                next_counter: 0,
                restored: false,
            };
        }
        let recorded = u16::from_le(self.read(USED_IDX_AT));
        if recorded != used_idx {
            // The last batch was published but not cleared: follow it from its head.
            let batch = used_idx.wrapping_sub(recorded).min(self.desc_num);
            let mut head = u16::from_le(self.read(LAST_BATCH_HEAD_AT));
            for _ in 0..batch {
                if head >= self.desc_num {
                    break;
                }
                self.write(Self::desc(head) + INFLIGHT_AT, 0u8);
                head = u16::from_le(self.read(Self::desc(head) + NEXT_AT));
            }
            self.write(USED_IDX_AT, used_idx.to_le());
        }
        let mut marked: Vec<(u64, u16)> = (0..self.desc_num)
            .filter(|&h| self.read::<u8>(Self::desc(h) + INFLIGHT_AT) == 1)
            .map(|h| (u64::from_le(self.read(Self::desc(h) + COUNTER_AT)), h))
            .collect();
        marked.sort_unstable();
        Resume {
            next_counter: marked.last().map_or(0, |&(c, _)| c.wrapping_add(1)),
            heads: marked.into_iter().map(|(_, h)| h).collect(),
            restored: true,
        }
    }

    /// Records `head` as taken from the avail ring, the `counter`-th of this queue.
    pub fn mark(&self, head: u16, counter: u64) {
        let at = Self::desc(head);
        self.write(at + COUNTER_AT, counter.to_le());
        fence(Ordering::Release);
        self.write(at + INFLIGHT_AT, 1u8);
    }

    /// Before `head` goes on the used ring: it is the batch a crash may interrupt.
    pub fn before_used(&self, head: u16) {
        let last = self.read::<u16>(LAST_BATCH_HEAD_AT);
        self.write(Self::desc(head) + NEXT_AT, last);
        self.write(LAST_BATCH_HEAD_AT, head.to_le());
        fence(Ordering::Release);
    }

    /// After the used ring's index became `used_idx` with `head` on it: `head` is done.
    pub fn after_used(&self, head: u16, used_idx: u16) {
        fence(Ordering::Release);
        self.write(Self::desc(head) + INFLIGHT_AT, 0u8);
        fence(Ordering::Release);
        self.write(USED_IDX_AT, used_idx.to_le());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn region_size_follows_qemus_formula() {
        assert_eq!(
            queue_region_size(128),
            (16 + 128 * 16usize).next_multiple_of(64)
        );
        assert_eq!(queue_region_size(128), 2112);
        assert_eq!(queue_region_size(1), 64);
        assert_eq!(queue_region_size(3), 64);
        assert_eq!(queue_region_size(4), 128);
    }

    /// The bytes the frontend keeps are the specification's layout: a fresh region is
    /// initialised, a taken head is marked with its counter, a returned one is cleared and
    /// the used index recorded.
    #[test]
    fn the_shared_bytes_follow_the_split_queue_layout() {
        let (region, mut file, size) = InflightRegion::create(2, 4).unwrap();
        assert_eq!(size, 2 * 128);
        let q1 = region.queue(1, 4).unwrap();
        assert!(region.queue(2, 4).is_none(), "only two queues");
        assert!(
            region.queue(0, 8).is_none(),
            "a ring larger than the region"
        );
        assert!(
            !q1.resume(7).restored,
            "a fresh region has nothing to resume"
        );
        q1.mark(2, 0x0102_0304_0506_0708);
        q1.mark(3, 9);
        q1.before_used(3);
        q1.after_used(3, 8);
        let mut bytes = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 256);
        assert!(bytes[..128].iter().all(|&b| b == 0), "queue 0 untouched");
        let q = &bytes[128..];
        assert_eq!(&q[..8], &[0; 8], "features");
        assert_eq!(
            &q[8..16],
            &[1, 0, 4, 0, 3, 0, 8, 0],
            "version, desc_num, last_batch_head, used_idx"
        );
        let d2 = &q[16 + 2 * 16..16 + 3 * 16];
        assert_eq!(d2[0], 1, "head 2 in flight");
        assert_eq!(&d2[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        let d3 = &q[16 + 3 * 16..16 + 4 * 16];
        assert_eq!(d3[0], 0, "head 3 returned");
        assert_eq!(&d3[8..16], &9u64.to_le_bytes());
    }

    /// A second instance mapping the same file resumes the heads still in flight, oldest
    /// first, and not the one whose completion reached the used ring before the crash.
    #[test]
    fn a_restarted_backend_resubmits_in_counter_order_and_settles_the_last_batch() {
        let (region, file, size) = InflightRegion::create(1, 8).unwrap();
        let q = region.queue(0, 8).unwrap();
        q.resume(0);
        for (counter, head) in [(10, 5), (11, 1), (12, 7), (13, 0)] {
            q.mark(head, counter);
        }
        q.before_used(1);
        q.after_used(1, 1);
        // Crash between publishing head 7 (used index 2) and clearing it.
        q.before_used(7);
        drop((q, region));

        let again = InflightRegion::map(file, 0, size, 1, 8).unwrap();
        let q = again.queue(0, 8).unwrap();
        let resume = q.resume(2);
        assert!(resume.restored);
        assert_eq!(resume.heads, vec![5, 0]);
        assert_eq!(resume.next_counter, 14);
        assert_eq!(
            q.resume(2).heads,
            vec![5, 0],
            "settled: reading again is the same"
        );
    }

    #[test]
    fn a_region_too_small_for_its_queues_is_refused() {
        let (_, file, size) = InflightRegion::create(1, 8).unwrap();
        assert!(InflightRegion::map(file, 0, size, 2, 8).is_err());
    }
}
