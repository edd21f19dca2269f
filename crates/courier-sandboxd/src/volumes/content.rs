//! The volume content API's file operations (E2B's `openapi-volumecontent.yml`), on a
//! volume's root directory descriptor.
//!
//! A volume is written by hostile sandboxes: any name in it may be a symlink to a host
//! path, a FIFO, or a directory swapped for a symlink between two calls. So nothing here
//! takes a host path: every path is resolved from the volume's root descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)` (no `..` above the root, no symlink followed anywhere, no other
//! mount entered), the last component is handled with `*at` calls that do not follow it
//! (`AT_SYMLINK_NOFOLLOW`, `unlinkat`), and what is read must be a regular file (opened
//! `O_NONBLOCK`, so a FIFO planted under a file's name cannot hang the server).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Serialize;

/// E2B's default owner of what the content API creates is its sandbox user; Courier's
/// sandbox `user` is uid/gid 1000, which a volume mount presents as that user (see
/// `BindMount::map_user`).
pub const DEFAULT_OWNER: u32 = crate::base_layer::USER_ID;
/// Default mode of a created directory (E2B's).
pub const DEFAULT_DIR_MODE: u32 = 0o777;
/// Default mode of a created file (E2B's).
pub const DEFAULT_FILE_MODE: u32 = 0o666;
/// Deepest listing (`depth`), as E2B's.
pub const MAX_LIST_DEPTH: u32 = 10;
/// Deepest tree [`remove`] walks: a sandbox could nest directories without end, and each
/// level holds a descriptor.
const MAX_REMOVE_DEPTH: usize = 512;
/// Most entries one listing returns (bounded answer size).
const MAX_LIST_ENTRIES: usize = 100_000;

/// What a content operation can fail with; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A malformed path or parameter (400).
    #[error("{0}")]
    Invalid(String),
    /// Nothing at the path (404).
    #[error("path {0} not found")]
    NotFound(String),
    /// The path exists and the operation needs it not to, or is of the wrong type (409).
    #[error("{0}")]
    Conflict(String),
    /// The volume is full (its quota).
    #[error("volume is full: its quota is {quota_mb} MiB")]
    Full {
        /// The volume's size.
        quota_mb: u64,
    },
    /// Anything else (500).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The volume path.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ContentError>;

/// A path inside a volume, checked: `/`-separated, relative to the volume root, no `..`,
/// no NUL. `""` is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    parts: Vec<String>,
}

impl VolumePath {
    /// Parses the `path` parameter: a leading `/` means the volume root (as E2B's), empty
    /// and `.` components are dropped, `..` is refused (never resolved against a parent).
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.contains('\0') {
            return Err(ContentError::Invalid(
                "path must not contain NUL".to_owned(),
            ));
        }
        let mut parts = Vec::new();
        for part in raw.trim().split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(ContentError::Invalid(format!(
                        "path {raw:?}: `..` is not allowed in volume paths"
                    )));
                }
                name if name.len() > 255 => {
                    return Err(ContentError::Invalid(format!(
                        "path {raw:?}: a component is longer than 255 bytes"
                    )));
                }
                name => parts.push(name.to_owned()),
            }
        }
        if parts.len() > 256 {
            return Err(ContentError::Invalid(format!(
                "path {raw:?}: more than 256 components"
            )));
        }
        Ok(Self { parts })
    }

    /// Whether this is the volume root.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The absolute form shown to clients (`/a/b`).
    pub fn display(&self) -> String {
        format!("/{}", self.parts.join("/"))
    }

    fn parent(&self) -> Self {
        Self {
            parts: self.parts[..self.parts.len().saturating_sub(1)].to_vec(),
        }
    }

    fn name(&self) -> &str {
        self.parts.last().map_or(".", String::as_str)
    }

    fn child(&self, name: &str) -> Self {
        let mut parts = self.parts.clone();
        parts.push(name.to_owned());
        Self { parts }
    }

    fn relative(&self) -> String {
        if self.parts.is_empty() {
            ".".to_owned()
        } else {
            self.parts.join("/")
        }
    }
}

