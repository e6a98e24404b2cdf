//! One NBD connection on its reactor: bdev I/O becomes NBD requests (split at the server's
//! payload limit, FUA emulated with a flush where the server has none), requests go out
//! gathered in one `sendmsg` per pass with write payloads sent straight from the caller's
//! buffer, and replies are parsed as they stream in, read data received straight into the
//! caller's buffer. Nothing here allocates once the tables are warm, and nothing blocks: the
//! socket is non-blocking and only this reactor touches it.
//!
//! Trust: the server is checked, never believed. A reply for a handle not in flight (or for
//! a request not fully sent), a chunk outside its request, read chunks that do not cover the
//! request in order, an oversized payload, a chunk type that was not negotiated: each is a
//! protocol violation that closes the connection, failing everything in flight with EIO. So
//! does a request left without reply past the I/O timeout. While the connection is down,
//! new I/O fails at once with EIO, and the reactor set retries the connection with backoff
//! ([`super::reactor`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handshake::Negotiated;
use super::ClientShared;
use crate::bdev::{IoHandle, IoType};
use crate::nbd::proto::{self, Command, ReplyHead, Request};
use crate::nbd::stream;
use crate::runtime::clock::{duration_to_ticks, ticks};

/// NBD requests in flight on one connection. qemu-nbd serves 16 at a time and reads the rest
/// as it goes; more only wait in socket buffers.
const MAX_WIRE: usize = 128;
/// Bdev I/Os started on one connection (a large one spans several requests); further I/O
/// waits in order.
const MAX_OPS: usize = 128;
/// Reply bytes received per `recv` into the staging buffer: every reply header and small read
/// of a QD-32 burst in one call. Larger read data goes straight to its buffer.
const STAGING: usize = 128 << 10;
/// Reply bytes taken per service pass, so one busy connection cannot starve the reactor.
const READ_BUDGET: usize = 4 << 20;
/// Requests gathered into one `sendmsg` (a header and a payload each).
const MAX_IOV: usize = 64;
/// TRIM and WRITE_ZEROES carry no payload, but their length is 32 bits: split at 1 GiB.
const MAX_NO_PAYLOAD: u64 = 1 << 30;
/// Bytes of a chunk's fixed part before its variable data: the largest is
/// `NBD_REPLY_TYPE_ERROR`'s error and message length.
const FIXED_MAX: usize = 12;

/// One NBD request between being queued and its reply.
#[derive(Clone, Copy)]
struct Wire {
    /// The bdev I/O (index into `ops`) it serves.
    op: u32,
    command: Command,
    /// Absolute export offset and length.
    offset: u64,
    len: u32,
    /// Position of this request's data in the op's buffer.
    at: usize,
    /// Read bytes received so far (in order).
    covered: u32,
    /// First error a reply reported (local errno), 0 if none.
    error: i32,
    /// Bumped each time the slot is reused; part of the handle, so a late or forged handle
    /// cannot match a newer request.
    generation: u32,
    /// Queued, in [`ticks`], for the I/O timeout.
    since: u64,
    /// Fully handed to the socket: a reply is only valid after that.
    sent: bool,
    in_use: bool,
    header: [u8; proto::REQUEST_LEN],
}

/// One bdev I/O being served.
struct Op {
    io: Option<IoHandle>,
    /// Bytes of the I/O already turned into requests, and its total.
    issued: u64,
    total: u64,
    /// Requests in flight.
    parts: u32,
    error: i32,
    /// FUA without server support: a flush follows the write (then `flushing`).
    flush_after: bool,
    flushing: bool,
}

/// Where parsing the reply stream stands.
#[derive(Clone, Copy)]
enum Rx {
    /// Waiting for a reply header.
    Header,
    /// Reading a chunk's fixed part into `fixed`, `got` bytes of it so far.
    Fixed { chunk: Chunk, got: usize },
    /// Read data for `slot`, `left` bytes more, at `pos` in its op's buffer.
    Data {
        slot: u32,
        pos: usize,
        left: usize,
        flags: u16,
    },
    /// Bytes to drop (an error message), then the chunk ends.
    Skip { slot: u32, left: usize, flags: u16 },
}

