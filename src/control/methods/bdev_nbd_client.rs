//! `bdev_nbd_client_create` / `bdev_nbd_client_delete`: a bdev over a remote NBD export
//! (ours; SPDK has no NBD initiator). The create answers once the first connection is
//! negotiated, so the reply says whether the server is reachable and the export usable.

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::bdev_generic_delete;
use crate::control::rpc::{parse_params, Ctx, Reply, RpcError, RpcMethod};
use crate::modules::nbd_client::{
    self, NbdClientOptions, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_IO_TIMEOUT_MS,
};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_nbd_client_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_nbd_client_delete",
            handler: delete,
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    /// `nbd://host[:port]/export` or `nbd+unix:///export?socket=PATH`.
    uri: String,
    block_size: Option<u32>,
    num_connections: Option<u32>,
    io_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    uuid: Option<Uuid>,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: CreateParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    let options = NbdClientOptions {
        name: p.name,
        uri: p.uri,
        block_size: p.block_size,
        num_connections: p.num_connections,
        io_timeout_ms: p.io_timeout_ms.unwrap_or(DEFAULT_IO_TIMEOUT_MS),
        connect_timeout_ms: p.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        uuid: p.uuid,
    };
    nbd_client::create(&ctx.rt, options, move |r| {
        reply(r.map(|bdev| json!(bdev.name())).map_err(RpcError::from))
    });
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    bdev_generic_delete(ctx, params, nbd_client::PRODUCT_NAME, reply)
}
