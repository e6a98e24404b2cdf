//! A quorum bdev inside SPDK: the `spdk_bdev` handed to SPDK, the core's [`Quorum`] (options,
//! geometry, rewrite guard, events), the ordered child list, and the function table SPDK
//! calls (destruct, submit, supported types, channels, `driver_specific`, `save_config`).
//! The I/O itself is in [`crate::io`], the per-thread channel in [`crate::channel`].

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use quorum_core::params::{ChildStateInfo, CreateParams, DriverSpecific};
use quorum_core::{ChildState, CounterSnapshot, Quorum, StateReason};
use serde_json::json;
use spdk_sys as sys;

use crate::channel::QuorumChannel;
use crate::child::ChildDesc;
use crate::{io, json, log, module};

/// A child in the quorum's vote order.
#[derive(Clone)]
pub struct Child {
    /// Stable identity, so counters follow the child across changes of the list.
    pub id: u64,
    /// The child bdev's name (events, `save_config`).
    pub name: Arc<str>,
    /// The open, claimed child; `None` once SPDK hot-removed it: it stays in the vote order
    /// as a failed child (its I/O fails with ENODEV) until removed by RPC.
    pub desc: Option<Arc<ChildDesc>>,
    /// How it joined: `Created` with the quorum, `AddedWithoutSync` by `add_child` (QEMU's
    /// behaviour: trusted to hold the data already).
    pub joined: StateReason,
}

impl Child {
    /// Its replica state as the RPCs show it. This host tracks no replica states yet (no
    /// dirty regions, no resync), so every child is synced since it joined, as in QEMU.
    pub fn state_info(&self) -> ChildStateInfo {
        ChildStateInfo {
            name: self.name.to_string(),
            state: ChildState::Synced,
            reason: self.joined,
            dirty_regions: 0,
            copied_regions: 0,
        }
    }
}

/// The I/O types a quorum serves: those SPDK's targets use (CONTRACT section 6).
const SERVED: [sys::spdk_bdev_io_type; 6] = [
    sys::SPDK_BDEV_IO_TYPE_READ,
    sys::SPDK_BDEV_IO_TYPE_WRITE,
    sys::SPDK_BDEV_IO_TYPE_FLUSH,
    sys::SPDK_BDEV_IO_TYPE_UNMAP,
    sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES,
    sys::SPDK_BDEV_IO_TYPE_RESET,
];

/// One quorum bdev. Lives in a `Box` whose address is SPDK's `ctxt` and the quorum's io_device;
/// freed once SPDK unregistered both.
pub struct QuorumBdev {
    bdev: UnsafeCell<sys::spdk_bdev>,
    name: CString,
    core: Quorum,
    children: Mutex<Vec<Child>>,
    next_child_id: AtomicU64,
    /// Counters of channels (or child views) that went away, by child id.
    retired: Mutex<HashMap<u64, CounterSnapshot>>,
    /// Bit `t` set: every child serves I/O type `t`. Kept current by the control path, as
    /// SPDK asks per I/O for some types (write_zeroes) and the answer must not take a lock.
    supported: AtomicU32,
}

// SAFETY: SPDK writes into `bdev` only through its own synchronisation (the bdev layer's
// locks and threads); this module reads the fields it set before registering. Everything
// else is atomics, mutexes, or the core's `Quorum`, which is `Sync`.
unsafe impl Sync for QuorumBdev {}
// SAFETY: as for Sync; the raw pointers inside `bdev` are SPDK's and thread-independent.
unsafe impl Send for QuorumBdev {}

static FN_TABLE: sys::spdk_bdev_fn_table = sys::spdk_bdev_fn_table {
    destruct: Some(destruct),
    submit_request: Some(io::submit_request),
    io_type_supported: Some(io_type_supported),
    get_io_channel: Some(get_io_channel),
    dump_info_json: Some(dump_info_json),
    write_config_json: Some(write_config_json),
    get_spin_time: None,
    get_module_ctx: None,
    get_memory_domains: None,
    get_memory_domain_types: None,
    reset_device_stat: None,
    dump_device_stat_json: None,
    accel_sequence_supported: None,
};

/// SPDK's product name of quorum bdevs (`bdev_get_bdevs`), as quorum-tgt's.
const PRODUCT_NAME: &std::ffi::CStr = c"Quorum disk";

