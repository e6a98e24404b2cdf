//! Bad guests against the vhost-user-blk export: a hand-made frontend (rust-vmm's vhost
//! frontend over a memfd "guest memory" whose rings and descriptors the test writes byte by
//! byte) sends what no real driver sends: descriptors outside guest memory, looping chains,
//! short headers, chains without a status byte, a corrupt avail index. Malformed chains break only
//! their own queue (virtio's "needs reset"); wrong requests fail with their virtio status;
//! the daemon, the connection's other queues and other controllers go on, and a reconnect
//! (a reset) serves again.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use common::pattern;
use common::target::Target;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

const MEM_LEN: usize = 2 << 20;
const QSIZE: u16 = 16;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
/// How long a request the device must answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One raw descriptor.
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// A frontend with 2 MiB of guest memory (guest address = offset) and two rings of 16.
struct Guest {
    /// The vhost-user connection: dropping it disconnects.
    _fe: Frontend,
    _memfd: File,
    base: *mut u8,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    avail_idx: [u16; 2],
}

/// Guest addresses of queue q's descriptor table, avail ring and used ring.
fn ring_gpas(q: usize) -> (u64, u64, u64) {
    let at = q as u64 * 0x4000;
    (at, at + 0x1000, at + 0x2000)
}

/// Guest address of the data area of a request slot (header, data, status).
fn slot_gpa(slot: u64) -> u64 {
    0x10000 + slot * 0x4000
}

impl Guest {
    fn connect(sock: &Path) -> Guest {
        let mut fe = Frontend::connect(sock, 2).expect("vhost-user socket");
        // SAFETY: plain syscall; the fd is owned by the File below.
        let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is fresh and ours.
        let memfd = unsafe { File::from_raw_fd(fd) };
        memfd.set_len(MEM_LEN as u64).unwrap();
        // SAFETY: shared mapping of our own memfd, checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        fe.set_owner().unwrap();
        let features = fe.get_features().unwrap();
        // virtio 1.0 and vhost-user protocol features, no event index: every used entry
        // interrupts, which is what the test waits on.
        fe.set_features(features & ((1 << 32) | (1 << 30))).unwrap();
        let protocol = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(protocol & VhostUserProtocolFeatures::MQ)
            .unwrap();
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEM_LEN as u64,
            userspace_addr: base as u64,
            mmap_offset: 0,
            mmap_handle: memfd.as_raw_fd(),
        }])
        .unwrap();
        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        for q in 0..2 {
            let (desc, avail, used) = ring_gpas(q);
            let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            fe.set_vring_num(q, QSIZE).unwrap();
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: base as u64 + desc,
                    used_ring_addr: base as u64 + used,
                    avail_ring_addr: base as u64 + avail,
                    log_addr: None,
                },
            )
            .unwrap();
            fe.set_vring_base(q, 0).unwrap();
            fe.set_vring_call(q, &call).unwrap();
            fe.set_vring_kick(q, &kick).unwrap();
            fe.set_vring_enable(q, true).unwrap();
            kicks.push(kick);
            calls.push(call);
        }
        Guest {
            _fe: fe,
            _memfd: memfd,
            base,
            kicks,
            calls,
            avail_idx: [0; 2],
        }
    }

    fn at(&self, gpa: u64) -> *mut u8 {
        assert!((gpa as usize) < MEM_LEN);
        // SAFETY: inside our mapping of MEM_LEN bytes.
        unsafe { self.base.add(gpa as usize) }
    }

    fn write_bytes(&self, gpa: u64, bytes: &[u8]) {
        assert!(gpa as usize + bytes.len() <= MEM_LEN);
        // SAFETY: inside our mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.at(gpa), bytes.len()) };
    }

    fn read_bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        // SAFETY: inside our mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.at(gpa), out.as_mut_ptr(), len) };
        out
    }

    fn used_idx(&self, q: usize) -> u16 {
        let (_, _, used) = ring_gpas(q);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: the used ring's idx field, inside our mapping, 2-byte aligned.
        unsafe { (self.at(used + 2) as *const u16).read_volatile() }
    }

    /// Writes descriptors starting at table index `first`, puts `head` on the avail ring
    /// and kicks.
    fn post(&mut self, q: usize, first: u16, descs: &[Desc], head: u16) {
        let (table, avail, _) = ring_gpas(q);
        for (i, d) in descs.iter().enumerate() {
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
            raw[14..16].copy_from_slice(&d.next.to_le_bytes());
            self.write_bytes(table + 16 * (first as u64 + i as u64), &raw);
        }
        let idx = self.avail_idx[q];
        self.write_bytes(avail + 4 + 2 * (idx % QSIZE) as u64, &head.to_le_bytes());
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.avail_idx[q] = idx.wrapping_add(1);
        self.write_bytes(avail + 2, &self.avail_idx[q].to_le_bytes());
        self.kicks[q].write(1).unwrap();
    }

    /// A well-formed request in slot `slot` using descriptors slot*3..slot*3+3:
    /// header, `data_len` bytes of data (device-writable for reads), status.
    fn request(&mut self, q: usize, slot: u16, request_type: u32, sector: u64, data: DataDir) {
        let at = slot_gpa(slot as u64);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&request_type.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        self.write_bytes(at, &hdr);
        self.write_bytes(at + 0x3000, &[0xff]);
        let first = slot * 3;
        let (len, flags) = match data {
            DataDir::In(len) => (len, WRITE),
            DataDir::Out(bytes) => {
                self.write_bytes(at + 0x1000, bytes);
                (bytes.len() as u32, 0)
            }
        };
        self.post(
            q,
            first,
            &[
                Desc {
                    addr: at,
                    len: 16,
                    flags: NEXT,
                    next: first + 1,
                },
                Desc {
                    addr: at + 0x1000,
                    len,
                    flags: flags | NEXT,
                    next: first + 2,
                },
                Desc {
                    addr: at + 0x3000,
                    len: 1,
                    flags: WRITE,
                    next: 0,
                },
            ],
            first,
        );
    }

    fn status(&self, slot: u16) -> u8 {
        self.read_bytes(slot_gpa(slot as u64) + 0x3000, 1)[0]
    }

    fn data(&self, slot: u16, len: usize) -> Vec<u8> {
        self.read_bytes(slot_gpa(slot as u64) + 0x1000, len)
    }

    /// Waits (on the call eventfd, with a deadline) until queue q's used index reaches n.
    fn wait_used(&self, q: usize, n: u16) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while self.used_idx(q) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "queue {q}: used index stuck at {}",
                self.used_idx(q)
            );
            let mut pfd = libc::pollfd {
                fd: self.calls[q].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            let _ = self.calls[q].read();
        }
    }

    /// A read of `len` bytes at `sector` on queue q, which must succeed; returns the data.
    fn read_ok(&mut self, q: usize, slot: u16, sector: u64, len: u32) -> Vec<u8> {
        let before = self.used_idx(q);
        self.request(q, slot, 0, sector, DataDir::In(len));
        self.wait_used(q, before + 1);
        assert_eq!(self.status(slot), 0, "read status");
        self.data(slot, len as usize)
    }

    /// A request that must be answered; returns its status.
    fn answered(
        &mut self,
        q: usize,
        slot: u16,
        request_type: u32,
        sector: u64,
        data: DataDir,
    ) -> u8 {
        let before = self.used_idx(q);
        self.request(q, slot, request_type, sector, data);
        self.wait_used(q, before + 1);
        self.status(slot)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing uses it afterwards.
        unsafe { libc::munmap(self.base.cast(), MEM_LEN) };
    }
}