/// `VolumeEntryStat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryStat {
    /// Base name (`/` for the root).
    pub name: String,
    /// `file`, `directory`, `symlink` or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Absolute volume path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner uid, as stored on the volume.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Access time.
    pub atime: DateTime<Utc>,
    /// Modification time.
    pub mtime: DateTime<Utc>,
    /// Status change time.
    pub ctime: DateTime<Utc>,
    /// A symlink's target (never followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Ownership and mode a create or update sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// Mode (permission bits, `0o7777` at most).
    pub mode: Option<u32>,
}

impl Attrs {
    fn check(&self) -> Result<()> {
        if let Some(mode) = self.mode
            && mode > 0o7777
        {
            return Err(ContentError::Invalid(format!(
                "mode {mode:#o} is out of range (0..=0o7777)"
            )));
        }
        Ok(())
    }
}

fn io_err<'a>(op: &'static str, path: &'a VolumePath) -> impl FnOnce(Errno) -> ContentError + 'a {
    move |e| match e {
        Errno::NOENT => ContentError::NotFound(path.display()),
        Errno::LOOP => ContentError::Invalid(format!(
            "path {} goes through a symbolic link: the volume content API does not follow \
             links",
            path.display()
        )),
        Errno::XDEV => ContentError::Invalid(format!("path {} leaves the volume", path.display())),
        Errno::NOTDIR => ContentError::Conflict(format!(
            "path {}: a component of the path is not a directory",
            path.display()
        )),
        Errno::EXIST => ContentError::Conflict(format!("path {} already exists", path.display())),
        Errno::ISDIR => ContentError::Conflict(format!("path {} is a directory", path.display())),
        Errno::NOTEMPTY => {
            ContentError::Conflict(format!("directory {} is not empty", path.display()))
        }
        other => ContentError::Io {
            op,
            path: path.display(),
            source: other.into(),
        },
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Opens `path` beneath `root`, following no symlink on the way (see the module docs).
fn open_beneath(
    root: BorrowedFd<'_>,
    path: &VolumePath,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        path.relative(),
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        RESOLVE,
    )
    .map_err(io_err("open", path))
}

fn open_dir(root: BorrowedFd<'_>, path: &VolumePath) -> Result<OwnedFd> {
    open_beneath(
        root,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
}

fn time(secs: i64, nsecs: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nsecs.min(999_999_999) as u32).unwrap_or_default()
}

/// The stat of `name` in `dir` (not following it), as an entry at `path`.
fn stat_at(dir: BorrowedFd<'_>, name: &str, path: &VolumePath) -> Result<EntryStat> {
    let st =
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("stat", path))?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "unknown",
    };
    let target = if kind == "symlink" {
        rustix::fs::readlinkat(dir, name, Vec::new())
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(EntryStat {
        name: if path.is_root() {
            "/".to_owned()
        } else {
            path.name().to_owned()
        },
        kind,
        path: path.display(),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        atime: time(st.st_atime, st.st_atime_nsec as u64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as u64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as u64),
        target,
    })
}

/// `GET /volumecontent/{id}/path`: the entry at `path` (a symlink is reported as one,
/// with its target, never followed).
pub fn stat(root: BorrowedFd<'_>, path: &VolumePath) -> Result<EntryStat> {
    if path.is_root() {
        return stat_at(root, ".", path);
    }
    let parent = open_dir(root, &path.parent())?;
    stat_at(parent.as_fd(), path.name(), path)
}

