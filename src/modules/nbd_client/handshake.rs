//! Connecting to an NBD server and the fixed-newstyle handshake, as blocking code with one
//! deadline. It never runs on a reactor: the create RPC and each reconnect attempt run it on
//! a thread of their own and hand the finished, non-blocking socket to the reactor that will
//! own it. Why not a state machine on the reactor: name resolution (`getaddrinfo`) and
//! `connect` block anyway, a handshake happens once per connection (never per I/O), and as
//! straight-line code each step's check reads next to the step, where a hostile server's
//! answers (wrong magic, oversized replies, a refusal) are easiest to get right.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::uri::{Endpoint, NbdUri};
use crate::nbd::proto::{self, Info, OptionReply, ProtoError};

/// The export as the server described it, and what this connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`).
    pub flags: u16,
    /// The server's minimum request size (1 when it announced none).
    pub min_block: u32,
    /// Largest payload per request: the server's maximum, capped at [`proto::MAX_PAYLOAD`].
    pub max_payload: u32,
    /// Structured replies are in use.
    pub structured: bool,
}

impl Negotiated {
    /// Whether the server announced `flag`.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Why a reconnection must not be used in place of the connection it replaces: a
    /// different size or different capabilities would make earlier answers wrong.
    pub fn differs_from(&self, first: &Negotiated) -> Option<String> {
        if self.size != first.size {
            return Some(format!(
                "export size changed from {} to {} bytes",
                first.size, self.size
            ));
        }
        if self.flags != first.flags || self.min_block > first.min_block {
            return Some(format!(
                "export capabilities changed (flags {:#x} -> {:#x}, minimum block {} -> {})",
                first.flags, self.flags, first.min_block, self.min_block
            ));
        }
        None
    }
}

/// Why connecting failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The network or the socket failed (refused, unreachable, timed out, closed early).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server answered outside the protocol.
    #[error("protocol violation during the handshake: {0}")]
    Protocol(#[from] ProtoError),
    /// The server refused, or offers something this client cannot use.
    #[error("{0}")]
    Refused(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConnectError {
    let context = context.into();
    move |source| ConnectError::Io { context, source }
}

/// A connected stream, TCP or Unix, read and written with the handshake's deadline.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, left: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(left))?;
                s.set_write_timeout(Some(left))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(left))?;
                s.set_write_timeout(Some(left))
            }
        }
    }

    fn into_fd(self) -> std::io::Result<OwnedFd> {
        match self {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                Ok(s.into())
            }
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                Ok(s.into())
            }
        }
    }
}

/// The handshake's stream with its deadline: every read and write fails once it passed.
struct Talk {
    stream: Stream,
    deadline: Instant,
}

impl Talk {
    fn left(&self, what: &str) -> Result<Duration, ConnectError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectError::Io {
                context: what.to_string(),
                source: std::io::ErrorKind::TimedOut.into(),
            });
        }
        self.stream.set_timeouts(left).map_err(io(what))?;
        Ok(left)
    }

    fn read(&mut self, buf: &mut [u8], what: &str) -> Result<(), ConnectError> {
        self.left(what)?;
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.read_exact(buf),
            Stream::Unix(s) => s.read_exact(buf),
        };
        r.map_err(io(what))
    }

    fn write(&mut self, buf: &[u8], what: &str) -> Result<(), ConnectError> {
        self.left(what)?;
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
        };
        r.map_err(io(what))
    }

    /// The next option reply for `option`, with its payload.
    fn option_reply(&mut self, option: u32) -> Result<(OptionReply, Vec<u8>), ConnectError> {
        let mut head = [0u8; proto::OPTION_REPLY_HEADER_LEN];
        self.read(&mut head, "reading an option reply")?;
        let reply = OptionReply::parse(&head)?;
        if reply.option != option {
            return Err(ConnectError::Refused(format!(
                "server answered option {} while {option} was asked",
                reply.option
            )));
        }
        let mut data = vec![0u8; reply.len as usize];
        self.read(&mut data, "reading an option reply")?;
        Ok((reply, data))
    }
}

