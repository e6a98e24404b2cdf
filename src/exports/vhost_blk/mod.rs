//! The vhost-user-blk export (SPDK's vhost block controllers): `virtio_blk` (the device
//! model, pure), `memory` (the guest's memory table), `device` (the vhost-user backend,
//! control only, driven by rust-vmm's `vhost` crate on the controller's thread), `vring`
//! (one virtqueue's data path, a reactor poller) and `controller` (the table, sockets and
//! life cycle, RPC-facing calls).

mod controller;
mod device;
mod memory;
pub mod virtio_blk;
mod vring;

pub use controller::{
    config_entries, controllers_json, create_controller, delete_controller, set_socket_dir,
    socket_path, stop_all_blocking, Controller, VhostContext, VhostError,
};
