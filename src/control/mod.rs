//! The control plane: JSON-RPC methods in SPDK's names and shapes, the RPC server that
//! serves them, SPDK JSON config files (nothing but a list of those same calls), and the
//! target daemon's life cycle.

pub mod app;
pub mod config;
mod framing;
pub mod methods;
pub mod rpc;
pub mod server;
