//! One quorum's host-neutral state, shared by every thread serving its I/O: options,
//! geometry, the rewrite guard and the event ring. Each host keeps one beside its own view
//! of the children (channels, claims, descriptors).

use std::sync::Arc;

use crate::events::{EventLog, EventSink};
use crate::guard::RewriteGuard;
use crate::options::{Geometry, QuorumOptions};

/// A quorum as the state machine needs it.
pub struct Quorum {
    name: String,
    options: QuorumOptions,
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

    /// The geometry all its children share.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Its event ring.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The rewrite guard, present with `rewrite_corrupted`.
    pub(crate) fn guard(&self) -> Option<&RewriteGuard> {
        self.guard.as_ref()
    }
}
