//! Bdev modules: each creates bdevs of one kind and serves their I/O.

pub mod aio;
pub mod delay;
pub mod error;
pub mod malloc;
pub mod null;
pub mod passthru;
pub mod uring;
