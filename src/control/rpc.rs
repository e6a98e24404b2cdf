//! Method dispatch shared by the RPC server and the config loader: a method is a name and a
//! handler that runs on the main reactor and answers through a [`Reply`], later if it must
//! wait for other reactors.

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::bdev::BdevError;
use crate::runtime::Runtime;

/// JSON-RPC 2.0 parse error.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC 2.0 invalid request.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC 2.0 method not found.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC 2.0 invalid params.
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC 2.0 internal error.
pub const INTERNAL_ERROR: i32 = -32603;

/// A JSON-RPC error object: SPDK's codes (negative errno for refused operations).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i32,
    /// Human-readable message.
    pub message: String,
}

impl RpcError {
    /// An error with an explicit code.
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// Invalid params (-32602), the message naming what is wrong.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// A refused operation, as SPDK reports it: the negative errno and its text.
    pub fn errno(errno: i32, message: impl Into<String>) -> RpcError {
        RpcError::new(-errno, message)
    }
}

impl From<BdevError> for RpcError {
    fn from(e: BdevError) -> RpcError {
        RpcError::errno(e.errno(), e.to_string())
    }
}

/// How a handler answers; called exactly once, from any reactor.
pub type Reply = Box<dyn FnOnce(Result<Value, RpcError>) + Send>;

/// What a handler may reach.
#[derive(Clone)]
pub struct Ctx {
    /// The runtime whose bdevs and exports the call manages.
    pub rt: Runtime,
}

/// A method and its handler.
#[derive(Clone, Copy)]
pub struct RpcMethod {
    /// SPDK's method name.
    pub name: &'static str,
    /// Runs on the main reactor (reactor 0).
    pub handler: fn(&Ctx, Option<Value>, Reply),
}

/// Decodes params strictly, as SPDK's client sends them: unknown fields refused, missing
/// optionals and explicit `false` accepted, nulls dropped (the quorum core's rules, shared
/// with the SPDK module's RPCs); the message names the offending field.
pub fn parse_params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    quorum_core::params::decode(params).map_err(RpcError::invalid_params)
}

/// The completion of an operation that answers `true` on success (SPDK's delete and
/// topology calls), turning its error into the RPC error.
pub fn reply_true<E: Into<RpcError>>(reply: Reply) -> impl FnOnce(Result<(), E>) + Send {
    move |r| reply(r.map(|()| Value::Bool(true)).map_err(Into::into))
}

/// Runs `f` and replies with its result: for handlers that finish at once.
pub fn reply_now(reply: Reply, f: impl FnOnce() -> Result<Value, RpcError>) {
    reply(f());
}

/// Calls `method` from outside the reactors (config loading, tools) and waits.
pub fn call_blocking(
    ctx: &Ctx,
    method: &RpcMethod,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handler = method.handler;
    let ctx2 = ctx.clone();
    ctx.rt.send_msg(0, move || {
        handler(
            &ctx2,
            params,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
    });
    rx.recv()
        .unwrap_or_else(|_| Err(RpcError::new(INTERNAL_ERROR, "reactor stopped")))
}
