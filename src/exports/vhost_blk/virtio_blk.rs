//! The virtio-blk device model, pure: which features the device offers, its config space,
//! the request header and how one request maps onto a bdev I/O (or why it is refused, with
//! the status virtio defines). No memory, sockets or reactors here, so every rule is
//! unit-tested on plain values, as `nbd/proto.rs` is for NBD.

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::bdev::IoType;

/// virtio-blk counts sectors of 512 bytes whatever the device's block size.
pub const SECTOR_SIZE: u64 = 512;
/// The request header: type, reserved (ioprio), sector.
pub const HEADER_LEN: usize = 16;
/// Data segments one request may carry (`seg_max`): a queue of 128 minus header and status.
pub const SEG_MAX: u32 = 126;
/// Largest data segment (`size_max`).
pub const SIZE_MAX: u32 = 64 << 10;
/// Most data one request may carry: `seg_max` segments of `size_max`, the most a driver
/// honouring the config sends. Larger requests are IOERR, so a guest cannot make the device
/// take (or bounce) unbounded memory for one request.
pub const MAX_DATA_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Most queues a controller offers (`num_queues`, GET_QUEUE_NUM).
pub const MAX_QUEUES: u16 = 16;
/// Discard and write-zeroes segments per request: one, as QEMU offers.
pub const MAX_RANGE_SEGMENTS: u32 = 1;
/// Largest discard or write-zeroes range, in sectors (4 GiB - 512).
pub const MAX_RANGE_SECTORS: u32 = u32::MAX >> 9;
/// One discard / write-zeroes segment: sector u64, num_sectors u32, flags u32.
pub const RANGE_SEGMENT_LEN: usize = 16;
/// Write-zeroes flag: the device may unmap the range instead of writing zeroes.
pub const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;
/// Bytes of the GET_ID answer (the serial).
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
/// vhost-user's own feature bit: the frontend may negotiate protocol features.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;

/// The virtio status byte of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done.
    Ok = VIRTIO_BLK_S_OK as u8,
    /// The request was valid but failed, or its range or sizes were wrong.
    IoErr = VIRTIO_BLK_S_IOERR as u8,
    /// The device does not do this (unknown type, flags it does not know).
    Unsupp = VIRTIO_BLK_S_UNSUPP as u8,
}

/// What the bdev behind the device can do, as far as virtio-blk shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block.
    pub block_size: u32,
    /// Size in blocks.
    pub num_blocks: u64,
    /// Writes, discards and write-zeroes refused (`readonly` of the RPC).
    pub read_only: bool,
    /// The bdev serves FLUSH.
    pub flush: bool,
    /// The bdev serves UNMAP.
    pub discard: bool,
    /// The bdev serves WRITE_ZEROES.
    pub write_zeroes: bool,
}

impl Geometry {
    /// Size in 512-byte sectors (virtio's `capacity`).
    pub fn capacity_sectors(&self) -> u64 {
        self.num_blocks * self.block_size as u64 / SECTOR_SIZE
    }
}

fn bit(n: u32) -> u64 {
    1 << n
}

/// The virtio features the device offers: virtio 1.0 split rings with event index and
/// indirect descriptors, vhost-user protocol features, and the block features the bdev backs.
pub fn device_features(g: &Geometry) -> u64 {
    let mut f = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VHOST_USER_F_PROTOCOL_FEATURES)
        | bit(VIRTIO_BLK_F_SIZE_MAX)
        | bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_BLK_SIZE)
        | bit(VIRTIO_BLK_F_MQ);
    if g.flush {
        f |= bit(VIRTIO_BLK_F_FLUSH);
    }
    if g.read_only {
        f |= bit(VIRTIO_BLK_F_RO);
    } else {
        if g.discard {
            f |= bit(VIRTIO_BLK_F_DISCARD);
        }
        if g.write_zeroes {
            f |= bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
    }
    f
}

/// Whether the acked feature set turned on event-index notification suppression.
pub fn event_idx(acked: u64) -> bool {
    acked & bit(VIRTIO_RING_F_EVENT_IDX) != 0
}

/// Whether the frontend negotiated vhost-user protocol features (rings then start disabled
/// until SET_VRING_ENABLE, as the vhost-user spec says).
pub fn protocol_features_acked(acked: u64) -> bool {
    acked & bit(VHOST_USER_F_PROTOCOL_FEATURES) != 0
}

