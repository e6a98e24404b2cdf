//! Unix sockets the exports listen on (NBD's, each vhost controller's): what both do before
//! binding a path.

use std::path::Path;

/// Clears the way for binding `path`: a socket nobody answers on (left by a killed target)
/// is removed; a live socket or any other file is left alone and refused.
pub(crate) fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() || std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::from_raw_os_error(libc::EADDRINUSE));
    }
    tracing::info!(path = %path.display(), "removed stale socket");
    std::fs::remove_file(path)
}
