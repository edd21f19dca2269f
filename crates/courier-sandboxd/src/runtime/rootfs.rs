//! The sandbox's root file system: layers, the per-sandbox writable layer, and the mounts
//! made inside the sandbox's own mount namespaces.
//!
//! A *layer* is a read-only directory. It is either a plain directory tree, or a
//! structured layer: a directory holding `rootfs/` (the tree) and `layer.json`
//! ([`LayerManifest`]), which may list *host directories* (e.g. the host's `/usr`) that
//! the layer presents at a path without copying them (see [`crate::base_layer`]).
//!
//! Inside the sandbox the root is an overlay with the layers as lower dirs (the last layer
//! on top) and the sandbox's own disk (see [`super::disk`]) as upper; each host directory
//! is a nested overlay at its path with (the layers' own content at that path, then) the
//! host directory as lower dirs. So every path is writable in the sandbox, every write
//! lands on the sandbox's own disk, and nothing the sandbox does reaches a layer or the
//! host. For a namespace sandbox every lower dir is an *idmapped* mount through the
//! sandbox's user namespace, so host-root-owned files (the layers, the host's `/usr`)
//! appear owned by the sandbox's root; writes are stored with the sandbox's host ids.
//!
//! **Path safety.** A layer is content a sandbox (or a recipe author) wrote: any of its
//! paths may be a symlink, e.g. `/etc -> /host/etc` or `/proc -> /`. Everything the
//! helper creates, mounts or writes inside the sandbox's tree is therefore resolved with
//! `openat2(RESOLVE_IN_ROOT)` from a descriptor of the sandbox's root (a symlink resolves
//! as it would inside the sandbox, never on the host), and mounts target the resolved
//! descriptor (`/proc/self/fd/N`), not a path. All these mounts live only in the
//! sandbox's mount namespaces: they disappear with its last process, and the host's mount
//! table never holds them.

use std::fs;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use super::disk;
use super::idmap::IdRange;
use crate::error::{Error, Result};

/// File name of a structured layer's manifest.
pub const LAYER_MANIFEST: &str = "layer.json";
/// Directory of a structured layer that holds its tree.
pub const LAYER_ROOTFS: &str = "rootfs";

/// What a structured layer declares beside its tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerManifest {
    /// Host directories the layer presents at a path inside the sandbox (read-only lower
    /// dirs of a nested overlay; writes go to the sandbox).
    #[serde(default)]
    pub host_dirs: Vec<HostDir>,
}

/// A host directory presented inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostDir {
    /// Absolute host path, e.g. `/usr`.
    pub source: PathBuf,
    /// Absolute path inside the sandbox, e.g. `/usr`.
    pub target: PathBuf,
}

/// A host file or directory bind-mounted into one sandbox (always `nosuid`, `nodev`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox (created if missing, resolved inside the
    /// sandbox's root).
    pub target: PathBuf,
    /// Mount it read-only (the usual choice, e.g. for the envd binary).
    pub readonly: bool,
    /// In a namespace sandbox, present the files of host uid/gid 1000 as the sandbox's
    /// `user` (and every other id as `nobody`) through an idmapped mount (see
    /// [`super::idmap::create_shared_userns`]); for operator directories the sandbox's
    /// user should own. Without it the tree keeps host ownership, which the sandbox sees
    /// as `nobody` throughout.
    #[serde(default)]
    pub map_user: bool,
}

/// A resolved layer: the directory used as overlay lower dir plus its host dirs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ResolvedLayer {
    pub tree: PathBuf,
    pub host_dirs: Vec<HostDir>,
}

/// Reads a layer directory: structured (manifest + `rootfs/`) or plain.
pub(crate) fn resolve_layer(dir: &Path) -> Result<ResolvedLayer> {
    let manifest_path = dir.join(LAYER_MANIFEST);
    if manifest_path.is_file() && dir.join(LAYER_ROOTFS).is_dir() {
        let text = fs::read_to_string(&manifest_path).map_err(Error::io("read", &manifest_path))?;
        let manifest: LayerManifest =
            serde_json::from_str(&text).map_err(|e| Error::InvalidSpec {
                field: "layers",
                reason: format!("{}: {e}", manifest_path.display()),
            })?;
        for h in &manifest.host_dirs {
            check_mount_path("layers", &h.source)?;
            check_mount_path("layers", &h.target)?;
        }
        Ok(ResolvedLayer {
            tree: dir.join(LAYER_ROOTFS),
            host_dirs: manifest.host_dirs,
        })
    } else if dir.is_dir() {
        Ok(ResolvedLayer {
            tree: dir.to_path_buf(),
            host_dirs: Vec::new(),
        })
    } else {
        Err(Error::InvalidSpec {
            field: "layers",
            reason: format!("{} is not a directory", dir.display()),
        })
    }
}

