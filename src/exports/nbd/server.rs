//! The NBD server's control side: the export table, the listening socket (on reactor 0,
//! handing accepted sockets round-robin to the reactors), each reactor's connection set with
//! its epoll poller, and graceful teardown (export delete and server stop drain in-flight
//! I/O before the connections close). Everything here runs on the control path; the data
//! path is [`super::conn`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thiserror::Error;

use super::conn::Conn;
use super::proto::{Capabilities, Geometry};
use crate::bdev::{Bdev, BdevError, BdevRegistry, IoType};
use crate::exports::gate::{Gate, Ticket};
use crate::exports::socket::remove_stale_socket;
use crate::runtime::channel::{self as rchannel, on_every_reactor, DeviceId};
use crate::runtime::epoll::Epoll;
use crate::runtime::{register_poller, unregister_poller, PollerId, Runtime};

/// NBD's IANA port, the default of `nbd_server_start`.
pub const DEFAULT_PORT: u16 = 10809;
/// Most clients in transmission at once over all exports; more are accepted and closed at
/// once. Clients still in the handshake do not count: they have their own limit.
const MAX_CONNECTIONS: usize = 1024;
/// Most clients in the handshake at once on one reactor. A client arriving beyond it pushes
/// out the one that has been handshaking longest, so connections that never speak (or speak
/// too slowly) cannot keep a real client out: a real client finishes in a few round trips.
const MAX_HANDSHAKING_PER_REACTOR: usize = 64;
/// QEMU's default handshake limit (`handshake-max-seconds`), ours too.
pub const DEFAULT_HANDSHAKE_MAX_SECONDS: u64 = 10;
/// epoll key of the listening socket (connection keys count up from 0).
const LISTENER_KEY: u64 = u64::MAX;
/// How often a reactor with draining or handshaking connections checks their time limits.
const REAPER_PERIOD: Duration = Duration::from_millis(100);

