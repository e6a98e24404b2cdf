//! A vhost-user-blk client on libblkio (the `blkio` crate's virtio-blk-vhost-user driver),
//! the way cloud tools and QEMU's blkio driver reach a storage daemon: one shared-memory
//! region for buffers, one libblkio queue per virtqueue, one request at a time per call.

use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Duration;

use blkio::{Blkio, Blkioq, Completion, MemoryRegion, ReqFlags};

/// How long one request may take before the test fails instead of hanging.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected, started libblkio instance with a mapped buffer region.
pub struct Client {
    pub blkio: Blkio,
    pub queues: Vec<Blkioq>,
    region: MemoryRegion,
}

impl Client {
    /// Connects to the controller socket `sock` with `queues` queues and maps `buf_len`
    /// bytes of buffer memory (mapped after start: a memory-table change while rings run).
    pub fn connect(sock: &Path, queues: i32, buf_len: usize) -> Result<Client, blkio::Error> {
        Client::connect_with(sock, queues, buf_len, false)
    }

    /// As [`Client::connect`]; `read_only` asks for a read-only device (libblkio refuses
    /// to open a read-only device otherwise).
    pub fn connect_with(
        sock: &Path,
        queues: i32,
        buf_len: usize,
        read_only: bool,
    ) -> Result<Client, blkio::Error> {
        let mut blkio = Blkio::new("virtio-blk-vhost-user")?;
        blkio.set_str("path", sock.to_str().unwrap())?;
        blkio.set_bool("read-only", read_only)?;
        blkio.connect()?;
        blkio.set_i32("num-queues", queues)?;
        let started = blkio.start()?;
        let region = blkio.alloc_mem_region(buf_len)?;
        blkio.map_mem_region(&region)?;
        Ok(Client {
            blkio,
            queues: started.queues,
            region,
        })
    }

    /// Capacity in bytes, as the device's config space says.
    pub fn capacity(&self) -> u64 {
        self.blkio.get_u64("capacity").unwrap()
    }

    /// The buffer region's memory.
    pub fn buf(&mut self) -> &mut [u8] {
        // SAFETY: the region is mapped for `len` bytes while the client lives, and only this
        // thread touches it between requests.
        unsafe { std::slice::from_raw_parts_mut(self.region.addr as *mut u8, self.region.len) }
    }

    /// Pointer into the buffer region at `offset`.
    pub fn ptr(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.region.len);
        (self.region.addr + offset) as *mut u8
    }

    /// Waits for `n` completions on queue `q`; returns their (user_data, ret).
    pub fn wait(&mut self, q: usize, n: usize) -> Vec<(usize, i32)> {
        let mut done = Vec::new();
        while done.len() < n {
            let mut completions: Vec<MaybeUninit<Completion>> =
                (done.len()..n).map(|_| MaybeUninit::uninit()).collect();
            let mut timeout = REQUEST_TIMEOUT;
            let got = self.queues[q]
                .do_io(&mut completions, 1, Some(&mut timeout), None)
                .unwrap_or_else(|e| panic!("do_io: {e}"));
            for c in &completions[..got] {
                // SAFETY: do_io initialised the first `got` completions.
                let c = unsafe { c.assume_init_ref() };
                done.push((c.user_data, c.ret));
            }
        }
        done
    }

    /// Runs one request built by `submit` on queue `q`; returns libblkio's `ret` (0 or -errno).
    pub fn one(&mut self, q: usize, submit: impl FnOnce(&mut Blkioq)) -> i32 {
        submit(&mut self.queues[q]);
        self.wait(q, 1)[0].1
    }

    /// Writes `data` at byte `offset` through queue `q` (buffer at the region's start).
    pub fn write(&mut self, q: usize, offset: u64, data: &[u8]) -> i32 {
        self.buf()[..data.len()].copy_from_slice(data);
        let (ptr, len) = (self.ptr(0), data.len());
        self.one(q, |queue| {
            queue.write(offset, ptr, len, 0, ReqFlags::empty())
        })
    }

    /// Reads `len` bytes at byte `offset` through queue `q`.
    pub fn read(&mut self, q: usize, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
        self.buf()[..len].fill(0xee);
        let ptr = self.ptr(0);
        match self.one(q, |queue| {
            queue.read(offset, ptr, len, 0, ReqFlags::empty())
        }) {
            0 => Ok(self.buf()[..len].to_vec()),
            err => Err(err),
        }
    }
}
