//! The NBD wire format (NetworkBlockDevice/nbd doc/proto.md), as pure functions for both
//! ends: the fixed-newstyle handshake (greeting, client options, option replies, export
//! information), transmission requests and replies (simple and structured), and which
//! requests are refused with which NBD error. The export (server) and the NBD client bdev
//! use the same encoders and decoders. No I/O here, so every rule is unit-tested on bytes.

use thiserror::Error;

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, also the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the 124 zero bytes after `NBD_OPT_EXPORT_NAME` may be skipped.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: skip the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: writes are refused.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is served.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is honoured.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is served.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is served.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: flush and FUA are visible on every connection (no per-connection
/// cache), so clients may spread I/O over several connections.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// `NBD_OPT_EXPORT_NAME`.
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`.
pub const OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`.
pub const OPT_LIST: u32 = 3;
/// `NBD_OPT_INFO`.
pub const OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`.
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply: accepted / end of a list.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of `NBD_OPT_LIST`.
pub const REP_SERVER: u32 = 2;
/// Option reply: one piece of export information.
pub const REP_INFO: u32 = 3;
const REP_ERR: u32 = 1 << 31;
/// Option error: unknown option.
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
/// Option error: malformed option.
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR | 7;

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum request sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: write zeroes without punching a hole (a hint: ours never punch).
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Structured reply flag: last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Structured chunk: the request finished, nothing to add.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Structured chunk: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Structured chunk: a hole (reads as zeroes) at an offset, without payload.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Structured chunk: an error, with an optional message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// Structured chunk: an error at an offset, with an optional message.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;
/// Bit set in every structured error chunk type, known or not.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
/// Longest message an error chunk may carry (the spec's MUST).
pub const MAX_ERROR_MESSAGE: usize = 4096;
/// `cliserv_magic`: what an old-style server sends where newstyle sends `IHAVEOPT`.
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;

/// NBD's own error numbers (the spec restricts replies to these).
pub mod errno {
    /// Not permitted (a write to a read-only export).
    pub const EPERM: u32 = 1;
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid request.
    pub const EINVAL: u32 = 22;
    /// Beyond the end (writes), or out of space.
    pub const ENOSPC: u32 = 28;
    /// Too large.
    pub const EOVERFLOW: u32 = 75;
    /// Operation not supported.
    pub const ENOTSUP: u32 = 95;
    /// The server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// The largest request payload served: NBD's common limit (qemu and nbdkit use 32 MiB).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Longest option payload accepted during the handshake: a 4096-byte name plus its info
/// requests fit with room to spare; anything longer is a hostile client.
pub const MAX_OPTION_LEN: u32 = 16 << 10;
/// Longest export name (the spec's MUST).
pub const MAX_NAME_LEN: usize = 4096;
/// Bytes of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of a client option header.
pub const OPTION_HEADER_LEN: usize = 16;
/// Bytes of the server's greeting.
pub const GREETING_LEN: usize = 18;
/// Bytes of an option reply header.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Bytes of a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;

/// Why the connection must be dropped: the peer broke a MUST of the protocol and the byte
/// stream can no longer be trusted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// An option header without `IHAVEOPT`.
    #[error("bad option magic {0:#x}")]
    OptionMagic(u64),
    /// A request header without `NBD_REQUEST_MAGIC`.
    #[error("bad request magic {0:#x}")]
    RequestMagic(u32),
    /// Client flags the server did not offer.
    #[error("unknown client flags {0:#x}")]
    ClientFlags(u32),
    /// An option payload longer than any valid option.
    #[error("option {option} carries {len} bytes")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its announced length.
        len: u32,
    },
    /// A write whose payload exceeds what the server accepts: it cannot be skipped safely.
    #[error("write of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    PayloadTooLarge(u32),
    /// A greeting that is not NBD's, or an old-style server (no option haggling).
    #[error("not a fixed-newstyle NBD server (greeting {0:#x})")]
    Greeting(u64),
    /// A server that does not speak fixed newstyle.
    #[error("the server does not speak fixed newstyle")]
    NotFixedNewstyle,
    /// An option reply without its magic.
    #[error("bad option reply magic {0:#x}")]
    OptionReplyMagic(u64),
    /// A transmission reply starting with neither reply magic.
    #[error("bad reply magic {0:#x}")]
    ReplyMagic(u32),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// The server's first 18 bytes: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut g = [0u8; 18];
    g[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    g
}

/// The client's flags, checked: only the two the server offered. Returns whether the client
/// asked to skip the zero padding.
pub fn parse_client_flags(b: &[u8; 4]) -> Result<bool, ProtoError> {
    let flags = u32::from_be_bytes(*b);
    if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(ProtoError::ClientFlags(flags));
    }
    Ok(flags & FLAG_C_NO_ZEROES != 0)
}

/// An option header: (option, payload length), checked for the magic and a sane length.
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<(u32, u32), ProtoError> {
    let magic = u64_at(b, 0);
    if magic != IHAVEOPT {
        return Err(ProtoError::OptionMagic(magic));
    }
    let (option, len) = (u32_at(b, 8), u32_at(b, 12));
    if len > MAX_OPTION_LEN {
        return Err(ProtoError::OptionTooLong { option, len });
    }
    Ok((option, len))
}

/// A decoded client option.
#[derive(Debug, PartialEq, Eq)]
pub enum OptionRequest {
    /// Old-style export selection: no error can be returned, so an unknown name closes.
    ExportName(String),
    /// The client leaves.
    Abort,
    /// List the exports.
    List,
    /// Describe an export (`go` false) or describe and enter transmission (`go` true).
    Info {
        /// The export asked for ("" is the default export).
        name: String,
        /// The `NBD_INFO_*` items the client asked for.
        requests: Vec<u16>,
        /// `NBD_OPT_GO` rather than `NBD_OPT_INFO`.
        go: bool,
    },
    /// Structured replies for reads.
    StructuredReply,
    /// An option this server does not implement (STARTTLS, meta contexts, extended headers).
    Unsupported,
    /// A known option with a malformed payload; the text explains it to the user.
    Invalid(&'static str),
}

fn parse_name(b: &[u8]) -> Result<String, &'static str> {
    if b.len() > MAX_NAME_LEN {
        return Err("export name too long");
    }
    if b.contains(&0) {
        return Err("export name contains NUL");
    }
    String::from_utf8(b.to_vec()).map_err(|_| "export name is not UTF-8")
}

/// Decodes option `option` with payload `data`.
pub fn parse_option(option: u32, data: &[u8]) -> OptionRequest {
    let empty = |r: OptionRequest| {
        if data.is_empty() {
            r
        } else {
            OptionRequest::Invalid("this option takes no data")
        }
    };
    match option {
        OPT_EXPORT_NAME => match parse_name(data) {
            Ok(name) => OptionRequest::ExportName(name),
            Err(why) => OptionRequest::Invalid(why),
        },
        OPT_ABORT => OptionRequest::Abort,
        OPT_LIST => empty(OptionRequest::List),
        OPT_STRUCTURED_REPLY => empty(OptionRequest::StructuredReply),
        OPT_INFO | OPT_GO => parse_info(data, option == OPT_GO),
        _ => OptionRequest::Unsupported,
    }
}

/// `NBD_OPT_INFO`/`GO` payload: u32 name length, name, u16 count, count u16 info types.
fn parse_info(data: &[u8], go: bool) -> OptionRequest {
    if data.len() < 6 {
        return OptionRequest::Invalid("option too short");
    }
    let name_len = u32_at(data, 0) as usize;
    let Some(rest) = data
        .len()
        .checked_sub(4 + 2)
        .and_then(|r| r.checked_sub(name_len))
    else {
        return OptionRequest::Invalid("name length exceeds the option");
    };
    let name = match parse_name(&data[4..4 + name_len]) {
        Ok(name) => name,
        Err(why) => return OptionRequest::Invalid(why),
    };
    let count = u16_at(data, 4 + name_len) as usize;
    if rest != count * 2 {
        return OptionRequest::Invalid("info request count does not match the option length");
    }
    let base = 4 + name_len + 2;
    let requests = (0..count).map(|i| u16_at(data, base + 2 * i)).collect();
    OptionRequest::Info { name, requests, go }
}

/// The server's greeting, checked from the client side: returns the handshake flags. An
/// old-style server (no options, no export names) and a server without fixed newstyle are
/// refused: the client never talks to what it cannot negotiate with safely.
pub fn parse_greeting(b: &[u8; GREETING_LEN]) -> Result<u16, ProtoError> {
    let (magic, opt) = (u64_at(b, 0), u64_at(b, 8));
    if magic != NBDMAGIC || opt != IHAVEOPT {
        return Err(ProtoError::Greeting(if magic != NBDMAGIC {
            magic
        } else {
            opt
        }));
    }
    let flags = u16_at(b, 16);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(ProtoError::NotFixedNewstyle);
    }
    Ok(flags)
}

/// A client option as sent: `IHAVEOPT`, option, length, data.
pub fn option_request(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OPTION_HEADER_LEN + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The payload of `NBD_OPT_INFO`/`GO`: name length, name, count, the `NBD_INFO_*` asked for.
pub fn info_request(name: &[u8], infos: &[u16]) -> Vec<u8> {
    let mut d = Vec::with_capacity(6 + name.len() + 2 * infos.len());
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name);
    d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend_from_slice(&i.to_be_bytes());
    }
    d
}

/// An option reply header, decoded by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReply {
    /// The option answered.
    pub option: u32,
    /// `NBD_REP_*`.
    pub reply_type: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

impl OptionReply {
    /// Decodes a header; a wrong magic or a payload longer than any valid reply ends the
    /// handshake (the client would otherwise buffer whatever a hostile server announces).
    pub fn parse(b: &[u8; OPTION_REPLY_HEADER_LEN]) -> Result<OptionReply, ProtoError> {
        let magic = u64_at(b, 0);
        if magic != OPTION_REPLY_MAGIC {
            return Err(ProtoError::OptionReplyMagic(magic));
        }
        let r = OptionReply {
            option: u32_at(b, 8),
            reply_type: u32_at(b, 12),
            len: u32_at(b, 16),
        };
        if r.len > MAX_OPTION_LEN {
            return Err(ProtoError::OptionTooLong {
                option: r.option,
                len: r.len,
            });
        }
        Ok(r)
    }

    /// Whether the reply is one of the `NBD_REP_ERR_*` types.
    pub fn is_error(&self) -> bool {
        self.reply_type & REP_ERR != 0
    }
}

/// One `NBD_REP_INFO` payload, as the client uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    Export {
        /// Bytes.
        size: u64,
        /// `NBD_FLAG_*`.
        flags: u16,
    },
    /// `NBD_INFO_BLOCK_SIZE`: minimum, preferred, maximum request sizes.
    BlockSize {
        /// Requests must be multiples of this.
        min: u32,
        /// Requests of this size or a multiple are fastest.
        preferred: u32,
        /// Largest payload accepted.
        max: u32,
    },
    /// Another item (a name, a description): not needed to serve I/O.
    Other,
}

/// Decodes an `NBD_REP_INFO` payload; None when its length does not match its type.
pub fn parse_info_reply(data: &[u8]) -> Option<Info> {
    if data.len() < 2 {
        return None;
    }
    match (u16_at(data, 0), data.len()) {
        (INFO_EXPORT, 12) => Some(Info::Export {
            size: u64_at(data, 2),
            flags: u16_at(data, 10),
        }),
        (INFO_BLOCK_SIZE, 14) => Some(Info::BlockSize {
            min: u32_at(data, 2),
            preferred: u32_at(data, 6),
            max: u32_at(data, 10),
        }),
        (INFO_EXPORT | INFO_BLOCK_SIZE, _) => None,
        _ => Some(Info::Other),
    }
}

/// A transmission reply header, decoded by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHead {
    /// A simple reply; for a successful read without structured replies the data follows.
    Simple {
        /// NBD errno, 0 for success.
        error: u32,
        /// The request's handle.
        handle: u64,
    },
    /// A structured reply chunk; `len` payload bytes follow.
    Chunk {
        /// `NBD_REPLY_FLAG_*`.
        flags: u16,
        /// `NBD_REPLY_TYPE_*`.
        kind: u16,
        /// The request's handle.
        handle: u64,
        /// Payload bytes.
        len: u32,
    },
}

impl ReplyHead {
    /// Decodes the header at the start of `b`: None while `b` holds too few bytes to tell,
    /// else the header and its length on the wire.
    pub fn parse(b: &[u8]) -> Result<Option<(ReplyHead, usize)>, ProtoError> {
        if b.len() < 4 {
            return Ok(None);
        }
        match u32_at(b, 0) {
            SIMPLE_REPLY_MAGIC if b.len() >= SIMPLE_REPLY_LEN => Ok(Some((
                ReplyHead::Simple {
                    error: u32_at(b, 4),
                    handle: u64_at(b, 8),
                },
                SIMPLE_REPLY_LEN,
            ))),
            STRUCTURED_REPLY_MAGIC if b.len() >= CHUNK_HEADER_LEN => Ok(Some((
                ReplyHead::Chunk {
                    flags: u16_at(b, 4),
                    kind: u16_at(b, 6),
                    handle: u64_at(b, 8),
                    len: u32_at(b, 16),
                },
                CHUNK_HEADER_LEN,
            ))),
            SIMPLE_REPLY_MAGIC | STRUCTURED_REPLY_MAGIC => Ok(None),
            other => Err(ProtoError::ReplyMagic(other)),
        }
    }
}

/// Big-endian u64 at `at` (decoders of payloads outside this file).
pub fn be_u64(b: &[u8], at: usize) -> u64 {
    u64_at(b, at)
}

/// Big-endian u32 at `at` (decoders of payloads outside this file).
pub fn be_u32(b: &[u8], at: usize) -> u32 {
    u32_at(b, at)
}

/// Maps an NBD errno from a reply to the local errno a bdev completes with: the NBD set is
/// a subset of Linux's numbers; anything else (a server's invention) is an I/O error.
pub fn local_errno(error: u32) -> i32 {
    match error {
        errno::EPERM => libc::EPERM,
        // Not ENOMEM: locally that status means "resubmit" (SPDK's NOMEM), and a server that
        // keeps answering it would make the bdev layer retry forever.
        errno::EINVAL => libc::EINVAL,
        errno::ENOSPC => libc::ENOSPC,
        errno::EOVERFLOW => libc::EOVERFLOW,
        errno::ENOTSUP => libc::ENOTSUP,
        errno::ESHUTDOWN => libc::ESHUTDOWN,
        _ => libc::EIO,
    }
}

/// One option reply: magic, option, type, length, data.
pub fn option_reply(option: u32, reply_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// `NBD_REP_SERVER` payload for `NBD_OPT_LIST`.
pub fn server_entry(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// `NBD_INFO_EXPORT` payload.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// `NBD_INFO_NAME` payload.
pub fn info_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + name.len());
    out.extend_from_slice(&INFO_NAME.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// `NBD_INFO_BLOCK_SIZE` payload: requests must be multiples of the bdev's block size
/// (its I/O unit), 4 KiB or more is preferred, at most [`MAX_PAYLOAD`].
pub fn info_block_size(block_size: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&block_size.to_be_bytes());
    out.extend_from_slice(&block_size.max(4096).to_be_bytes());
    out.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    out
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, flags, and the 124 zero bytes unless skipped.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + 124);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.resize(out.len() + 124, 0);
    }
    out
}

/// What an export can do, for its transmission flags.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Writes refused.
    pub read_only: bool,
    /// The bdev serves flush (and so FUA is meaningful).
    pub flush: bool,
    /// The bdev serves unmap.
    pub trim: bool,
    /// The bdev serves write_zeroes.
    pub write_zeroes: bool,
}

/// The 16-bit transmission flags of an export.
pub fn transmission_flags(caps: Capabilities) -> u16 {
    let mut flags = FLAG_HAS_FLAGS | FLAG_CAN_MULTI_CONN | FLAG_SEND_FUA;
    if caps.read_only {
        flags |= FLAG_READ_ONLY;
    }
    if caps.flush {
        flags |= FLAG_SEND_FLUSH;
    }
    if caps.trim && !caps.read_only {
        flags |= FLAG_SEND_TRIM;
    }
    if caps.write_zeroes && !caps.read_only {
        flags |= FLAG_SEND_WRITE_ZEROES;
    }
    flags
}

/// The transmission commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE` (payload follows the header).
    Write,
    /// `NBD_CMD_DISC`: finish what is in flight, then close.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// Anything else (CACHE, BLOCK_STATUS without a meta context, unknown): EINVAL.
    Other(u16),
}

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command.
    pub command: Command,
    /// The client's handle, echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub len: u32,
}

