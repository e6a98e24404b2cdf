//! The NBD client bdev against servers nobody here wrote: qemu-nbd, qemu-storage-daemon's
//! NBD export and nbdkit (file and memory plugins), data checked on the server's side; a
//! quorum of three client children on three network namespaces surviving a server kill under
//! fio verify and reconnecting when it returns; and hostile servers (truncated, misaddressed,
//! oversized and never-sent replies) that the daemon survives while their child fails.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::clients::{qemu_io, unix_uri, CLIENT_TIMEOUT};
use common::target::Target;
use common::{events_of, wait_until};
use quorum_bdev::nbd::proto::{self, Command as Cmd, Request};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A server process, killed when dropped so a failing test leaves none behind.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(argv: &[&str], log: &Path) -> Server {
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{} must be installed (scripts/test-all): {e}", argv[0]));
    Server { child }
}

/// Starts a server listening on the Unix socket `sock` and waits until it accepts.
fn serve_unix(argv: &[&str], sock: &Path) -> Server {
    let server = spawn(argv, &sock.with_extension("log"));
    wait_until("the NBD server's socket", || {
        UnixStream::connect(sock).is_ok()
    });
    server
}

/// A zeroed 64 MiB backing file.
fn backing_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    path
}

fn file_bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// `bdev_get_bdevs` of `name`: its `driver_specific.nbd_client`.
fn client_state(t: &Target, name: &str) -> Value {
    t.bdevs()
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no bdev {name}"))["driver_specific"]["nbd_client"]
        .clone()
}

/// A target on two reactors with client bdev `N` over `uri`, exported on a Unix socket.
/// Two reactors: the export hands its clients to both in turn, so I/O reaches the client bdev
/// from a reactor with a connection and (for a single-connection server) from one without.
fn export_client(uri: &str) -> (Target, String) {
    let t = Target::start_with(&["-m", "0x3"]);
    let sock = t.dir.path().join("export.sock");
    t.rpc_script(&format!(
        "bdev_nbd_client_create -b N '{uri}'\nnbd_server_start {}\nnbd_export_create N\n",
        sock.display()
    ));
    (t, unix_uri(&sock, "N"))
}

/// Writes, FUA-writes, flushes, trims and zeroes through our export of the client bdev,
/// from two client connections (so both reactors submit), and reads it all back.
fn exercise(ours: &str) {
    qemu_io(
        ours,
        &[
            "write -P 0x11 0 64k",
            "write -f -P 0x22 64k 64k",
            "flush",
            "write -P 0x33 128k 64k",
            "discard 128k 64k",
            "write -P 0x44 192k 64k",
            "write -z 192k 64k",
            "write -P 0x55 1M 1M",
        ],
    );
    qemu_io(
        ours,
        &[
            "read -P 0x11 0 64k",
            "read -P 0x22 64k 64k",
            "read -P 0 128k 128k",
            "read -P 0x55 1M 1M",
        ],
    );
}

/// What [`exercise`] must have left on the server's disk.
fn check_file(path: &Path) {
    for (offset, len, byte) in [
        (0, 64 << 10, 0x11u8),
        (64 << 10, 64 << 10, 0x22),
        (128 << 10, 128 << 10, 0),
        (MIB, MIB, 0x55),
    ] {
        assert!(
            file_bytes(path, offset, len).iter().all(|&b| b == byte),
            "{} at {offset:#x}: expected {byte:#x}",
            path.display()
        );
    }
}

/// qemu-nbd with its default `--shared=1` offers no MULTI_CONN: one connection, on one
/// reactor; the export's second client lands on the other reactor, whose I/O goes through
/// the relay.
#[test]
fn qemu_nbd_round_trips_and_the_bdev_comes_back_from_save_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = backing_file(dir.path(), "disk.raw");
    let sock = dir.path().join("qemu-nbd.sock");
    let (f, s) = (file.to_str().unwrap(), sock.to_str().unwrap());
    let _server = serve_unix(
        &[
            "qemu-nbd",
            "-f",
            "raw",
            "-k",
            s,
            "-x",
            "disk",
            "--persistent",
            "--discard=unmap",
            f,
        ],
        &sock,
    );
    let uri = unix_uri(&sock, "disk");
    let (t, ours) = export_client(&uri);
    let state = client_state(&t, "N");
    assert_eq!(state["state"], "connected", "{state}");
    assert_eq!(state["structured_replies"], true, "{state}");
    assert_eq!(state["multi_conn"], false, "{state}");
    assert_eq!(state["connections"].as_array().unwrap().len(), 1, "{state}");
    exercise(&ours);
    check_file(&file);

    // save_config brings the same bdev back, connected, with its data.
    let config = t.rpc_ok(&["save_config"]);
    assert!(config.contains("bdev_nbd_client_create"), "{config}");
    let uuid = t.bdevs()[0]["uuid"].clone();
    let (status, tdir) = t.signal(libc::SIGTERM);
    assert!(status.success(), "{status}");
    std::fs::write(tdir.path().join("config.json"), config).unwrap();
    let t = Target::start_in(tdir, &["-c", "config.json"]);
    let bdev = &t.bdevs()[0];
    assert_eq!((&bdev["name"], &bdev["uuid"]), (&Value::from("N"), &uuid));
    assert_eq!(bdev["driver_specific"]["nbd_client"]["uri"], uri.as_str());
    qemu_io(
        &unix_uri(&t.dir.path().join("export.sock"), "N"),
        &["read -P 0x11 0 64k"],
    );
}