/// Rejects paths the overlay option syntax cannot carry, relative paths and `..`.
pub(crate) fn check_mount_path(field: &'static str, path: &Path) -> Result<()> {
    let text = path.to_string_lossy();
    if !path.is_absolute()
        || text.contains([':', ',', '\n'])
        || path.components().any(|c| c == Component::ParentDir)
    {
        return Err(Error::InvalidSpec {
            field,
            reason: format!("{text:?} must be absolute, without `..`, `:` or `,`"),
        });
    }
    Ok(())
}

/// Overlay mount options; `lowers` bottom first (overlayfs wants the top first).
pub(crate) fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Per-sandbox directories and files on the host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SandboxDirs {
    /// `<data>/sandboxes/<id>`.
    pub base: PathBuf,
}

impl SandboxDirs {
    /// Mount point of the overlay root (mounted only in the sandbox's namespaces).
    pub fn rootfs(&self) -> PathBuf {
        self.base.join("rootfs")
    }
    /// The sandbox's disk image.
    pub fn disk_image(&self) -> PathBuf {
        self.base.join("disk.img")
    }
    /// Where the helper mounts the disk image.
    pub fn disk(&self) -> PathBuf {
        self.base.join("disk")
    }
    /// Mount points of the (idmapped) layers.
    pub fn lower(&self, n: usize) -> PathBuf {
        self.base.join("lower").join(n.to_string())
    }
    /// Mount points of the (idmapped) host directories.
    pub fn host_lower(&self, n: usize) -> PathBuf {
        self.base.join("hostlower").join(n.to_string())
    }
    /// The control socket of a namespace sandbox (never visible inside it).
    pub fn control_socket(&self) -> PathBuf {
        self.base.join("control.sock")
    }
    /// The directory a gVisor sandbox's envd creates its socket in (bound at
    /// `/run/courier` inside).
    pub fn control_dir(&self) -> PathBuf {
        self.base.join("control")
    }
    /// The OCI bundle of a gVisor sandbox.
    pub fn bundle(&self) -> PathBuf {
        self.base.join("bundle")
    }
    /// runsc's state directory for this sandbox.
    pub fn runsc_root(&self) -> PathBuf {
        self.base.join("runsc")
    }
    /// The console log (the init's and the runtime's output, capped).
    pub fn console(&self) -> PathBuf {
        self.base.join("console.log")
    }
}

/// Relative to a mounted disk: the root overlay's upper and work dirs.
pub(crate) const DISK_UPPER: &str = "upper";
pub(crate) const DISK_WORK: &str = "work";

/// Relative to a mounted disk: the upper and work dirs of host-dir overlay `n`.
pub(crate) fn disk_host_dir(n: usize) -> (PathBuf, PathBuf) {
    let d = PathBuf::from("hostdirs").join(n.to_string());
    (d.join("upper"), d.join("work"))
}

/// Everything the helper needs to build the root file system.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RootfsPlan {
    pub dirs: SandboxDirs,
    pub layers: Vec<ResolvedLayer>,
    pub binds: Vec<BindMount>,
    pub hostname: String,
    /// Contents for `/etc/resolv.conf` (networked sandboxes), written into the sandbox.
    pub resolv_conf: Option<String>,
    /// The loop minor of a ready disk (already mounted, detached) the runtime hands the
    /// helper at `DISK_FD`; `None`: the helper attaches and mounts `disk.img` itself.
    #[serde(default)]
    pub ready_disk_minor: Option<u32>,
}

/// First line of the `/etc/resolv.conf` the runtime writes (so a capture can tell it
/// from one the sandbox wrote).
pub(crate) const RESOLV_CONF_MARKER: &str = "# written by courier-sandboxd";

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// `/proc/self/fd/N` for a descriptor: a path naming exactly that file, for system calls
/// that take paths (mount, overlay's lowerdir) without following anything else.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// What to create when a path inside the root does not exist.
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
) -> std::result::Result<OwnedFd, String> {
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
) -> std::result::Result<OwnedFd, String> {
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
                return Err(format!(
                    "{}: too many levels of symbolic links",
                    next.display()
                ));
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

fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> std::result::Result<(), String> {
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
) -> std::result::Result<(), String> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} has no file name", path.display()))?;
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
fn open_dir(path: &Path) -> std::result::Result<OwnedFd, String> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("open {}", path.display()), e))
}