/// Why an NBD control call was refused; each maps to SPDK's negative-errno RPC codes.
#[derive(Debug, Error)]
pub enum NbdError {
    /// `nbd_server_start` while a server runs.
    #[error("NBD server already running on {0}")]
    AlreadyRunning(String),
    /// An export call without a running server.
    #[error("NBD server is not running")]
    NotRunning,
    /// The export name is taken.
    #[error("NBD export '{0}' already exists")]
    ExportExists(String),
    /// No export by that name.
    #[error("NBD export '{0}' not found")]
    NoExport(String),
    /// The bdev could not be exported.
    #[error(transparent)]
    Bdev(#[from] BdevError),
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// The socket could not be set up.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl NbdError {
    /// The positive errno SPDK would report.
    pub fn errno(&self) -> i32 {
        match self {
            NbdError::AlreadyRunning(_) | NbdError::ExportExists(_) => libc::EEXIST,
            NbdError::NotRunning | NbdError::NoExport(_) => libc::ENODEV,
            NbdError::Bdev(e) => e.errno(),
            NbdError::Invalid(_) => libc::EINVAL,
            NbdError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// A bdev offered to NBD clients under a name.
pub struct Export {
    name: String,
    bdev: Arc<Bdev>,
    read_only: bool,
    /// Sessions in transmission on this export; closed by delete, which waits for them.
    attached: Arc<Gate>,
    /// Set by delete: the export's connections take no new requests.
    closing: AtomicBool,
    remove_key: Mutex<Option<u64>>,
}

impl Export {
    /// The name clients ask for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exported bdev.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    /// Whether delete (or server stop) is draining the export.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts a session: refused once the export is being deleted.
    pub fn attach(&self) -> Option<Ticket> {
        self.attached.enter()
    }

    /// Size, block size and capabilities, as the handshake and request checks need them.
    pub fn geometry(&self) -> Geometry {
        let b = self.bdev.backend();
        Geometry {
            size: self.bdev.size_bytes(),
            block_size: self.bdev.block_size(),
            caps: Capabilities {
                read_only: self.read_only,
                flush: b.io_type_supported(IoType::Flush),
                trim: b.io_type_supported(IoType::Unmap),
                write_zeroes: b.io_type_supported(IoType::WriteZeroes),
            },
        }
    }

    fn info_json(&self) -> Value {
        json!({
            "export_name": self.name,
            "bdev_name": self.bdev.name(),
            "read_only": self.read_only,
            "connections": self.attached.count(),
        })
    }
}

/// Where the server listens and how long a client may take to finish the handshake, as
/// `nbd_server_start` was given them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// An absolute path (Unix socket) or a host name or address (TCP).
    pub listen_addr: String,
    /// TCP port; None for Unix sockets (and the default port for TCP).
    pub listen_port: Option<u16>,
    /// Seconds a client may take from connecting to the end of the handshake before it is
    /// disconnected; 0 for no limit (QEMU's `handshake-max-seconds`); None for the default,
    /// [`DEFAULT_HANDSHAKE_MAX_SECONDS`].
    pub handshake_max_seconds: Option<u64>,
}

impl ListenAddr {
    /// The handshake time limit; None for no limit.
    fn handshake_limit(&self) -> Option<Duration> {
        match self
            .handshake_max_seconds
            .unwrap_or(DEFAULT_HANDSHAKE_MAX_SECONDS)
        {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        }
    }

    fn unix_path(&self) -> Option<&Path> {
        let p = Path::new(&self.listen_addr);
        p.is_absolute().then_some(p)
    }

    fn display(&self) -> String {
        match self.unix_path() {
            Some(p) => format!("unix:{}", p.display()),
            None => format!(
                "{}:{}",
                self.listen_addr,
                self.listen_port.unwrap_or(DEFAULT_PORT)
            ),
        }
    }
}

/// What every reactor's part of a running server shares.
pub(super) struct ServerShared {
    dev: DeviceId,
    /// One ticket per open connection; closed by stop, which waits for them.
    conns: Arc<Gate>,
    /// One ticket per connection still in the handshake (never closed: a counter).
    handshaking: Arc<Gate>,
    /// How long a client may take to finish the handshake; None for no limit.
    handshake_limit: Option<Duration>,
    stopping: AtomicBool,
    ctx: Arc<NbdContext>,
}

impl ServerShared {
    /// The export `name` ("" names the only export, NBD's default export).
    pub(super) fn lookup(&self, name: &str) -> Option<Arc<Export>> {
        let inner = self.ctx.lock();
        if name.is_empty() && inner.exports.len() == 1 {
            return inner.exports.first().cloned();
        }
        inner.exports.iter().find(|e| e.name == name).cloned()
    }

    /// Export names, for `NBD_OPT_LIST`.
    pub(super) fn names(&self) -> Vec<String> {
        self.ctx
            .lock()
            .exports
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }
}

struct Running {
    addr: ListenAddr,
    shared: Arc<ServerShared>,
    unix_path: Option<PathBuf>,
}

#[derive(Default)]
struct Inner {
    server: Option<Running>,
    /// In creation order, for `save_config`.
    exports: Vec<Arc<Export>>,
}

/// The runtime's NBD state (a [`Runtime::context`]).
#[derive(Default)]
pub struct NbdContext {
    inner: Mutex<Inner>,
}

impl NbdContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenSocket {
    fn bind(addr: &ListenAddr) -> Result<ListenSocket, NbdError> {
        let io = |context: String| move |source| NbdError::Io { context, source };
        let shown = addr.display();
        let socket = match addr.unix_path() {
            Some(path) => {
                remove_stale_socket(path).map_err(io(format!("cannot listen on {shown}")))?;
                ListenSocket::Unix(
                    UnixListener::bind(path).map_err(io(format!("cannot listen on {shown}")))?,
                )
            }
            None => {
                let port = addr.listen_port.unwrap_or(DEFAULT_PORT);
                ListenSocket::Tcp(
                    TcpListener::bind((addr.listen_addr.as_str(), port))
                        .map_err(io(format!("cannot listen on {shown}")))?,
                )
            }
        };
        let nonblocking = match &socket {
            ListenSocket::Tcp(l) => l.set_nonblocking(true),
            ListenSocket::Unix(l) => l.set_nonblocking(true),
        };
        nonblocking.map_err(io("cannot make the NBD socket non-blocking".into()))?;
        Ok(socket)
    }

    fn fd(&self) -> RawFd {
        match self {
            ListenSocket::Tcp(l) => l.as_raw_fd(),
            ListenSocket::Unix(l) => l.as_raw_fd(),
        }
    }

    /// The next pending client, non-blocking and ready for the reactors.
    fn accept(&self) -> std::io::Result<OwnedFd> {
        match self {
            ListenSocket::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                // Replies are small and latency-bound: never wait to coalesce them.
                s.set_nodelay(true)?;
                Ok(s.into())
            }
            ListenSocket::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                Ok(s.into())
            }
        }
    }
}

/// The listening socket, watched by reactor 0's connection epoll set (one `epoll_wait` per
/// poll covers it: probing with `accept` would allocate and free a socket every time).
struct Listener {
    socket: ListenSocket,
    rt: Runtime,
    shared: Arc<ServerShared>,
    next_reactor: usize,
}

impl Listener {
    fn accept_all(&mut self) -> usize {
        let mut accepted = 0;
        loop {
            let fd = match self.socket.accept() {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "NBD accept failed");
                    return accepted;
                }
            };
            accepted += 1;
            let shared = &self.shared;
            let in_transmission = shared
                .conns
                .count()
                .saturating_sub(shared.handshaking.count());
            if in_transmission >= MAX_CONNECTIONS {
                tracing::warn!("too many NBD clients; refusing one");
                continue;
            }
            let (Some(server), Some(handshaking)) =
                (shared.conns.enter(), shared.handshaking.enter())
            else {
                continue;
            };
            let reactor = self.next_reactor;
            self.next_reactor = (self.next_reactor + 1) % self.rt.num_reactors();
            let shared = shared.clone();
            self.rt.send_msg(reactor, move || {
                ReactorConns::attach(shared, fd, (server, handshaking))
            });
        }
    }
}