#[test]
fn qemu_storage_daemon_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let file = backing_file(dir.path(), "disk.raw");
    let sock = dir.path().join("qsd.sock");
    let _server = serve_unix(
        &[
            "qemu-storage-daemon",
            "--blockdev",
            &format!(
                "driver=file,node-name=file0,filename={},discard=unmap",
                file.display()
            ),
            "--nbd-server",
            &format!("addr.type=unix,addr.path={}", sock.display()),
            "--export",
            "type=nbd,id=exp0,node-name=file0,name=disk,writable=on",
        ],
        &sock,
    );
    let (_t, ours) = export_client(&unix_uri(&sock, "disk"));
    exercise(&ours);
    check_file(&file);
}

#[test]
fn nbdkit_file_gets_fua_flush_trim_and_zeroes_split_at_its_maximum_on_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = backing_file(dir.path(), "disk.raw");
    let sock = dir.path().join("nbdkit.sock");
    let log = dir.path().join("requests.log");
    let _server = serve_unix(
        &[
            "nbdkit",
            "-f",
            "-U",
            sock.to_str().unwrap(),
            "--filter=log",
            "--filter=blocksize-policy",
            "file",
            file.to_str().unwrap(),
            &format!("logfile={}", log.display()),
            "blocksize-minimum=512",
            "blocksize-preferred=4096",
            "blocksize-maximum=65536",
        ],
        &sock,
    );
    let (t, ours) = export_client(&unix_uri(&sock, ""));
    let state = client_state(&t, "N");
    assert_eq!(state["multi_conn"], true, "{state}");
    assert_eq!(state["max_request_bytes"], 65536, "{state}");
    assert_eq!(
        state["connections"].as_array().unwrap().len(),
        2,
        "one per reactor: {state}"
    );
    exercise(&ours);
    check_file(&file);

    // nbdkit's log names every request the client sent, with its flags.
    let text = std::fs::read_to_string(&log).unwrap();
    let requests: Vec<&str> = text.lines().filter(|l| l.contains(" id=")).collect();
    let has = |what: &str, also: &str| {
        requests
            .iter()
            .any(|l| l.contains(&format!(" {what} ")) && l.contains(also))
    };
    assert!(has("Write", "fua=1"), "a FUA write: {text}");
    assert!(has("Flush", ""), "a flush: {text}");
    assert!(
        has("Trim", "offset=0x20000"),
        "the discard as a trim: {text}"
    );
    assert!(has("Zero", "offset=0x30000"), "write -z as zeroes: {text}");
    let largest = requests
        .iter()
        .filter(|l| l.contains(" Write ") || l.contains(" Read "))
        .filter_map(|l| l.split("count=0x").nth(1))
        .map(|c| u64::from_str_radix(c.split_whitespace().next().unwrap(), 16).unwrap())
        .max()
        .unwrap();
    assert_eq!(
        largest, 65536,
        "1 MiB requests split at the server's maximum"
    );
    let connections: std::collections::HashSet<&str> = requests
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("connection=")))
        .collect();
    assert!(
        connections.len() >= 2,
        "both connections served: {connections:?}"
    );
}

#[test]
fn nbdkit_memory_round_trips_checked_by_another_client() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("memory.sock");
    let _server = serve_unix(
        &[
            "nbdkit",
            "-f",
            "-U",
            sock.to_str().unwrap(),
            "memory",
            "64M",
        ],
        &sock,
    );
    let (_t, ours) = export_client(&unix_uri(&sock, ""));
    exercise(&ours);
    qemu_io(
        &unix_uri(&sock, ""),
        &[
            "read -P 0x11 0 64k",
            "read -P 0x22 64k 64k",
            "read -P 0 128k 128k",
            "read -P 0x55 1M 1M",
        ],
    );
}

