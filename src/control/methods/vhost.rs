//! The vhost-user-blk methods (CONTRACT section 2, SPDK's names and params):
//! `vhost_create_blk_controller`, `vhost_get_controllers`, `vhost_delete_controller`. Their
//! `save_config` entries come from [`crate::exports::vhost_blk::config_entries`].

use serde::Deserialize;
use serde_json::Value;

use crate::control::rpc::{parse_params, reply_now, reply_true, Ctx, Reply, RpcError, RpcMethod};
use crate::exports::vhost_blk::{self, VhostError};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "vhost_create_blk_controller",
            handler: create_blk_controller,
        },
        RpcMethod {
            name: "vhost_get_controllers",
            handler: get_controllers,
        },
        RpcMethod {
            name: "vhost_delete_controller",
            handler: delete_controller,
        },
    ]
}

impl From<VhostError> for RpcError {
    fn from(e: VhostError) -> RpcError {
        RpcError::errno(e.errno(), e.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    ctrlr: String,
    dev_name: String,
    cpumask: Option<String>,
    #[serde(default)]
    readonly: bool,
    /// SPDK's virtio-blk transport: only `vhost_user_blk` is served.
    transport: Option<String>,
    /// Packed rings are not offered; SPDK's client sends an explicit `false`.
    #[serde(default)]
    packed_ring: bool,
}

fn create_blk_controller(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        if p.transport
            .as_deref()
            .is_some_and(|t| t != "vhost_user_blk")
        {
            return Err(RpcError::errno(
                libc::EINVAL,
                "only the vhost_user_blk transport is served",
            ));
        }
        if p.packed_ring {
            return Err(RpcError::errno(
                libc::EINVAL,
                "packed rings are not supported",
            ));
        }
        vhost_blk::create_controller(
            &ctx.rt,
            &p.ctrlr,
            &p.dev_name,
            p.cpumask.as_deref(),
            p.readonly,
        )?;
        Ok(Value::Bool(true))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    name: Option<String>,
}

fn get_controllers(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: GetParams = parse_params(params)?;
        Ok(vhost_blk::controllers_json(&ctx.rt, p.name.as_deref())?)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    ctrlr: String,
}

fn delete_controller(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: DeleteParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    vhost_blk::delete_controller(&ctx.rt, &p.ctrlr, reply_true(reply));
}
