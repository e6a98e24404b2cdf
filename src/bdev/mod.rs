//! The bdev layer: named block devices, their per-reactor channels, pooled I/O descriptors,
//! claims, hot-remove and statistics. Modules implement [`BdevBackend`]; users open a bdev
//! and submit [`IoHandle`]s on an [`IoChannel`].

pub mod blocking;
pub mod channel;
mod completion;
mod graph;
pub mod io;
mod io_type;
mod layer;
pub mod notify;
pub mod registry;
pub mod stats;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use thiserror::Error;
use uuid::Uuid;

pub use channel::IoChannel;
pub use io::{BdevIo, DeferredWork, IoBuf, IoDone, IoHandle};
pub use io_type::IoType;
pub use registry::BdevRegistry;
pub use stats::IoStats;

use crate::runtime::channel::{self as rchannel, DeviceId};
use crate::runtime::Runtime;

/// Why a bdev operation was refused. Each maps to the negative errno SPDK's RPCs return.
#[derive(Debug, Error)]
pub enum BdevError {
    /// No bdev by that name.
    #[error("bdev '{0}' not found")]
    NotFound(String),
    /// The name is taken.
    #[error("bdev '{0}' already exists")]
    Exists(String),
    /// Claimed by a module (a quorum, an error bdev...) and so not available.
    #[error("bdev '{name}' is claimed by {owner}")]
    Claimed {
        /// The bdev.
        name: String,
        /// Who holds the claim.
        owner: String,
    },
    /// The request makes no sense for this bdev.
    #[error("{0}")]
    Invalid(String),
    /// Stacking would make a bdev its own base, directly or through others; the path is the
    /// loop it would close, each bdev followed by one of its bases ("C1 -> C2 -> C1").
    #[error("bdev graph loop: {path}")]
    Loop {
        /// The loop, from the bdev being stacked back to itself.
        path: String,
    },
    /// An operating-system error (opening a file, a ring...).
    #[error("{context}: {source}")]
    Os {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BdevError {
    /// The positive errno SPDK would report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            BdevError::NotFound(_) => libc::ENODEV,
            BdevError::Exists(_) => libc::EEXIST,
            BdevError::Claimed { .. } => libc::EBUSY,
            BdevError::Invalid(_) | BdevError::Loop { .. } => libc::EINVAL,
            BdevError::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// A module's per-reactor submission object.
pub trait BdevChannel {
    /// Serves one validated I/O; must eventually call [`IoHandle::complete`] on it.
    fn submit(&self, io: IoHandle);

    /// Lets stacked modules reach their own channel type.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What a bdev module provides for each bdev it creates.
pub trait BdevBackend: Send + Sync + 'static {
    /// SPDK's `product_name` ("Malloc disk", "Null disk"...).
    fn product_name(&self) -> &'static str;

    /// Which I/O types this bdev serves; others fail with ENOTSUP before reaching it.
    fn io_type_supported(&self, io_type: IoType) -> bool;

    /// Creates the calling reactor's channel.
    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError>;

    /// `driver_specific` of `bdev_get_bdevs`.
    fn driver_specific(&self) -> Value {
        json!({})
    }

    /// The RPC call (method, params) that recreates this bdev, for `save_config`; None for
    /// bdevs that another call creates implicitly.
    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)>;

    /// Whether reads return what was written; false for null, so verify expects zeroes.
    fn retains_data(&self) -> bool {
        true
    }

    /// Releases what the bdev holds (base claims, files) once it is unregistered and no
    /// reactor holds a channel any more.
    fn destruct(&self) {}
}

type RemoveListener = Box<dyn Fn(&str) + Send + Sync>;

/// Who holds a bdev: the module, and the bdev it stacks on top (which may not be registered
/// yet while it is being built). Naming the bdev on top is what makes the graph walkable
/// upwards, so the layer can refuse a loop (see [`BdevRegistry::claim_base`]).
#[derive(Debug, Clone)]
struct Claim {
    module: String,
    by: String,
}

/// A registered block device.
pub struct Bdev {
    name: String,
    uuid: Uuid,
    block_size: u32,
    num_blocks: u64,
    dev: DeviceId,
    backend: Box<dyn BdevBackend>,
    supported: [bool; IoType::ALL.len()],
    claim: Mutex<Option<Claim>>,
    retired: Mutex<IoStats>,
    listeners: Mutex<Vec<(u64, RemoveListener)>>,
    next_listener: AtomicU64,
    removed: AtomicBool,
}

/// Smallest block size: SPDK's modules take multiples of 512.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size: SPDK's largest bdev data buffer (`SPDK_BDEV_LARGE_BUF_MAX_SIZE`), and
/// the largest minimum block size an NBD server may announce.
pub const MAX_BLOCK_SIZE: u32 = 64 << 10;

/// Geometry and identity of a bdev being created.
#[derive(Debug, Clone)]
pub struct BdevSpec {
    /// Unique name.
    pub name: String,
    /// Block size in bytes: a multiple of 512 from [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
    pub block_size: u32,
    /// Size in blocks.
    pub num_blocks: u64,
    /// Identity; a random one when None.
    pub uuid: Option<Uuid>,
}

impl BdevSpec {
    /// Checks the geometry, so modules can refuse before allocating anything: the block size
    /// in SPDK's range, and a size in bytes that fits a file offset (`off_t`) and the signed
    /// 64-bit sizes QEMU and libnbd use, so no size computation above can overflow.
    pub fn validate(&self) -> Result<(), BdevError> {
        if self.name.is_empty() {
            return Err(BdevError::Invalid("bdev name must not be empty".into()));
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size)
            || !self.block_size.is_multiple_of(512)
        {
            return Err(BdevError::Invalid(format!(
                "block_size {} is not a multiple of 512 from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}",
                self.block_size
            )));
        }
        if self.num_blocks == 0 {
            return Err(BdevError::Invalid(
                "num_blocks must be greater than 0".into(),
            ));
        }
        let bytes = self.num_blocks.checked_mul(self.block_size as u64);
        if bytes.is_none_or(|b| b > i64::MAX as u64) {
            return Err(BdevError::Invalid(format!(
                "num_blocks {} of {} bytes is more than {} bytes, the largest size a block \
                 device can have",
                self.num_blocks,
                self.block_size,
                i64::MAX
            )));
        }
        Ok(())
    }
}

impl Bdev {
    /// Builds an unregistered bdev; [`BdevRegistry::register`] makes it visible.
    pub fn new(spec: BdevSpec, backend: Box<dyn BdevBackend>) -> Result<Bdev, BdevError> {
        spec.validate()?;
        let supported = IoType::ALL.map(|t| backend.io_type_supported(t));
        Ok(Bdev {
            name: spec.name,
            uuid: spec.uuid.unwrap_or_else(Uuid::new_v4),
            block_size: spec.block_size,
            num_blocks: spec.num_blocks,
            dev: DeviceId::new(),
            backend,
            supported,
            claim: Mutex::new(None),
            retired: Mutex::new(IoStats::default()),
            listeners: Mutex::new(Vec::new()),
            next_listener: AtomicU64::new(1),
            removed: AtomicBool::new(false),
        })
    }

    /// Unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Identity.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Size in blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * self.block_size as u64
    }

    /// Whether the bdev serves `io_type`, as its module said when it was registered (cached:
    /// asked on every I/O).
    pub fn io_type_supported(&self, io_type: IoType) -> bool {
        self.supported[io_type.index()]
    }

    /// The module's object, for modules that need their own type back.
    pub fn backend(&self) -> &dyn BdevBackend {
        self.backend.as_ref()
    }

    /// Whether reads return written data (see [`BdevBackend::retains_data`]).
    pub fn retains_data(&self) -> bool {
        self.backend.retains_data()
    }

    /// The calling reactor's channel to this bdev, created on first use.
    pub fn io_channel(self: &Arc<Self>) -> Result<IoChannel, BdevError> {
        if self.removed.load(Ordering::Acquire) {
            return Err(BdevError::NotFound(self.name.clone()));
        }
        let mut error = None;
        let inner = rchannel::get_or_create(self.dev, || match self.backend.create_channel() {
            Ok(backend) => Ok(layer::ChannelInner::new(self.clone(), backend)),
            Err(e) => {
                let text = e.to_string();
                error = Some(e);
                Err(text)
            }
        });
        match inner {
            Ok(inner) => Ok(IoChannel { inner }),
            Err(text) => Err(error.unwrap_or(BdevError::Invalid(text))),
        }
    }

    /// Claims the bdev for `module`'s bdev `by`; a bdev has at most one claim. Stacking
    /// modules go through [`BdevRegistry::claim_base`], which also refuses loops.
    fn claim(&self, module: &str, by: &str) -> Result<(), BdevError> {
        let mut claim = self.claim.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = claim.as_ref() {
            return Err(BdevError::Claimed {
                name: self.name.clone(),
                owner: format!("{} {}", existing.module, existing.by),
            });
        }
        *claim = Some(Claim {
            module: module.to_string(),
            by: by.to_string(),
        });
        Ok(())
    }

    /// Drops the claim.
    pub fn release_claim(&self) {
        *self.claim.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Who claimed the bdev, if anyone: the module and the bdev stacked on it ("quorum Q0").
    pub fn claimed_by(&self) -> Option<String> {
        self.claim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| format!("{} {}", c.module, c.by))
    }

    /// The bdev stacked on this one, if it is claimed.
    fn stacked_on_by(&self) -> Option<String> {
        self.claim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.by.clone())
    }