/// A structured reply chunk whose payload starts with a fixed part (`need` bytes).
#[derive(Clone, Copy)]
struct Chunk {
    slot: u32,
    kind: u16,
    flags: u16,
    len: u32,
    need: usize,
}

/// Whether the connection is up, and when to try again if not.
#[derive(Clone, Copy)]
pub(super) enum Link {
    /// Serving I/O.
    Up,
    /// Down; the next attempt is due at `retry_at` (None while one runs).
    Down {
        retry_at: Option<Instant>,
        attempt: u32,
    },
}

struct State {
    sock: Option<OwnedFd>,
    link: Link,
    session: Option<Negotiated>,
    wires: Vec<Wire>,
    free_wires: Vec<u32>,
    ops: Vec<Op>,
    free_ops: Vec<u32>,
    /// I/O waiting for an op entry.
    waiting: VecDeque<IoHandle>,
    /// Ops with requests left to issue, in order.
    ready: VecDeque<u32>,
    /// Requests to send, in order; the front one has `sent_bytes` out already.
    sendq: VecDeque<u32>,
    sent_bytes: usize,
    staging: Box<[u8]>,
    start: usize,
    end: usize,
    rx: Rx,
    fixed: [u8; FIXED_MAX],
    readable: bool,
    writable: bool,
    interest: u32,
    /// The bdev's block size, to turn block ranges into byte ranges.
    block_size: u32,
}