/// Clones the tree at `source` (a host path the operator or the runtime chose) as a
/// detached mount with `attrs` set (and through `idmap` when given).
fn clone_tree(
    source: &Path,
    attrs: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> std::result::Result<OwnedFd, String> {
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| err(format!("clone {}", source.display()), e))?;
    if attrs != 0 || idmap.is_some() {
        super::sys::mount_setattr(tree.as_fd(), attrs, 0, idmap)
            .map_err(|e| err(format!("set mount attributes of {}", source.display()), e))?;
    }
    Ok(tree)
}

/// Attaches the detached mount `tree` on the directory or file `target`.
fn attach(
    tree: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    what: &str,
) -> std::result::Result<(), String> {
    rustix::mount::move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| err(format!("mount {what}"), e))
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// What [`assemble`] leaves for the next steps.
pub(crate) struct Assembled {
    /// Minor number of the sandbox disk's loop device.
    pub disk_minor: u32,
}

/// Makes every mount in the caller's (already unshared) mount namespace private, so
/// nothing mounted from here on propagates back to the host.
pub(crate) fn make_mounts_private() -> std::result::Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err("make / private", e))
}

/// Builds the sandbox's root at `plan.dirs.rootfs()`, in the helper's private mount
/// namespace, as host root: mounts the disk, (idmapped) lower layers, the root overlay,
/// the host-dir overlays and the binds, and writes `/etc/hostname`, `/etc/hosts` and
/// (networked) `/etc/resolv.conf`. With `ids` (a namespace sandbox) the lower layers are
/// mapped through `userns` and what the helper creates is owned by the sandbox's root.
/// `mark` is told each step's end (phase times for the runtime's debug log).
pub(crate) fn assemble(
    plan: &RootfsPlan,
    ids: Option<(IdRange, BorrowedFd<'_>)>,
    ready_disk: Option<OwnedFd>,
    mark: &mut dyn FnMut(&str),
) -> std::result::Result<Assembled, String> {
    make_mounts_private()?;
    let dirs = &plan.dirs;
    let owner = ids.map(|(r, _)| (r.base, r.base));
    let idmap = ids.map(|(_, ns)| ns);

    let disk = dirs.disk();
    let disk_minor = match (plan.ready_disk_minor, ready_disk) {
        (Some(minor), Some(mount)) => {
            attach_at(mount.as_fd(), &disk, "the ready disk")?;
            minor
        }
        (Some(_), None) => return Err("the ready disk's mount was not handed over".to_owned()),
        (None, _) => attach_and_mount(&dirs.disk_image(), &disk, false)?,
    };
    mark("disk");
    let host_dir_count: usize = plan.layers.iter().map(|l| l.host_dirs.len()).sum();
    let mut writable = vec![disk.join(DISK_UPPER)];
    let mut scratch = vec![disk.join(DISK_WORK)];
    for n in 0..host_dir_count {
        let (upper, work) = disk_host_dir(n);
        writable.push(disk.join(upper));
        scratch.push(disk.join(work));
    }
    for dir in writable.iter().chain(&scratch) {
        fs::create_dir_all(dir).map_err(|e| err(format!("create {}", dir.display()), e))?;
    }
    // The upper dirs' roots become the roots of the sandbox's overlays: they must belong
    // to the sandbox's root, or it could not write to `/`.
    if let Some((uid, gid)) = owner {
        for dir in &writable {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| err(format!("chown {}", dir.display()), e))?;
        }
    }
    mark("dirs");

    // Lower layers: mapped through the sandbox's user namespace, or as they are.
    let mut lowers = Vec::new();
    for (n, layer) in plan.layers.iter().enumerate() {
        lowers.push(match idmap {
            Some(ns) => {
                let at = dirs.lower(n);
                mount_clone_at(&layer.tree, &at, MOUNT_ATTR_RDONLY, Some(ns))?;
                at
            }
            None => layer.tree.clone(),
        });
    }
    let root_path = dirs.rootfs();
    fs::create_dir_all(&root_path).map_err(|e| err("create rootfs", e))?;
    let opts = overlay_options(&lowers, &disk.join(DISK_UPPER), &disk.join(DISK_WORK));
    mount(
        Some("overlay"),
        &root_path,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| err(format!("mount overlay root ({opts})"), e))?;
    let root = rustix::fs::open(
        &root_path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("open the sandbox root", e))?;
    mark("overlay");

    // Host directories, in layer order; a later layer may present the same target again.
    let host_dirs: Vec<&HostDir> = plan.layers.iter().flat_map(|l| &l.host_dirs).collect();
    for (n, hd) in host_dirs.iter().enumerate() {
        let target = open_in_root(root.as_fd(), &hd.target, Create::Dir, owner)?;
        let mut keep = Vec::new();
        let bottom = match idmap {
            Some(ns) => {
                let at = dirs.host_lower(n);
                mount_clone_at(&hd.source, &at, MOUNT_ATTR_RDONLY, Some(ns))?;
                at
            }
            None => hd.source.clone(),
        };
        let mut lower = vec![bottom];
        // The layers' own content at this path sits above the host directory; a layer
        // where that path is a symlink or missing contributes nothing.
        for (i, layer) in plan.layers.iter().enumerate() {
            let tree = if idmap.is_some() {
                dirs.lower(i)
            } else {
                layer.tree.clone()
            };
            let tree_fd = open_dir(&tree)?;
            let Ok(own) = rustix::fs::openat2(
                &tree_fd,
                &hd.target,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) else {
                continue;
            };
            let path = PathBuf::from(fd_path(own.as_fd()));
            if fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) {
                lower.push(path);
                keep.push(own);
            }
        }
        let (upper, work) = disk_host_dir(n);
        let opts = overlay_options(&lower, &disk.join(upper), &disk.join(work));
        mount(
            Some("overlay"),
            fd_path(target.as_fd()).as_str(),
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| err(format!("mount overlay {} ({opts})", hd.target.display()), e))?;
        drop(keep);
    }
    mark("host_dirs");

    let mut shared_userns = None;
    for bind in &plan.binds {
        let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if bind.readonly {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        let map = match (bind.map_user, ids) {
            (true, Some((range, _))) => {
                if shared_userns.is_none() {
                    shared_userns = Some(super::idmap::create_shared_userns(range)?);
                }
                shared_userns.as_ref().map(|ns| ns.as_fd())
            }
            _ => None,
        };
        let tree = clone_tree(&bind.source, attrs, map)?;
        let create = if bind.source.is_dir() {
            Create::Dir
        } else {
            Create::File
        };
        let target = open_in_root(root.as_fd(), &bind.target, create, owner)?;
        attach(
            tree.as_fd(),
            target.as_fd(),
            &bind.target.display().to_string(),
        )?;
    }
    mark("binds");

    write_identity(root.as_fd(), &plan.hostname, owner)?;
    if let Some(resolv) = &plan.resolv_conf {
        write_in_root(
            root.as_fd(),
            Path::new("/etc/resolv.conf"),
            format!("{RESOLV_CONF_MARKER}\n{resolv}").as_bytes(),
            owner,
        )?;
    }
    Ok(Assembled { disk_minor })
}

