//! File system operations and `EntryInfo` as envd reports it (§7): `lstat`-based, mode =
//! permission bits, permissions in Go's `FileMode.String()` form, owner and group names,
//! symlinks reported with their resolved target's type, metadata from `user.e2b.*` xattrs.

pub mod meta_store;
pub(crate) mod service;
pub(crate) mod watch;

use std::{
    collections::HashMap,
    fs::{self, Metadata},
    io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use courier_e2b::proto::filesystem::{EntryInfo, FileType};

use crate::users::UserDb;

/// xattr prefix holding upload metadata (`X-Metadata-<key>` headers).
pub(crate) const METADATA_XATTR_PREFIX: &str = "user.e2b.";

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFREG: u32 = 0o100_000;

/// Go's `os.FileMode.String()` for a Unix `st_mode`, e.g. `-rw-r--r--`, `drwxr-xr-x`,
/// `Lrwxrwxrwx`, `dtrwxrwxrwx` (sticky /tmp).
///
/// ```
/// use courier_envd::filesystem::go_mode_string;
/// assert_eq!(go_mode_string(0o100644), "-rw-r--r--");
/// assert_eq!(go_mode_string(0o040755), "drwxr-xr-x");
/// assert_eq!(go_mode_string(0o120777), "Lrwxrwxrwx");
/// assert_eq!(go_mode_string(0o041777), "dtrwxrwxrwx");
/// assert_eq!(go_mode_string(0o020620), "Dcrw--w----");
/// ```
pub fn go_mode_string(mode: u32) -> String {
    let kind = mode & S_IFMT;
    let mut out = String::with_capacity(12);
    // Go's letter order is "dalTLDpSugct?".
    if kind == S_IFDIR {
        out.push('d');
    }
    if kind == S_IFLNK {
        out.push('L');
    }
    if kind == S_IFBLK || kind == S_IFCHR {
        out.push('D');
    }
    if kind == S_IFIFO {
        out.push('p');
    }
    if kind == S_IFSOCK {
        out.push('S');
    }
    if mode & 0o4000 != 0 {
        out.push('u');
    }
    if mode & 0o2000 != 0 {
        out.push('g');
    }
    if kind == S_IFCHR {
        out.push('c');
    }
    if mode & 0o1000 != 0 {
        out.push('t');
    }
    if out.is_empty() {
        out.push('-');
    }
    for (i, letter) in "rwxrwxrwx".chars().enumerate() {
        out.push(if mode & (1 << (8 - i)) != 0 {
            letter
        } else {
            '-'
        });
    }
    out
}

fn file_type(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        S_IFREG => FileType::File,
        // Devices, pipes and sockets: envd reports them as files.
        _ => FileType::File,
    }
}

/// The `user.e2b.*` extended attributes of a path, keys without the prefix.
pub(crate) fn read_metadata(path: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut names = vec![0u8; 4096];
    // gVisor's gofer (directfs) answers an empty list rather than EOPNOTSUPP: with the
    // store on, an empty answer also consults it.
    let len = match rustix::fs::listxattr(path, &mut names) {
        Ok(0) | Err(rustix::io::Errno::OPNOTSUPP) if meta_store::enabled() => {
            return meta_store::get(path);
        }
        Ok(len) => len,
        Err(_) => return out,
    };
    for name in names[..len.min(names.len())].split(|b| *b == 0) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let Some(key) = name.strip_prefix(METADATA_XATTR_PREFIX) else {
            continue;
        };
        let mut value = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::getxattr(path, name, &mut value) {
            out.insert(
                key.to_owned(),
                String::from_utf8_lossy(&value[..n.min(value.len())]).into_owned(),
            );
        }
    }
    out
}

/// Replaces the `user.e2b.*` attributes of `path` with `metadata`.
/// Falls back to the store (when on) where the file system refuses xattrs.
pub(crate) fn write_metadata(path: &Path, metadata: &[(String, String)]) -> io::Result<()> {
    match write_xattrs(path, metadata) {
        Err(e)
            if meta_store::enabled()
                && e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) =>
        {
            meta_store::set(path, metadata)
        }
        // Clearing writes no xattr, so it cannot tell: clear the store's entry too.
        Ok(()) if metadata.is_empty() && meta_store::enabled() => meta_store::set(path, &[]),
        other => other,
    }
}

