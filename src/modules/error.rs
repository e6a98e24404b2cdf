//! The error-injection bdev (SPDK's vbdev_error): `EE_<base>` passes I/O to its base until
//! told to fail, hold, corrupt or bounce (NOMEM) the next `num` I/Os of a type, so the layers
//! above (a quorum) can be tested against every kind of child misbehaviour.
//!
//! One difference from SPDK: `corrupt_data` on a write corrupts a private copy of the data,
//! which is what reaches the base; the caller's buffer is never changed. SPDK XORs the
//! caller's buffer in place, which no real disk does (a disk that stores bad data never
//! changes host memory), and which would corrupt every child of a quorum at once, since
//! they all write from the one buffer the quorum was given (issue 13, defect 3).
//!
//! Injection rules are shared by every reactor's channel and read on the data path, so they
//! are atomics; the count of I/Os still to affect is taken with a compare-and-swap, as SPDK
//! does, so two reactors never both consume the last one.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use super::index::ModuleIndex;
use super::passthru::{register_stacked, ChannelDirectory, Passthru, Slab};
use crate::bdev::{Bdev, BdevBackend, BdevChannel, BdevError, IoBuf, IoDone, IoHandle, IoType};
use crate::runtime::buf::DmaBuf;
use crate::runtime::Runtime;

/// SPDK's product name for error bdevs.
pub const PRODUCT_NAME: &str = "Error Injection Disk";

/// The claim owner on the base bdev (SPDK's module name).
const MODULE: &str = "error";

/// What happens to an affected I/O (SPDK's `error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Completes with EIO without reaching the base.
    Failure = 1,
    /// Held until the bdev is reset, then aborted (ECANCELED).
    Pending = 2,
    /// Passed down, with one byte XORed: in a private copy of the write payload that goes
    /// down instead of the caller's (see the module doc), in the read data after it comes
    /// back.
    CorruptData = 3,
    /// Completes with ENOMEM, which the bdev layer retries, as SPDK's NOMEM status.
    Nomem = 4,
}

