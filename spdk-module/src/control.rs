//! The quorum's control path inside SPDK: create, delete, add and remove a child, each a
//! plain function returning `Result`; every check is the core's (QEMU's rules and messages),
//! in the same order as quorum-tgt's. Runs on the app thread, where SPDK runs RPC handlers.
//! Nothing is left open, claimed or registered when a check fails.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock};

use quorum_core::events::EventSink;
use quorum_core::options::{
    children_changeable, common_geometry, distinct_children, may_add_child, may_remove_child,
    Refused,
};
use quorum_core::params::{ChildInfo, CreateParams};
use quorum_core::replica::ReplicaOptions;
use quorum_core::{CounterSnapshot, Quorum, StateReason};
use spdk_sys as sys;

use crate::channel::{self, QuorumChannel};
use crate::child::ChildDesc;
use crate::notify::SpdkNotify;
use crate::quorum_bdev::{self, Child, QuorumBdev};
use crate::{log, thread};

/// A refused control-path request: the errno SPDK's RPCs answer with and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    /// Positive errno.
    pub errno: i32,
    /// What went wrong.
    pub message: String,
}

impl ControlError {
    /// An error with SPDK's errno for it.
    pub fn new(errno: i32, message: impl Into<String>) -> ControlError {
        ControlError {
            errno,
            message: message.into(),
        }
    }
}

impl From<Refused> for ControlError {
    fn from(r: Refused) -> ControlError {
        ControlError::new(r.errno(), r.to_string())
    }
}

/// The module's event sink: one numbering for all quorums, mirrored into SPDK's notify.
fn sink() -> Arc<dyn EventSink> {
    static SINK: OnceLock<Arc<SpdkNotify>> = OnceLock::new();
    SINK.get_or_init(Arc::default).clone()
}

fn c_name(name: &str) -> Result<CString, ControlError> {
    CString::new(name)
        .map_err(|_| Refused::Invalid(format!("bdev name {name:?} contains a NUL byte")).into())
}

/// The quorum called `name`.
pub fn find(name: &str) -> Result<&'static QuorumBdev, ControlError> {
    let cname = c_name(name)?;
    // SAFETY: SPDK's lookup on the app thread; a found quorum lives until its destruct,
    // which only this thread starts.
    unsafe { quorum_bdev::from_bdev(sys::spdk_bdev_get_by_name(cname.as_ptr())) }
        .ok_or_else(|| Refused::NotFound(name.to_string()).into())
}

/// Creates and registers a quorum (`bdev_quorum_create`); returns its name.
pub fn create(p: &CreateParams) -> Result<String, ControlError> {
    let options = p.options();
    options.validate(p.base_bdevs.len())?;
    refuse_replica_options(p)?;
    distinct_children(&p.base_bdevs)?;
    let cname = c_name(&p.name)?;
    // SAFETY: SPDK's lookup, on the app thread.
    if !unsafe { sys::spdk_bdev_get_by_name(cname.as_ptr()) }.is_null() {
        return Err(Refused::Exists(p.name.clone()).into());
    }
    let descs = p
        .base_bdevs
        .iter()
        .map(|n| ChildDesc::open(n))
        .collect::<Result<Vec<_>, _>>()?;
    let shapes: Vec<(&str, _)> = p
        .base_bdevs
        .iter()
        .map(String::as_str)
        .zip(descs.iter().map(ChildDesc::geometry))
        .collect();
    let geometry = common_geometry(&shapes)?;
    for (desc, name) in descs.iter().zip(&p.base_bdevs) {
        desc.claim(name)?;
    }
    let children = descs
        .into_iter()
        .zip(&p.base_bdevs)
        .enumerate()
        .map(|(i, (desc, name))| Child {
            id: i as u64,
            name: Arc::from(name.as_str()),
            desc: Some(Arc::new(desc)),
            joined: StateReason::Created,
        })
        .collect();
    let core = Quorum::new(&p.name, options, geometry, sink());
    let q = Box::into_raw(QuorumBdev::new(
        cname,
        core,
        children,
        p.uuid.map(|u| *u.as_bytes()),
    ));
    // SAFETY: the box is SPDK's io_device and bdev context from here until io_device_gone
    // (or `discard` below); SPDK copies the device name.
    unsafe {
        sys::spdk_io_device_register(
            q as *mut c_void,
            Some(channel::create),
            Some(channel::destroy),
            quorum_bdev::channel_ctx_size(),
            (*q).name_c().as_ptr(),
        );
        let rc = sys::spdk_bdev_register((*q).spdk_bdev());
        if rc != 0 {
            sys::spdk_io_device_unregister(q as *mut c_void, Some(discard));
            return Err(ControlError::new(
                -rc,
                format!("bdev '{}' could not be registered", p.name),
            ));
        }
    }
    log::notice(&format!(
        "quorum {} created over {:?}, {options:?}",
        p.name, p.base_bdevs
    ));
    Ok(p.name.clone())
}