impl QuorumBdev {
    /// A quorum over `children` (opened, claimed, checked), not yet registered with SPDK.
    pub fn new(
        name: CString,
        core: Quorum,
        children: Vec<Child>,
        uuid: Option<[u8; 16]>,
    ) -> Box<QuorumBdev> {
        let geometry = core.geometry();
        // SAFETY: an all-zero spdk_bdev is SPDK's "unset" for every field.
        let mut bdev: sys::spdk_bdev = unsafe { std::mem::zeroed() };
        bdev.blocklen = geometry.block_size;
        bdev.blockcnt = geometry.num_blocks;
        bdev.product_name = PRODUCT_NAME.as_ptr() as *mut _;
        bdev.fn_table = &FN_TABLE;
        bdev.module = module::module();
        // Reads into DMA buffers of SPDK's iobuf pool: larger I/O is split by the bdev
        // layer.
        bdev.max_rw_size = module::largest_buffer() / geometry.block_size;
        if let Some(raw) = uuid {
            bdev.uuid.u.raw = raw;
        }
        let next = children.iter().map(|c| c.id + 1).max().unwrap_or(0);
        let q = Box::new(QuorumBdev {
            bdev: UnsafeCell::new(bdev),
            name,
            core,
            children: Mutex::new(children),
            next_child_id: AtomicU64::new(next),
            retired: Mutex::new(HashMap::new()),
            supported: AtomicU32::new(0),
        });
        q.refresh_supported();
        // SAFETY: not shared yet; SPDK keeps these pointers into the box, which does not
        // move until it is freed after SPDK let go of the bdev.
        unsafe {
            let bdev = &mut *q.bdev.get();
            bdev.name = q.name.as_ptr() as *mut _;
            bdev.ctxt = &*q as *const QuorumBdev as *mut c_void;
            bdev.write_cache = i32::from(q.any_child_caches());
        }
        q
    }

    /// SPDK's bdev.
    pub fn spdk_bdev(&self) -> *mut sys::spdk_bdev {
        self.bdev.get()
    }

    /// The quorum's io_device (its own address).
    pub fn io_device(&self) -> *mut c_void {
        self as *const QuorumBdev as *mut c_void
    }

    /// The quorum's name as C wants it.
    pub fn name_c(&self) -> &std::ffi::CStr {
        &self.name
    }

    /// The quorum's name.
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// The host-neutral quorum.
    pub fn core(&self) -> &Quorum {
        &self.core
    }

    /// The child list, in vote order (control path only: a lock).
    pub fn children(&self) -> MutexGuard<'_, Vec<Child>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The children's names, in vote order.
    pub fn child_names(&self) -> Vec<String> {
        self.children().iter().map(|c| c.name.to_string()).collect()
    }

    /// A fresh identity for a child joining the quorum.
    pub fn new_child_id(&self) -> u64 {
        self.next_child_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps the counters of a child view that goes away, for `bdev_quorum_get_bdevs`.
    pub fn retire_counters(&self, id: u64, counters: &CounterSnapshot) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .add(counters);
    }