/// Mounts a clone of `source` (read-only, through `idmap`) at `at` (a directory of the
/// runtime's own, created here).
fn mount_clone_at(
    source: &Path,
    at: &Path,
    attrs: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> std::result::Result<(), String> {
    let tree = clone_tree(source, attrs, idmap)?;
    attach_at(tree.as_fd(), at, &source.display().to_string())
}

/// Attaches the detached mount `tree` on the directory `at` (a runtime path, created if
/// missing; a final symlink is refused).
pub(super) fn attach_at(
    tree: BorrowedFd<'_>,
    at: &Path,
    what: &str,
) -> std::result::Result<(), String> {
    fs::create_dir_all(at).map_err(|e| err(format!("create {}", at.display()), e))?;
    let target = rustix::fs::open(
        at,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| err(format!("open {}", at.display()), e))?;
    attach(tree, target.as_fd(), what)
}

/// Attaches `image` to a loop device and mounts it at `at` (in the caller's mount
/// namespace; the helper calls it in the sandbox's private one). Returns the loop
/// device's minor number (for I/O limits). Runs in the helper.
pub(crate) fn attach_and_mount(
    image: &Path,
    at: &Path,
    read_only: bool,
) -> std::result::Result<u32, String> {
    let (mount, minor) = disk::mount_detached(image, read_only)?;
    attach_at(mount.as_fd(), at, &image.display().to_string())?;
    Ok(minor)
}

/// `/etc/hostname` and `/etc/hosts` for the sandbox's hostname.
fn write_identity(
    root: BorrowedFd<'_>,
    hostname: &str,
    owner: Option<(u32, u32)>,
) -> std::result::Result<(), String> {
    write_in_root(
        root,
        Path::new("/etc/hostname"),
        format!("{hostname}\n").as_bytes(),
        owner,
    )?;
    let hosts =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    write_in_root(root, Path::new("/etc/hosts"), hosts.as_bytes(), owner)
}

/// Devices a sandbox gets in `/dev`, bound from the host's (harmless character devices).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The second half for a namespace sandbox, run by its PID 1 inside its own (user-owned)
/// mount, PID and network namespaces, with the assembled root as working directory: `/proc` and `/sys`, then `pivot_root` into the
/// assembled root, then `/tmp`, `/dev` (a small tmpfs with the host's harmless character
/// devices bound in, a private devpts, `/dev/shm`). After the pivot, every path resolves
/// inside the sandbox's tree by construction.
pub(crate) fn enter_root() -> std::result::Result<(), String> {
    // The working directory is the assembled root: the monitor went there before
    // unsharing, and the kernel moved it into this namespace. Paths from `/` are no use
    // here: the data dir above the root is host root's (0700) and we are the sandbox's
    // root. The root came from the parent mount namespace, where it is locked to its
    // parent; pivot_root needs a mount of this namespace's own, so bind it onto itself
    // and step into that bind through `..` (which needs no access above the root's own
    // directory).
    let here = std::env::current_dir().map_err(|e| err("read the working directory", e))?;
    let name = here
        .file_name()
        .ok_or("the sandbox root has no directory name")?
        .to_owned();
    mount(
        Some("."),
        ".",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("bind the root onto itself", e))?;
    nix::unistd::chdir(&Path::new("..").join(&name))
        .map_err(|e| err("enter the root's own mount", e))?;
    let root = rustix::fs::open(
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("open the sandbox root", e))?;
    // proc and sysfs must be mounted while the host's own are still visible: the kernel
    // refuses a new one in a user namespace otherwise ("mount too revealing").
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = open_in_root(root.as_fd(), Path::new("/proc"), Create::Dir, None)?;
    mount(
        Some("proc"),
        fd_path(proc_dir.as_fd()).as_str(),
        Some("proc"),
        nosuid_nodev_noexec,
        None::<&str>,
    )
    .map_err(|e| err("mount /proc", e))?;
    // Kernel knobs stay read-only even for the sandbox's root. Reopened after the mount
    // so the path walks into the new proc, not the directory under it.
    let proc_root = open_in_root(root.as_fd(), Path::new("/proc"), Create::No, None)?;
    for knob in ["sys", "sysrq-trigger", "irq", "bus"] {
        let path = PathBuf::from(format!("{}/{knob}", fd_path(proc_root.as_fd())));
        if fs::symlink_metadata(&path).is_ok() {
            readonly_bind(&path).map_err(|e| err(format!("protect /proc/{knob}"), e))?;
        }
    }
    // sysfs is informative (python and friends read it) and mounted read-only.
    if let Ok(sys_dir) = open_in_root(root.as_fd(), Path::new("/sys"), Create::Dir, None)
        && mount(
            Some("sysfs"),
            fd_path(sys_dir.as_fd()).as_str(),
            Some("sysfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .is_ok()
    {
        mask_virtual_block_devices(root.as_fd())?;
    }
    let mut devices = Vec::new();
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        devices.push((
            name,
            clone_tree(&host, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, None)?,
        ));
    }
    drop(root);

    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
    // the sandbox's tree.
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))?;

    mount_fs(
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fs(
        "/dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for (name, tree) in &devices {
        let path = Path::new("/dev").join(name);
        fs::write(&path, b"").map_err(|e| err(format!("create /dev/{name}"), e))?;
        let target = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| err(format!("open /dev/{name}"), e))?;
        attach(tree.as_fd(), target.as_fd(), &format!("/dev/{name}"))?;
    }
    mount_fs(
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount_fs(
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, Path::new("/dev").join(link))
            .map_err(|e| err(format!("symlink /dev/{link}"), e))?;
    }
    Ok(())
}