/// `struct virtio_blk_config` (little-endian), as far as the offered features define it.
pub fn config_space(g: &Geometry, num_queues: u16) -> [u8; 60] {
    let mut c = [0u8; 60];
    c[0..8].copy_from_slice(&g.capacity_sectors().to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    // 16..20: geometry (not offered).
    c[20..24].copy_from_slice(&g.block_size.to_le_bytes());
    // 24..32: topology (not offered); 32: writeback (not offered).
    c[34..36].copy_from_slice(&num_queues.to_le_bytes());
    let block_sectors = (g.block_size as u64 / SECTOR_SIZE) as u32;
    c[36..40].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_RANGE_SEGMENTS.to_le_bytes());
    c[44..48].copy_from_slice(&block_sectors.to_le_bytes());
    c[48..52].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_RANGE_SEGMENTS.to_le_bytes());
    c[56] = 1; // write_zeroes_may_unmap
    c
}

/// `size` bytes of the config space from `offset`, zero past its end (frontends read QEMU's
/// larger struct; fields of features not offered read as zero).
pub fn read_config(g: &Geometry, num_queues: u16, offset: u32, size: u32) -> Vec<u8> {
    let space = config_space(g, num_queues);
    (offset as usize..offset as usize + size as usize)
        .map(|i| space.get(i).copied().unwrap_or(0))
        .collect()
}

/// A request header as the driver wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `VIRTIO_BLK_T_*`.
    pub request_type: u32,
    /// First 512-byte sector.
    pub sector: u64,
}

impl Header {
    /// Decodes the 16 header bytes.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            request_type: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            sector: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
}

/// One discard or write-zeroes segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSegment {
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub num_sectors: u32,
    /// `VIRTIO_BLK_WRITE_ZEROES_FLAG_*`.
    pub flags: u32,
}

impl RangeSegment {
    /// Decodes one 16-byte segment.
    pub fn parse(b: &[u8; RANGE_SEGMENT_LEN]) -> RangeSegment {
        RangeSegment {
            sector: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            num_sectors: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

/// What a request asks of the bdev, once its header and sizes are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A bdev I/O over the request's data (read, write) or none (flush).
    Io {
        /// The bdev I/O type.
        io_type: IoType,
        /// First block.
        offset_blocks: u64,
        /// Blocks.
        num_blocks: u64,
    },
    /// A discard or write-zeroes whose range is in the data: decode it with
    /// [`range_command`].
    Range(IoType),
    /// GET_ID: the serial goes into the data.
    GetId,
}

/// Where the request's bytes are: `out_len` device-readable bytes after the header,
/// `in_len` device-writable bytes before the status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLens {
    /// Data the driver sends (write payload, discard segments).
    pub out_len: u64,
    /// Room the driver gives for data back (read data, the ID).
    pub in_len: u64,
}

/// Checks a request against the device and says what to do, or the status to answer with.
/// Rules as QEMU's virtio-blk: a range outside the device or not in whole blocks is IOERR, a
/// write to a read-only device is IOERR, an unknown type is UNSUPP.
pub fn command(h: &Header, lens: DataLens, g: &Geometry) -> Result<Command, Status> {
    match h.request_type {
        VIRTIO_BLK_T_IN => rw_command(IoType::Read, h.sector, lens.in_len, g),
        VIRTIO_BLK_T_OUT if g.read_only => Err(Status::IoErr),
        VIRTIO_BLK_T_OUT => rw_command(IoType::Write, h.sector, lens.out_len, g),
        VIRTIO_BLK_T_FLUSH if g.flush => Ok(Command::Io {
            io_type: IoType::Flush,
            offset_blocks: 0,
            num_blocks: g.num_blocks,
        }),
        VIRTIO_BLK_T_GET_ID => Ok(Command::GetId),
        VIRTIO_BLK_T_DISCARD if g.discard && !g.read_only => Ok(Command::Range(IoType::Unmap)),
        VIRTIO_BLK_T_WRITE_ZEROES if g.write_zeroes && !g.read_only => {
            Ok(Command::Range(IoType::WriteZeroes))
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES if g.read_only => Err(Status::IoErr),
        _ => Err(Status::Unsupp),
    }
}

/// Converts a sector range into blocks; IOERR when it is not whole blocks or leaves the device.
fn blocks(sector: u64, bytes: u64, g: &Geometry) -> Result<(u64, u64), Status> {
    let bs = g.block_size as u64;
    let start = sector.checked_mul(SECTOR_SIZE).ok_or(Status::IoErr)?;
    if !start.is_multiple_of(bs) || !bytes.is_multiple_of(bs) {
        return Err(Status::IoErr);
    }
    let (offset, count) = (start / bs, bytes / bs);
    match offset.checked_add(count) {
        Some(end) if end <= g.num_blocks => Ok((offset, count)),
        _ => Err(Status::IoErr),
    }
}

fn rw_command(io_type: IoType, sector: u64, len: u64, g: &Geometry) -> Result<Command, Status> {
    if len > MAX_DATA_BYTES {
        return Err(Status::IoErr);
    }
    let (offset_blocks, num_blocks) = blocks(sector, len, g)?;
    Ok(Command::Io {
        io_type,
        offset_blocks,
        num_blocks,
    })
}

/// The bdev I/O of a discard or write-zeroes whose `segments` bytes (exactly one segment)
/// were read from the request. Unknown flags, and any flag on a discard, are UNSUPP.
pub fn range_command(io_type: IoType, segments: &[u8], g: &Geometry) -> Result<(u64, u64), Status> {
    let Ok(one) = <&[u8; RANGE_SEGMENT_LEN]>::try_from(segments) else {
        return Err(Status::IoErr);
    };
    let seg = RangeSegment::parse(one);
    let allowed = match io_type {
        IoType::WriteZeroes => WRITE_ZEROES_FLAG_UNMAP,
        _ => 0,
    };
    if seg.flags & !allowed != 0 {
        return Err(Status::Unsupp);
    }
    if seg.num_sectors == 0 {
        return Err(Status::IoErr);
    }
    blocks(seg.sector, seg.num_sectors as u64 * SECTOR_SIZE, g)
}

/// The GET_ID answer: the bdev name, cut or zero-padded to 20 bytes (SPDK's serial).
pub fn device_id(name: &str) -> [u8; ID_BYTES] {
    let mut id = [0u8; ID_BYTES];
    let n = name.len().min(ID_BYTES);
    id[..n].copy_from_slice(&name.as_bytes()[..n]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            block_size: 4096,
            num_blocks: 256,
            read_only: false,
            flush: true,
            discard: true,
            write_zeroes: true,
        }
    }

    fn header(request_type: u32, sector: u64) -> Header {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&request_type.to_le_bytes());
        b[4..8].copy_from_slice(&7u32.to_le_bytes()); // ioprio: ignored
        b[8..16].copy_from_slice(&sector.to_le_bytes());
        Header::parse(&b)
    }

