//! The NBD export, end to end: the real `quorum-tgt` with a quorum of three children,
//! configured with `spdk-rpc`, driven by the real clients users run (qemu-io, qemu-img,
//! qemu-nbd, nbdinfo, nbdsh, fio's nbd engine), QEMU iotest 081 replayed over io_uring
//! children on raw files, and a raw socket client for what no well-behaved client sends.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::clients::{client, client_ok, free_port, qemu_io, unix_uri};
use common::target::{Target, PATIENCE};
use common::{pattern, sparse_files};
use quorum_bdev::exports::nbd::proto::{self, Command as Cmd, Request};
use serde_json::{json, Value};

/// Runs `spdk-rpc --plugin quorum_rpc_plugin ARGS` (the quorum and NBD commands).
fn plugin(t: &Target, args: &[&str]) -> String {
    let mut full = vec!["--plugin", "quorum_rpc_plugin"];
    full.extend_from_slice(args);
    t.rpc_ok(&full)
}

fn plugin_json(t: &Target, args: &[&str]) -> Value {
    let text = plugin(t, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// The JSON-RPC error a plugin command got.
fn plugin_err(t: &Target, args: &[&str]) -> Value {
    let mut full = vec!["--plugin", "quorum_rpc_plugin"];
    full.extend_from_slice(args);
    t.rpc_err(&full)
}

/// A target (`cpumask` reactors) with quorum `Q` (threshold 2) over malloc children M0..M2 of
/// `mib` MiB, the NBD server on a Unix socket in the target's directory, `Q` exported.
/// Returns the target and the NBD socket path.
fn quorum_export(cpumask: &str, mib: u64) -> (Target, PathBuf) {
    let t = Target::start_with(&["-m", cpumask]);
    let sock = t.dir.path().join("nbd.sock");
    let out = t.rpc_script(&format!(
        "bdev_malloc_create -b M0 {mib} 512\n\
         bdev_malloc_create -b M1 {mib} 512\n\
         bdev_malloc_create -b M2 {mib} 512\n\
         bdev_quorum_create -b Q -t 2 M0 M1 M2\n\
         nbd_server_start {}\n\
         nbd_export_create Q\n",
        sock.display()
    ));
    assert!(out.trim_end().ends_with('Q'), "{out}");
    (t, sock)
}

#[test]
fn qemu_io_writes_and_reads_patterns_through_a_quorum_of_three_on_two_reactors() {
    let (t, sock) = quorum_export("0x3", 16);
    let uri = unix_uri(&sock, "Q");
    qemu_io(
        &uri,
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd -f 1M 64k",
            "write -z 2M 128k",
            "discard 3M 64k",
            "flush",
        ],
    );
    qemu_io(
        &uri,
        &[
            "read -P 0xab 0 1M",
            "read -P 0xcd 1M 64k",
            "read -P 0 2M 128k",
            "aio_read -P 0xab 0 512k",
            "aio_read -P 0xab 512k 512k",
            "aio_flush",
        ],
    );
    // The quorum wrote every child: child M1, exported read-only on its own, holds the data.
    plugin(&t, &["nbd_export_create", "M1", "-n", "child1", "-r"]);
    let child = unix_uri(&sock, "child1");
    let out = client_ok(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0xcd 1M 64k", &child],
    );
    assert!(!out.contains("failed"), "{out}");
    // A mismatching pattern is detected: the reads above really compared data.
    let out = client("qemu-io", &["-f", "raw", "-c", "read -P 0x11 0 4k", &uri]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed"),
        "{out:?}"
    );

    // The same over TCP, on a second listener address after a restart of the server.
    plugin(&t, &["nbd_server_stop"]);
    assert!(!sock.exists(), "the Unix socket is removed on stop");
    let port = free_port().to_string();
    t.rpc_script(&format!(
        "nbd_server_start 127.0.0.1 -p {port}\nnbd_export_create Q\n"
    ));
    let tcp = format!("nbd://127.0.0.1:{port}/Q");
    qemu_io(&tcp, &["read -P 0xab 0 1M", "write -P 0x5a 4M 256k"]);
    let s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hostile = Raw { s }.session("Q");
    hostile.s.write_all(&[0xee; 28]).unwrap();
    hostile.expect_closed();
    qemu_io(&tcp, &["read -P 0x5a 4M 256k"]);
}

#[test]
fn qemu_img_converts_a_random_image_in_and_compares_it_back() {
    let (t, sock) = quorum_export("0x1", 16);
    let image = t.dir.path().join("random.raw");
    let data = pattern(16 << 20, 0x3c);
    std::fs::write(&image, &data).unwrap();
    let uri = unix_uri(&sock, "Q");
    let img = image.to_str().unwrap();
    client_ok(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", img, &uri],
    );
    let same = client_ok(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", img, &uri],
    );
    assert!(same.contains("Images are identical"), "{same}");
    // One byte changed locally: compare must notice, so the check above read real data.
    let mut changed = data;
    changed[(9 << 20) + 7] ^= 0xff;
    std::fs::write(&image, &changed).unwrap();
    let out = client(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", img, &uri],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Content mismatch at offset 9437184"));
}

