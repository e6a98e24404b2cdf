//! The target daemon's life, as `spdk_tgt`'s: take the RPC socket, start the reactors, apply
//! the JSON config, serve RPC until SIGINT or SIGTERM, then stop RPC, stop the NBD server
//! and the vhost controllers (draining their clients' in-flight I/O), wait until no bdev has
//! I/O in flight, flush every bdev that can be flushed, unregister the bdevs (top of each stack first) and stop the
//! reactors. Draining and flushing each wait at most the shutdown bound, whatever the
//! children do (a hung child never answers); what was left is logged and makes the exit
//! status a failure.
//!
//! Signals are blocked in every thread and read from a signalfd by the main thread, which
//! has nothing else to do: no handler runs in async-signal context and no reactor is ever
//! interrupted.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::config::{self, ConfigError};
use super::rpc::Ctx;
use super::server::{RpcListener, RpcServer, ServerError, SocketAccess};
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
    /// Who may connect to the RPC socket (`--rpc-group-access`).
    pub rpc_access: SocketAccess,
    /// Config applied before RPC is served (`-c`).
    pub config: Option<PathBuf>,
    /// Reactors sleep when idle (`--interrupt-mode`); otherwise they poll, pinned to their
    /// cores.
    pub interrupt_mode: bool,
    /// Where vhost-user sockets are created (`-S`); the working directory when None.
    pub vhost_sock_dir: Option<PathBuf>,
    /// How long shutdown waits for in-flight I/O to drain, and then again for the final
    /// flush (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
}

/// How long shutdown waits for in-flight I/O by default (`--shutdown-timeout`): long enough
/// for a slow disk, short enough that a service manager need not kill the daemon.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Shutdown reached its bound with work left: I/O abandoned in flight (never
    /// acknowledged), or bdevs whose flush failed or did not finish (acknowledged writes may
    /// not be durable on them).
    #[error("shutdown incomplete: {0}")]
    Incomplete(String),
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
    let listener = RpcListener::bind(&opts.rpc_socket, opts.rpc_access)?;
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
    let outcome = shut_down(&rt, server, opts.shutdown_timeout);
    rt.stop();
    outcome
}

/// Stops serving and leaves the bdevs durable: RPC stops first so no new request arrives,
/// then [`wind_down`].
fn shut_down(rt: &Runtime, server: RpcServer, bound: Duration) -> Result<(), AppError> {
    server.stop();
    wind_down(rt, bound)
}

/// Everything shutdown does once RPC stopped: NBD and the vhost controllers stop so no new
/// I/O arrives (a vhost ring drains before it stops), in-flight I/O
/// drains, every bdev is flushed, then the bdevs are unregistered. Draining and flushing each
/// wait `bound` at most; what they leave is logged and reported. The fuzz fixtures end every
/// input with it, so what an input built goes through a real shutdown.
pub(crate) fn wind_down(rt: &Runtime, bound: Duration) -> Result<(), AppError> {
    let drain_deadline = Instant::now() + bound;
    // Exports go before the flush: their in-flight writes complete and no new ones arrive.
    let mut abandoned = nbd::stop_blocking(rt, drain_deadline);
    vhost_blk::stop_all_blocking(rt);
    abandoned.extend(drain_io(rt, drain_deadline));
    for what in &abandoned {
        tracing::warn!(%what, "shutdown: abandoned after {} s", bound.as_secs_f64());
    }
    let unflushed = flush_all(rt, Instant::now() + bound);
    unregister_all(rt);
    let mut left = Vec::new();
    if !abandoned.is_empty() {
        left.push(format!("abandoned {}", abandoned.join(", ")));
    }
    if !unflushed.is_empty() {
        left.push(format!("not flushed: {}", unflushed.join(", ")));
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(AppError::Incomplete(left.join("; ")))
    }
}

/// Waits until no bdev has I/O in flight on any reactor, so the flush that follows covers
/// every write that was acknowledged or is about to be. At `deadline` it gives up and
/// returns the bdevs still busy ("Q: 1 I/O in flight").
fn drain_io(rt: &Runtime, deadline: Instant) -> Vec<String> {
    loop {
        let mut busy = Vec::new();
        for bdev in BdevRegistry::of(rt).list() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            bdev.count_in_flight(rt, move |n| {
                let _ = tx.send(n);
            });
            match rx.recv().unwrap_or(0) {
                0 => {}
                n => busy.push(format!("{}: {n} I/O in flight", bdev.name())),
            }
        }
        if busy.is_empty() || Instant::now() >= deadline {
            return busy;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Flushes every bdev that supports it, all at once (a flush covers every write completed
/// before it, and draining finished those), so a child that never answers delays no other
/// bdev's flush. Waits until `deadline` at most; returns the bdevs whose flush failed or did
/// not finish.
fn flush_all(rt: &Runtime, deadline: Instant) -> Vec<String> {
    let pending: Vec<_> = BdevRegistry::of(rt)
        .list()
        .into_iter()
        .filter(|bdev| bdev.io_type_supported(IoType::Flush))
        .map(|bdev| {
            let flush = blocking::submit(rt, 0, &bdev, IoType::Flush, 0, bdev.num_blocks(), &[]);
            (bdev, flush)
        })
        .collect();
    let mut failed = Vec::new();
    for (bdev, flush) in pending {
        let reason = match flush.wait_until(deadline) {
            Some(Ok(_)) => continue,
            Some(Err(errno)) => std::io::Error::from_raw_os_error(errno).to_string(),
            None => "no answer before the shutdown bound".to_string(),
        };
        tracing::error!(bdev = bdev.name(), %reason, "flush failed at shutdown");
        failed.push(format!("{} ({reason})", bdev.name()));
    }
    failed
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
