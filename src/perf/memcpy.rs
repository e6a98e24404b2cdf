//! The benchmark baseline: how many blocks per second one reactor core of this machine can
//! copy between random offsets of a large region and a ring of I/O buffers, which is all a
//! malloc bdev does per I/O, and how many it can zero-fill in that ring, all a null bdev's
//! read does. `bench/perf_base.sh` divides malloc and null IOPS by them.

use std::alloc::Layout;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::PerfError;
use crate::runtime::buf::DmaBuf;
use crate::runtime::Runtime;

const HUGEPAGE: usize = 2 << 20;

/// Copy rates measured on one core.
#[derive(Debug, Clone, Serialize)]
pub struct MemcpyRate {
    /// Bytes per copy.
    pub block_size: u64,
    /// Size of the region offsets are drawn from.
    pub region_bytes: u64,
    /// Copies from the region into the buffers per second (what a malloc read does).
    pub read_blocks_per_sec: f64,
    /// Copies from the buffers into the region per second (what a malloc write does).
    pub write_blocks_per_sec: f64,
    /// Buffers of the ring zero-filled per second (what a null read does): with a queue's
    /// worth of buffers this is bound by the second-level cache, not by the copy loop.
    pub zero_blocks_per_sec: f64,
}

/// What one timed loop does per block.
#[derive(Clone, Copy)]
enum Work {
    /// Region to buffer.
    Read,
    /// Buffer to region.
    Write,
    /// Zeroes into the buffer.
    Zero,
}

/// Written, hugepage-advised memory, as a malloc bdev's becomes once written.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(len: usize) -> Result<Region, PerfError> {
        let layout = Layout::from_size_align(len, HUGEPAGE)
            .map_err(|e| PerfError::Invalid(format!("memcpy region of {len} bytes: {e}")))?;
        // SAFETY: non-zero size (parse_size refuses 0); checked for null.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(PerfError::Invalid(format!(
                "cannot allocate a memcpy region of {len} bytes"
            )));
        }
        // SAFETY: advice on memory we own; failure only means no transparent hugepages.
        unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
        // SAFETY: ptr is valid for len bytes; touching every page makes it real memory.
        unsafe { std::ptr::write_bytes(ptr, 0x5a, len) };
        Ok(Region { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in Region::new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Does `work` for `time` on successive buffers of the ring; returns blocks per second.
fn rate(region: &Region, bufs: &mut [DmaBuf], block: usize, time: Duration, work: Work) -> f64 {
    let blocks_in_region = (region.layout.size() / block) as u64;
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let start = Instant::now();
    let mut copies = 0u64;
    loop {
        for _ in 0..1024 {
            let buf = bufs[copies as usize % bufs.len()].as_mut_ptr();
            let mut disk = || {
                let at = rng.gen_range(0..blocks_in_region) as usize * block;
                // SAFETY: `at + block` is inside the region.
                unsafe { region.ptr.add(at) }
            };
            // SAFETY: region blocks and buffers hold `block` bytes and never overlap.
            unsafe {
                match work {
                    Work::Read => std::ptr::copy_nonoverlapping(disk(), buf, block),
                    Work::Write => std::ptr::copy_nonoverlapping(buf, disk(), block),
                    Work::Zero => std::ptr::write_bytes(buf, 0, block),
                }
            }
            std::hint::black_box(buf);
            copies += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= time {
            return copies as f64 / elapsed.as_secs_f64();
        }
    }
}

/// Measures on reactor 0 (so on the same, pinned, core as a one-core run): `seconds` each of
/// reads, writes and zero-fills of `block` bytes over a `region` bytes region and `buffers`
/// buffers.
pub fn measure(
    rt: &Runtime,
    region: u64,
    block: u64,
    buffers: u32,
    seconds: u64,
) -> Result<MemcpyRate, PerfError> {
    if block > region {
        return Err(PerfError::Invalid(format!(
            "memcpy block of {block} bytes is larger than the {region}-byte region"
        )));
    }
    let region_len = usize::try_from(region)
        .map_err(|_| PerfError::Invalid(format!("memcpy region of {region} bytes is too large")))?;
    rt.run_on(0, move || {
        let r = Region::new(region_len)?;
        let mut bufs: Vec<DmaBuf> = (0..buffers)
            .map(|_| DmaBuf::zeroed(block as usize))
            .collect();
        let time = Duration::from_secs(seconds);
        let mut rate_of = |work| rate(&r, &mut bufs, block as usize, time, work);
        Ok(MemcpyRate {
            block_size: block,
            region_bytes: region,
            read_blocks_per_sec: rate_of(Work::Read),
            write_blocks_per_sec: rate_of(Work::Write),
            zero_blocks_per_sec: rate_of(Work::Zero),
        })
    })
}
