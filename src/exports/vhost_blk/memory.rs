//! The guest's memory as the frontend shares it (SET_MEM_TABLE: one file descriptor per
//! region), mapped into this process with rust-vmm's `vm-memory`. The data path reaches
//! guest buffers through [`GuestMem::host_range`], which refuses any range that is not
//! inside one region: a descriptor pointing outside guest memory never becomes a pointer.

use std::ffi::CStr;
use std::fs::File;
use std::sync::Arc;

use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

/// Bytes of the private page [`GuestMem::with_replay_ring`] adds: an avail ring of the
/// largest queue (4 + 2 x 1024 bytes) fits.
const REPLAY_PAGE: usize = 4096;

/// A shared-memory file of `len` zero bytes (what the frontend gets for regions we create).
pub(super) fn memfd(name: &CStr, len: u64) -> std::io::Result<File> {
    // SAFETY: plain syscall with a NUL-terminated name; the fd is checked and then owned by
    // the File.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and nobody else owns it.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(len)?;
    Ok(file)
}

/// One region of the table: where it is for the guest and for the frontend process (ring
/// addresses arrive as frontend virtual addresses).
#[derive(Debug, Clone, Copy)]
struct RegionAddrs {
    guest_phys: u64,
    size: u64,
    frontend_virt: u64,
}

/// A mapped memory table. Shared (`Arc`) by the control thread and every queue; a table
/// replaced by a newer one stays mapped until the last queue that used it let go, which is
/// after its in-flight I/O drained.
pub struct GuestMem {
    mem: GuestMemoryMmap,
    addrs: Vec<RegionAddrs>,
}

/// A region as SET_MEM_TABLE describes it.
#[derive(Debug, Clone, Copy)]
pub struct RegionSpec {
    /// Guest physical address.
    pub guest_phys: u64,
    /// Bytes.
    pub size: u64,
    /// The frontend's virtual address of the region.
    pub frontend_virt: u64,
    /// Where the region starts in its file.
    pub mmap_offset: u64,
}

impl RegionSpec {
    fn map(&self, file: File) -> Result<Arc<GuestRegionMmap>, String> {
        let size = usize::try_from(self.size).map_err(|_| "region too large".to_string())?;
        let region = GuestRegionMmap::from_range(
            GuestAddress(self.guest_phys),
            size,
            Some(FileOffset::new(file, self.mmap_offset)),
        )
        .map_err(|e| format!("cannot map guest region at {:#x}: {e}", self.guest_phys))?;
        Ok(Arc::new(region))
    }

    fn addrs(&self) -> RegionAddrs {
        RegionAddrs {
            guest_phys: self.guest_phys,
            size: self.size,
            frontend_virt: self.frontend_virt,
        }
    }
}

impl GuestMem {
    /// No memory yet (before the first region arrives with ADD_MEM_REG).
    pub fn empty() -> Arc<GuestMem> {
        Arc::new(GuestMem {
            mem: GuestMemoryMmap::new(),
            addrs: Vec::new(),
        })
    }

    /// Maps every region from its file (SET_MEM_TABLE); fails, changing nothing, if any
    /// region cannot be mapped or regions overlap.
    pub fn map(specs: &[RegionSpec], files: Vec<File>) -> Result<Arc<GuestMem>, String> {
        if specs.len() != files.len() {
            return Err(format!(
                "{} memory regions but {} file descriptors",
                specs.len(),
                files.len()
            ));
        }
        let regions = specs
            .iter()
            .zip(files)
            .map(|(spec, file)| spec.map(file))
            .collect::<Result<Vec<_>, _>>()?;
        let mem = GuestMemoryMmap::from_arc_regions(regions)
            .map_err(|e| format!("invalid guest memory table: {e}"))?;
        let addrs = specs.iter().map(RegionSpec::addrs).collect();
        Ok(Arc::new(GuestMem { mem, addrs }))
    }

    /// This table plus one region (ADD_MEM_REG).
    pub fn with_region(&self, spec: &RegionSpec, file: File) -> Result<Arc<GuestMem>, String> {
        let mem = self
            .mem
            .insert_region(spec.map(file)?)
            .map_err(|e| format!("cannot add guest region at {:#x}: {e}", spec.guest_phys))?;
        let mut addrs = self.addrs.clone();
        addrs.push(spec.addrs());
        Ok(Arc::new(GuestMem { mem, addrs }))
    }

    /// This table less the region at `guest_phys` of `size` bytes (REM_MEM_REG).
    pub fn without_region(&self, guest_phys: u64, size: u64) -> Result<Arc<GuestMem>, String> {
        let (mem, _) = self
            .mem
            .remove_region(GuestAddress(guest_phys), size)
            .map_err(|e| format!("cannot remove guest region at {guest_phys:#x}: {e}"))?;
        let mut addrs = self.addrs.clone();
        addrs.retain(|r| r.guest_phys != guest_phys);
        Ok(Arc::new(GuestMem { mem, addrs }))
    }