/// Sets TCP keepalive so a peer that vanished without a reset (a host gone, a cable pulled)
/// is noticed within ~11 s even when no request is in flight.
fn keepalive(s: &TcpStream) -> std::io::Result<()> {
    let fd = s.as_raw_fd();
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
    ] {
        let v: libc::c_int = value;
        // SAFETY: setsockopt reads one c_int from a valid pointer; fd is our open socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn open(uri: &NbdUri, deadline: Instant) -> Result<Stream, ConnectError> {
    match &uri.endpoint {
        Endpoint::Unix(path) => UnixStream::connect(path)
            .map(Stream::Unix)
            .map_err(io(format!("connecting to {path}"))),
        Endpoint::Tcp { host, port } => {
            let shown = format!("{host}:{port}");
            let addrs = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(io(format!("resolving {shown}")))?;
            let mut last = None;
            for addr in addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(s) => {
                        s.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
                        keepalive(&s).map_err(io("setting TCP keepalive"))?;
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(ConnectError::Io {
                context: format!("connecting to {shown}"),
                source: last.unwrap_or_else(|| std::io::ErrorKind::TimedOut.into()),
            })
        }
    }
}

/// Connects to `uri`'s server and negotiates its export within `timeout`: fixed newstyle,
/// structured replies when offered, `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME` with a server
/// that has no GO). Returns the socket, non-blocking, ready for transmission.
pub fn connect(uri: &NbdUri, timeout: Duration) -> Result<(OwnedFd, Negotiated), ConnectError> {
    let deadline = Instant::now() + timeout;
    let stream = open(uri, deadline)?;
    let mut talk = Talk { stream, deadline };
    let negotiated = negotiate(&mut talk, &uri.export)?;
    let fd = talk
        .stream
        .into_fd()
        .map_err(io("making the socket non-blocking"))?;
    Ok((fd, negotiated))
}

fn negotiate(talk: &mut Talk, export: &str) -> Result<Negotiated, ConnectError> {
    let mut greeting = [0u8; proto::GREETING_LEN];
    talk.read(&mut greeting, "reading the server's greeting")?;
    let server_flags = proto::parse_greeting(&greeting)?;
    let no_zeroes = server_flags & proto::FLAG_NO_ZEROES != 0;
    let mut client_flags = proto::FLAG_C_FIXED_NEWSTYLE;
    if no_zeroes {
        client_flags |= proto::FLAG_C_NO_ZEROES;
    }
    talk.write(&client_flags.to_be_bytes(), "sending the client flags")?;

    talk.write(
        &proto::option_request(proto::OPT_STRUCTURED_REPLY, &[]),
        "asking for structured replies",
    )?;
    let (reply, _) = talk.option_reply(proto::OPT_STRUCTURED_REPLY)?;
    let structured = reply.reply_type == proto::REP_ACK;
    if !structured && !reply.is_error() {
        return Err(ConnectError::Refused(format!(
            "unexpected reply {:#x} to NBD_OPT_STRUCTURED_REPLY",
            reply.reply_type
        )));
    }

    let go = proto::info_request(export.as_bytes(), &[proto::INFO_BLOCK_SIZE]);
    talk.write(
        &proto::option_request(proto::OPT_GO, &go),
        "sending NBD_OPT_GO",
    )?;
    let mut export_info = None;
    let mut block = None;
    loop {
        let (reply, data) = talk.option_reply(proto::OPT_GO)?;
        match reply.reply_type {
            proto::REP_ACK => break,
            proto::REP_INFO => match proto::parse_info_reply(&data) {
                Some(Info::Export { size, flags }) => export_info = Some((size, flags)),
                Some(Info::BlockSize { min, max, .. }) => block = Some((min, max)),
                Some(Info::Other) => {}
                None => {
                    return Err(ConnectError::Refused(
                        "malformed NBD_REP_INFO from the server".into(),
                    ))
                }
            },
            proto::REP_ERR_UNSUP => return export_name(talk, export, no_zeroes, structured),
            t if reply.is_error() => {
                let text = String::from_utf8_lossy(&data);
                return Err(ConnectError::Refused(format!(
                    "server refused export '{export}' (NBD_REP_ERR {:#x}){}{text}",
                    t & !(1 << 31),
                    if text.is_empty() { "" } else { ": " },
                )));
            }
            t => {
                return Err(ConnectError::Refused(format!(
                    "unexpected reply {t:#x} to NBD_OPT_GO"
                )))
            }
        }
    }
    let (size, flags) = export_info.ok_or_else(|| {
        ConnectError::Refused("server ended NBD_OPT_GO without NBD_INFO_EXPORT".into())
    })?;
    checked(size, flags, block, structured)
}

/// The old way in, for servers without `NBD_OPT_GO`: no error can come back, a refusal is a
/// closed connection.
fn export_name(
    talk: &mut Talk,
    export: &str,
    no_zeroes: bool,
    structured: bool,
) -> Result<Negotiated, ConnectError> {
    talk.write(
        &proto::option_request(proto::OPT_EXPORT_NAME, export.as_bytes()),
        "sending NBD_OPT_EXPORT_NAME",
    )?;
    let mut reply = vec![0u8; if no_zeroes { 10 } else { 134 }];
    talk.read(&mut reply, "reading the export's size (unknown export?)")?;
    let size = proto::be_u64(&reply, 0);
    let flags = u16::from_be_bytes([reply[8], reply[9]]);
    checked(size, flags, None, structured)
}

/// Checks what the server announced against what this client can serve.
fn checked(
    size: u64,
    flags: u16,
    block: Option<(u32, u32)>,
    structured: bool,
) -> Result<Negotiated, ConnectError> {
    if size == 0 || size > i64::MAX as u64 {
        return Err(ConnectError::Refused(format!(
            "export size {size} is not usable"
        )));
    }
    if flags & proto::FLAG_HAS_FLAGS == 0 {
        return Err(ConnectError::Refused(
            "server sent transmission flags without NBD_FLAG_HAS_FLAGS".into(),
        ));
    }
    let (min_block, max) = block.unwrap_or((1, proto::MAX_PAYLOAD));
    if !min_block.is_power_of_two() || min_block > crate::bdev::MAX_BLOCK_SIZE || max < min_block {
        return Err(ConnectError::Refused(format!(
            "server block sizes are not usable (minimum {min_block}, maximum {max})"
        )));
    }
    Ok(Negotiated {
        size,
        flags,
        min_block,
        max_payload: max.min(proto::MAX_PAYLOAD),
        structured,
    })
}
