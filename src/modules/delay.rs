//! The delay bdev (SPDK's vbdev_delay): passes I/O to its base and holds each completed read
//! or write for a configured latency before completing it, 1 in 100 of them (drawn at random
//! per I/O) for the p99 latency instead of the average, so the layers above can be tested
//! against a slow child and against timeouts.
//!
//! As SPDK, the delay starts when the base completes; reads and writes wait in four FIFOs
//! (average/p99 × read/write), each released in order once its head is due, so a latency
//! lowered at run time waits behind the I/O already held ("a dam", SPDK says); other types
//! complete as soon as the base does. In interrupt mode a timerfd wakes the reactor when the
//! earliest held I/O is due; in poll mode the channel's poller just looks every iteration.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use super::index::ModuleIndex;
use super::passthru::{register_stacked, ChannelDirectory, Passthru};
use crate::bdev::{Bdev, BdevBackend, BdevChannel, BdevError, IoDone, IoHandle, IoType};
use crate::runtime::clock::{tick_rate, ticks};
use crate::runtime::{register_poller, unregister_poller, Runtime};

/// SPDK's product name for delay bdevs.
pub const PRODUCT_NAME: &str = "delay";

/// The claim owner on the base bdev (SPDK's module name).
const MODULE: &str = "delay";

/// The four latencies of a delay bdev (SPDK's `latency_type` names), also the index of the
/// matching FIFO in each channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyType {
    /// Reads, 99 in 100.
    AvgRead = 0,
    /// Reads, 1 in 100.
    P99Read = 1,
    /// Writes, 99 in 100.
    AvgWrite = 2,
    /// Writes, 1 in 100.
    P99Write = 3,
}

impl LatencyType {
    /// SPDK's name of each type, as `bdev_delay_update_latency` takes it.
    pub fn from_spdk_name(name: &str) -> Option<LatencyType> {
        Some(match name {
            "avg_read" => LatencyType::AvgRead,
            "p99_read" => LatencyType::P99Read,
            "avg_write" => LatencyType::AvgWrite,
            "p99_write" => LatencyType::P99Write,
            _ => return None,
        })
    }
}

/// The latencies a delay bdev is created with, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Average (99 %) read latency.
    pub avg_read: u64,
    /// p99 (1 %) read latency.
    pub p99_read: u64,
    /// Average (99 %) write latency.
    pub avg_write: u64,
    /// p99 (1 %) write latency.
    pub p99_write: u64,
}

/// One latency, kept in microseconds (what the user set, reported back unchanged) and in
/// ticks (what the data path adds), rounded up so an I/O never waits less than asked.
#[derive(Default)]
struct Latency {
    us: AtomicU64,
    ticks: AtomicU64,
}

impl Latency {
    fn set(&self, us: u64) {
        let ticks = (us as u128 * tick_rate() as u128).div_ceil(1_000_000);
        self.ticks
            .store(u64::try_from(ticks).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.us.store(us, Ordering::Relaxed);
    }
}

/// A delay bdev's state, shared by its backend and every reactor's channel.
struct DelayDisk {
    name: String,
    uuid: Uuid,
    base: Arc<Bdev>,
    latencies: [Latency; 4],
    channels: ChannelDirectory<DelayChannel>,
}

impl DelayDisk {
    fn latency_us(&self, t: LatencyType) -> u64 {
        self.latencies[t as usize].us.load(Ordering::Relaxed)
    }
}

/// A completed I/O waiting for its latency to pass.
struct Held {
    due: u64,
    status: Result<(), i32>,
    io: IoHandle,
}

/// `driver_ctx[0]` of a parent that is not delayed; delayed ones hold their FIFO index + 1.
const NOT_DELAYED: u64 = 0;

/// I/Os each FIFO holds before it has to grow.
const FIFO_CAPACITY: usize = 128;

/// Wakes an interrupt-mode reactor when the earliest held I/O is due.
struct Alarm {
    fd: OwnedFd,
    /// The tick the timer is set for, if set.
    armed: Cell<Option<u64>>,
}

impl Alarm {
    fn new() -> Result<Alarm, BdevError> {
        // SAFETY: plain syscall; the descriptor is owned by the returned OwnedFd.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(BdevError::Os {
                context: "creating a delay bdev's timerfd".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Alarm {
            // SAFETY: `fd` was just created and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            armed: Cell::new(None),
        })
    }

