//! `bdev_delay_create` / `bdev_delay_delete` / `bdev_delay_update_latency`, SPDK's params
//! (latencies in microseconds).

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::bdev_generic_delete;
use crate::bdev::BdevError;
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcError, RpcMethod};
use crate::modules::delay::{self, Latencies, LatencyType};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_delay_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_delay_delete",
            handler: delete,
        },
        RpcMethod {
            name: "bdev_delay_update_latency",
            handler: update_latency,
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    base_bdev_name: String,
    name: String,
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
    uuid: Option<Uuid>,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        let latencies = Latencies {
            avg_read: p.avg_read_latency,
            p99_read: p.p99_read_latency,
            avg_write: p.avg_write_latency,
            p99_write: p.p99_write_latency,
        };
        let bdev = delay::create(&ctx.rt, p.name, &p.base_bdev_name, latencies, p.uuid)?;
        Ok(json!(bdev.name()))
    })
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    bdev_generic_delete(ctx, params, delay::PRODUCT_NAME, reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    delay_bdev_name: String,
    latency_type: String,
    latency_us: u64,
}

/// SPDK answers both a bad latency type and a bdev that is not a delay bdev with invalid
/// params and these messages.
fn update_latency(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: UpdateParams = parse_params(params)?;
        let latency_type = LatencyType::from_spdk_name(&p.latency_type)
            .ok_or_else(|| RpcError::invalid_params("Please specify a valid latency type."))?;
        delay::update_latency(&ctx.rt, &p.delay_bdev_name, latency_type, p.latency_us).map_err(
            |e| match e {
                BdevError::NotFound(_) => {
                    RpcError::invalid_params("The requested bdev does not exist.")
                }
                other => other.into(),
            },
        )?;
        Ok(Value::Bool(true))
    })
}