enum DataDir<'a> {
    In(u32),
    Out(&'a [u8]),
}

/// Sends a malformed chain on queue 0 and checks the queue broke alone: queue 1 still
/// answers, queue 0 answers nothing more, and the target logged why.
fn breaks_queue_0(t: &Target, sock: &Path, descs: &[Desc], what: &str, reason: &str) {
    let logged = |t: &Target| t.stderr().matches("broke the virtqueue protocol").count();
    let before = logged(t);
    let mut g = Guest::connect(sock);
    // Slot 0's header is a valid read header: only the chain's shape is wrong.
    g.write_bytes(slot_gpa(0), &[0; 16]);
    g.post(0, 0, descs, 0);
    // Queue 0's poller runs before queue 1's on the one reactor, and the bad chain was
    // posted first: once queue 1 answered, queue 0 has seen it.
    assert_eq!(g.read_ok(1, 2, 0, 512).len(), 512, "{what}: queue 1 serves");
    g.request(0, 3, 0, 0, DataDir::In(512));
    assert_eq!(g.read_ok(1, 4, 0, 512).len(), 512);
    assert_eq!(g.used_idx(0), 0, "{what}: the broken queue answers nothing");
    assert_eq!(g.status(3), 0xff, "{what}");
    let log = t.stderr();
    assert_eq!(logged(t), before + 1, "{what}: one queue broke: {log}");
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("broke the virtqueue"))
        .unwrap();
    assert!(last.contains(reason), "{what}: {last}");
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
    Desc {
        addr,
        len,
        flags,
        next,
    }
}

