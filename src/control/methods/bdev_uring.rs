//! `bdev_uring_create` / `bdev_uring_delete`, SPDK's params (with newer SPDK's optional `uuid`).

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::bdev_generic_delete;
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcMethod};
use crate::modules::uring;

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_uring_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_uring_delete",
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
    uuid: Option<Uuid>,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        let bdev = uring::create_with_uuid(&ctx.rt, &p.name, &p.filename, p.block_size, p.uuid)?;
        Ok(json!(bdev.name()))
    })
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    bdev_generic_delete(ctx, params, uring::PRODUCT_NAME, reply)
}