/// Hides the host's virtual block devices in the sandbox's sysfs (just mounted at the
/// root's `/sys`) under an empty read-only tmpfs: every sandbox's disk is a loop device
/// whose `loop/backing_file` is the image's host path, which names the sandbox, and a
/// sandbox's id is its address at the proxy. `/sys/block` and `/sys/dev/block` only link
/// there. If the mask cannot be mounted, the sandbox gets no sysfs at all.
fn mask_virtual_block_devices(root: BorrowedFd<'_>) -> std::result::Result<(), String> {
    let sys = open_in_root(root, Path::new("/sys"), Create::No, None)?;
    // Reopened after the mount: this descriptor is the new sysfs, whose tree is the
    // kernel's (no link the sandbox controls below it).
    let block = PathBuf::from(format!("{}/devices/virtual/block", fd_path(sys.as_fd())));
    if fs::symlink_metadata(&block).is_err() {
        return Ok(());
    }
    let masked = mount(
        Some("tmpfs"),
        &block,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        Some("size=4k,mode=555"),
    );
    if let Err(e) = masked {
        umount2(fd_path(sys.as_fd()).as_str(), MntFlags::MNT_DETACH).map_err(|u| {
            err(
                format!("mask /sys/devices/virtual/block ({e}), then unmount /sys"),
                u,
            )
        })?;
    }
    Ok(())
}

