//! Quorum events into SPDK's notify library, as types `quorum_report_bad` and
//! `quorum_failure` (CONTRACT section 2), so `notify_get_notifications` shows them next to
//! SPDK's own `bdev_register` and the like. The core numbers and records the events; this is
//! the host's [`EventSink`].

use std::ffi::CString;

use quorum_core::events::{EventIds, EventKind, EventSink};
use spdk_sys as sys;

/// A notification type's name as C wants it; the names are the core's.
fn type_name(kind: EventKind) -> CString {
    CString::new(kind.notify_type()).unwrap_or_default()
}

/// Registers the two notification types with SPDK; from the load-time constructor, as
/// SPDK's own `SPDK_NOTIFY_TYPE_REGISTER` does.
pub fn register_types() {
    for kind in [EventKind::ReportBad, EventKind::Failure] {
        let name = type_name(kind);
        // SAFETY: a NUL-terminated name alive for the call; SPDK copies it.
        unsafe { sys::spdk_notify_type_register(name.as_ptr()) };
    }
}

/// The module's sink: one event numbering for every quorum in the process.
#[derive(Default)]
pub struct SpdkNotify {
    ids: EventIds,
}

impl EventSink for SpdkNotify {
    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn notify(&self, kind: EventKind, ctx: &str) {
        let ctx = CString::new(ctx.replace('\0', " ")).unwrap_or_default();
        // SAFETY: both are NUL-terminated strings alive for the call; SPDK copies them into
        // its own event ring, from any thread.
        unsafe { sys::spdk_notify_send(type_name(kind).as_ptr(), ctx.as_ptr()) };
    }
}
