//! A level-triggered epoll set, the readiness source of every socket server on the reactors
//! (RPC, NBD): its descriptor is the server poller's wake fd, so in interrupt mode a reactor
//! sleeps until one of the server's sockets has something to do.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll set, level-triggered, owned by one poller.
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new, empty set.
    pub fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the descriptor is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The set's descriptor: readable when some watched fd is ready (the poller's wake fd).
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// `epoll_ctl`: `op` is `EPOLL_CTL_ADD`, `_MOD` or `_DEL`; `key` comes back with events.
    pub fn ctl(&self, op: i32, fd: RawFd, events: u32, key: u64) -> std::io::Result<()> {
        let mut event = libc::epoll_event { events, u64: key };
        // SAFETY: event is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.fd(), op, fd, &mut event) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ready events, without waiting; returns how many entries of `events` were filled.
    pub fn ready(&self, events: &mut [libc::epoll_event]) -> usize {
        // SAFETY: events is writable for events.len() entries.
        let n = unsafe { libc::epoll_wait(self.fd(), events.as_mut_ptr(), events.len() as i32, 0) };
        n.max(0) as usize
    }
}