    /// Counters of views that went away, by child id.
    pub fn retired_counters(&self) -> HashMap<u64, CounterSnapshot> {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recomputes which I/O types every present child serves, after the list changed.
    pub fn refresh_supported(&self) {
        let children = self.children();
        let present: Vec<&Arc<ChildDesc>> =
            children.iter().filter_map(|c| c.desc.as_ref()).collect();
        let mask = SERVED
            .iter()
            .filter(|&&t| present.iter().all(|d| d.supports(t)))
            .fold(0u32, |m, &t| m | 1 << t);
        self.supported.store(mask, Ordering::Relaxed);
    }

    fn any_child_caches(&self) -> bool {
        self.children()
            .iter()
            .filter_map(|c| c.desc.as_ref())
            // SAFETY: the bdev stays registered while its descriptor is open.
            .any(|d| unsafe { sys::spdk_bdev_has_write_cache(d.bdev()) })
    }

    /// The `save_config` entry that brings this quorum back.
    fn config_entry(&self) -> serde_json::Value {
        // SAFETY: SPDK set the uuid at registration and never changes it.
        let uuid = uuid::Uuid::from_bytes(unsafe { (*self.bdev.get()).uuid.u.raw });
        let params = CreateParams::recreating(
            self.name(),
            self.child_names(),
            self.core.options(),
            self.core.replica_options(),
            uuid,
        );
        json!({ "method": "bdev_quorum_create", "params": params })
    }
}

/// The quorum behind SPDK's `ctxt` pointer.
///
/// # Safety
/// `ctx` is the `ctxt` of a registered quorum bdev.
pub unsafe fn from_ctx<'a>(ctx: *mut c_void) -> &'a QuorumBdev {
    // SAFETY: the caller's promise; the box lives until after SPDK's destruct.
    unsafe { &*(ctx as *const QuorumBdev) }
}

/// The quorum behind an SPDK bdev, if it is one of this module's.
///
/// # Safety
/// `bdev` is a registered bdev (or null).
pub unsafe fn from_bdev<'a>(bdev: *mut sys::spdk_bdev) -> Option<&'a QuorumBdev> {
    // SAFETY: a registered bdev's `module` and `ctxt` are set for its life; `ctxt` of this
    // module's bdevs is a QuorumBdev.
    unsafe {
        if bdev.is_null() || (*bdev).module != module::module() {
            return None;
        }
        Some(from_ctx((*bdev).ctxt))
    }
}

/// Every quorum bdev registered with SPDK.
///
/// # Safety
/// On the app thread, with no bdev registered or unregistered during the walk.
pub unsafe fn all<'a>() -> impl Iterator<Item = &'a QuorumBdev> {
    // SAFETY: SPDK's list walk, on the app thread (the caller's promise).
    let mut bdev = unsafe { sys::spdk_bdev_first() };
    std::iter::from_fn(move || loop {
        if bdev.is_null() {
            return None;
        }
        let current = bdev;
        // SAFETY: `current` is registered.
        bdev = unsafe { sys::spdk_bdev_next(current) };
        // SAFETY: as above.
        if let Some(q) = unsafe { from_bdev(current) } {
            return Some(q);
        }
    })
}

unsafe extern "C" fn destruct(ctx: *mut c_void) -> i32 {
    // SAFETY: SPDK's destruct of one of our bdevs, on the app thread, after every channel is
    // gone: the child list's descriptors are the last ones and close here.
    unsafe {
        let q = from_ctx(ctx);
        q.children().clear();
        sys::spdk_io_device_unregister(ctx, Some(io_device_gone));
    }
    1 // finished in io_device_gone
}

unsafe extern "C" fn io_device_gone(ctx: *mut c_void) {
    // SAFETY: SPDK unregistered the io_device of the box leaked by control::create; the bdev
    // layer is told it may finish, then nothing refers to the box any more.
    unsafe {
        let q = Box::from_raw(ctx as *mut QuorumBdev);
        sys::spdk_bdev_destruct_done(q.spdk_bdev(), 0);
        log::notice(&format!("quorum {} deleted", q.name()));
    }
}

unsafe extern "C" fn io_type_supported(ctx: *mut c_void, io_type: sys::spdk_bdev_io_type) -> bool {
    // SAFETY: SPDK passes the ctxt of a registered quorum.
    let q = unsafe { from_ctx(ctx) };
    io_type < 32 && q.supported.load(Ordering::Relaxed) & (1 << io_type) != 0
}

unsafe extern "C" fn get_io_channel(ctx: *mut c_void) -> *mut sys::spdk_io_channel {
    // SAFETY: the quorum's address is its registered io_device.
    unsafe { sys::spdk_get_io_channel(ctx) }
}

unsafe extern "C" fn dump_info_json(ctx: *mut c_void, w: *mut sys::spdk_json_write_ctx) -> i32 {
    // SAFETY: SPDK passes the ctxt of a registered quorum and a writer inside the
    // `driver_specific` object.
    unsafe {
        let q = from_ctx(ctx);
        let children = q.children().iter().map(Child::state_info).collect();
        let info = DriverSpecific::new(q.core.options(), children);
        let value = serde_json::to_value(info).unwrap_or_default();
        json::write_named(w, "quorum", &value);
    }
    0
}

unsafe extern "C" fn write_config_json(
    bdev: *mut sys::spdk_bdev,
    w: *mut sys::spdk_json_write_ctx,
) {
    // SAFETY: SPDK passes one of our registered bdevs and a writer inside its config array.
    unsafe {
        if let Some(q) = from_bdev(bdev) {
            json::write_value(w, &q.config_entry());
        }
    }
}

/// The per-thread channel of a quorum: its context is a [`QuorumChannel`].
pub fn channel_ctx_size() -> u32 {
    std::mem::size_of::<QuorumChannel>() as u32
}
