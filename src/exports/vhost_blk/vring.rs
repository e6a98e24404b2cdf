//! One virtqueue on the reactor that owns it: the data path of vhost-user-blk. A poller takes
//! descriptor chains from the avail ring (`virtio-queue`), turns each into one bdev I/O on
//! the guest's own memory, and on completion writes the status byte, puts the chain on the
//! used ring and signals the call eventfd (batched: once per poll). In busy mode the poller
//! runs every reactor iteration and the guest is told not to kick; in interrupt mode the
//! kick eventfd is the poller's wake fd. No thread, lock or allocation per request: request
//! state lives in a slot per descriptor head, created when the queue starts.
//!
//! Bad guests: a chain that leaves guest memory, loops, is longer than the queue, reuses a
//! head still in flight, has its readable part after its writable part, or lacks a full
//! header or a status byte breaks the queue (virtio's "device needs reset"): it stops
//! taking requests until the frontend resets it; in-flight I/O still completes. Requests
//! that are well-formed but wrong (range, type, read-only) fail with their virtio status.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::inflight::InflightQueue;
use super::memory::GuestMem;
use super::virtio_blk::{self, Command, DataLens, Geometry, Header, Status, HEADER_LEN, ID_BYTES};
use crate::bdev::{Bdev, IoBuf, IoChannel, IoDone, IoHandle, IoType};
use crate::runtime::buf::{DmaBuf, BUF_ALIGN};
use crate::runtime::channel::{self as rchannel, DeviceId};
use crate::runtime::{register_poller, unregister_poller, PollerId};

/// A run of guest memory, already translated to this process's address.
#[derive(Clone, Copy)]
struct Seg {
    ptr: *mut u8,
    len: usize,
}

/// What a started queue needs; built by the control thread, moved to the reactor.
pub(super) struct VringSetup {
    /// The ring, configured (size, addresses, indexes, event index) and ready.
    pub queue: Queue,
    /// The memory table the ring lives in.
    pub mem: Arc<GuestMem>,
    /// Kick eventfd (the guest's doorbell).
    pub kick: File,
    /// Call eventfd (our interrupt to the guest); none: the guest polls.
    pub call: Option<File>,
    /// The exported bdev.
    pub bdev: Arc<Bdev>,
    /// What virtio-blk shows of it.
    pub geometry: Geometry,
    /// Controller name and queue index, for logs.
    pub label: Arc<str>,
    /// Whether the reactors sleep when idle.
    pub interrupt_mode: bool,
    /// Where the queue records its heads in flight (INFLIGHT_SHMFD negotiated).
    pub inflight: Option<InflightQueue>,
}

/// What a pause does once the queue's in-flight I/O drained.
pub(super) enum Pause {
    /// Stop the queue (GET_VRING_BASE, disconnect, delete).
    Stop,
    /// Switch to a new memory table and go on (SET_MEM_TABLE while running).
    SwapMemory(Arc<GuestMem>),
}

/// A request between its chain being taken and its completion.
struct Slot {
    busy: bool,
    status: *mut u8,
    /// Device-writable data bytes the request fills (read data, ID), reported in `used.len`.
    written: u32,
    /// Pool memory standing in for guest buffers the bdev cannot use directly.
    bounce: Option<DmaBuf>,
    /// For a bounced read: the guest segments the data is copied back into.
    scatter: Vec<Seg>,
}

/// One started virtqueue, registered as the reactor's channel under its [`DeviceId`].
pub(super) struct Vring {
    me: Weak<Vring>,
    dev: DeviceId,
    queue: RefCell<Queue>,
    mem: RefCell<Arc<GuestMem>>,
    kick: File,
    call: RefCell<Option<File>>,
    channel: IoChannel,
    geometry: Geometry,
    serial: [u8; ID_BYTES],
    label: Arc<str>,
    interrupt_mode: bool,
    slots: RefCell<Vec<Slot>>,
    /// Chain walking scratch, kept to reuse its capacity.
    readable: RefCell<Vec<Seg>>,
    writable: RefCell<Vec<Seg>>,
    in_flight: Cell<usize>,
    /// The shared record of heads taken and not yet returned, and the next head's number
    /// in it (pop order, for resubmission after a restart).
    inflight: Option<InflightQueue>,
    counter: Cell<u64>,
    need_signal: Cell<bool>,
    broken: Cell<bool>,
    paused: Cell<bool>,
    pending_pause: RefCell<Option<(Pause, Sender<u16>)>>,
    poller: Cell<Option<PollerId>>,
}