/// Refuses, rather than ignores, what needs replica states, which this host does not track
/// yet (quorum-tgt does): a child timeout, a dirty-region size, a superblock.
fn refuse_replica_options(p: &CreateParams) -> Result<(), ControlError> {
    if p.superblock || p.replica_options() != ReplicaOptions::default() {
        return Err(Refused::Invalid(
            "child_io_timeout_ms, dirty_region_kb and superblock are not supported by the SPDK \
             module yet"
                .into(),
        )
        .into());
    }
    Ok(())
}

unsafe extern "C" fn discard(q: *mut c_void) {
    // SAFETY: the box of a quorum whose registration failed: SPDK never saw its bdev.
    drop(unsafe { Box::from_raw(q as *mut QuorumBdev) });
}

/// What runs when a deletion finished.
pub type Done = Box<dyn FnOnce(Result<(), ControlError>)>;

/// Unregisters quorum `name` (`bdev_quorum_delete`); `done` runs when SPDK finished,
/// children released.
pub fn delete(
    name: &str,
    done: impl FnOnce(Result<(), ControlError>) + 'static,
) -> Result<(), ControlError> {
    let q = find(name)?;
    let done: Box<Done> = Box::new(Box::new(done));
    // SAFETY: a registered bdev; the box is reclaimed once in `unregistered`.
    unsafe {
        sys::spdk_bdev_unregister(
            q.spdk_bdev(),
            Some(unregistered),
            Box::into_raw(done) as *mut c_void,
        )
    };
    Ok(())
}

unsafe extern "C" fn unregistered(arg: *mut c_void, rc: i32) {
    // SAFETY: the box leaked by `delete`, given back once by SPDK.
    let done = unsafe { Box::from_raw(arg as *mut Done) };
    done(match rc {
        0 => Ok(()),
        rc => Err(ControlError::new(-rc, "quorum could not be deleted")),
    });
}

/// The quorum `name`, if its children may change: QEMU refuses to `action` a quorum in
/// blkverify mode.
fn changeable(name: &str, action: &str) -> Result<&'static QuorumBdev, ControlError> {
    let q = find(name)?;
    children_changeable(&q.core().options(), action)?;
    Ok(q)
}

/// After the child list of `q` changed (`what` happened): the supported I/O types, the log,
/// and every thread's view, then `done`.
pub fn children_changed(q: &QuorumBdev, what: &str, done: impl FnOnce() + 'static) {
    q.refresh_supported();
    log::notice(&format!("quorum {}: {what}", q.name()));
    refresh_channels(q, done);
}