    /// This table plus a private page above the guest's memory holding an avail ring that
    /// offers `heads`, in order; returns the memory and the ring's guest address. How a
    /// restarted queue serves again the heads it had in flight (INFLIGHT_SHMFD): the guest's
    /// own avail ring may have reused their slots, so `virtio-queue` reads them from this
    /// copy while the descriptors stay the guest's.
    pub fn with_replay_ring(&self, heads: &[u16]) -> Result<(GuestMemoryMmap, u64), String> {
        if 4 + 2 * heads.len() > REPLAY_PAGE {
            return Err(format!("{} heads to replay", heads.len()));
        }
        let at = self
            .mem
            .iter()
            .map(|r| r.last_addr().0)
            .max()
            .map_or(Some(0), |last| last.checked_add(1))
            .and_then(|end| end.checked_next_multiple_of(REPLAY_PAGE as u64))
            .ok_or("guest memory ends at the top of the address space")?;
        let page = GuestRegionMmap::from_range(GuestAddress(at), REPLAY_PAGE, None)
            .map_err(|e| format!("cannot map the replay ring: {e}"))?;
        let mem = self
            .mem
            .insert_region(Arc::new(page))
            .map_err(|e| format!("cannot add the replay ring: {e}"))?;
        // flags, idx, ring[]: all little-endian u16.
        let mut ring = Vec::with_capacity(4 + 2 * heads.len());
        ring.extend_from_slice(&0u16.to_le_bytes());
        ring.extend_from_slice(&(heads.len() as u16).to_le_bytes());
        for head in heads {
            ring.extend_from_slice(&head.to_le_bytes());
        }
        mem.write_slice(&ring, GuestAddress(at))
            .map_err(|e| format!("cannot write the replay ring: {e}"))?;
        Ok((mem, at))
    }

    /// Regions in the table.
    pub fn region_count(&self) -> usize {
        self.addrs.len()
    }

    /// The memory for `virtio-queue`.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The guest address of a frontend virtual address (vring addresses are given that way).
    pub fn frontend_to_guest(&self, virt: u64) -> Option<u64> {
        self.addrs.iter().find_map(|r| {
            let off = virt.checked_sub(r.frontend_virt)?;
            (off < r.size).then_some(r.guest_phys + off)
        })
    }

    /// The host address of `len` guest bytes at `addr`, if they all lie inside one region.
    pub fn host_range(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let region = self.mem.find_region(GuestAddress(addr))?;
        let offset = addr - region.start_addr().0;
        let end = offset.checked_add(len as u64)?;
        if end > region.len() {
            return None;
        }
        region.get_host_address(MemoryRegionAddress(offset)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(len: u64) -> File {
        super::memfd(c"guest", len).unwrap()
    }

    #[test]
    fn ranges_resolve_only_inside_one_region() {
        let specs = [
            RegionSpec {
                guest_phys: 0,
                size: 1 << 20,
                frontend_virt: 0x7000_0000,
                mmap_offset: 0,
            },
            RegionSpec {
                guest_phys: 1 << 20,
                size: 1 << 20,
                frontend_virt: 0x9000_0000,
                mmap_offset: 0,
            },
        ];
        let mem = GuestMem::map(&specs, vec![memfd(1 << 20), memfd(1 << 20)]).unwrap();
        assert!(mem.host_range(0, 4096).is_some());
        assert!(mem.host_range((1 << 20) - 4096, 4096).is_some());
        assert!(
            mem.host_range((1 << 20) - 4096, 8192).is_none(),
            "straddles two regions"
        );
        assert!(mem.host_range(2 << 20, 1).is_none(), "outside guest memory");
        assert!(mem.host_range(u64::MAX - 1, 16).is_none());
        assert_eq!(mem.frontend_to_guest(0x9000_0010), Some((1 << 20) + 0x10));
        assert_eq!(mem.frontend_to_guest(0x6fff_ffff), None);
        // What one mapping writes, the other sees: both are the guest's memory.
        let p = mem.host_range(4096, 1).unwrap();
        // SAFETY: p points into our own mapping of a region at least 4097 bytes long.
        unsafe { p.write(0xab) };
        assert!(
            GuestMem::map(&specs[..1], vec![]).is_err(),
            "fd count mismatch"
        );
        // Regions come and go one at a time too (CONFIGURE_MEM_SLOTS).
        let one = GuestMem::empty()
            .with_region(&specs[0], memfd(1 << 20))
            .unwrap();
        assert!(one.host_range(4096, 1).is_some() && one.host_range(1 << 20, 1).is_none());
        assert!(
            one.with_region(&specs[0], memfd(1 << 20)).is_err(),
            "overlap"
        );
        let none = one.without_region(0, 1 << 20).unwrap();
        assert!(none.host_range(4096, 1).is_none());
        assert_eq!(none.frontend_to_guest(0x7000_0000), None);
    }
}