impl Request {
    /// Decodes a header; a wrong magic means the stream is out of sync: close.
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Result<Request, ProtoError> {
        let magic = u32_at(b, 0);
        if magic != REQUEST_MAGIC {
            return Err(ProtoError::RequestMagic(magic));
        }
        let command = match u16_at(b, 6) {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disc,
            3 => Command::Flush,
            4 => Command::Trim,
            6 => Command::WriteZeroes,
            other => Command::Other(other),
        };
        let request = Request {
            flags: u16_at(b, 4),
            command,
            handle: u64_at(b, 8),
            offset: u64_at(b, 16),
            len: u32_at(b, 24),
        };
        if command == Command::Write && request.len > MAX_PAYLOAD {
            return Err(ProtoError::PayloadTooLarge(request.len));
        }
        Ok(request)
    }

    /// Bytes of payload following the header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.command == Command::Write {
            self.len
        } else {
            0
        }
    }

    /// The request header bytes, as a client sends them (tests and tools).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let code = match self.command {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disc => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::WriteZeroes => 6,
            Command::Other(c) => c,
        };
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&code.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// What the export looks like to request validation.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes.
    pub size: u64,
    /// Requests must be multiples of this.
    pub block_size: u32,
    /// The export's capabilities.
    pub caps: Capabilities,
}

