//! The JSON-RPC 2.0 server on a Unix socket, as SPDK's: one poller on reactor 0 serves every
//! client without threads or an async runtime. An epoll set holds the listener and all
//! connections; it is also the poller's wake fd, so an idle target in interrupt mode sleeps
//! until a client sends something. Sockets are non-blocking and each connection has its own
//! output buffer, so a client that stops reading only stalls itself.
//!
//! Replies may come later and from any reactor (a handler waits for other cores): they are
//! queued and reactor 0 is poked. As in SPDK, a connection's responses go out in completion
//! order; a batch's answer is one array in request order. Protocol choices, for the record:
//! a request without `id` is a notification and never gets a response (JSON-RPC 2.0; SPDK
//! still answers errors), an invalid request gets `-32600` with the id if it was readable,
//! and any parse error gets `-32700` and then the connection is closed, because a byte stream
//! has no point to resynchronise at (SPDK does the same).

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::SegQueue;
use serde_json::{json, Value};
use thiserror::Error;

use super::framing::Framer;
use super::methods;
use super::rpc::{
    Ctx, Reply, RpcError, RpcMethod, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
use crate::runtime::epoll::Epoll;
use crate::runtime::{register_poller, unregister_poller, PollerId, Runtime};

/// Most clients served at once; more are accepted and closed at once (SPDK allows 64).
const MAX_CONNECTIONS: usize = 1024;
/// Requests of one connection in progress before it is no longer read.
const MAX_PENDING: usize = 256;
/// Unsent response bytes of one connection before it is no longer read.
const OUTPUT_HIGH_WATER: usize = 4 << 20;
/// Bytes read from one connection per wake-up, so one busy client cannot starve others.
const READ_BUDGET: usize = 1 << 20;
/// epoll user data of the listening socket (connection ids count up from 0).
const LISTENER_KEY: u64 = u64::MAX;

/// Why the RPC socket could not be set up.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Another live target owns the socket (SPDK's wording).
    #[error("RPC Unix domain socket path {0} in use. Specify another.")]
    InUse(String),
    /// The lock file is a symbolic link: following it would let whoever placed it make a
    /// root daemon create or lock a file of their choice.
    #[error("RPC lock file {0} is a symbolic link; refusing to follow it")]
    LockIsSymlink(String),
    /// Something that is not a socket sits at the socket path: never removed.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(String),
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Who may connect to the RPC socket. Whoever can connect controls the target (it creates
/// bdevs on any file the daemon can open), so the socket never follows the umask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketAccess {
    /// Mode 0600: the daemon's user only.
    #[default]
    Owner,
    /// Mode 0660: the daemon's group too, when asked for (`--rpc-group-access`).
    Group,
}

impl SocketAccess {
    fn mode(self) -> u32 {
        match self {
            SocketAccess::Owner => 0o600,
            SocketAccess::Group => 0o660,
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// The socket file and its `.lock` companion, removed when the server goes away. The lock
/// (flock on `<socket>.lock`, SPDK's convention) is what tells a live target from a stale
/// socket file left by a crashed one.
struct SocketFiles {
    lock_path: PathBuf,
    _lock: File,
    socket: Option<PathBuf>,
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// A bound, not yet served, RPC socket: the daemon binds before loading its config (so a
/// second target on the same path fails fast) and serves only once the config is applied.
/// Clients connecting meanwhile wait in the backlog.
pub struct RpcListener {
    listener: UnixListener,
    files: SocketFiles,
}

impl RpcListener {
    /// Takes `path`: refused if a live server holds it, a stale socket file is replaced. The
    /// socket appears at `path` with `access`'s mode whatever the umask, so nobody else can
    /// connect in between; the lock file is never followed through a symbolic link.
    pub fn bind(path: &Path, access: SocketAccess) -> Result<RpcListener, ServerError> {
        let shown = path.display().to_string();
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => ServerError::LockIsSymlink(lock_path.display().to_string()),
                _ => io_error(format!("cannot open lock file {}", lock_path.display()))(source),
            })?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ServerError::InUse(shown));
        }
        let mut files = SocketFiles {
            lock_path,
            _lock: lock,
            socket: None,
        };
        remove_stale_socket(path)?;
        let listener = bind_with_mode(path, access.mode())?;
        files.socket = Some(path.to_path_buf());
        listener
            .set_nonblocking(true)
            .map_err(io_error("cannot make the RPC socket non-blocking"))?;
        Ok(RpcListener { listener, files })
    }

    /// Starts answering requests with the methods of [`methods::all`], on reactor 0.
    pub fn serve(self, ctx: Ctx) -> Result<RpcServer, ServerError> {
        let rt = ctx.rt.clone();
        let listener = self.listener;
        let poller = rt.run_on(0, move || -> Result<PollerId, ServerError> {
            let server = Server::new(ctx, listener)?;
            let wake_fd = server.epoll.fd();
            let mut server = server;
            Ok(register_poller(
                Box::new(move || server.poll()),
                None,
                Some(wake_fd),
            ))
        })?;
        if let Some(path) = &self.files.socket {
            tracing::info!(path = %path.display(), "RPC server listening");
        }
        Ok(RpcServer {
            rt,
            poller,
            _files: self.files,
        })
    }
}

/// Clears `path` for binding, once the lock is held: a socket file there belongs to a dead
/// process, unless a server that does not follow the lock convention answers on it. Anything
/// that is not a socket is left alone.
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(format!("cannot inspect {shown}"))(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(shown));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(ServerError::InUse(shown));
    }
    std::fs::remove_file(path).map_err(io_error(format!("cannot remove stale socket {shown}")))?;
    tracing::info!(path = %shown, "removed stale RPC socket");
    Ok(())
}

