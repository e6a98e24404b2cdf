//! The vhost-user-blk export (SPDK's vhost block controllers): `virtio_blk` (the device
//! model, pure), `memory` (the guest's memory table), `device` (the vhost-user backend,
//! control only, driven by rust-vmm's `vhost` crate on the controller's thread), `vring`
//! (one virtqueue's data path, a reactor poller), `inflight` (the shared record of heads in
//! flight that lets a restarted daemon resubmit them) and `controller` (the table, sockets
//! and life cycle, RPC-facing calls).

mod controller;
mod device;
mod inflight;
mod memory;
pub mod virtio_blk;
mod vring;

pub use controller::{
    config_entries, controllers_json, create_controller, delete_controller, set_socket_dir,
    socket_path, stop_all_blocking, Controller, VhostContext, VhostError,
};
