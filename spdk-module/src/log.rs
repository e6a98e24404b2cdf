//! Logging through SPDK's own logger (`spdk_log`), so the module's messages appear in the host
//! app's log with its timestamps and levels, like every C module's SPDK_ERRLOG/SPDK_NOTICELOG.

use std::ffi::CString;

use spdk_sys as sys;

/// How serious a message is (SPDK's log levels).
#[derive(Clone, Copy)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something the operator should know happened (a quorum created, a child removed).
    Notice,
}

/// Logs `message` at `level`, naming the caller's file and line as the source.
#[track_caller]
pub fn log(level: Level, message: &str) {
    let at = std::panic::Location::caller();
    let level = match level {
        Level::Error => sys::SPDK_LOG_ERROR,
        Level::Notice => sys::SPDK_LOG_NOTICE,
    };
    // A NUL inside the message would cut it short; show it as the escape it is instead.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let file = CString::new(at.file()).unwrap_or_default();
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, and the format
    // takes exactly one string argument.
    unsafe {
        sys::spdk_log(
            level,
            file.as_ptr(),
            at.line() as i32,
            c"quorum".as_ptr(),
            c"%s\n".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Logs an error.
#[track_caller]
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a notice.
#[track_caller]
pub fn notice(message: &str) {
    log(Level::Notice, message);
}
