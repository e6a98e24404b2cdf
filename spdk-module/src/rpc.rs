//! JSON-RPC methods inside SPDK's RPC server: registration of a method table with SPDK, the
//! trampolines SPDK calls (its handlers carry no context, so each method gets its own), and
//! [`Reply`], the one way a method answers. Params reach handlers as serde values (see
//! [`crate::json`]); handlers never see SPDK's JSON types.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use serde_json::Value;
use spdk_sys as sys;

use crate::json;

/// JSON-RPC's "invalid params".
pub const INVALID_PARAMS: i32 = -32602;

/// A JSON-RPC error: SPDK's codes (a negative errno for a refused operation, -32602 for bad
/// params) and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The JSON-RPC error code.
    pub code: i32,
    /// What went wrong, for the user.
    pub message: String,
}

impl RpcError {
    /// A refused operation: the negative errno, as SPDK reports one.
    pub fn errno(errno: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code: -errno,
            message: message.into(),
        }
    }

    /// Params that cannot be decoded.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError {
            code: INVALID_PARAMS,
            message: message.into(),
        }
    }
}

/// The pending answer to one request; consumed by [`Reply::send`], which must happen on the
/// app thread (where SPDK's RPC server runs handlers and where control-path completions
/// come back).
pub struct Reply(NonNull<sys::spdk_jsonrpc_request>);

impl Reply {
    /// Sends the result or the error to the client.
    pub fn send(self, result: Result<Value, RpcError>) {
        let request = self.0.as_ptr();
        match result {
            Ok(value) => {
                // SAFETY: the request is live until answered, and this is its only answer.
                let w = unsafe { sys::spdk_jsonrpc_begin_result(request) };
                if w.is_null() {
                    return; // a notification: SPDK expects no answer
                }
                // SAFETY: `w` was just begun for this request and is ended right after.
                unsafe {
                    json::write_value(w, &value);
                    sys::spdk_jsonrpc_end_result(request, w);
                }
            }
            Err(e) => {
                let message = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the request is live until answered; SPDK copies the message.
                unsafe { sys::spdk_jsonrpc_send_error_response(request, e.code, message.as_ptr()) };
            }
        }
    }
}

/// A method: SPDK's name and the handler that answers through the [`Reply`] (now, or later
/// from a completion on the app thread).
pub struct Method {
    /// The method's name, as clients call it.
    pub name: &'static CStr,
    /// Decodes the params (`None` when the request had none) and answers.
    pub handler: fn(Option<Value>, Reply),
}

/// A set of methods registered together.
pub trait MethodTable: 'static {
    /// The methods; at most [`MAX_METHODS`].
    const METHODS: &'static [Method];
}

/// How many methods one table may hold (one trampoline each).
pub const MAX_METHODS: usize = 8;

/// What SPDK calls for method `I` of table `T`.
unsafe extern "C" fn trampoline<T: MethodTable, const I: usize>(
    request: *mut sys::spdk_jsonrpc_request,
    params: *const sys::spdk_json_val,
) {
    let Some(request) = NonNull::new(request) else {
        return;
    };
    let reply = Reply(request);
    let params = if params.is_null() {
        None
    } else {
        // SAFETY: SPDK hands a parsed value array that lives for this call.
        match unsafe { json::read_value(params) } {
            Ok(v) => Some(v),
            Err(e) => return reply.send(Err(RpcError::invalid_params(e.0))),
        }
    };
    // Only the first `T::METHODS.len()` trampolines are ever registered.
    if let Some(method) = T::METHODS.get(I) {
        (method.handler)(params, reply);
    }
}

type Trampoline = unsafe extern "C" fn(*mut sys::spdk_jsonrpc_request, *const sys::spdk_json_val);

/// Registers every method of `T` with SPDK's RPC server, callable once the app runs (SPDK's
/// RUNTIME state, like its own bdev methods, so JSON configs given with `-c` may use them).
/// Called from the load-time constructor, before SPDK's RPC server starts.
pub fn register<T: MethodTable>() {
    const { assert!(T::METHODS.len() <= MAX_METHODS) };
    let trampolines: [Trampoline; MAX_METHODS] = [
        trampoline::<T, 0>,
        trampoline::<T, 1>,
        trampoline::<T, 2>,
        trampoline::<T, 3>,
        trampoline::<T, 4>,
        trampoline::<T, 5>,
        trampoline::<T, 6>,
        trampoline::<T, 7>,
    ];
    for (method, trampoline) in T::METHODS.iter().zip(trampolines) {
        // SAFETY: the name is a static C string; SPDK keeps the pointer, which lives forever.
        unsafe {
            sys::spdk_rpc_register_method(
                method.name.as_ptr(),
                Some(trampoline),
                sys::SPDK_RPC_RUNTIME,
            )
        };
    }
}
