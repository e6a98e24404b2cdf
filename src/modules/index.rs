//! Finding a module's own state from a bdev name: the bdev layer hands modules back only
//! `&dyn BdevBackend`, so each module that has RPCs acting on its bdevs keeps an index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak as ArcWeak};

use crate::bdev::{Bdev, BdevError, BdevRegistry};
use crate::runtime::Runtime;

/// A runtime's index from bdev name to a module's own state (a [`Runtime::context`] per
/// module type), since the bdev layer hands modules back only `&dyn BdevBackend`. Entries are
/// weak: a deleted bdev's state goes away with it.
pub struct ModuleIndex<S> {
    map: Mutex<HashMap<String, ArcWeak<S>>>,
}

impl<S> Default for ModuleIndex<S> {
    fn default() -> Self {
        ModuleIndex {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Send + Sync + 'static> ModuleIndex<S> {
    /// Records `state` as the state of bdev `name`, dropping entries of vanished bdevs.
    pub fn insert(&self, name: &str, state: &Arc<S>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.strong_count() > 0);
        map.insert(name.to_string(), Arc::downgrade(state));
    }

    /// The registered bdev `name` (or UUID) and its state, if it is a bdev of this module
    /// (`product`); ENODEV otherwise, as SPDK answers for a bdev of another kind.
    pub fn get(
        &self,
        rt: &Runtime,
        name: &str,
        product: &str,
    ) -> Result<(Arc<Bdev>, Arc<S>), BdevError> {
        let not_found = || BdevError::NotFound(name.to_string());
        let bdev = BdevRegistry::of(rt).get(name)?;
        if bdev.backend().product_name() != product {
            return Err(not_found());
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let state = map
            .get(bdev.name())
            .and_then(ArcWeak::upgrade)
            .ok_or_else(not_found)?;
        Ok((bdev, state))
    }

    /// Every registered bdev of this module (`product`) with its state, oldest first.
    pub fn list(&self, rt: &Runtime, product: &str) -> Vec<(Arc<Bdev>, Arc<S>)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        BdevRegistry::of(rt)
            .list()
            .into_iter()
            .filter(|b| b.backend().product_name() == product)
            .filter_map(|b| {
                let state = map.get(b.name()).and_then(ArcWeak::upgrade)?;
                Some((b, state))
            })
            .collect()
    }
}
