//! Assembling a sandbox's root in the helper: its disk, layers, overlays and binds.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use super::in_root::{Create, open_dir, open_in_root, write_in_root};
use super::{
    DISK_UPPER, DISK_WORK, HostDir, RESOLV_CONF_MARKER, RootfsPlan, disk_host_dir, err, fd_path,
    overlay_options,
};
use crate::runtime::disk;
use crate::runtime::idmap::IdRange;
use crate::runtime::step::StepError;

/// Clones the tree at `source` (a host path the operator or the runtime chose) as a
/// detached mount with `attrs` set (and through `idmap` when given).
pub(super) fn clone_tree(
    source: &Path,
    attrs: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, StepError> {
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| err(format!("clone {}", source.display()), e))?;
    if attrs != 0 || idmap.is_some() {
        crate::runtime::sys::mount_setattr(tree.as_fd(), attrs, 0, idmap)
            .map_err(|e| err(format!("set mount attributes of {}", source.display()), e))?;
    }
    Ok(tree)
}

/// Attaches the detached mount `tree` on the directory or file `target`.
pub(super) fn attach(
    tree: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    what: &str,
) -> Result<(), StepError> {
    rustix::mount::move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| err(format!("mount {what}"), e))
}

pub(super) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(super) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(super) const MOUNT_ATTR_NODEV: u64 = 0x4;

/// What [`assemble`] leaves for the next steps.
pub(crate) struct Assembled {
    /// Minor number of the sandbox disk's loop device.
    pub disk_minor: u32,
}

/// Makes every mount in the caller's (already unshared) mount namespace private, so
/// nothing mounted from here on propagates back to the host.
pub(crate) fn make_mounts_private() -> Result<(), StepError> {
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
) -> Result<Assembled, StepError> {
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
        (Some(_), None) => {
            return Err(StepError::refused(
                "the ready disk's mount was not handed over",
            ));
        }
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
                    shared_userns = Some(crate::runtime::idmap::create_shared_userns(range)?);
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
    if let Some(pem) = &plan.trust_ca {
        trust_ca(root.as_fd(), pem, owner)?;
    }
    Ok(Assembled { disk_minor })
}

/// The system CA bundle (Debian, Ubuntu, Alpine; what OpenSSL, curl, git, Python's `ssl`,
/// Go and rustls-native-certs read there) the interception CA is added to.
pub(crate) const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest bundle read (a distribution's is ~200 KiB).
const MAX_CA_BUNDLE: u64 = 8 << 20;

/// Adds `pem` (the egress interception CA) to the sandbox's [`CA_BUNDLE`], unless it is
/// there already (a sandbox resumed on its own disk). The bundle is read and replaced
/// inside the root (`RESOLVE_IN_ROOT`; a symlink to the template's file is replaced by a
/// file of the sandbox's own, never written through), so the template's layers stay as
/// they were. Only a regular file is read: a FIFO or device planted at that path is
/// treated as no bundle.
pub(super) fn trust_ca(
    root: BorrowedFd<'_>,
    pem: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), StepError> {
    let path = Path::new(CA_BUNDLE);
    let mut bundle = Vec::new();
    match rustix::fs::openat2(
        root,
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => {
            let stat = rustix::fs::fstat(&fd).map_err(|e| err(format!("stat {CA_BUNDLE}"), e))?;
            let regular = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
            if regular && (stat.st_size as u64) <= MAX_CA_BUNDLE {
                use std::io::Read as _;
                fs::File::from(fd)
                    .take(MAX_CA_BUNDLE)
                    .read_to_end(&mut bundle)
                    .map_err(|e| err(format!("read {CA_BUNDLE}"), e))?;
            }
        }
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(err(format!("open {CA_BUNDLE}"), e)),
    }
    let pem = pem.as_bytes();
    if bundle.windows(pem.len()).any(|w| w == pem) {
        return Ok(());
    }
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(pem);
    write_in_root(root, path, &bundle, owner)
}

/// Mounts a clone of `source` (read-only, through `idmap`) at `at` (a directory of the
/// runtime's own, created here).
fn mount_clone_at(
    source: &Path,
    at: &Path,
    attrs: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> Result<(), StepError> {
    let tree = clone_tree(source, attrs, idmap)?;
    attach_at(tree.as_fd(), at, &source.display().to_string())
}

/// Attaches the detached mount `tree` on the directory `at` (a runtime path, created if
/// missing; a final symlink is refused).
pub(crate) fn attach_at(tree: BorrowedFd<'_>, at: &Path, what: &str) -> Result<(), StepError> {
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
pub(crate) fn attach_and_mount(image: &Path, at: &Path, read_only: bool) -> Result<u32, StepError> {
    let (mount, minor) = disk::mount_detached(image, read_only)?;
    attach_at(mount.as_fd(), at, &image.display().to_string())?;
    Ok(minor)
}

/// Mounts the ext4 file system a running sandbox's disk `device` (a loop device already
/// mounted read-write by that sandbox) carries at `at`, read-only for this mount only.
/// The kernel hands back the superblock already in use, so this sees exactly what the
/// sandbox sees, unwritten page cache included, and nothing written through the other
/// mount can diverge from it. Runs in the helper (capture of a running sandbox).
pub(crate) fn mount_device_read_only(device: &Path, at: &Path) -> Result<(), StepError> {
    let mount = disk::mount_existing_read_only(device)?;
    attach_at(mount.as_fd(), at, &device.display().to_string())
}

/// `/etc/hostname` and `/etc/hosts` for the sandbox's hostname.
fn write_identity(
    root: BorrowedFd<'_>,
    hostname: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), StepError> {
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
