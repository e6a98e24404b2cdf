//! The NBD export server inside the target: `proto` (the wire format, pure), `conn` (one
//! client's state machine and data path), `server` (listener, export table, per-reactor
//! connection sets, RPC-facing control calls).

mod conn;
pub mod proto;
mod server;

pub use server::{
    attach_client, config_entries, create_export, delete_export, exports_json, start, stop,
    stop_blocking, Export, ListenAddr, NbdContext, NbdError, DEFAULT_PORT,
};
