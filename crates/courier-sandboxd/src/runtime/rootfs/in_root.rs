//! Opening, creating and writing paths inside a sandbox's tree without leaving it.

use std::fs;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::err;
use crate::runtime::step::StepError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Nothing: a missing path is an error.
    No,
    /// Directories, for every missing component.
    Dir,
    /// Directories for the parents, an empty file for the last component.
    File,
}

/// Opens `path` (absolute, inside the sandbox) as an `O_PATH` descriptor, resolving every
/// component — symlinks included — inside `root` (`RESOLVE_IN_ROOT`): a symlink in the
/// tree can never lead outside it. Missing components are created per `create`, owned by
/// `owner` (host ids).
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    create: Create,
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd, StepError> {
    open_in_root_at_depth(root, path, create, owner, 0)
}

/// How many dangling symlinks [`open_in_root`] follows to create their targets.
const MAX_LINKS: usize = 40;

fn open_in_root_at_depth(
    root: BorrowedFd<'_>,
    path: &Path,
    create: Create,
    owner: Option<(u32, u32)>,
    depth: usize,
) -> Result<OwnedFd, StepError> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |p: &Path, dir: bool| {
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if dir {
            flags |= OFlags::DIRECTORY;
        }
        rustix::fs::openat2(root, p, flags, Mode::empty(), resolve)
    };
    let parts: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return open(Path::new("/"), true).map_err(|e| err("open /", e));
    }
    let mut at = PathBuf::from("/");
    for (i, name) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = at.join(name);
        match open(&next, false) {
            Ok(fd) => {
                at = next;
                if last {
                    return Ok(fd);
                }
                continue;
            }
            Err(rustix::io::Errno::NOENT) if create != Create::No => {}
            Err(e) => return Err(err(format!("open {} in the sandbox", next.display()), e)),
        }
        let parent = open(&at, true).map_err(|e| err(format!("open {}", at.display()), e))?;
        // A dangling symlink (e.g. a template's `/etc -> /somewhere/else`): create what it
        // points at, resolved inside the root like everything else.
        if let Ok(target) = rustix::fs::readlinkat(&parent, *name, Vec::new()) {
            if depth >= MAX_LINKS {
                return Err(StepError::refused(format!(
                    "{}: too many levels of symbolic links",
                    next.display()
                )));
            }
            let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
            let mut rest = if target.is_absolute() {
                target
            } else {
                at.join(target)
            };
            for part in &parts[i + 1..] {
                rest.push(part);
            }
            return open_in_root_at_depth(root, &rest, create, owner, depth + 1);
        }
        if last && create == Create::File {
            let file = rustix::fs::openat(
                &parent,
                *name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| err(format!("create {}", next.display()), e))?;
            if let Some((uid, gid)) = owner {
                chown_fd(file.as_fd(), uid, gid)?;
            }
        } else {
            match rustix::fs::mkdirat(&parent, *name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(err(format!("create {}", next.display()), e)),
            }
            if let Some((uid, gid)) = owner {
                let dir = rustix::fs::openat(
                    &parent,
                    *name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err(format!("open {}", next.display()), e))?;
                chown_fd(dir.as_fd(), uid, gid)?;
            }
        }
        at = next;
        if last {
            return open(&at, create == Create::Dir)
                .map_err(|e| err(format!("open {}", at.display()), e));
        }
    }
    unreachable!("the loop returns at the last component")
}

fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Result<(), StepError> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| err("chown", e))
}

/// Writes `content` to `path` inside `root` (resolved in root; an existing file, or a
/// symlink at that name, is replaced — never followed), owned by `owner`.
pub(crate) fn write_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    content: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<(), StepError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| StepError::refused(format!("{} has no file name", path.display())))?;
    let dir_path = open_in_root(root, parent, Create::Dir, owner)?;
    // An O_PATH descriptor cannot be written through; reopen the directory for *at calls.
    let dir = rustix::fs::openat(
        &dir_path,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("open {}", parent.display()), e))?;
    match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(err(format!("replace {}", path.display()), e)),
    }
    let file = rustix::fs::openat(
        &dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| err(format!("create {}", path.display()), e))?;
    if let Some((uid, gid)) = owner {
        chown_fd(file.as_fd(), uid, gid)?;
    }
    fs::File::from(file)
        .write_all(content)
        .map_err(|e| err(format!("write {}", path.display()), e))
}

/// A directory descriptor for reading (not `O_PATH`), opened without following a final
/// symlink.
pub(super) fn open_dir(path: &Path) -> Result<OwnedFd, StepError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("open {}", path.display()), e))
}
