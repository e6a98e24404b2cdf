//! The vhost-user backend of one connected frontend, control only: rust-vmm's `vhost`
//! crate reads and answers the protocol messages on the controller's thread and calls these
//! handlers. They keep the negotiated features, the memory table and each ring's set-up,
//! and start, pause and stop rings on their reactors by message ([`super::vring`]); no
//! request data passes through here.
//!
//! A ring starts once it has memory, addresses, a kick fd and (with protocol features) is
//! enabled; GET_VRING_BASE, disabling, a reset or a disconnect stop it after its in-flight
//! I/O drained; a new memory table is swapped in only while the running rings are paused
//! and drained, so no I/O ever points into memory being unmapped.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;
use vhost::vhost_user::{Error as VuError, GpuBackend, Result as VuResult};
use vhost::VhostUserMemoryRegionBase;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::controller::ControllerShared;
use super::inflight::InflightRegion;
use super::memory::{GuestMem, RegionSpec};
use super::virtio_blk::{self, Geometry, MAX_QUEUES};
use super::vring::{self, Pause, VringSetup};
use crate::runtime::channel::DeviceId;

/// Largest ring a frontend may ask for (QEMU uses 128 or 256, libblkio 256).
const MAX_QUEUE_SIZE: u16 = 1024;
/// Memory regions a frontend may add one by one (CONFIGURE_MEM_SLOTS); QEMU offers 509.
const MAX_MEM_SLOTS: u64 = 64;
/// How long stopping a ring waits for its in-flight I/O before giving up on it (the ring
/// keeps the guest memory mapped until it drains, so giving up is safe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One ring as the frontend set it up.
#[derive(Default)]
struct RingConfig {
    size: u16,
    /// Frontend virtual addresses (translated when the ring starts).
    desc: u64,
    avail: u64,
    used: u64,
    base: u16,
    kick: Option<File>,
    call: Option<File>,
    enabled: bool,
    /// Where the ring runs: its reactor and its channel key there.
    running: Option<(usize, DeviceId)>,
}

/// The backend state of one frontend connection.
pub(super) struct Device {
    ctrl: Arc<ControllerShared>,
    geometry: Geometry,
    acked_features: u64,
    mem: Option<Arc<GuestMem>>,
    rings: Vec<RingConfig>,
    /// The frontend's inflight record (GET/SET_INFLIGHT_FD): rings started while it is set
    /// record their heads in flight there, and resubmit what an earlier daemon left.
    inflight: Option<Arc<InflightRegion>>,
}

fn invalid(what: &'static str) -> VuError {
    VuError::InvalidOperation(what)
}

/// Refuses an inflight region for more queues or larger ones than this device has.
fn check_inflight_shape(inflight: &VhostUserInflight) -> VuResult<()> {
    if inflight.num_queues > MAX_QUEUES || inflight.queue_size > MAX_QUEUE_SIZE {
        return Err(VuError::InvalidParam);
    }
    Ok(())
}

impl Device {
    pub(super) fn new(ctrl: Arc<ControllerShared>) -> Device {
        Device {
            geometry: ctrl.geometry(),
            ctrl,
            acked_features: 0,
            mem: None,
            rings: (0..MAX_QUEUES).map(|_| RingConfig::default()).collect(),
            inflight: None,
        }
    }

    fn ring(&mut self, index: u32) -> VuResult<&mut RingConfig> {
        self.rings
            .get_mut(index as usize)
            .ok_or(VuError::InvalidParam)
    }

    /// Stops every ring and forgets the frontend's set-up (disconnect, reset).
    pub(super) fn stop_all(&mut self) {
        for index in 0..self.rings.len() {
            self.stop(index);
        }
    }

