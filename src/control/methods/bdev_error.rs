//! `bdev_error_create` / `bdev_error_delete` / `bdev_error_inject_error`, SPDK's params.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::bdev_generic_delete;
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcError, RpcMethod};
use crate::modules::error::{self, ErrorType, Injection, Target};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_error_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_error_delete",
            handler: delete,
        },
        RpcMethod {
            name: "bdev_error_inject_error",
            handler: inject_error,
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    base_name: String,
    uuid: Option<Uuid>,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        error::create(&ctx.rt, &p.base_name, p.uuid)?;
        Ok(Value::Bool(true))
    })
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    bdev_generic_delete(ctx, params, error::PRODUCT_NAME, reply)
}

/// SPDK's decoder types: `num` u32 (default 1), `queue_depth` and `corrupt_offset` u64,
/// `corrupt_value` u8, so out-of-range numbers are refused as invalid params.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectParams {
    name: String,
    io_type: String,
    error_type: String,
    #[serde(default = "one")]
    num: u32,
    #[serde(default)]
    queue_depth: u64,
    #[serde(default)]
    corrupt_offset: u64,
    #[serde(default)]
    corrupt_value: u8,
}

fn one() -> u32 {
    1
}

fn inject_error(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: InjectParams = parse_params(params)?;
        let target = Target::from_spdk_name(&p.io_type).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "Invalid parameters: io_type '{}' is not one of read, write, flush, unmap, all, clear",
                p.io_type
            ))
        })?;
        let error_type = ErrorType::from_spdk_name(&p.error_type).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "Invalid parameters: error_type '{}' is not one of failure, pending, corrupt_data, nomem",
                p.error_type
            ))
        })?;
        let injection = Injection {
            target,
            error_type,
            num: p.num,
            queue_depth: p.queue_depth,
            corrupt_offset: p.corrupt_offset,
            corrupt_value: p.corrupt_value,
        };
        error::inject(&ctx.rt, &p.name, &injection)?;
        Ok(Value::Bool(true))
    })
}