#[test]
fn bad_uris_and_unreachable_servers_are_refused_and_change_nothing() {
    let t = Target::start();
    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody.sock");
    for (uri, why) in [
        ("http://h/x".to_string(), "unsupported URI scheme"),
        ("nbds://h/x".to_string(), "TLS"),
        ("nbd+unix:///x".to_string(), "socket"),
        (unix_uri(&nobody, "x"), "cannot connect"),
    ] {
        let err = t.rpc_err(&[
            "--plugin",
            "quorum_rpc_plugin",
            "bdev_nbd_client_create",
            "-b",
            "N",
            &uri,
        ]);
        assert_eq!(err["code"], -22, "{err}");
        assert!(err["message"].as_str().unwrap().contains(why), "{err}");
    }
    assert!(t.bdev_names().is_empty());
}

// ---- three hosts -------------------------------------------------------------------------

/// Network namespaces, veth pairs and servers made by a test, removed when dropped.
struct Hosts {
    names: Vec<String>,
    servers: Vec<Option<Server>>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.servers.clear();
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The address of server host `i` (RFC 2544's benchmarking range: no real network's).
fn host_addr(i: usize) -> String {
    format!("198.18.{i}.2")
}

impl Hosts {
    /// A client namespace and `n` server namespaces, each joined to the client by a veth
    /// pair with its own /30; no address outside the namespaces.
    fn new(n: usize) -> Hosts {
        let tag = std::process::id();
        let client = format!("qnbdc{tag}c");
        let mut hosts = Hosts {
            names: vec![client.clone()],
            servers: Vec::new(),
        };
        ip(&["netns", "add", &client]);
        ip(&["-n", &client, "link", "set", "lo", "up"]);
        for i in 0..n {
            let ns = format!("qnbdc{tag}s{i}");
            ip(&["netns", "add", &ns]);
            hosts.names.push(ns.clone());
            let (a, b) = (format!("qc{tag}a{i}"), format!("qc{tag}b{i}"));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            ip(&["link", "set", &a, "netns", &client]);
            ip(&["link", "set", &b, "netns", &ns]);
            ip(&[
                "-n",
                &client,
                "addr",
                "add",
                &format!("198.18.{i}.1/30"),
                "dev",
                &a,
            ]);
            ip(&["-n", &client, "link", "set", &a, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", host_addr(i)),
                "dev",
                &b,
            ]);
            ip(&["-n", &ns, "link", "set", &b, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn client_ns(&self) -> &str {
        &self.names[0]
    }

    /// Starts host `i`'s server (qemu-nbd, or qemu-storage-daemon for `qsd`) on `file` and
    /// waits until the client namespace can use it.
    fn serve(&mut self, i: usize, file: &Path, qsd: bool) {
        let ns = self.names[i + 1].clone();
        let (addr, f) = (host_addr(i), file.to_str().unwrap());
        let mut argv = vec!["ip", "netns", "exec", &ns];
        let blockdev = format!("driver=file,node-name=f,filename={f}");
        let nbd_server = format!("addr.type=inet,addr.host={addr},addr.port=10809");
        if qsd {
            argv.extend_from_slice(&[
                "qemu-storage-daemon",
                "--blockdev",
                &blockdev,
                "--nbd-server",
                &nbd_server,
                "--export",
                "type=nbd,id=e,node-name=f,name=d,writable=on",
            ]);
        } else {
            argv.extend_from_slice(&[
                "qemu-nbd",
                "-f",
                "raw",
                "-b",
                &addr,
                "-p",
                "10809",
                "-x",
                "d",
                "--persistent",
                "--shared=8",
                f,
            ]);
        }
        let server = spawn(&argv, &file.with_extension("log"));
        let uri = format!("nbd://{addr}:10809/d");
        let client = self.client_ns().to_string();
        wait_until("the server in its namespace", || {
            Command::new("ip")
                .args(["netns", "exec", &client, "nbdinfo", "--size", &uri])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if self.servers.len() <= i {
            self.servers.resize_with(i + 1, || None);
        }
        self.servers[i] = Some(server);
    }

    /// Kills host `i`'s server.
    fn kill(&mut self, i: usize) {
        self.servers[i] = None;
    }
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_quorum_over_three_hosts_survives_a_server_kill_and_the_child_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| backing_file(dir.path(), &format!("host{i}.raw")))
        .collect();
    let mut hosts = Hosts::new(3);
    hosts.serve(0, &files[0], false);
    hosts.serve(1, &files[1], false);
    hosts.serve(2, &files[2], true);
    let tdir = tempfile::tempdir().unwrap();
    let t = Target::start_wrapped(tdir, &["ip", "netns", "exec", hosts.client_ns()], &[]);
    let sock = t.dir.path().join("export.sock");
    let mut script = String::new();
    for i in 0..3 {
        script += &format!(
            "bdev_nbd_client_create -b N{i} nbd://{}:10809/d --io-timeout-ms 5000 \
             --connect-timeout-ms 2000\n",
            host_addr(i)
        );
    }
    script += &format!(
        "bdev_quorum_create -b Q -t 2 N0 N1 N2\nnbd_server_start {}\nnbd_export_create Q\n",
        sock.display()
    );
    t.rpc_script(&script);

    // fio writes with checksums, then reads everything back and verifies it; host 1's
    // server dies while it writes.
    let fio = Command::new("timeout")
        .args([
            CLIENT_TIMEOUT,
            "fio",
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", unix_uri(&sock, "Q")),
            "--size=32M",
            "--bs=4k",
            "--iodepth=16",
            // Slow enough that the kill lands while fio still writes.
            "--rate_iops=2000",
            "--rw=randwrite",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=json",
        ])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fio (scripts/test-all)");
    wait_until("fio writing through the quorum", || {
        let stat = t.raw().call(serde_json::json!(
            {"jsonrpc": "2.0", "id": 1, "method": "bdev_get_iostat", "params": {"name": "Q"}}
        ));
        stat["result"]["bdevs"][0]["num_write_ops"]
            .as_u64()
            .unwrap_or(0)
            >= 1000
    });
    let killed_at = Instant::now();
    hosts.kill(1);
    let out = fio.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio failed ({}) after the kill ({:?} ago): {text}{}",
        out.status,
        killed_at.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let job = &report["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    assert_eq!(job["write"]["io_bytes"], 32 * MIB, "{job}");
    assert_eq!(
        job["read"]["io_bytes"],
        32 * MIB,
        "verified all it wrote: {job}"
    );

    let events = t.rpc_json(&["--plugin", "quorum_rpc_plugin", "bdev_quorum_get_events"]);
    let bad = events_of(&events, "QUORUM_REPORT_BAD");
    assert!(!bad.is_empty(), "{events}");
    assert!(
        bad.iter().all(|e| e["data"]["node-name"] == "N1"),
        "{events}"
    );
    assert!(events_of(&events, "QUORUM_FAILURE").is_empty(), "{events}");
    let state = client_state(&t, "N1");
    assert_eq!(state["state"], "disconnected", "{state}");

    // The server comes back on the same disk: the child reconnects by itself and serves.
    hosts.serve(1, &files[1], false);
    wait_until("N1 reconnected", || {
        client_state(&t, "N1")["state"] == "connected"
    });
    let state = client_state(&t, "N1");
    assert_eq!(state["connections"][0]["reconnects"], 1, "{state}");
    qemu_io(
        &unix_uri(&sock, "Q"),
        &["write -P 0x66 0 64k", "read -P 0x66 0 64k"],
    );
    assert!(file_bytes(&files[1], 0, 64 << 10)
        .iter()
        .all(|&b| b == 0x66));

    let names = hosts.names.clone();
    drop(t);
    drop(hosts);
    let left = netns_list();
    for ns in &names {
        assert!(!left.contains(ns.as_str()), "{ns} left behind: {left}");
    }
}

// ---- hostile servers -----------------------------------------------------------------------

/// How a hostile server answers transmission requests (its handshake is correct).
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Half a reply header, then the connection closes.
    Truncated,
    /// A reply naming a handle that was never sent.
    WrongHandle,
    /// A data chunk longer than the read asked for.
    Oversized,
    /// No reply at all.
    Silent,
}

/// A server on `sock` that negotiates properly (structured replies, one 64 MiB export) and
/// then answers every request as `mode` says, for every connection, until the test ends.
fn hostile_server(sock: &Path, mode: Misbehaviour) -> JoinHandle<()> {
    let listener = UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = hostile_connection(stream, mode);
            });
        }
    })
}

fn hostile_connection(mut s: UnixStream, mode: Misbehaviour) -> std::io::Result<()> {
    s.write_all(&proto::greeting())?;
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags)?;
    loop {
        let mut head = [0u8; proto::OPTION_HEADER_LEN];
        s.read_exact(&mut head)?;
        let (option, len) = proto::parse_option_header(&head).unwrap();
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        if option == proto::OPT_GO {
            let flags = proto::FLAG_HAS_FLAGS | proto::FLAG_SEND_FLUSH;
            let info = proto::info_export(64 * MIB, flags);
            s.write_all(&proto::option_reply(option, proto::REP_INFO, &info))?;
            s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))?;
            break;
        }
        s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))?;
    }
    loop {
        let mut head = [0u8; proto::REQUEST_LEN];
        s.read_exact(&mut head)?;
        let r = Request::parse(&head).unwrap();
        let mut payload = vec![0u8; r.payload_len() as usize];
        s.read_exact(&mut payload)?;
        match mode {
            Misbehaviour::Truncated => {
                s.write_all(&proto::ReplyHeader::simple(r.handle, 0).as_bytes()[..8])?;
                return Ok(());
            }
            Misbehaviour::WrongHandle => {
                s.write_all(proto::ReplyHeader::simple(r.handle ^ 0x5a5a, 0).as_bytes())?;
            }
            Misbehaviour::Oversized => {
                let head = proto::ReplyHeader::read_data(r.handle, r.offset, r.len + 4096);
                s.write_all(head.as_bytes())?;
                s.write_all(&vec![0u8; r.len as usize + 4096])?;
            }
            Misbehaviour::Silent => {}
        }
        if r.command == Cmd::Disc {
            return Ok(());
        }
    }
}