    /// Sets the timer for tick `due` (None: disarms). Setting also clears an expiry already
    /// signalled, so a fired timer stops waking the reactor once re-set.
    fn set(&self, due: Option<u64>, now: u64) {
        if due == self.armed.get() && due.is_none_or(|d| d > now) {
            return;
        }
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut spec = libc::itimerspec {
            it_interval: zero,
            it_value: zero,
        };
        if let Some(due) = due {
            let delta = due.saturating_sub(now);
            // A margin (0.4 % + 10 µs) keeps the timer from firing before the tick clock
            // reaches `due`, which would make the reactor spin until it does.
            let ns = (delta as u128 * 1_000_000_000 / tick_rate() as u128) as u64;
            let ns = ns.saturating_add(ns / 256).saturating_add(10_000);
            spec.it_value.tv_sec = (ns / 1_000_000_000) as libc::time_t;
            spec.it_value.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
        }
        // SAFETY: valid timerfd and itimerspec; the old value is not requested.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.armed.set(due);
    }
}

/// One reactor's delay channel.
struct DelayChannel {
    disk: Arc<DelayDisk>,
    pass: Passthru,
    fifos: [RefCell<VecDeque<Held>>; 4],
    rng: RefCell<SmallRng>,
    alarm: Option<Rc<Alarm>>,
}

impl DelayChannel {
    /// Completes every held I/O that is due; the channel's poller. The FIFOs are visited in
    /// SPDK's order (`_delay_finish_io`): average reads, average writes, p99 reads, p99 writes.
    fn release_due(&self) -> usize {
        let now = ticks();
        let mut released = 0;
        for class in [
            LatencyType::AvgRead,
            LatencyType::AvgWrite,
            LatencyType::P99Read,
            LatencyType::P99Write,
        ] {
            let fifo = &self.fifos[class as usize];
            loop {
                let held = {
                    let mut q = fifo.borrow_mut();
                    match q.front() {
                        Some(h) if h.due <= now => q.pop_front(),
                        _ => None,
                    }
                };
                let Some(held) = held else { break };
                held.io.complete(held.status);
                released += 1;
            }
        }
        if let Some(alarm) = &self.alarm {
            alarm.set(self.earliest_due(), now);
        }
        released
    }

    fn earliest_due(&self) -> Option<u64> {
        self.fifos
            .iter()
            .filter_map(|f| f.borrow().front().map(|h| h.due))
            .min()
    }

    /// SPDK's reset: every channel's held I/Os are aborted (ECANCELED), then the reset goes
    /// to the base and completes when it does.
    fn reset(&self, io: IoHandle) {
        let Some(rt) = Runtime::current() else {
            return io.complete(Err(libc::EIO));
        };
        let key = self.pass.park(io);
        self.disk
            .channels
            .for_each(&rt, DelayChannel::abort_held, move |origin| {
                if let Some(reset) = origin.pass.unpark(key) {
                    origin.pass.forward(reset);
                }
            });
    }

    fn abort_held(&self) {
        for fifo in &self.fifos {
            loop {
                let next = fifo.borrow_mut().pop_front();
                match next {
                    Some(held) => held.io.complete(Err(libc::ECANCELED)),
                    None => break,
                }
            }
        }
    }
}