    /// Starts ring `index` if it has all it needs and is not running.
    fn maybe_start(&mut self, index: usize) -> VuResult<()> {
        let needs_enable = virtio_blk::protocol_features_acked(self.acked_features);
        let ring = &self.rings[index];
        let ready = ring.running.is_none()
            && ring.kick.is_some()
            && ring.size != 0
            && (ring.enabled || !needs_enable);
        let Some(mem) = self.mem.clone().filter(|_| ready) else {
            return Ok(());
        };
        let translate = |va| mem.frontend_to_guest(va).ok_or(VuError::InvalidParam);
        let mut queue = Queue::new(MAX_QUEUE_SIZE).map_err(|_| VuError::InvalidParam)?;
        queue
            .try_set_size(ring.size)
            .map_err(|_| VuError::InvalidParam)?;
        queue
            .try_set_desc_table_address(GuestAddress(translate(ring.desc)?))
            .map_err(|_| VuError::InvalidParam)?;
        queue
            .try_set_avail_ring_address(GuestAddress(translate(ring.avail)?))
            .map_err(|_| VuError::InvalidParam)?;
        queue
            .try_set_used_ring_address(GuestAddress(translate(ring.used)?))
            .map_err(|_| VuError::InvalidParam)?;
        queue.set_next_avail(ring.base);
        queue.set_next_used(ring.base);
        queue.set_event_idx(virtio_blk::event_idx(self.acked_features));
        queue.set_ready(true);
        if !queue.is_valid(mem.memory()) {
            tracing::warn!(ctrlr = %self.ctrl.name, ring = index, "vring outside guest memory");
            return Err(VuError::InvalidParam);
        }
        let kick = ring.kick.as_ref().map(File::try_clone);
        let call = ring.call.as_ref().map(File::try_clone).transpose();
        let (Some(Ok(kick)), Ok(call)) = (kick, call) else {
            return Err(VuError::BackendInternalError);
        };
        let reactor = self.ctrl.reactors[index % self.ctrl.reactors.len()];
        let dev = DeviceId::new();
        let setup = VringSetup {
            queue,
            mem,
            kick,
            call,
            bdev: self.ctrl.bdev.clone(),
            geometry: self.geometry,
            label: format!("{}/{index}", self.ctrl.name).into(),
            interrupt_mode: self.ctrl.rt.interrupt_mode(),
            inflight: self
                .inflight
                .as_ref()
                .and_then(|region| region.queue(index, ring.size)),
        };
        self.ctrl
            .rt
            .run_on(reactor, move || vring::start(dev, setup))
            .map_err(|e| {
                tracing::warn!(ctrlr = %self.ctrl.name, ring = index, error = %e, "cannot start vring");
                VuError::BackendInternalError
            })?;
        tracing::debug!(ctrlr = %self.ctrl.name, ring = index, reactor, "vring started");
        self.rings[index].running = Some((reactor, dev));
        Ok(())
    }

    /// Pauses a running ring with `action` and waits until it drained; returns its next
    /// avail index (the ring's base for a restart).
    fn pause(&self, index: usize, action: Pause) -> Option<u16> {
        let (reactor, dev) = self.rings[index].running?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let fallback = self.rings[index].base;
        self.ctrl
            .rt
            .send_msg(reactor, move || vring::pause(dev, action, tx, fallback));
        match rx.recv_timeout(DRAIN_TIMEOUT) {
            Ok(next_avail) => Some(next_avail),
            Err(_) => {
                tracing::warn!(ctrlr = %self.ctrl.name, ring = index, "vring did not drain in time");
                Some(fallback)
            }
        }
    }

    /// Makes `mem` the memory table: running rings pause, drain and switch to it, then rings
    /// that were waiting for memory start.
    fn install(&mut self, mem: Result<Arc<GuestMem>, String>, what: &str) -> VuResult<()> {
        let mem = mem.map_err(|e| {
            tracing::warn!(ctrlr = %self.ctrl.name, error = %e, "{what} refused");
            VuError::InvalidParam
        })?;
        for index in 0..self.rings.len() {
            self.pause(index, Pause::SwapMemory(mem.clone()));
        }
        self.mem = Some(mem);
        for index in 0..self.rings.len() {
            self.maybe_start(index)?;
        }
        Ok(())
    }

    /// Stops ring `index` (if running) after its in-flight I/O; keeps its set-up.
    fn stop(&mut self, index: usize) -> u16 {
        if let Some(next_avail) = self.pause(index, Pause::Stop) {
            let ring = &mut self.rings[index];
            ring.running = None;
            ring.base = next_avail;
            tracing::debug!(ctrlr = %self.ctrl.name, ring = index, next_avail, "vring stopped");
        }
        self.rings[index].base
    }
}