#[test]
fn nbdinfo_qemu_nbd_and_nbdsh_list_and_use_the_exports() {
    let (t, sock) = quorum_export("0x1", 8);
    plugin(&t, &["nbd_export_create", "M2", "-n", "mirror", "-r"]);
    let list = client_ok(
        "nbdinfo",
        &[
            "--json",
            "--list",
            &format!("nbd+unix://?socket={}", sock.display()),
        ],
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    let exports = list["exports"].as_array().unwrap();
    let by_name = |name: &str| {
        exports
            .iter()
            .find(|e| e["export-name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {list}"))
            .clone()
    };
    let q = by_name("Q");
    assert_eq!(q["export-size"], 8 << 20);
    assert_eq!(q["is_read_only"], false);
    assert_eq!(q["can_multi_conn"], true);
    assert_eq!(q["can_flush"], true);
    assert_eq!(q["can_fua"], true);
    assert_eq!(q["can_trim"], true);
    assert_eq!(q["can_zero"], true);
    assert_eq!(q["block_size_minimum"], 512);
    assert_eq!(q["block_size_maximum"], 32 << 20);
    assert_eq!(by_name("mirror")["is_read_only"], true);
    assert_eq!(list["protocol"], "newstyle-fixed");

    let listed = client_ok("qemu-nbd", &["--list", "-k", sock.to_str().unwrap()]);
    assert!(listed.contains("exports available: 2"), "{listed}");
    assert!(listed.contains("export: 'Q'") && listed.contains("export: 'mirror'"));

    let script = "\
data = bytes(range(256)) * 16
h.pwrite(data, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8192) == data
h.flush()
h.zero(4096, 8192)
assert h.pread(4096, 8192) == bytes(4096)
try:
    h.pread(4096, 8 << 20)
    raise SystemExit('read past the end succeeded')
except nbd.Error as e:
    assert e.errnum == 22, e
print('ok')
";
    let out = client_ok("nbdsh", &["-u", &unix_uri(&sock, "Q"), "-c", script]);
    assert_eq!(out.trim(), "ok");
    let exports = plugin_json(&t, &["nbd_get_exports"]);
    assert_eq!(
        exports,
        json!([
            {"export_name": "Q", "bdev_name": "Q", "read_only": false, "connections": 0},
            {"export_name": "mirror", "bdev_name": "M2", "read_only": true, "connections": 0}
        ])
    );
}

#[test]
fn fio_nbd_engine_verifies_crc32c_over_unix_and_tcp_from_two_connections() {
    let (t, sock) = quorum_export("0x3", 16);
    let job = |uri: &str| {
        let out = client_ok(
            "fio",
            &[
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--size=8M",
                "--offset_increment=8M",
                "--numjobs=2",
                "--bs=4k",
                "--iodepth=16",
                "--rw=randwrite",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",
                "--output-format=json",
            ],
        );
        // Every job, not just one of them, wrote and verified all its data without error.
        let report: Value = serde_json::from_str(&out[out.find('{').unwrap()..])
            .unwrap_or_else(|e| panic!("{e}: {out}"));
        let jobs = report["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2, "{out}");
        for job in jobs {
            assert_eq!(job["error"], 0, "{job}");
            assert_eq!(job["write"]["io_bytes"], 8 << 20, "{job}");
            assert_eq!(
                job["read"]["io_bytes"],
                8 << 20,
                "verified all it wrote: {job}"
            );
        }
    };
    job(&unix_uri(&sock, "Q"));
    let port = free_port();
    t.rpc_script(&format!(
        "nbd_server_stop\nnbd_server_start 127.0.0.1 -p {port}\nnbd_export_create Q\n"
    ));
    job(&format!("nbd://127.0.0.1:{port}/Q"));
}

/// Fills `len` bytes of `path` at `offset` with `byte`, durably, as iotest 081 corrupts a
/// child with qemu-io behind the quorum's back.
fn fill_file(path: &Path, offset: u64, len: usize, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![byte; len], offset).unwrap();
    f.sync_all().unwrap();
}

fn file_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

#[test]
fn iotest_081_replayed_through_nbd_over_uring_children() {
    const SIZE: usize = 10 << 20;
    const MIB: usize = 1 << 20;
    // Raw files outside tmpfs, so the uring children use O_DIRECT.
    let files = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| files.path().join(format!("{i}.raw")))
        .collect();
    for p in &paths {
        std::fs::write(p, vec![0xcd; SIZE]).unwrap();
    }
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    let mut script: String = paths
        .iter()
        .enumerate()
        .map(|(i, p)| format!("bdev_uring_create {} C{i} 512\n", p.display()))
        .collect();
    script += "bdev_quorum_create -b Q -t 2 --rewrite-corrupted C0 C1 C2\n";
    script += &format!("nbd_server_start {}\nnbd_export_create Q\n", sock.display());
    t.rpc_script(&script);
    let uri = unix_uri(&sock, "Q");

    // == checking quorum ==
    qemu_io(&uri, &["read -P 0xcd 0 10M"]);
    assert!(plugin_json(&t, &["bdev_quorum_get_events"])
        .as_array()
        .unwrap()
        .is_empty());

    // == using quorum rewrite corrupted mode ==: child 1 corrupted behind the quorum.
    fill_file(&paths[1], 0, MIB, 0x32);
    qemu_io(&uri, &["read -P 0xcd 0 1M"]);
    let events = plugin_json(&t, &["bdev_quorum_get_events"]);
    let bad: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "QUORUM_REPORT_BAD")
        .collect();
    assert!(!bad.is_empty(), "{events}");
    for e in &bad {
        assert_eq!(e["data"]["node-name"], "C1", "{e}");
        assert_eq!(e["data"]["type"], "read", "{e}");
        assert!(e["data"].get("error").is_none(), "{e}");
    }
    assert_eq!(bad[0]["data"]["sector-num"], 0);
    // == checking that quorum has recovered ==: the file itself was rewritten.
    assert!(file_bytes(&paths[1], 0, MIB).iter().all(|&b| b == 0xcd));
    let last = events.as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();

    // == breaking quorum ==: two children corrupted differently.
    fill_file(&paths[1], 2 * MIB as u64, MIB, 0x41);
    fill_file(&paths[2], 2 * MIB as u64, MIB, 0x42);
    let out = client("qemu-io", &["-f", "raw", "-c", "read -P 0xcd 2M 1M", &uri]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("read failed: Input/output error"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = plugin_json(
        &t,
        &["bdev_quorum_get_events", "--since", &last.to_string()],
    );
    let failure = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "QUORUM_FAILURE")
        .unwrap_or_else(|| panic!("no QUORUM_FAILURE in {events}"));
    assert_eq!(failure["data"]["reference"], "Q");
    assert_eq!(failure["data"]["sector-num"], 4096);
    // The same events reach SPDK's notification log, named after the child or the quorum.
    let notes = t.rpc_json(&["notify_get_notifications"]);
    let notes = notes.as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n["type"] == "quorum_report_bad" && n["ctx"] == "C1"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n["type"] == "quorum_failure" && n["ctx"] == "Q"),
        "{notes:?}"
    );
    // The rest of the disk still reads, and the untouched child kept its data.
    qemu_io(&uri, &["read -P 0xcd 4M 6M"]);
    assert!(file_bytes(&paths[0], 2 * MIB as u64, MIB)
        .iter()
        .all(|&b| b == 0xcd));
}

