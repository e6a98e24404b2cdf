//! The target daemon's life, as `spdk_tgt`'s: take the RPC socket, start the reactors, apply
//! the JSON config, serve RPC until SIGINT or SIGTERM, then stop RPC, stop the NBD server
//! and the vhost controllers (draining their clients' in-flight I/O), wait until no bdev has I/O in flight, flush every
//! bdev that can be flushed, unregister the bdevs (top of each stack first) and stop the
//! reactors.
//!
//! Signals are blocked in every thread and read from a signalfd by the main thread, which
//! has nothing else to do: no handler runs in async-signal context and no reactor is ever
//! interrupted.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use thiserror::Error;

use super::config::{self, ConfigError};
use super::rpc::Ctx;
use super::server::{RpcListener, ServerError};
use crate::bdev::{blocking, BdevError, BdevRegistry, IoType};
use crate::exports::{nbd, vhost_blk};
use crate::runtime::{Runtime, RuntimeOptions};

/// What the command line decided.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Reactor cores (`-m`).
    pub cores: Vec<usize>,
    /// JSON-RPC socket path (`-r`).
    pub rpc_socket: PathBuf,
    /// Config applied before RPC is served (`-c`).
    pub config: Option<PathBuf>,
    /// Reactors sleep when idle (`--interrupt-mode`); otherwise they poll, pinned to their
    /// cores.
    pub interrupt_mode: bool,
    /// Where vhost-user sockets are created (`-S`); the working directory when None.
    pub vhost_sock_dir: Option<PathBuf>,
}

/// Why the target did not start, or did not stop cleanly.
#[derive(Debug, Error)]
pub enum AppError {
    /// The RPC socket could not be taken.
    #[error(transparent)]
    Rpc(#[from] ServerError),
    /// Threads or signals could not be set up.
    #[error("{context}: {source}")]
    Os {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file failed (the message names the entry).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Some bdevs could not be flushed at shutdown: acknowledged writes may not be durable.
    #[error("flush failed at shutdown for: {0}")]
    Flush(String),
}

/// SIGINT and SIGTERM, blocked and readable from a signalfd.
struct ShutdownSignals(OwnedFd);

impl ShutdownSignals {
    /// Blocks the signals in the calling thread, and so in every thread it starts later: call
    /// before the reactors are spawned.
    fn block() -> Result<ShutdownSignals, AppError> {
        let os = |context| move |source| AppError::Os { context, source };
        // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls only read it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(os("blocking SIGINT/SIGTERM")(
                    std::io::Error::from_raw_os_error(rc),
                ));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(os("creating a signalfd")(std::io::Error::last_os_error()));
            }
            Ok(ShutdownSignals(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// Waits for SIGINT or SIGTERM; returns its number.
    fn wait(&self) -> u32 {
        loop {
            // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading into our own properly sized buffer from our own descriptor.
            let n = unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n == size as isize {
                return info.ssi_signo;
            }
        }
    }
}

/// Runs the target until a shutdown signal.
pub fn run(opts: AppOptions) -> Result<(), AppError> {
    let signals = ShutdownSignals::block()?;
    let listener = RpcListener::bind(&opts.rpc_socket)?;
    let rt = Runtime::start(RuntimeOptions {
        cores: opts.cores.clone(),
        interrupt_mode: opts.interrupt_mode,
        pin_threads: !opts.interrupt_mode,
    })
    .map_err(|source| AppError::Os {
        context: "starting the reactors",
        source,
    })?;
    if let Some(dir) = &opts.vhost_sock_dir {
        vhost_blk::set_socket_dir(&rt, dir.clone());
    }
    let ctx = Ctx { rt: rt.clone() };
    let serving = match &opts.config {
        Some(path) => config::load_file(&ctx, path).map_err(AppError::from),
        None => Ok(()),
    }
    .and_then(|()| listener.serve(ctx).map_err(AppError::from));
    let server = match serving {
        Ok(server) => server,
        Err(e) => {
            rt.stop();
            return Err(e);
        }
    };
    tracing::info!(socket = %opts.rpc_socket.display(), "quorum-tgt ready");
    let signal = signals.wait();
    tracing::info!(signal, "shutting down");
    server.stop();
    // Exports go before the flush: their in-flight writes complete and no new ones arrive.
    nbd::stop_blocking(&rt);
    vhost_blk::stop_all_blocking(&rt);
    drain_io(&rt);
    let flushed = flush_all(&rt);
    unregister_all(&rt);
    rt.stop();
    flushed
}

/// How long shutdown waits for in-flight I/O before flushing anyway.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until no bdev has I/O in flight on any reactor (or the timeout passes), so the
/// flush that follows covers every write that was acknowledged or is about to be.
fn drain_io(rt: &Runtime) {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let mut busy = 0;
        for bdev in BdevRegistry::of(rt).list() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            bdev.count_in_flight(rt, move |n| {
                let _ = tx.send(n);
            });
            busy += rx.recv().unwrap_or(0);
        }
        if busy == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(
                in_flight = busy,
                "shutdown: I/O still in flight after the drain timeout"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Flushes every bdev that supports it, stacked bdevs (registered later) first so a quorum's
/// flush reaches its children before they are flushed on their own.
fn flush_all(rt: &Runtime) -> Result<(), AppError> {
    let mut failed = Vec::new();
    for bdev in BdevRegistry::of(rt).list().iter().rev() {
        if !bdev.io_type_supported(IoType::Flush) {
            continue;
        }
        if let Err(errno) = blocking::command(rt, bdev, IoType::Flush, 0, bdev.num_blocks()) {
            let reason = std::io::Error::from_raw_os_error(errno);
            tracing::error!(bdev = bdev.name(), %reason, "flush failed at shutdown");
            failed.push(bdev.name().to_string());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(AppError::Flush(failed.join(", ")))
    }
}

/// Unregisters every bdev so modules release what they hold. A claimed bdev is retried after
/// its owner went in a later pass; passes stop when one frees nothing.
fn unregister_all(rt: &Runtime) {
    let registry = BdevRegistry::of(rt);
    loop {
        let remaining = registry.list();
        let mut progressed = false;
        for bdev in remaining.iter().rev() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            registry.unregister(rt, bdev.name(), None, move |r| {
                let _ = tx.send(r);
            });
            match rx.recv() {
                Ok(Ok(())) => progressed = true,
                Ok(Err(BdevError::Claimed { .. })) => {}
                Ok(Err(e)) => tracing::warn!(bdev = bdev.name(), error = %e, "cannot unregister"),
                Err(_) => return,
            }
        }
        if !progressed || registry.list().is_empty() {
            return;
        }
    }
}