/// Checks a data-path request against the export: `Err` is the NBD error to reply with.
/// Order follows qemu's server: unknown command, flags, size, alignment, range, permission.
pub fn validate(r: &Request, g: &Geometry) -> Result<(), u32> {
    let allowed_flags = match r.command {
        Command::Read | Command::Write | Command::Flush | Command::Trim => CMD_FLAG_FUA,
        Command::WriteZeroes => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        Command::Disc => u16::MAX,
        Command::Other(_) => return Err(errno::EINVAL),
    };
    if r.flags & !allowed_flags != 0 {
        return Err(errno::EINVAL);
    }
    let supported = match r.command {
        Command::Flush => g.caps.flush,
        Command::Trim => g.caps.trim,
        Command::WriteZeroes => g.caps.write_zeroes,
        _ => true,
    };
    if !supported {
        return Err(errno::EINVAL);
    }
    if r.command == Command::Flush {
        return Ok(());
    }
    if r.len > MAX_PAYLOAD && matches!(r.command, Command::Read) {
        return Err(errno::EINVAL);
    }
    let bs = g.block_size as u64;
    if !r.offset.is_multiple_of(bs) || !(r.len as u64).is_multiple_of(bs) {
        return Err(errno::EINVAL);
    }
    let writes = matches!(
        r.command,
        Command::Write | Command::Trim | Command::WriteZeroes
    );
    if r.offset
        .checked_add(r.len as u64)
        .is_none_or(|end| end > g.size)
    {
        // The spec's SHOULD: ENOSPC for writes past the end, EINVAL otherwise (as qemu).
        return Err(if writes { errno::ENOSPC } else { errno::EINVAL });
    }
    if writes && g.caps.read_only {
        return Err(errno::EPERM);
    }
    Ok(())
}