/// Why a chain cannot be served at all (the queue breaks).
#[derive(Debug)]
enum BadChain {
    OutsideMemory,
    Malformed,
    HeadInUse,
    ReadableAfterWritable,
    NoHeader,
    NoStatus,
    BadAvailIndex,
    UsedRing,
}

/// Starts `setup` as a queue on the calling reactor.
pub(super) fn start(dev: DeviceId, setup: VringSetup) -> Result<(), String> {
    // The frontend may have made the kick eventfd blocking; the poller must never wait on
    // it. (The flag is shared with the frontend's copy, which only ever writes to it.)
    // SAFETY: fcntl on a descriptor we own; flags are read then written back with one more.
    unsafe {
        let fd = setup.kick.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    let channel = setup.bdev.io_channel().map_err(|e| e.to_string())?;
    let mut queue = setup.queue;
    let (counter, replay) = match &setup.inflight {
        Some(record) => resume(&mut queue, &setup.mem, record)?,
        None => (0, Vec::new()),
    };
    let size = queue.size() as usize;
    let slots = (0..size)
        .map(|_| Slot {
            busy: false,
            status: std::ptr::null_mut(),
            written: 0,
            bounce: None,
            scatter: Vec::new(),
        })
        .collect();
    let serial = virtio_blk::device_id(setup.bdev.name());
    let vring = Rc::new_cyclic(|me| Vring {
        me: me.clone(),
        dev,
        queue: RefCell::new(queue),
        mem: RefCell::new(setup.mem),
        kick: setup.kick,
        call: RefCell::new(setup.call),
        channel,
        geometry: setup.geometry,
        serial,
        label: setup.label,
        interrupt_mode: setup.interrupt_mode,
        slots: RefCell::new(slots),
        readable: RefCell::new(Vec::with_capacity(size)),
        writable: RefCell::new(Vec::with_capacity(size)),
        in_flight: Cell::new(0),
        inflight: setup.inflight,
        counter: Cell::new(counter),
        need_signal: Cell::new(false),
        broken: Cell::new(false),
        paused: Cell::new(false),
        pending_pause: RefCell::new(None),
        poller: Cell::new(None),
    });
    rchannel::get_or_create(dev, || Ok(vring.clone()))?;
    if !vring.interrupt_mode {
        let mem = vring.mem.borrow().clone();
        // Polled without pause: the guest need not kick (its notifications cost exits).
        let _ = vring.queue.borrow_mut().disable_notification(mem.memory());
    }
    let me = vring.clone();
    let id = register_poller(
        Box::new(move || me.poll()),
        None,
        Some(vring.kick.as_raw_fd()),
    );
    vring.poller.set(Some(id));
    if !replay.is_empty() {
        tracing::info!(
            queue = %vring.label,
            requests = replay.len(),
            "vhost-user-blk: resubmitting the requests in flight before the reconnect"
        );
        vring.replay(&replay)?;
    }
    Ok(())
}

/// Settles a queue's inflight record against its used ring: a record left by an earlier
/// daemon makes the queue go on from the guest's used index, past the heads still in
/// flight (returned, oldest first, to be served again; the guest's avail ring may have
/// reused their slots); returns the next pop counter and those heads.
fn resume(
    queue: &mut Queue,
    mem: &GuestMem,
    record: &InflightQueue,
) -> Result<(u64, Vec<u16>), String> {
    let used = queue
        .used_idx(mem.memory(), Ordering::Acquire)
        .map_err(|e| format!("cannot read the used ring: {e}"))?
        .0;
    let resume = record.resume(used);
    if resume.restored {
        queue.set_next_used(used);
        queue.set_next_avail(used.wrapping_add(resume.heads.len() as u16));
    }
    Ok((resume.next_counter, resume.heads))
}

/// Pauses the calling reactor's queue `dev`; `reply` gets the next avail index once its
/// in-flight I/O drained and `action` was applied. A queue that is gone answers at once
/// with `fallback`.
pub(super) fn pause(dev: DeviceId, action: Pause, reply: Sender<u16>, fallback: u16) {
    match rchannel::lookup::<Vring>(dev) {
        Some(vring) => vring.request_pause(action, reply),
        None => {
            let _ = reply.send(fallback);
        }
    }
}

/// Replaces the call eventfd of the calling reactor's queue `dev` (the frontend masks and
/// unmasks the guest's interrupt this way while the queue runs).
pub(super) fn set_call(dev: DeviceId, call: Option<File>) {
    if let Some(vring) = rchannel::lookup::<Vring>(dev) {
        *vring.call.borrow_mut() = call;
    }
}

/// Copies guest bytes out of `segs` into `out` from the start; returns how many.
fn gather(segs: &[Seg], out: &mut [u8]) -> usize {
    let mut done = 0;
    for s in segs {
        if done == out.len() {
            break;
        }
        let n = s.len.min(out.len() - done);
        // SAFETY: each segment was checked to lie inside one mapped guest region, which
        // stays mapped while the request is alive; `out` is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(s.ptr, out[done..].as_mut_ptr(), n) };
        done += n;
    }
    done
}

/// Copies `data` into the guest segments `segs`, in order; returns how many bytes went.
fn scatter(segs: &[Seg], data: &[u8]) -> usize {
    let mut done = 0;
    for s in segs {
        if done == data.len() {
            break;
        }
        let n = s.len.min(data.len() - done);
        // SAFETY: as in `gather`, the segment is guest memory mapped for the request's life.
        unsafe { std::ptr::copy_nonoverlapping(data[done..].as_ptr(), s.ptr, n) };
        done += n;
    }
    done
}

/// Drops the first `n` bytes of `segs` (the header off the readable part).
fn skip_front(segs: &mut Vec<Seg>, mut n: usize) {
    let mut drop = 0;
    for s in segs.iter_mut() {
        if n == 0 {
            break;
        }
        let k = s.len.min(n);
        // SAFETY: k is within the segment, so the pointer stays inside it.
        s.ptr = unsafe { s.ptr.add(k) };
        s.len -= k;
        n -= k;
        if s.len == 0 {
            drop += 1;
        }
    }
    segs.drain(..drop);
}

/// The segments as one run of memory, if each ends where the next starts.
fn contiguous(segs: &[Seg]) -> Option<Seg> {
    let first = *segs.first()?;
    let mut len = first.len;
    for s in &segs[1..] {
        if first.ptr.wrapping_add(len) != s.ptr {
            return None;
        }
        len += s.len;
    }
    Some(Seg {
        ptr: first.ptr,
        len,
    })
}

fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.len as u64).sum()
}