/// One connection to the server, owned by one reactor.
pub(super) struct Conn {
    /// Which of the bdev's connections this is (its status slot).
    pub(super) index: usize,
    /// Its key in the reactor's epoll set.
    pub(super) key: u64,
    pub(super) shared: Arc<ClientShared>,
    /// In the reactor's dirty list already.
    pub(super) queued: Cell<bool>,
    st: RefCell<State>,
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Conn {
    /// A connection, down until [`Conn::adopt`] gives it a socket.
    pub(super) fn new(index: usize, key: u64, shared: Arc<ClientShared>) -> Conn {
        let block_size = shared.block_size;
        Conn {
            index,
            key,
            shared,
            queued: Cell::new(false),
            st: RefCell::new(State {
                sock: None,
                link: Link::Down {
                    retry_at: Some(Instant::now()),
                    attempt: 0,
                },
                session: None,
                wires: Vec::with_capacity(MAX_WIRE),
                free_wires: Vec::with_capacity(MAX_WIRE),
                ops: Vec::with_capacity(MAX_OPS),
                free_ops: Vec::with_capacity(MAX_OPS),
                waiting: VecDeque::with_capacity(MAX_OPS),
                ready: VecDeque::with_capacity(MAX_OPS),
                sendq: VecDeque::with_capacity(MAX_WIRE),
                sent_bytes: 0,
                staging: vec![0u8; STAGING].into_boxed_slice(),
                start: 0,
                end: 0,
                rx: Rx::Header,
                fixed: [0; FIXED_MAX],
                readable: false,
                writable: false,
                interest: 0,
                block_size,
            }),
        }
    }

    /// The link state, for the reconnect timer.
    pub(super) fn link(&self) -> Link {
        self.st.borrow().link
    }

    /// Marks a reconnect attempt as started (none due until it reports).
    pub(super) fn attempt_started(&self) -> u32 {
        let mut st = self.st.borrow_mut();
        match &mut st.link {
            Link::Down { retry_at, attempt } => {
                *retry_at = None;
                *attempt += 1;
                *attempt
            }
            Link::Up => 0,
        }
    }

    /// A failed attempt: the next one after the backoff.
    pub(super) fn attempt_failed(&self, why: &str) {
        let mut st = self.st.borrow_mut();
        if let Link::Down { retry_at, attempt } = &mut st.link {
            *retry_at = Some(Instant::now() + backoff(*attempt));
        }
        drop(st);
        self.shared.status(self.index).failed_attempt(why);
    }

    /// I/O started on this connection and not finished, for picking the least busy one.
    pub(super) fn busy(&self) -> usize {
        let st = self.st.borrow();
        st.ops.len() - st.free_ops.len() + st.waiting.len()
    }

    /// Whether the connection serves I/O.
    pub(super) fn is_up(&self) -> bool {
        matches!(self.st.borrow().link, Link::Up)
    }

    /// Takes a freshly negotiated socket into service and watches it.
    pub(super) fn adopt(
        &self,
        fd: OwnedFd,
        session: Negotiated,
        epoll: &crate::runtime::epoll::Epoll,
    ) {
        let interest = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if let Err(e) = epoll.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), interest, self.key) {
            self.attempt_failed(&format!("cannot watch the socket: {e}"));
            return;
        }
        let mut st = self.st.borrow_mut();
        st.sock = Some(fd);
        st.session = Some(session);
        st.link = Link::Up;
        st.readable = true;
        st.writable = true;
        st.interest = interest;
        st.start = 0;
        st.end = 0;
        st.rx = Rx::Header;
        drop(st);
        self.shared.status(self.index).connected();
    }

    /// Closes the connection: every I/O it holds fails with `errno`, the link is down and a
    /// reconnect is due after the backoff (`why` is logged and reported).
    pub(super) fn disconnect(&self, epoll: &crate::runtime::epoll::Epoll, why: &str, errno: i32) {
        let mut st = self.st.borrow_mut();
        let Some(sock) = st.sock.take() else {
            return;
        };
        let _ = epoll.ctl(libc::EPOLL_CTL_DEL, sock.as_raw_fd(), 0, self.key);
        drop(sock);
        st.link = Link::Down {
            retry_at: Some(Instant::now() + backoff(0)),
            attempt: 0,
        };
        st.fail_all(errno);
        drop(st);
        tracing::warn!(
            bdev = self.shared.name,
            connection = self.index,
            reason = why,
            "NBD connection lost; in-flight I/O failed, reconnecting in the background"
        );
        self.shared.status(self.index).lost(why);
    }

    /// Closes for good (bdev deleted): everything held fails with `errno`, no reconnect.
    pub(super) fn close(&self, epoll: &crate::runtime::epoll::Epoll, errno: i32) {
        let mut st = self.st.borrow_mut();
        if let Some(sock) = st.sock.take() {
            let _ = epoll.ctl(libc::EPOLL_CTL_DEL, sock.as_raw_fd(), 0, self.key);
        }
        st.link = Link::Down {
            retry_at: None,
            attempt: 0,
        };
        st.fail_all(errno);
    }

    /// Takes one bdev I/O.
    pub(super) fn submit(&self, io: IoHandle) -> bool {
        let mut st = self.st.borrow_mut();
        let Some(session) = st.session.filter(|_| matches!(st.link, Link::Up)) else {
            io.complete(Err(libc::EIO));
            return false;
        };
        match io.io_type {
            IoType::Write | IoType::Unmap | IoType::WriteZeroes
                if session.has(proto::FLAG_READ_ONLY) =>
            {
                io.complete(Err(libc::EROFS));
                return false;
            }
            // No NBD_FLAG_SEND_FLUSH: the server has no volatile cache to flush (the
            // spec's reading, and the kernel's and QEMU's).
            IoType::Flush if !session.has(proto::FLAG_SEND_FLUSH) => {
                io.complete(Ok(()));
                return false;
            }
            IoType::Reset | IoType::Zcopy => {
                io.complete(Err(libc::ENOTSUP));
                return false;
            }
            _ => {}
        }
        if st.free_ops.is_empty() && st.ops.len() >= MAX_OPS {
            st.waiting.push_back(io);
        } else {
            st.start_op(io, &session);
        }
        true
    }

    /// Records what epoll reported.
    pub(super) fn on_event(&self, events: u32) {
        let mut st = self.st.borrow_mut();
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
        {
            st.readable = true;
        }
        if events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            st.writable = true;
        }
    }

    /// Issues, sends and receives as far as possible; a broken connection is closed.
    pub(super) fn service(&self, epoll: &crate::runtime::epoll::Epoll) -> usize {
        let result = {
            let mut st = self.st.borrow_mut();
            if st.sock.is_none() {
                return 0;
            }
            st.service()
        };
        match result {
            Ok(work) => {
                let mut st = self.st.borrow_mut();
                let wanted = st.wanted_events();
                if wanted != st.interest {
                    let fd = st.sock.as_ref().map(|s| s.as_raw_fd());
                    if let Some(fd) = fd {
                        if epoll.ctl(libc::EPOLL_CTL_MOD, fd, wanted, self.key).is_ok() {
                            st.interest = wanted;
                        }
                    }
                }
                work
            }
            Err(Broken { why, errno }) => {
                if errno == 0 {
                    self.shared.status(self.index).protocol_error();
                }
                self.disconnect(epoll, &why, libc::EIO);
                1
            }
        }
    }

    /// Whether a request has waited longer than `timeout` for its reply.
    pub(super) fn overdue(&self, timeout: Duration) -> bool {
        let st = self.st.borrow();
        let limit = duration_to_ticks(timeout);
        let now = ticks();
        st.wires
            .iter()
            .any(|w| w.in_use && now.wrapping_sub(w.since) > limit)
    }
}

