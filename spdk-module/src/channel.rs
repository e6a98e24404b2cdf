//! A quorum's channel on one SPDK thread: this thread's view of the children (each child's
//! own I/O channel and this thread's counters) and the thread's handle on SPDK's iobuf pool,
//! where reads that do not go into the parent's buffer get their DMA-safe memory.
//!
//! A view is replaced, never changed, when the child list changes (add, remove, hot
//! removal): I/O in flight keeps the view it started with (an `Rc` in its context), so a
//! child's channel is put back only when its last I/O is done.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

use quorum_core::io::Children;
use quorum_core::{ChildCounters, ChildSet};
use spdk_sys as sys;

use crate::child::ChildDesc;
use crate::quorum_bdev::QuorumBdev;
use crate::{log, module};

/// A child's I/O channel on this thread, put back when dropped.
pub struct ChildChannel(NonNull<sys::spdk_io_channel>);

impl ChildChannel {
    /// The raw channel, for child I/O.
    pub fn raw(&self) -> *mut sys::spdk_io_channel {
        self.0.as_ptr()
    }
}

impl Drop for ChildChannel {
    fn drop(&mut self) {
        // SAFETY: obtained by spdk_bdev_get_io_channel on this thread, put back once; views
        // live and die on their thread.
        unsafe { sys::spdk_put_io_channel(self.0.as_ptr()) };
    }
}

/// One child as this thread sees it.
pub struct ChildSlot {
    /// The child's identity in the quorum.
    pub id: u64,
    /// Its bdev name, for events.
    pub name: Arc<str>,
    /// Its bdev, to match completions and wait for bdev_ios; null when it is gone.
    pub bdev: *mut sys::spdk_bdev,
    /// Its I/O channel here; `None` when the child is gone (hot removal) and fails its I/O.
    /// Declared before `desc` so the channel is put back before the descriptor may close.
    pub channel: Option<ChildChannel>,
    /// Its descriptor, for child I/O.
    pub desc: Option<Arc<ChildDesc>>,
    /// This thread's counters of the child, shared with later views.
    pub counters: Rc<ChildCounters>,
}

/// The children, in vote order, as one I/O sees them.
pub struct View {
    /// One slot per child.
    pub slots: Vec<ChildSlot>,
    /// Every present child serves SPDK's zero-copy type, and so lends its memory to reads
    /// sent without a buffer (malloc, and vbdevs over it).
    all_lend: bool,
}

impl View {
    /// Whether reads may vote on memory the children lend (see [`crate::io`]).
    pub fn all_lend(&self) -> bool {
        self.all_lend
    }

    /// Every child, the participants of an I/O.
    pub fn everyone(&self) -> ChildSet {
        (0..self.slots.len()).collect()
    }

    /// The position of the child whose bdev is `bdev`, to match a child completion.
    pub fn position(&self, bdev: *mut sys::spdk_bdev) -> Option<usize> {
        self.slots.iter().position(|s| s.bdev == bdev)
    }
}

impl Children for View {
    fn name(&self, child: usize) -> &str {
        &self.slots[child].name
    }

    fn counters(&self, child: usize) -> &ChildCounters {
        &self.slots[child].counters
    }
}

/// The channel context SPDK allocates per thread per quorum.
pub struct QuorumChannel {
    quorum: *const QuorumBdev,
    view: Rc<View>,
    /// SPDK's per-thread iobuf cache; SPDK keeps pointers into it, and the channel context
    /// never moves.
    iobuf: sys::spdk_iobuf_channel,
}

impl QuorumChannel {
    /// The quorum this channel serves.
    pub fn quorum(&self) -> &QuorumBdev {
        // SAFETY: the quorum outlives its channels (SPDK destroys channels before destruct).
        unsafe { &*self.quorum }
    }

    /// The current view, for an I/O starting now.
    pub fn view(&self) -> &Rc<View> {
        &self.view
    }

    /// The thread's iobuf channel.
    pub fn iobuf(&mut self) -> *mut sys::spdk_iobuf_channel {
        &mut self.iobuf
    }

    /// Rebuilds this thread's view from the quorum's child list, keeping the channels and
    /// counters of children that stay; children that left hand their counters to the
    /// quorum's retired totals.
    pub fn refresh(&mut self) {
        let next = build_view(self.quorum(), Some(&self.view));
        for gone in self
            .view
            .slots
            .iter()
            .filter(|s| !next.slots.iter().any(|n| n.id == s.id))
        {
            self.quorum()
                .retire_counters(gone.id, &gone.counters.snapshot());
        }
        self.view = Rc::new(next);
    }