/// A hand-driven NBD client for requests no real client sends.
struct Raw<S: Read + Write> {
    s: S,
}

fn raw_unix(sock: &Path) -> Raw<UnixStream> {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    Raw { s }
}

impl<S: Read + Write> Raw<S> {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.bytes(8).try_into().unwrap())
    }

    /// Reads the greeting and answers with the client flags.
    fn greet(&mut self, client_flags: u32) {
        assert_eq!(self.u64(), proto::NBDMAGIC);
        assert_eq!(self.u64(), proto::IHAVEOPT);
        let _handshake_flags = self.bytes(2);
        self.s.write_all(&client_flags.to_be_bytes()).unwrap();
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let mut m = proto::IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.s.write_all(&m).unwrap();
    }

    /// One option reply: (type, data).
    fn option_reply(&mut self, option: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), proto::OPTION_REPLY_MAGIC);
        assert_eq!(self.u32(), option);
        let kind = self.u32();
        let len = self.u32() as usize;
        (kind, self.bytes(len))
    }

    /// NBD_OPT_GO on `name`: Ok(size) or Err(reply type).
    fn go(&mut self, name: &str) -> Result<u64, u32> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.option(proto::OPT_GO, &d);
        let mut size = None;
        loop {
            match self.option_reply(proto::OPT_GO) {
                (proto::REP_INFO, info) if info[..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(info[2..10].try_into().unwrap()))
                }
                (proto::REP_INFO, _) => {}
                (proto::REP_ACK, _) => return Ok(size.expect("NBD_INFO_EXPORT sent")),
                (err, _) => return Err(err),
            }
        }
    }

    /// A fresh session in transmission on `name`.
    fn session(mut self, name: &str) -> Self {
        self.greet(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES);
        self.go(name).expect("export available");
        self
    }

    fn send(&mut self, command: Cmd, flags: u16, handle: u64, offset: u64, len: u32) {
        let r = Request {
            flags,
            command,
            handle,
            offset,
            len,
        };
        self.s.write_all(&r.encode()).unwrap();
    }

    /// A simple reply: (error, handle), then `data_len` bytes of data if it succeeded.
    fn reply(&mut self, data_len: usize) -> (u32, u64, Vec<u8>) {
        assert_eq!(self.u32(), proto::SIMPLE_REPLY_MAGIC);
        let error = self.u32();
        let handle = self.u64();
        let data = if error == 0 {
            self.bytes(data_len)
        } else {
            Vec::new()
        };
        (error, handle, data)
    }

    /// The server closed the connection (EOF or reset), without sending anything more.
    fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        match self.s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection left open: {other:?}"),
        }
    }
}

