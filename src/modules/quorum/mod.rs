//! The quorum bdev: QEMU's `quorum` block filter (block/quorum.c) as a poll-mode bdev.
//! N claimed children, reads voted on (or fifo failover), writes acknowledged once
//! `vote_threshold` children acknowledged them, corrupted children reported (QMP-shaped
//! events) and optionally rewritten. Files: `vote` (pure voting), `channel` (per-reactor
//! data path), `guard` (rewrite vs newer writes), `events`, `counters`, `options`.

mod channel;
pub mod counters;
pub mod events;
pub mod guard;
#[cfg(test)]
mod model_tests;
pub mod options;
#[cfg(test)]
mod reference;
pub mod vote;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use self::channel::QuorumChannel;
use self::counters::CounterSnapshot;
use self::events::EventLog;
use self::guard::RewriteGuard;
pub use self::options::{QuorumOptions, ReadPattern};
use super::index::ModuleIndex;
use crate::bdev::{Bdev, BdevBackend, BdevChannel, BdevError, BdevRegistry, BdevSpec, IoType};
use crate::runtime::Runtime;

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

/// State every reactor's channel of one quorum shares.
pub struct QuorumShared {
    name: String,
    options: QuorumOptions,
    block_size: u32,
    num_blocks: u64,
    rt: Runtime,
    children: Mutex<Vec<Child>>,
    next_child_id: AtomicU64,
    retired: Mutex<HashMap<u64, CounterSnapshot>>,
    guard: Option<RewriteGuard>,
    events: EventLog,
}

