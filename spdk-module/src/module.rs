//! The bdev module SPDK sees: `bdev_quorum`, registered when the library is loaded (a
//! constructor in `.init_array`, as SPDK's `SPDK_BDEV_MODULE_REGISTER` does), together with
//! the quorum RPC methods and notification types, so `LD_PRELOAD` into any SPDK app is all it
//! takes. Also the module's share of SPDK's iobuf pool.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use spdk_sys as sys;

use crate::{io, methods, notify, rpc};

/// The module's name, for SPDK's module list and its iobuf pool.
pub const IOBUF_NAME: &CStr = c"bdev_quorum";
/// Small iobuf buffers each thread keeps at hand (SPDK's bdev layer keeps 128).
pub const IOBUF_SMALL_CACHE: u32 = 64;
/// Large iobuf buffers each thread keeps at hand (SPDK's bdev layer keeps 16).
pub const IOBUF_LARGE_CACHE: u32 = 8;

struct ModuleCell(UnsafeCell<sys::spdk_bdev_module>);

// SAFETY: SPDK owns the module struct once it is registered and serialises its own use of
// it; this crate writes it only in the constructor, before any thread of SPDK exists.
unsafe impl Sync for ModuleCell {}

static MODULE: ModuleCell = ModuleCell(UnsafeCell::new(
    // SAFETY: all-zero is SPDK's "unset" for every field of the module struct (null names
    // and callbacks, empty internal lists).
    unsafe { MaybeUninit::zeroed().assume_init() },
));

/// The registered module, as SPDK wants it in bdevs and claims.
pub fn module() -> *mut sys::spdk_bdev_module {
    MODULE.0.get()
}

extern "C" fn module_init() -> i32 {
    // SAFETY: a static name; SPDK's iobuf is initialised before bdev modules.
    unsafe { sys::spdk_iobuf_register_module(IOBUF_NAME.as_ptr()) }
}

extern "C" fn module_fini() {
    // SAFETY: registered in module_init.
    unsafe { sys::spdk_iobuf_unregister_module(IOBUF_NAME.as_ptr()) };
}

extern "C" fn get_ctx_size() -> i32 {
    io::CTX_SIZE as i32
}

/// The largest buffer SPDK's iobuf pool hands out: the longest read the quorum serves
/// without the bdev layer splitting it.
pub fn largest_buffer() -> u32 {
    // SAFETY: opts is filled by SPDK for its own size.
    unsafe {
        let mut opts: sys::spdk_iobuf_opts = std::mem::zeroed();
        sys::spdk_iobuf_get_opts(&mut opts, std::mem::size_of_val(&opts));
        opts.large_bufsize
    }
}

extern "C" fn register() {
    // SAFETY: runs once at load time, before SPDK's main starts threads; afterwards the
    // struct is SPDK's.
    unsafe {
        let m = &mut *module();
        m.name = IOBUF_NAME.as_ptr();
        m.module_init = Some(module_init);
        m.module_fini = Some(module_fini);
        m.get_ctx_size = Some(get_ctx_size);
        sys::spdk_bdev_module_list_add(module());
    }
    notify::register_types();
    rpc::register::<methods::QuorumMethods>();
}

/// What the dynamic loader runs when the library is loaded (LD_PRELOAD or dlopen).
#[used]
#[link_section = ".init_array"]
static REGISTER_AT_LOAD: extern "C" fn() = register;
