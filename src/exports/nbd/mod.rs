//! The NBD export server inside the target: `proto` (the wire format, shared with the NBD
//! client bdev through [`crate::nbd`]), `conn` (one client's state machine and data path),
//! `server` (listener, export table, per-reactor connection sets, RPC-facing control calls).

mod conn;
mod server;

/// The wire format, shared with the NBD client bdev (see [`crate::nbd`]).
pub use crate::nbd::proto;

pub use server::{
    attach_client, config_entries, create_export, delete_export, exports_json, start, stop,
    stop_blocking, Export, ListenAddr, NbdContext, NbdError, DEFAULT_PORT,
};