/// Makes the directories of `path` that are missing (owned per `attrs`, E2B's default
/// directory mode); an existing non-directory component is a conflict.
fn ensure_dirs(root: BorrowedFd<'_>, path: &VolumePath, attrs: Attrs) -> Result<OwnedFd> {
    let mut current = open_dir(root, &VolumePath { parts: Vec::new() })?;
    let mut at = VolumePath { parts: Vec::new() };
    for part in &path.parts {
        at = at.child(part);
        let one = VolumePath {
            parts: vec![part.clone()],
        };
        match rustix::fs::mkdirat(
            &current,
            part.as_str(),
            Mode::from_raw_mode(DEFAULT_DIR_MODE),
        ) {
            Ok(()) => {
                let dir = open_dir(current.as_fd(), &one).map_err(|e| relabel(e, &at))?;
                set_attrs(
                    dir.as_fd(),
                    Attrs {
                        mode: Some(DEFAULT_DIR_MODE),
                        ..attrs
                    },
                    &at,
                )?;
                current = dir;
            }
            Err(Errno::EXIST) => {
                current = open_dir(current.as_fd(), &one).map_err(|e| relabel(e, &at))?;
            }
            Err(e) => return Err(io_err("mkdir", &at)(e)),
        }
    }
    Ok(current)
}

/// An error about a one-component path, told with the whole path.
fn relabel(e: ContentError, path: &VolumePath) -> ContentError {
    match e {
        ContentError::NotFound(_) => ContentError::NotFound(path.display()),
        ContentError::Io { op, source, .. } => ContentError::Io {
            op,
            path: path.display(),
            source,
        },
        other => other,
    }
}

fn set_attrs(fd: BorrowedFd<'_>, attrs: Attrs, path: &VolumePath) -> Result<()> {
    if attrs.uid.is_some() || attrs.gid.is_some() {
        rustix::fs::fchown(
            fd,
            attrs.uid.map(rustix::fs::Uid::from_raw),
            attrs.gid.map(rustix::fs::Gid::from_raw),
        )
        .map_err(io_err("chown", path))?;
    }
    if let Some(mode) = attrs.mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io_err("chmod", path))?;
    }
    Ok(())
}

/// `POST /volumecontent/{id}/dir`: makes directory `path`; with `force` its parents too,
/// and an existing directory is not an error.
pub fn make_dir(
    root: BorrowedFd<'_>,
    path: &VolumePath,
    attrs: Attrs,
    force: bool,
) -> Result<EntryStat> {
    attrs.check()?;
    if path.is_root() {
        return if force {
            stat(root, path)
        } else {
            Err(ContentError::Conflict("path / already exists".to_owned()))
        };
    }
    let owner = Attrs {
        uid: Some(attrs.uid.unwrap_or(DEFAULT_OWNER)),
        gid: Some(attrs.gid.unwrap_or(DEFAULT_OWNER)),
        mode: None,
    };
    let parent = if force {
        ensure_dirs(root, &path.parent(), owner)?
    } else {
        open_dir(root, &path.parent())?
    };
    let one = VolumePath {
        parts: vec![path.name().to_owned()],
    };
    let mode = attrs.mode.unwrap_or(DEFAULT_DIR_MODE);
    match rustix::fs::mkdirat(&parent, path.name(), Mode::from_raw_mode(mode)) {
        Ok(()) => {
            let dir = open_dir(parent.as_fd(), &one).map_err(|e| relabel(e, path))?;
            set_attrs(
                dir.as_fd(),
                Attrs {
                    mode: Some(mode),
                    ..owner
                },
                path,
            )?;
        }
        Err(Errno::EXIST) if force => {
            let existing = stat_at(parent.as_fd(), path.name(), path)?;
            if existing.kind != "directory" {
                return Err(ContentError::Conflict(format!(
                    "path {} already exists and is not a directory",
                    path.display()
                )));
            }
        }
        Err(e) => return Err(io_err("mkdir", path)(e)),
    }
    stat_at(parent.as_fd(), path.name(), path)
}

