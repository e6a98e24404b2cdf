//! A child bdev as a quorum holds it: an open read-write descriptor with the quorum's
//! exclusive-write claim (SPDK's, as raid, passthru and delay take on their base bdevs: no one
//! else may open it for writing), released and closed on the app thread once nothing uses
//! it any more.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use quorum_core::options::{Geometry, Refused};
use spdk_sys as sys;

use crate::control::ControlError;
use crate::{hot_remove, module, thread};

/// An open, possibly claimed, child descriptor. Shared (`Arc`) by the quorum's child list
/// and every thread's view of the children; the last owner closes it.
pub struct ChildDesc {
    desc: *mut sys::spdk_bdev_desc,
    app_thread: *mut sys::spdk_thread,
    claimed: AtomicBool,
}

// SAFETY: SPDK descriptors may be used from any thread to get I/O channels and read the
// bdev's properties; the only thread-bound call, the close, is sent to the app thread.
unsafe impl Send for ChildDesc {}
// SAFETY: as for Send: shared use is SPDK's thread-safe API only.
unsafe impl Sync for ChildDesc {}

impl ChildDesc {
    /// Opens bdev `name` read-write, watching for its hot removal. Must run on the app
    /// thread (where the control path runs and where SPDK delivers the descriptor's events).
    pub fn open(name: &str) -> Result<ChildDesc, ControlError> {
        let not_found = || ControlError::from(Refused::NotFound(name.to_string()));
        let cname = CString::new(name).map_err(|_| not_found())?;
        let mut desc = std::ptr::null_mut();
        // SAFETY: a valid NUL-terminated name and an out-pointer; the event callback needs
        // no context (it finds the quorum by the bdev).
        let rc = unsafe {
            sys::spdk_bdev_open_ext(
                cname.as_ptr(),
                true,
                Some(hot_remove::on_child_event),
                std::ptr::null_mut(),
                &mut desc,
            )
        };
        match rc {
            0 => Ok(ChildDesc {
                desc,
                // SAFETY: called on an SPDK thread (the app thread).
                app_thread: unsafe { sys::spdk_get_thread() },
                claimed: AtomicBool::new(false),
            }),
            rc if rc == -libc::ENODEV => Err(not_found()),
            rc if rc == -libc::EPERM => Err(already_claimed(name, -rc)),
            rc => Err(ControlError::new(-rc, format!("cannot open bdev '{name}'"))),
        }
    }

    /// Lays the quorum's exclusive-write claim on the child. SPDK's refusal (another module,
    /// or another quorum, holds it) is passed on with its errno. The legacy exclusive-write
    /// claim is the one SPDK's own stacking modules take: the newer read-many-write-one claim
    /// also refuses while anyone has the bdev open for writing, which SPDK's examine does for
    /// a moment after a bdev appears, so a quorum created right after its children would fail
    /// now and then.
    pub fn claim(&self, name: &str) -> Result<(), ControlError> {
        // SAFETY: an open descriptor of the bdev, and the static registered module.
        let rc =
            unsafe { sys::spdk_bdev_module_claim_bdev(self.bdev(), self.desc, module::module()) };
        if rc != 0 {
            return Err(already_claimed(name, -rc));
        }
        self.claimed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The child's bdev.
    pub fn bdev(&self) -> *mut sys::spdk_bdev {
        // SAFETY: the descriptor is open.
        unsafe { sys::spdk_bdev_desc_get_bdev(self.desc) }
    }

    /// The raw descriptor, for child I/O.
    pub fn raw(&self) -> *mut sys::spdk_bdev_desc {
        self.desc
    }

    /// Block size and count, which every child of a quorum shares.
    pub fn geometry(&self) -> Geometry {
        let bdev = self.bdev();
        // SAFETY: the bdev stays registered while the descriptor is open.
        unsafe {
            Geometry {
                block_size: sys::spdk_bdev_get_block_size(bdev),
                num_blocks: sys::spdk_bdev_get_num_blocks(bdev),
            }
        }
    }

    /// Whether the child serves `io_type`.
    pub fn supports(&self, io_type: sys::spdk_bdev_io_type) -> bool {
        // SAFETY: the bdev stays registered while the descriptor is open.
        unsafe { sys::spdk_bdev_io_type_supported(self.bdev(), io_type) }
    }
}

/// SPDK refused the child because another module (or quorum) holds it; SPDK's errno.
fn already_claimed(name: &str, errno: i32) -> ControlError {
    ControlError::new(errno, format!("bdev '{name}' is already claimed"))
}

/// Releases the claim (if `claimed`) and closes the descriptor.
///
/// # Safety
/// On the app thread, with an open descriptor that nothing uses any more.
unsafe fn release_and_close(desc: *mut sys::spdk_bdev_desc, claimed: bool) {
    // SAFETY: the caller's promise.
    unsafe {
        if claimed {
            sys::spdk_bdev_module_release_bdev(sys::spdk_bdev_desc_get_bdev(desc));
        }
        sys::spdk_bdev_close(desc);
    }
}

impl Drop for ChildDesc {
    fn drop(&mut self) {
        let claimed = self.claimed.load(Ordering::Relaxed);
        // SAFETY: SPDK wants the release and close on the thread that opened the descriptor;
        // from elsewhere (the last view of a removed child may go away on a reactor) they are
        // sent there.
        unsafe {
            if sys::spdk_get_thread() == self.app_thread {
                release_and_close(self.desc, claimed);
            } else {
                let desc = self.desc as usize;
                thread::send_to(self.app_thread, move || {
                    release_and_close(desc as *mut sys::spdk_bdev_desc, claimed)
                });
            }
        }
    }
}