/// The wait before reconnect attempt `attempt` (0 after a loss): 100 ms doubling to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6)).min(Duration::from_secs(5))
}

/// Why the connection must close: the text, and the OS errno (0 for a protocol violation).
struct Broken {
    why: String,
    errno: i32,
}

fn violation(why: impl Into<String>) -> Broken {
    Broken {
        why: format!("protocol violation: {}", why.into()),
        errno: 0,
    }
}

impl State {
    fn session(&self) -> Negotiated {
        self.session.expect("a connection in service has a session")
    }

    fn fail_all(&mut self, errno: i32) {
        for op in self.ops.iter_mut() {
            if let Some(io) = op.io.take() {
                io.complete(Err(errno));
            }
        }
        while let Some(io) = self.waiting.pop_front() {
            io.complete(Err(errno));
        }
        self.ops.clear();
        self.free_ops.clear();
        self.wires.clear();
        self.free_wires.clear();
        self.ready.clear();
        self.sendq.clear();
        self.sent_bytes = 0;
        self.rx = Rx::Header;
        self.start = 0;
        self.end = 0;
    }

    fn start_op(&mut self, io: IoHandle, session: &Negotiated) {
        let total = match io.io_type {
            IoType::Flush => 0,
            _ => io.num_blocks * self.block_size as u64,
        };
        let flush_after = io.fua
            && matches!(io.io_type, IoType::Write | IoType::WriteZeroes)
            && !session.has(proto::FLAG_SEND_FUA)
            && session.has(proto::FLAG_SEND_FLUSH);
        let op = Op {
            io: Some(io),
            issued: 0,
            total,
            parts: 0,
            error: 0,
            flush_after,
            flushing: false,
        };
        let index = match self.free_ops.pop() {
            Some(i) => {
                self.ops[i as usize] = op;
                i
            }
            None => {
                self.ops.push(op);
                (self.ops.len() - 1) as u32
            }
        };
        self.ready.push_back(index);
    }

    fn service(&mut self) -> Result<usize, Broken> {
        let mut work = self.issue();
        work += self.send()?;
        work += self.receive()?;
        work += self.issue();
        work += self.send()?;
        Ok(work)
    }