    fn lens(out_len: u64, in_len: u64) -> DataLens {
        DataLens { out_len, in_len }
    }

    #[test]
    fn header_decodes_little_endian_type_and_sector() {
        let h = header(VIRTIO_BLK_T_OUT, 0x0102_0304_0506_0708);
        assert_eq!(h.request_type, 1);
        assert_eq!(h.sector, 0x0102_0304_0506_0708);
    }

    #[test]
    fn reads_and_writes_map_sectors_onto_blocks() {
        let g = geometry();
        assert_eq!(
            command(&header(VIRTIO_BLK_T_IN, 16), lens(0, 8192), &g),
            Ok(Command::Io {
                io_type: IoType::Read,
                offset_blocks: 2,
                num_blocks: 2
            })
        );
        assert_eq!(
            command(&header(VIRTIO_BLK_T_OUT, 8 * 255), lens(4096, 0), &g),
            Ok(Command::Io {
                io_type: IoType::Write,
                offset_blocks: 255,
                num_blocks: 1
            })
        );
    }

    #[test]
    fn ranges_outside_the_device_or_not_whole_blocks_are_ioerr() {
        let g = geometry();
        let io = |t, sector, out, inn| command(&header(t, sector), lens(out, inn), &g);
        assert_eq!(io(VIRTIO_BLK_T_IN, 8 * 256, 0, 4096), Err(Status::IoErr));
        assert_eq!(io(VIRTIO_BLK_T_IN, 8 * 255, 0, 8192), Err(Status::IoErr));
        assert_eq!(
            io(VIRTIO_BLK_T_IN, 1, 0, 4096),
            Err(Status::IoErr),
            "unaligned sector"
        );
        assert_eq!(
            io(VIRTIO_BLK_T_OUT, 0, 512, 0),
            Err(Status::IoErr),
            "partial block"
        );
        assert_eq!(io(VIRTIO_BLK_T_IN, u64::MAX, 0, 4096), Err(Status::IoErr));
        assert_eq!(
            io(VIRTIO_BLK_T_IN, u64::MAX / 512, 0, 4096),
            Err(Status::IoErr)
        );
    }

