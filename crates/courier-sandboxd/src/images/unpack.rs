//! Applying image layers (tar, gzipped or not) to one root file system on the host,
//! as host root, without trusting a byte of them.
//!
//! An image is someone else's content: a layer may hold `../` or absolute names, a
//! symlink pointing out of the root followed by a file written "through" it, hard links
//! to host files, device nodes, setuid binaries, or a few MB that decompress to
//! terabytes. So:
//!
//! - every name is checked: `..` components are refused (the layer is rejected), a
//!   leading `/` is dropped (Docker's reading of such names);
//! - every parent directory is opened with `openat2(RESOLVE_IN_ROOT)` beneath the root
//!   being built, so a symlink an earlier entry made resolves *inside* that root (as it
//!   will in the sandbox), never on the host; the entry itself is created relative to
//!   that descriptor without following a symlink at its name (`O_NOFOLLOW`, `O_EXCL`,
//!   `*at` calls); hard link targets are resolved the same way;
//! - device nodes and FIFOs are not created (counted and logged); PAX/GNU extended
//!   attributes (file capabilities included) are not applied;
//! - set-id bits are kept, as Docker keeps them (images' `su`, `passwd` need them): the
//!   files live under the server's 0700 data dir, where no host user can reach them,
//!   and inside a sandbox they raise privileges only within its user namespace;
//! - the bytes written (file sizes plus a block per entry) are counted against a cap
//!   across all the layers of the image: past it the unpack stops with an error naming
//!   the cap.
//!
//! Whiteouts (`.wh.<name>`, `.wh..wh..opq`) are applied as the layers are flattened
//! into the one root: the named file, or the directory's earlier content, is removed.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// Bytes an entry counts against the cap besides its content (its header's block).
const ENTRY_OVERHEAD: u64 = 512;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer names a path outside the root.
    #[error("layer entry {0:?} leaves the root (a `..` component); the image is refused")]
    Escapes(String),
    /// Past the cap.
    #[error(
        "the image unpacks to more than {cap} bytes (the server's image size cap, \
         --image-max-bytes); refused"
    )]
    TooBig {
        /// The cap.
        cap: u64,
    },
    /// The archive is malformed.
    #[error("layer is not a valid tar archive: {0}")]
    Tar(std::io::Error),
    /// A file system call failed.
    #[error("{what} {path:?}: {source}")]
    Fs {
        /// The call.
        what: &'static str,
        /// The entry's path in the image.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// What applying layers did, for the build log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries created (files, directories, links).
    pub entries: u64,
    /// Bytes counted against the cap.
    pub bytes: u64,
    /// Device nodes and FIFOs left out.
    pub skipped_devices: u64,
    /// Whiteouts applied.
    pub whiteouts: u64,
}

/// Flattens layers into `root` (an existing empty directory), bottom first.
pub struct Unpacker {
    root: OwnedFd,
    cap: u64,
    /// What has been applied so far.
    pub stats: UnpackStats,
}

fn fs_err<'a>(
    what: &'static str,
    path: &'a str,
) -> impl FnOnce(rustix::io::Errno) -> UnpackError + 'a {
    move |e| UnpackError::Fs {
        what,
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The normal components of an entry's name: `..` refuses it, `/` and `.` are dropped.
fn clean(name: &Path) -> Result<Vec<&OsStr>, UnpackError> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::Escapes(name.display().to_string()));
            }
        }
    }
    Ok(parts)
}

impl Unpacker {
    /// An unpacker into `root` with `cap` bytes in all.
    pub fn new(root: &Path, cap: u64) -> Result<Self, UnpackError> {
        let shown = root.display().to_string();
        let fd = rustix::fs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(fs_err("open", &shown))?;
        Ok(Self {
            root: fd,
            cap,
            stats: UnpackStats::default(),
        })
    }