#[test]
fn bad_guests_break_only_their_queue_and_wrong_requests_get_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap().to_string();
    let t = Target::start_in(dir, &["-m", "0x1", "-S", &s]);
    t.rpc_script(
        "bdev_malloc_create -b M0 1 512\n\
         bdev_malloc_create -b M1 1 512\n\
         vhost_create_blk_controller c0 M0\n\
         vhost_create_blk_controller ro M1 -r\n",
    );
    let sock = t.dir.path().join("c0");
    let ro_sock = t.dir.path().join("ro");

    // Well-formed requests, right and wrong.
    let mut g = Guest::connect(&sock);
    let data = pattern(4096, 3);
    assert_eq!(g.answered(0, 0, 1, 8, DataDir::Out(&data)), 0, "write");
    assert_eq!(g.read_ok(1, 1, 8, 4096), data, "read on the other queue");
    assert_eq!(
        g.answered(0, 2, 0, 2048, DataDir::In(512)),
        1,
        "past the end: IOERR"
    );
    assert_eq!(
        g.answered(0, 3, 0, 2047, DataDir::In(1024)),
        1,
        "straddles the end"
    );
    assert_eq!(
        g.answered(0, 4, 99, 0, DataDir::In(512)),
        2,
        "unknown type: UNSUPP"
    );
    assert_eq!(g.answered(1, 0, 8, 0, DataDir::In(20)), 0, "GET_ID");
    assert_eq!(&g.data(0, 3), b"M0\0");
    drop(g);
    let mut ro = Guest::connect(&ro_sock);
    assert_eq!(
        ro.answered(0, 0, 1, 0, DataDir::Out(&data)),
        1,
        "write to read-only"
    );
    drop(ro);

    let at = slot_gpa(0);
    let outside = MEM_LEN as u64 + 4096;
    let cases: Vec<(&str, &str, Vec<Desc>)> = vec![
        (
            "data outside guest memory",
            "OutsideMemory",
            vec![
                desc(at, 16, NEXT, 1),
                desc(outside, 512, WRITE | NEXT, 2),
                desc(at + 0x3000, 1, WRITE, 0),
            ],
        ),
        (
            "header straddling the end of guest memory",
            "OutsideMemory",
            vec![
                desc(MEM_LEN as u64 - 8, 16, NEXT, 1),
                desc(at + 0x3000, 1, WRITE, 0),
            ],
        ),
        (
            "a chain that loops",
            "Malformed",
            vec![
                desc(at, 16, NEXT, 1),
                desc(at + 0x1000, 512, WRITE | NEXT, 1),
            ],
        ),
        (
            "a next index outside the table",
            "Malformed",
            vec![desc(at, 16, NEXT, 200)],
        ),
        (
            "a header of 8 bytes",
            "NoHeader",
            vec![desc(at, 8, NEXT, 1), desc(at + 0x3000, 1, WRITE, 0)],
        ),
        (
            "no status byte",
            "NoStatus",
            vec![desc(at, 16, NEXT, 1), desc(at + 0x1000, 512, 0, 0)],
        ),
        (
            "readable after writable",
            "ReadableAfterWritable",
            vec![
                desc(at, 16, NEXT, 1),
                desc(at + 0x3000, 1, WRITE | NEXT, 2),
                desc(at + 0x1000, 512, 0, 0),
            ],
        ),
    ];
    for (what, reason, descs) in &cases {
        breaks_queue_0(&t, &sock, descs, what, reason);
    }

    // An avail index far ahead of the ring breaks the queue, never the daemon.
    let mut g = Guest::connect(&sock);
    let (_, avail, _) = ring_gpas(0);
    g.write_bytes(avail + 2, &(QSIZE * 4).to_le_bytes());
    g.kicks[0].write(1).unwrap();
    assert_eq!(g.read_ok(1, 2, 0, 512).len(), 512);
    assert_eq!(g.used_idx(0), 0, "a corrupt avail index breaks the queue");
    assert!(t.stderr().contains("BadAvailIndex"), "{}", t.stderr());
    drop(g);

    // After every bad guest, a reconnect is served, and so is the other controller.
    let mut g = Guest::connect(&sock);
    assert_eq!(g.read_ok(0, 0, 8, 4096), data);
    let mut ro = Guest::connect(&ro_sock);
    assert_eq!(ro.read_ok(0, 0, 0, 512), vec![0; 512]);
    drop((g, ro));
    let ctrls = t.rpc_json(&["vhost_get_controllers"]);
    assert_eq!(ctrls.as_array().unwrap().len(), 2);
}