#[test]
fn hostile_clients_lose_only_their_own_connection() {
    let (t, sock) = quorum_export("0x1", 8);
    plugin(&t, &["nbd_export_create", "M0", "-n", "ro", "-r"]);
    let uri = unix_uri(&sock, "Q");
    qemu_io(&uri, &["write -P 0x77 0 64k"]);

    // Handshake violations: unknown client flags, bad option magic, absurd option length.
    let mut c = raw_unix(&sock);
    c.greet(1 << 7);
    c.expect_closed();
    let mut c = raw_unix(&sock);
    c.greet(proto::FLAG_C_FIXED_NEWSTYLE);
    c.s.write_all(&[0x55; 16]).unwrap();
    c.expect_closed();
    let mut c = raw_unix(&sock);
    c.greet(proto::FLAG_C_FIXED_NEWSTYLE);
    let mut m = proto::IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&proto::OPT_GO.to_be_bytes());
    m.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&m).unwrap();
    c.expect_closed();
    // Malformed or unknown options get errors and the handshake goes on.
    let mut c = raw_unix(&sock);
    c.greet(proto::FLAG_C_FIXED_NEWSTYLE);
    c.option(proto::OPT_GO, &[0, 0, 0, 200, 1]);
    assert_eq!(c.option_reply(proto::OPT_GO).0, proto::REP_ERR_INVALID);
    c.option(5, &[]);
    assert_eq!(c.option_reply(5).0, proto::REP_ERR_UNSUP);
    assert_eq!(c.go("nope"), Err(proto::REP_ERR_UNKNOWN));
    assert_eq!(c.go("Q"), Ok(8 << 20));

    // Transmission: errors answered, the connection stays usable.
    c.send(Cmd::Read, 0, 1, 0, u32::MAX);
    assert_eq!(c.reply(0).0, proto::errno::EINVAL, "oversized read");
    c.send(Cmd::Read, 0, 2, 8 << 20, 512);
    assert_eq!(c.reply(0).0, proto::errno::EINVAL, "read past the end");
    c.send(Cmd::Write, 0, 3, (8 << 20) - 512, 1024);
    c.s.write_all(&[1u8; 1024]).unwrap();
    assert_eq!(c.reply(0).0, proto::errno::ENOSPC, "write past the end");
    c.send(Cmd::Read, 0, 4, 1, 512);
    assert_eq!(c.reply(0).0, proto::errno::EINVAL, "unaligned");
    for unknown in [5u16, 7, 99] {
        c.send(Cmd::Other(unknown), 0, 5, 0, 512);
        assert_eq!(
            c.reply(0),
            (proto::errno::EINVAL, 5, vec![]),
            "command {unknown}"
        );
    }
    c.send(Cmd::Read, 1 << 9, 6, 0, 512);
    assert_eq!(c.reply(0).0, proto::errno::EINVAL, "unknown flag");
    c.send(Cmd::Read, 0, 7, 0, 4096);
    assert_eq!(c.reply(4096), (0, 7, vec![0x77; 4096]));
    // Bad magic closes.
    c.s.write_all(&[0xee; 28]).unwrap();
    c.expect_closed();

    // A write larger than the limit closes (its payload cannot be skipped safely).
    let mut c = raw_unix(&sock).session("Q");
    c.send(Cmd::Write, 0, 1, 0, 64 << 20);
    c.expect_closed();
    // Writes to a read-only export are refused.
    let mut c = raw_unix(&sock).session("ro");
    c.send(Cmd::Write, 0, 1, 0, 512);
    c.s.write_all(&[9u8; 512]).unwrap();
    assert_eq!(c.reply(0).0, proto::errno::EPERM);
    drop(c);
    // Truncated frames: half a header, and a write missing half its payload, left hanging
    // while other clients work, then cut.
    let mut half_header = raw_unix(&sock).session("Q");
    half_header
        .s
        .write_all(
            &Request {
                flags: 0,
                command: Cmd::Read,
                handle: 1,
                offset: 0,
                len: 512,
            }
            .encode()[..13],
        )
        .unwrap();
    let mut half_write = raw_unix(&sock).session("Q");
    half_write.send(Cmd::Write, 0, 1, 0, 4096);
    half_write.s.write_all(&[0xaa; 2048]).unwrap();
    qemu_io(&uri, &["read -P 0x77 0 64k"]);
    drop(half_header);
    drop(half_write);

    // A client that never reads its replies: the server stops reading it (its writes block)
    // and everyone else goes on.
    let greedy = raw_unix(&sock).session("Q");
    let mut writer = greedy.s.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let flood = std::thread::spawn(move || {
        let mut sent = 0u32;
        while sent < 100_000 {
            let r = Request {
                flags: 0,
                command: Cmd::Read,
                handle: sent as u64,
                offset: 0,
                len: 1 << 20,
            };
            if writer.write_all(&r.encode()).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    qemu_io(&uri, &["read -P 0x77 0 64k", "write -P 0x78 64k 64k"]);
    assert!(start.elapsed() < Duration::from_secs(10), "others stalled");
    let sent = flood.join().unwrap();
    assert!(
        sent < 100_000,
        "the server kept reading a client that never reads"
    );
    drop(greedy);

    // After all that: the daemon is alive, no session leaked, and a normal client works.
    let mut t = t;
    assert!(t.alive());
    qemu_io(&uri, &["read -P 0x77 0 64k", "read -P 0x78 64k 64k"]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exports = plugin_json(&t, &["nbd_get_exports"]);
        if exports
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["connections"] == 0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "sessions left: {exports}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn export_delete_answers_in_flight_io_then_closes_its_clients() {
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    // 1 s per write: the write below is still in flight when the delete arrives, even on a
    // loaded machine.
    t.rpc_script(&format!(
        "bdev_malloc_create -b M0 4 512\n\
         bdev_delay_create -b M0 -d D0 -r 10 -t 10 -w 1000000 -n 1000000\n\
         nbd_server_start {}\n\
         nbd_export_create D0 -n slow\n\
         nbd_export_create M0 -n other -r\n",
        sock.display()
    ));
    let mut c = raw_unix(&sock).session("slow");
    let mut other = raw_unix(&sock).session("other");
    c.send(Cmd::Write, proto::CMD_FLAG_FUA, 42, 0, 4096);
    c.s.write_all(&[0x3e; 4096]).unwrap();
    // The delay bdev holds a write once its base has done it: M0 counting it means the write
    // is in flight at D0.
    common::wait_until("the write to reach the delay bdev", || {
        iostat(&t, "M0")["num_write_ops"] == 1
    });
    assert_eq!(plugin_json(&t, &["nbd_get_exports"])[0]["connections"], 1);
    let started = Instant::now();
    assert_eq!(plugin_json(&t, &["nbd_export_delete", "slow"]), json!(true));
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "did not wait"
    );
    assert_eq!(
        c.reply(0),
        (0, 42, vec![]),
        "the in-flight write was answered"
    );
    c.expect_closed();
    // The other export's client is untouched; the deleted export is gone for new clients.
    other.send(Cmd::Read, 0, 1, 0, 4096);
    assert_eq!(other.reply(4096), (0, 1, vec![0x3e; 4096]));
    let mut c = raw_unix(&sock);
    c.greet(proto::FLAG_C_FIXED_NEWSTYLE);
    assert_eq!(c.go("slow"), Err(proto::REP_ERR_UNKNOWN));
    let err = plugin_err(&t, &["nbd_export_delete", "slow"]);
    assert_eq!(err["code"], -19);

    // Server stop closes every connection, including one in the handshake.
    let mut idle = raw_unix(&sock);
    idle.greet(proto::FLAG_C_FIXED_NEWSTYLE);
    assert_eq!(plugin_json(&t, &["nbd_server_stop"]), json!(true));
    other.expect_closed();
    idle.expect_closed();
    assert_eq!(plugin_json(&t, &["nbd_get_exports"]), json!([]));
}

#[test]
fn rpc_errors_are_spdk_codes_and_change_nothing() {
    let t = Target::start();
    let sock = t.dir.path().join("nbd.sock");
    let path = sock.to_str().unwrap();
    let mut raw = t.raw();
    let mut id = 0;
    let mut call = |method: &str, params: Value| {
        id += 1;
        raw.call(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    };
    let code = |answer: Value| answer["error"]["code"].clone();
    call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64, "block_size": 512}),
    );
    let export_m0 = json!({"bdev_name": "M0"});
    assert_eq!(
        code(call("nbd_export_create", export_m0.clone())),
        -19,
        "no server"
    );
    assert_eq!(code(call("nbd_server_stop", json!({}))), -19);
    let bad_port = json!({"listen_addr": path, "listen_port": 1234});
    assert_eq!(code(call("nbd_server_start", bad_port)), -22);
    assert_eq!(code(call("nbd_server_start", json!({}))), -32602);
    let start = json!({"listen_addr": path});
    assert_eq!(call("nbd_server_start", start.clone())["result"], true);
    assert_eq!(code(call("nbd_server_start", start)), -17);
    let nope = json!({"bdev_name": "nope"});
    assert_eq!(code(call("nbd_export_create", nope)), -19);
    assert_eq!(call("nbd_export_create", export_m0.clone())["result"], "M0");
    assert_eq!(code(call("nbd_export_create", export_m0)), -17);
    let extra = json!({"bdev_name": "M0", "export_name": "x", "colour": "red"});
    let answer = call("nbd_export_create", extra);
    assert_eq!(code(answer.clone()), -32602, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));
    let empty = json!({"bdev_name": "M0", "export_name": ""});
    assert_eq!(code(call("nbd_export_create", empty)), -22);
    let missing = json!({"export_name": "x"});
    assert_eq!(code(call("nbd_export_delete", missing)), -19);
    let listed = call("nbd_get_exports", json!(null))["result"].clone();
    assert_eq!(
        listed,
        json!([{"export_name": "M0", "bdev_name": "M0", "read_only": false, "connections": 0}])
    );
    // Deleting the exported bdev deletes the export with it.
    assert_eq!(
        call("bdev_malloc_delete", json!({"name": "M0"}))["result"],
        true
    );
    assert_eq!(call("nbd_get_exports", json!(null))["result"], json!([]));
}