/// Maps a bdev errno to the values NBD allows (qemu's mapping).
pub fn nbd_errno(errno: i32) -> u32 {
    match errno {
        libc::EPERM | libc::EROFS => errno::EPERM,
        libc::EIO => errno::EIO,
        libc::ENOMEM => errno::ENOMEM,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => errno::ENOSPC,
        libc::EOVERFLOW => errno::EOVERFLOW,
        libc::ENOTSUP => errno::ENOTSUP,
        libc::ESHUTDOWN => errno::ESHUTDOWN,
        libc::EINVAL => errno::EINVAL,
        _ => errno::EIO,
    }
}

/// A reply header kept inline, so queuing a reply never allocates.
#[derive(Debug, Clone, Copy)]
pub struct ReplyHeader {
    bytes: [u8; 32],
    len: u8,
}

impl ReplyHeader {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    fn chunk(handle: u64, flags: u16, kind: u16, payload_len: u32) -> ReplyHeader {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        bytes[4..6].copy_from_slice(&flags.to_be_bytes());
        bytes[6..8].copy_from_slice(&kind.to_be_bytes());
        bytes[8..16].copy_from_slice(&handle.to_be_bytes());
        bytes[16..20].copy_from_slice(&payload_len.to_be_bytes());
        ReplyHeader { bytes, len: 20 }
    }

