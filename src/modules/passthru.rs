//! What every module that stacks on one base bdev needs (error, delay, later others): opening
//! and claiming the base, parking the parent I/O while a child I/O runs on the base channel,
//! finding the module's own channel on every reactor (for resets), and reaching the module's
//! state from a bdev name (the bdev layer only hands back `&dyn BdevBackend`).

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use uuid::Uuid;

use crate::bdev::{
    Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoChannel, IoDone, IoHandle,
};
use crate::runtime::channel::{self as rchannel, DeviceId};
use crate::runtime::Runtime;

/// Registers a bdev called `name` stacked on `base_name`, with the base's geometry, after
/// claiming the base for `module` (released again if anything fails). `backend` builds the
/// module's object from the base; its `destruct` must call [`Bdev::release_claim`] on it.
pub fn register_stacked(
    rt: &Runtime,
    name: String,
    uuid: Option<Uuid>,
    base_name: &str,
    module: &str,
    backend: impl FnOnce(&Arc<Bdev>) -> Box<dyn BdevBackend>,
) -> Result<Arc<Bdev>, BdevError> {
    let registry = BdevRegistry::of(rt);
    if registry.get(&name).is_ok() {
        return Err(BdevError::Exists(name));
    }
    let base = registry.get(base_name)?;
    registry.claim_base(&name, &base, module)?;
    let spec = BdevSpec {
        name,
        block_size: base.block_size(),
        num_blocks: base.num_blocks(),
        uuid,
    };
    let registered = Bdev::new(spec, backend(&base)).and_then(|b| registry.register(rt, b));
    if registered.is_err() {
        base.release_claim();
    }
    registered
}

/// A per-channel table of values parked under a small integer key. A stacking module parks
/// the parent I/O here while its child runs below and finds it again from the child's tag,
/// with no allocation per I/O: freed slots are reused through a free list, so the table only
/// grows when the channel reaches a new peak of outstanding I/O.
pub struct Slab<T> {
    inner: RefCell<SlabInner<T>>,
}

struct SlabInner<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    /// A table sized for `capacity` values before it has to grow.
    pub fn with_capacity(capacity: usize) -> Slab<T> {
        Slab {
            inner: RefCell::new(SlabInner {
                slots: Vec::with_capacity(capacity),
                free: Vec::with_capacity(capacity),
            }),
        }
    }

    /// Parks `value` and returns its key.
    pub fn insert(&self, value: T) -> u64 {
        let mut s = self.inner.borrow_mut();
        match s.free.pop() {
            Some(index) => {
                s.slots[index] = Some(value);
                index as u64
            }
            None => {
                s.slots.push(Some(value));
                (s.slots.len() - 1) as u64
            }
        }
    }

    /// Takes back the value parked under `key`; None for a key not in use.
    pub fn remove(&self, key: u64) -> Option<T> {
        let mut s = self.inner.borrow_mut();
        let index = usize::try_from(key).ok()?;
        let value = s.slots.get_mut(index)?.take()?;
        s.free.push(index);
        Some(value)
    }

    /// How many values are parked.
    pub fn len(&self) -> usize {
        let s = self.inner.borrow();
        s.slots.len() - s.free.len()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The per-channel half of a stacking module: the base bdev's channel on this reactor and
/// the parents parked while their child runs on it. Each child carries the parent's slot as
/// its tag and completes to the module's channel (`done`), which calls [`Passthru::finish`].
pub struct Passthru {
    base: IoChannel,
    parked: Slab<IoHandle>,
    done: Weak<dyn IoDone>,
}

/// Parents a channel parks before its slab has to grow (a typical queue depth).
const PARKED_CAPACITY: usize = 256;

impl Passthru {
    /// Builds a module channel `C` around a `Passthru` on `base`'s channel of the calling
    /// reactor; the children the `Passthru` sends complete to that module channel.
    pub fn channel<C: IoDone + 'static>(
        base: &Arc<Bdev>,
        build: impl FnOnce(Passthru) -> C,
    ) -> Result<Rc<C>, BdevError> {
        let base = base.io_channel()?;
        Ok(Rc::new_cyclic(|me: &Weak<C>| {
            let done: Weak<dyn IoDone> = me.clone();
            build(Passthru {
                base,
                parked: Slab::with_capacity(PARKED_CAPACITY),
                done,
            })
        }))
    }

    /// Sends `parent`'s request (same type, range, buffer and FUA) to the base, parking the
    /// parent until the child completes.
    pub fn forward(&self, parent: IoHandle) {
        let Some(done) = self.done.upgrade() else {
            return parent.complete(Err(libc::ENODEV));
        };
        let mut child = IoHandle::new(
            parent.io_type,
            parent.offset_blocks,
            parent.num_blocks,
            parent.buf,
            done,
            0,
        );
        child.fua = parent.fua;
        child.tag = self.parked.insert(parent);
        self.base.submit(child);
    }

    /// The parent of a completed child, with the child's status; the child goes back to its
    /// pool. None for a child this channel did not send.
    pub fn finish(&self, child: IoHandle) -> Option<(IoHandle, Result<(), i32>)> {
        let status = child.status();
        let parent = self.parked.remove(child.tag)?;
        Some((parent, status))
    }

    /// Parks an I/O the module holds for another reason (a reset waiting for every reactor).
    pub fn park(&self, io: IoHandle) -> u64 {
        self.parked.insert(io)
    }

    /// Takes back an I/O parked with [`Passthru::park`].
    pub fn unpark(&self, key: u64) -> Option<IoHandle> {
        self.parked.remove(key)
    }
}