#[test]
fn save_config_round_trips_the_server_and_exports_and_sigterm_drains_clients() {
    let (t, sock) = quorum_export("0x1", 4);
    plugin(&t, &["nbd_export_create", "M1", "-n", "child", "-r"]);
    qemu_io(&unix_uri(&sock, "Q"), &["write -P 0x61 0 1M"]);
    let saved = t.rpc_ok(&["save_config"]);
    let config: Value = serde_json::from_str(&saved).unwrap();
    let nbd = config["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "nbd")
        .unwrap();
    assert_eq!(
        nbd["config"],
        json!([
            {"method": "nbd_server_start", "params": {"listen_addr": sock.to_str().unwrap()}},
            {"method": "nbd_export_create",
             "params": {"bdev_name": "Q", "export_name": "Q", "read_only": false}},
            {"method": "nbd_export_create",
             "params": {"bdev_name": "M1", "export_name": "child", "read_only": true}}
        ])
    );
    // SIGTERM with a client attached: it is drained, the target exits cleanly.
    let mut c = raw_unix(&sock).session("Q");
    c.send(Cmd::Read, 0, 1, 0, 512);
    assert_eq!(c.reply(512), (0, 1, vec![0x61; 512]));
    let (status, dir) = t.signal(libc::SIGTERM);
    assert!(status.success(), "SIGTERM exit: {status}");
    c.expect_closed();
    assert!(!sock.exists(), "NBD socket left behind");

    let path = dir.path().join("saved.json");
    std::fs::write(&path, &saved).unwrap();
    let t = Target::start_in(dir, &["-c", path.to_str().unwrap()]);
    let exports = plugin_json(&t, &["nbd_get_exports"]);
    assert_eq!(exports.as_array().unwrap().len(), 2, "{exports}");
    assert_eq!(
        serde_json::from_str::<Value>(&t.rpc_ok(&["save_config"])).unwrap(),
        config
    );
    // Malloc children start empty: the restored export serves the restored quorum.
    qemu_io(
        &unix_uri(&sock, "Q"),
        &["write -P 0x62 0 64k", "read -P 0x62 0 64k"],
    );
}

/// `bdev_get_iostat` of one bdev.
fn iostat(t: &Target, name: &str) -> Value {
    let answer = t.raw().call(
        json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_get_iostat",
                     "params": {"name": name}}),
    );
    answer["result"]["bdevs"][0].clone()
}

