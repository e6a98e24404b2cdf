//! I/O of a reactor without a connection of the bdev (the server allows only one, or fewer
//! connections than reactors), carried to the bdev's home reactor and its completion carried
//! back: two bounded lock-free queues per (bdev, reactor) and an eventfd each way to wake a
//! sleeping reactor. Nothing is allocated or locked per I/O; the I/O's memory stays the
//! submitter's, which the home reactor fills or sends from while the submitter waits.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::ClientShared;
use crate::bdev::{BdevChannel, BdevError, IoBuf, IoDone, IoHandle, IoType};
use crate::runtime::{current_reactor, register_poller, unregister_poller, PollerId};

/// Relayed I/O in flight per (bdev, reactor); more waits on the submitting reactor.
const DEPTH: usize = 256;

/// One relayed I/O: what the home reactor needs to serve it.
struct Relayed {
    io_type: IoType,
    offset_blocks: u64,
    num_blocks: u64,
    buf: IoBuf,
    fua: bool,
    tag: u64,
}

// SAFETY: the only non-Send part is the raw buffer view. The memory belongs to the I/O the
// submitting reactor keeps in its table until the completion comes back; between the two,
// only the home reactor touches it, and the queues order every access (push happens-before
// pop).
unsafe impl Send for Relayed {}

/// Both directions of one (bdev, reactor) relay.
pub(super) struct RelayLink {
    to_home: ArrayQueue<Relayed>,
    back: ArrayQueue<(u64, i32)>,
    /// Written by the submitter after pushing requests; in the home's epoll set.
    home_wake: OwnedFd,
    /// Written by the home after pushing completions; the submitter's poller's wake fd.
    origin_wake: OwnedFd,
    /// Completions were pushed and the origin woken; it clears this before taking them, so
    /// one wake-up covers every completion pushed until then.
    back_pending: AtomicBool,
    /// The submitting channel is gone: the home forgets the link.
    closed: AtomicBool,
}