/// Where a stacking module finds its own channel on each reactor, for requests that act on
/// all of them (a reset aborts what every channel holds). Channels are listed weakly, so the
/// directory never keeps one alive.
pub struct ChannelDirectory<T> {
    dev: DeviceId,
    _channels: PhantomData<fn() -> T>,
}

struct Listed<T>(Weak<T>);

impl<T: 'static> Default for ChannelDirectory<T> {
    fn default() -> Self {
        ChannelDirectory {
            dev: DeviceId::new(),
            _channels: PhantomData,
        }
    }
}

impl<T: 'static> ChannelDirectory<T> {
    /// Lists `channel` as the calling reactor's channel.
    pub fn add(&self, channel: &Rc<T>) {
        rchannel::release(self.dev);
        let listed = Rc::new(Listed(Rc::downgrade(channel)));
        let _ = rchannel::get_or_create(self.dev, || Ok(listed));
    }

    /// The calling reactor's channel, if it has a live one.
    pub fn local(&self) -> Option<Rc<T>> {
        rchannel::lookup::<Listed<T>>(self.dev)?.0.upgrade()
    }

    /// Runs `visit` on the channel of every reactor that has one, one reactor after the
    /// other, then `done` with the calling reactor's channel, on the calling reactor.
    pub fn for_each(
        &self,
        rt: &Runtime,
        visit: impl Fn(&T) + Send + Sync + 'static,
        done: impl FnOnce(&T) + Send + 'static,
    ) {
        let dev = self.dev;
        rchannel::for_each_channel::<Listed<T>>(
            rt,
            dev,
            move |listed| {
                if let Some(channel) = listed.0.upgrade() {
                    visit(&channel);
                }
            },
            move || {
                if let Some(channel) =
                    rchannel::lookup::<Listed<T>>(dev).and_then(|l| l.0.upgrade())
                {
                    done(&channel);
                }
            },
        );
    }

    /// Drops the listing on every reactor (the bdev is gone).
    pub fn forget(&self, rt: &Runtime) {
        rchannel::release_everywhere(rt, self.dev, || {});
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn slab_reuses_freed_slots() {
        let slab = Slab::with_capacity(2);
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_ne!(a, b);
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None, "a key is used once");
        let c = slab.insert("c");
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(slab.remove(b), Some("b"));
        assert_eq!(slab.remove(c), Some("c"));
        assert!(slab.is_empty());
        assert_eq!(slab.remove(99), None);
    }
}