/// The `connections` count `nbd_get_exports` reports for `export`.
fn connections(t: &Target, export: &str) -> Value {
    let exports = t
        .raw()
        .call(json!({"jsonrpc": "2.0", "id": 1, "method": "nbd_get_exports"}));
    exports["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["export_name"] == export)
        .map(|e| e["connections"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn bdev_graph_loops_are_refused_and_the_daemon_keeps_serving() {
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    t.rpc_script(
        "bdev_malloc_create -b M0 4 512\n\
         bdev_malloc_create -b M1 4 512\n\
         bdev_malloc_create -b M2 4 512\n\
         bdev_quorum_create -b C1 -t 1 M0 M1\n",
    );
    let loop_of = |args: &[&str]| {
        let err = plugin_err(&t, args);
        assert_eq!(err["code"], -22, "{args:?}: {err}");
        err["message"].as_str().unwrap().to_string()
    };
    // Directly: a quorum as its own child.
    assert!(loop_of(&["bdev_quorum_add_child", "C1", "C1"]).contains("C1 -> C1"));
    // Through a second quorum: C2 = quorum(C1, M2), then C2 under C1.
    plugin(
        &t,
        &["bdev_quorum_create", "-b", "C2", "-t", "1", "C1", "M2"],
    );
    assert!(loop_of(&["bdev_quorum_add_child", "C1", "C2"]).contains("C1 -> C2 -> C1"));
    // Through an error bdev and a delay bdev stacked on the top quorum.
    t.rpc_script(
        "bdev_error_create C2\n\
         bdev_delay_create -b EE_C2 -d D -r 1 -t 1 -w 1 -n 1\n",
    );
    assert!(loop_of(&["bdev_quorum_add_child", "C2", "EE_C2"]).contains("C2 -> EE_C2 -> C2"));
    assert!(loop_of(&["bdev_quorum_add_child", "C1", "D"]).contains("C1 -> D -> EE_C2 -> C2 -> C1"));
    // Nothing changed: the children lists are as built, and the refused bdevs stay free to
    // be used elsewhere (their claims are untouched).
    let quorums = plugin_json(&t, &["bdev_quorum_get_bdevs"]);
    let children = |q: usize| -> Vec<Value> {
        quorums[q]["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect()
    };
    assert_eq!(children(0), vec![json!("M0"), json!("M1")]);
    assert_eq!(children(1), vec![json!("C1"), json!("M2")]);
    let bdevs = t.bdevs();
    let claimed = |name: &str| {
        bdevs
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()["claimed"]
            .clone()
    };
    assert_eq!(claimed("D"), json!(false));
    // The stack serves I/O end to end over NBD, and the daemon shuts down cleanly.
    t.rpc_script(&format!(
        "nbd_server_start {}\nnbd_export_create D\n",
        sock.display()
    ));
    let uri = unix_uri(&sock, "D");
    qemu_io(&uri, &["write -P 0x6b 0 64k", "flush"]);
    qemu_io(&uri, &["read -P 0x6b 0 64k"]);
    let (status, _) = t.signal(libc::SIGTERM);
    assert!(status.success(), "SIGTERM exit: {status}");
}

/// A target with quorum `Q` (threshold 2) over M0, M1 and EE_M2 (an error bdev over M2),
/// exported over NBD on a Unix socket, EE_M2 holding every write (`pending`). Extra daemon
/// arguments in `extra`.
fn quorum_with_a_hung_child(extra: &[&str]) -> (Target, PathBuf) {
    let mut args = vec!["-m", "0x1"];
    args.extend_from_slice(extra);
    let t = Target::start_with(&args);
    let sock = t.dir.path().join("nbd.sock");
    t.rpc_script(&format!(
        "bdev_malloc_create -b M0 4 512\n\
         bdev_malloc_create -b M1 4 512\n\
         bdev_malloc_create -b M2 4 512\n\
         bdev_error_create M2\n\
         bdev_quorum_create -b Q -t 2 M0 M1 EE_M2\n\
         bdev_error_inject_error EE_M2 write pending -n 1000\n\
         nbd_server_start {}\n\
         nbd_export_create Q\n",
        sock.display()
    ));
    (t, sock)
}

/// Sends one 4 KiB write of `byte` at offset 0 and waits until the healthy children M0 and
/// M1 completed it: the quorum then waits on EE_M2, which never answers.
fn write_until_only_the_hung_child_holds_it(t: &Target, c: &mut Raw<UnixStream>, byte: u8) {
    c.send(Cmd::Write, 0, 1, 0, 4096);
    c.s.write_all(&[byte; 4096]).unwrap();
    common::wait_until("M0 and M1 to complete the write", || {
        iostat(t, "M0")["num_write_ops"] == 1 && iostat(t, "M1")["num_write_ops"] == 1
    });
}

#[test]
fn shutdown_ends_within_its_bound_when_a_child_never_answers() {
    let (t, sock) = quorum_with_a_hung_child(&["--shutdown-timeout", "2"]);
    let mut c = raw_unix(&sock).session("Q");
    write_until_only_the_hung_child_holds_it(&t, &mut c, 0x5c);
    let started = Instant::now();
    let (status, dir) = t.signal_within(libc::SIGTERM, Duration::from_secs(15));
    let took = started.elapsed();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        took >= Duration::from_secs(2),
        "did not wait for the drain: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    // It says what it abandoned, and fails: the write was never acknowledged, and is lost.
    assert!(!status.success(), "{status}: {stderr}");
    for needle in [
        "shutdown incomplete",
        "export Q: 1 requests in flight",
        "EE_M2: 1 I/O in flight",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    // Every bdev, the hung one included, was flushed: only writes were held.
    assert!(!stderr.contains("not flushed"), "{stderr}");
    c.expect_closed();
}

#[test]
fn a_client_killed_with_io_pending_leaves_no_connection_behind() {
    let (t, sock) = quorum_with_a_hung_child(&[]);
    let mut c = raw_unix(&sock).session("Q");
    write_until_only_the_hung_child_holds_it(&t, &mut c, 0x5d);
    assert_eq!(connections(&t, "Q"), 1);
    drop(c);
    common::wait_until("the dead client's connection to go", || {
        connections(&t, "Q") == 0
    });
    // The export goes on serving: the two healthy children outvote the one that never
    // stored the write.
    let uri = unix_uri(&sock, "Q");
    qemu_io(&uri, &["read -P 0x5d 0 4k"]);
    // And it can be deleted without waiting for the write that will never complete.
    assert_eq!(plugin_json(&t, &["nbd_export_delete", "Q"]), json!(true));
}

/// Connects to TCP `port` and reads the server's greeting, then says nothing.
fn silent_tcp_client(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    s
}

/// A target exporting malloc `M0` over TCP on a free port, with the handshake limit given.
fn tcp_export(handshake_max_seconds: u32) -> (Target, u16) {
    let t = Target::start_with(&["-m", "0x1"]);
    let port = free_port();
    t.rpc_script(&format!(
        "bdev_malloc_create -b M0 4 512\n\
         nbd_server_start 127.0.0.1 -p {port} --handshake-max-seconds {handshake_max_seconds}\n\
         nbd_export_create M0\n"
    ));
    (t, port)
}

#[test]
fn clients_that_do_not_finish_the_handshake_in_time_are_closed() {
    let (t, port) = tcp_export(1);
    let tcp = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        Raw { s }
    };
    let mut finished = tcp().session("M0");
    let started = Instant::now();
    let mut silent = Raw {
        s: silent_tcp_client(port),
    };
    let mut half = tcp();
    half.greet(proto::FLAG_C_FIXED_NEWSTYLE);
    silent.expect_closed();
    half.expect_closed();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
    // A client that finished the handshake is not subject to the limit.
    finished.send(Cmd::Read, 0, 7, 0, 512);
    assert_eq!(finished.reply(512), (0, 7, vec![0; 512]));
    // The limit is part of the saved config.
    let saved: Value = serde_json::from_str(&t.rpc_ok(&["save_config"])).unwrap();
    let nbd = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "nbd")
        .unwrap()
        .clone();
    assert_eq!(
        nbd["config"][0]["params"]["handshake_max_seconds"], 1,
        "{nbd}"
    );
}

#[test]
fn a_flood_of_silent_connections_does_not_keep_a_real_client_out() {
    // A long handshake limit: the real client must get in because slots are kept for it,
    // not because the silent ones timed out.
    let (t, port) = tcp_export(600);
    let silent: Vec<TcpStream> = (0..1030)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            s
        })
        .collect();
    let uri = format!("nbd://127.0.0.1:{port}/M0");
    qemu_io(&uri, &["write -P 0x42 0 4k", "read -P 0x42 0 4k"]);
    // The daemon did not keep the flood: most silent connections were closed on it.
    let mut closed = 0;
    for mut s in silent {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let mut seen_eof = false;
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    seen_eof = true;
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        closed += seen_eof as usize;
    }
    assert!(closed >= 1030 - 128, "only {closed} of 1030 closed");
    let mut t = t;
    assert!(t.alive());
}

#[test]
fn fua_reaches_every_child_and_the_kernel_only_when_asked() {
    let (_files, paths) = sparse_files(2, 4 << 20);
    let (a, u) = (&paths[0], &paths[1]);
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    t.rpc_script(&format!(
        "bdev_aio_create {} A0 512\n\
         bdev_uring_create {} U1 512\n\
         bdev_malloc_create -b M2 4 512\n\
         bdev_quorum_create -b Q -t 2 A0 U1 M2\n\
         nbd_server_start {}\n\
         nbd_export_create Q\n",
        a.display(),
        u.display(),
        sock.display()
    ));
    let fua_seen = |t: &Target| -> Vec<Value> {
        ["Q", "A0", "U1", "M2"]
            .iter()
            .map(|b| iostat(t, b)["num_fua_write_ops"].clone())
            .collect()
    };
    let dsync_submitted = |t: &Target| -> Vec<Value> {
        let bdevs = t.bdevs();
        ["A0", "U1"]
            .iter()
            .map(|name| {
                let b = bdevs
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["name"] == *name)
                    .unwrap();
                let module = if *name == "A0" { "aio" } else { "uring" };
                b["driver_specific"][module]["dsync_writes"].clone()
            })
            .collect()
    };
    let mut c = raw_unix(&sock).session("Q");
    c.send(Cmd::Write, 0, 1, 0, 4096);
    c.s.write_all(&[0x11; 4096]).unwrap();
    assert_eq!(c.reply(0), (0, 1, vec![]));
    assert_eq!(
        fua_seen(&t),
        vec![json!(0); 4],
        "a plain write carries no FUA"
    );
    assert_eq!(dsync_submitted(&t), vec![json!(0); 2]);
    c.send(Cmd::Write, proto::CMD_FLAG_FUA, 2, 4096, 4096);
    c.s.write_all(&[0x22; 4096]).unwrap();
    assert_eq!(c.reply(0), (0, 2, vec![]));
    assert_eq!(fua_seen(&t), vec![json!(1); 4], "every child saw the FUA");
    assert_eq!(
        dsync_submitted(&t),
        vec![json!(1); 2],
        "both file modules handed the kernel RWF_DSYNC"
    );
    assert_eq!(iostat(&t, "M2")["num_write_ops"], 2);
}

#[test]
fn writes_are_answered_after_every_child_and_failures_reach_the_client() {
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    // D2 takes 300 ms per write: the quorum's write, and so the NBD reply, cannot be earlier.
    t.rpc_script(&format!(
        "bdev_malloc_create -b M0 4 512\n\
         bdev_malloc_create -b M1 4 512\n\
         bdev_malloc_create -b M2 4 512\n\
         bdev_delay_create -b M2 -d D2 -r 1 -t 1 -w 300000 -n 300000\n\
         bdev_quorum_create -b Q -t 2 M0 M1 D2\n\
         bdev_malloc_create -b M3 4 512\n\
         bdev_malloc_create -b M4 4 512\n\
         bdev_malloc_create -b M5 4 512\n\
         bdev_error_create M4\n\
         bdev_error_create M5\n\
         bdev_quorum_create -b F -t 2 M3 EE_M4 EE_M5\n\
         bdev_error_inject_error EE_M4 write failure -n 1000\n\
         bdev_error_inject_error EE_M5 write failure -n 1000\n\
         nbd_server_start {}\n\
         nbd_export_create Q\n\
         nbd_export_create F\n",
        sock.display()
    ));
    let mut c = raw_unix(&sock).session("Q");
    let started = Instant::now();
    c.send(Cmd::Write, 0, 9, 0, 4096);
    c.s.write_all(&[0x33; 4096]).unwrap();
    assert_eq!(c.reply(0), (0, 9, vec![]));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
    assert_eq!(iostat(&t, "D2")["num_write_ops"], 1);
    let script = "\
import errno
try:
    h.pwrite(b'x' * 4096, 0)
    raise SystemExit('a write failing on 2 of 3 children succeeded')
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
print('ok')
";
    let out = client_ok("nbdsh", &["-u", &unix_uri(&sock, "F"), "-c", script]);
    assert_eq!(out.trim(), "ok");
}

/// The start of the hole `lseek(SEEK_HOLE)` finds at or after `offset` in `path`.
fn next_hole(path: &Path, offset: i64) -> i64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a descriptor we own.
    unsafe { libc::lseek(f.as_raw_fd(), offset, libc::SEEK_HOLE) }
}

