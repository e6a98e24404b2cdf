//! Every NBD client connection of one reactor, served by one poller whose wake fd is their
//! epoll set (one `epoll_wait` per pass however many NBD bdevs the reactor serves), and a
//! timed poller that enforces the I/O timeout and starts reconnect attempts when their
//! backoff ran out. An attempt runs the blocking handshake on a thread of its own and hands
//! the socket back to this reactor by message, so the reactor never waits on a server.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, Link};
use super::handshake::{self, Negotiated};
use super::relay::{self, RelayDone, RelayLink};
use super::ClientShared;
use crate::bdev::IoDone;
use crate::runtime::epoll::Epoll;
use crate::runtime::{current_reactor, register_poller, unregister_poller, PollerId};

/// How often timeouts and due reconnects are checked: the precision of the I/O timeout.
const TIMER_PERIOD: Duration = Duration::from_millis(100);
/// epoll events taken per pass.
const MAX_EVENTS: usize = 64;
/// epoll key of every relay's wake fd (connection keys count up from 1).
const RELAY_KEY: u64 = u64::MAX;

/// A connection's socket and session as a handshake produced them, or why it failed.
pub(super) type Connected = Result<(OwnedFd, Negotiated), String>;

/// This reactor's NBD client connections.
pub(super) struct ClientReactor {
    epoll: Epoll,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    /// Connections with work queued (submissions, readiness), serviced by the next pass.
    dirty: RefCell<Vec<Rc<Conn>>>,
    batch: RefCell<Vec<Rc<Conn>>>,
    events: RefCell<Vec<libc::epoll_event>>,
    pollers: Cell<Option<(PollerId, PollerId)>>,
    /// Links from reactors without a connection, by bdev, with their completion callback.
    relays: RefCell<Vec<Relay>>,
}

/// One relay served here.
struct Relay {
    id: u64,
    link: Arc<RelayLink>,
    done: Rc<dyn IoDone>,
}

thread_local! {
    static REACTOR: RefCell<Option<Rc<ClientReactor>>> = const { RefCell::new(None) };
}

