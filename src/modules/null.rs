//! The null bdev: stores nothing, completes every I/O at once and returns zeroes, so the
//! cost of everything above the module can be measured on its own (SPDK's bdev_null).

use std::any::Any;
use std::rc::Rc;

use serde_json::{json, Value};

use std::sync::Arc;

use uuid::Uuid;

use crate::bdev::{
    Bdev, BdevBackend, BdevChannel, BdevError, BdevIo, BdevRegistry, BdevSpec, DeferredWork,
    IoHandle, IoType,
};
use crate::runtime::Runtime;

/// SPDK's product name for null bdevs.
pub const PRODUCT_NAME: &str = "Null disk";

/// The null module's per-bdev state: nothing but its identity.
pub struct NullBdev;

struct NullChannel;

impl BdevChannel for NullChannel {
    fn submit(&self, io: IoHandle) {
        if io.io_type == IoType::Read {
            io.complete_after(&ZERO_FILL);
        } else {
            io.complete(Ok(()));
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl BdevBackend for NullBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    /// Every type but zcopy succeeds trivially, so a quorum or an error bdev over null can be
    /// driven with any workload. No zcopy, as SPDK's null: it has no blocks to lend.
    fn io_type_supported(&self, io_type: IoType) -> bool {
        io_type != IoType::Zcopy
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        Ok(Rc::new(NullChannel))
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        Some((
            "bdev_null_create",
            json!({
                "name": bdev.name(),
                "num_blocks": bdev.num_blocks(),
                "block_size": bdev.block_size(),
                "uuid": bdev.uuid().to_string(),
            }),
        ))
    }

    fn retains_data(&self) -> bool {
        false
    }
}

static ZERO_FILL: DeferredWork = DeferredWork {
    prefetch: |_| {},
    run: zero_fill,
};

/// A read's zeroes, written as its completion is delivered (see `IoHandle::complete_after`).
fn zero_fill(io: &BdevIo) {
    // SAFETY: the bdev layer checked the buffer covers the request; the I/O is ours until
    // its completion is delivered.
    unsafe { io.buf.as_mut_slice() }.fill(0);
}

/// Creates and registers a null bdev (`bdev_null_create`).
pub fn create(
    rt: &Runtime,
    name: String,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
) -> Result<Arc<Bdev>, BdevError> {
    let spec = BdevSpec {
        name,
        block_size,
        num_blocks,
        uuid,
    };
    BdevRegistry::of(rt).register(rt, Bdev::new(spec, Box::new(NullBdev))?)
}
