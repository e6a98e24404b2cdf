//! The quorum bdev in quorum-tgt: QEMU's `quorum` block filter (block/quorum.c) on this
//! runtime's reactors. The quorum itself (vote, options and checks, rewrite guard, events,
//! counters, the per-I/O state machine) is the host-neutral `quorum_core` crate, shared with
//! the SPDK module; this module is its host. Files: `control` (create, add and remove a
//! child, delete), `channel` (per-reactor data path: bdev I/O in, child I/O out, steps of the
//! core's state machine in between); here, the state the reactors share, the bdev backend
//! and the event sink.

mod channel;
mod control;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use quorum_core::events::{EventIds, EventKind, EventLog, EventSink};
use quorum_core::options::Geometry;
use quorum_core::params::{ChildInfo, CreateParams, DriverSpecific};
use quorum_core::{CounterSnapshot, Quorum};
use serde_json::{json, Value};

use self::channel::QuorumChannel;
pub use self::control::{add_child, create, delete, remove_child};
use super::index::ModuleIndex;
use crate::bdev::notify::Notifier;
use crate::bdev::{Bdev, BdevBackend, BdevChannel, BdevError, IoType};
use crate::runtime::Runtime;
pub use quorum_core::{QuorumOptions, ReadPattern};

/// SPDK-style product name of quorum bdevs.
pub const PRODUCT_NAME: &str = "Quorum disk";
/// The claim a quorum holds on each child.
const CLAIM: &str = "quorum";

/// A child as the quorum's control path knows it.
#[derive(Clone)]
struct Child {
    id: u64,
    name: Arc<str>,
    bdev: Arc<Bdev>,
}

/// Numbers events runtime-wide and mirrors them into the runtime's notification log.
struct RuntimeEvents {
    ids: Arc<EventIds>,
    notifier: Arc<Notifier>,
}

impl EventSink for RuntimeEvents {
    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn notify(&self, kind: EventKind, ctx: &str) {
        self.notifier.post(kind.notify_type(), ctx);
    }
}

/// State every reactor's channel of one quorum shares.
pub struct QuorumShared {
    core: Quorum,
    rt: Runtime,
    children: Mutex<Vec<Child>>,
    next_child_id: AtomicU64,
    retired: Mutex<HashMap<u64, CounterSnapshot>>,
}

impl QuorumShared {
    fn new(
        rt: &Runtime,
        name: &str,
        options: QuorumOptions,
        geometry: Geometry,
        children: &[Arc<Bdev>],
    ) -> QuorumShared {
        let sink = RuntimeEvents {
            ids: rt.context::<EventIds>(),
            notifier: rt.context::<Notifier>(),
        };
        QuorumShared {
            core: Quorum::new(name, options, geometry, Arc::new(sink)),
            rt: rt.clone(),
            children: Mutex::new(
                children
                    .iter()
                    .enumerate()
                    .map(|(i, b)| Child {
                        id: i as u64,
                        name: Arc::from(b.name()),
                        bdev: b.clone(),
                    })
                    .collect(),
            ),
            next_child_id: AtomicU64::new(children.len() as u64),
            retired: Mutex::new(HashMap::new()),
        }
    }

    fn children_snapshot(&self) -> Vec<Child> {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn retire_counters(&self, id: u64, c: &CounterSnapshot) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .add(c);
    }

    /// The quorum's name.
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// The options it was created with.
    pub fn options(&self) -> QuorumOptions {
        self.core.options()
    }

    /// Child names, in vote order.
    pub fn child_names(&self) -> Vec<String> {
        self.children_snapshot()
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    }

    /// Its event ring.
    pub fn events(&self) -> &EventLog {
        self.core.events()
    }

    /// Sums the per-child counters over every reactor and hands them, in child order, to
    /// `done` (on the calling reactor).
    pub fn collect_counters(
        self: &Arc<Self>,
        bdev: &Arc<Bdev>,
        done: impl FnOnce(Vec<ChildInfo>) + Send + 'static,
    ) {
        let totals = Arc::new(Mutex::new(
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        ));
        let t2 = totals.clone();
        let me = self.clone();
        bdev.for_each_backend_channel::<QuorumChannel>(
            &self.rt,
            move |ch| {
                let mut t = t2.lock().unwrap_or_else(|e| e.into_inner());
                for (id, c) in ch.counters() {
                    t.entry(id).or_default().add(&c);
                }
            },
            move || {
                let totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                let out = me
                    .children_snapshot()
                    .iter()
                    .map(|c| ChildInfo {
                        name: c.name.to_string(),
                        counters: totals.get(&c.id).copied().unwrap_or_default(),
                    })
                    .collect();
                done(out)
            },
        );
    }
}

/// A quorum's bdev with its shared state, as the RPCs need both.
pub type QuorumEntry = (Arc<Bdev>, Arc<QuorumShared>);

/// The quorum called `name` (ENODEV if there is none, or it is another kind of bdev).
pub fn find(rt: &Runtime, name: &str) -> Result<QuorumEntry, BdevError> {
    rt.context::<ModuleIndex<QuorumShared>>()
        .get(rt, name, PRODUCT_NAME)
}

/// Every quorum, oldest first.
pub fn list(rt: &Runtime) -> Vec<QuorumEntry> {
    rt.context::<ModuleIndex<QuorumShared>>()
        .list(rt, PRODUCT_NAME)
}

/// The module object behind a quorum bdev.
struct QuorumBdev {
    shared: Arc<QuorumShared>,
    supported: Vec<IoType>,
}

impl BdevBackend for QuorumBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn io_type_supported(&self, io_type: IoType) -> bool {
        self.supported.contains(&io_type)
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        Ok(QuorumChannel::new(self.shared.clone()))
    }

    fn driver_specific(&self) -> Value {
        let info = DriverSpecific::new(self.shared.options(), self.shared.child_names());
        json!({ "quorum": info })
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        let entry = CreateParams::recreating(
            bdev.name(),
            self.shared.child_names(),
            self.shared.options(),
            bdev.uuid(),
        );
        Some(("bdev_quorum_create", json!(entry)))
    }

    fn destruct(&self) {
        for child in self.shared.children_snapshot() {
            child.bdev.release_claim();
        }
    }
}