/// One reactor's NBD connections, served by one poller whose wake fd is their epoll set.
pub(super) struct ReactorConns {
    epoll: Epoll,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_key: Cell<u64>,
    /// Connections with work queued by I/O completions, serviced by the next poll.
    dirty: Rc<RefCell<Vec<u64>>>,
    /// The dirty list being serviced.
    batch: RefCell<Vec<u64>>,
    poller: Cell<Option<PollerId>>,
    reaper: Cell<Option<PollerId>>,
    /// The server's handshake time limit.
    handshake_limit: Option<Duration>,
    /// Reactor 0 only: the listening socket.
    listener: RefCell<Option<Listener>>,
}

impl ReactorConns {
    /// This reactor's set for `shared`, created (with its poller) on first use.
    fn get(shared: &ServerShared) -> Option<Rc<ReactorConns>> {
        let created = rchannel::get_or_create(shared.dev, || {
            let epoll = Epoll::new().map_err(|e| e.to_string())?;
            Ok(Rc::new(ReactorConns {
                epoll,
                conns: RefCell::new(HashMap::new()),
                next_key: Cell::new(0),
                dirty: Rc::new(RefCell::new(Vec::with_capacity(64))),
                batch: RefCell::new(Vec::with_capacity(64)),
                poller: Cell::new(None),
                reaper: Cell::new(None),
                handshake_limit: shared.handshake_limit,
                listener: RefCell::new(None),
            }))
        });
        let set = match created {
            Ok(set) => set,
            Err(e) => {
                tracing::error!(error = %e, "cannot create an epoll set for NBD");
                return None;
            }
        };
        if set.poller.get().is_none() {
            let me = set.clone();
            let id = register_poller(Box::new(move || me.poll()), None, Some(set.epoll.fd()));
            set.poller.set(Some(id));
        }
        Some(set)
    }

    /// Takes a freshly accepted client on this reactor, making room among the clients in
    /// the handshake if this reactor has its fill of them.
    fn attach(shared: Arc<ServerShared>, fd: OwnedFd, tickets: (Ticket, Ticket)) {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let Some(set) = ReactorConns::get(&shared) else {
            return;
        };
        set.evict_oldest_handshakes(MAX_HANDSHAKING_PER_REACTOR - 1);
        let key = set.next_key.get();
        set.next_key.set(key + 1);
        let limited = shared.handshake_limit.is_some();
        let conn = Conn::new(key, fd, shared, tickets, set.dirty.clone());
        if let Err(e) = conn.register(&set.epoll) {
            tracing::warn!(error = %e, "cannot watch an NBD client");
            return;
        }
        tracing::debug!(conn = key, "NBD client connected");
        conn.on_event(0);
        set.conns.borrow_mut().insert(key, conn);
        if limited {
            set.ensure_reaper();
        }
    }

