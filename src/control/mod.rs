//! The control plane: JSON-RPC methods in SPDK's names and shapes, and SPDK JSON config
//! files, which are nothing but a list of those same calls.

pub mod config;
pub mod methods;
pub mod rpc;
