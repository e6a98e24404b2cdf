//! A client that floods the NBD handshake with options and never reads the replies only
//! stalls itself: the server stops reading it once its option replies pile up, as it does in
//! the transmission phase, instead of queueing replies without bound (about ten bytes of
//! memory per byte the client sends: a gigabyte of `NBD_OPT_LIST` took gigabytes).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use common::target::{Target, PATIENCE};
use quorum_bdev::exports::nbd::proto;

/// Far more than the socket buffers of both ends hold: a server still reading past this is
/// queueing replies without bound.
const FLOOD_LIMIT: usize = 32 << 20;

/// Waits up to `ms` for room to write.
fn writable_within(stream: &UnixStream, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

#[test]
fn a_client_that_never_reads_its_option_replies_stops_being_read() {
    let mut t = Target::start();
    let sock = t.dir.path().join("nbd.sock");
    t.rpc_script(&format!(
        "bdev_malloc_create -b M0 1 512\nnbd_server_start {}\nnbd_export_create M0\n",
        sock.display()
    ));
    let mut client = UnixStream::connect(&sock).unwrap();
    let flags = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    client.write_all(&flags.to_be_bytes()).unwrap();
    let mut list = proto::IHAVEOPT.to_be_bytes().to_vec();
    list.extend_from_slice(&proto::OPT_LIST.to_be_bytes());
    list.extend_from_slice(&0u32.to_be_bytes());
    let flood = list.repeat(4096);
    client.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut sent = 0;
    // Write until the socket stays full for a second: the server no longer reads.
    while writable_within(&client, 1000) {
        match client.write(&flood) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("the server dropped the client: {e}"),
        }
        assert!(
            sent < FLOOD_LIMIT,
            "the server read {sent} bytes of options whose replies nobody read"
        );
        assert!(start.elapsed() < PATIENCE, "the socket never filled");
    }
    // Reading the replies lets the server go on: every whole option sent gets its answer,
    // one server entry ("M0") and an ACK of 20 bytes each.
    client.set_nonblocking(false).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let per_list = (20 + 4 + 2) + 20;
    let mut replies = vec![0u8; 18 + sent / list.len() * per_list];
    client.read_exact(&mut replies).unwrap();
    assert_eq!(&replies[..18], &proto::greeting()[..]);
    let last_ack = &replies[replies.len() - 20..];
    assert_eq!(&last_ack[..8], &proto::OPTION_REPLY_MAGIC.to_be_bytes()[..]);
    assert_eq!(&last_ack[12..16], &proto::REP_ACK.to_be_bytes()[..]);
    assert!(t.alive(), "the daemon died");
}
