//! The quorum RPCs (CONTRACT section 2): params and answers are `quorum_core::params`' (the
//! SPDK module decodes and answers the same), the work is `modules::quorum`'s.

use quorum_core::events::merged;
use quorum_core::params::{
    ChildParams, CreateParams, DeleteParams, GetBdevsParams, GetEventsParams, QuorumInfo,
};
use serde_json::{json, Value};

use crate::control::rpc::{parse_params, reply_now, reply_true, Ctx, Reply, RpcError, RpcMethod};
use crate::modules::quorum;

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

fn create(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: CreateParams = parse_params(params)?;
        let bdev = quorum::create(&ctx.rt, &p.name, &p.base_bdevs, p.options(), p.uuid)?;
        Ok(json!(bdev.name()))
    })
}

fn delete(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: DeleteParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    quorum::delete(&ctx.rt, &p.name, reply_true(reply));
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

/// Per quorum: options, children and per-child counters summed over every reactor. The
/// quorums are visited one after another; the reply goes out when the last one is summed.
fn get_bdevs(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    let p: GetBdevsParams = match parse_params(params) {
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
    collect_next(quorums, 0, Vec::new(), reply);
}

fn collect_next(
    quorums: Vec<quorum::QuorumEntry>,
    index: usize,
    mut results: Vec<QuorumInfo>,
    reply: Reply,
) {
    let Some((bdev, shared)) = quorums.get(index).cloned() else {
        return reply(Ok(json!(results)));
    };
    let s2 = shared.clone();
    shared.collect_counters(&bdev, move |children| {
        results.push(QuorumInfo::new(s2.name(), s2.options(), children));
        collect_next(quorums, index + 1, results, reply)
    });
}

fn get_events(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: GetEventsParams = parse_params(params)?;
        let quorums = match &p.name {
            Some(name) => vec![quorum::find(&ctx.rt, name)?],
            None => quorum::list(&ctx.rt),
        };
        let logs = quorums.iter().map(|(_, q)| q.events());
        let events = merged(logs, p.since.unwrap_or(0), p.max.unwrap_or(usize::MAX));
        Ok(json!(events))
    })
}
