//! Exports: how clients outside the process reach bdevs, over NBD or vhost-user-blk. Export
//! servers run their data path on the reactors; what they share lives beside them here.

pub mod gate;
pub mod nbd;
pub(crate) mod socket;
pub mod vhost_blk;
