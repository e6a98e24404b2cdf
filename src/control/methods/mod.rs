//! Every RPC method the target serves, gathered from one file per subsystem.

mod bdev_aio;
mod bdev_delay;
mod bdev_error;
mod bdev_generic;
mod bdev_malloc;
mod bdev_nbd_client;
mod bdev_null;
mod bdev_quorum;
mod bdev_uring;
mod framework;
mod nbd;
mod vhost;

use super::rpc::RpcMethod;

/// All methods, in the order `rpc_get_methods` lists them.
pub fn all() -> Vec<RpcMethod> {
    [
        framework::methods(),
        bdev_generic::methods(),
        bdev_malloc::methods(),
        bdev_null::methods(),
        bdev_uring::methods(),
        bdev_aio::methods(),
        bdev_error::methods(),
        bdev_delay::methods(),
        bdev_nbd_client::methods(),
        bdev_quorum::methods(),
        nbd::methods(),
        vhost::methods(),
    ]
    .concat()
}

/// Looks a method up by name.
pub fn find(name: &str) -> Option<RpcMethod> {
    all().into_iter().find(|m| m.name == name)
}

use serde::Deserialize;
use serde_json::Value;

use super::rpc::{parse_params, reply_true, Ctx, Reply};
use crate::bdev::BdevRegistry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// The `bdev_<module>_delete {name}` shape shared by every base module: refuses a bdev of
/// another module (ENODEV, as SPDK) or a claimed one (EBUSY), answers `true` when gone.
fn bdev_generic_delete(ctx: &Ctx, params: Option<Value>, product: &'static str, reply: Reply) {
    let p: DeleteParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return reply(Err(e)),
    };
    BdevRegistry::of(&ctx.rt).unregister(&ctx.rt, &p.name, Some(product), reply_true(reply));
}