impl BdevChannel for DelayChannel {
    fn submit(&self, mut io: IoHandle) {
        // SPDK draws for every I/O, whatever its type.
        let p99 = self.rng.borrow_mut().gen_range(0..100) == 0;
        let class = match (io.io_type, p99) {
            (IoType::Read, false) => Some(LatencyType::AvgRead),
            (IoType::Read, true) => Some(LatencyType::P99Read),
            (IoType::Write, false) => Some(LatencyType::AvgWrite),
            (IoType::Write, true) => Some(LatencyType::P99Write),
            _ => None,
        };
        io.driver_ctx[0] = class.map_or(NOT_DELAYED, |c| c as u64 + 1);
        if io.io_type == IoType::Reset {
            self.reset(io);
        } else {
            self.pass.forward(io);
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl IoDone for DelayChannel {
    fn io_done(&self, child: IoHandle) {
        let Some((parent, status)) = self.pass.finish(child) else {
            return;
        };
        let Some(index) = parent.driver_ctx[0].checked_sub(1) else {
            return parent.complete(status);
        };
        let index = index as usize;
        let due = ticks().saturating_add(self.disk.latencies[index].ticks.load(Ordering::Relaxed));
        self.fifos[index].borrow_mut().push_back(Held {
            due,
            status,
            io: parent,
        });
        if let Some(alarm) = &self.alarm {
            if alarm.armed.get().is_none_or(|armed| due < armed) {
                alarm.set(Some(due), ticks());
            }
        }
    }
}

/// The bdev layer's handle on a delay bdev.
struct DelayBackend(Arc<DelayDisk>);

impl BdevBackend for DelayBackend {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    /// What the base supports, as SPDK's `vbdev_delay_io_type_supported`, but zcopy, whose
    /// lent view would have to be held across the delay.
    fn io_type_supported(&self, io_type: IoType) -> bool {
        io_type != IoType::Zcopy && self.0.base.io_type_supported(io_type)
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        let disk = self.0.clone();
        let interrupt = Runtime::current().is_some_and(|rt| rt.interrupt_mode());
        let alarm = if interrupt {
            Some(Rc::new(Alarm::new()?))
        } else {
            None
        };
        let channel = Passthru::channel(&disk.base, |pass| DelayChannel {
            disk: disk.clone(),
            pass,
            fifos: std::array::from_fn(|_| RefCell::new(VecDeque::with_capacity(FIFO_CAPACITY))),
            rng: RefCell::new(SmallRng::from_entropy()),
            alarm: alarm.clone(),
        })?;
        // The poller holds the channel weakly and the alarm strongly: once the channel is
        // gone it disarms the timer and stops itself, and the timerfd it waits on stays open
        // until then.
        let weak: Weak<DelayChannel> = Rc::downgrade(&channel);
        let me = Rc::new(Cell::new(None));
        let me2 = me.clone();
        let wake_fd = alarm.as_ref().map(|a| a.fd.as_raw_fd());
        let id = register_poller(
            Box::new(move || match weak.upgrade() {
                Some(ch) => ch.release_due(),
                None => {
                    if let Some(alarm) = &alarm {
                        alarm.set(None, 0);
                    }
                    if let Some(id) = me2.get() {
                        unregister_poller(id);
                    }
                    0
                }
            }),
            None,
            wake_fd,
        );
        me.set(Some(id));
        disk.channels.add(&channel);
        Ok(channel)
    }

    fn driver_specific(&self) -> Value {
        json!({"delay": self.config_params()})
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<(&'static str, Value)> {
        Some(("bdev_delay_create", self.config_params()))
    }

    fn destruct(&self) {
        self.0.base.release_claim();
        if let Some(rt) = Runtime::current() {
            self.0.channels.forget(&rt);
        }
    }
}

impl DelayBackend {
    /// SPDK's `_delay_write_conf_values`, shared by `driver_specific` and `save_config`.
    fn config_params(&self) -> Value {
        let d = &self.0;
        json!({
            "name": d.name,
            "base_bdev_name": d.base.name(),
            "uuid": d.uuid.to_string(),
            "avg_read_latency": d.latency_us(LatencyType::AvgRead),
            "p99_read_latency": d.latency_us(LatencyType::P99Read),
            "avg_write_latency": d.latency_us(LatencyType::AvgWrite),
            "p99_write_latency": d.latency_us(LatencyType::P99Write),
        })
    }
}

/// Creates delay bdev `name` on `base_name`, claiming it (`bdev_delay_create`). Refused
/// (EINVAL) when a p99 latency is below its average, as SPDK.
pub fn create(
    rt: &Runtime,
    name: String,
    base_name: &str,
    latencies: Latencies,
    uuid: Option<Uuid>,
) -> Result<Arc<Bdev>, BdevError> {
    if latencies.p99_read < latencies.avg_read || latencies.p99_write < latencies.avg_write {
        return Err(BdevError::Invalid(
            "Unable to create a delay bdev where p99 latency is less than average latency.".into(),
        ));
    }
    let uuid = uuid.unwrap_or_else(Uuid::new_v4);
    let mut disk = None;
    let bdev = register_stacked(rt, name.clone(), Some(uuid), base_name, MODULE, |base| {
        let state = Arc::new(DelayDisk {
            name,
            uuid,
            base: base.clone(),
            latencies: Default::default(),
            channels: ChannelDirectory::default(),
        });
        state.latencies[LatencyType::AvgRead as usize].set(latencies.avg_read);
        state.latencies[LatencyType::P99Read as usize].set(latencies.p99_read);
        state.latencies[LatencyType::AvgWrite as usize].set(latencies.avg_write);
        state.latencies[LatencyType::P99Write as usize].set(latencies.p99_write);
        disk = Some(state.clone());
        Box::new(DelayBackend(state))
    })?;
    if let Some(disk) = disk {
        rt.context::<ModuleIndex<DelayDisk>>()
            .insert(bdev.name(), &disk);
    }
    Ok(bdev)
}

/// Changes one latency of delay bdev `name` (`bdev_delay_update_latency`); I/O already held
/// keeps its old deadline. ENODEV when `name` is no delay bdev.
pub fn update_latency(
    rt: &Runtime,
    name: &str,
    latency_type: LatencyType,
    latency_us: u64,
) -> Result<(), BdevError> {
    let (_, disk) = rt
        .context::<ModuleIndex<DelayDisk>>()
        .get(rt, name, PRODUCT_NAME)?;
    disk.latencies[latency_type as usize].set(latency_us);
    Ok(())
}
