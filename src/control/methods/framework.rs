//! The application-level methods of SPDK's `spdk_tgt` (version, method list, reactors,
//! subsystems and their saved config, notifications), in SPDK's names and result shapes, so
//! `spdk-rpc save_config` and monitoring scripts written for SPDK work unchanged.

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::bdev::notify::{Notifier, NOTIFY_TYPES};
use crate::bdev::BdevRegistry;
use crate::control::rpc::{parse_params, reply_now, Ctx, Reply, RpcError, RpcMethod};
use crate::runtime::channel::on_every_reactor;
use crate::runtime::clock::tick_rate;
use crate::runtime::cpumask::format_cpumask;
use crate::runtime::{current_reactor, reactor_times};

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    vec![
        RpcMethod {
            name: "spdk_get_version",
            handler: get_version,
        },
        RpcMethod {
            name: "rpc_get_methods",
            handler: get_methods,
        },
        RpcMethod {
            name: "framework_wait_init",
            handler: wait_init,
        },
        RpcMethod {
            name: "framework_get_reactors",
            handler: get_reactors,
        },
        RpcMethod {
            name: "framework_get_subsystems",
            handler: get_subsystems,
        },
        RpcMethod {
            name: "framework_get_config",
            handler: get_config,
        },
        RpcMethod {
            name: "notify_get_types",
            handler: notify_get_types,
        },
        RpcMethod {
            name: "notify_get_notifications",
            handler: notify_get_notifications,
        },
    ]
}

/// Params of methods that take none: `{}` or nothing, anything else refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

fn get_version(_ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<NoParams>(params)?;
        let version = env!("CARGO_PKG_VERSION");
        let rev = env!("QUORUM_GIT_REV");
        let mut parts = version
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor, patch) = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        let suffix = version.find('-').map_or("", |i| &version[i..]);
        Ok(json!({
            "version": format!("quorum-tgt v{version} git sha1 {rev}"),
            "fields": {
                "major": major,
                "minor": minor,
                "patch": patch,
                "suffix": suffix,
                "commit": rev,
            }
        }))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethodsParams {
    /// Only methods callable in the current state: all of them, once the target serves RPC
    /// (there is no SPDK "startup" state here).
    #[serde(default, rename = "current")]
    _current: bool,
    /// Deprecated aliases too: there are none.
    #[serde(default, rename = "include_aliases")]
    _include_aliases: bool,
}

fn get_methods(_ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<GetMethodsParams>(params)?;
        let names: Vec<&str> = super::all().iter().map(|m| m.name).collect();
        Ok(json!(names))
    })
}

/// The config is applied before the RPC socket serves, so initialization is always done.
fn wait_init(_ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<NoParams>(params)?;
        Ok(Value::Bool(true))
    })
}

/// Visits every reactor by message and reports SPDK's per-reactor figures. Each reactor runs
/// one lightweight thread in SPDK's terms; reactor 0's is SPDK's `app_thread`.
fn get_reactors(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    if let Err(e) = parse_params::<NoParams>(params) {
        return reply(Err(e));
    }
    let rt = ctx.rt.clone();
    let found = Arc::new(Mutex::new(Vec::new()));
    let collect = found.clone();
    on_every_reactor(
        &ctx.rt,
        move || {
            let index = current_reactor().unwrap_or(0);
            let core = rt.core_of(index);
            let (busy, idle) = reactor_times();
            let name = if index == 0 {
                "app_thread".to_string()
            } else {
                format!("reactor_{core}")
            };
            let entry = json!({
                "lcore": core,
                "busy": busy,
                "idle": idle,
                "in_interrupt": rt.interrupt_mode(),
                "lw_threads": [{
                    "name": name,
                    "id": index + 1,
                    "cpumask": format_cpumask(&[core]),
                    "elapsed": busy + idle,
                }],
            });
            collect
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((index, entry));
        },
        move || {
            let mut list = std::mem::take(&mut *found.lock().unwrap_or_else(|e| e.into_inner()));
            list.sort_by_key(|(index, _)| *index);
            let reactors: Vec<Value> = list.into_iter().map(|(_, entry)| entry).collect();
            reply(Ok(json!({
                "tick_rate": tick_rate(),
                "pid": std::process::id(),
                "reactors": reactors,
            })))
        },
    );
}

/// A subsystem of the target, in SPDK's dependency order (a subsystem after those it
/// depends on, which `save_config` relies on).
struct Subsystem {
    name: &'static str,
    depends_on: &'static [&'static str],
    /// The config entries that recreate its current state.
    config: fn(&Ctx) -> Vec<Value>,
}

const SUBSYSTEMS: [Subsystem; 3] = [
    Subsystem {
        name: "bdev",
        depends_on: &[],
        config: bdev_config,
    },
    Subsystem {
        name: "nbd",
        depends_on: &["bdev"],
        config: nbd_config,
    },
    Subsystem {
        name: "vhost_blk",
        depends_on: &["bdev"],
        config: vhost_blk_config,
    },
];

/// One entry per bdev in registration order (base bdevs before what is built on them), then
/// `bdev_wait_for_examine`, as SPDK writes it.
fn bdev_config(ctx: &Ctx) -> Vec<Value> {
    let mut entries: Vec<Value> = BdevRegistry::of(&ctx.rt)
        .list()
        .iter()
        .filter_map(|bdev| bdev.backend().config_entry(bdev))
        .map(|(method, params)| json!({"method": method, "params": params}))
        .collect();
    entries.push(json!({"method": "bdev_wait_for_examine"}));
    entries
}

/// `nbd_server_start` then one `nbd_export_create` per export.
fn nbd_config(ctx: &Ctx) -> Vec<Value> {
    crate::exports::nbd::config_entries(&ctx.rt)
}

/// One `vhost_create_blk_controller` per controller.
fn vhost_blk_config(ctx: &Ctx) -> Vec<Value> {
    crate::exports::vhost_blk::config_entries(&ctx.rt)
}

fn get_subsystems(_ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<NoParams>(params)?;
        let list: Vec<Value> = SUBSYSTEMS
            .iter()
            .map(|s| json!({"subsystem": s.name, "depends_on": s.depends_on}))
            .collect();
        Ok(json!(list))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetConfigParams {
    name: String,
    /// SPDK groups some entries in batch arrays when asked; this target writes none, so the
    /// answer is the same either way.
    #[serde(default, rename = "with_batches")]
    _with_batches: bool,
}

fn get_config(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: GetConfigParams = parse_params(params)?;
        let subsystem = SUBSYSTEMS
            .iter()
            .find(|s| s.name == p.name)
            .ok_or_else(|| RpcError::invalid_params(format!("Subsystem '{}' not found", p.name)))?;
        Ok(json!((subsystem.config)(ctx)))
    })
}

fn notify_get_types(_ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        parse_params::<NoParams>(params)?;
        Ok(json!(NOTIFY_TYPES))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetNotificationsParams {
    /// First notification id wanted (SPDK's default 0: the oldest kept).
    #[serde(default)]
    id: u64,
    /// At most this many (default: all).
    max: Option<u64>,
}

fn notify_get_notifications(ctx: &Ctx, params: Option<Value>, reply: Reply) {
    reply_now(reply, || {
        let p: GetNotificationsParams = parse_params(params)?;
        let max = p
            .max
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let list = ctx.rt.context::<Notifier>().since(p.id, max);
        Ok(json!(list))
    })
}