    /// Closes the clients that have been in the handshake longest until at most `keep` are.
    fn evict_oldest_handshakes(&self, keep: usize) {
        let mut handshaking: Vec<(Instant, u64)> = self
            .conns
            .borrow()
            .iter()
            .filter(|(_, c)| c.in_handshake())
            .map(|(k, c)| (c.connected_at(), *k))
            .collect();
        if handshaking.len() <= keep {
            return;
        }
        handshaking.sort_unstable();
        for (_, key) in &handshaking[..handshaking.len() - keep] {
            if let Some(conn) = self.conns.borrow_mut().remove(key) {
                tracing::info!(
                    conn = key,
                    "too many NBD clients in the handshake; closed the oldest"
                );
                conn.close(&self.epoll);
            }
        }
    }

    fn poll(&self) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let ready = self.epoll.ready(&mut events);
        let mut work = ready;
        {
            let conns = self.conns.borrow();
            for event in &events[..ready] {
                let (key, flags) = (event.u64, event.events);
                if let Some(conn) = conns.get(&key) {
                    conn.on_event(flags);
                }
            }
        }
        if events[..ready].iter().any(|e| e.u64 == LISTENER_KEY) {
            if let Some(listener) = self.listener.borrow_mut().as_mut() {
                work += listener.accept_all();
            }
        }
        // Two lists swapped back and forth keep their capacity: no allocation per poll.
        let mut batch = std::mem::take(&mut *self.batch.borrow_mut());
        loop {
            std::mem::swap(&mut batch, &mut *self.dirty.borrow_mut());
            if batch.is_empty() {
                break;
            }
            work += batch.len();
            for &key in &batch {
                self.service(key);
            }
            batch.clear();
        }
        *self.batch.borrow_mut() = batch;
        work
    }

    /// Brings one connection up to date; drops it from the set once it is finished.
    fn service(&self, key: u64) {
        let Some(conn) = self.conns.borrow().get(&key).cloned() else {
            return;
        };
        if conn.service(&self.epoll) {
            self.conns.borrow_mut().remove(&key);
            tracing::debug!(conn = key, "NBD client disconnected");
        }
    }

    /// Makes the connections `filter` selects stop taking requests and close once their
    /// in-flight I/O is answered.
    fn drain(self: &Rc<Self>, filter: impl Fn(&Conn) -> bool) {
        let keys: Vec<u64> = self
            .conns
            .borrow()
            .iter()
            .filter(|(_, c)| filter(c))
            .map(|(k, _)| *k)
            .collect();
        for &key in &keys {
            if let Some(conn) = self.conns.borrow().get(&key) {
                conn.start_drain();
            }
            self.service(key);
        }
        if !keys.is_empty() {
            self.ensure_reaper();
        }
    }

    /// Starts the timed poller that enforces the time limits (handshake, drain grace) unless
    /// it runs; it goes away once no connection is under a limit.
    fn ensure_reaper(self: &Rc<Self>) {
        if self.reaper.get().is_some() {
            return;
        }
        let me = self.clone();
        let id = register_poller(Box::new(move || me.reap()), Some(REAPER_PERIOD), None);
        self.reaper.set(Some(id));
    }

    /// Closes connections past a time limit: a drain whose client stopped reading its
    /// replies (so a drain never waits on a peer forever), a client still in the handshake
    /// after the server's limit.
    fn reap(&self) -> usize {
        let limit = self.handshake_limit;
        let (expired, watched) = {
            let conns = self.conns.borrow();
            let handshake_over = |c: &Conn| {
                c.in_handshake() && limit.is_some_and(|l| c.connected_at().elapsed() > l)
            };
            let expired: Vec<(u64, bool)> = conns
                .iter()
                .filter_map(|(k, c)| {
                    if handshake_over(c) {
                        Some((*k, true))
                    } else {
                        c.drain_expired().then_some((*k, false))
                    }
                })
                .collect();
            let watched = conns
                .values()
                .filter(|c| c.draining() || (limit.is_some() && c.in_handshake()))
                .count();
            (expired, watched)
        };
        for &(key, handshake) in &expired {
            let Some(conn) = self.conns.borrow_mut().remove(&key) else {
                continue;
            };
            if handshake {
                tracing::info!(
                    conn = key,
                    limit_s = limit.map(|l| l.as_secs()),
                    "NBD client did not finish the handshake in time; closed"
                );
            } else {
                tracing::warn!(conn = key, "NBD client did not read its replies; closed");
            }
            conn.close(&self.epoll);
        }
        if watched == expired.len() {
            if let Some(id) = self.reaper.take() {
                unregister_poller(id);
            }
        }
        expired.len()
    }

    /// Starts watching the listening socket (reactor 0).
    fn listen(&self, listener: Listener) -> Result<(), NbdError> {
        self.epoll
            .ctl(
                libc::EPOLL_CTL_ADD,
                listener.socket.fd(),
                libc::EPOLLIN as u32,
                LISTENER_KEY,
            )
            .map_err(|source| NbdError::Io {
                context: "cannot watch the NBD socket".into(),
                source,
            })?;
        *self.listener.borrow_mut() = Some(listener);
        Ok(())
    }

    /// Closes the listening socket: no new clients.
    fn unlisten(&self) {
        if let Some(listener) = self.listener.borrow_mut().take() {
            let _ = self
                .epoll
                .ctl(libc::EPOLL_CTL_DEL, listener.socket.fd(), 0, LISTENER_KEY);
        }
    }

    /// Closes every connection now, whatever it waits for; returns a line for each one
    /// whose I/O was still in a bdev (abandoned: its replies will never be sent).
    fn abandon_all(&self) -> Vec<String> {
        let conns: Vec<(u64, Rc<Conn>)> = self.conns.borrow_mut().drain().collect();
        let mut abandoned = Vec::new();
        for (key, conn) in conns {
            let in_flight = conn.in_flight();
            if in_flight > 0 {
                abandoned.push(format!(
                    "NBD client {key} of export {}: {in_flight} requests in flight",
                    conn.export_name().unwrap_or_default()
                ));
            }
            conn.close(&self.epoll);
        }
        abandoned
    }

    fn teardown(&self) {
        self.unlisten();
        for (_, conn) in self.conns.borrow_mut().drain() {
            conn.close(&self.epoll);
        }
        if let Some(id) = self.poller.take() {
            unregister_poller(id);
        }
        if let Some(id) = self.reaper.take() {
            unregister_poller(id);
        }
    }
}

