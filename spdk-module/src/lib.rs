//! The quorum as an SPDK bdev module: `LD_PRELOAD` of this library into a stock SPDK app
//! (spdk_tgt, nvmf_tgt, iscsi_tgt, vhost, bdevperf) registers the `bdev_quorum` module and the
//! quorum RPC methods of CONTRACT section 2. The quorum itself (vote, options, events,
//! counters, the per-I/O state machine) is `quorum_core`, shared with quorum-tgt; this crate
//! is the SPDK host's glue, one file per concern:
//!
//! - [`module`]: registration at load time, the bdev_io context size, iobuf pool
//! - [`quorum_bdev`]: the bdev and the function table SPDK calls
//! - [`channel`]: each thread's view of the children
//! - [`io`]: one I/O in the bdev_io's `driver_ctx`, driven by the core's state machine;
//!   [`child_memory`]: where the children's data lives (iobuf buffers, lent memory)
//! - [`child`], [`hot_remove`]: children's descriptors and claims, a child SPDK removes
//! - [`control`], [`methods`]: create/delete/add/remove and the RPC methods over them
//! - [`rpc`], [`json`]: SPDK's RPC server and JSON, bridged to serde once
//! - [`notify`], [`log`], [`thread`], [`spdk_inline`]: SPDK services, wrapped once
//!
//! The library resolves SPDK's symbols from the process it is loaded into (bindings:
//! `spdk-sys`, generated for SPDK v26.05).

mod channel;
mod child;
mod child_memory;
mod control;
mod hot_remove;
mod io;
mod json;
mod log;
mod methods;
mod module;
mod notify;
mod quorum_bdev;
mod rpc;
mod spdk_inline;
mod thread;
