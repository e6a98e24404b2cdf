//! Moving NBD bytes through a non-blocking stream socket, as both ends do it on the
//! reactors: `recv` without blocking into a receive buffer compacted between reads, and many
//! queued messages (headers and payloads kept where they already are) gathered into one
//! `sendmsg` that never raises SIGPIPE.

use std::os::fd::RawFd;

/// Fills `iov` with the bytes of `parts` not sent yet (the first `skip` bytes were), at most
/// `iov.len()` pieces; returns how many entries it filled.
pub fn gather<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    mut skip: usize,
    iov: &mut [libc::iovec],
) -> usize {
    let mut n = 0;
    for part in parts {
        if n == iov.len() {
            break;
        }
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        iov[n] = libc::iovec {
            iov_base: part[skip..].as_ptr() as *mut libc::c_void,
            iov_len: part.len() - skip,
        };
        skip = 0;
        n += 1;
    }
    n
}

/// One `sendmsg` of `iov` on `fd`, non-blocking, never raising SIGPIPE.
///
/// # Safety
/// Every iovec must point at memory valid for reads of its length for the whole call.
pub unsafe fn send(fd: RawFd, iov: &mut [libc::iovec]) -> std::io::Result<usize> {
    // SAFETY: msghdr is plain data; only the iovec fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: the caller vouches for the iovecs; msg lives through the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One non-blocking `recv` into `buf`; `Ok(0)` is the peer's end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Moves the unread bytes `start..end` of a receive buffer to its front, so the next `recv`
/// has all the room behind them; returns their new `(start, end)`.
pub fn compact(buf: &mut [u8], start: usize, end: usize) -> (usize, usize) {
    if start > 0 && start < end {
        buf.copy_within(start..end, 0);
    }
    (0, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_skips_what_was_sent_and_stops_when_full() {
        let (a, b, c) = (b"head".as_slice(), b"".as_slice(), b"payload".as_slice());
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2];
        assert_eq!(gather([a, b, c], 0, &mut iov), 2);
        assert_eq!((iov[0].iov_len, iov[1].iov_len), (4, 7));
        assert_eq!(gather([a, b, c], 6, &mut iov), 1);
        assert_eq!(iov[0].iov_len, 5);
        assert_eq!(iov[0].iov_base as *const u8, c[2..].as_ptr());
        let mut one = [iov[0]];
        assert_eq!(gather([a, c], 0, &mut one), 1);
        assert_eq!(one[0].iov_len, 4);
    }

    #[test]
    fn compact_moves_unread_bytes_to_the_front() {
        let mut buf = *b"..abc...";
        assert_eq!(compact(&mut buf, 2, 5), (0, 3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(compact(&mut buf, 3, 3), (0, 0));
        assert_eq!(compact(&mut buf, 0, 3), (0, 3));
        assert_eq!(&buf[..3], b"abc");
    }
}