    /// Asks to be told when the bdev goes away (hot-remove); returns a key for
    /// [`Bdev::unsubscribe_remove`]. The callback runs on the thread unregistering the bdev.
    pub fn subscribe_remove(&self, listener: impl Fn(&str) + Send + Sync + 'static) -> u64 {
        let key = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, Box::new(listener)));
        key
    }

    /// Stops hot-remove notifications for `key`.
    pub fn unsubscribe_remove(&self, key: u64) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| *k != key);
    }

    fn retire_stats(&self, s: &IoStats) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(s);
    }

    /// Sums this bdev's statistics over every reactor (runs a walk over all reactors), then
    /// hands them to `done` on the calling reactor.
    pub fn collect_stats(
        self: &Arc<Self>,
        rt: &Runtime,
        done: impl FnOnce(IoStats) + Send + 'static,
    ) {
        let total = Arc::new(Mutex::new(
            *self.retired.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        let t2 = total.clone();
        rchannel::for_each_channel::<layer::ChannelInner>(
            rt,
            self.dev,
            move |ch| {
                t2.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add(&ch.stats())
            },
            move || done(*total.lock().unwrap_or_else(|e| e.into_inner())),
        );
    }

    /// Counts I/O submitted to this bdev and not yet completed, over every reactor, and hands
    /// the total to `done`: how a clean shutdown waits for in-flight I/O before flushing.
    pub fn count_in_flight(
        self: &Arc<Self>,
        rt: &Runtime,
        done: impl FnOnce(u64) + Send + 'static,
    ) {
        let total = Arc::new(AtomicU64::new(0));
        let t2 = total.clone();
        rchannel::for_each_channel::<layer::ChannelInner>(
            rt,
            self.dev,
            move |ch| {
                t2.fetch_add(ch.in_flight(), Ordering::Relaxed);
            },
            move || done(total.load(Ordering::Relaxed)),
        );
    }

    /// Visits the module channel of this bdev on every reactor that has one (typed as the
    /// module's own channel type), then runs `done`: how a stacked module such as the quorum
    /// updates its per-core state when its topology changes.
    pub fn for_each_backend_channel<T: std::any::Any>(
        self: &Arc<Self>,
        rt: &Runtime,
        visit: impl Fn(&T) + Send + Sync + 'static,
        done: impl FnOnce() + Send + 'static,
    ) {
        rchannel::for_each_channel::<layer::ChannelInner>(
            rt,
            self.dev,
            move |ch| {
                if let Some(own) = ch.backend().as_any().downcast_ref::<T>() {
                    visit(own);
                }
            },
            done,
        );
    }

    /// SPDK's `bdev_get_bdevs` object.
    pub fn info_json(&self) -> Value {
        let supported: serde_json::Map<String, Value> = IoType::ALL
            .iter()
            .map(|t| (t.spdk_name().to_string(), json!(self.io_type_supported(*t))))
            .collect();
        json!({
            "name": self.name,
            "aliases": [],
            "product_name": self.backend.product_name(),
            "block_size": self.block_size,
            "num_blocks": self.num_blocks,
            "uuid": self.uuid.to_string(),
            "assigned_rate_limits": {
                "rw_ios_per_sec": 0,
                "rw_mbytes_per_sec": 0,
                "r_mbytes_per_sec": 0,
                "w_mbytes_per_sec": 0
            },
            "claimed": self.claimed_by().is_some(),
            "zoned": false,
            "supported_io_types": supported,
            "driver_specific": self.backend.driver_specific(),
        })
    }
}
