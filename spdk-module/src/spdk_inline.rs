//! SPDK's `static inline` helpers that the module needs, written in Rust: bindgen binds only
//! exported functions, and these are a few lines of pointer arithmetic in the headers.

use std::ffi::c_void;

use spdk_sys as sys;

/// `spdk_io_channel_get_ctx`: a channel's context buffer follows SPDK's channel header.
///
/// # Safety
/// `ch` is a live channel.
pub unsafe fn io_channel_get_ctx(ch: *mut sys::spdk_io_channel) -> *mut c_void {
    // SAFETY: SPDK allocates the context right after its header of that size.
    unsafe { (ch as *mut u8).add(sys::SPDK_IO_CHANNEL_STRUCT_SIZE as usize) as *mut c_void }
}

/// `spdk_bdev_io_from_ctx`: the bdev_io that owns a `driver_ctx`.
///
/// # Safety
/// `ctx` is the `driver_ctx` of a live bdev_io.
pub unsafe fn bdev_io_from_ctx(ctx: *mut c_void) -> *mut sys::spdk_bdev_io {
    let offset = std::mem::offset_of!(sys::spdk_bdev_io, driver_ctx);
    // SAFETY: `driver_ctx` sits at that offset inside the bdev_io.
    unsafe { (ctx as *mut u8).sub(offset) as *mut sys::spdk_bdev_io }
}