#[test]
fn hostile_servers_fail_their_child_and_the_daemon_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.sock");
    let _memory = serve_unix(
        &[
            "nbdkit",
            "-f",
            "-U",
            good.to_str().unwrap(),
            "memory",
            "64M",
        ],
        &good,
    );
    let t = Target::start();
    let export = t.dir.path().join("export.sock");
    let modes = [
        Misbehaviour::Truncated,
        Misbehaviour::WrongHandle,
        Misbehaviour::Oversized,
        Misbehaviour::Silent,
    ];
    let mut script = format!("nbd_server_start {}\n", export.display());
    let mut servers = Vec::new();
    for (m, mode) in modes.iter().enumerate() {
        let sock = dir.path().join(format!("hostile{m}.sock"));
        servers.push(hostile_server(&sock, *mode));
        script += &format!(
            "bdev_nbd_client_create -b A{m} '{}'\n\
             bdev_nbd_client_create -b B{m} '{}'\n\
             bdev_nbd_client_create -b H{m} '{}' --io-timeout-ms 1000\n\
             bdev_quorum_create -b Q{m} -t 2 A{m} B{m} H{m}\n\
             nbd_export_create Q{m}\n",
            unix_uri(&good, ""),
            unix_uri(&good, ""),
            unix_uri(&sock, "")
        );
    }
    t.rpc_script(&script);
    for (m, mode) in modes.iter().enumerate() {
        let started = Instant::now();
        let byte = 0x70 + m as u8;
        // Offsets apart per quorum: A and B of every quorum share one memory disk.
        let at = m as u64 * MIB;
        qemu_io(
            &unix_uri(&export, &format!("Q{m}")),
            &[
                &format!("write -P {byte} {at} 64k"),
                &format!("read -P {byte} {at} 64k"),
            ],
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?}: bounded by the I/O timeout, took {:?}",
            started.elapsed()
        );
        let h = client_state(&t, &format!("H{m}"));
        let conn = &h["connections"][0];
        match mode {
            Misbehaviour::Silent => assert!(
                conn["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("no reply within 1000 ms"),
                "{mode:?}: {h}"
            ),
            Misbehaviour::Truncated => assert!(
                conn["last_error"].as_str().unwrap().contains("closed"),
                "{mode:?}: {h}"
            ),
            _ => assert!(
                conn["protocol_errors"].as_u64().unwrap() >= 1,
                "{mode:?}: {h}"
            ),
        }
        for good in [format!("A{m}"), format!("B{m}")] {
            assert_eq!(client_state(&t, &good)["state"], "connected");
        }
    }
    let events = t.rpc_json(&["--plugin", "quorum_rpc_plugin", "bdev_quorum_get_events"]);
    for (m, _) in modes.iter().enumerate() {
        let child = format!("H{m}");
        assert!(
            events_of(&events, "QUORUM_REPORT_BAD")
                .iter()
                .any(|e| e["data"]["node-name"] == child.as_str()),
            "{child}: {events}"
        );
    }
    assert!(t.rpc_ok(&["spdk_get_version"]).contains("version"));
}