    fn wanted_events(&self) -> u32 {
        let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if !self.sendq.is_empty() && !self.writable {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }

    /// Turns ready ops into requests while wire slots are free.
    fn issue(&mut self) -> usize {
        let session = self.session();
        let mut issued = 0;
        while let Some(&index) = self.ready.front() {
            if self.free_wires.is_empty() && self.wires.len() >= MAX_WIRE {
                break;
            }
            let op = &mut self.ops[index as usize];
            let Some(io) = op.io.as_ref() else {
                self.ready.pop_front();
                continue;
            };
            // Whole blocks per request, so every piece stays aligned as the server needs.
            let payload = (session.max_payload / self.block_size * self.block_size) as u64;
            let (command, limit) = match io.io_type {
                _ if op.flushing => (Command::Flush, 0),
                IoType::Read => (Command::Read, payload),
                IoType::Write => (Command::Write, payload),
                IoType::Unmap => (Command::Trim, MAX_NO_PAYLOAD),
                IoType::WriteZeroes => (Command::WriteZeroes, MAX_NO_PAYLOAD),
                _ => (Command::Flush, 0),
            };
            let at = op.issued;
            let len = (op.total - at).min(limit);
            let fua = io.fua
                && session.has(proto::FLAG_SEND_FUA)
                && matches!(command, Command::Write | Command::WriteZeroes);
            let offset = if command == Command::Flush {
                0
            } else {
                io.offset_blocks * self.block_size as u64 + at
            };
            op.issued += len;
            op.parts += 1;
            if command == Command::Flush || op.issued == op.total {
                self.ready.pop_front();
            }
            let wire = self.alloc_wire();
            let w = &mut self.wires[wire as usize];
            w.op = index;
            w.command = command;
            w.offset = offset;
            w.len = len as u32;
            w.at = at as usize;
            w.covered = 0;
            w.error = 0;
            w.since = ticks();
            w.sent = false;
            w.header = Request {
                flags: if fua { proto::CMD_FLAG_FUA } else { 0 },
                command,
                handle: ((w.generation as u64) << 32) | wire as u64,
                offset,
                len: len as u32,
            }
            .encode();
            self.sendq.push_back(wire);
            issued += 1;
        }
        issued
    }

    fn alloc_wire(&mut self) -> u32 {
        let index = match self.free_wires.pop() {
            Some(i) => i,
            None => {
                self.wires.push(Wire {
                    op: 0,
                    command: Command::Flush,
                    offset: 0,
                    len: 0,
                    at: 0,
                    covered: 0,
                    error: 0,
                    generation: 0,
                    since: 0,
                    sent: false,
                    in_use: false,
                    header: [0; proto::REQUEST_LEN],
                });
                (self.wires.len() - 1) as u32
            }
        };
        let w = &mut self.wires[index as usize];
        w.in_use = true;
        w.generation = w.generation.wrapping_add(1);
        index
    }

    /// The payload of request `wire` (a write's data in its op's buffer), or nothing.
    fn payload(&self, wire: u32) -> &[u8] {
        let w = &self.wires[wire as usize];
        if w.command != Command::Write {
            return &[];
        }
        match self.ops[w.op as usize].io.as_ref() {
            // SAFETY: the op's I/O is in our hands until it completes, and its buffer holds
            // `total` bytes (checked by the bdev layer); `at + len <= total`.
            Some(io) => unsafe { &io.buf.as_slice()[w.at..w.at + w.len as usize] },
            None => &[],
        }
    }

    /// Sends queued requests until the socket is full.
    fn send(&mut self) -> Result<usize, Broken> {
        let mut work = 0;
        while !self.sendq.is_empty() && self.writable {
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV];
            let parts = self
                .sendq
                .iter()
                .flat_map(|&wire| [&self.wires[wire as usize].header[..], self.payload(wire)]);
            let n = stream::gather(parts, self.sent_bytes, &mut iov);
            let wanted: usize = iov[..n].iter().map(|v| v.iov_len).sum();
            let Some(sock) = &self.sock else {
                return Ok(work);
            };
            // SAFETY: every iovec points into a request header of `wires` or an op's buffer,
            // both alive and unchanged until the request leaves the send queue, which
            // happens only after this call returned.
            let sent = match unsafe { stream::send(sock.as_raw_fd(), &mut iov[..n]) } {
                Ok(sent) => sent,
                Err(e) => {
                    match e.kind() {
                        std::io::ErrorKind::WouldBlock => self.writable = false,
                        std::io::ErrorKind::Interrupted => {}
                        _ => {
                            return Err(Broken {
                                errno: errno_of(&e),
                                why: format!("send failed: {e}"),
                            })
                        }
                    }
                    continue;
                }
            };
            work += 1;
            self.advance(sent);
            if sent < wanted {
                self.writable = false;
            }
        }
        Ok(work)
    }

