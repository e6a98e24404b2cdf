//! Exports: how clients outside the process reach bdevs. NBD today; every export server runs
//! on the reactors, with non-blocking sockets polled through an epoll wake fd.

pub mod gate;
pub mod nbd;
