//! The quorum's control path: create, add and remove a child, delete. Every check (QEMU's
//! rules and words, in `quorum_core::options`) runs before anything changes, so a refused
//! request leaves nothing claimed, registered or switched.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use quorum_core::options::{
    children_changeable, common_geometry, distinct_children, may_add_child, may_remove_child,
    Geometry, Refused,
};

use super::channel::QuorumChannel;
use super::{
    find, Child, QuorumBdev, QuorumEntry, QuorumOptions, QuorumShared, CLAIM, PRODUCT_NAME,
};
use crate::bdev::{Bdev, BdevError, BdevRegistry, BdevSpec, IoType};
use crate::modules::index::ModuleIndex;
use crate::runtime::Runtime;

impl From<Refused> for BdevError {
    fn from(r: Refused) -> BdevError {
        match r {
            Refused::Invalid(m) => BdevError::Invalid(m),
            Refused::Exists(m) => BdevError::Exists(m),
            Refused::NotFound(m) => BdevError::NotFound(m),
        }
    }
}

fn geometry(bdev: &Bdev) -> Geometry {
    Geometry {
        block_size: bdev.block_size(),
        num_blocks: bdev.num_blocks(),
    }
}

/// Claims every bdev for quorum `name`, or none; refused (with the loop named) if one of
/// them is `name` or stacks on it, which would make the quorum contain itself.
fn claim_all(registry: &BdevRegistry, name: &str, bdevs: &[Arc<Bdev>]) -> Result<(), BdevError> {
    for (i, b) in bdevs.iter().enumerate() {
        if let Err(e) = registry.claim_base(name, b, CLAIM) {
            bdevs[..i].iter().for_each(|b| b.release_claim());
            return Err(e);
        }
    }
    Ok(())
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
    options.validate(children.len())?;
    let registry = BdevRegistry::of(rt);
    if registry.get(name).is_ok() {
        return Err(BdevError::Exists(name.to_string()));
    }
    distinct_children(children)?;
    let bdevs = children
        .iter()
        .map(|c| registry.get(c))
        .collect::<Result<Vec<_>, _>>()?;
    let shapes: Vec<(&str, Geometry)> = bdevs.iter().map(|b| (b.name(), geometry(b))).collect();
    let shape = common_geometry(&shapes)?;
    claim_all(&registry, name, &bdevs)?;
    let shared = Arc::new(QuorumShared::new(rt, name, options, shape, &bdevs));
    // A quorum lends no child's memory: what it returns is the vote's winner.
    let supported = IoType::ALL
        .into_iter()
        .filter(|&t| t != IoType::Zcopy && bdevs.iter().all(|b| b.io_type_supported(t)))
        .collect();
    let spec = BdevSpec {
        name: name.to_string(),
        block_size: shape.block_size,
        num_blocks: shape.num_blocks,
        uuid,
    };
    let backend = QuorumBdev {
        shared: shared.clone(),
        supported,
    };
    let bdev = Bdev::new(spec, Box::new(backend))
        .and_then(|b| registry.register(rt, b))
        .inspect_err(|_| bdevs.iter().for_each(|b| b.release_claim()))?;
    rt.context::<ModuleIndex<QuorumShared>>()
        .insert(name, &shared);
    tracing::info!(quorum = name, children = ?children, ?options, "quorum created");
    Ok(bdev)
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
    match attach(rt, name, child) {
        Ok((bdev, shared)) => {
            tracing::info!(quorum = name, child, "quorum child added");
            refresh_everywhere(&shared, &bdev, move || done(Ok(())))
        }
        Err(e) => done(Err(e)),
    }
}

/// Checks, claims and lists `child` as the last child of quorum `name`.
fn attach(rt: &Runtime, name: &str, child: &str) -> Result<QuorumEntry, BdevError> {
    let (bdev, shared) = find(rt, name)?;
    children_changeable(&shared.options(), "add a child to")?;
    let registry = BdevRegistry::of(rt);
    let child_bdev = registry.get(child)?;
    let mut children = shared.children.lock().unwrap_or_else(|e| e.into_inner());
    let names: Vec<&str> = children.iter().map(|c| &*c.name).collect();
    may_add_child(
        name,
        shared.core.geometry(),
        &names,
        child,
        geometry(&child_bdev),
    )?;
    registry.claim_base(name, &child_bdev, CLAIM)?;
    children.push(Child {
        id: shared.next_child_id.fetch_add(1, Ordering::Relaxed),
        name: Arc::from(child),
        bdev: child_bdev,
    });
    drop(children);
    Ok((bdev, shared))
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
    match detach(rt, name, child) {
        Ok((bdev, shared, removed)) => refresh_everywhere(&shared, &bdev, move || {
            // Requests that started before the switch still hold the child's channel; they
            // finish normally, and unregistering the child later waits for its channels.
            removed.bdev.release_claim();
            tracing::info!(child = %removed.name, "quorum child removed");
            done(Ok(()))
        }),
        Err(e) => done(Err(e)),
    }
}

/// Takes `child` off quorum `name`'s list.
fn detach(
    rt: &Runtime,
    name: &str,
    child: &str,
) -> Result<(Arc<Bdev>, Arc<QuorumShared>, Child), BdevError> {
    let (bdev, shared) = find(rt, name)?;
    children_changeable(&shared.options(), "remove a child from")?;
    let mut children = shared.children.lock().unwrap_or_else(|e| e.into_inner());
    let names: Vec<&str> = children.iter().map(|c| &*c.name).collect();
    let pos = may_remove_child(name, &shared.options(), &names, child)?;
    let removed = children.remove(pos);
    drop(children);
    Ok((bdev, shared, removed))
}

/// Tells every reactor's channel to pick up the current child list, then runs `done`.
fn refresh_everywhere(
    shared: &Arc<QuorumShared>,
    bdev: &Arc<Bdev>,
    done: impl FnOnce() + Send + 'static,
) {
    bdev.for_each_backend_channel::<QuorumChannel>(&shared.rt, |ch| ch.refresh_children(), done);
}

/// Deletes quorum `name` (`bdev_quorum_delete`), releasing its children.
pub fn delete(rt: &Runtime, name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    BdevRegistry::of(rt).unregister(rt, name, Some(PRODUCT_NAME), done);
}
