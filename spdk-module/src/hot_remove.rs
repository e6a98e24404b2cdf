//! A child that SPDK removes (its bdev unregistered, its device gone) becomes a failed child:
//! it keeps its place in the vote order and every I/O sent to it fails with ENODEV, as QEMU's
//! quorum treats a child that stopped answering, until `bdev_quorum_remove_child` drops it.
//! Its descriptor is closed once no thread's view holds it, which lets SPDK finish the
//! removal.

use std::ffi::c_void;

use spdk_sys as sys;

use crate::control;
use crate::quorum_bdev;

/// SPDK's event callback for every child descriptor; runs on the app thread.
pub unsafe extern "C" fn on_child_event(
    kind: sys::spdk_bdev_event_type,
    bdev: *mut sys::spdk_bdev,
    _ctx: *mut c_void,
) {
    if kind != sys::SPDK_BDEV_EVENT_REMOVE {
        return;
    }
    // SAFETY: SPDK's bdev list, walked on the app thread.
    let owner = unsafe {
        quorum_bdev::all().find(|q| {
            q.children()
                .iter()
                .any(|c| c.desc.as_ref().is_some_and(|d| d.bdev() == bdev))
        })
    };
    let Some(q) = owner else {
        return;
    };
    let mut name = String::new();
    for child in q.children().iter_mut() {
        if child.desc.as_ref().is_some_and(|d| d.bdev() == bdev) {
            child.desc = None;
            name = child.name.to_string();
        }
    }
    control::children_changed(
        q,
        &format!("child {name} was removed; it now fails its I/O"),
        || {},
    );
}