#[test]
fn trim_over_nbd_unmaps_every_child_and_reads_back_zeroes() {
    const KIB: usize = 1024;
    let (_files, paths) = sparse_files(3, 4 << 20);
    let t = Target::start_with(&["-m", "0x1"]);
    let sock = t.dir.path().join("nbd.sock");
    t.rpc_script(&format!(
        "bdev_uring_create {} C0 512\n\
         bdev_uring_create {} C1 512\n\
         bdev_aio_create --fallocate {} C2 512\n\
         bdev_quorum_create -b Q -t 2 C0 C1 C2\n\
         nbd_server_start {}\n\
         nbd_export_create Q\n",
        paths[0].display(),
        paths[1].display(),
        paths[2].display(),
        sock.display()
    ));
    let script = "\
data = bytes(range(256)) * 4096
h.pwrite(data, 0)
h.flush()
h.trim(256 * 1024, 256 * 1024)
h.flush()
got = h.pread(1024 * 1024, 0)
assert got[:256 * 1024] == data[:256 * 1024], 'before the trim'
assert got[256 * 1024:512 * 1024] == bytes(256 * 1024), 'the trimmed range reads zeroes'
assert got[512 * 1024:] == data[512 * 1024:], 'after the trim'
print('ok')
";
    let out = client_ok("nbdsh", &["-u", &unix_uri(&sock, "Q"), "-c", script]);
    assert_eq!(out.trim(), "ok");
    for p in &paths {
        // The trimmed range is a hole in every child's file, the rest is data.
        assert_eq!(next_hole(p, 0), 256 * KIB as i64, "{}", p.display());
        assert_eq!(next_hole(p, 256 * KIB as i64), 256 * KIB as i64);
        assert_eq!(next_hole(p, 512 * KIB as i64), 1024 * KIB as i64);
        assert!(file_bytes(p, 256 * KIB as u64, 256 * KIB)
            .iter()
            .all(|&b| b == 0));
    }
}