    /// Drops fully sent requests from the send queue after `sent` more bytes went out.
    fn advance(&mut self, sent: usize) {
        let mut done = self.sent_bytes + sent;
        while let Some(&front) = self.sendq.front() {
            let len = proto::REQUEST_LEN + self.payload(front).len();
            if done < len {
                self.sent_bytes = done;
                return;
            }
            done -= len;
            self.wires[front as usize].sent = true;
            self.sendq.pop_front();
        }
        self.sent_bytes = 0;
    }

    /// Receives more bytes into staging; false when none can come now.
    fn fill(&mut self, budget: &mut usize) -> Result<bool, Broken> {
        if !self.readable || *budget == 0 {
            return Ok(false);
        }
        (self.start, self.end) = stream::compact(&mut self.staging, self.start, self.end);
        let Some(sock) = &self.sock else {
            return Ok(false);
        };
        let room = self.staging.len() - self.end;
        let got = stream::recv(sock.as_raw_fd(), &mut self.staging[self.end..]);
        self.received(got, room, budget).map(|n| {
            self.end += n;
            n > 0
        })
    }

    /// Interprets a `recv` result: bytes taken (0 for "try later"), or why the link broke.
    fn received(
        &mut self,
        got: std::io::Result<usize>,
        room: usize,
        budget: &mut usize,
    ) -> Result<usize, Broken> {
        let n = match got {
            Ok(0) => {
                return Err(Broken {
                    why: "server closed the connection".into(),
                    errno: libc::ECONNRESET,
                })
            }
            Ok(n) => n,
            Err(e) => {
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        Ok(0)
                    }
                    std::io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(Broken {
                        errno: errno_of(&e),
                        why: format!("receive failed: {e}"),
                    }),
                }
            }
        };
        *budget = budget.saturating_sub(n);
        if n < room {
            self.readable = false;
        }
        Ok(n)
    }

    /// Parses replies from the stream until it must wait.
    fn receive(&mut self) -> Result<usize, Broken> {
        let mut budget = READ_BUDGET;
        let mut work = 0;
        loop {
            let progressed = match self.rx {
                Rx::Header => self.header()?,
                Rx::Fixed { .. } => self.fixed_part()?,
                Rx::Data { .. } => self.data(&mut budget)?,
                Rx::Skip { .. } => self.skip()?,
            };
            if progressed {
                work += 1;
                continue;
            }
            if !self.fill(&mut budget)? {
                return Ok(work);
            }
        }
    }

    /// The in-flight request `handle` names, checked.
    fn lookup(&self, handle: u64) -> Result<u32, Broken> {
        let slot = (handle & 0xffff_ffff) as u32;
        let generation = (handle >> 32) as u32;
        match self.wires.get(slot as usize) {
            Some(w) if w.in_use && w.generation == generation && w.sent => Ok(slot),
            Some(w) if w.in_use && w.generation == generation => Err(violation(format!(
                "reply to request {handle:#x} before it was fully sent"
            ))),
            _ => Err(violation(format!(
                "reply for handle {handle:#x}, which is not in flight"
            ))),
        }
    }

    fn header(&mut self) -> Result<bool, Broken> {
        let staged = &self.staging[self.start..self.end];
        let Some((head, used)) = ReplyHead::parse(staged).map_err(|e| violation(e.to_string()))?
        else {
            return Ok(false);
        };
        self.start += used;
        let structured = self.session().structured;
        match head {
            ReplyHead::Simple { error, handle } => {
                let slot = self.lookup(handle)?;
                let w = self.wires[slot as usize];
                if error != 0 {
                    self.wires[slot as usize].error = proto::local_errno(error);
                    self.finish(slot)?;
                } else if w.command != Command::Read {
                    self.finish(slot)?;
                } else if structured {
                    return Err(violation("simple reply with data to a structured read"));
                } else {
                    self.rx = Rx::Data {
                        slot,
                        pos: w.at,
                        left: w.len as usize,
                        flags: proto::REPLY_FLAG_DONE,
                    };
                    self.wires[slot as usize].covered = w.len;
                }
            }
            ReplyHead::Chunk {
                flags,
                kind,
                handle,
                len,
            } => {
                if !structured {
                    return Err(violation("structured reply chunk without negotiation"));
                }
                let slot = self.lookup(handle)?;
                self.chunk(slot, flags, kind, len)?;
            }
        }
        Ok(true)
    }

    /// Starts parsing a chunk of `slot`.
    fn chunk(&mut self, slot: u32, flags: u16, kind: u16, len: u32) -> Result<(), Broken> {
        let w = self.wires[slot as usize];
        let read = w.command == Command::Read;
        let need = match kind {
            proto::REPLY_TYPE_NONE => {
                if len != 0 || flags & proto::REPLY_FLAG_DONE == 0 {
                    return Err(violation("NONE chunk with a payload or without DONE"));
                }
                return self.finish(slot);
            }
            proto::REPLY_TYPE_OFFSET_DATA if read => {
                if len <= 8 || (len - 8) > w.len - w.covered {
                    return Err(violation(format!(
                        "OFFSET_DATA chunk of {len} bytes for a {}-byte read",
                        w.len
                    )));
                }
                8
            }
            proto::REPLY_TYPE_OFFSET_HOLE if read => {
                if len != 12 {
                    return Err(violation(format!("OFFSET_HOLE chunk of {len} bytes")));
                }
                12
            }
            k if k & proto::REPLY_TYPE_ERROR_BIT != 0 => {
                let most = 6 + proto::MAX_ERROR_MESSAGE as u32 + 8;
                if !(6..=most).contains(&len) {
                    return Err(violation(format!("error chunk of {len} bytes")));
                }
                6
            }
            k => {
                return Err(violation(format!(
                    "chunk type {k} for a {:?} request",
                    w.command
                )))
            }
        };
        let chunk = Chunk {
            slot,
            kind,
            flags,
            len,
            need,
        };
        self.rx = Rx::Fixed { chunk, got: 0 };
        Ok(())
    }

    fn fixed_part(&mut self) -> Result<bool, Broken> {
        let Rx::Fixed { chunk, got } = self.rx else {
            return Ok(false);
        };
        let Chunk {
            slot,
            kind,
            flags,
            len,
            need,
        } = chunk;
        let take = (need - got).min(self.end - self.start);
        if take == 0 {
            return Ok(false);
        }
        self.fixed[got..got + take].copy_from_slice(&self.staging[self.start..self.start + take]);
        self.start += take;
        if got + take < need {
            self.rx = Rx::Fixed {
                chunk,
                got: got + take,
            };
            return Ok(true);
        }
        let w = self.wires[slot as usize];
        let expected = w.offset + w.covered as u64;
        match kind {
            proto::REPLY_TYPE_OFFSET_DATA => {
                let offset = proto::be_u64(&self.fixed, 0);
                if offset != expected {
                    return Err(violation(format!(
                        "read data at {offset:#x} where {expected:#x} comes next"
                    )));
                }
                let data = (len - 8) as usize;
                self.wires[slot as usize].covered += data as u32;
                self.rx = Rx::Data {
                    slot,
                    pos: w.at + w.covered as usize,
                    left: data,
                    flags,
                };
            }
            proto::REPLY_TYPE_OFFSET_HOLE => {
                let offset = proto::be_u64(&self.fixed, 0);
                let hole = proto::be_u32(&self.fixed, 8);
                if offset != expected || hole == 0 || hole > w.len - w.covered {
                    return Err(violation(format!(
                        "hole of {hole} bytes at {offset:#x} where {expected:#x} comes next"
                    )));
                }
                let pos = w.at + w.covered as usize;
                self.op_buffer(slot)[pos..pos + hole as usize].fill(0);
                self.wires[slot as usize].covered += hole;
                self.rx = Rx::Header;
                self.chunk_done(slot, flags)?;
            }
            _ => {
                let error = proto::be_u32(&self.fixed, 0);
                let message = u16::from_be_bytes([self.fixed[4], self.fixed[5]]) as u32;
                let rest = len - 6;
                let fits = if kind == proto::REPLY_TYPE_ERROR {
                    message == rest
                } else if kind == proto::REPLY_TYPE_ERROR_OFFSET {
                    message + 8 == rest
                } else {
                    message <= rest
                };
                if !fits || error == 0 {
                    return Err(violation(format!(
                        "error chunk (error {error}, message {message} bytes) of {len} bytes"
                    )));
                }
                let w = &mut self.wires[slot as usize];
                if w.error == 0 {
                    w.error = proto::local_errno(error);
                }
                self.rx = Rx::Skip {
                    slot,
                    left: rest as usize,
                    flags,
                };
            }
        }
        Ok(true)
    }

    /// The whole buffer of the op `slot` serves.
    fn op_buffer(&mut self, slot: u32) -> &mut [u8] {
        let op = self.wires[slot as usize].op;
        match self.ops[op as usize].io.as_ref() {
            // SAFETY: the I/O is in our hands until it completes; nothing else touches its
            // buffer meanwhile, and the slice does not outlive this borrow of the state.
            Some(io) => unsafe { io.buf.as_mut_slice() },
            None => &mut [],
        }
    }

    fn data(&mut self, budget: &mut usize) -> Result<bool, Broken> {
        let Rx::Data {
            slot,
            mut pos,
            mut left,
            flags,
        } = self.rx
        else {
            return Ok(false);
        };
        let staged = (self.end - self.start).min(left);
        let mut progressed = false;
        if staged > 0 {
            let (start, end) = (self.start, self.start + staged);
            let src = self.staging[start..end].as_ptr();
            let dst = &mut self.op_buffer(slot)[pos..pos + staged];
            // SAFETY: staging and the op's buffer are distinct allocations; both ranges are
            // in bounds (checked by the slicing just above and `staged <= end - start`).
            unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), staged) };
            self.start += staged;
            pos += staged;
            left -= staged;
            progressed = true;
        }
        if left > 0 && self.readable && *budget > 0 && self.start == self.end {
            // Large data straight into its buffer: no copy through staging.
            let fd = self.sock.as_ref().map(|s| s.as_raw_fd());
            if let Some(fd) = fd {
                let got = stream::recv(fd, &mut self.op_buffer(slot)[pos..pos + left]);
                let n = self.received(got, left, budget)?;
                pos += n;
                left -= n;
                progressed |= n > 0;
            }
        }
        if left > 0 {
            self.rx = Rx::Data {
                slot,
                pos,
                left,
                flags,
            };
            return Ok(progressed);
        }
        self.rx = Rx::Header;
        self.chunk_done(slot, flags)?;
        Ok(true)
    }

    fn skip(&mut self) -> Result<bool, Broken> {
        let Rx::Skip { slot, left, flags } = self.rx else {
            return Ok(false);
        };
        let take = left.min(self.end - self.start);
        self.start += take;
        if take < left {
            self.rx = Rx::Skip {
                slot,
                left: left - take,
                flags,
            };
            return Ok(take > 0);
        }
        self.rx = Rx::Header;
        self.chunk_done(slot, flags)?;
        Ok(true)
    }

    fn chunk_done(&mut self, slot: u32, flags: u16) -> Result<(), Broken> {
        if flags & proto::REPLY_FLAG_DONE != 0 {
            self.finish(slot)?;
        }
        Ok(())
    }

    /// The reply of request `slot` is complete: its op advances.
    fn finish(&mut self, slot: u32) -> Result<(), Broken> {
        let w = self.wires[slot as usize];
        if w.command == Command::Read && w.error == 0 && w.covered != w.len {
            return Err(violation(format!(
                "read reply ended after {} of {} bytes",
                w.covered, w.len
            )));
        }
        self.wires[slot as usize].in_use = false;
        self.free_wires.push(slot);
        let index = w.op as usize;
        let op = &mut self.ops[index];
        op.parts -= 1;
        if op.error == 0 {
            op.error = w.error;
        }
        if op.parts > 0 || op.issued < op.total {
            return Ok(());
        }
        if op.flush_after && op.error == 0 {
            op.flush_after = false;
            op.flushing = true;
            self.ready.push_front(w.op);
            return Ok(());
        }
        let status = if op.error == 0 { Ok(()) } else { Err(op.error) };
        if let Some(io) = op.io.take() {
            io.complete(status);
        }
        self.free_ops.push(w.op);
        if let Some(io) = self.waiting.pop_front() {
            let session = self.session();
            self.start_op(io, &session);
        }
        Ok(())
    }
}
