//! Stock SPDK apps with the quorum module preloaded, driven from outside as users drive
//! them: SPDK's own `spdk-rpc` client with the repo's plugin, SPDK's NVMe-oF initiator
//! (`spdk_dd` over NVMe/TCP) for data, `bdevperf` for load. The SPDK tree comes from
//! `scripts/build-spdk` (or `$SPDK_DIR`); without it, or without hugepages, every test fails
//! with what to do: these tests never skip.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

/// How long anything may take before the test gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The SPDK tree: `$SPDK_DIR`, else the one `scripts/build-spdk` makes; checked to be built.
pub fn spdk_dir() -> PathBuf {
    let dir = std::env::var_os("SPDK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(WORKSPACE).join("target/spdk"));
    for needed in [
        "build/bin/spdk_tgt",
        "build/bin/spdk_dd",
        "build/examples/bdevperf",
    ] {
        assert!(
            dir.join(needed).exists(),
            "SPDK is not built at {} (no {needed}): run scripts/build-spdk, or set SPDK_DIR",
            dir.display()
        );
    }
    dir
}

/// The directory cargo builds this test's profile into (`target/release`, `target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps")
        .to_path_buf()
}

/// The module under test: the one cargo built for this test run, beside the test
/// executable (cargo builds the library before its integration tests).
pub fn module_so() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let so = exe.with_file_name("libspdk_bdev_quorum.so");
    assert!(so.exists(), "{} is missing", so.display());
    so
}

/// quorum-tgt, for the tests comparing both hosts (`cargo build --release --bins`).
pub fn quorum_tgt() -> PathBuf {
    let bin = profile_dir().join("quorum-tgt");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --bins (same profile)",
        bin.display()
    );
    bin
}

/// The repo's spdk-rpc plugin.
pub fn plugin_dir() -> PathBuf {
    Path::new(WORKSPACE).join("python")
}

/// Fails the test unless enough hugepages are free for an SPDK app (`scripts/test-all`
/// reserves them).
fn check_hugepages() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        free >= 96,
        "only {free} free hugepages: reserve some (scripts/test-all does: \
         mount hugetlbfs on /dev/hugepages, echo 1024 > /proc/sys/vm/nr_hugepages)"
    );
}

/// Options every SPDK app gets here: one core, no PCI probing, no core lock files (tests
/// run side by side on the same cores), `mb` MiB of hugepage memory.
fn common_args(core: u32, mb: u32) -> Vec<String> {
    vec![
        "-m".into(),
        format!("0x{:x}", 1u32 << core),
        "-u".into(),
        "--disable-cpumask-locks".into(),
        "-s".into(),
        mb.to_string(),
    ]
}

/// Settings that keep an SPDK app within a few hundred hugepages (its iSCSI, iobuf, bdev_io
/// and fsdev pools take 1.7 GiB by default), so tests can run side by side.
pub fn small_footprint() -> Vec<Value> {
    vec![
        json!({"subsystem": "iobuf", "config": [{"method": "iobuf_set_options",
            "params": {"small_pool_count": 2048, "large_pool_count": 256}}]}),
        json!({"subsystem": "fsdev", "config": [{"method": "fsdev_set_opts",
            "params": {"fsdev_io_pool_size": 1023, "fsdev_io_cache_size": 64}}]}),
        json!({"subsystem": "bdev", "config": [{"method": "bdev_set_options",
            "params": {"bdev_io_pool_size": 8191, "bdev_io_cache_size": 128}}]}),
        json!({"subsystem": "iscsi", "config": [{"method": "iscsi_set_options",
            "params": {"pdu_pool_size": 1024, "immediate_data_pool_size": 128, "data_out_pool_size": 128}}]}),
    ]
}

/// `config`'s subsystems after the small-footprint settings, as an SPDK JSON config. A
/// setting `config` makes itself (a saved config has them all) is not made twice: SPDK
/// refuses some settings the second time.
pub fn with_small_footprint(config: &Value) -> Value {
    let mut subsystems = small_footprint();
    for s in config["subsystems"].as_array().into_iter().flatten() {
        let entries = s["config"].as_array().cloned().unwrap_or_default();
        match subsystems
            .iter_mut()
            .find(|m| m["subsystem"] == s["subsystem"])
        {
            Some(m) => {
                let mine = m["config"].as_array_mut().unwrap();
                mine.retain(|e| !entries.iter().any(|x| x["method"] == e["method"]));
                mine.extend(entries);
            }
            None => subsystems.push(s.clone()),
        }
    }
    json!({ "subsystems": subsystems })
}