fn eventfd() -> Result<OwnedFd, BdevError> {
    // SAFETY: plain syscall; the new fd is owned by the OwnedFd at once.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(BdevError::Os {
            context: "creating an eventfd".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kick(fd: RawFd) {
    let one = 1u64;
    // SAFETY: writing 8 bytes from a u64 to an eventfd we own.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd so level-triggered waiting stops reporting it.
pub(super) fn drain(fd: RawFd) {
    let mut value = 0u64;
    // SAFETY: reading 8 bytes into a u64 from an eventfd we own (non-blocking).
    unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
}

impl RelayLink {
    /// The fd the home reactor watches for this link.
    pub(super) fn home_fd(&self) -> RawFd {
        self.home_wake.as_raw_fd()
    }

    /// Whether the submitting side went away.
    pub(super) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The next relayed I/O, as an I/O of the home reactor completing into `done`.
    pub(super) fn next(&self, done: &Rc<dyn IoDone>) -> Option<IoHandle> {
        let r = self.to_home.pop()?;
        let mut io = IoHandle::new(
            r.io_type,
            r.offset_blocks,
            r.num_blocks,
            r.buf,
            done.clone(),
            r.tag,
        );
        io.fua = r.fua;
        Some(io)
    }
}

/// The home side's completion callback of one link's I/O.
pub(super) struct RelayDone(pub(super) Arc<RelayLink>);

impl IoDone for RelayDone {
    fn io_done(&self, io: IoHandle) {
        let status = match io.status() {
            Ok(()) => 0,
            Err(e) => e,
        };
        // Never full: the submitter keeps at most DEPTH I/Os out, the queue's capacity.
        let _ = self.0.back.push((io.tag, status));
        // Woken here rather than by the home's poller: this completion may come after the
        // home forgot the link (bdev deleted with I/O in flight), and must still get back.
        if !self.0.back_pending.swap(true, Ordering::AcqRel) {
            kick(self.0.origin_wake.as_raw_fd());
        }
    }
}

struct Table {
    inflight: Vec<Option<IoHandle>>,
    free: Vec<u32>,
    waiting: VecDeque<IoHandle>,
    /// Requests were pushed since the home was last woken.
    kick_home: bool,
}

/// A reactor's channel to a bdev whose connections live on other reactors.
pub(super) struct RelayChannel {
    link: Arc<RelayLink>,
    table: RefCell<Table>,
}

impl RelayChannel {
    /// Sets up the link and announces it to the home reactor.
    pub(super) fn new(shared: &Arc<ClientShared>) -> Result<Rc<RelayChannel>, BdevError> {
        let link = Arc::new(RelayLink {
            to_home: ArrayQueue::new(DEPTH),
            back: ArrayQueue::new(DEPTH),
            home_wake: eventfd()?,
            origin_wake: eventfd()?,
            back_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let channel = Rc::new(RelayChannel {
            link: link.clone(),
            table: RefCell::new(Table {
                inflight: Vec::with_capacity(DEPTH),
                free: Vec::with_capacity(DEPTH),
                waiting: VecDeque::with_capacity(DEPTH),
                kick_home: false,
            }),
        });
        // The poller unregisters itself once the channel is gone (a Drop impl could not:
        // it may run while the reactor shuts down); it holds the link, so the fd the reactor
        // sleeps on stays open exactly as long as the poller.
        let weak: Weak<RelayChannel> = Rc::downgrade(&channel);
        let own_id: Rc<Cell<Option<PollerId>>> = Rc::new(Cell::new(None));
        let own = own_id.clone();
        let held = link.clone();
        let id = register_poller(
            Box::new(move || match weak.upgrade() {
                Some(ch) => ch.poll(),
                None => {
                    held.closed.store(true, Ordering::Release);
                    if let Some(id) = own.get() {
                        unregister_poller(id);
                    }
                    0
                }
            }),
            None,
            Some(link.origin_wake.as_raw_fd()),
        );
        own_id.set(Some(id));
        let id = shared.id;
        tracing::debug!(
            bdev = shared.name,
            from = current_reactor(),
            home = shared.home(),
            "NBD I/O relayed to the home reactor"
        );
        shared.rt.send_msg(shared.home(), move || {
            if let Ok(r) = super::reactor::ClientReactor::get() {
                r.add_relay(id, link);
            }
        });
        Ok(channel)
    }

    fn relay(&self, t: &mut Table, io: IoHandle) {
        let tag = match t.free.pop() {
            Some(i) => i as usize,
            None if t.inflight.len() < DEPTH => {
                t.inflight.push(None);
                t.inflight.len() - 1
            }
            None => return t.waiting.push_back(io),
        };
        let relayed = Relayed {
            io_type: io.io_type,
            offset_blocks: io.offset_blocks,
            num_blocks: io.num_blocks,
            buf: io.buf,
            fua: io.fua,
            tag: tag as u64,
        };
        t.inflight[tag] = Some(io);
        // Never full: at most DEPTH tags exist.
        let _ = self.link.to_home.push(relayed);
        t.kick_home = true;
    }

    /// Completions back from the home; waiting I/O relayed; the home woken once per pass.
    fn poll(&self) -> usize {
        let mut t = self.table.borrow_mut();
        let mut work = 0;
        // Cleared before taking completions: one pushed meanwhile wakes us again.
        if self.link.back_pending.swap(false, Ordering::AcqRel) {
            drain(self.link.origin_wake.as_raw_fd());
        }
        while let Some((tag, status)) = self.link.back.pop() {
            work += 1;
            let Some(io) = t.inflight.get_mut(tag as usize).and_then(Option::take) else {
                continue;
            };
            t.free.push(tag as u32);
            io.complete(if status == 0 { Ok(()) } else { Err(status) });
        }
        while !t.free.is_empty() || t.inflight.len() < DEPTH {
            let Some(io) = t.waiting.pop_front() else {
                break;
            };
            self.relay(&mut t, io);
        }
        if std::mem::take(&mut t.kick_home) {
            kick(self.link.home_wake.as_raw_fd());
            work += 1;
        }
        work
    }
}

impl Drop for RelayChannel {
    fn drop(&mut self) {
        self.link.closed.store(true, Ordering::Release);
    }
}

impl BdevChannel for RelayChannel {
    fn submit(&self, io: IoHandle) {
        let mut t = self.table.borrow_mut();
        if t.waiting.is_empty() {
            self.relay(&mut t, io);
        } else {
            t.waiting.push_back(io);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
