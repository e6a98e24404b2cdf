//! The quorum RPCs (CONTRACT section 2): thin wrappers over `modules::quorum`.

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::control::rpc::{parse_params, reply_now, reply_true, Ctx, Reply, RpcError, RpcMethod};
use crate::modules::quorum::{self, QuorumOptions, ReadPattern};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "bdev_quorum_create",
            handler: create,
        },
        RpcMethod {
            name: "bdev_quorum_delete",
            handler: delete,
        },
        RpcMethod {
            name: "bdev_quorum_add_child",
            handler: add_child,
        },
        RpcMethod {
            name: "bdev_quorum_remove_child",
            handler: remove_child,
        },
        RpcMethod {
            name: "bdev_quorum_get_bdevs",
            handler: get_bdevs,
        },
        RpcMethod {
            name: "bdev_quorum_get_events",
            handler: get_events,
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    base_bdevs: Vec<String>,
    vote_threshold: usize,
    #[serde(default)]
    read_pattern: ReadPattern,
    #[serde(default)]
    blkverify: bool,
    #[serde(default)]
    rewrite_corrupted: bool,
    /// Not in the contract's list but accepted as SPDK's raid does, so `save_config` can
    /// bring a quorum back with the same identity.
    uuid: Option<uuid::Uuid>,
}

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        let options = QuorumOptions {
            vote_threshold: p.vote_threshold,
            read_pattern: p.read_pattern,
            blkverify: p.blkverify,
            rewrite_corrupted: p.rewrite_corrupted,
        };
        let bdev = quorum::create(&ctx.rt, &p.name, &p.base_bdevs, options, p.uuid)?;
        Ok(json!(bdev.name()))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: NameParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    quorum::delete(&ctx.rt, &p.name, reply_true(reply));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildParams {
    name: String,
    base_bdev: String,
}

fn add_child(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: ChildParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    quorum::add_child(&ctx.rt, &p.name, &p.base_bdev, reply_true(reply));
}

fn remove_child(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: ChildParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    quorum::remove_child(&ctx.rt, &p.name, &p.base_bdev, reply_true(reply));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    name: Option<String>,
}

/// Per quorum: options, children and per-child counters summed over every reactor. The
/// quorums are visited one after another; the reply goes out when the last one is summed.
fn get_bdevs(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: GetParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    let quorums = match &p.name {
        Some(name) => match quorum::find(&ctx.rt, name) {
            Ok(q) => vec![q],
            Err(e) => return reply(Err(RpcError::from(e))),
        },
        None => quorum::list(&ctx.rt),
    };
    let results = Arc::new(Mutex::new(Vec::new()));
    collect_next(quorums, 0, results, reply);
}

fn collect_next(
    quorums: Vec<quorum::QuorumEntry>,
    index: usize,
    results: Arc<Mutex<Vec<Value>>>,
    reply: Reply,
) {
    let Some((bdev, shared)) = quorums.get(index).cloned() else {
        let all = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
        return reply(Ok(Value::Array(all)));
    };
    let s2 = shared.clone();
    shared.collect_counters(&bdev, move |counters| {
        let o = s2.options();
        let children: Vec<Value> = counters
            .into_iter()
            .map(|(name, c)| {
                json!({
                    "name": name,
                    "reads": c.reads,
                    "writes": c.writes,
                    "flushes": c.flushes,
                    "io_errors": c.io_errors,
                    "bad_versions": c.bad_versions,
                    "rewrites": c.rewrites,
                })
            })
            .collect();
        results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(json!({
                "name": s2.name(),
                "vote_threshold": o.vote_threshold,
                "read_pattern": o.read_pattern.as_str(),
                "blkverify": o.blkverify,
                "rewrite_corrupted": o.rewrite_corrupted,
                "num_children": children.len(),
                "children": children,
            }));
        collect_next(quorums, index + 1, results, reply)
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    name: Option<String>,
    since: Option<u64>,
    max: Option<usize>,
}

fn get_events(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: EventsParams = parse_params(params)?;
        let quorums = match &p.name {
            Some(name) => vec![quorum::find(&ctx.rt, name)?],
            None => quorum::list(&ctx.rt),
        };
        let since = p.since.unwrap_or(0);
        let max = p.max.unwrap_or(usize::MAX);
        let mut events: Vec<_> = quorums
            .iter()
            .flat_map(|(_, q)| q.events().since(since, max))
            .collect();
        events.sort_by_key(|e| e.id);
        events.truncate(max);
        serde_json::to_value(events)
            .map_err(|e| RpcError::new(crate::control::rpc::INTERNAL_ERROR, e.to_string()))
    })
}