    /// Counters of every child as seen from this thread, by child id.
    pub fn counters(&self) -> Vec<(u64, quorum_core::CounterSnapshot)> {
        self.view
            .slots
            .iter()
            .map(|s| (s.id, s.counters.snapshot()))
            .collect()
    }
}

/// A view of the quorum's current children, reusing what `previous` has for the same ones.
fn build_view(q: &QuorumBdev, previous: Option<&Rc<View>>) -> View {
    let children = q.children().clone();
    let slots = children
        .into_iter()
        .map(|child| {
            let old = previous.and_then(|v| v.slots.iter().find(|s| s.id == child.id));
            let counters = old.map_or_else(Rc::default, |s| s.counters.clone());
            let channel = match (&child.desc, old) {
                (None, _) => None,
                // SAFETY: a channel this thread holds already: take one more reference.
                (Some(_), Some(s)) if s.channel.is_some() => s.channel.as_ref().map(|c| unsafe {
                    ChildChannel(NonNull::new_unchecked(sys::spdk_io_channel_ref(c.raw())))
                }),
                (Some(desc), _) => {
                    // SAFETY: the descriptor is open; on an SPDK thread.
                    let ch = unsafe { sys::spdk_bdev_get_io_channel(desc.raw()) };
                    let ch = NonNull::new(ch).map(ChildChannel);
                    if ch.is_none() {
                        log::error(&format!(
                            "quorum {}: no I/O channel for child {}",
                            q.name(),
                            child.name
                        ));
                    }
                    ch
                }
            };
            ChildSlot {
                id: child.id,
                name: child.name,
                bdev: child
                    .desc
                    .as_ref()
                    .map_or(std::ptr::null_mut(), |d| d.bdev()),
                channel,
                desc: child.desc,
                counters,
            }
        })
        .collect::<Vec<ChildSlot>>();
    let present: Vec<&Arc<ChildDesc>> = slots.iter().filter_map(|s| s.desc.as_ref()).collect();
    let all_lend = !present.is_empty()
        && present
            .iter()
            .all(|d| d.supports(sys::SPDK_BDEV_IO_TYPE_ZCOPY));
    View { slots, all_lend }
}

/// SPDK's channel constructor: the view of the children and an iobuf cache.
pub unsafe extern "C" fn create(io_device: *mut c_void, ctx: *mut c_void) -> i32 {
    // SAFETY: `io_device` is a registered quorum; `ctx` is SPDK's uninitialised context of
    // our channel size, written once here before anything reads it.
    unsafe {
        let q = &*(io_device as *const QuorumBdev);
        let ch = ctx as *mut QuorumChannel;
        std::ptr::write(
            ch,
            QuorumChannel {
                quorum: q,
                view: Rc::new(build_view(q, None)),
                iobuf: std::mem::zeroed(),
            },
        );
        let rc = sys::spdk_iobuf_channel_init(
            &mut (*ch).iobuf,
            module::IOBUF_NAME.as_ptr(),
            module::IOBUF_SMALL_CACHE,
            module::IOBUF_LARGE_CACHE,
        );
        if rc != 0 {
            log::error(&format!("quorum {}: iobuf channel: {rc}", q.name()));
            std::ptr::drop_in_place(ch);
        }
        rc
    }
}

/// SPDK's channel destructor: counters to the quorum's totals, children's channels back.
pub unsafe extern "C" fn destroy(_io_device: *mut c_void, ctx: *mut c_void) {
    // SAFETY: `ctx` holds the channel `create` wrote; SPDK destroys it once, on its thread,
    // after its last I/O.
    unsafe {
        let ch = &mut *(ctx as *mut QuorumChannel);
        for slot in &ch.view.slots {
            ch.quorum()
                .retire_counters(slot.id, &slot.counters.snapshot());
        }
        sys::spdk_iobuf_channel_fini(&mut ch.iobuf);
        std::ptr::drop_in_place(ch);
    }
}

/// The channel context of `ch`, one of a quorum's channels.
///
/// # Safety
/// `ch` is a live channel of a quorum's io_device, used on its own thread.
pub unsafe fn from_io_channel<'a>(ch: *mut sys::spdk_io_channel) -> &'a mut QuorumChannel {
    // SAFETY: the caller's promise; the context holds a QuorumChannel written by `create`.
    unsafe { &mut *(crate::spdk_inline::io_channel_get_ctx(ch) as *mut QuorumChannel) }
}
