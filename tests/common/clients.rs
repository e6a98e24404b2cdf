//! The real command-line clients the tests drive (qemu-io, fio, nbdinfo, nbdsh...), run with
//! a time bound so a hung client fails the test instead of hanging it, and the NBD URIs and
//! ports they are pointed at.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

/// Seconds a client command may take before the test fails instead of hanging.
pub const CLIENT_TIMEOUT: &str = "60";

/// The NBD URI of `export` on the Unix socket `sock`.
pub fn unix_uri(sock: &Path, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", sock.display())
}

/// Runs a client under `timeout`, returning its output. The system's directories come first
/// in PATH: nbdsh runs `python3 -m nbd`, and the `nbd` module is installed for the system's
/// Python (Debian's python3-libnbd), not for a Python a developer may have put first.
pub fn client(program: &str, args: &[&str]) -> Output {
    let path = format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    // Outside the source tree: fio, for one, leaves state files in its working directory.
    Command::new("timeout")
        .arg(CLIENT_TIMEOUT)
        .arg(program)
        .args(args)
        .env("PATH", path)
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test-all): {e}"))
}

/// Runs a client that must succeed; returns its stdout.
pub fn client_ok(program: &str, args: &[&str]) -> String {
    let out = client(program, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// qemu-io commands against `uri`; each must succeed and verify its pattern.
pub fn qemu_io(uri: &str, commands: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(uri);
    let out = client_ok("qemu-io", &args);
    for bad in ["Pattern verification failed", "failed:", "error"] {
        assert!(!out.contains(bad), "qemu-io {commands:?}: {out}");
    }
    out
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
