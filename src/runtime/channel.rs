//! Per-(device, reactor) I/O channels, SPDK's io_device model: each reactor gets its own
//! channel object for a device, created on first use and never shared between cores, so the
//! data path needs no locks. Topology changes walk every reactor's channel by message.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{current_reactor, Runtime};

/// A process-unique device identity, the key of its channels on every reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(u64);

impl DeviceId {
    /// Allocates a fresh identity; never reused, so a stale channel can never match a new device.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        DeviceId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for DeviceId {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static CHANNELS: RefCell<HashMap<DeviceId, Rc<dyn Any>>> = RefCell::new(HashMap::new());
}

/// The calling reactor's channel for `dev`, created by `create` on first use.
pub fn get_or_create<T: Any>(
    dev: DeviceId,
    create: impl FnOnce() -> Result<Rc<T>, String>,
) -> Result<Rc<T>, String> {
    if let Some(existing) = lookup::<T>(dev) {
        return Ok(existing);
    }
    let created = create()?;
    CHANNELS.with(|c| c.borrow_mut().insert(dev, created.clone() as Rc<dyn Any>));
    Ok(created)
}

/// The calling reactor's channel for `dev`, if it has one.
pub fn lookup<T: Any>(dev: DeviceId) -> Option<Rc<T>> {
    CHANNELS
        .with(|c| c.borrow().get(&dev).cloned())
        .and_then(|ch| ch.downcast::<T>().ok())
}

/// Forgets the calling reactor's channel for `dev`; it is destroyed when its last user drops it.
pub fn release(dev: DeviceId) -> Option<Rc<dyn Any>> {
    CHANNELS.with(|c| c.borrow_mut().remove(&dev))
}

/// How many channels the calling reactor holds, for tests of channel lifetime.
pub fn count() -> usize {
    CHANNELS.with(|c| c.borrow().len())
}

/// Visits `dev`'s channel on every reactor that has one, one reactor after another by
/// message, then runs `done` on the calling reactor (reactor 0 from outside). Used when a
/// device's topology changes (a quorum gains or loses a child) while I/O runs on every core.
pub fn for_each_channel<T: Any>(
    rt: &Runtime,
    dev: DeviceId,
    visit: impl Fn(&Rc<T>) + Send + Sync + 'static,
    done: impl FnOnce() + Send + 'static,
) {
    on_every_reactor(
        rt,
        move || {
            if let Some(ch) = lookup::<T>(dev) {
                visit(&ch);
            }
        },
        done,
    );
}

/// Releases `dev`'s channel on every reactor (device unregistration), then runs `done`.
pub fn release_everywhere(rt: &Runtime, dev: DeviceId, done: impl FnOnce() + Send + 'static) {
    on_every_reactor(
        rt,
        move || {
            release(dev);
        },
        done,
    );
}

/// Runs `each` on every reactor in turn, then `done` back where the walk started.
pub fn on_every_reactor(
    rt: &Runtime,
    each: impl Fn() + Send + Sync + 'static,
    done: impl FnOnce() + Send + 'static,
) {
    let origin = current_reactor().unwrap_or(0);
    step(rt.clone(), Arc::new(each), Box::new(done), 0, origin);
}

fn step(
    rt: Runtime,
    each: Arc<dyn Fn() + Send + Sync>,
    done: Box<dyn FnOnce() + Send>,
    index: usize,
    origin: usize,
) {
    if index == rt.num_reactors() {
        rt.send_msg(origin, done);
        return;
    }
    let rt2 = rt.clone();
    rt.send_msg(index, move || {
        each();
        step(rt2, each, done, index + 1, origin);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeOptions;
    use std::cell::Cell;

    struct Probe {
        visits: Cell<u32>,
    }

    #[test]
    fn channels_are_per_reactor_and_released_on_unregister() {
        let rt = Runtime::start(RuntimeOptions {
            cores: vec![0, 0],
            ..Default::default()
        })
        .unwrap();
        let dev = DeviceId::new();
        for r in 0..2 {
            rt.run_on(r, move || {
                let a = get_or_create(dev, || {
                    Ok(Rc::new(Probe {
                        visits: Cell::new(0),
                    }))
                })
                .unwrap();
                let b = get_or_create::<Probe>(dev, || unreachable!()).unwrap();
                assert!(Rc::ptr_eq(&a, &b), "same reactor, same channel");
            });
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        for_each_channel::<Probe>(
            &rt,
            dev,
            |ch| ch.visits.set(ch.visits.get() + 1),
            move || tx.send(()).unwrap(),
        );
        rx.recv().unwrap();
        for r in 0..2 {
            let visits = rt.run_on(r, move || lookup::<Probe>(dev).unwrap().visits.get());
            assert_eq!(visits, 1);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        release_everywhere(&rt, dev, move || tx.send(()).unwrap());
        rx.recv().unwrap();
        for r in 0..2 {
            assert!(rt.run_on(r, move || lookup::<Probe>(dev).is_none() && count() == 0));
        }
        rt.stop();
    }
}
