//! Best-effort removal of what is garbage, not state: leftovers of an interrupted write,
//! a half-made layer, a directory an older version left. The caller has nothing better to
//! do with a failure than go on, so a path already gone is fine and any other failure is
//! logged rather than returned.

use std::io::ErrorKind;
use std::path::Path;

/// Removes the directory tree `path`, if there is one; logs why it could not.
pub(crate) fn remove_dir(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path)
        && error.kind() != ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "removing a leftover directory failed");
    }
}

/// Removes the file `path`, if there is one; logs why it could not.
pub(crate) fn remove_file(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "removing a leftover file failed");
    }
}