/// Opens the file `path` for [`write_file`]: with `force` its parents are made and an
/// existing file is replaced, else the file must not exist (E2B's semantics). Returns the
/// file and the directory holding it.
pub fn create_file(
    root: BorrowedFd<'_>,
    path: &VolumePath,
    attrs: Attrs,
    force: bool,
) -> Result<(File, OwnedFd)> {
    attrs.check()?;
    if path.is_root() {
        return Err(ContentError::Conflict("path / is a directory".to_owned()));
    }
    let owner = Attrs {
        uid: Some(attrs.uid.unwrap_or(DEFAULT_OWNER)),
        gid: Some(attrs.gid.unwrap_or(DEFAULT_OWNER)),
        mode: Some(attrs.mode.unwrap_or(DEFAULT_FILE_MODE)),
    };
    let parent = if force {
        ensure_dirs(
            root,
            &path.parent(),
            Attrs {
                mode: None,
                ..owner
            },
        )?
    } else {
        open_dir(root, &path.parent())?
    };
    let one = VolumePath {
        parts: vec![path.name().to_owned()],
    };
    let exclusive = if force { OFlags::TRUNC } else { OFlags::EXCL };
    let fd = open_beneath(
        parent.as_fd(),
        &one,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK | exclusive,
        Mode::from_raw_mode(owner.mode.unwrap_or(DEFAULT_FILE_MODE)),
    )
    .map_err(|e| relabel(e, path))?;
    // A FIFO or device planted under the name was opened without blocking: refuse it.
    let st = rustix::fs::fstat(&fd).map_err(io_err("stat", path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(ContentError::Conflict(format!(
            "path {} exists and is not a regular file",
            path.display()
        )));
    }
    set_attrs(fd.as_fd(), owner, path)?;
    Ok((File::from(fd), parent))
}

/// The stat of a file [`create_file`] opened, once written.
pub fn stat_created(parent: BorrowedFd<'_>, path: &VolumePath) -> Result<EntryStat> {
    stat_at(parent, path.name(), path)
}

/// Opens the regular file `path` for reading (`GET /volumecontent/{id}/file`).
pub fn open_file(root: BorrowedFd<'_>, path: &VolumePath) -> Result<File> {
    let fd = open_beneath(root, path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
    let st = rustix::fs::fstat(&fd).map_err(io_err("stat", path))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(File::from(fd)),
        FileType::Directory => Err(ContentError::Conflict(format!(
            "path {} is a directory",
            path.display()
        ))),
        _ => Err(ContentError::Conflict(format!(
            "path {} is not a regular file",
            path.display()
        ))),
    }
}

/// `GET /volumecontent/{id}/dir`: the entries of directory `path`, `depth` levels deep
/// (1..=10; subdirectories are entered, symlinks are not).
pub fn list(root: BorrowedFd<'_>, path: &VolumePath, depth: u32) -> Result<Vec<EntryStat>> {
    if !(1..=MAX_LIST_DEPTH).contains(&depth) {
        return Err(ContentError::Invalid(format!(
            "depth must be between 1 and {MAX_LIST_DEPTH}"
        )));
    }
    let dir = open_dir(root, path)?;
    let mut out = Vec::new();
    list_into(dir, path, depth, &mut out)?;
    Ok(out)
}

fn list_into(dir: OwnedFd, path: &VolumePath, depth: u32, out: &mut Vec<EntryStat>) -> Result<()> {
    let mut names = Vec::new();
    let entries = rustix::fs::Dir::read_from(&dir).map_err(io_err("read dir", path))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read dir", path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        if out.len() >= MAX_LIST_ENTRIES {
            return Err(ContentError::Invalid(format!(
                "listing {} has more than {MAX_LIST_ENTRIES} entries; list a smaller depth",
                path.display()
            )));
        }
        let child = path.child(&name);
        let stat = match stat_at(dir.as_fd(), &name, &child) {
            Ok(stat) => stat,
            // Removed meanwhile (a sandbox writing the volume).
            Err(ContentError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let is_dir = stat.kind == "directory";
        out.push(stat);
        if is_dir && depth > 1 {
            let one = VolumePath {
                parts: vec![name.clone()],
            };
            match open_dir(dir.as_fd(), &one) {
                Ok(sub) => list_into(sub, &child, depth - 1, out)?,
                // Replaced by a symlink or removed since: not entered.
                Err(ContentError::NotFound(_) | ContentError::Invalid(_)) => {}
                Err(e) => return Err(relabel(e, &child)),
            }
        }
    }
    Ok(())
}

/// `PATCH /volumecontent/{id}/path`: sets the owner and/or mode of `path` (not of a
/// symlink's target: a symlink is refused).
pub fn update(root: BorrowedFd<'_>, path: &VolumePath, attrs: Attrs) -> Result<EntryStat> {
    attrs.check()?;
    // O_RDONLY|O_NONBLOCK opens files, directories and FIFOs alike without blocking.
    let fd = open_beneath(root, path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
    set_attrs(fd.as_fd(), attrs, path)?;
    stat(root, path)
}

/// `DELETE /volumecontent/{id}/path`: removes `path`, a directory with everything in it.
/// Symlinks are removed, never followed.
pub fn remove(root: BorrowedFd<'_>, path: &VolumePath) -> Result<()> {
    if path.is_root() {
        return Err(ContentError::Invalid(
            "cannot delete the volume root".to_owned(),
        ));
    }
    let parent = open_dir(root, &path.parent())?;
    remove_at(parent.as_fd(), path.name(), path, 0)
}

fn remove_at(dir: BorrowedFd<'_>, name: &str, path: &VolumePath, depth: usize) -> Result<()> {
    let st =
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("stat", path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io_err("remove", path));
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(ContentError::Invalid(format!(
            "{} is nested more than {MAX_REMOVE_DEPTH} directories deep",
            path.display()
        )));
    }
    let one = VolumePath {
        parts: vec![name.to_owned()],
    };
    let sub = open_dir(dir, &one).map_err(|e| relabel(e, path))?;
    let mut names = Vec::new();
    let entries = rustix::fs::Dir::read_from(&sub).map_err(io_err("read dir", path))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read dir", path))?;
        let child = entry.file_name().to_string_lossy().into_owned();
        if child != "." && child != ".." {
            names.push(child);
        }
    }
    for child in names {
        match remove_at(sub.as_fd(), &child, &path.child(&child), depth + 1) {
            Ok(()) | Err(ContentError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io_err("remove", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn root(dir: &std::path::Path) -> OwnedFd {
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn p(raw: &str) -> VolumePath {
        VolumePath::parse(raw).unwrap()
    }

    #[test]
    fn paths_are_normalised_and_dot_dot_is_refused() {
        assert_eq!(p("/a//b/./c").display(), "/a/b/c");
        assert_eq!(p("a/b").display(), "/a/b");
        assert!(p("/").is_root() && p("").is_root());
        for bad in ["..", "/a/../b", "a/..", "a\0b"] {
            assert!(
                matches!(VolumePath::parse(bad), Err(ContentError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn files_and_directories_round_trip_with_e2b_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let root = root(dir.path());
        let r = root.as_fd();
        // Without force the parent must exist.
        assert!(matches!(
            make_dir(r, &p("/a/b"), Attrs::default(), false),
            Err(ContentError::NotFound(_))
        ));
        let made = make_dir(r, &p("/a/b"), Attrs::default(), true).unwrap();
        assert_eq!(
            (made.kind, made.path.as_str(), made.mode),
            ("directory", "/a/b", 0o777)
        );
        assert_eq!((made.uid, made.gid), (DEFAULT_OWNER, DEFAULT_OWNER));
        assert!(matches!(
            make_dir(r, &p("/a/b"), Attrs::default(), false),
            Err(ContentError::Conflict(_))
        ));
        let (mut file, parent) = create_file(
            r,
            &p("/a/b/f.txt"),
            Attrs {
                mode: Some(0o600),
                ..Attrs::default()
            },
            false,
        )
        .unwrap();
        file.write_all(b"hello").unwrap();
        let st = stat_created(parent.as_fd(), &p("/a/b/f.txt")).unwrap();
        assert_eq!((st.kind, st.size, st.mode), ("file", 5, 0o600));
        // Exists: refused without force, replaced with it.
        assert!(matches!(
            create_file(r, &p("/a/b/f.txt"), Attrs::default(), false),
            Err(ContentError::Conflict(_))
        ));
        let (mut file, _) = create_file(r, &p("/a/b/f.txt"), Attrs::default(), true).unwrap();
        file.write_all(b"hi").unwrap();
        let mut text = String::new();
        open_file(r, &p("a/b/f.txt"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hi");
        let names: Vec<String> = list(r, &p("/"), 3)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, ["/a", "/a/b", "/a/b/f.txt"]);
        let names: Vec<String> = list(r, &p("/"), 1)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, ["/a"]);
        assert!(matches!(
            list(r, &p("/"), 11),
            Err(ContentError::Invalid(_))
        ));
        let updated = update(
            r,
            &p("/a/b/f.txt"),
            Attrs {
                uid: Some(1234),
                gid: Some(5678),
                mode: Some(0o640),
            },
        )
        .unwrap();
        assert_eq!(
            (updated.uid, updated.gid, updated.mode),
            (1234, 5678, 0o640)
        );
        remove(r, &p("/a")).unwrap();
        assert!(matches!(stat(r, &p("/a")), Err(ContentError::NotFound(_))));
        assert!(matches!(remove(r, &p("/")), Err(ContentError::Invalid(_))));
    }

    /// Attack: a sandbox with the volume mounted plants symlinks to host paths (and a
    /// FIFO) and waits for the content API to follow them: reading `/etc/shadow` through
    /// `leak`, writing through `dir-link/x` into a host directory, chmod-ing a host file,
    /// or hanging the server on a FIFO. Every one must fail and touch nothing outside.
    #[test]
    fn symlinks_planted_in_a_volume_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        let vol = dir.path();
        std::os::unix::fs::symlink(&secret, vol.join("leak")).unwrap();
        std::os::unix::fs::symlink(outside.path(), vol.join("dir-link")).unwrap();
        std::os::unix::fs::symlink("../../..", vol.join("up")).unwrap();
        nix::unistd::mkfifo(
            &vol.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        let root = root(vol);
        let r = root.as_fd();
        assert!(matches!(
            open_file(r, &p("/leak")),
            Err(ContentError::Invalid(_))
        ));
        assert!(open_file(r, &p("/dir-link/secret")).is_err());
        assert!(open_file(r, &p("/up/etc/passwd")).is_err());
        assert!(create_file(r, &p("/dir-link/planted"), Attrs::default(), true).is_err());
        assert!(create_file(r, &p("/leak"), Attrs::default(), true).is_err());
        assert!(make_dir(r, &p("/dir-link/sub"), Attrs::default(), true).is_err());
        assert!(list(r, &p("/dir-link"), 1).is_err());
        assert!(
            update(
                r,
                &p("/leak"),
                Attrs {
                    mode: Some(0o777),
                    ..Attrs::default()
                }
            )
            .is_err()
        );
        assert!(matches!(
            open_file(r, &p("/fifo")),
            Err(ContentError::Conflict(_))
        ));
        assert!(create_file(r, &p("/fifo"), Attrs::default(), true).is_err());
        // The link itself is reported (and removable), its target untouched.
        let st = stat(r, &p("/leak")).unwrap();
        assert_eq!(st.kind, "symlink");
        assert_eq!(st.target.as_deref(), Some(secret.to_str().unwrap()));
        remove(r, &p("/dir-link")).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
        assert!(!outside.path().join("planted").exists());
        assert!(!outside.path().join("sub").exists());
        use std::os::unix::fs::PermissionsExt as _;
        assert_ne!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o777
        );
    }
}
