//! The runtime's table of bdevs by name, in registration order (so `save_config` lists base
//! bdevs before the quorums built on them), with SPDK's register/unregister notifications.

use std::sync::{Arc, Mutex};

use super::notify::Notifier;
use super::{Bdev, BdevError};
use crate::runtime::channel as rchannel;
use crate::runtime::Runtime;

/// All bdevs of one runtime (a [`Runtime::context`]).
#[derive(Default)]
pub struct BdevRegistry {
    bdevs: Mutex<Vec<Arc<Bdev>>>,
}

impl BdevRegistry {
    /// The registry of `rt`.
    pub fn of(rt: &Runtime) -> Arc<BdevRegistry> {
        rt.context::<BdevRegistry>()
    }

    /// Makes `bdev` visible under its name; refused if the name is taken.
    pub fn register(&self, rt: &Runtime, bdev: Bdev) -> Result<Arc<Bdev>, BdevError> {
        let mut list = self.bdevs.lock().unwrap_or_else(|e| e.into_inner());
        if list.iter().any(|b| b.name == bdev.name) {
            return Err(BdevError::Exists(bdev.name));
        }
        let bdev = Arc::new(bdev);
        list.push(bdev.clone());
        drop(list);
        tracing::info!(
            name = bdev.name(),
            product = bdev.backend.product_name(),
            "bdev registered"
        );
        rt.context::<Notifier>().post("bdev_register", bdev.name());
        Ok(bdev)
    }

    /// The bdev called `name` (or whose UUID is `name`, as SPDK accepts).
    pub fn get(&self, name: &str) -> Result<Arc<Bdev>, BdevError> {
        let list = self.bdevs.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .find(|b| b.name == name || b.uuid.to_string() == name)
            .cloned()
            .ok_or_else(|| BdevError::NotFound(name.to_string()))
    }

    /// Every bdev, oldest first.
    pub fn list(&self) -> Vec<Arc<Bdev>> {
        self.bdevs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Removes `name`: refused while claimed; otherwise hot-remove listeners are told, every
    /// reactor drops its channel, the module releases what it holds, and `done` runs on the
    /// calling reactor (reactor 0 from outside). `expect_product` guards against deleting a
    /// bdev of another kind (`bdev_malloc_delete` on a null bdev), as SPDK does.
    pub fn unregister(
        &self,
        rt: &Runtime,
        name: &str,
        expect_product: Option<&str>,
        done: impl FnOnce(Result<(), BdevError>) + Send + 'static,
    ) {
        let bdev = {
            let mut list = self.bdevs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(pos) = list.iter().position(|b| b.name == name) else {
                return done(Err(BdevError::NotFound(name.to_string())));
            };
            let bdev = list[pos].clone();
            if expect_product.is_some_and(|p| p != bdev.backend.product_name()) {
                return done(Err(BdevError::NotFound(name.to_string())));
            }
            if let Some(owner) = bdev.claimed_by() {
                return done(Err(BdevError::Claimed {
                    name: name.to_string(),
                    owner,
                }));
            }
            list.remove(pos);
            bdev
        };
        bdev.removed
            .store(true, std::sync::atomic::Ordering::Release);
        let listeners =
            std::mem::take(&mut *bdev.listeners.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, listener) in &listeners {
            listener(bdev.name());
        }
        let notifier = rt.context::<Notifier>();
        let b2 = bdev.clone();
        rchannel::release_everywhere(rt, bdev.dev, move || {
            b2.backend.destruct();
            tracing::info!(name = b2.name(), "bdev unregistered");
            notifier.post("bdev_unregister", b2.name());
            done(Ok(()));
        });
    }
}