fn write_xattrs(path: &Path, metadata: &[(String, String)]) -> io::Result<()> {
    for key in read_metadata(path).keys() {
        // A key that went away meanwhile is as good as removed.
        if let Err(e) =
            rustix::fs::removexattr(path, format!("{METADATA_XATTR_PREFIX}{key}").as_str())
        {
            tracing::debug!(path = %path.display(), key, error = %e, "removing a metadata attribute");
        }
    }
    for (key, value) in metadata {
        rustix::fs::setxattr(
            path,
            format!("{METADATA_XATTR_PREFIX}{key}").as_str(),
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

/// Builds the `EntryInfo` of `path` (not following a final symlink, but reporting its
/// target's type and mode).
pub(crate) fn entry_info(path: &Path, db: &UserDb) -> io::Result<EntryInfo> {
    let lstat = fs::symlink_metadata(path)?;
    Ok(entry_from_metadata(path, &lstat, db))
}

pub(crate) fn entry_from_metadata(path: &Path, lstat: &Metadata, db: &UserDb) -> EntryInfo {
    let mode = lstat.mode();
    let is_symlink = lstat.file_type().is_symlink();
    let (kind, perm, symlink_target) = if is_symlink {
        let target = fs::canonicalize(path).ok();
        match target.as_ref().and_then(|t| fs::metadata(t).ok()) {
            Some(target_meta) => (
                file_type(target_meta.mode()),
                target_meta.permissions().mode() & 0o777,
                target.map(|t| crate::paths::display(&t)),
            ),
            // A broken link: the SDK drops UNSPECIFIED entries from listings.
            None => (
                FileType::Unspecified,
                mode & 0o777,
                fs::read_link(path).ok().map(|t| {
                    crate::paths::display(&path.parent().unwrap_or(Path::new("/")).join(t))
                }),
            ),
        }
    } else {
        (file_type(mode), mode & 0o777, None)
    };
    EntryInfo {
        name: path
            .file_name()
            .map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned()),
        r#type: kind as i32,
        path: crate::paths::display(path),
        size: i64::try_from(lstat.size()).unwrap_or(i64::MAX),
        mode: perm,
        permissions: go_mode_string(mode),
        owner: db.user_name(lstat.uid()),
        group: db.group_name(lstat.gid()),
        modified_time: Some(pbjson_types::Timestamp {
            seconds: lstat.mtime(),
            nanos: i32::try_from(lstat.mtime_nsec()).unwrap_or(0),
        }),
        symlink_target,
        metadata: if is_symlink {
            HashMap::new()
        } else {
            read_metadata(path)
        },
        is_symlink,
    }
}

/// Creates `dir` and its missing parents (mode 0755 with the default umask). Returns
/// whether `dir` itself was created.
///
/// Run as the requesting user ([`crate::identity`]): the kernel then checks that the user
/// may create each one, and each one belongs to that user without a chown.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<bool> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => break,
            // A symlink to a directory is fine as a parent.
            Ok(meta)
                if meta.file_type().is_symlink()
                    && fs::metadata(path).is_ok_and(|m| m.is_dir()) =>
            {
                break;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("'{}' exists and is not a directory", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(path.to_path_buf()),
            Err(e) => return Err(e),
        }
        cursor = path.parent();
    }
    let created = !missing.is_empty();
    for path in missing.into_iter().rev() {
        match fs::create_dir(&path) {
            Ok(()) => announce_owner(&path)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Re-asserts the owner of an entry this thread just created, changing nothing.
///
/// Why: envd chowns every entry it creates, and inotify reports that as CHMOD; clients
/// count those events (writing a new file through `POST /files` is CREATE, CHMOD, WRITE).
/// Entries are now created as their owner, so the chown is a no-op kept for its event.
/// Only done for entries the current credentials own (anything else would be refused).
pub(crate) fn announce_owner(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
}

/// [`announce_owner`] for an open file.
pub(crate) fn announce_file_owner(file: &fs::File) -> io::Result<()> {
    let meta = file.metadata()?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()))
}