/// A process-unique connection key (its epoll key).
fn next_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl ClientReactor {
    /// This reactor's set, created on first use.
    pub(super) fn get() -> Result<Rc<ClientReactor>, String> {
        if let Some(r) = REACTOR.with(|r| r.borrow().clone()) {
            return Ok(r);
        }
        let epoll = Epoll::new().map_err(|e| format!("cannot create an epoll set: {e}"))?;
        let r = Rc::new(ClientReactor {
            epoll,
            conns: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::with_capacity(64)),
            batch: RefCell::new(Vec::with_capacity(64)),
            events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]),
            pollers: Cell::new(None),
            relays: RefCell::new(Vec::new()),
        });
        REACTOR.with(|slot| *slot.borrow_mut() = Some(r.clone()));
        Ok(r)
    }

    /// This reactor's set if it has one (a reconnect result arriving after the bdev left).
    pub(super) fn existing() -> Option<Rc<ClientReactor>> {
        REACTOR.with(|r| r.borrow().clone())
    }

    /// Adds connection `index` of `shared` to this reactor: in service at once with the
    /// socket `initial` holds, or down and retried (the reason recorded) without one.
    pub(super) fn install(
        self: &Rc<Self>,
        shared: &Arc<ClientShared>,
        index: usize,
        initial: Connected,
    ) {
        let conn = Rc::new(Conn::new(index, next_key(), shared.clone()));
        match initial {
            Ok((fd, session)) => conn.adopt(fd, session, &self.epoll),
            Err(why) => conn.attempt_failed(&why),
        }
        self.conns.borrow_mut().insert(conn.key, conn);
        self.ensure_pollers();
    }

    /// This reactor's connections of the bdev `id`, in connection order.
    pub(super) fn conns_of(&self, id: u64) -> Vec<Rc<Conn>> {
        let mut list: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| c.shared.id == id)
            .cloned()
            .collect();
        list.sort_by_key(|c| c.index);
        list
    }

    /// The first connection of bdev `id` here: the one relayed I/O goes to.
    pub(super) fn first_conn_of(&self, id: u64) -> Option<Rc<Conn>> {
        self.conns_of(id).into_iter().next()
    }

    /// Serves relayed I/O of bdev `id` arriving through `link`.
    pub(super) fn add_relay(self: &Rc<Self>, id: u64, link: Arc<RelayLink>) {
        let interest = libc::EPOLLIN as u32;
        if let Err(e) = self
            .epoll
            .ctl(libc::EPOLL_CTL_ADD, link.home_fd(), interest, RELAY_KEY)
        {
            tracing::error!(error = %e, "cannot watch an NBD relay");
        }
        let done: Rc<dyn IoDone> = Rc::new(RelayDone(link.clone()));
        self.relays.borrow_mut().push(Relay { id, link, done });
        self.ensure_pollers();
    }

    /// Takes relayed I/O into the connections; forgets links whose submitter is gone.
    fn serve_relays(&self) -> usize {
        let mut work = 0;
        let mut closed = false;
        for r in self.relays.borrow().iter() {
            while let Some(io) = r.link.next(&r.done) {
                super::submit_local(r.id, io);
                work += 1;
            }
            closed |= r.link.closed();
        }
        if closed {
            self.relays.borrow_mut().retain(|r| {
                let keep = !r.link.closed();
                if !keep {
                    let _ = self
                        .epoll
                        .ctl(libc::EPOLL_CTL_DEL, r.link.home_fd(), 0, RELAY_KEY);
                }
                keep
            });
        }
        work
    }

    /// Closes and forgets the connections of bdev `id` (deleted): what they hold fails.
    pub(super) fn remove(&self, id: u64) {
        let gone: Vec<Rc<Conn>> = {
            let mut conns = self.conns.borrow_mut();
            let keys: Vec<u64> = conns
                .iter()
                .filter(|(_, c)| c.shared.id == id)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| conns.remove(k)).collect()
        };
        for conn in gone {
            conn.close(&self.epoll, libc::ENODEV);
        }
        self.relays.borrow_mut().retain(|r| {
            let keep = r.id != id;
            if !keep {
                let _ = self
                    .epoll
                    .ctl(libc::EPOLL_CTL_DEL, r.link.home_fd(), 0, RELAY_KEY);
            }
            keep
        });
        if self.conns.borrow().is_empty() && self.relays.borrow().is_empty() {
            if let Some((a, b)) = self.pollers.take() {
                unregister_poller(a);
                unregister_poller(b);
            }
        }
    }

    /// Asks for `conn` to be serviced by the next pass (after a submission).
    pub(super) fn mark(&self, conn: &Rc<Conn>) {
        if !conn.queued.replace(true) {
            self.dirty.borrow_mut().push(conn.clone());
        }
    }

    fn ensure_pollers(self: &Rc<Self>) {
        if self.pollers.get().is_some() {
            return;
        }
        let me = self.clone();
        let io = register_poller(Box::new(move || me.poll()), None, Some(self.epoll.fd()));
        let me = self.clone();
        let timer = register_poller(Box::new(move || me.tick()), Some(TIMER_PERIOD), None);
        self.pollers.set(Some((io, timer)));
    }

    /// One pass: readiness from epoll, then every connection with work.
    fn poll(&self) -> usize {
        let mut events = self.events.borrow_mut();
        let n = self.epoll.ready(&mut events);
        if n > 0 {
            let conns = self.conns.borrow();
            for e in &events[..n] {
                let key = e.u64;
                if key == RELAY_KEY {
                    for r in self.relays.borrow().iter() {
                        relay::drain(r.link.home_fd());
                    }
                } else if let Some(conn) = conns.get(&key) {
                    conn.on_event(e.events);
                    self.mark(conn);
                }
            }
        }
        drop(events);
        let mut work = n + self.serve_relays();
        let mut batch = self.batch.borrow_mut();
        std::mem::swap(&mut *batch, &mut *self.dirty.borrow_mut());
        for conn in batch.drain(..) {
            conn.queued.set(false);
            work += conn.service(&self.epoll);
        }
        work
    }

    /// Enforces I/O timeouts and starts the reconnect attempts that are due.
    fn tick(&self) -> usize {
        let now = Instant::now();
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        let mut work = 0;
        for conn in conns {
            match conn.link() {
                Link::Up => {
                    let Some(timeout) = conn.shared.opts.io_timeout else {
                        continue;
                    };
                    if conn.overdue(timeout) {
                        let why = format!("no reply within {} ms", timeout.as_millis());
                        conn.disconnect(&self.epoll, &why, libc::ETIMEDOUT);
                        work += 1;
                    }
                }
                Link::Down {
                    retry_at: Some(at), ..
                } if at <= now => {
                    start_attempt(&conn);
                    work += 1;
                }
                Link::Down { .. } => {}
            }
        }
        work
    }

    /// A reconnect attempt of connection `key` finished.
    fn attempt_done(&self, key: u64, result: Connected) {
        let Some(conn) = self.conns.borrow().get(&key).cloned() else {
            return; // The bdev was deleted meanwhile: the socket closes here.
        };
        match result {
            Ok((fd, session)) => {
                tracing::info!(
                    bdev = conn.shared.name,
                    connection = conn.index,
                    "NBD connection re-established"
                );
                conn.adopt(fd, session, &self.epoll);
                self.mark(&conn);
            }
            Err(why) => conn.attempt_failed(&why),
        }
    }
}

/// Runs one reconnect attempt of `conn` on a thread of its own; the result comes back to
/// this reactor by message.
fn start_attempt(conn: &Rc<Conn>) {
    let attempt = conn.attempt_started();
    let shared = conn.shared.clone();
    let key = conn.key;
    let Some(reactor) = current_reactor() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("nbd-reconnect".into())
        .spawn(move || {
            let result = reconnect(&shared);
            tracing::debug!(
                bdev = shared.name,
                attempt,
                ok = result.is_ok(),
                "NBD reconnect attempt"
            );
            shared.rt.send_msg(reactor, move || {
                if let Some(r) = ClientReactor::existing() {
                    r.attempt_done(key, result);
                }
            });
        });
    if let Err(e) = spawned {
        conn.attempt_failed(&format!("cannot start a reconnect thread: {e}"));
    }
}

/// Connects for `shared` as a reconnect must: the same export, unchanged.
pub(super) fn reconnect(shared: &ClientShared) -> Connected {
    let (fd, session) =
        handshake::connect(&shared.uri, shared.opts.connect_timeout).map_err(|e| e.to_string())?;
    match session.differs_from(&shared.first) {
        Some(why) => Err(why),
        None => Ok((fd, session)),
    }
}
