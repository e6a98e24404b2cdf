//! `bdev_aio_create` / `bdev_aio_delete`, SPDK's params (`readonly`, and newer SPDK's
//! `fallocate` and `uuid`, which its client and `save_config` send).

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::bdev_generic_delete;
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcError, RpcMethod};
use crate::modules::aio::{self, AioOptions};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_aio_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_aio_delete",
            handler: delete,
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    filename: String,
    block_size: Option<u32>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    fallocate: bool,
    uuid: Option<Uuid>,
    /// SPDK's client always sends it; RWF_NOWAIT submission is not implemented, so only
    /// `false` is accepted.
    #[serde(default)]
    nowait: bool,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        if p.nowait {
            return Err(RpcError::invalid_params(
                "Invalid parameters: nowait: RWF_NOWAIT submission is not supported",
            ));
        }
        let opts = AioOptions {
            block_size: p.block_size,
            readonly: p.readonly,
            fallocate: p.fallocate,
            uuid: p.uuid,
        };
        let bdev = aio::create(&ctx.rt, &p.name, &p.filename, opts)?;
        Ok(json!(bdev.name()))
    })
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    bdev_generic_delete(ctx, params, aio::PRODUCT_NAME, reply)
}
