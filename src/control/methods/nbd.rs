//! The NBD export methods (CONTRACT section 2): `nbd_server_start`, `nbd_server_stop`,
//! `nbd_export_create`, `nbd_export_delete`, `nbd_get_exports`. Their `save_config`
//! entries come from [`crate::exports::nbd::config_entries`].

use serde::Deserialize;
use serde_json::{json, Value};

use super::framework::NoParams;
use crate::control::rpc::{parse_params, reply_now, reply_true, Ctx, Reply, RpcError, RpcMethod};
use crate::exports::nbd::{self, ListenAddr, NbdError};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "nbd_server_start",
            handler: server_start,
        },
        RpcMethod {
            name: "nbd_server_stop",
            handler: server_stop,
        },
        RpcMethod {
            name: "nbd_export_create",
            handler: export_create,
        },
        RpcMethod {
            name: "nbd_export_delete",
            handler: export_delete,
        },
        RpcMethod {
            name: "nbd_get_exports",
            handler: get_exports,
        },
    ]
}

impl From<NbdError> for RpcError {
    fn from(e: NbdError) -> RpcError {
        RpcError::errno(e.errno(), e.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartParams {
    /// An absolute path (Unix socket) or a host to bind (TCP).
    listen_addr: String,
    /// TCP port (default 10809).
    listen_port: Option<u16>,
    /// Seconds a client may take to finish the handshake (0: no limit; default 10, as
    /// QEMU's `handshake-max-seconds`).
    handshake_max_seconds: Option<u64>,
}

fn server_start(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: StartParams = parse_params(params)?;
        nbd::start(
            &ctx.rt,
            ListenAddr {
                listen_addr: p.listen_addr,
                listen_port: p.listen_port,
                handshake_max_seconds: p.handshake_max_seconds,
            },
        )?;
        Ok(Value::Bool(true))
    })
}

fn server_stop(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    if let Err(e) = parse_params::<NoParams>(params) {
        return reply(Err(e));
    }
    nbd::stop(&ctx.rt, reply_true(reply));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    bdev_name: String,
    export_name: Option<String>,
    #[serde(default)]
    read_only: bool,
}

fn export_create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        let name = nbd::create_export(&ctx.rt, &p.bdev_name, p.export_name, p.read_only)?;
        Ok(json!(name))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    export_name: String,
}

fn export_delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: DeleteParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    nbd::delete_export(&ctx.rt, &p.export_name, reply_true(reply));
}

fn get_exports(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<NoParams>(params)?;
        Ok(nbd::exports_json(&ctx.rt))
    })
}
