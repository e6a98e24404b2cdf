//! The quorum RPC methods of CONTRACT section 2 inside SPDK's RPC server, with quorum-tgt's
//! names, params (the core's structs), defaults, messages and answers.

use quorum_core::events::merged;
use quorum_core::params::{
    decode, ChildParams, CreateParams, DeleteParams, GetBdevsParams, GetEventsParams, QuorumInfo,
};
use quorum_core::ScrubCounts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::{self, ControlError};
use crate::quorum_bdev::{self, QuorumBdev};
use crate::rpc::{Method, MethodTable, Reply, RpcError};

/// The table registered with SPDK.
pub struct QuorumMethods;

impl MethodTable for QuorumMethods {
    const METHODS: &'static [Method] = &[
        Method {
            name: c"bdev_quorum_create",
            handler: create,
        },
        Method {
            name: c"bdev_quorum_delete",
            handler: delete,
        },
        Method {
            name: c"bdev_quorum_add_child",
            handler: add_child,
        },
        Method {
            name: c"bdev_quorum_remove_child",
            handler: remove_child,
        },
        Method {
            name: c"bdev_quorum_get_bdevs",
            handler: get_bdevs,
        },
        Method {
            name: c"bdev_quorum_get_events",
            handler: get_events,
        },
    ];
}

impl From<ControlError> for RpcError {
    fn from(e: ControlError) -> RpcError {
        RpcError::errno(e.errno, e.message)
    }
}

fn params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    decode(params).map_err(RpcError::invalid_params)
}

fn create(p: Option<Value>, reply: Reply) {
    reply.send((|| {
        let p: CreateParams = params(p)?;
        Ok(Value::String(control::create(&p)?))
    })());
}

/// Answers `true` once `done` says the change finished everywhere.
fn answer_when_done(reply: Reply, start: impl FnOnce(control::Done) -> Result<(), ControlError>) {
    // The reply is needed by both paths (refused now, or done later): hold it in a cell
    // the completion takes it from.
    let cell = std::rc::Rc::new(std::cell::Cell::new(Some(reply)));
    let later = cell.clone();
    let done = Box::new(move |r: Result<(), ControlError>| {
        if let Some(reply) = later.take() {
            reply.send(r.map(|()| Value::Bool(true)).map_err(RpcError::from));
        }
    });
    if let Err(e) = start(done) {
        if let Some(reply) = cell.take() {
            reply.send(Err(e.into()));
        }
    }
}

fn delete(p: Option<Value>, reply: Reply) {
    let p: DeleteParams = match params(p) {
        Ok(p) => p,
        Err(e) => return reply.send(Err(e)),
    };
    answer_when_done(reply, |done| control::delete(&p.name, done));
}

fn add_child(p: Option<Value>, reply: Reply) {
    let p: ChildParams = match params(p) {
        Ok(p) => p,
        Err(e) => return reply.send(Err(e)),
    };
    answer_when_done(reply, |done| {
        control::add_child(&p.name, &p.base_bdev, move || done(Ok(())))
    });
}

fn remove_child(p: Option<Value>, reply: Reply) {
    let p: ChildParams = match params(p) {
        Ok(p) => p,
        Err(e) => return reply.send(Err(e)),
    };
    answer_when_done(reply, |done| {
        control::remove_child(&p.name, &p.base_bdev, move || done(Ok(())))
    });
}

/// The quorums an optional `name` selects: that one, or all.
fn selected(name: &Option<String>) -> Result<Vec<&'static QuorumBdev>, ControlError> {
    match name {
        Some(name) => Ok(vec![control::find(name)?]),
        // SAFETY: on the app thread, where RPC handlers run.
        None => Ok(unsafe { quorum_bdev::all() }.collect()),
    }
}

/// Per quorum: options, children and their counters summed over every thread. The quorums
/// are visited one after another; the answer goes out after the last.
fn get_bdevs(p: Option<Value>, reply: Reply) {
    let quorums =
        match params::<GetBdevsParams>(p).and_then(|p| selected(&p.name).map_err(RpcError::from)) {
            Ok(q) => q.into_iter().map(|q| q.name().to_string()).collect(),
            Err(e) => return reply.send(Err(e)),
        };
    collect_next(quorums, Vec::new(), reply);
}

fn collect_next(mut names: Vec<String>, mut done: Vec<QuorumInfo>, reply: Reply) {
    if names.is_empty() {
        return reply.send(
            serde_json::to_value(done).map_err(|e| RpcError::errno(libc::EINVAL, e.to_string())),
        );
    }
    let name = names.remove(0);
    // A quorum deleted meanwhile is left out.
    let Ok(q) = control::find(&name) else {
        return collect_next(names, done, reply);
    };
    control::collect_counters(q, move |children| {
        let core = q.core();
        // No rebuild or scrub runs in this host yet.
        let info = QuorumInfo::new(
            &name,
            core.options(),
            core.replica_options(),
            children,
            None,
            ScrubCounts::default(),
        );
        done.push(info);
        collect_next(names, done, reply)
    });
}

fn get_events(p: Option<Value>, reply: Reply) {
    reply.send((|| {
        let p: GetEventsParams = params(p)?;
        let quorums = selected(&p.name)?;
        let events = merged(
            quorums.iter().map(|q| q.core().events()),
            p.since.unwrap_or(0),
            p.max.unwrap_or(usize::MAX),
        );
        serde_json::to_value(events).map_err(|e| RpcError::errno(libc::EINVAL, e.to_string()))
    })());
}