impl QuorumShared {
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
        &self.name
    }

    /// The options it was created with.
    pub fn options(&self) -> QuorumOptions {
        self.options
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
        &self.events
    }

    fn info(&self) -> Value {
        json!({
            "vote_threshold": self.options.vote_threshold,
            "read_pattern": self.options.read_pattern.as_str(),
            "blkverify": self.options.blkverify,
            "rewrite_corrupted": self.options.rewrite_corrupted,
            "base_bdevs": self.child_names(),
        })
    }

    /// Sums the per-child counters over every reactor and hands `(child, counters)` pairs,
    /// in child order, to `done` (on the calling reactor).
    pub fn collect_counters(
        self: &Arc<Self>,
        bdev: &Arc<Bdev>,
        done: impl FnOnce(Vec<(String, CounterSnapshot)>) + Send + 'static,
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
                    .map(|c| {
                        (
                            c.name.to_string(),
                            totals.get(&c.id).copied().unwrap_or_default(),
                        )
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
        json!({ "quorum": self.shared.info() })
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        let o = self.shared.options;
        Some((
            "bdev_quorum_create",
            json!({
                "name": bdev.name(),
                "base_bdevs": self.shared.child_names(),
                "vote_threshold": o.vote_threshold,
                "read_pattern": o.read_pattern.as_str(),
                "blkverify": o.blkverify,
                "rewrite_corrupted": o.rewrite_corrupted,
                "uuid": bdev.uuid().to_string(),
            }),
        ))
    }

    fn destruct(&self) {
        for child in self.shared.children_snapshot() {
            child.bdev.release_claim();
        }
    }
}

fn geometry_error(children: &[Arc<Bdev>]) -> Option<BdevError> {
    let first = children.first()?;
    let same = children
        .iter()
        .all(|c| c.block_size() == first.block_size() && c.num_blocks() == first.num_blocks());
    if same {
        return None;
    }
    let list: Vec<String> = children
        .iter()
        .map(|c| {
            format!(
                "{} ({} blocks of {} bytes)",
                c.name(),
                c.num_blocks(),
                c.block_size()
            )
        })
        .collect();
    Some(BdevError::Invalid(format!(
        "quorum children must have the same block size and length: {}",
        list.join(", ")
    )))
}

/// Creates and registers a quorum over `children` (`bdev_quorum_create`). Nothing is left
/// claimed or registered if any check fails.
pub fn create(
    rt: &Runtime,
    name: &str,
    children: &[String],
    options: QuorumOptions,
    uuid: Option<uuid::Uuid>,
) -> Result<Arc<Bdev>, BdevError> {
    options
        .validate(children.len())
        .map_err(BdevError::Invalid)?;
    let registry = BdevRegistry::of(rt);
    if registry.get(name).is_ok() {
        return Err(BdevError::Exists(name.to_string()));
    }
    for (i, c) in children.iter().enumerate() {
        if children[..i].contains(c) {
            return Err(BdevError::Invalid(format!("child '{c}' is listed twice")));
        }
    }
    let bdevs = children
        .iter()
        .map(|c| registry.get(c))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(e) = geometry_error(&bdevs) {
        return Err(e);
    }
    for (i, b) in bdevs.iter().enumerate() {
        if let Err(e) = registry.claim_base(name, b, CLAIM) {
            bdevs[..i].iter().for_each(|b| b.release_claim());
            return Err(e);
        }
    }
    let release_all = || bdevs.iter().for_each(|b| b.release_claim());
    let first = &bdevs[0];
    let shared = Arc::new(QuorumShared {
        name: name.to_string(),
        options,
        block_size: first.block_size(),
        num_blocks: first.num_blocks(),
        rt: rt.clone(),
        children: Mutex::new(
            bdevs
                .iter()
                .enumerate()
                .map(|(i, b)| Child {
                    id: i as u64,
                    name: Arc::from(b.name()),
                    bdev: b.clone(),
                })
                .collect(),
        ),
        next_child_id: AtomicU64::new(bdevs.len() as u64),
        retired: Mutex::new(HashMap::new()),
        guard: options
            .rewrite_corrupted
            .then(|| RewriteGuard::new(first.block_size())),
        events: EventLog::new(name),
    });
    // A quorum lends no child's memory: what it returns is the vote's winner.
    let supported = IoType::ALL
        .into_iter()
        .filter(|&t| t != IoType::Zcopy && bdevs.iter().all(|b| b.io_type_supported(t)))
        .collect();
    let spec = BdevSpec {
        name: name.to_string(),
        block_size: first.block_size(),
        num_blocks: first.num_blocks(),
        uuid,
    };
    let backend = QuorumBdev {
        shared: shared.clone(),
        supported,
    };
    let bdev = Bdev::new(spec, Box::new(backend))
        .and_then(|b| registry.register(rt, b))
        .inspect_err(|_| release_all())?;
    rt.context::<ModuleIndex<QuorumShared>>()
        .insert(name, &shared);
    tracing::info!(quorum = name, children = ?children, ?options, "quorum created");
    Ok(bdev)
}

/// The quorum `name`, if its children may change: QEMU refuses to `action` a quorum in
/// blkverify mode.
fn changeable(rt: &Runtime, name: &str, action: &str) -> Result<QuorumEntry, BdevError> {
    let entry = find(rt, name)?;
    if entry.1.options.blkverify {
        return Err(BdevError::Invalid(format!(
            "Cannot {action} a quorum in blkverify mode"
        )));
    }
    Ok(entry)
}

/// Tells every reactor's channel to pick up the current child list, then runs `done`.
fn refresh_everywhere(
    shared: &Arc<QuorumShared>,
    bdev: &Arc<Bdev>,
    done: impl FnOnce() + Send + 'static,
) {
    bdev.for_each_backend_channel::<QuorumChannel>(&shared.rt, |ch| ch.refresh_children(), done);
}

/// Adds `child` to quorum `name` at run time (`bdev_quorum_add_child`); the child must match
/// the quorum's geometry. Safe with I/O in flight: each reactor switches its view between
/// two I/Os. `done` gets the outcome.
pub fn add_child(
    rt: &Runtime,
    name: &str,
    child: &str,
    done: impl FnOnce(Result<(), BdevError>) + Send + 'static,
) {
    let result = (|| {
        let (bdev, shared) = changeable(rt, name, "add a child to")?;
        let child_bdev = BdevRegistry::of(rt).get(child)?;
        let mut children = shared.children.lock().unwrap_or_else(|e| e.into_inner());
        if children.iter().any(|c| &*c.name == child) {
            return Err(BdevError::Exists(format!(
                "{child} (already a child of {name})"
            )));
        }
        if children.len() >= vote::MAX_CHILDREN {
            return Err(BdevError::Invalid("Too many children".into()));
        }
        if child_bdev.block_size() != shared.block_size
            || child_bdev.num_blocks() != shared.num_blocks
        {
            return Err(BdevError::Invalid(format!(
                "child {} ({} blocks of {} bytes) does not match quorum {} ({} blocks of {} bytes)",
                child,
                child_bdev.num_blocks(),
                child_bdev.block_size(),
                name,
                shared.num_blocks,
                shared.block_size
            )));
        }
        BdevRegistry::of(rt).claim_base(name, &child_bdev, CLAIM)?;
        children.push(Child {
            id: shared.next_child_id.fetch_add(1, Ordering::Relaxed),
            name: Arc::from(child),
            bdev: child_bdev,
        });
        drop(children);
        Ok((shared, bdev))
    })();
    match result {
        Ok((shared, bdev)) => {
            tracing::info!(quorum = name, child, "quorum child added");
            refresh_everywhere(&shared, &bdev, move || done(Ok(())))
        }
        Err(e) => done(Err(e)),
    }
}

/// Removes `child` from quorum `name` (`bdev_quorum_remove_child`), refused while the
/// quorum has no more children than its threshold (QEMU's rule). The child's claim is
/// released once no reactor sends it new I/O.
pub fn remove_child(
    rt: &Runtime,
    name: &str,
    child: &str,
    done: impl FnOnce(Result<(), BdevError>) + Send + 'static,
) {
    let result = (|| {
        let (bdev, shared) = changeable(rt, name, "remove a child from")?;
        let mut children = shared.children.lock().unwrap_or_else(|e| e.into_inner());
        let pos = children
            .iter()
            .position(|c| &*c.name == child)
            .ok_or_else(|| BdevError::NotFound(format!("{child} (not a child of {name})")))?;
        if children.len() <= shared.options.vote_threshold {
            return Err(BdevError::Invalid(format!(
                "The number of children cannot be lower than the vote threshold {}",
                shared.options.vote_threshold
            )));
        }
        let removed = children.remove(pos);
        drop(children);
        Ok((shared, bdev, removed))
    })();
    match result {
        Ok((shared, bdev, removed)) => refresh_everywhere(&shared, &bdev, move || {
            // Requests that started before the switch still hold the child's channel; they
            // finish normally, and unregistering the child later waits for its channels.
            removed.bdev.release_claim();
            tracing::info!(child = %removed.name, "quorum child removed");
            done(Ok(()))
        }),
        Err(e) => done(Err(e)),
    }
}

/// Deletes quorum `name` (`bdev_quorum_delete`), releasing its children.
pub fn delete(rt: &Runtime, name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    BdevRegistry::of(rt).unregister(rt, name, Some(PRODUCT_NAME), done);
}