const MOUNT_ATTR_NOEXEC: u64 = 0x8;

fn mount_fs(
    at: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> std::result::Result<(), String> {
    fs::create_dir_all(at).map_err(|e| err(format!("create {at}"), e))?;
    mount(Some(fstype), at, Some(fstype), flags, data)
        .map_err(|e| err(format!("mount {fstype} on {at}"), e))
}

fn readonly_bind(path: &Path) -> nix::Result<()> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_the_top_layer_first() {
        let opts = overlay_options(
            &[PathBuf::from("/l/base"), PathBuf::from("/l/tpl")],
            Path::new("/s/upper"),
            Path::new("/s/work"),
        );
        assert_eq!(
            opts,
            "lowerdir=/l/tpl:/l/base,upperdir=/s/upper,workdir=/s/work"
        );
    }

    #[test]
    fn mount_paths_reject_overlay_separators_and_dot_dot() {
        assert!(check_mount_path("layers", Path::new("/ok/path")).is_ok());
        for bad in ["rel", "/a:b", "/a,b", "/a/../b"] {
            assert!(check_mount_path("layers", Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn structured_and_plain_layers_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::create_dir(&plain).unwrap();
        assert_eq!(resolve_layer(&plain).unwrap().tree, plain);

        let structured = dir.path().join("base");
        fs::create_dir_all(structured.join(LAYER_ROOTFS)).unwrap();
        let manifest = LayerManifest {
            host_dirs: vec![HostDir {
                source: "/usr".into(),
                target: "/usr".into(),
            }],
        };
        fs::write(
            structured.join(LAYER_MANIFEST),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        let resolved = resolve_layer(&structured).unwrap();
        assert_eq!(resolved.tree, structured.join(LAYER_ROOTFS));
        assert_eq!(resolved.host_dirs, manifest.host_dirs);

        assert!(resolve_layer(&dir.path().join("missing")).is_err());
    }

    /// A template whose `/etc` is a symlink to a host directory (written by a RUN step or
    /// an npm postinstall script) must not make the runtime write on the host: every path
    /// resolves inside the sandbox's tree.
    #[test]
    fn writes_in_root_never_follow_symlinks_out_of_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-etc");
        fs::create_dir(&host).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&host, root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let root_fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();

        write_in_root(root_fd.as_fd(), Path::new("/etc/hosts"), b"x", None).unwrap();
        assert!(!host.join("hosts").exists(), "wrote through the symlink");
        // The absolute symlink resolved inside the tree: <root>/<host-etc path>/hosts.
        let inside = root.join(host.strip_prefix("/").unwrap()).join("hosts");
        assert_eq!(fs::read(&inside).unwrap(), b"x");

        // `..` and absolute links stay in the tree too.
        let fd = open_in_root(
            root_fd.as_fd(),
            Path::new("/up/../../x/y"),
            Create::Dir,
            None,
        )
        .unwrap();
        drop(fd);
        assert!(root.join("x/y").is_dir());
        assert!(!Path::new("/x/y").exists());

        // A symlink at the file's own name is replaced, not followed.
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::create_dir_all(root.join("data")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("data/file")).unwrap();
        write_in_root(root_fd.as_fd(), Path::new("/data/file"), b"new", None).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read(root.join("data/file")).unwrap(), b"new");
    }
}
