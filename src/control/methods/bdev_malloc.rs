//! `bdev_malloc_create` / `bdev_malloc_delete`, SPDK's params.

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::bdev_generic_delete;
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcMethod};
use crate::modules::malloc;

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_malloc_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_malloc_delete",
            handler: delete,
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
    /// Sent as `false` by SPDK's client; like SPDK, meaningless without metadata (`md_size`,
    /// not supported here), so accepted and ignored.
    #[serde(default, rename = "md_interleave")]
    _md_interleave: bool,
    /// Sent as `false` by SPDK's client; ignored without DIF, as in SPDK.
    #[serde(default, rename = "dif_is_head_of_md")]
    _dif_is_head_of_md: bool,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        let bdev = malloc::create(&ctx.rt, p.name, p.num_blocks, p.block_size, p.uuid)?;
        Ok(json!(bdev.name()))
    })
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    bdev_generic_delete(ctx, params, malloc::PRODUCT_NAME, reply)
}
