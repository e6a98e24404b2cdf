//! Bdev modules: each creates bdevs of one kind and serves their I/O.

pub mod aio;
pub mod delay;
pub mod error;
mod file_common;
mod file_io;
pub mod index;
pub mod malloc;
pub mod nbd_client;
pub mod null;
pub mod passthru;
pub mod quorum;
pub mod uring;
