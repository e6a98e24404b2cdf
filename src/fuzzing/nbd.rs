//! The NBD targets: one client connection per input, on a socketpair handed to the running
//! NBD server as if accepted. Three exports stand ready: a quorum of three RAM disks whose
//! third child corrupts every read (so reads vote and rewrite), a read-only RAM disk and a
//! null bdev of 4 KiB blocks. The handshake target sends the input from the first byte after
//! the greeting; the transmission target first opens an export with `NBD_OPT_GO` the way
//! qemu does and sends the input as the request stream. Seeds: streams captured from
//! qemu-io, qemu-img, nbdinfo and nbdsh.

use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use serde_json::json;

use super::{converse, watchdog, Fixture};
use crate::control::config;
use crate::exports::nbd::{self, proto};

/// The exports a transmission input may pick with its first byte.
const EXPORTS: [&str; 3] = ["quorum", "readonly", "null"];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fixture = Fixture::start("nbd");
        let socket = fixture.scratch().join("nbd.sock");
        let malloc = |name: &str| {
            json!({"method": "bdev_malloc_create",
                   "params": {"name": name, "num_blocks": 2048, "block_size": 512}})
        };
        let exports = json!({"subsystems": [
            {"subsystem": "bdev", "config": [
                malloc("M0"), malloc("M1"), malloc("M2"), malloc("RO"),
                {"method": "bdev_null_create",
                 "params": {"name": "N0", "num_blocks": 256, "block_size": 4096}},
                {"method": "bdev_error_create", "params": {"base_name": "M2"}},
                {"method": "bdev_error_inject_error", "params": {"name": "EE_M2",
                 "io_type": "read", "error_type": "corrupt_data", "num": 4_000_000_000u32,
                 "corrupt_offset": 7, "corrupt_value": 1}},
                {"method": "bdev_quorum_create", "params": {"name": "Q0",
                 "base_bdevs": ["M0", "M1", "EE_M2"], "vote_threshold": 2,
                 "rewrite_corrupted": true}},
            ]},
            {"subsystem": "nbd", "config": [
                {"method": "nbd_server_start", "params": {"listen_addr": socket}},
                {"method": "nbd_export_create",
                 "params": {"bdev_name": "Q0", "export_name": EXPORTS[0]}},
                {"method": "nbd_export_create",
                 "params": {"bdev_name": "RO", "export_name": EXPORTS[1], "read_only": true}},
                {"method": "nbd_export_create",
                 "params": {"bdev_name": "N0", "export_name": EXPORTS[2]}},
            ]},
        ]});
        config::load(&fixture.ctx, &exports).expect("the NBD fuzz exports");
        fixture
    })
}

/// Connects a client to the server and has it send `stream`; the server must greet it first
/// and close its side after the client half-closed.
fn connect_and_send(stream: &[u8]) {
    let f = fixture();
    let (client, server) = UnixStream::pair().expect("socketpair");
    server
        .set_nonblocking(true)
        .expect("non-blocking server socket");
    nbd::attach_client(f.rt(), server.into()).expect("the NBD server takes the client");
    let answer = converse(client, stream);
    assert!(
        answer.head.starts_with(&proto::greeting()),
        "the server did not greet its client"
    );
}

/// The handshake and option haggling: `data` is everything the client sends after the
/// greeting (client flags, then options, then maybe requests).
pub fn fuzz_handshake(data: &[u8]) {
    let _watch = watchdog("nbd_handshake");
    connect_and_send(data);
}

/// The transmission phase: `data[0]` picks the export (low bits) and structured replies
/// (bit 7); the rest is the request stream after a successful `NBD_OPT_GO`.
pub fn fuzz_transmission(data: &[u8]) {
    let _watch = watchdog("nbd_transmission");
    let (select, requests) = data.split_first().unwrap_or((&0, &[]));
    let mut stream = opening(
        EXPORTS[*select as usize % EXPORTS.len()],
        select & 0x80 != 0,
    );
    stream.extend_from_slice(requests);
    connect_and_send(&stream);
}

/// What a client sends to reach the transmission phase of `export`, as qemu does: fixed
/// newstyle without zero padding, structured replies if asked, then `NBD_OPT_GO`.
pub fn opening(export: &str, structured: bool) -> Vec<u8> {
    let mut out = (proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    let mut option = |option: u32, data: &[u8]| {
        out.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    };
    if structured {
        option(proto::OPT_STRUCTURED_REPLY, &[]);
    }
    let mut go = (export.len() as u32).to_be_bytes().to_vec();
    go.extend_from_slice(export.as_bytes());
    go.extend_from_slice(&0u16.to_be_bytes());
    option(proto::OPT_GO, &go);
    out
}