    /// Applies one layer read from `reader` (a plain tar; decompress first).
    pub fn apply(&mut self, reader: impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(UnpackError::Tar)?;
        for entry in entries {
            let mut entry = entry.map_err(UnpackError::Tar)?;
            let path = entry.path().map_err(UnpackError::Tar)?.into_owned();
            let shown = path.display().to_string();
            let parts = clean(&path)?;
            let size = entry.header().size().map_err(UnpackError::Tar)?;
            self.count(size.saturating_add(ENTRY_OVERHEAD))?;
            let Some((name, dirs)) = parts.split_last() else {
                // The root itself (`./`): its mode and owner are the runtime's business.
                continue;
            };
            let name = *name;
            let parent = self.open_dir(dirs, true, &shown)?;
            let name_bytes = name.as_bytes();
            if name_bytes == b".wh..wh..opq" {
                self.clear_dir(&parent, &shown)?;
                self.stats.whiteouts += 1;
                continue;
            }
            if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
                remove_at(&parent, OsStr::from_bytes(hidden), &shown)?;
                self.stats.whiteouts += 1;
                continue;
            }
            let header = entry.header();
            let mode = header.mode().map_err(UnpackError::Tar)? & 0o7777;
            let uid = header.uid().map_err(UnpackError::Tar)?;
            let gid = header.gid().map_err(UnpackError::Tar)?;
            let (uid, gid) = (
                u32::try_from(uid).unwrap_or(u32::MAX - 1),
                u32::try_from(gid).unwrap_or(u32::MAX - 1),
            );
            let owner = (
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
            match header.entry_type() {
                tar::EntryType::Directory => {
                    let existing = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW);
                    match existing {
                        Ok(st) if (st.st_mode & libc_s_ifmt()) == libc_s_ifdir() => {}
                        Ok(_) => {
                            remove_at(&parent, name, &shown)?;
                            rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                                .map_err(fs_err("mkdir", &shown))?;
                        }
                        Err(_) => {
                            rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                                .map_err(fs_err("mkdir", &shown))?;
                        }
                    }
                    let dir = rustix::fs::openat(
                        &parent,
                        name,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(fs_err("open", &shown))?;
                    rustix::fs::fchown(&dir, owner.0, owner.1).map_err(fs_err("chown", &shown))?;
                    rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
                        .map_err(fs_err("chmod", &shown))?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    remove_at(&parent, name, &shown)?;
                    let file = rustix::fs::openat(
                        &parent,
                        name,
                        OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::WRONLY
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(fs_err("create", &shown))?;
                    let mut file = std::fs::File::from(file);
                    // `take`: the header's size bounds what is written whatever the
                    // stream holds.
                    std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(|e| {
                        UnpackError::Fs {
                            what: "write",
                            path: shown.clone(),
                            source: e,
                        }
                    })?;
                    // Owner first: chown clears set-id bits, chmod sets them again.
                    rustix::fs::fchown(&file, owner.0, owner.1).map_err(fs_err("chown", &shown))?;
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                        .map_err(fs_err("chmod", &shown))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(UnpackError::Tar)?
                        .ok_or_else(|| {
                            UnpackError::Tar(std::io::Error::other(format!(
                                "symlink {shown:?} has no target"
                            )))
                        })?
                        .into_owned();
                    remove_at(&parent, name, &shown)?;
                    // The target is stored as written: it is only ever resolved inside
                    // the sandbox (or beneath this root, by the calls above).
                    rustix::fs::symlinkat(target.as_os_str(), &parent, name)
                        .map_err(fs_err("symlink", &shown))?;
                    rustix::fs::chownat(&parent, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(fs_err("chown", &shown))?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(UnpackError::Tar)?
                        .ok_or_else(|| {
                            UnpackError::Tar(std::io::Error::other(format!(
                                "hard link {shown:?} has no target"
                            )))
                        })?
                        .into_owned();
                    let target_parts = clean(&target)?;
                    let Some((target_name, target_dirs)) = target_parts.split_last() else {
                        return Err(UnpackError::Escapes(shown));
                    };
                    // The target must be in the image already (nothing is created for it).
                    let target_parent = self.open_dir(target_dirs, false, &shown)?;
                    remove_at(&parent, name, &shown)?;
                    // No AT_SYMLINK_FOLLOW: a symlink at the target is linked itself,
                    // never what it points at.
                    rustix::fs::linkat(
                        &target_parent,
                        *target_name,
                        &parent,
                        name,
                        AtFlags::empty(),
                    )
                    .map_err(fs_err("link", &shown))?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    self.stats.skipped_devices += 1;
                    continue;
                }
                // PAX and GNU long-name records are read by the tar crate itself;
                // anything else (sparse files, volume labels) has no place in an image.
                other => {
                    return Err(UnpackError::Tar(std::io::Error::other(format!(
                        "entry {shown:?} has unsupported type {other:?}"
                    ))));
                }
            }
            self.stats.entries += 1;
        }
        Ok(())
    }

    fn count(&mut self, bytes: u64) -> Result<(), UnpackError> {
        self.stats.bytes = self.stats.bytes.saturating_add(bytes);
        if self.stats.bytes > self.cap {
            return Err(UnpackError::TooBig { cap: self.cap });
        }
        Ok(())
    }

    /// Opens the directory `dirs` beneath the root, resolving every symlink inside the
    /// root; with `create`, what is missing is made (mode 0755, root's, like Docker). A
    /// component that is a dangling symlink is not followed to create its target: the
    /// entry is refused (`mkdir` fails on the existing link).
    fn open_dir(&self, dirs: &[&OsStr], create: bool, shown: &str) -> Result<OwnedFd, UnpackError> {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut at = PathBuf::from("/");
        let mut fd = rustix::fs::openat2(&self.root, &at, flags, Mode::empty(), resolve)
            .map_err(fs_err("open", shown))?;
        for dir in dirs {
            at.push(dir);
            match rustix::fs::openat2(&self.root, &at, flags, Mode::empty(), resolve) {
                Ok(next) => fd = next,
                Err(rustix::io::Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&fd, *dir, Mode::from_raw_mode(0o755))
                        .map_err(fs_err("mkdir", shown))?;
                    fd = rustix::fs::openat(&fd, *dir, flags | OFlags::NOFOLLOW, Mode::empty())
                        .map_err(fs_err("open", shown))?;
                }
                Err(e) => return Err(fs_err("open", shown)(e)),
            }
        }
        Ok(fd)
    }

    /// Removes everything in the directory `dir` (an opaque whiteout).
    fn clear_dir(&self, dir: &OwnedFd, shown: &str) -> Result<(), UnpackError> {
        clear(dir.as_fd(), shown)
    }
}

fn libc_s_ifmt() -> u32 {
    0o170000
}

fn libc_s_ifdir() -> u32 {
    0o040000
}

/// Removes `name` in `dir` (a whole tree for a directory) without following symlinks;
/// absent is fine.
fn remove_at(dir: &impl AsFd, name: &OsStr, shown: &str) -> Result<(), UnpackError> {
    let dir = dir.as_fd();
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(fs_err("stat", shown)(e)),
    };
    if (st.st_mode & libc_s_ifmt()) == libc_s_ifdir() {
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fs_err("open", shown))?;
        clear(sub.as_fd(), shown)?;
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(fs_err("remove", shown))
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(fs_err("remove", shown))
    }
}

fn clear(dir: BorrowedFd<'_>, shown: &str) -> Result<(), UnpackError> {
    let listing = rustix::fs::openat(
        dir,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fs_err("open", shown))?;
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::new(listing).map_err(fs_err("list", shown))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(fs_err("list", shown))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    for name in names {
        remove_at(&dir, &name, shown)?;
    }
    Ok(())
}
