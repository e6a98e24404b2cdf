//! vhost-user-blk controllers: the runtime's table of them, and each one's life. A
//! controller owns a listening socket `<vhost-sock-dir>/<ctrlr>` and one thread that
//! carries the vhost-user protocol (accept, then rust-vmm's request loop for one frontend at
//! a time, as SPDK serves one session per socket); its rings run on the reactors of its
//! cpumask. Delete (or the exported bdev going away) closes the socket, drains the rings and
//! answers once the thread is gone; a frontend that disconnects is waited for again, so a
//! restarted QEMU or libblkio client reconnects.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use thiserror::Error;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use super::device::Device;
use super::virtio_blk::Geometry;
use crate::bdev::{Bdev, BdevError, BdevRegistry, IoType};
use crate::exports::gate::Gate;
use crate::exports::socket::remove_stale_socket;
use crate::runtime::cpumask::{format_cpumask, parse_cpumask};
use crate::runtime::Runtime;

/// Why a vhost control call was refused; each maps to SPDK's negative-errno RPC codes.
#[derive(Debug, Error)]
pub enum VhostError {
    /// The controller name is taken.
    #[error("vhost controller '{0}' already exists")]
    Exists(String),
    /// No controller by that name.
    #[error("vhost controller '{0}' not found")]
    NotFound(String),
    /// The bdev could not be exported.
    #[error(transparent)]
    Bdev(#[from] BdevError),
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// The socket or the thread could not be set up.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl VhostError {
    /// The positive errno SPDK would report.
    pub fn errno(&self) -> i32 {
        match self {
            VhostError::Exists(_) => libc::EEXIST,
            VhostError::NotFound(_) => libc::ENODEV,
            VhostError::Bdev(e) => e.errno(),
            VhostError::Invalid(_) => libc::EINVAL,
            VhostError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// What the controller's thread, its device and its rings share.
pub(super) struct ControllerShared {
    pub(super) name: String,
    pub(super) bdev: Arc<Bdev>,
    pub(super) read_only: bool,
    /// Reactor indices of the cpumask; ring i runs on `reactors[i % len]`.
    pub(super) reactors: Vec<usize>,
    pub(super) rt: Runtime,
    socket: PathBuf,
    connected: AtomicBool,
}

impl ControllerShared {
    /// What the guest sees of the bdev.
    pub(super) fn geometry(&self) -> Geometry {
        let b = &self.bdev;
        Geometry {
            block_size: b.block_size(),
            num_blocks: b.num_blocks(),
            read_only: self.read_only,
            flush: b.io_type_supported(IoType::Flush),
            discard: b.io_type_supported(IoType::Unmap),
            write_zeroes: b.io_type_supported(IoType::WriteZeroes),
        }
    }
}

/// How delete reaches the controller's thread, wherever it blocks: an eventfd for the
/// accept wait, a shutdown of the connection for rust-vmm's blocking request read.
#[derive(Default)]
struct Stopper {
    requested: AtomicBool,
    wake: Mutex<Option<OwnedFd>>,
    conn: Mutex<Option<UnixStream>>,
    /// The thread holds the only ticket: closing the gate waits for the thread to finish.
    life: Arc<Gate>,
}

impl Stopper {
    /// Asks the thread to finish; `done` runs once it has (its rings drained, socket gone).
    fn request(&self, done: impl FnOnce() + Send + 'static) {
        self.requested.store(true, Ordering::Release);
        if let Some(fd) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a u64 to our own eventfd.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        if let Some(conn) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        self.life.close(done);
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

/// A controller in the table.
pub struct Controller {
    shared: Arc<ControllerShared>,
    cpumask: String,
    stopper: Arc<Stopper>,
    remove_key: Mutex<Option<u64>>,
}

impl Controller {
    fn info_json(&self) -> Value {
        let s = &self.shared;
        let sessions: Vec<Value> = if s.connected.load(Ordering::Acquire) {
            vec![json!({"name": format!("{}s0", s.name), "started": true})]
        } else {
            Vec::new()
        };
        json!({
            "ctrlr": s.name,
            "cpumask": self.cpumask,
            "delay_base_us": 0,
            "iops_threshold": 60000,
            "socket": s.socket.display().to_string(),
            "sessions": sessions,
            "backend_specific": {"block": {
                "readonly": s.read_only,
                "bdev": s.bdev.name(),
                "transport": "vhost_user_blk",
            }},
        })
    }
}

#[derive(Default)]
struct Inner {
    socket_dir: Option<PathBuf>,
    /// In creation order, for `save_config`.
    controllers: Vec<Arc<Controller>>,
}

/// The runtime's vhost state (a [`Runtime::context`]).
#[derive(Default)]
pub struct VhostContext {
    inner: Mutex<Inner>,
}

impl VhostContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets where controller sockets are created (`-S`); the working directory otherwise.
pub fn set_socket_dir(rt: &Runtime, dir: PathBuf) {
    rt.context::<VhostContext>().lock().socket_dir = Some(dir);
}

/// The reactor indices of `cpumask` (default: every reactor); refused when it names a core
/// without a reactor.
fn reactors_of(rt: &Runtime, cpumask: Option<&str>) -> Result<Vec<usize>, VhostError> {
    let all: Vec<usize> = (0..rt.num_reactors()).collect();
    let Some(mask) = cpumask else {
        return Ok(all);
    };
    let cores = parse_cpumask(mask).map_err(|e| VhostError::Invalid(e.to_string()))?;
    cores
        .iter()
        .map(|&core| {
            all.iter()
                .copied()
                .find(|&i| rt.core_of(i) == core)
                .ok_or_else(|| {
                    VhostError::Invalid(format!(
                        "cpumask {mask}: core {core} is not one of the target's reactors"
                    ))
                })
        })
        .collect()
}

/// Creates controller `name` exporting `bdev_name` (SPDK's `vhost_create_blk_controller`).
pub fn create_controller(
    rt: &Runtime,
    name: &str,
    bdev_name: &str,
    cpumask: Option<&str>,
    read_only: bool,
) -> Result<(), VhostError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(VhostError::Invalid(format!(
            "invalid controller name '{name}' (a file name: no '/', not '.' or '..')"
        )));
    }
    let bdev = BdevRegistry::of(rt).get(bdev_name)?;
    let reactors = reactors_of(rt, cpumask)?;
    let ctx = rt.context::<VhostContext>();
    let mut inner = ctx.lock();
    if inner.controllers.iter().any(|c| c.shared.name == name) {
        return Err(VhostError::Exists(name.to_string()));
    }
    let socket = inner
        .socket_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(name);
    let io = |context: String| move |source| VhostError::Io { context, source };
    let shown = socket.display().to_string();
    remove_stale_socket(&socket).map_err(io(format!("cannot listen on {shown}")))?;
    let listener = UnixListener::bind(&socket).map_err(io(format!("cannot listen on {shown}")))?;
    // SAFETY: plain syscall; the descriptor is owned by the OwnedFd.
    let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if wake < 0 {
        let _ = std::fs::remove_file(&socket);
        return Err(io("cannot create an eventfd".into())(
            std::io::Error::last_os_error(),
        ));
    }
    let stopper = Arc::new(Stopper {
        // SAFETY: `wake` is a fresh descriptor nobody else owns.
        wake: Mutex::new(Some(unsafe { OwnedFd::from_raw_fd(wake) })),
        ..Default::default()
    });
    let ticket = stopper.life.enter();
    let shared = Arc::new(ControllerShared {
        name: name.to_string(),
        bdev,
        read_only,
        reactors,
        rt: rt.clone(),
        socket,
        connected: AtomicBool::new(false),
    });
    let cores: Vec<usize> = shared.reactors.iter().map(|&i| rt.core_of(i)).collect();
    let controller = Arc::new(Controller {
        shared: shared.clone(),
        cpumask: format_cpumask(&cores),
        stopper: stopper.clone(),
        remove_key: Mutex::new(None),
    });
    let thread = {
        let (shared, stopper) = (shared.clone(), stopper.clone());
        std::thread::Builder::new()
            .name(format!("vhost_{name}"))
            .spawn(move || {
                let _alive = ticket;
                serve(shared, listener, stopper)
            })
    };
    if let Err(source) = thread {
        let _ = std::fs::remove_file(&shared.socket);
        return Err(VhostError::Io {
            context: "cannot start the controller thread".into(),
            source,
        });
    }
    inner.controllers.push(controller.clone());
    drop(inner);
    // The bdev going away (hot-remove, or deleted underneath) deletes the controller.
    let rt2 = rt.clone();
    let gone = name.to_string();
    let key = shared.bdev.subscribe_remove(move |_| {
        tracing::warn!(ctrlr = %gone, "exported bdev removed; deleting the vhost controller");
        delete_controller(&rt2, &gone, |_| {});
    });
    *controller
        .remove_key
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(key);
    tracing::info!(ctrlr = name, bdev = bdev_name, socket = %shown, read_only, "vhost-user-blk controller created");
    Ok(())
}

/// Waits until `fd` is readable or the stopper's eventfd fires; false when stopping.
fn wait_readable(fd: &impl AsFd, stopper: &Stopper) -> bool {
    let wake = stopper
        .wake
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(-1, |w| w.as_raw_fd());
    loop {
        if stopper.requested() {
            return false;
        }
        let mut fds = [
            libc::pollfd {
                fd: fd.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n > 0 && fds[0].revents != 0 && !stopper.requested() {
            return true;
        }
    }
}

/// The controller's thread: one frontend at a time until delete.
fn serve(shared: Arc<ControllerShared>, listener: UnixListener, stopper: Arc<Stopper>) {
    while wait_readable(&listener, &stopper) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(ctrlr = %shared.name, error = %e, "vhost accept failed");
                continue;
            }
        };
        *stopper.conn.lock().unwrap_or_else(|e| e.into_inner()) = stream.try_clone().ok();
        if stopper.requested() {
            break;
        }
        shared.connected.store(true, Ordering::Release);
        tracing::info!(ctrlr = %shared.name, "vhost-user frontend connected");
        let device = Arc::new(Mutex::new(Device::new(shared.clone())));
        let mut handler = BackendReqHandler::from_stream(stream, device.clone());
        let why = loop {
            match handler.handle_request() {
                Ok(()) => {}
                Err(e) => break e,
            }
        };
        match why {
            VuError::Disconnected | VuError::PartialMessage | VuError::SocketBroken(_)
                if !stopper.requested() =>
            {
                tracing::info!(ctrlr = %shared.name, "vhost-user frontend disconnected")
            }
            _ if stopper.requested() => {}
            e => {
                tracing::warn!(ctrlr = %shared.name, error = %e, "vhost-user protocol error; connection closed")
            }
        }
        drop(handler);
        device.lock().unwrap_or_else(|e| e.into_inner()).stop_all();
        *stopper.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        shared.connected.store(false, Ordering::Release);
    }
    drop(listener);
    let _ = std::fs::remove_file(&shared.socket);
    tracing::info!(ctrlr = %shared.name, "vhost-user-blk controller deleted");
}

/// Deletes controller `name`: its socket closes, its frontend is cut off once the rings
/// drained, and `done` runs when all of that happened (on the controller's thread).
pub fn delete_controller(
    rt: &Runtime,
    name: &str,
    done: impl FnOnce(Result<(), VhostError>) + Send + 'static,
) {
    let ctx = rt.context::<VhostContext>();
    let controller = {
        let mut inner = ctx.lock();
        let Some(pos) = inner.controllers.iter().position(|c| c.shared.name == name) else {
            drop(inner);
            return done(Err(VhostError::NotFound(name.to_string())));
        };
        inner.controllers.remove(pos)
    };
    if let Some(key) = controller
        .remove_key
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        controller.shared.bdev.unsubscribe_remove(key);
    }
    controller.stopper.request(move || done(Ok(())));
}

/// Deletes every controller and waits (target shutdown), from outside the reactors.
pub fn stop_all_blocking(rt: &Runtime) {
    let names: Vec<String> = rt
        .context::<VhostContext>()
        .lock()
        .controllers
        .iter()
        .map(|c| c.shared.name.clone())
        .collect();
    for name in names {
        let (tx, rx) = crossbeam_channel::bounded(1);
        delete_controller(rt, &name, move |r| {
            let _ = tx.send(r);
        });
        let _ = rx.recv();
    }
}

/// `vhost_get_controllers`: every controller (or the one called `name`), SPDK's shape.
pub fn controllers_json(rt: &Runtime, name: Option<&str>) -> Result<Value, VhostError> {
    let ctx = rt.context::<VhostContext>();
    let inner = ctx.lock();
    let list: Vec<Value> = inner
        .controllers
        .iter()
        .filter(|c| name.is_none_or(|n| n == c.shared.name))
        .map(|c| c.info_json())
        .collect();
    match name {
        Some(n) if list.is_empty() => Err(VhostError::NotFound(n.to_string())),
        _ => Ok(json!(list)),
    }
}

/// The `save_config` entries of the vhost_blk subsystem, one per controller.
pub fn config_entries(rt: &Runtime) -> Vec<Value> {
    let ctx = rt.context::<VhostContext>();
    let inner = ctx.lock();
    inner
        .controllers
        .iter()
        .map(|c| {
            json!({"method": "vhost_create_blk_controller", "params": {
                "ctrlr": c.shared.name,
                "dev_name": c.shared.bdev.name(),
                "cpumask": c.cpumask,
                "readonly": c.shared.read_only,
            }})
        })
        .collect()
}

/// The socket path of controller `name`, for tests and tools.
pub fn socket_path(rt: &Runtime, name: &str) -> Option<PathBuf> {
    let ctx = rt.context::<VhostContext>();
    let inner = ctx.lock();
    inner
        .controllers
        .iter()
        .find(|c| c.shared.name == name)
        .map(|c| c.shared.socket.clone())
}