fn running(inner: &Inner) -> Result<&Running, NbdError> {
    inner.server.as_ref().ok_or(NbdError::NotRunning)
}

/// Starts the server (on reactor 0, where the RPC handlers run).
pub fn start(rt: &Runtime, addr: ListenAddr) -> Result<(), NbdError> {
    let ctx = rt.context::<NbdContext>();
    let mut inner = ctx.lock();
    if let Some(running) = &inner.server {
        return Err(NbdError::AlreadyRunning(running.addr.display()));
    }
    if addr.listen_addr.is_empty() {
        return Err(NbdError::Invalid("listen_addr must not be empty".into()));
    }
    if addr.unix_path().is_some() && addr.listen_port.is_some() {
        return Err(NbdError::Invalid(
            "listen_port makes no sense with a Unix socket path".into(),
        ));
    }
    let socket = ListenSocket::bind(&addr)?;
    let shared = Arc::new(ServerShared {
        dev: DeviceId::new(),
        conns: Arc::new(Gate::default()),
        handshaking: Arc::new(Gate::default()),
        handshake_limit: addr.handshake_limit(),
        stopping: AtomicBool::new(false),
        ctx: ctx.clone(),
    });
    let listener = Listener {
        socket,
        rt: rt.clone(),
        shared: shared.clone(),
        next_reactor: 0,
    };
    let set = ReactorConns::get(&shared).ok_or_else(|| NbdError::Io {
        context: "cannot create the NBD epoll set".into(),
        source: std::io::Error::last_os_error(),
    })?;
    if let Err(e) = set.listen(listener) {
        set.teardown();
        rchannel::release(shared.dev);
        return Err(e);
    }
    tracing::info!(addr = %addr.display(), "NBD server listening");
    inner.server = Some(Running {
        unix_path: addr.unix_path().map(Path::to_path_buf),
        addr,
        shared,
    });
    Ok(())
}