impl Vring {
    fn poll(&self) -> usize {
        let mut work = 0;
        if self.need_signal.get() {
            self.signal();
            work += 1;
        }
        if self.interrupt_mode {
            let mut value = 0u64;
            // SAFETY: reading 8 bytes into a u64 from the kick eventfd, non-blocking.
            unsafe { libc::read(self.kick.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        }
        if self.broken.get() || self.paused.get() {
            return work;
        }
        let mem = self.mem.borrow().clone();
        let mut queue = self.queue.borrow_mut();
        let budget = queue.size() as usize;
        let mut taken = 0;
        loop {
            if self.interrupt_mode {
                let _ = queue.disable_notification(mem.memory());
            }
            while taken < budget {
                if let Err(bad) = self.check_avail(&queue, &mem) {
                    drop(queue);
                    self.break_queue(bad);
                    return work + taken;
                }
                let Some(chain) = queue.pop_descriptor_chain(mem.memory()) else {
                    break;
                };
                taken += 1;
                let head = chain.head_index();
                if let Err(bad) = self.take(&mut queue, &mem, head, chain) {
                    drop(queue);
                    self.break_queue(bad);
                    return work + taken;
                }
            }
            if taken >= budget || !self.interrupt_mode {
                break;
            }
            // Re-enable kicks, then look once more: a chain made available in between would
            // otherwise wait for a kick that never comes.
            match queue.enable_notification(mem.memory()) {
                Ok(true) => continue,
                _ => break,
            }
        }
        work + taken
    }

    /// Serves again `heads`, in order, from a copy of an avail ring offering them (see
    /// [`GuestMem::with_replay_ring`]), then wakes the poller for what the guest queued
    /// while no daemon listened.
    fn replay(&self, heads: &[u16]) -> Result<(), String> {
        let mem = self.mem.borrow().clone();
        let (replay_mem, ring_at) = mem.with_replay_ring(heads)?;
        let mut queue = self.queue.borrow_mut();
        let mut replay = Queue::new(queue.max_size()).map_err(|e| e.to_string())?;
        replay
            .try_set_size(queue.size())
            .map_err(|e| e.to_string())?;
        replay
            .try_set_desc_table_address(GuestAddress(queue.desc_table()))
            .map_err(|e| e.to_string())?;
        replay
            .try_set_avail_ring_address(GuestAddress(ring_at))
            .map_err(|e| e.to_string())?;
        replay.set_ready(true);
        while let Some(chain) = replay.pop_descriptor_chain(&replay_mem) {
            let head = chain.head_index();
            if let Err(bad) = self.take(&mut queue, &mem, head, chain) {
                drop(queue);
                self.break_queue(bad);
                return Ok(());
            }
        }
        let one = 1u64;
        // SAFETY: writing 8 bytes from a u64 to the kick eventfd (non-blocking).
        unsafe { libc::write(self.kick.as_raw_fd(), (&one as *const u64).cast(), 8) };
        Ok(())
    }

    /// Refuses an avail index more than a queue ahead of ours (the guest corrupted it).
    fn check_avail(&self, queue: &Queue, mem: &GuestMem) -> Result<(), BadChain> {
        let avail = queue
            .avail_idx(mem.memory(), Ordering::Acquire)
            .map_err(|_| BadChain::BadAvailIndex)?;
        if (avail - Wrapping(queue.next_avail())).0 > queue.size() {
            return Err(BadChain::BadAvailIndex);
        }
        Ok(())
    }

    fn break_queue(&self, why: BadChain) {
        self.broken.set(true);
        tracing::error!(
            queue = %self.label,
            reason = ?why,
            "vhost-user-blk: the guest broke the virtqueue protocol; queue stopped until reset"
        );
    }

    /// Walks one chain into readable and writable segments of guest memory.
    fn walk<I: Iterator<Item = virtio_queue::desc::split::Descriptor>>(
        &self,
        mem: &GuestMem,
        chain: I,
    ) -> Result<(), BadChain> {
        let mut readable = self.readable.borrow_mut();
        let mut writable = self.writable.borrow_mut();
        readable.clear();
        writable.clear();
        let mut more = true;
        for desc in chain {
            more = desc.has_next();
            let len = desc.len() as usize;
            if len == 0 {
                continue;
            }
            let ptr = mem
                .host_range(desc.addr().0, len)
                .ok_or(BadChain::OutsideMemory)?;
            if desc.is_write_only() {
                writable.push(Seg { ptr, len });
            } else if !writable.is_empty() {
                return Err(BadChain::ReadableAfterWritable);
            } else {
                readable.push(Seg { ptr, len });
            }
        }
        // The iterator stops early, silently, on a loop, a chain longer than the queue, an
        // index out of range or a bad indirect table: the last descriptor then still
        // pointed further. A chain that yielded nothing at all is as bad.
        if more {
            return Err(BadChain::Malformed);
        }
        Ok(())
    }

    /// Serves one chain: parses it, then finishes it at once (bad request, GET_ID) or
    /// submits its bdev I/O.
    fn take(
        &self,
        queue: &mut Queue,
        mem: &GuestMem,
        head: u16,
        chain: virtio_queue::DescriptorChain<&vm_memory::GuestMemoryMmap>,
    ) -> Result<(), BadChain> {
        if self
            .slots
            .borrow()
            .get(head as usize)
            .is_none_or(|s| s.busy)
        {
            return Err(BadChain::HeadInUse);
        }
        self.walk(mem, chain)?;
        let mut readable = self.readable.borrow_mut();
        let mut writable = self.writable.borrow_mut();
        let mut hdr = [0u8; HEADER_LEN];
        if gather(&readable, &mut hdr) < HEADER_LEN {
            return Err(BadChain::NoHeader);
        }
        skip_front(&mut readable, HEADER_LEN);
        let last = writable.last_mut().ok_or(BadChain::NoStatus)?;
        last.len -= 1;
        // SAFETY: the last writable segment has at least one byte (empty ones are skipped).
        let status = unsafe { last.ptr.add(last.len) };
        if last.len == 0 {
            writable.pop();
        }
        let header = Header::parse(&hdr);
        let lens = DataLens {
            out_len: total(&readable),
            in_len: total(&writable),
        };
        let command = virtio_blk::command(&header, lens, &self.geometry);
        {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[head as usize];
            slot.busy = true;
            slot.status = status;
            slot.written = 0;
        }
        if let Some(record) = &self.inflight {
            let n = self.counter.get();
            record.mark(head, n);
            self.counter.set(n.wrapping_add(1));
        }
        let (io_type, offset_blocks, num_blocks) = match command {
            Err(status) => return self.put_used(queue, mem, head, status),
            Ok(Command::GetId) => {
                let n = scatter(&writable, &self.serial);
                self.slots.borrow_mut()[head as usize].written = n as u32;
                return self.put_used(queue, mem, head, Status::Ok);
            }
            Ok(Command::Range(io_type)) => {
                let mut segment = [0u8; virtio_blk::RANGE_SEGMENT_LEN];
                let range = if lens.out_len == segment.len() as u64 {
                    gather(&readable, &mut segment);
                    virtio_blk::range_command(io_type, &segment, &self.geometry)
                } else {
                    Err(Status::IoErr)
                };
                match range {
                    Ok((offset, count)) => (io_type, offset, count),
                    Err(status) => return self.put_used(queue, mem, head, status),
                }
            }
            Ok(Command::Io {
                io_type,
                offset_blocks,
                num_blocks,
            }) => (io_type, offset_blocks, num_blocks),
        };
        let buf = match io_type {
            IoType::Read => {
                self.slots.borrow_mut()[head as usize].written = lens.in_len as u32;
                self.data_buf(head, &writable, true)
            }
            IoType::Write => self.data_buf(head, &readable, false),
            _ => IoBuf::NONE,
        };
        drop((readable, writable));
        let Some(me) = self.me.upgrade() else {
            return Ok(());
        };
        self.in_flight.set(self.in_flight.get() + 1);
        let io = IoHandle::new(io_type, offset_blocks, num_blocks, buf, me, head as u64);
        self.channel.submit(io);
        Ok(())
    }

    /// The bdev buffer for a request's data: the guest's memory itself when it is one run
    /// aligned for any child, otherwise a pool buffer (filled now for a write, copied back
    /// at completion for a read).
    fn data_buf(&self, head: u16, segs: &[Seg], read: bool) -> IoBuf {
        if let Some(run) = contiguous(segs).filter(|r| (r.ptr as usize).is_multiple_of(BUF_ALIGN)) {
            // SAFETY: the run is guest memory inside one mapped region; the mapping is kept
            // (this queue holds the table) until the I/O completed, as a memory-table change
            // drains in-flight I/O first.
            return unsafe { IoBuf::from_raw(run.ptr, run.len) };
        }
        let len = total(segs) as usize;
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[head as usize];
        let mut bounce = DmaBuf::new(len);
        if read {
            slot.scatter.clear();
            slot.scatter.extend_from_slice(segs);
        } else {
            gather(segs, bounce.as_mut_slice());
        }
        // SAFETY: the buffer lives in the slot, untouched, until the I/O completes.
        let view = unsafe { IoBuf::from_dma(&mut bounce) };
        slot.bounce = Some(bounce);
        view
    }

    /// Writes the status, returns the chain to the guest, frees the slot (also for requests
    /// finished without bdev I/O: refused ones and GET_ID).
    fn put_used(
        &self,
        queue: &mut Queue,
        mem: &GuestMem,
        head: u16,
        status: Status,
    ) -> Result<(), BadChain> {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[head as usize];
        let written = if status == Status::Ok {
            slot.written
        } else {
            0
        };
        // SAFETY: the status byte was checked to be guest memory in the current table.
        unsafe { slot.status.write_volatile(status as u8) };
        slot.busy = false;
        slot.bounce = None;
        drop(slots);
        if let Some(record) = &self.inflight {
            record.before_used(head);
        }
        queue
            .add_used(mem.memory(), head, written + 1)
            .map_err(|_| BadChain::UsedRing)?;
        if let Some(record) = &self.inflight {
            record.after_used(head, queue.next_used());
        }
        self.need_signal.set(true);
        Ok(())
    }

    /// Interrupts the guest if it asked to be told about the used entries added.
    fn signal(&self) {
        self.need_signal.set(false);
        let mem = self.mem.borrow().clone();
        let wanted = self
            .queue
            .borrow_mut()
            .needs_notification(mem.memory())
            .unwrap_or(true);
        if let (true, Some(call)) = (wanted, &*self.call.borrow()) {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a u64 to the call eventfd.
            unsafe { libc::write(call.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn request_pause(&self, action: Pause, reply: Sender<u16>) {
        self.paused.set(true);
        *self.pending_pause.borrow_mut() = Some((action, reply));
        self.finish_pause();
    }

    /// Applies a requested pause once nothing is in flight.
    fn finish_pause(&self) {
        if self.in_flight.get() != 0 {
            return;
        }
        let Some((action, reply)) = self.pending_pause.borrow_mut().take() else {
            return;
        };
        if self.need_signal.get() {
            self.signal();
        }
        let next_avail = self.queue.borrow().next_avail();
        match action {
            Pause::Stop => {
                if let Some(id) = self.poller.take() {
                    unregister_poller(id);
                }
                rchannel::release(self.dev);
            }
            Pause::SwapMemory(mem) => {
                *self.mem.borrow_mut() = mem;
                self.paused.set(false);
            }
        }
        let _ = reply.send(next_avail);
    }
}

impl IoDone for Vring {
    fn io_done(&self, io: IoHandle) {
        let head = io.tag as u16;
        self.in_flight.set(self.in_flight.get() - 1);
        let status = match io.status() {
            Ok(()) => Status::Ok,
            Err(_) => Status::IoErr,
        };
        {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[head as usize];
            if let (Ok(()), Some(bounce)) = (io.status(), &slot.bounce) {
                if io.io_type == IoType::Read {
                    scatter(&slot.scatter, bounce.as_slice());
                }
            }
        }
        drop(io);
        let mem = self.mem.borrow().clone();
        let used = self.put_used(&mut self.queue.borrow_mut(), &mem, head, status);
        if let Err(bad) = used {
            self.break_queue(bad);
        }
        self.finish_pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(mem: &mut [u8], runs: &[(usize, usize)]) -> Vec<Seg> {
        runs.iter()
            .map(|&(at, len)| Seg {
                ptr: mem[at..].as_mut_ptr(),
                len,
            })
            .collect()
    }

    #[test]
    fn header_comes_off_the_front_even_when_split_over_segments() {
        let mut mem: Vec<u8> = (0..64).collect();
        let mut s = segs(&mut mem, &[(0, 10), (20, 10), (40, 20)]);
        let mut hdr = [0u8; HEADER_LEN];
        assert_eq!(gather(&s, &mut hdr), HEADER_LEN);
        assert_eq!(&hdr[..10], &(0..10).collect::<Vec<u8>>()[..]);
        assert_eq!(&hdr[10..], &[20, 21, 22, 23, 24, 25]);
        skip_front(&mut s, HEADER_LEN);
        assert_eq!(s.len(), 2, "the first segment is used up");
        assert_eq!(total(&s), 24);
        let mut rest = [0u8; 24];
        gather(&s, &mut rest);
        assert_eq!(rest[0], 26);
        assert_eq!(rest[4], 40);
    }

    #[test]
    fn adjacent_segments_are_one_run_and_gaps_are_not() {
        let mut mem = vec![0u8; 64];
        let joined = contiguous(&segs(&mut mem, &[(0, 16), (16, 16), (32, 8)])).unwrap();
        assert_eq!(joined.len, 40);
        assert!(contiguous(&segs(&mut mem, &[(0, 16), (20, 8)])).is_none());
        assert!(contiguous(&[]).is_none());
    }

    #[test]
    fn scatter_fills_segments_in_order_and_stops_at_the_data_end() {
        let mut mem = vec![0u8; 32];
        let s = segs(&mut mem, &[(0, 4), (10, 4), (20, 4)]);
        assert_eq!(scatter(&s, &[1, 2, 3, 4, 5, 6]), 6);
        assert_eq!(&mem[..4], &[1, 2, 3, 4]);
        assert_eq!(&mem[10..14], &[5, 6, 0, 0]);
        assert_eq!(&mem[20..24], &[0; 4]);
    }
}
