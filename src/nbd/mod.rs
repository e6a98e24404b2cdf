//! The NBD protocol (NetworkBlockDevice/nbd doc/proto.md) as both ends speak it: the wire
//! format (`proto`) and the non-blocking socket moves (`stream`) live here once, so the
//! export (`exports::nbd`, the server) and the NBD client bdev (`modules::nbd_client`) encode,
//! check and send the same bytes the same way.

pub mod proto;
pub mod stream;
