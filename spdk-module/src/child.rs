//! A child bdev as a quorum holds it: an open read-write descriptor with the quorum's claim
//! (SPDK's read-many-write-one: the quorum is the only writer), closed on the app thread once
//! nothing uses it any more, which releases the claim.

use std::ffi::{c_void, CString};

use quorum_core::options::{Geometry, Refused};
use spdk_sys as sys;

use crate::control::ControlError;
use crate::{hot_remove, module, thread};

/// An open, possibly claimed, child descriptor. Shared (`Arc`) by the quorum's child list
/// and every thread's view of the children; the last owner closes it.
pub struct ChildDesc {
    desc: *mut sys::spdk_bdev_desc,
    app_thread: *mut sys::spdk_thread,
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
            }),
            rc if rc == -libc::ENODEV => Err(not_found()),
            rc if rc == -libc::EPERM => Err(already_claimed(name, -rc)),
            rc => Err(ControlError::new(-rc, format!("cannot open bdev '{name}'"))),
        }
    }

    /// Makes the quorum the child's only writer (SPDK's read-many-write-one claim, released
    /// when the descriptor closes); SPDK's refusal (another module, or another quorum,
    /// holds it) is passed on with its errno.
    pub fn claim(&self, name: &str) -> Result<(), ControlError> {
        // SAFETY: `opts` is initialised by SPDK for its own size before use; the descriptor
        // is open and the module is the static registered one.
        let rc = unsafe {
            let mut opts = std::mem::zeroed::<sys::spdk_bdev_claim_opts>();
            sys::spdk_bdev_claim_opts_init(&mut opts, std::mem::size_of_val(&opts));
            for (dst, src) in opts.name.iter_mut().zip(c"quorum".to_bytes_with_nul()) {
                *dst = *src as std::ffi::c_char;
            }
            sys::spdk_bdev_module_claim_bdev_desc(
                self.desc,
                sys::SPDK_BDEV_CLAIM_READ_MANY_WRITE_ONE,
                &mut opts,
                module::module(),
            )
        };
        if rc != 0 {
            return Err(ControlError::new(
                -rc,
                format!("bdev '{name}' is already claimed"),
            ));
        }
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

unsafe extern "C" fn close_desc(desc: *mut c_void) {
    // SAFETY: sent by `Drop` with the descriptor it owned; runs on the app thread.
    unsafe { sys::spdk_bdev_close(desc as *mut sys::spdk_bdev_desc) };
}

impl Drop for ChildDesc {
    fn drop(&mut self) {
        // SAFETY: closing releases the claim; SPDK wants it on the thread that opened the
        // descriptor, so from elsewhere the close is sent there (the last view of a removed
        // child may go away on a reactor).
        unsafe {
            if sys::spdk_get_thread() == self.app_thread {
                sys::spdk_bdev_close(self.desc);
            } else {
                let desc = self.desc as usize;
                thread::send_to(self.app_thread, move || close_desc(desc as *mut c_void));
            }
        }
    }
}