/// Binds a Unix socket at `path` with `mode` and no window in which another mode shows: it
/// is bound in a fresh directory only the daemon's user can enter, given its mode there,
/// then renamed into place. (Changing the process umask instead would race with any other
/// thread creating files.)
fn bind_with_mode(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let shown = path.display().to_string();
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let private = parent.join(format!(".quorum-tgt-{}", &tag[..12]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io_error(format!("cannot create {}", private.display())))?;
    let staged = private.join("s");
    let bound = UnixListener::bind(&staged)
        .map_err(io_error(format!("cannot listen on {shown}")))
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
                .and_then(|()| std::fs::rename(&staged, path))
                .map_err(io_error(format!("cannot put the RPC socket at {shown}")))?;
            Ok(listener)
        });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// A serving RPC server; [`RpcServer::stop`] (or dropping it) closes every connection and
/// removes the socket file.
pub struct RpcServer {
    rt: Runtime,
    poller: PollerId,
    _files: SocketFiles,
}

impl RpcServer {
    /// Stops accepting requests: the poller, the listener and every connection go away.
    /// Call from outside the reactors.
    pub fn stop(self) {
        let poller = self.poller;
        self.rt.run_on(0, move || unregister_poller(poller));
        tracing::info!("RPC server stopped");
    }
}

/// An answered request on its way back to reactor 0: the serialized response, or None for
/// notifications (only the in-flight count changes).
struct Completion {
    conn: u64,
    response: Option<Vec<u8>>,
}

/// Where replies are queued; shared with every reply callback, whichever reactor runs it.
struct Sink {
    queue: SegQueue<Completion>,
    rt: Runtime,
}

impl Sink {
    fn complete(&self, conn: u64, response: Option<Value>) {
        let response = response.map(|r| {
            let mut bytes = serde_json::to_vec(&r).unwrap_or_else(|_| {
                br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"unserializable response"}}"#
                    .to_vec()
            });
            bytes.push(b'\n');
            bytes
        });
        self.queue.push(Completion { conn, response });
        // Wake reactor 0 in interrupt mode; the server's poller drains the queue.
        self.rt.send_msg(0, || {});
    }
}

/// The members of a batch's answer, filled as its requests complete.
struct Batch {
    conn: u64,
    slots: Mutex<Vec<Option<Value>>>,
    remaining: AtomicUsize,
}

/// Where a request's response goes.
enum Target {
    Single(u64),
    Batch(Arc<Batch>, usize),
}

