//! The real `quorum-tgt` binary driven from outside, as users drive it: started on a
//! temporary RPC socket, called with SPDK's own `spdk-rpc` (and the repo's plugin), or with a
//! bare JSON stream for what a well-behaved client never sends. Shared by every test that
//! needs the daemon (RPC server, NBD exports).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

pub const TGT: &str = env!("CARGO_BIN_EXE_quorum-tgt");
pub const PLUGIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running `quorum-tgt` in its own temporary directory; killed if a test fails midway.
pub struct Target {
    /// The daemon process.
    pub child: Child,
    /// Its working directory (stderr log, sockets, config files).
    pub dir: TempDir,
    /// Its JSON-RPC socket.
    pub sock: PathBuf,
}

impl Target {
    pub fn start() -> Target {
        Target::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Target {
        let dir = tempfile::tempdir().unwrap();
        Target::start_in(dir, extra)
    }

    pub fn start_in(dir: TempDir, extra: &[&str]) -> Target {
        Target::start_wrapped(dir, &[], extra)
    }

    /// Starts the daemon behind `wrapper` (`ip netns exec NS`, which execs it: the child is
    /// the daemon itself), as a test runs it in a network namespace of its own.
    pub fn start_wrapped(dir: TempDir, wrapper: &[&str], extra: &[&str]) -> Target {
        let sock = dir.path().join("rpc.sock");
        let child = spawn_wrapped(dir.path(), &sock, wrapper, extra);
        let mut target = Target { child, dir, sock };
        target.wait_ready();
        target
    }

    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "quorum-tgt exited at start-up ({status}): {}",
                    self.stderr()
                );
            }
            if let Ok(stream) = UnixStream::connect(&self.sock) {
                let mut raw = Raw::from(stream);
                let answer =
                    raw.call(json!({"jsonrpc": "2.0", "id": 0, "method": "spdk_get_version"}));
                assert!(answer["result"]["version"].is_string(), "{answer}");
                return;
            }
            assert!(start.elapsed() < PATIENCE, "socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn raw(&self) -> Raw {
        Raw::from(UnixStream::connect(&self.sock).expect("target accepts connections"))
    }

    pub fn rpc(&self, args: &[&str]) -> Output {
        spdk_rpc(&self.sock, args)
    }

    /// Runs several `spdk-rpc` commands (one per line, the repo's plugin loaded) in one
    /// client process, SPDK's script mode: set-ups without a Python start-up per call.
    /// Fails the test if any command failed; returns the combined stdout.
    pub fn rpc_script(&self, script: &str) -> String {
        let mut child = Command::new("spdk-rpc")
            .arg("-s")
            .arg(&self.sock)
            .args(["--plugin", "quorum_rpc_plugin"])
            .env("PYTHONPATH", PLUGIN_DIR)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "spdk-rpc must be installed: scripts/test-all runs `python3 -m pip install spdk`",
            );
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "spdk-rpc script failed:\n{script}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `spdk-rpc` and returns its stdout, failing the test if the call failed.
    pub fn rpc_ok(&self, args: &[&str]) -> String {
        let out = self.rpc(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "spdk-rpc {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub fn rpc_json(&self, args: &[&str]) -> Value {
        let text = self.rpc_ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs `spdk-rpc` expecting a JSON-RPC error; returns the error object it printed.
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

    pub fn bdevs(&self) -> Value {
        let answer = self
            .raw()
            .call(json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_get_bdevs"}));
        answer["result"].clone()
    }

    /// The names `bdev_get_bdevs` lists, in its order.
    pub fn bdev_names(&self) -> Vec<Value> {
        self.bdevs()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].clone())
            .collect()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `signal` and waits for the exit status.
    pub fn signal(self, signal: i32) -> (ExitStatus, TempDir) {
        self.signal_within(signal, PATIENCE)
    }

    /// Sends `signal` and waits `bound` at most for the exit status.
    pub fn signal_within(mut self, signal: i32, bound: Duration) -> (ExitStatus, TempDir) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
        let status = wait_exit_within(&mut self.child, bound);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- quorum-tgt stderr ---\n{}", self.stderr());
        }
    }
}

pub fn spawn(dir: &Path, sock: &Path, extra: &[&str]) -> Child {
    spawn_wrapped(dir, sock, &[], extra)
}

/// [`spawn`] with `wrapper` (a command and its arguments) in front of the daemon.
pub fn spawn_wrapped(dir: &Path, sock: &Path, wrapper: &[&str], extra: &[&str]) -> Child {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(TGT);
            c
        }
        None => Command::new(TGT),
    };
    command
        .arg("-r")
        .arg(sock)
        .arg("--interrupt-mode")
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("quorum-tgt starts")
}

/// Waits for the daemon to exit; one that does not within [`PATIENCE`] is killed before the
/// test fails, so a failing test never leaves a daemon behind.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    wait_exit_within(child, PATIENCE)
}

/// [`wait_exit`] with its own bound.
pub fn wait_exit_within(child: &mut Child, bound: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quorum-tgt did not exit within {bound:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn spdk_rpc(sock: &Path, args: &[&str]) -> Output {
    Command::new("spdk-rpc")
        .arg("-s")
        .arg(sock)
        .args(args)
        .env("PYTHONPATH", PLUGIN_DIR)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("spdk-rpc must be installed: scripts/test-all runs `python3 -m pip install spdk`")
}

/// A bare Unix-socket client that reads responses as a stream of JSON values, as SPDK's
/// client does.
pub struct Raw {
    /// The connection, for tests that shut it down half-way.
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl From<UnixStream> for Raw {
    fn from(stream: UnixStream) -> Raw {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Raw {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn call(&mut self, request: Value) -> Value {
        self.send(&serde_json::to_vec(&request).unwrap());
        self.recv()
    }

    /// The next response; fails the test on timeout or if the server closed instead.
    pub fn recv(&mut self) -> Value {
        self.try_recv().expect("server closed the connection")
    }

    pub fn try_recv(&mut self) -> Option<Value> {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return Some(value);
                }
                Some(Err(e)) if !e.is_eof() => panic!("server sent invalid JSON: {e}"),
                _ => {}
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no response: {e}"),
            }
        }
    }

    /// Asserts the server answers `code` with a null id, then closes the connection.
    pub fn expect_error_then_close(&mut self, code: i64) {
        let answer = self.recv();
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert_eq!(answer["id"], Value::Null, "{answer}");
        assert!(self.try_recv().is_none(), "connection left open");
    }
}

pub fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}
