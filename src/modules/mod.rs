//! Bdev modules: each creates bdevs of one kind and serves their I/O.

pub mod malloc;
pub mod null;
