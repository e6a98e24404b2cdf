//! A real QEMU VM on the vhost-user-blk export: Debian's QEMU 7.2 (TCG) boots the Debian cloud
//! kernel with a busybox + fio initramfs (`scripts/vm-image` builds them into target/vm),
//! whose /dev/vda is a quorum of three file-backed children, the third corrupting every read.
//! In the guest: a dd pattern round trip and fio's crc32c verify (no bad byte reaches the
//! guest), then a loop of writes and read-backs during which the daemon is stopped and
//! started again on its saved config while the guest keeps running (QEMU reconnects).
//! A second VM runs fio's write+verify on a quorum with a slow child while the daemon is
//! killed (SIGKILL) with requests in flight and started again: the inflight record QEMU
//! kept (INFLIGHT_SHMFD) makes the new daemon resubmit them, and fio verifies every block.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::target::Target;

/// How long the guest may take for one step under TCG on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(240);

const GUEST_SCRIPT: &str = r#"set -e
dd if=/dev/urandom of=/tmp/p bs=64k count=16 2>/dev/null
dd if=/tmp/p of=/dev/vda bs=64k conv=fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/r bs=64k count=16 2>/dev/null
cmp /tmp/p /tmp/r
echo DD-OK
fio --name=v --filename=/dev/vda --offset=4M --rw=randwrite --bs=4k --size=8M --ioengine=psync \
    --direct=1 --verify=crc32c --do_verify=1 --output-format=terse >/tmp/fio.out
echo FIO-OK
echo WAITING
read go
i=0
while [ $i -lt 60 ]; do
    dd if=/dev/urandom of=/tmp/q bs=64k count=4 2>/dev/null
    dd if=/tmp/q of=/dev/vda bs=64k seek=$((32 + i * 4)) conv=fsync 2>/dev/null
    echo 3 > /proc/sys/vm/drop_caches
    dd if=/dev/vda of=/tmp/s bs=64k skip=$((32 + i * 4)) count=4 2>/dev/null
    cmp /tmp/q /tmp/s
    i=$((i + 1))
done
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/r bs=64k count=16 2>/dev/null
cmp /tmp/p /tmp/r
echo LOOP-OK
"#;

/// fio's mixed reads and writes with a verify of every block written, at queue depth 16
/// (the daemon is killed during it).
const KILL_SCRIPT: &str = r#"set -e
echo FIO-START
fio --name=k --filename=/dev/vda --rw=randrw --bs=4k --size=2M --ioengine=libaio \
    --iodepth=16 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --output-format=terse >/tmp/fio.out
echo "FIO-ERRORS $(cut -d';' -f5 /tmp/fio.out)"
echo FIO-OK
"#;

/// Three 64 MiB file children (the first behind a delay bdev holding each write
/// `write_delay_us`, 0: none), a quorum `Q` over them, the third corrupting every read,
/// exported as controller `vq`.
fn quorum_script(dir: &Path, write_delay_us: u64) -> String {
    let mut script = String::new();
    for i in 0..3 {
        let f = dir.join(format!("c{i}.raw"));
        std::fs::File::create(&f)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        script += &format!("bdev_aio_create {} A{i} 512\n", f.display());
    }
    let first = if write_delay_us > 0 {
        let w = write_delay_us;
        script += &format!("bdev_delay_create -b A0 -d D0 -r 0 -t 0 -w {w} -n {w}\n");
        "D0"
    } else {
        "A0"
    };
    script += "bdev_error_create A2\n\
               bdev_error_inject_error EE_A2 read corrupt_data -n 100000000 -o 10 -v 255\n";
    script += &format!("bdev_quorum_create -b Q -t 2 {first} A1 EE_A2\n");
    script += "vhost_create_blk_controller vq Q\n";
    script
}

/// Writes `script` where the guest reads it (a raw disk of 64 KiB) and boots the VM on the
/// target's controller `vq`.
fn boot_with(t: &Target, script: &str) -> (Vm, ChildStdin, Receiver<String>) {
    let vm_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm");
    let guest = t.dir.path().join("guest.sh");
    let mut bytes = script.as_bytes().to_vec();
    bytes.resize(64 << 10, 0);
    std::fs::write(&guest, bytes).unwrap();
    boot(&vm_dir, &t.dir.path().join("vq"), &guest)
}