    /// A simple reply (data, if any, follows: only for a successful read).
    pub fn simple(handle: u64, error: u32) -> ReplyHeader {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        bytes[4..8].copy_from_slice(&error.to_be_bytes());
        bytes[8..16].copy_from_slice(&handle.to_be_bytes());
        ReplyHeader { bytes, len: 16 }
    }

    /// The single, final `OFFSET_DATA` chunk of a structured read reply; `data_len` bytes of
    /// data follow (at least one).
    pub fn read_data(handle: u64, offset: u64, data_len: u32) -> ReplyHeader {
        let mut h = Self::chunk(
            handle,
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_DATA,
            data_len + 8,
        );
        h.bytes[20..28].copy_from_slice(&offset.to_be_bytes());
        h.len = 28;
        h
    }

    /// A final `NONE` chunk (a structured reply to an empty read).
    pub fn done(handle: u64) -> ReplyHeader {
        Self::chunk(handle, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0)
    }

    /// A final `ERROR` chunk without message.
    pub fn error_chunk(handle: u64, error: u32) -> ReplyHeader {
        let mut h = Self::chunk(handle, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 6);
        h.bytes[20..24].copy_from_slice(&error.to_be_bytes());
        h.len = 26;
        h
    }

    /// The reply to request `r` that failed with `error` (0: success without data):
    /// reads get structured chunks when those were negotiated, everything else simple
    /// replies (the spec allows simple replies for requests without data).
    pub fn status(r: &Request, error: u32, structured: bool) -> ReplyHeader {
        match (structured && r.command == Command::Read, error) {
            (true, 0) => Self::done(r.handle),
            (true, e) => Self::error_chunk(r.handle, e),
            (false, e) => Self::simple(r.handle, e),
        }
    }