/// Hands a client socket, already connected and non-blocking, to the running server as if
/// its listener had accepted it. For in-process clients: the fuzz targets drive real
/// connections over a socketpair, without a listening socket in between.
pub fn attach_client(rt: &Runtime, fd: OwnedFd) -> Result<(), NbdError> {
    let ctx = rt.context::<NbdContext>();
    let shared = running(&ctx.lock())?.shared.clone();
    let (Some(server), Some(handshaking)) = (shared.conns.enter(), shared.handshaking.enter())
    else {
        return Err(NbdError::NotRunning);
    };
    rt.send_msg(0, move || {
        ReactorConns::attach(shared, fd, (server, handshaking))
    });
    Ok(())
}

/// Stops the server: no new clients, every export deleted (their clients drained), then
/// every reactor's connection set torn down; `done` runs once all of that happened.
pub fn stop(rt: &Runtime, done: impl FnOnce(Result<(), NbdError>) + Send + 'static) {
    let ctx = rt.context::<NbdContext>();
    let (running, exports) = {
        let mut inner = ctx.lock();
        let Some(running) = inner.server.take() else {
            drop(inner);
            return done(Err(NbdError::NotRunning));
        };
        (running, std::mem::take(&mut inner.exports))
    };
    let shared = running.shared;
    shared.stopping.store(true, Ordering::Release);
    if let Some(set) = rchannel::lookup::<ReactorConns>(shared.dev) {
        set.unlisten();
    }
    if let Some(path) = &running.unix_path {
        let _ = std::fs::remove_file(path);
    }
    for export in &exports {
        retire(export);
    }
    let rt2 = rt.clone();
    let dev = shared.dev;
    shared.conns.close(move || {
        on_every_reactor(
            &rt2,
            move || {
                if let Some(set) = rchannel::lookup::<ReactorConns>(dev) {
                    set.teardown();
                }
                rchannel::release(dev);
            },
            move || {
                tracing::info!("NBD server stopped");
                done(Ok(()))
            },
        )
    });
    on_every_reactor(
        rt,
        move || {
            if let Some(set) = rchannel::lookup::<ReactorConns>(dev) {
                set.drain(|_| true);
            }
        },
        || {},
    );
}

/// Stops the server from outside the reactors (target shutdown), waiting until `deadline`
/// at most for its clients' in-flight I/O to be answered. Past it, the connections still
/// waiting are closed and their I/O abandoned; returns a line describing each (empty when
/// everything drained, or no server ran).
pub fn stop_blocking(rt: &Runtime, deadline: Instant) -> Vec<String> {
    let Some(dev) = rt
        .context::<NbdContext>()
        .lock()
        .server
        .as_ref()
        .map(|r| r.shared.dev)
    else {
        return Vec::new();
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let rt2 = rt.clone();
    rt.send_msg(0, move || {
        stop(&rt2, move |r| {
            let _ = tx.send(r);
        })
    });
    if !matches!(
        rx.recv_deadline(deadline),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    ) {
        return Vec::new();
    }
    let abandoned = Arc::new(Mutex::new(Vec::new()));
    let found = abandoned.clone();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    on_every_reactor(
        rt,
        move || {
            if let Some(set) = rchannel::lookup::<ReactorConns>(dev) {
                let lines = set.abandon_all();
                found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(lines);
            }
        },
        move || {
            let _ = done_tx.send(());
        },
    );
    let _ = done_rx.recv();
    let mut lines = abandoned.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *lines)
}

/// Marks an export closing and stops hot-remove notifications for it.
fn retire(export: &Export) {
    export.closing.store(true, Ordering::Release);
    if let Some(key) = export
        .remove_key
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        export.bdev.unsubscribe_remove(key);
    }
}