fn spdk_command(binary: &str) -> Command {
    let spdk = spdk_dir();
    let mut cmd = Command::new(spdk.join(binary));
    cmd.env("LD_LIBRARY_PATH", spdk.join("build/lib"));
    cmd
}

/// A running SPDK app with the module preloaded, in its own temporary directory; killed if
/// the test ends without stopping it.
pub struct App {
    /// The process.
    pub child: Child,
    /// Working directory: stderr/stdout logs, RPC socket, files.
    pub dir: PathBuf,
    /// Its RPC socket.
    pub sock: PathBuf,
    name: String,
}

impl App {
    /// Starts `binary` (relative to the SPDK tree) with `config` (an SPDK JSON config, given
    /// with `-c` after the small-footprint settings) and `args` in `dir`, waiting until its
    /// RPC server answers.
    pub fn start(binary: &str, dir: &Path, config: &Value, args: &[&str]) -> App {
        App::start_in(None, 0, binary, dir, config, args)
    }

    /// As [`App::start`], on `core`, in network namespace `netns` when given (`ip netns
    /// exec`, which execs the app: the child process is the app itself).
    pub fn start_in(
        netns: Option<&str>,
        core: u32,
        binary: &str,
        dir: &Path,
        config: &Value,
        args: &[&str],
    ) -> App {
        check_hugepages();
        let name = Path::new(binary)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let sock = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&sock);
        let config_file = dir.join(format!("{name}.json"));
        std::fs::write(&config_file, with_small_footprint(config).to_string()).unwrap();
        let mut cmd = match netns {
            None => {
                let mut cmd = spdk_command(binary);
                cmd.env("LD_PRELOAD", module_so());
                cmd
            }
            // The app's environment through env(1), which execs it: not `ip`'s.
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, "env"])
                    .arg(format!("LD_PRELOAD={}", module_so().display()))
                    .arg(format!(
                        "LD_LIBRARY_PATH={}",
                        spdk_dir().join("build/lib").display()
                    ))
                    .arg(spdk_dir().join(binary));
                cmd
            }
        };
        cmd.args(common_args(core, 64))
            .arg("--msg-mempool-size")
            .arg("32767")
            .arg("-r")
            .arg(&sock)
            .arg("-c")
            .arg(&config_file)
            .args(args);
        App::spawn(cmd, dir, name, sock)
    }

    /// quorum-tgt, the other host of the same quorum, in interrupt mode, driven the same way.
    pub fn quorum_tgt(dir: &Path) -> App {
        let name = "quorum-tgt".to_string();
        let sock = dir.join(format!("{name}.sock"));
        let mut cmd = Command::new(quorum_tgt());
        cmd.arg("-r").arg(&sock).arg("--interrupt-mode");
        App::spawn(cmd, dir, name, sock)
    }

    /// Runs `cmd` in `dir` with its output in `<name>.stdout` and `<name>.stderr`, and waits
    /// until it answers RPC on `sock`.
    fn spawn(mut cmd: Command, dir: &Path, name: String, sock: PathBuf) -> App {
        let child = cmd
            .current_dir(dir)
            .stdout(File::create(dir.join(format!("{name}.stdout"))).unwrap())
            .stderr(File::create(dir.join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let mut app = App {
            child,
            dir: dir.to_path_buf(),
            sock,
            name,
        };
        app.wait_ready();
        app
    }

    /// `spdk_tgt` in interrupt mode (reactors sleep when idle), started with `config`.
    pub fn spdk_tgt(dir: &Path, config: &Value) -> App {
        App::start("build/bin/spdk_tgt", dir, config, &["--interrupt-mode"])
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited at start-up ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(stream) = UnixStream::connect(&self.sock) {
                let answer = call_raw(
                    stream,
                    json!({"jsonrpc": "2.0", "id": 0, "method": "spdk_get_version"}),
                );
                if answer["result"]["version"].is_string() {
                    return;
                }
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} never answered RPC:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the app printed (stdout then stderr).
    pub fn log(&self) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.join(format!("{}.{ext}", self.name)))
                .unwrap_or_default()
        };
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// `spdk-rpc` (with the quorum plugin) against this app.
    pub fn rpc(&self, args: &[&str]) -> Output {
        Command::new("spdk-rpc")
            .arg("-s")
            .arg(&self.sock)
            .args(["--plugin", "quorum_rpc_plugin"])
            .args(args)
            .env("PYTHONPATH", plugin_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect(
                "spdk-rpc must be installed: scripts/test-all runs `python3 -m pip install spdk`",
            )
    }

    /// Runs `spdk-rpc` and returns stdout; fails the test if the call failed.
    pub fn rpc_ok(&self, args: &[&str]) -> String {
        let out = self.rpc(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "spdk-rpc {args:?} failed: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    /// Runs `spdk-rpc` and parses its JSON output.
    pub fn rpc_json(&self, args: &[&str]) -> Value {
        let text = self.rpc_ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs `spdk-rpc` expecting a JSON-RPC error; returns the error object.
    pub fn rpc_err(&self, args: &[&str]) -> Value {
        let out = self.rpc(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            !out.status.success(),
            "spdk-rpc {args:?} succeeded: {stdout}"
        );
        let (_, response) = stdout
            .split_once("response:\n")
            .unwrap_or_else(|| panic!("no error response in: {stdout}"));
        serde_json::from_str(response).unwrap_or_else(|e| panic!("{e}: {response}"))
    }

    /// Several `spdk-rpc` commands, one per line, in one client process (SPDK's script
    /// mode); fails the test if any failed.
    pub fn rpc_script(&self, script: &str) -> String {
        let mut child = Command::new("spdk-rpc")
            .arg("-s")
            .arg(&self.sock)
            .args(["--plugin", "quorum_rpc_plugin"])
            .env("PYTHONPATH", plugin_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "spdk-rpc must be installed: scripts/test-all runs `python3 -m pip install spdk`",
            );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "spdk-rpc script failed:\n{script}\n{stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    /// One JSON-RPC call on a bare connection (methods the client does not know, like
    /// bdevperf's `perform_tests`); the whole response object.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let stream = UnixStream::connect(&self.sock).expect("app accepts RPC connections");
        call_raw(
            stream,
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        )
    }

    /// The quorum events, oldest first.
    pub fn events(&self) -> Vec<Value> {
        match self.rpc_json(&["bdev_quorum_get_events"]) {
            Value::Array(events) => events,
            other => panic!("events: {other}"),
        }
    }

    /// I/O of `bdev` that SPDK completed as failed, by SPDK's status name ("failed",
    /// "aio_error", ...), summed.
    pub fn failed_ios(&self, bdev: &str) -> u64 {
        let stat = self.call("bdev_get_iostat", json!({"names": [bdev]}));
        stat["result"]["bdevs"][0]["io_error"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
    }

    /// Waits for the app to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, &self.name)
    }

    /// Asks the app to stop (SIGTERM, as SPDK's own scripts do) and waits.
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }
}

impl App {
    /// Kills the app with SIGKILL, as a crashed host dies (no shutdown, sockets reset by the
    /// kernel), waits for it, and removes what DPDK leaves behind of it (its runtime
    /// directory; hugepage files too unless started with `-R`).
    pub fn sigkill(mut self) {
        let pid = self.child.id();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        self.wait_exit();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk_pid{pid}"));
        for entry in std::fs::read_dir("/dev/hugepages")
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("spdk_pid{pid}map_"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, name: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < PATIENCE, "{name} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one request and reads back one JSON value.
fn call_raw(mut stream: UnixStream, request: Value) -> Value {
    stream.set_read_timeout(Some(PATIENCE * 2)).unwrap();
    stream
        .write_all(&serde_json::to_vec(&request).unwrap())
        .unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some(Ok(v)) = serde_json::Deserializer::from_slice(&buf)
            .into_iter::<Value>()
            .next()
        {
            return v;
        }
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Value::Null,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A file of `len` bytes of `byte`, for an aio child.
pub fn image(dir: &Path, name: &str, len: usize, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![byte; len]).unwrap();
    path
}

/// A temporary directory for one test.
pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("spdk-quorum")
        .tempdir()
        .unwrap()
}

/// The NVMe/TCP set-up that exports each of `bdevs` (one subsystem each, all listening on
/// `port`), as `spdk-rpc` script lines.
pub fn nvmf_export(bdevs: &[&str], port: u16) -> String {
    nvmf_export_at(bdevs, "127.0.0.1", port)
}

/// As [`nvmf_export`], listening on `addr`.
pub fn nvmf_export_at(bdevs: &[&str], addr: &str, port: u16) -> String {
    let mut script = "nvmf_create_transport -t TCP\n".to_string();
    for bdev in bdevs {
        let nqn = nqn(bdev);
        script += &format!(
            "nvmf_create_subsystem {nqn} -a\n\
             nvmf_subsystem_add_ns {nqn} {bdev}\n\
             nvmf_subsystem_add_listener {nqn} -t tcp -a {addr} -s {port}\n"
        );
    }
    script
}

fn nqn(bdev: &str) -> String {
    format!("nqn.2016-06.io.spdk:{}", bdev.to_lowercase())
}

/// The config entry attaching, as bdev controller `name` (namespace bdev `<name>n1`), the
/// namespace [`nvmf_export`] made of `bdev` at `addr`:`port` over TCP.
pub fn nvme_attach(name: &str, addr: &str, port: u16, bdev: &str) -> Value {
    json!({"method": "bdev_nvme_attach_controller", "params": {
        "name": name, "trtype": "tcp", "traddr": addr, "trsvcid": port.to_string(),
        "adrfam": "ipv4", "subnqn": nqn(bdev)}})
}

/// SPDK's transport ID of the namespace [`nvmf_export`] made of `bdev` on the loopback.
pub fn nvmf_trid(bdev: &str, port: u16) -> String {
    format!(
        "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{}",
        nqn(bdev)
    )
}

/// SPDK's `spdk_nvme_perf` (its NVMe driver as the host) on the namespace at `trid` for 2 s,
/// 4 KiB at QD 32 on the second core, with `workload` (its `-w`/`-M` arguments).
pub fn nvme_perf(trid: &str, workload: &[&str]) -> Output {
    check_hugepages();
    spdk_command("build/bin/spdk_nvme_perf")
        .args([
            "-c", "0x2", "-s", "128", "-q", "32", "-o", "4096", "-t", "2",
        ])
        .arg("-r")
        .arg(trid)
        .args(workload)
        .output()
        .expect("spdk_nvme_perf runs")
}

/// The IOPS of `spdk_nvme_perf`'s "Total" line.
pub fn nvme_perf_total_iops(output: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Total"))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Total line in spdk_nvme_perf's output: {output}"))
}

/// A free TCP port on the loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SPDK's NVMe-oF initiator in `spdk_dd`: reads and writes blocks of a bdev exported by
/// [`nvmf_export`], as a host would.
pub struct Initiator {
    dir: PathBuf,
    config: PathBuf,
}

impl Initiator {
    /// An initiator of the namespace of `bdev` exported on `port`.
    pub fn new(dir: &Path, bdev: &str, port: u16) -> Initiator {
        let config = dir.join(format!("initiator-{bdev}.json"));
        // No examine and no retries: the initiator reads only what the test asks for, once.
        let cfg = with_small_footprint(&json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_set_options", "params": {"bdev_auto_examine": false}},
            {"method": "bdev_nvme_set_options", "params": {"bdev_retry_count": 0}},
            nvme_attach("N", "127.0.0.1", port, bdev)]}]}));
        std::fs::write(&config, cfg.to_string()).unwrap();
        Initiator {
            dir: dir.to_path_buf(),
            config,
        }
    }

    fn dd(&self, args: &[String]) -> Output {
        check_hugepages();
        spdk_command("build/bin/spdk_dd")
            .args(common_args(1, 64))
            .arg("--msg-mempool-size")
            .arg("32767")
            .arg("--no-rpc-server")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("spdk_dd runs")
    }

    /// Reads `len` bytes at byte `offset` (a multiple of `len`) in one I/O. spdk_dd does not
    /// check the outcome of bdev reads: a failed read shows as the target's failure count
    /// ([`App::failed_ios`]), not here.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        assert_eq!(offset % len, 0, "one I/O of len bytes at a multiple of len");
        let out = self.config.with_extension("read");
        let _ = std::fs::remove_file(&out);
        let o = self.dd(&[
            "--ib=Nn1".into(),
            format!("--of={}", out.display()),
            format!("--bs={len}"),
            "--count=1".into(),
            format!("--skip={}", offset / len),
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "spdk_dd read failed: {text}");
        std::fs::read(&out).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Writes `data` at byte `offset` (a multiple of its length) in one I/O.
    pub fn write(&self, offset: u64, data: &[u8]) {
        let len = data.len() as u64;
        assert_eq!(offset % len, 0, "one I/O at a multiple of its length");
        let input = self.config.with_extension("write");
        std::fs::write(&input, data).unwrap();
        let o = self.dd(&[
            format!("--if={}", input.display()),
            "--ob=Nn1".into(),
            format!("--bs={len}"),
            format!("--seek={}", offset / len),
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "spdk_dd write failed: {text}");
    }
}

/// The events' `event` names and data, without ids and timestamps, for comparisons.
pub fn event_shapes(events: &[Value]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["data"].clone(),
            )
        })
        .collect()
}