/// Delivers one request's response exactly once: by [`Responder::send`], or with an internal
/// error if the handler dropped its [`Reply`] (or panicked) without answering, so a client
/// never waits forever and the connection's in-flight count stays right.
struct Responder {
    /// The request id (None: notification) and the destination; None once sent.
    inner: Option<(Option<Value>, Target)>,
    sink: Arc<Sink>,
}

impl Responder {
    fn send(mut self, result: Result<Value, RpcError>) {
        if let Some((id, target)) = self.inner.take() {
            self.deliver(id, target, result);
        }
    }

    fn deliver(&self, id: Option<Value>, target: Target, result: Result<Value, RpcError>) {
        let response = id.map(|id| response(id, result));
        match target {
            Target::Single(conn) => self.sink.complete(conn, response),
            Target::Batch(batch, index) => {
                let mut slots = batch.slots.lock().unwrap_or_else(|e| e.into_inner());
                slots[index] = response;
                if batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let answers: Vec<Value> = slots.iter_mut().filter_map(Option::take).collect();
                    drop(slots);
                    let answer = (!answers.is_empty()).then_some(Value::Array(answers));
                    self.sink.complete(batch.conn, answer);
                }
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some((id, target)) = self.inner.take() {
            let error = RpcError::new(INTERNAL_ERROR, "the method ended without answering");
            self.deliver(id, target, Err(error));
        }
    }
}

fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "message": e.message}
        }),
    }
}

/// A decoded request object.
struct Request {
    /// None for a notification.
    id: Option<Value>,
    method: String,
    params: Option<Value>,
}

/// Checks a request object the way SPDK's server does: only the four members, `jsonrpc`
/// present and "2.0", `method` a string, `id` a string, number or null, `params` an object, an
/// array or null. On failure: the id to answer with (null when unreadable) and the error.
fn parse_request(value: Value) -> Result<Request, (Value, RpcError)> {
    let invalid = |id: Value, why: &str| {
        (
            id,
            RpcError::new(INVALID_REQUEST, format!("Invalid request: {why}")),
        )
    };
    let Value::Object(mut obj) = value else {
        return Err(invalid(Value::Null, "not a JSON object"));
    };
    let id = match obj.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => return Err(invalid(Value::Null, "'id' must be a string or a number")),
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "jsonrpc" | "method" | "params"))
    {
        return Err(invalid(answer_id, &format!("unknown member '{unknown}'")));
    }
    match obj.remove("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return Err(invalid(answer_id, "'jsonrpc' must be \"2.0\"")),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err(invalid(answer_id, "'method' must be a string")),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return Err(invalid(answer_id, "'params' must be an object or an array")),
    };
    Ok(Request { id, method, params })
}

/// Runs decoded values through the method table.
struct Dispatcher {
    ctx: Ctx,
    methods: HashMap<&'static str, RpcMethod>,
    sink: Arc<Sink>,
}

impl Dispatcher {
    /// Handles one top-level value of connection `conn`; exactly one [`Completion`] follows.
    fn dispatch(&self, conn: u64, value: Value) {
        match value {
            Value::Array(items) if items.is_empty() => {
                self.call(Value::Array(items), Target::Single(conn));
            }
            Value::Array(items) => {
                let batch = Arc::new(Batch {
                    conn,
                    slots: Mutex::new(vec![None; items.len()]),
                    remaining: AtomicUsize::new(items.len()),
                });
                for (index, item) in items.into_iter().enumerate() {
                    self.call(item, Target::Batch(batch.clone(), index));
                }
            }
            single => self.call(single, Target::Single(conn)),
        }
    }

    fn call(&self, value: Value, target: Target) {
        let responder = |id| Responder {
            inner: Some((id, target)),
            sink: self.sink.clone(),
        };
        let request = match parse_request(value) {
            Ok(request) => request,
            Err((id, error)) => return responder(Some(id)).send(Err(error)),
        };
        let responder = responder(request.id);
        let Some(method) = self.methods.get(request.method.as_str()) else {
            return responder.send(Err(RpcError::new(METHOD_NOT_FOUND, "Method not found")));
        };
        tracing::debug!(method = method.name, params = ?request.params, "RPC request");
        let reply: Reply = Box::new(move |result| responder.send(result));
        let handler = method.handler;
        let ctx = &self.ctx;
        let params = request.params;
        if catch_unwind(AssertUnwindSafe(move || handler(ctx, params, reply))).is_err() {
            tracing::error!(method = method.name, "RPC method panicked");
        }
    }
}

