//! The quorum itself, written once for every host: QEMU's `quorum` block filter
//! (block/quorum.c) as host-neutral logic. quorum-tgt's reactors and the SPDK bdev module
//! each move bytes and run callbacks their own way and ask this crate what to do, so a vote
//! rule, a validation message, an event field or a counter behaves the same in both.
//!
//! No runtime, no `Rc`, no FFI and no `unsafe`: arrows only point into this crate.
//!
//! The path of one parent I/O: the host calls [`io::QuorumIo::start`] with the children it
//! may use, submits what the returned [`io::Step`] says, reports each child's completion to
//! [`io::QuorumIo::on_child_done`], hands the children's data to [`io::QuorumIo::vote`] when
//! asked, and completes the parent when told. Voting ([`vote`]), the rewrite guard
//! ([`guard`]), events ([`events`]) and counters ([`counters`]) happen inside.
#![forbid(unsafe_code)]

pub mod bytes;
pub mod counters;
pub mod events;
pub mod guard;
pub mod io;
#[cfg(test)]
mod model_tests;
pub mod options;
pub mod params;
pub mod quorum;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
pub mod vote;

pub use bytes::ChildBytes;
pub use counters::{ChildCounters, CounterSnapshot};
pub use events::{EventKind, EventLog, EventSink, OpType, QuorumEvent};
pub use io::{Children, IoKind, QuorumIo, Request, Step};
pub use options::{QuorumOptions, ReadPattern, Refused};
pub use quorum::Quorum;
pub use vote::{ChildSet, MAX_CHILDREN};
