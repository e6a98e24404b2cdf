//! The fuzzing client: plays a peer that sends hostile bytes over a real socket while reading
//! whatever the server answers, as a pipelining client does, then half-closes and waits for
//! the server to close. Pieces of varied size (drawn from the input itself, so a run replays)
//! make the server see requests split at odd places across reads.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// Server bytes kept for the caller to check; the rest is read and counted only.
const KEEP: usize = 64 << 10;
/// Largest piece written at once.
const MAX_PIECE: u64 = 8 << 10;

/// What the server sent during one conversation.
pub struct Conversation {
    /// The first [`KEEP`] bytes.
    pub head: Vec<u8>,
    /// How many bytes in all.
    pub total: usize,
}

/// Sends `input` on `stream` while reading the answers, half-closes, and reads until the
/// server closes. A server that stops reading and answering forever is caught by the
/// watchdog; a server that closes early ends the conversation (refusing a client is fine).
pub fn converse(mut stream: UnixStream, input: &[u8]) -> Conversation {
    stream
        .set_nonblocking(true)
        .expect("non-blocking client socket");
    let mut pieces = Pieces::new(input);
    let mut sent = 0;
    let mut sending = true;
    let mut got = Conversation {
        head: Vec::new(),
        total: 0,
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if sending && sent == input.len() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            sending = false;
        }
        let mut pfd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN | if sending { libc::POLLOUT } else { 0 },
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        if sending && pfd.revents & libc::POLLOUT != 0 {
            let piece = pieces.next(input.len() - sent);
            match send(&stream, &input[sent..sent + piece]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => sending = false,
            }
        }
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => {
                    let keep = n.min(KEEP.saturating_sub(got.head.len()));
                    got.head.extend_from_slice(&buf[..keep]);
                    got.total += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    }
}

/// `send(2)` without SIGPIPE: under libFuzzer no Rust runtime set SIGPIPE to ignored.
fn send(stream: &UnixStream, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: bytes is valid for reads of its length during the call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Piece sizes from a xorshift generator seeded with the input's FNV-1a hash.
struct Pieces(u64);

impl Pieces {
    fn new(input: &[u8]) -> Pieces {
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        Pieces(hash | 1)
    }

    /// The next piece, at most `left` bytes.
    fn next(&mut self, left: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        // Half the pieces small (splitting headers and values), half large.
        let size = if x & 1 == 0 {
            1 + (x >> 1) % 32
        } else {
            1 + (x >> 1) % MAX_PIECE
        };
        (size as usize).min(left)
    }
}
