//! A quorum block device: QEMU's `quorum` block filter rebuilt as an SPDK-style poll-mode
//! bdev module. Layers, bottom up: `runtime` (reactors, channels, buffers), `bdev` (the
//! block-device layer), `modules` (malloc, null, uring, aio, error, delay, quorum, NBD client), `exports`
//! (NBD), with `nbd` (the NBD wire format both of them speak), then the control plane and the binaries.

pub mod bdev;
pub mod control;
pub mod exports;
pub mod fuzzing;
pub mod modules;
pub mod nbd;
pub mod perf;
pub mod runtime;