impl VhostUserBackendReqHandlerMut for Device {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset_device()
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.stop_all();
        self.rings = (0..MAX_QUEUES).map(|_| RingConfig::default()).collect();
        self.acked_features = 0;
        self.inflight = None;
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(virtio_blk::device_features(&self.geometry))
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !virtio_blk::device_features(&self.geometry) != 0 {
            return Err(VuError::InvalidParam);
        }
        self.acked_features = features;
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        let specs: Vec<RegionSpec> = ctx
            .iter()
            .map(|r| RegionSpec {
                guest_phys: r.guest_phys_addr,
                size: r.memory_size,
                frontend_virt: r.user_addr,
                mmap_offset: r.mmap_offset,
            })
            .collect();
        let mem = GuestMem::map(&specs, files);
        self.install(mem, "SET_MEM_TABLE")?;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        if num == 0 || num > MAX_QUEUE_SIZE as u32 || !num.is_power_of_two() {
            return Err(VuError::InvalidParam);
        }
        self.ring(index)?.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let ring = self.ring(index)?;
        (ring.desc, ring.used, ring.avail) = (descriptor, used, available);
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let base = u16::try_from(base).map_err(|_| VuError::InvalidParam)?;
        self.ring(index)?.base = base;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        self.ring(index)?;
        let base = self.stop(index as usize);
        // Stopped until the frontend hands a kick fd again (vhost-user's ring life cycle).
        self.rings[index as usize].kick = None;
        Ok(VhostUserVringState::new(index, base as u32))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        // Without a kick fd the frontend would expect us to poll in every mode: refused.
        let fd = fd.ok_or(VuError::InvalidParam)?;
        self.ring(index as u32)?.kick = Some(fd);
        self.maybe_start(index as usize)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let ring = self.ring(index as u32)?;
        let copy = fd.as_ref().map(File::try_clone).transpose();
        ring.call = fd;
        if let Some((reactor, dev)) = ring.running {
            let copy = copy.map_err(|_| VuError::BackendInternalError)?;
            self.ctrl
                .rt
                .send_msg(reactor, move || vring::set_call(dev, copy));
        }
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> VuResult<()> {
        self.ring(index as u32).map(|_| ())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::INFLIGHT_SHMFD)
    }

    fn set_protocol_features(&mut self, _features: u64) -> VuResult<()> {
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(MAX_QUEUES as u64)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.ring(index)?.enabled = enable;
        if enable {
            self.maybe_start(index as usize)
        } else {
            self.stop(index as usize);
            Ok(())
        }
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        Ok(virtio_blk::read_config(
            &self.geometry,
            MAX_QUEUES,
            offset,
            size,
        ))
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        Err(invalid("the virtio-blk config space is read-only"))
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(invalid("not a GPU"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(invalid("no shared objects"))
    }

    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        check_inflight_shape(inflight)?;
        let (num_queues, queue_size) = (inflight.num_queues, inflight.queue_size);
        let (region, file, size) = InflightRegion::create(num_queues, queue_size).map_err(|e| {
            tracing::warn!(ctrlr = %self.ctrl.name, error = %e, "GET_INFLIGHT_FD refused");
            VuError::InvalidParam
        })?;
        self.inflight = Some(region);
        Ok((
            VhostUserInflight::new(size, 0, num_queues, queue_size),
            file,
        ))
    }

    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, file: File) -> VuResult<()> {
        check_inflight_shape(inflight)?;
        let region = InflightRegion::map(
            file,
            inflight.mmap_offset,
            inflight.mmap_size,
            inflight.num_queues,
            inflight.queue_size,
        )
        .map_err(|e| {
            tracing::warn!(ctrlr = %self.ctrl.name, error = %e, "SET_INFLIGHT_FD refused");
            VuError::InvalidParam
        })?;
        self.inflight = Some(region);
        Ok(())
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_MEM_SLOTS)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        let current = self.mem.clone().unwrap_or_else(GuestMem::empty);
        if current.region_count() >= MAX_MEM_SLOTS as usize {
            return Err(VuError::InvalidParam);
        }
        let spec = RegionSpec {
            guest_phys: region.guest_phys_addr,
            size: region.memory_size,
            frontend_virt: region.user_addr,
            mmap_offset: region.mmap_offset,
        };
        self.install(current.with_region(&spec, fd), "ADD_MEM_REG")?;
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        let current = self.mem.clone().unwrap_or_else(GuestMem::empty);
        let smaller = current.without_region(region.guest_phys_addr, region.memory_size);
        self.install(smaller, "REM_MEM_REG")
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(invalid("DEVICE_STATE not offered"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(invalid("DEVICE_STATE not offered"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(invalid("SHMEM not offered"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(invalid("LOG_SHMFD not offered"))
    }
}