/// One client.
struct Conn {
    stream: UnixStream,
    framer: Framer,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_sent: usize,
    /// Top-level requests dispatched and not yet answered.
    pending: usize,
    /// No more requests will be read: EOF, or a parse error was answered.
    input_closed: bool,
    /// The socket failed: close now.
    broken: bool,
    /// The peer closed both directions: its requests are still started, but nothing can be
    /// sent back, so the connection goes once its input is read.
    peer_gone: bool,
    /// epoll events currently registered.
    interest: u32,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_sent
    }

    /// Flow control: whether more requests may be started now.
    fn has_room(&self) -> bool {
        self.pending < MAX_PENDING && self.unsent() < OUTPUT_HIGH_WATER
    }

    fn wanted_events(&self) -> u32 {
        let mut events = 0;
        if !self.input_closed && self.has_room() {
            events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if self.unsent() > 0 {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }

    fn finished(&self) -> bool {
        self.broken || (self.input_closed && self.pending == 0 && self.unsent() == 0)
    }

    /// Reads what the socket has, up to the budget.
    fn read_input(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let mut total = 0;
        while total < READ_BUDGET && !self.input_closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.input_closed = true,
                Ok(n) => {
                    self.framer.push(&chunk[..n]);
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
    }

    /// Starts the complete requests buffered (also after EOF: a client may half-close once
    /// it has sent everything), as far as flow control allows.
    fn pump(&mut self, id: u64, dispatcher: &Dispatcher) {
        while !self.broken && self.has_room() {
            match self.framer.next_value() {
                Ok(Some(value)) => {
                    self.pending += 1;
                    dispatcher.dispatch(id, value);
                }
                Ok(None) => break,
                Err(e) => {
                    let message = format!("Parse error: {e}");
                    let error = response(Value::Null, Err(RpcError::new(PARSE_ERROR, message)));
                    let mut bytes = serde_json::to_vec(&error).unwrap_or_default();
                    bytes.push(b'\n');
                    self.out.extend_from_slice(&bytes);
                    self.input_closed = true;
                    break;
                }
            }
        }
    }

    fn write_output(&mut self) {
        while self.unsent() > 0 && !self.broken {
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        } else if self.out_sent > self.out.len() / 2 {
            self.out.drain(..self.out_sent);
            self.out_sent = 0;
        }
    }
}

/// The server's state, owned by its poller on reactor 0.
struct Server {
    epoll: Epoll,
    listener: UnixListener,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    dispatcher: Dispatcher,
    /// Connections to revisit before the poller returns.
    dirty: BTreeSet<u64>,
}

impl Server {
    fn new(ctx: Ctx, listener: UnixListener) -> Result<Server, ServerError> {
        let epoll = Epoll::new().map_err(io_error("cannot create an epoll set"))?;
        epoll
            .ctl(
                libc::EPOLL_CTL_ADD,
                listener.as_raw_fd(),
                libc::EPOLLIN as u32,
                LISTENER_KEY,
            )
            .map_err(io_error("cannot watch the RPC socket"))?;
        let sink = Arc::new(Sink {
            queue: SegQueue::new(),
            rt: ctx.rt.clone(),
        });
        let methods = methods::all().into_iter().map(|m| (m.name, m)).collect();
        Ok(Server {
            epoll,
            listener,
            conns: HashMap::new(),
            next_conn: 0,
            dispatcher: Dispatcher { ctx, methods, sink },
            dirty: BTreeSet::new(),
        })
    }

    /// One poller run: answers, new clients, input, output.
    fn poll(&mut self) -> usize {
        let mut work = self.drain_completions();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let ready = self.epoll.ready(&mut events);
        for event in &events[..ready] {
            let (key, flags) = (event.u64, event.events);
            work += 1;
            if key == LISTENER_KEY {
                self.accept();
                continue;
            }
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            if flags & libc::EPOLLERR as u32 != 0 {
                conn.broken = true;
            } else if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
                // Only on input events: EPOLLOUT alone must not read past flow control.
                conn.peer_gone |= flags & libc::EPOLLHUP as u32 != 0;
                conn.read_input();
            }
            self.dirty.insert(key);
        }
        loop {
            work += self.drain_completions();
            if self.dirty.is_empty() {
                break;
            }
            for key in std::mem::take(&mut self.dirty) {
                self.service(key);
            }
        }
        work
    }

    fn drain_completions(&mut self) -> usize {
        let mut n = 0;
        while let Some(done) = self.dispatcher.sink.queue.pop() {
            n += 1;
            if let Some(conn) = self.conns.get_mut(&done.conn) {
                conn.pending -= 1;
                if let Some(bytes) = done.response {
                    conn.out.extend_from_slice(&bytes);
                }
                self.dirty.insert(done.conn);
            }
        }
        n
    }

    /// Brings a connection up to date: starts requests, writes, re-arms epoll or closes.
    fn service(&mut self, key: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.pump(key, &self.dispatcher);
        if conn.peer_gone && conn.input_closed {
            // Hang-ups are reported until the socket is closed: waiting here would spin.
            conn.broken = true;
        }
        conn.write_output();
        if conn.finished() {
            if let Some(conn) = self.conns.remove(&key) {
                let _ = self
                    .epoll
                    .ctl(libc::EPOLL_CTL_DEL, conn.stream.as_raw_fd(), 0, key);
                tracing::debug!(conn = key, "RPC client disconnected");
            }
            return;
        }
        let wanted = conn.wanted_events();
        if wanted != conn.interest {
            let fd = conn.stream.as_raw_fd();
            if self.epoll.ctl(libc::EPOLL_CTL_MOD, fd, wanted, key).is_ok() {
                conn.interest = wanted;
            } else {
                conn.broken = true;
                self.dirty.insert(key);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "RPC accept failed");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                tracing::warn!("too many RPC clients; refusing one");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let key = self.next_conn;
            self.next_conn += 1;
            let interest = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if let Err(e) = self
                .epoll
                .ctl(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), interest, key)
            {
                tracing::warn!(error = %e, "cannot watch an RPC client");
                continue;
            }
            tracing::debug!(conn = key, "RPC client connected");
            self.conns.insert(
                key,
                Conn {
                    stream,
                    framer: Framer::default(),
                    out: Vec::new(),
                    out_sent: 0,
                    pending: 0,
                    input_closed: false,
                    broken: false,
                    peer_gone: false,
                    interest,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_objects_are_checked_as_spdk_does() {
        let ok = parse_request(json!({"jsonrpc": "2.0", "method": "m", "id": 1, "params": {}}))
            .ok()
            .unwrap();
        assert_eq!((ok.id, ok.method.as_str()), (Some(json!(1)), "m"));
        let note = parse_request(json!({"jsonrpc": "2.0", "method": "m", "params": null}))
            .ok()
            .unwrap();
        assert!(note.id.is_none() && note.params.is_none());
        for (bad, id) in [
            (json!(5), Value::Null),
            (json!({"id": 2}), json!(2)),
            (json!({"method": 1, "id": "a"}), json!("a")),
            (json!({"method": "m", "jsonrpc": "1.0", "id": 3}), json!(3)),
            (json!({"method": "m", "id": 6}), json!(6)),
            (json!({"method": "m", "jsonrpc": 2.0, "id": 7}), json!(7)),
            (json!({"method": "m", "params": 1, "id": 4}), json!(4)),
            (json!({"method": "m", "id": [1]}), Value::Null),
            (json!({"method": "m", "extra": 1, "id": 5}), json!(5)),
        ] {
            let (got_id, e) = parse_request(bad.clone()).err().unwrap();
            assert_eq!(e.code, INVALID_REQUEST, "{bad}");
            assert_eq!(got_id, id, "{bad}");
        }
    }
}