/// Exports `bdev_name` as `export_name` (default: the bdev's name).
pub fn create_export(
    rt: &Runtime,
    bdev_name: &str,
    export_name: Option<String>,
    read_only: bool,
) -> Result<String, NbdError> {
    let bdev = BdevRegistry::of(rt).get(bdev_name)?;
    if !bdev.block_size().is_power_of_two() {
        return Err(NbdError::Invalid(format!(
            "bdev {} has {}-byte blocks: NBD announces the block size as its minimum, which \
             must be a power of two",
            bdev.name(),
            bdev.block_size()
        )));
    }
    let name = export_name.unwrap_or_else(|| bdev.name().to_string());
    if name.is_empty() || name.len() > super::proto::MAX_NAME_LEN || name.contains('\0') {
        return Err(NbdError::Invalid(format!(
            "invalid export name '{name}' (1 to {} bytes, no NUL)",
            super::proto::MAX_NAME_LEN
        )));
    }
    let ctx = rt.context::<NbdContext>();
    let export = {
        let mut inner = ctx.lock();
        running(&inner)?;
        if inner.exports.iter().any(|e| e.name == name) {
            return Err(NbdError::ExportExists(name));
        }
        let export = Arc::new(Export {
            name: name.clone(),
            bdev,
            read_only,
            attached: Arc::new(Gate::default()),
            closing: AtomicBool::new(false),
            remove_key: Mutex::new(None),
        });
        inner.exports.push(export.clone());
        export
    };
    // The bdev going away (hot-remove, or deleted underneath) deletes the export.
    let rt2 = rt.clone();
    let gone = name.clone();
    let key = export.bdev.subscribe_remove(move |_| {
        tracing::warn!(export = %gone, "exported bdev removed; deleting the NBD export");
        delete_export(&rt2, &gone, |_| {});
    });
    *export.remove_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
    tracing::info!(export = %name, bdev = export.bdev.name(), read_only, "NBD export created");
    Ok(name)
}

/// Deletes an export: new sessions are refused, attached clients stop taking requests, and
/// `done` runs once their in-flight I/O completed and their connections closed.
pub fn delete_export(
    rt: &Runtime,
    name: &str,
    done: impl FnOnce(Result<(), NbdError>) + Send + 'static,
) {
    let ctx = rt.context::<NbdContext>();
    let (export, dev) = {
        let mut inner = ctx.lock();
        let Some(pos) = inner.exports.iter().position(|e| e.name == name) else {
            drop(inner);
            return done(Err(NbdError::NoExport(name.to_string())));
        };
        let export = inner.exports.remove(pos);
        let dev = inner.server.as_ref().map(|r| r.shared.dev);
        (export, dev)
    };
    retire(&export);
    let shown = export.name.clone();
    export.attached.close(move || {
        tracing::info!(export = %shown, "NBD export deleted");
        done(Ok(()))
    });
    if let Some(dev) = dev {
        let target = export.clone();
        on_every_reactor(
            rt,
            move || {
                if let Some(set) = rchannel::lookup::<ReactorConns>(dev) {
                    set.drain(|c| c.serves(&target));
                }
            },
            || {},
        );
    }
}

/// `nbd_get_exports`: every export with its bdev and attached sessions.
pub fn exports_json(rt: &Runtime) -> Value {
    let ctx = rt.context::<NbdContext>();
    let inner = ctx.lock();
    json!(inner
        .exports
        .iter()
        .map(|e| e.info_json())
        .collect::<Vec<_>>())
}

/// The `save_config` entries of the nbd subsystem: the server, then its exports.
pub fn config_entries(rt: &Runtime) -> Vec<Value> {
    let ctx = rt.context::<NbdContext>();
    let inner = ctx.lock();
    let Some(running) = &inner.server else {
        return Vec::new();
    };
    let mut start = json!({"listen_addr": running.addr.listen_addr});
    if let Some(port) = running.addr.listen_port {
        start["listen_port"] = json!(port);
    }
    if let Some(seconds) = running.addr.handshake_max_seconds {
        start["handshake_max_seconds"] = json!(seconds);
    }
    let mut entries = vec![json!({"method": "nbd_server_start", "params": start})];
    entries.extend(inner.exports.iter().map(|e| {
        json!({"method": "nbd_export_create", "params": {
            "bdev_name": e.bdev.name(),
            "export_name": e.name,
            "read_only": e.read_only,
        }})
    }));
    entries
}
