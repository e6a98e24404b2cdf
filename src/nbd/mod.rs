//! The NBD protocol (NetworkBlockDevice/nbd doc/proto.md) as both ends speak it: the wire
//! format lives here once, so the export (`exports::nbd`, the server) and the NBD client bdev
//! (`modules::nbd_client`) encode and check the same bytes the same way.

pub mod proto;