    /// The header preceding the data of a successful read of `len` > 0 bytes.
    pub fn read_ok(r: &Request, structured: bool) -> ReplyHeader {
        if structured {
            Self::read_data(r.handle, r.offset, r.len)
        } else {
            Self::simple(r.handle, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        Capabilities {
            read_only: false,
            flush: true,
            trim: true,
            write_zeroes: true,
        }
    }

    fn geometry() -> Geometry {
        Geometry {
            size: 1 << 20,
            block_size: 512,
            caps: caps(),
        }
    }

    fn req(command: Command, flags: u16, offset: u64, len: u32) -> Request {
        Request {
            flags,
            command,
            handle: 0xfeed,
            offset,
            len,
        }
    }

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_and_fixed_newstyle_flags() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags_beyond_the_offered_ones_are_refused() {
        assert_eq!(parse_client_flags(&[0, 0, 0, 1]), Ok(false));
        assert_eq!(parse_client_flags(&[0, 0, 0, 3]), Ok(true));
        assert_eq!(
            parse_client_flags(&[0, 0, 0, 4]),
            Err(ProtoError::ClientFlags(4))
        );
    }

    fn option_header(magic: u64, option: u32, len: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&magic.to_be_bytes());
        b[8..12].copy_from_slice(&option.to_be_bytes());
        b[12..].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn option_headers_need_the_magic_and_a_sane_length() {
        assert_eq!(
            parse_option_header(&option_header(IHAVEOPT, OPT_GO, 10)),
            Ok((OPT_GO, 10))
        );
        assert_eq!(
            parse_option_header(&option_header(1, OPT_GO, 10)),
            Err(ProtoError::OptionMagic(1))
        );
        assert!(matches!(
            parse_option_header(&option_header(IHAVEOPT, OPT_GO, u32::MAX)),
            Err(ProtoError::OptionTooLong { .. })
        ));
    }

    #[test]
    fn go_and_info_payloads_are_decoded_and_checked() {
        assert_eq!(
            parse_option(OPT_GO, &info_request(b"Q0", &[INFO_BLOCK_SIZE, INFO_NAME])),
            OptionRequest::Info {
                name: "Q0".into(),
                requests: vec![INFO_BLOCK_SIZE, INFO_NAME],
                go: true
            }
        );
        assert_eq!(
            parse_option(OPT_INFO, &info_request(b"", &[])),
            OptionRequest::Info {
                name: String::new(),
                requests: vec![],
                go: false
            }
        );
        let mut long_name = info_request(b"Q0", &[1]);
        long_name[3] = 200;
        assert!(matches!(
            parse_option(OPT_GO, &long_name),
            OptionRequest::Invalid(_)
        ));
        let mut bad_count = info_request(b"Q0", &[1]);
        bad_count.push(0);
        assert!(matches!(
            parse_option(OPT_GO, &bad_count),
            OptionRequest::Invalid(_)
        ));
        assert!(matches!(
            parse_option(OPT_GO, &[0, 0]),
            OptionRequest::Invalid(_)
        ));
        assert!(matches!(
            parse_option(OPT_GO, &info_request(&[0xff, 0xfe], &[])),
            OptionRequest::Invalid(_)
        ));
    }

    #[test]
    fn simple_options_take_no_data_and_unknown_ones_are_unsupported() {
        assert_eq!(parse_option(OPT_LIST, &[]), OptionRequest::List);
        assert!(matches!(
            parse_option(OPT_LIST, &[1]),
            OptionRequest::Invalid(_)
        ));
        assert_eq!(
            parse_option(OPT_STRUCTURED_REPLY, &[]),
            OptionRequest::StructuredReply
        );
        assert_eq!(parse_option(OPT_ABORT, &[]), OptionRequest::Abort);
        assert_eq!(
            parse_option(OPT_EXPORT_NAME, b"disk"),
            OptionRequest::ExportName("disk".into())
        );
        assert!(matches!(
            parse_option(OPT_EXPORT_NAME, b"a\0b"),
            OptionRequest::Invalid(_)
        ));
        for tls_or_meta in [5, 9, 10, 11, 0xdead] {
            assert_eq!(
                parse_option(tls_or_meta, &[1, 2]),
                OptionRequest::Unsupported
            );
        }
    }

    #[test]
    fn option_replies_and_infos_have_the_documented_layout() {
        let r = option_reply(OPT_GO, REP_ACK, &[]);
        assert_eq!(r.len(), 20);
        assert_eq!(&r[..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&r[8..12], &OPT_GO.to_be_bytes());
        assert_eq!(&r[12..16], &REP_ACK.to_be_bytes());
        assert_eq!(&r[16..20], &[0, 0, 0, 0]);
        assert_eq!(
            info_export(0x1122, 0x0101),
            [0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 1, 1]
        );
        let bs = info_block_size(512);
        assert_eq!(&bs[..2], &[0, 3]);
        assert_eq!(u32_at(&bs, 2), 512);
        assert_eq!(u32_at(&bs, 6), 4096);
        assert_eq!(u32_at(&bs, 10), MAX_PAYLOAD);
        assert_eq!(server_entry("ab"), [0, 0, 0, 2, b'a', b'b']);
        assert_eq!(export_name_reply(1, 3, false).len(), 134);
        assert_eq!(export_name_reply(1, 3, true).len(), 10);
    }

    #[test]
    fn transmission_flags_follow_the_capabilities() {
        let all = transmission_flags(caps());
        for f in [
            FLAG_HAS_FLAGS,
            FLAG_SEND_FLUSH,
            FLAG_SEND_FUA,
            FLAG_SEND_TRIM,
            FLAG_SEND_WRITE_ZEROES,
            FLAG_CAN_MULTI_CONN,
        ] {
            assert_ne!(all & f, 0, "{f:#x}");
        }
        assert_eq!(all & FLAG_READ_ONLY, 0);
        let ro = transmission_flags(Capabilities {
            read_only: true,
            ..caps()
        });
        assert_ne!(ro & FLAG_READ_ONLY, 0);
        assert_eq!(ro & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES), 0);
    }

    #[test]
    fn requests_round_trip_and_bad_magic_or_huge_writes_are_fatal() {
        let r = req(Command::Write, CMD_FLAG_FUA, 4096, 8192);
        assert_eq!(Request::parse(&r.encode()), Ok(r));
        let mut bad = r.encode();
        bad[0] ^= 1;
        assert!(matches!(
            Request::parse(&bad),
            Err(ProtoError::RequestMagic(_))
        ));
        let huge = req(Command::Write, 0, 0, MAX_PAYLOAD + 1);
        assert_eq!(
            Request::parse(&huge.encode()),
            Err(ProtoError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
        let huge_read = req(Command::Read, 0, 0, u32::MAX);
        assert_eq!(Request::parse(&huge_read.encode()), Ok(huge_read));
        assert_eq!(huge_read.payload_len(), 0);
        let cache = req(Command::Other(5), 0, 0, 512);
        assert_eq!(Request::parse(&cache.encode()), Ok(cache));
    }

    #[test]
    fn validation_maps_bad_requests_to_nbd_errors() {
        let g = geometry();
        let ok = |c, f, o, l| validate(&req(c, f, o, l), &g);
        assert_eq!(ok(Command::Read, 0, 0, 4096), Ok(()));
        assert_eq!(ok(Command::Write, CMD_FLAG_FUA, 512, 512), Ok(()));
        assert_eq!(ok(Command::Flush, 0, 0, 0), Ok(()));
        assert_eq!(ok(Command::WriteZeroes, CMD_FLAG_NO_HOLE, 0, 512), Ok(()));
        assert_eq!(ok(Command::Other(5), 0, 0, 512), Err(errno::EINVAL));
        assert_eq!(ok(Command::Read, 1 << 4, 0, 512), Err(errno::EINVAL));
        assert_eq!(ok(Command::Read, 0, 0, u32::MAX), Err(errno::EINVAL));
        assert_eq!(ok(Command::Read, 0, 1, 512), Err(errno::EINVAL));
        assert_eq!(ok(Command::Read, 0, 0, 100), Err(errno::EINVAL));
        assert_eq!(ok(Command::Read, 0, 1 << 20, 512), Err(errno::EINVAL));
        assert_eq!(
            ok(Command::Read, 0, u64::MAX - 511, 512),
            Err(errno::EINVAL)
        );
        assert_eq!(ok(Command::Write, 0, 1 << 20, 512), Err(errno::ENOSPC));
        assert_eq!(
            ok(Command::Trim, 0, (1 << 20) - 512, 1024),
            Err(errno::ENOSPC)
        );
        let ro = Geometry {
            caps: Capabilities {
                read_only: true,
                ..caps()
            },
            ..g
        };
        assert_eq!(
            validate(&req(Command::Write, 0, 0, 512), &ro),
            Err(errno::EPERM)
        );
        assert_eq!(validate(&req(Command::Read, 0, 0, 512), &ro), Ok(()));
        let no_flush = Geometry {
            caps: Capabilities {
                flush: false,
                ..caps()
            },
            ..g
        };
        assert_eq!(
            validate(&req(Command::Flush, 0, 0, 0), &no_flush),
            Err(errno::EINVAL)
        );
    }

    #[test]
    fn the_client_accepts_our_greeting_and_refuses_oldstyle_or_foreign_ones() {
        let ours = greeting();
        assert_eq!(
            parse_greeting(&ours),
            Ok(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
        );
        let mut oldstyle = ours;
        oldstyle[8..16].copy_from_slice(&OLDSTYLE_MAGIC.to_be_bytes());
        assert_eq!(
            parse_greeting(&oldstyle),
            Err(ProtoError::Greeting(OLDSTYLE_MAGIC))
        );
        let mut not_fixed = ours;
        not_fixed[17] = 0;
        assert_eq!(
            parse_greeting(&not_fixed),
            Err(ProtoError::NotFixedNewstyle)
        );
        assert!(matches!(
            parse_greeting(&[b'x'; GREETING_LEN]),
            Err(ProtoError::Greeting(_))
        ));
    }

    #[test]
    fn client_options_are_what_the_server_side_decodes() {
        let go = option_request(OPT_GO, &info_request(b"disk", &[INFO_BLOCK_SIZE]));
        let mut head = [0u8; OPTION_HEADER_LEN];
        head.copy_from_slice(&go[..OPTION_HEADER_LEN]);
        let (option, len) = parse_option_header(&head).unwrap();
        assert_eq!(
            (option, len as usize),
            (OPT_GO, go.len() - OPTION_HEADER_LEN)
        );
        assert_eq!(
            parse_option(option, &go[OPTION_HEADER_LEN..]),
            OptionRequest::Info {
                name: "disk".into(),
                requests: vec![INFO_BLOCK_SIZE],
                go: true
            }
        );
    }

    #[test]
    fn option_replies_and_infos_decode_what_the_server_side_encodes() {
        let reply = option_reply(OPT_GO, REP_INFO, &info_export(1 << 30, 0x1ff));
        let mut head = [0u8; OPTION_REPLY_HEADER_LEN];
        head.copy_from_slice(&reply[..OPTION_REPLY_HEADER_LEN]);
        let r = OptionReply::parse(&head).unwrap();
        assert_eq!((r.option, r.reply_type, r.len), (OPT_GO, REP_INFO, 12));
        assert!(!r.is_error());
        assert_eq!(
            parse_info_reply(&reply[OPTION_REPLY_HEADER_LEN..]),
            Some(Info::Export {
                size: 1 << 30,
                flags: 0x1ff
            })
        );
        assert_eq!(
            parse_info_reply(&info_block_size(512)),
            Some(Info::BlockSize {
                min: 512,
                preferred: 4096,
                max: MAX_PAYLOAD
            })
        );
        assert_eq!(parse_info_reply(&info_name("x")), Some(Info::Other));
        assert_eq!(parse_info_reply(&info_export(1, 1)[..11]), None);
        let mut huge = head;
        huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            OptionReply::parse(&huge),
            Err(ProtoError::OptionTooLong { .. })
        ));
        head[0] ^= 1;
        assert!(matches!(
            OptionReply::parse(&head),
            Err(ProtoError::OptionReplyMagic(_))
        ));
        let err = option_reply(OPT_GO, REP_ERR_UNKNOWN, b"no");
        let mut head = [0u8; OPTION_REPLY_HEADER_LEN];
        head.copy_from_slice(&err[..OPTION_REPLY_HEADER_LEN]);
        assert!(OptionReply::parse(&head).unwrap().is_error());
    }

    #[test]
    fn reply_headers_decode_what_the_server_side_encodes_and_wait_for_whole_ones() {
        let simple = ReplyHeader::simple(7, errno::EIO);
        assert_eq!(
            ReplyHead::parse(simple.as_bytes()),
            Ok(Some((
                ReplyHead::Simple {
                    error: errno::EIO,
                    handle: 7
                },
                SIMPLE_REPLY_LEN
            )))
        );
        assert_eq!(ReplyHead::parse(&simple.as_bytes()[..15]), Ok(None));
        assert_eq!(ReplyHead::parse(&simple.as_bytes()[..3]), Ok(None));
        let data = ReplyHeader::read_data(9, 4096, 512);
        assert_eq!(
            ReplyHead::parse(data.as_bytes()),
            Ok(Some((
                ReplyHead::Chunk {
                    flags: REPLY_FLAG_DONE,
                    kind: REPLY_TYPE_OFFSET_DATA,
                    handle: 9,
                    len: 520
                },
                CHUNK_HEADER_LEN
            )))
        );
        assert_eq!(ReplyHead::parse(&data.as_bytes()[..19]), Ok(None));
        assert_eq!(
            ReplyHead::parse(&[1, 2, 3, 4, 5]),
            Err(ProtoError::ReplyMagic(0x0102_0304))
        );
        assert_eq!(local_errno(errno::ENOSPC), libc::ENOSPC);
        assert_eq!(local_errno(errno::ENOMEM), libc::EIO, "never a resubmit");
        assert_eq!(local_errno(1234), libc::EIO);
    }

    #[test]
    fn errnos_are_mapped_to_the_nbd_set() {
        assert_eq!(nbd_errno(libc::EIO), errno::EIO);
        assert_eq!(nbd_errno(libc::EROFS), errno::EPERM);
        assert_eq!(nbd_errno(libc::EDQUOT), errno::ENOSPC);
        assert_eq!(nbd_errno(libc::ENOTSUP), errno::ENOTSUP);
        assert_eq!(nbd_errno(libc::EINVAL), errno::EINVAL);
        assert_eq!(nbd_errno(libc::ENODEV), errno::EIO);
        assert_eq!(nbd_errno(libc::ESHUTDOWN), errno::ESHUTDOWN);
    }

    #[test]
    fn reply_headers_have_the_documented_layout() {
        let r = req(Command::Read, 0, 4096, 512);
        let simple = ReplyHeader::simple(7, errno::EIO);
        assert_eq!(simple.as_bytes().len(), 16);
        assert_eq!(u32_at(simple.as_bytes(), 0), SIMPLE_REPLY_MAGIC);
        assert_eq!(u32_at(simple.as_bytes(), 4), errno::EIO);
        assert_eq!(u64_at(simple.as_bytes(), 8), 7);
        let data = ReplyHeader::read_ok(&r, true);
        let b = data.as_bytes();
        assert_eq!(b.len(), 28);
        assert_eq!(u32_at(b, 0), STRUCTURED_REPLY_MAGIC);
        assert_eq!(u16_at(b, 4), REPLY_FLAG_DONE);
        assert_eq!(u16_at(b, 6), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u64_at(b, 8), 0xfeed);
        assert_eq!(u32_at(b, 16), 512 + 8);
        assert_eq!(u64_at(b, 20), 4096);
        let err = ReplyHeader::status(&r, errno::EIO, true);
        let b = err.as_bytes();
        assert_eq!(
            (b.len(), u16_at(b, 6), u32_at(b, 16)),
            (26, REPLY_TYPE_ERROR, 6)
        );
        assert_eq!(u32_at(b, 20), errno::EIO);
        assert_eq!(u16_at(b, 24), 0);
        assert_eq!(ReplyHeader::status(&r, 0, true).as_bytes().len(), 20);
        let w = req(Command::Write, 0, 0, 512);
        assert_eq!(ReplyHeader::status(&w, 0, true).as_bytes().len(), 16);
        assert_eq!(ReplyHeader::read_ok(&r, false).as_bytes().len(), 16);
    }
}
