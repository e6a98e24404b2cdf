//! One quorum's host-neutral state, shared by every thread serving its I/O: options,
//! geometry, the rewrite guard and the event ring. Each host keeps one beside its own view
//! of the children (channels, claims, descriptors).

use std::sync::Arc;

use crate::events::{EventLog, EventSink};
use crate::guard::RewriteGuard;
use crate::options::{Geometry, QuorumOptions};
use crate::replica::ReplicaOptions;

/// A quorum as the state machine needs it.
pub struct Quorum {
    name: String,
    options: QuorumOptions,
    replica: ReplicaOptions,
    geometry: Geometry,
    guard: Option<RewriteGuard>,
    events: EventLog,
}

impl Quorum {
    /// A quorum named `name` (options already validated, `geometry` its children's);
    /// `sink` numbers its events and mirrors them as the host's notifications.
    pub fn new(
        name: &str,
        options: QuorumOptions,
        geometry: Geometry,
        sink: Arc<dyn EventSink>,
    ) -> Quorum {
        Quorum {
            name: name.to_string(),
            options,
            replica: ReplicaOptions::default(),
            geometry,
            // Only rewrites can overwrite newer data, so only they need the guard's table.
            guard: options
                .rewrite_corrupted
                .then(|| RewriteGuard::new(geometry.block_size)),
            events: EventLog::new(name, sink),
        }
    }

    /// The quorum's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options it was created with.
    pub fn options(&self) -> QuorumOptions {
        self.options
    }

    /// The same quorum with replica-lifecycle options. Resync and rebuild copies go through
    /// the rewrite guard, so it gets one whatever `rewrite_corrupted` says.
    pub fn with_replica_options(mut self, replica: ReplicaOptions) -> Quorum {
        self.replica = replica;
        if self.guard.is_none() {
            self.guard = Some(RewriteGuard::new(self.geometry.block_size));
        }
        self
    }

    /// Its replica-lifecycle options.
    pub fn replica_options(&self) -> ReplicaOptions {
        self.replica
    }

    /// A replica record for one of its children, sized and divided into regions as this
    /// quorum's options say.
    pub fn new_replica(
        &self,
        state: crate::ChildState,
        reason: crate::StateReason,
    ) -> crate::Replica {
        let blocks = self.replica.region_blocks(self.geometry.block_size);
        crate::Replica::new(self.geometry.num_blocks, blocks, state, reason)
    }

    /// The geometry all its children share.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Its event ring.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The rewrite guard, present with `rewrite_corrupted` or replica options.
    pub fn guard(&self) -> Option<&RewriteGuard> {
        self.guard.as_ref()
    }
}
