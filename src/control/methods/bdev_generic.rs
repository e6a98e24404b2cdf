//! Methods over every bdev whatever its module: `bdev_get_bdevs`, `bdev_get_iostat` and
//! `bdev_wait_for_examine`, with SPDK's params and result shapes.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::framework::NoParams;
use crate::bdev::{Bdev, BdevRegistry};
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcError, RpcMethod};
use crate::runtime::clock::{tick_rate, ticks};
use crate::runtime::{register_poller, unregister_poller, PollerId};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_get_bdevs",
            handler: get_bdevs,
        },
        RpcMethod {
            name: "bdev_get_iostat",
            handler: get_iostat,
        },
        RpcMethod {
            name: "bdev_wait_for_examine",
            handler: wait_for_examine,
        },
    ]
}

/// How often `bdev_get_bdevs` with a timeout looks for the bdev again.
const APPEAR_CHECK_PERIOD: Duration = Duration::from_millis(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevsParams {
    name: Option<String>,
    /// Milliseconds to wait for `name` to appear (SPDK's `timeout`; 0: answer at once).
    #[serde(default)]
    timeout: u64,
}

fn get_bdevs(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: GetBdevsParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    let registry = BdevRegistry::of(&ctx.rt);
    let Some(name) = p.name else {
        let list: Vec<Value> = registry.list().iter().map(|b| b.info_json()).collect();
        return reply(Ok(json!(list)));
    };
    match registry.get(&name) {
        Ok(bdev) => reply(Ok(json!([bdev.info_json()]))),
        Err(e) if p.timeout == 0 => reply(Err(e.into())),
        Err(_) => wait_for_bdev(
            registry,
            name,
            Instant::now() + Duration::from_millis(p.timeout),
            reply,
        ),
    }
}

/// Answers once `name` is registered or `deadline` passes (ENODEV), checking from a timed
/// poller on this reactor.
fn wait_for_bdev(registry: Arc<BdevRegistry>, name: String, deadline: Instant, reply: Reply) {
    let me: Rc<Cell<Option<PollerId>>> = Rc::default();
    let me2 = me.clone();
    let mut reply = Some(reply);
    let id = register_poller(
        Box::new(move || {
            let found = registry.get(&name);
            if found.is_err() && Instant::now() < deadline {
                return 0;
            }
            if let Some(reply) = reply.take() {
                reply(
                    found
                        .map(|bdev| json!([bdev.info_json()]))
                        .map_err(Into::into),
                );
            }
            if let Some(id) = me2.get() {
                unregister_poller(id);
            }
            1
        }),
        Some(APPEAR_CHECK_PERIOD),
        None,
    );
    me.set(Some(id));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostatParams {
    /// One bdev (SPDK's deprecated spelling).
    name: Option<String>,
    /// Several bdevs (what SPDK's current client sends for `--names`).
    names: Option<Vec<String>>,
    /// Per-reactor figures: not kept apart by this target, so only `false` is accepted.
    #[serde(default)]
    per_channel: bool,
    /// Statistics are never reset by reading them: only "none" is accepted.
    reset_mode: Option<String>,
}

fn get_iostat(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let bdevs = match iostat_targets(ctx, params) {
        Ok(bdevs) => bdevs,
        Err(e) => return reply(Err(e)),
    };
    collect_iostat(ctx.clone(), bdevs.into(), Vec::new(), reply);
}

/// Checks `bdev_get_iostat` params and resolves the bdevs it covers (all when none named).
fn iostat_targets(ctx: &Ctx, params: Option<Value>) -> Result<Vec<Arc<Bdev>>, RpcError> {
    let p: GetIostatParams = parse_params(params)?;
    if p.per_channel {
        return Err(RpcError::invalid_params(
            "per_channel statistics are not kept by this target",
        ));
    }
    if let Some(mode) = p.reset_mode.filter(|m| m != "none") {
        return Err(RpcError::invalid_params(format!(
            "reset_mode '{mode}' is not supported (only \"none\")"
        )));
    }
    let registry = BdevRegistry::of(&ctx.rt);
    let names = match (p.name, p.names) {
        (Some(_), Some(_)) => {
            return Err(RpcError::errno(
                libc::EINVAL,
                "name and names cannot both be given",
            ))
        }
        (Some(name), None) => vec![name],
        (None, Some(names)) => names,
        (None, None) => return Ok(registry.list()),
    };
    names
        .iter()
        .map(|n| registry.get(n).map_err(RpcError::from))
        .collect()
}

/// Sums each bdev's counters over all reactors, one bdev after another, then answers in
/// SPDK's shape.
fn collect_iostat(ctx: Ctx, mut rest: VecDeque<Arc<Bdev>>, mut done: Vec<Value>, reply: Reply) {
    let Some(bdev) = rest.pop_front() else {
        return reply(Ok(json!({
            "tick_rate": tick_rate(),
            "ticks": ticks(),
            "bdevs": done,
        })));
    };
    let ctx2 = ctx.clone();
    let name = bdev.name().to_string();
    bdev.collect_stats(&ctx.rt, move |stats| {
        let mut entry = json!({"name": name});
        if let (Value::Object(entry), Ok(Value::Object(stats))) =
            (&mut entry, serde_json::to_value(stats))
        {
            entry.extend(stats);
        }
        done.push(entry);
        collect_iostat(ctx2, rest, done, reply);
    });
}

/// Bdevs here have no examine step (no partition tables or logical volumes to discover), so
/// this is immediate; it exists because SPDK's saved configs end with it.
fn wait_for_examine(_ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<NoParams>(params)?;
        Ok(Value::Bool(true))
    })
}