/// Adds `child` to quorum `name` (`bdev_quorum_add_child`) with I/O running: each thread
/// switches to the new child list between two I/Os; `done` runs once all have.
pub fn add_child(
    name: &str,
    child: &str,
    done: impl FnOnce() + 'static,
) -> Result<(), ControlError> {
    let q = changeable(name, "add a child to")?;
    // A child already in the quorum is refused as such before SPDK refuses to open it
    // again (it is claimed): the same rule with the quorum's own geometry.
    let geometry = q.core().geometry();
    may_add_child(name, geometry, &q.child_names(), child, geometry)?;
    if let Some(path) = loop_through_quorums(name, child) {
        return Err(ControlError::new(
            libc::EINVAL,
            format!("bdev graph loop: {}", path.join(" -> ")),
        ));
    }
    let desc = ChildDesc::open(child)?;
    may_add_child(name, geometry, &q.child_names(), child, desc.geometry())?;
    desc.claim(child)?;
    q.children().push(Child {
        id: q.new_child_id(),
        name: Arc::from(child),
        desc: Some(Arc::new(desc)),
        joined: StateReason::AddedWithoutSync,
    });
    children_changed(q, &format!("child {child} added"), done);
    Ok(())
}

/// Removes `child` from quorum `name` (`bdev_quorum_remove_child`), refused while the
/// quorum has no more children than its threshold (QEMU's rule). The child's claim is
/// released once no thread has I/O on it.
pub fn remove_child(
    name: &str,
    child: &str,
    done: impl FnOnce() + 'static,
) -> Result<(), ControlError> {
    let q = changeable(name, "remove a child from")?;
    let pos = may_remove_child(name, &q.core().options(), &q.child_names(), child)?;
    q.children().remove(pos);
    children_changed(q, &format!("child {child} removed"), done);
    Ok(())
}

/// The loop quorum `name` would close by taking `child`, worded as quorum-tgt words it
/// ("Q0 -> Q1 -> Q0": each bdev followed by one of its children), when `child` is `name`
/// or a quorum with `name` among its descendants through quorums. SPDK records claims by
/// module, not by bdev, so loops through other modules' bdevs (an error bdev over the
/// quorum) are not seen here.
fn loop_through_quorums(name: &str, child: &str) -> Option<Vec<String>> {
    let mut path = descent(name, child)?;
    path.insert(0, name.to_string());
    Some(path)
}

/// The bdevs from `node` down to `target` through quorums' children, if `target` is there.
/// The graph below holds no loop (none is ever let in), so the descent ends.
fn descent(target: &str, node: &str) -> Option<Vec<String>> {
    if node == target {
        return Some(vec![node.to_string()]);
    }
    let quorum = find(node).ok()?;
    quorum.child_names().iter().find_map(|c| {
        let mut path = descent(target, c)?;
        path.insert(0, node.to_string());
        Some(path)
    })
}

/// Has every thread's channel of `q` pick up the current child list, then runs `done`.
fn refresh_channels(q: &QuorumBdev, done: impl FnOnce() + 'static) {
    // SAFETY: the quorum's io_device has QuorumChannel contexts.
    unsafe {
        thread::for_each_channel::<QuorumChannel>(q.io_device(), QuorumChannel::refresh, done)
    };
}

/// Each child of `q` with its counters summed over every thread (and over views that went
/// away), in vote order, handed to `done` on the app thread.
pub fn collect_counters(q: &'static QuorumBdev, done: impl FnOnce(Vec<ChildInfo>) + 'static) {
    let totals = Arc::new(Mutex::new(q.retired_counters()));
    let sum = totals.clone();
    let visit = move |ch: &mut QuorumChannel| {
        let mut t = sum.lock().unwrap_or_else(|e| e.into_inner());
        for (id, c) in ch.counters() {
            t.entry(id).or_default().add(&c);
        }
    };
    let finish = move || {
        let totals: HashMap<u64, CounterSnapshot> =
            std::mem::take(&mut *totals.lock().unwrap_or_else(|e| e.into_inner()));
        let children = q
            .children()
            .iter()
            .map(|c| ChildInfo {
                state: c.state_info(),
                counters: totals.get(&c.id).copied().unwrap_or_default(),
            })
            .collect();
        done(children)
    };
    // SAFETY: the quorum's io_device has QuorumChannel contexts; SPDK holds the device until
    // the iteration ends, so `q` outlives `finish`.
    unsafe { thread::for_each_channel::<QuorumChannel>(q.io_device(), visit, finish) };
}