/// QEMU, killed if the test ends early.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot(vm_dir: &Path, sock: &Path, script: &Path) -> (Vm, ChildStdin, Receiver<String>) {
    let qemu = vm_dir.join("qemu");
    let lib = qemu.join("usr/lib/x86_64-linux-gnu");
    assert!(
        vm_dir.join("initramfs.cpio.gz").exists(),
        "VM assets missing: run scripts/vm-image (scripts/test-all does)"
    );
    let mut child = Command::new(qemu.join("usr/bin/qemu-system-x86_64"))
        .env("LD_LIBRARY_PATH", &lib)
        .env("QEMU_MODULE_DIR", lib.join("qemu"))
        .arg("-L")
        .arg(qemu.join("usr/share/qemu"))
        .arg("-L")
        .arg(qemu.join("usr/share/seabios"))
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-nographic", "-serial", "stdio", "-no-reboot"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-kernel")
        .arg(vm_dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(vm_dir.join("initramfs.cpio.gz"))
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-chardev")
        .arg(format!("socket,id=c0,path={},reconnect=1", sock.display()))
        .args([
            "-device",
            "vhost-user-blk-pci,chardev=c0,num-queues=2,addr=0x4",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=s,format=raw,readonly=on",
            script.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=s,addr=0x5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("QEMU from target/vm starts");
    let stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    (Vm(child), stdin, rx)
}

/// Waits for a console line containing `marker`; fails on a guest error or the deadline.
fn expect(rx: &Receiver<String>, marker: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(marker);
                let ended = line.contains("GUEST-EXIT");
                seen.push(line);
                if found {
                    return;
                }
                assert!(
                    !ended,
                    "guest script ended before {marker}:\n{}",
                    seen.join("\n")
                );
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                panic!("no {marker} from the guest:\n{}", seen.join("\n"))
            }
        }
    }
}

/// The daemon on one core with its sockets in a fresh directory, serving
/// [`quorum_script`]; returns it and its saved config.
fn quorum_target(write_delay_us: u64) -> (Target, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = quorum_script(dir.path(), write_delay_us);
    let sock_dir = dir.path().to_str().unwrap().to_string();
    let t = Target::start_in(dir, &["-m", "0x1", "-S", &sock_dir]);
    t.rpc_script(&script);
    let config = t.rpc_ok(&["save_config"]);
    (t, config)
}

/// Ends the daemon with `signal` and starts a new one in the same directory on `config`
/// (the guest's socket path stays the same); returns how the old one ended and the new one.
fn restart(t: Target, signal: i32, config: String) -> (std::process::ExitStatus, Target) {
    let (status, dir) = t.signal(signal);
    let sock_dir = dir.path().to_str().unwrap().to_string();
    let cfg = dir.path().join("saved.json");
    std::fs::write(&cfg, config).unwrap();
    let extra = ["-m", "0x1", "-S", &sock_dir, "-c", cfg.to_str().unwrap()];
    (status, Target::start_in(dir, &extra))
}

#[test]
fn a_qemu_vm_verifies_data_on_a_corrupting_quorum_and_survives_a_daemon_restart() {
    let (t, config) = quorum_target(0);

    let (_vm, mut console, rx) = boot_with(&t, GUEST_SCRIPT);
    let mut seen = Vec::new();
    expect(&rx, "GUEST-BOOTED", &mut seen);
    expect(&rx, "DD-OK", &mut seen);
    expect(&rx, "FIO-OK", &mut seen);
    expect(&rx, "WAITING", &mut seen);
    let events = t.rpc_ok(&["--plugin", "quorum_rpc_plugin", "bdev_quorum_get_events"]);
    assert!(
        events.contains("EE_A2"),
        "the corrupting child was outvoted: {events}"
    );

    // The guest starts its write/read loop; the daemon stops (draining) and comes back on
    // its saved config while the loop runs.
    console.write_all(b"go\n").unwrap();
    console.flush().unwrap();
    let (status, t) = restart(t, libc::SIGTERM, config);
    assert!(status.success(), "clean shutdown with a guest attached");
    expect(&rx, "LOOP-OK", &mut seen);
    expect(&rx, "GUEST-EXIT 0", &mut seen);
    let ctrls = t.rpc_json(&["vhost_get_controllers"]);
    assert_eq!(ctrls[0]["ctrlr"], "vq");
}

/// Completed writes on quorum `Q`.
fn writes_done(t: &Target) -> u64 {
    let stat = t.rpc_json(&["bdev_get_iostat"]);
    let bdevs = stat["bdevs"].as_array().cloned().unwrap_or_default();
    let q = bdevs.iter().find(|b| b["name"] == "Q");
    q.and_then(|b| b["num_write_ops"].as_u64()).unwrap_or(0)
}

#[test]
fn a_daemon_killed_with_requests_in_flight_resubmits_them_after_qemu_reconnects() {
    // Each write waits 200 ms on the delayed child, reads do not: when the daemon dies,
    // writes taken before reads that completed are still in flight, so the heads to
    // resubmit are not the avail ring's entries from the used index on (what QEMU alone
    // would restart from without the inflight record).
    let (t, config) = quorum_target(200_000);

    let (_vm, _console, rx) = boot_with(&t, KILL_SCRIPT);
    let mut seen = Vec::new();
    expect(&rx, "FIO-START", &mut seen);
    common::wait_until("the guest's fio to write", || writes_done(&t) >= 32);
    let (status, t) = restart(t, libc::SIGKILL, config);
    assert!(!status.success(), "killed");
    expect(&rx, "FIO-ERRORS 0", &mut seen);
    expect(&rx, "FIO-OK", &mut seen);
    expect(&rx, "GUEST-EXIT 0", &mut seen);
    let log = t.stderr();
    assert!(
        log.contains("resubmitting the requests in flight"),
        "the new daemon found requests in flight to resubmit:\n{log}"
    );
}