impl ErrorType {
    /// SPDK's name of each type, as the RPC takes it.
    pub fn from_spdk_name(name: &str) -> Option<ErrorType> {
        Some(match name {
            "failure" => ErrorType::Failure,
            "pending" => ErrorType::Pending,
            "corrupt_data" => ErrorType::CorruptData,
            "nomem" => ErrorType::Nomem,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Option<ErrorType> {
        [
            ErrorType::Failure,
            ErrorType::Pending,
            ErrorType::CorruptData,
            ErrorType::Nomem,
        ]
        .into_iter()
        .find(|t| *t as u8 == v)
    }
}

/// Which I/O types an injection applies to (SPDK's `io_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One type.
    Only(IoType),
    /// Read, write, unmap and flush at once.
    All,
    /// Stop every injection (the remaining counts drop to 0).
    Clear,
}

impl Target {
    /// SPDK's name of each target, as the RPC takes it.
    pub fn from_spdk_name(name: &str) -> Option<Target> {
        Some(match name {
            "read" => Target::Only(IoType::Read),
            "write" => Target::Only(IoType::Write),
            "flush" => Target::Only(IoType::Flush),
            "unmap" => Target::Only(IoType::Unmap),
            "all" => Target::All,
            "clear" => Target::Clear,
            _ => return None,
        })
    }
}

/// One `bdev_error_inject_error` request.
#[derive(Debug, Clone, Copy)]
pub struct Injection {
    /// Which I/O types.
    pub target: Target,
    /// What to do to them.
    pub error_type: ErrorType,
    /// How many I/Os to affect (0 disables).
    pub num: u32,
    /// Affect an I/O only while at least this many I/Os of the channel are at the base.
    pub queue_depth: u64,
    /// Byte offset in the I/O's data that `CorruptData` changes.
    pub corrupt_offset: u64,
    /// XOR mask for that byte; 0 is refused, since it would change nothing.
    pub corrupt_value: u8,
}

/// The injectable types, in the order of [`ErrorDisk::rules`] (SPDK's `error_vector`).
const RULE_TYPES: [IoType; 4] = [IoType::Read, IoType::Write, IoType::Unmap, IoType::Flush];

/// One I/O type's injection.
#[derive(Default)]
struct Rule {
    error_type: AtomicU8,
    num: AtomicU32,
    queue_depth: AtomicU64,
    corrupt_offset: AtomicU64,
    corrupt_value: AtomicU8,
}

impl Rule {
    /// Installs `inj`; the count goes last (release), so a data path that takes one sees the
    /// other fields of the same injection.
    fn set(&self, inj: &Injection) {
        self.error_type
            .store(inj.error_type as u8, Ordering::Relaxed);
        self.queue_depth.store(inj.queue_depth, Ordering::Relaxed);
        self.corrupt_offset
            .store(inj.corrupt_offset, Ordering::Relaxed);
        self.corrupt_value
            .store(inj.corrupt_value, Ordering::Relaxed);
        self.num.store(inj.num, Ordering::Release);
    }

    /// SPDK's `vbdev_error_get_error_type`: nothing while fewer than `queue_depth` I/Os of
    /// the channel are at the base; otherwise one of the remaining `num` is consumed.
    fn take(&self, in_flight: u64) -> Option<ErrorType> {
        if in_flight < self.queue_depth.load(Ordering::Relaxed) {
            return None;
        }
        self.num
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        ErrorType::from_u8(self.error_type.load(Ordering::Relaxed))
    }

    /// XORs the configured byte of `data`, if the offset falls inside it (SPDK ignores an
    /// offset past the data).
    fn corrupt(&self, data: &mut [u8]) {
        let offset = self.corrupt_offset.load(Ordering::Relaxed);
        let value = self.corrupt_value.load(Ordering::Relaxed);
        if let Some(byte) = usize::try_from(offset).ok().and_then(|o| data.get_mut(o)) {
            *byte ^= value;
        }
    }
}

/// An error bdev's state, shared by its backend and every reactor's channel.
struct ErrorDisk {
    base: Arc<Bdev>,
    rules: [Rule; 4],
    channels: ChannelDirectory<ErrorChannel>,
}

impl ErrorDisk {
    fn rule(&self, io_type: IoType) -> Option<&Rule> {
        RULE_TYPES
            .iter()
            .position(|t| *t == io_type)
            .map(|i| &self.rules[i])
    }
}

/// Marks, in the parent's `driver_ctx[0]`, a read whose data is corrupted on completion.
const CORRUPT_ON_COMPLETION: u64 = 1;
/// Marks, in the parent's `driver_ctx[0]`, a write sent down from a corrupted private copy,
/// whose key in the channel's bounce table is in `driver_ctx[1]`.
const SENT_FROM_COPY: u64 = 2;

/// Corrupted writes in flight a channel holds copies for before its table has to grow.
const BOUNCE_CAPACITY: usize = 16;

/// Pending I/Os a channel holds before its queue has to grow.
const PENDING_CAPACITY: usize = 64;

/// One reactor's error channel.
struct ErrorChannel {
    disk: Arc<ErrorDisk>,
    pass: Passthru,
    /// I/Os at the base (SPDK's `io_inflight`, the queue-depth rule's measure).
    in_flight: Cell<u64>,
    /// I/Os held by the `pending` injection until a reset.
    pending: RefCell<VecDeque<IoHandle>>,
    /// Corrupted copies of writes at the base, each with the caller's buffer it replaces.
    bounces: Slab<(DmaBuf, IoBuf)>,
}

impl ErrorChannel {
    /// SPDK's reset: every channel's pending I/Os are aborted, then the reset succeeds; it
    /// is not passed to the base.
    fn reset(&self, io: IoHandle) {
        let Some(rt) = Runtime::current() else {
            return io.complete(Err(libc::EIO));
        };
        let key = self.pass.park(io);
        self.disk
            .channels
            .for_each(&rt, ErrorChannel::abort_pending, move |origin| {
                if let Some(reset) = origin.pass.unpark(key) {
                    reset.complete(Ok(()));
                }
            });
    }

    /// Points the write `io` at a copy of its data with the rule's byte corrupted, keeping
    /// the caller's buffer to restore at completion: the caller's memory is never changed.
    fn send_from_corrupted_copy(&self, io: &mut IoHandle, rule: &Rule) {
        let mut copy = DmaBuf::new(io.buf.len());
        // SAFETY: the write is in this module's hands (submitted, not completed), so its
        // buffer is valid and nobody changes it meanwhile; it is only read here.
        copy.as_mut_slice()
            .copy_from_slice(unsafe { io.buf.as_slice() });
        rule.corrupt(copy.as_mut_slice());
        // SAFETY: the copy stays in the bounce table until the write completes.
        let view = unsafe { IoBuf::from_dma(&mut copy) };
        let callers = std::mem::replace(&mut io.buf, view);
        io.driver_ctx = [SENT_FROM_COPY, self.bounces.insert((copy, callers))];
    }

    fn abort_pending(&self) {
        loop {
            let next = self.pending.borrow_mut().pop_front();
            match next {
                Some(io) => io.complete(Err(libc::ECANCELED)),
                None => break,
            }
        }
    }
}

impl BdevChannel for ErrorChannel {
    fn submit(&self, mut io: IoHandle) {
        if io.io_type == IoType::Reset {
            return self.reset(io);
        }
        let rule = self.disk.rule(io.io_type);
        let chosen = rule.and_then(|r| r.take(self.in_flight.get()));
        match chosen {
            Some(ErrorType::Failure) => io.complete(Err(libc::EIO)),
            Some(ErrorType::Nomem) => io.complete(Err(libc::ENOMEM)),
            Some(ErrorType::Pending) => self.pending.borrow_mut().push_back(io),
            Some(ErrorType::CorruptData) | None => {
                io.driver_ctx[0] = 0;
                if let (Some(ErrorType::CorruptData), Some(rule)) = (chosen, rule) {
                    match io.io_type {
                        IoType::Write => self.send_from_corrupted_copy(&mut io, rule),
                        IoType::Read => io.driver_ctx[0] = CORRUPT_ON_COMPLETION,
                        _ => {}
                    }
                }
                self.in_flight.set(self.in_flight.get() + 1);
                self.pass.forward(io);
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl IoDone for ErrorChannel {
    fn io_done(&self, child: IoHandle) {
        let Some((mut parent, status)) = self.pass.finish(child) else {
            return;
        };
        self.in_flight.set(self.in_flight.get() - 1);
        match parent.driver_ctx[0] {
            CORRUPT_ON_COMPLETION if status.is_ok() => {
                // SPDK corrupts with the rule as it is now, not as it was at submission.
                if let Some(rule) = self.disk.rule(IoType::Read) {
                    // SAFETY: the read completed below and is in this module's hands until
                    // it completes upwards; nothing else touches its buffer meanwhile.
                    rule.corrupt(unsafe { parent.buf.as_mut_slice() });
                }
            }
            SENT_FROM_COPY => {
                if let Some((copy, callers)) = self.bounces.remove(parent.driver_ctx[1]) {
                    parent.buf = callers;
                    drop(copy);
                }
            }
            _ => {}
        }
        parent.complete(status);
    }
}

/// The bdev layer's handle on an error bdev.
struct ErrorBackend(Arc<ErrorDisk>);

impl BdevBackend for ErrorBackend {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    /// What the base supports (SPDK's bdev_part delegates to the base), but zcopy: injected
    /// read corruption is written into the caller's buffer, which a lent view of the base's
    /// memory would bypass.
    fn io_type_supported(&self, io_type: IoType) -> bool {
        io_type != IoType::Zcopy && self.0.base.io_type_supported(io_type)
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        let disk = self.0.clone();
        let channel = Passthru::channel(&disk.base, |pass| ErrorChannel {
            disk: disk.clone(),
            pass,
            in_flight: Cell::new(0),
            pending: RefCell::new(VecDeque::with_capacity(PENDING_CAPACITY)),
            bounces: Slab::with_capacity(BOUNCE_CAPACITY),
        })?;
        disk.channels.add(&channel);
        Ok(channel)
    }

    fn driver_specific(&self) -> Value {
        json!({"error_disk": {"base_bdev": self.0.base.name()}})
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        Some((
            "bdev_error_create",
            json!({"base_name": self.0.base.name(), "uuid": bdev.uuid().to_string()}),
        ))
    }

    fn destruct(&self) {
        self.0.base.release_claim();
        if let Some(rt) = Runtime::current() {
            self.0.channels.forget(&rt);
        }
    }
}

/// Creates `EE_<base_name>` on `base_name`, claiming it (`bdev_error_create`).
pub fn create(rt: &Runtime, base_name: &str, uuid: Option<Uuid>) -> Result<Arc<Bdev>, BdevError> {
    let mut disk = None;
    let bdev = register_stacked(
        rt,
        format!("EE_{base_name}"),
        uuid,
        base_name,
        MODULE,
        |base| {
            let state = Arc::new(ErrorDisk {
                base: base.clone(),
                rules: Default::default(),
                channels: ChannelDirectory::default(),
            });
            disk = Some(state.clone());
            Box::new(ErrorBackend(state))
        },
    )?;
    if let Some(disk) = disk {
        rt.context::<ModuleIndex<ErrorDisk>>()
            .insert(bdev.name(), &disk);
    }
    Ok(bdev)
}

/// Installs an injection on error bdev `name` (`bdev_error_inject_error`). Refused (EINVAL)
/// for `corrupt_data` with a zero `corrupt_value`, ENODEV when `name` is no error bdev.
pub fn inject(rt: &Runtime, name: &str, inj: &Injection) -> Result<(), BdevError> {
    if inj.error_type == ErrorType::CorruptData && inj.corrupt_value == 0 {
        return Err(BdevError::Invalid(
            "corrupt_value should be non-zero".into(),
        ));
    }
    let (_, disk) = rt
        .context::<ModuleIndex<ErrorDisk>>()
        .get(rt, name, PRODUCT_NAME)?;
    match inj.target {
        Target::Only(io_type) => {
            let rule = disk.rule(io_type).ok_or_else(|| {
                BdevError::Invalid(format!("{} I/O cannot be injected", io_type.spdk_name()))
            })?;
            rule.set(inj);
        }
        Target::All => disk.rules.iter().for_each(|r| r.set(inj)),
        Target::Clear => disk
            .rules
            .iter()
            .for_each(|r| r.num.store(0, Ordering::Release)),
    }
    Ok(())
}
