//! Not written yet: this subsystem's methods arrive with its issue.

use crate::control::rpc::RpcMethod;

/// This file's methods.
pub fn methods() -> Vec<RpcMethod> {
    Vec::new()
}
