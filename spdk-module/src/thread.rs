//! Closures over SPDK's thread messaging, for the control path: run code on every thread that
//! holds a channel of an I/O device (`spdk_for_each_channel`), or on another thread
//! (`spdk_thread_send_msg`). Each call boxes its closures once: never used per I/O.

use std::ffi::c_void;

use spdk_sys as sys;

use crate::spdk_inline::io_channel_get_ctx;

struct ForEach<C> {
    visit: Box<dyn Fn(&mut C) + Send + Sync>,
    done: Option<Box<dyn FnOnce()>>,
}

unsafe extern "C" fn visit_one<C>(i: *mut sys::spdk_io_channel_iter) {
    // SAFETY: `i` is SPDK's live iterator; its ctx is the `ForEach<C>` boxed by
    // `for_each_channel`, alive until the completion, and its channel's context is a `C`
    // (the io_device was registered with channels of that type). This runs on the channel's
    // own thread, the only one that touches the channel.
    unsafe {
        let each = &*(sys::spdk_io_channel_iter_get_ctx(i) as *const ForEach<C>);
        let channel =
            &mut *(io_channel_get_ctx(sys::spdk_io_channel_iter_get_channel(i)) as *mut C);
        (each.visit)(channel);
        sys::spdk_for_each_channel_continue(i, 0);
    }
}

unsafe extern "C" fn all_visited<C>(i: *mut sys::spdk_io_channel_iter, _status: i32) {
    // SAFETY: the ctx is the box leaked by `for_each_channel`; SPDK calls this once, last, on
    // the thread that started the iteration, so the box is taken back exactly once.
    let mut each =
        unsafe { Box::from_raw(sys::spdk_io_channel_iter_get_ctx(i) as *mut ForEach<C>) };
    if let Some(done) = each.done.take() {
        done();
    }
}

/// Runs `visit` on each thread holding a channel of `io_device` (whose channel contexts are
/// `C`s), one after another, then `done` on the calling thread.
///
/// # Safety
/// `io_device` is registered with SPDK with channel contexts of type `C`.
pub unsafe fn for_each_channel<C: 'static>(
    io_device: *mut c_void,
    visit: impl Fn(&mut C) + Send + Sync + 'static,
    done: impl FnOnce() + 'static,
) {
    let each = Box::new(ForEach::<C> {
        visit: Box::new(visit),
        done: Some(Box::new(done)),
    });
    // SAFETY: the device is registered (the caller's promise); the box is reclaimed in
    // `all_visited`.
    unsafe {
        sys::spdk_for_each_channel(
            io_device,
            Some(visit_one::<C>),
            Box::into_raw(each) as *mut c_void,
            Some(all_visited::<C>),
        )
    };
}

unsafe extern "C" fn run_message(ctx: *mut c_void) {
    // SAFETY: `ctx` is the box leaked by `send_to`, delivered exactly once.
    let f = unsafe { Box::from_raw(ctx as *mut Box<dyn FnOnce() + Send>) };
    f();
}

/// Runs `f` on `thread`. Returns false (and drops `f`) if SPDK refused the message (the
/// thread is exiting).
///
/// # Safety
/// `thread` is a live SPDK thread.
pub unsafe fn send_to(thread: *mut sys::spdk_thread, f: impl FnOnce() + Send + 'static) -> bool {
    let boxed: Box<Box<dyn FnOnce() + Send>> = Box::new(Box::new(f));
    let ctx = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: `thread` is live (the caller's promise); the box is reclaimed by `run_message`,
    // or here when SPDK refuses the message.
    unsafe {
        if sys::spdk_thread_send_msg(thread, Some(run_message), ctx) != 0 {
            drop(Box::from_raw(ctx as *mut Box<dyn FnOnce() + Send>));
            return false;
        }
    }
    true
}