    #[test]
    fn read_only_devices_refuse_every_change_and_hide_its_features() {
        let g = Geometry {
            read_only: true,
            ..geometry()
        };
        for t in [
            VIRTIO_BLK_T_OUT,
            VIRTIO_BLK_T_DISCARD,
            VIRTIO_BLK_T_WRITE_ZEROES,
        ] {
            assert_eq!(
                command(&header(t, 0), lens(4096, 0), &g),
                Err(Status::IoErr)
            );
        }
        let f = device_features(&g);
        assert_ne!(f & bit(VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(f & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
        assert!(matches!(
            command(&header(VIRTIO_BLK_T_IN, 0), lens(0, 4096), &g),
            Ok(Command::Io { .. })
        ));
    }

    #[test]
    fn features_follow_what_the_bdev_serves() {
        let g = geometry();
        let f = device_features(&g);
        for b in [
            VIRTIO_F_VERSION_1,
            VIRTIO_BLK_F_FLUSH,
            VIRTIO_BLK_F_DISCARD,
            VIRTIO_BLK_F_WRITE_ZEROES,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_MQ,
            VHOST_USER_F_PROTOCOL_FEATURES,
        ] {
            assert_ne!(f & bit(b), 0, "feature bit {b}");
        }
        let bare = Geometry {
            flush: false,
            discard: false,
            write_zeroes: false,
            ..g
        };
        let f = device_features(&bare);
        assert_eq!(f & (bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_DISCARD)), 0);
        assert_eq!(
            command(&header(VIRTIO_BLK_T_FLUSH, 0), lens(0, 0), &bare),
            Err(Status::Unsupp)
        );
        assert_eq!(
            command(&header(VIRTIO_BLK_T_DISCARD, 0), lens(16, 0), &bare),
            Err(Status::Unsupp)
        );
    }

    #[test]
    fn unknown_types_are_unsupp() {
        for t in [VIRTIO_BLK_T_SCSI_CMD, VIRTIO_BLK_T_SECURE_ERASE, 99] {
            assert_eq!(
                command(&header(t, 0), lens(0, 0), &geometry()),
                Err(Status::Unsupp)
            );
        }
    }

    fn segment(sector: u64, num_sectors: u32, flags: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&sector.to_le_bytes());
        b[8..12].copy_from_slice(&num_sectors.to_le_bytes());
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b
    }

    #[test]
    fn discard_and_write_zeroes_take_exactly_one_valid_segment() {
        let g = geometry();
        assert_eq!(
            range_command(IoType::Unmap, &segment(8, 16, 0), &g),
            Ok((1, 2))
        );
        assert_eq!(
            range_command(
                IoType::WriteZeroes,
                &segment(0, 8, WRITE_ZEROES_FLAG_UNMAP),
                &g
            ),
            Ok((0, 1))
        );
        assert_eq!(
            range_command(IoType::Unmap, &segment(8, 16, WRITE_ZEROES_FLAG_UNMAP), &g),
            Err(Status::Unsupp),
            "discard has no flags"
        );
        assert_eq!(
            range_command(IoType::WriteZeroes, &segment(0, 8, 2), &g),
            Err(Status::Unsupp)
        );
        let two = [segment(0, 8, 0), segment(8, 8, 0)].concat();
        assert_eq!(range_command(IoType::Unmap, &two, &g), Err(Status::IoErr));
        assert_eq!(
            range_command(IoType::Unmap, &[0; 8], &g),
            Err(Status::IoErr)
        );
        assert_eq!(
            range_command(IoType::Unmap, &segment(8 * 250, 8 * 7, 0), &g),
            Err(Status::IoErr),
            "past the end"
        );
        assert_eq!(
            range_command(IoType::Unmap, &segment(0, 0, 0), &g),
            Err(Status::IoErr)
        );
        assert_eq!(
            range_command(IoType::Unmap, &segment(4, 8, 0), &g),
            Err(Status::IoErr),
            "not whole blocks"
        );
    }

    #[test]
    fn config_space_has_capacity_block_size_queues_and_limits_at_virtio_offsets() {
        let g = geometry();
        let c = config_space(&g, 4);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 256 * 8);
        assert_eq!(u32::from_le_bytes(c[8..12].try_into().unwrap()), SIZE_MAX);
        assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), SEG_MAX);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 4096);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(c[40..44].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(c[44..48].try_into().unwrap()), 8);
        assert_eq!(c[56], 1);
        let tail = read_config(&g, 4, 56, 16);
        assert_eq!(tail.len(), 16);
        assert_eq!(tail[0], 1);
        assert!(tail[4..].iter().all(|&b| b == 0), "past the struct: zeroes");
    }

    #[test]
    fn device_id_is_the_name_cut_or_padded_to_20_bytes() {
        assert_eq!(&device_id("Quorum0")[..8], b"Quorum0\0");
        assert_eq!(
            &device_id("a-very-long-bdev-name-indeed"),
            b"a-very-long-bdev-nam"
        );
    }
}
