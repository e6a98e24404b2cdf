//! The kinds of I/O a bdev serves (SPDK's `spdk_bdev_io_type` subset): the one vocabulary
//! every file of the bdev layer, every module and the statistics share.

/// The kinds of I/O a bdev may support (SPDK's `spdk_bdev_io_type` subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    /// Read blocks into the buffer.
    Read,
    /// Write the buffer to blocks.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Discard blocks.
    Unmap,
    /// Write zeroes without a data buffer.
    WriteZeroes,
    /// Abort everything in flight on the device.
    Reset,
    /// Read without a copy (SPDK's zcopy with populate): the module points the I/O's buffer
    /// at its own memory holding the blocks, so a submitter that only looks at the data (a
    /// quorum comparing a child's copy) saves a copy per block. The memory is the device's
    /// live contents: valid while the submitter holds its channel, changed by later writes.
    Zcopy,
}

impl IoType {
    /// Every type, in SPDK's `supported_io_types` order.
    pub const ALL: [IoType; 7] = [
        IoType::Read,
        IoType::Write,
        IoType::Unmap,
        IoType::WriteZeroes,
        IoType::Flush,
        IoType::Reset,
        IoType::Zcopy,
    ];

    /// Position in [`IoType::ALL`].
    pub fn index(self) -> usize {
        match self {
            IoType::Read => 0,
            IoType::Write => 1,
            IoType::Unmap => 2,
            IoType::WriteZeroes => 3,
            IoType::Flush => 4,
            IoType::Reset => 5,
            IoType::Zcopy => 6,
        }
    }

    /// SPDK's key in `supported_io_types`.
    pub fn spdk_name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Reset => "reset",
            IoType::Zcopy => "zcopy",
        }
    }

    /// Whether the I/O carries a data buffer.
    pub fn has_data(self) -> bool {
        matches!(self, IoType::Read | IoType::Write)
    }
}
