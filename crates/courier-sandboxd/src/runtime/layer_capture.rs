//! Turning a sandbox's writes into a new read-only layer (template builds).
//!
//! A sandbox writes to its disk (see [`super::disk`]): `upper/` (the root overlay's upper
//! dir) and, for each host directory a layer presents, `hostdirs/<n>/upper`, whose content
//! belongs at that host directory's target path (e.g. `/usr`). [`Runtime::capture_layer`]
//! kills the sandbox, then a helper process (in a private mount namespace) mounts the
//! disk read-only and copies those upper dirs into one structured layer:
//!
//! ```text
//! <dest>/rootfs/        the root upper, with each host-dir upper merged in at its target
//!        layer.json     an empty manifest: the host directories stay declared by the
//!                       layers below, whose nested overlays pick this layer's content at
//!                       their target up as a lower dir above the host directory
//! ```
//!
//! The copy (`cp -a`) keeps overlay whiteouts (0/0 character devices), opaque directories
//! (the `trusted.overlay.opaque` xattr), ownership, modes, hard links and other xattrs, so
//! a file the sandbox deleted stays deleted in sandboxes stacked on the layer. A namespace
//! sandbox stored its files with its own host ids; the copy shifts them back to the ids
//! seen inside (`root` = 0), which is how every layer is stored, so any sandbox — with any
//! id range, or under gVisor — can stack on it. File capabilities written inside a user
//! namespace (`security.capability` v3, tied to that namespace's root) are rewritten for
//! root 0 the same way.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Runtime;
use super::idmap::IdRange;
use super::rootfs::{self, DISK_UPPER, LAYER_MANIFEST, LAYER_ROOTFS, LayerManifest};
use super::step::StepError;
use crate::error::{Error, Result};

/// What the capture helper does.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CaptureTask {
    /// The dead sandbox's disk image.
    pub image: PathBuf,
    /// Where to mount it (a directory of the runtime's own).
    pub mount_at: PathBuf,
    /// The layer to create (must not exist).
    pub dest: PathBuf,
    /// The sandbox's host ids, when it stored its files shifted.
    pub ids: Option<IdRange>,
    /// Targets of the host-dir overlays, in their order on the disk.
    pub host_targets: Vec<PathBuf>,
    /// Remove the `/etc/resolv.conf` the runtime wrote (not one the sandbox wrote).
    pub drop_resolv_conf: bool,
    /// The loop device a *running* (frozen) sandbox's disk is attached to: mounted again
    /// (the same superblock, so the sandbox's unwritten page cache is seen) read-only
    /// instead of attaching `image` a second time, which would be a second, diverging
    /// file system on the same image.
    #[serde(default)]
    pub device: Option<PathBuf>,
}

impl Runtime {
    /// Kills sandbox `id` and captures everything it wrote as a structured layer at
    /// `dest` (which must not exist; its parent is created). The layer appears atomically:
    /// it is assembled next to `dest` and renamed into place, so `dest` is either absent
    /// or complete. The sandbox is gone afterwards whether or not the capture succeeded.
    pub fn capture_layer(&self, id: &str, dest: &Path) -> Result<()> {
        check_dest(dest)?;
        let entry = self
            .known()
            .remove(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        // Every process must be gone before the disk is read: nothing may write to it any
        // more, and its mount (in the sandbox's namespace) goes with the last process.
        let killed = entry.cgroup.kill_all();
        let mut monitor = entry.monitor;
        if let Some(monitor) = monitor.as_mut() {
            super::sys::kill_and_reap(monitor, "a captured sandbox's monitor");
        }
        let dirs = self.dirs(id);
        let captured = killed.and_then(|()| {
            let mut host_targets = Vec::new();
            for layer in &entry.state.spec.layers {
                host_targets.extend(
                    rootfs::resolve_layer(layer)?
                        .host_dirs
                        .into_iter()
                        .map(|h| h.target),
                );
            }
            let task = CaptureTask {
                image: dirs.disk_image(),
                mount_at: dirs.base.join("capture"),
                dest: dest.to_path_buf(),
                ids: entry.state.ids,
                host_targets,
                drop_resolv_conf: entry.state.spec.allow_internet,
                device: None,
            };
            self.run_capture(&task)
        });
        let cleaned = self.destroy(id, &entry.cgroup, None, entry.network, entry.state.ids);
        captured?;
        cleaned
    }
}

impl Runtime {
    /// Captures everything running sandbox `id` wrote so far as a structured layer at
    /// `dest` (snapshots, forks), like [`capture_layer`](Self::capture_layer) but
    /// leaving the sandbox running: it is frozen while its disk is copied (a consistent
    /// state: no process of it writes meanwhile) and thawed afterwards, also when the
    /// copy fails. A sandbox that was frozen already (paused) stays frozen.
    pub fn capture_running(&self, id: &str, dest: &Path) -> Result<()> {
        check_dest(dest)?;
        let (cgroup, spec, ids) = self.with_entry(id, |e| {
            Ok((e.cgroup.clone(), e.state.spec.clone(), e.state.ids))
        })?;
        let dirs = self.dirs(id);
        let image = dirs.disk_image();
        let mut host_targets = Vec::new();
        for layer in &spec.layers {
            host_targets.extend(
                rootfs::resolve_layer(layer)?
                    .host_dirs
                    .into_iter()
                    .map(|h| h.target),
            );
        }
        let was_frozen = cgroup.is_frozen();
        if !was_frozen {
            cgroup.freeze()?;
        }
        let captured = loop_device_of(&image).and_then(|device| {
            self.run_capture(&CaptureTask {
                image: image.clone(),
                mount_at: dirs
                    .base
                    .join(format!("capture-{}", crate::state::random_hex(4))),
                dest: dest.to_path_buf(),
                ids,
                host_targets,
                drop_resolv_conf: spec.allow_internet,
                device: Some(device),
            })
        });
        let thawed = if was_frozen { Ok(()) } else { cgroup.thaw() };
        // The mount point lived in the helper's private namespace; only the empty
        // directory is left here.
        if let Ok(entries) = fs::read_dir(&dirs.base) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("capture-") {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        captured?;
        thawed
    }
}

/// The loop device `image` is attached to (the kernel's `backing_file` of each loop
/// device names the file it reads).
fn loop_device_of(image: &Path) -> Result<PathBuf> {
    let block = Path::new("/sys/block");
    let entries = fs::read_dir(block).map_err(Error::io("read dir", block))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let backing = entry.path().join("loop/backing_file");
        if let Ok(text) = fs::read_to_string(&backing)
            && Path::new(text.trim_end_matches('\n')) == image
        {
            return Ok(PathBuf::from("/dev").join(name));
        }
    }
    Err(Error::Setup {
        id: image.display().to_string(),
        message: "no loop device is attached to the sandbox's disk".to_owned(),
    })
}

fn check_dest(dest: &Path) -> Result<()> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::InvalidSpec {
            field: "dest",
            reason: format!("{} already exists", dest.display()),
        });
    }
    Ok(())
}

/// The capture itself, in the helper: mount the disk read-only in a private mount
/// namespace and assemble the layer.
pub(crate) fn run(task: &CaptureTask) -> Result<(), StepError> {
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWNS).map_err(StepError::os("unshare mount namespace"))?;
    super::rootfs::make_mounts_private()?;
    match &task.device {
        Some(device) => rootfs::mount_device_read_only(device, &task.mount_at)?,
        None => {
            rootfs::attach_and_mount(&task.image, &task.mount_at, true)?;
        }
    }
    let uppers: Vec<(PathBuf, PathBuf)> = task
        .host_targets
        .iter()
        .enumerate()
        .map(|(n, target)| {
            (
                task.mount_at.join(rootfs::disk_host_dir(n).0),
                target.clone(),
            )
        })
        .collect();
    assemble(
        &task.mount_at.join(DISK_UPPER),
        &uppers,
        &task.dest,
        task.ids,
        task.drop_resolv_conf,
    )
    .map_err(StepError::from)
}

/// Builds the layer at `dest` from the root upper dir and the host-dir upper dirs (each
/// with its target path inside the sandbox), through a staging directory.
fn assemble(
    root_upper: &Path,
    host_uppers: &[(PathBuf, PathBuf)],
    dest: &Path,
    ids: Option<IdRange>,
    drop_resolv_conf: bool,
) -> Result<()> {
    check_dest(dest)?;
    let parent = dest.parent().ok_or_else(|| Error::InvalidSpec {
        field: "dest",
        reason: format!("{} has no parent directory", dest.display()),
    })?;
    fs::create_dir_all(parent).map_err(Error::io("create dir", parent))?;
    let mut staging = dest.as_os_str().to_owned();
    staging.push(".partial");
    let staging = PathBuf::from(staging);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io("remove", &staging))?;
    }
    let result = (|| {
        fs::create_dir(&staging).map_err(Error::io("create dir", &staging))?;
        let tree = staging.join(LAYER_ROOTFS);
        copy_tree(root_upper, &tree)?;
        for (upper, target) in host_uppers {
            if upper.is_dir()
                && fs::read_dir(upper)
                    .map_err(Error::io("read dir", upper))?
                    .next()
                    .is_some()
            {
                let at = beneath(&tree, target)?;
                // In the sandbox the host directory's overlay was mounted over this path,
                // so the root upper's content below it was never visible: replace it.
                match fs::symlink_metadata(&at) {
                    Ok(meta) if meta.is_dir() => {
                        fs::remove_dir_all(&at).map_err(Error::io("remove", &at))?
                    }
                    Ok(_) => fs::remove_file(&at).map_err(Error::io("remove", &at))?,
                    Err(_) => {}
                }
                copy_tree(upper, &at)?;
            }
        }
        if drop_resolv_conf {
            forget_resolv_conf(&tree)?;
        }
        drop_device_nodes(&tree)?;
        if let Some(ids) = ids {
            shift_to_inner(&tree, ids)?;
        }
        let manifest =
            serde_json::to_vec_pretty(&LayerManifest::default()).map_err(|e| Error::State {
                path: staging.clone(),
                reason: e.to_string(),
            })?;
        let manifest_path = staging.join(LAYER_MANIFEST);
        fs::write(&manifest_path, manifest).map_err(Error::io("write", &manifest_path))?;
        fs::rename(&staging, dest).map_err(Error::io("rename", &staging))
    })();
    if result.is_err()
        && let Err(error) = fs::remove_dir_all(&staging)
    {
        tracing::warn!(%error, dir = %staging.display(), "removing a failed capture's staging dir");
    }
    result
}

/// `tree` joined with the absolute in-sandbox `target`, refusing a target whose parents
/// are symlinks in the captured tree (they would lead the copy out of the layer).
fn beneath(tree: &Path, target: &Path) -> Result<PathBuf> {
    let mut at = tree.to_path_buf();
    let parts: Vec<_> = target.components().skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() && !last => {
                return Err(Error::InvalidSpec {
                    field: "layer",
                    reason: format!(
                        "{} is a symlink in the sandbox's writes; cannot merge {} there",
                        at.display(),
                        target.display()
                    ),
                });
            }
            Ok(_) => {}
            Err(_) if !last => fs::create_dir_all(&at).map_err(Error::io("create dir", &at))?,
            Err(_) => {}
        }
    }
    Ok(at)
}

/// `cp -a` (ownership, modes, times, xattrs incl. `trusted.overlay.*`, hard links,
/// device nodes, sparse files) of directory `src` to the new path `dst`.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let out = Command::new("cp")
        .args(["-a", "--sparse=always", "--no-target-directory"])
        .arg(src)
        .arg(dst)
        .output()
        .map_err(Error::sys("run cp -a"))?;
    if !out.status.success() {
        return Err(Error::Sys {
            op: format!("cp -a {} {}", src.display(), dst.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(())
}

/// Removes every device node but overlay whiteouts (character devices 0/0) from the
/// captured tree. A sandbox cannot make one in its user namespace, but its disk is its
/// own: whatever else the copy met (a node crafted into the image) must never reach a
/// layer other sandboxes stack on.
fn drop_device_nodes(tree: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let entry = entry.map_err(Error::io("read dir", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_block_device() || (kind.is_char_device() && meta.rdev() != 0) {
                tracing::warn!(path = %path.display(), "dropping a device node from a captured layer");
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            }
        }
    }
    Ok(())
}

/// Removes the `/etc/resolv.conf` the runtime wrote, unless the sandbox replaced it.
fn forget_resolv_conf(tree: &Path) -> Result<()> {
    let etc = tree.join("etc");
    if fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) {
        let path = etc.join("resolv.conf");
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
            && fs::read_to_string(&path).is_ok_and(|t| t.starts_with(rootfs::RESOLV_CONF_MARKER))
        {
            fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        }
    }
    Ok(())
}

/// Rewrites host ids of `ids` to the ids seen inside (base → 0). Ids outside the range
/// (overlay's own whiteouts, made by host root) stay as they are. `chown` clears setuid
/// bits and file capabilities, so both are put back afterwards.
fn shift_to_inner(tree: &Path, ids: IdRange) -> Result<()> {
    let mut stack = vec![tree.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(Error::io("read dir", &path))? {
                stack.push(entry.map_err(Error::io("read dir", &path))?.path());
            }
        }
        let uid = ids.to_inner(meta.uid());
        let gid = ids.to_inner(meta.gid());
        if uid.is_none() && gid.is_none() {
            continue;
        }
        let caps = if meta.is_file() {
            read_capability(&path)
        } else {
            None
        };
        std::os::unix::fs::lchown(&path, uid, gid).map_err(Error::io("chown", &path))?;
        if !meta.file_type().is_symlink() {
            fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(Error::io("chmod", &path))?;
        }
        if let Some(caps) = caps {
            write_capability(&path, &unshift_capability(caps, ids))?;
        }
    }
    Ok(())
}

const CAPABILITY_XATTR: &str = "security.capability";

fn read_capability(path: &Path) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(path, CAPABILITY_XATTR, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn write_capability(path: &Path, value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(
        path,
        CAPABILITY_XATTR,
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| Error::io("set file capabilities", path)(e.into()))
}

/// A v3 file capability names the root of the user namespace it was set in; one set by
/// the sandbox's root (host `ids.base`) is rewritten for root 0. Others pass unchanged.
fn unshift_capability(mut value: Vec<u8>, ids: IdRange) -> Vec<u8> {
    const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
    if value.len() == 24 {
        let magic = u32::from_le_bytes(value[0..4].try_into().expect("4 bytes"));
        let rootid = u32::from_le_bytes(value[20..24].try_into().expect("4 bytes"));
        if magic & 0xff00_0000 == VFS_CAP_REVISION_3
            && let Some(inner) = ids.to_inner(rootid)
        {
            value[20..24].copy_from_slice(&inner.to_le_bytes());
        }
    }
    value
}

impl Runtime {
    /// Runs a capture task in the helper and waits for it.
    fn run_capture(&self, task: &CaptureTask) -> Result<()> {
        let report = self.run_helper_task(task.clone())?;
        if report.lines().any(|l| l == "done") {
            return Ok(());
        }
        let message = report
            .lines()
            .find_map(|l| l.strip_prefix("error "))
            .unwrap_or("the capture helper ended without a report")
            .to_owned();
        Err(Error::Setup {
            id: task.dest.display().to_string(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dir_uppers_merge_into_the_root_upper_at_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/motd"), "hi").unwrap();
        fs::write(
            root.join("etc/resolv.conf"),
            format!("{}\nnameserver 10.0.2.3\n", rootfs::RESOLV_CONF_MARKER),
        )
        .unwrap();
        fs::create_dir_all(root.join("usr/local")).unwrap();
        fs::write(root.join("usr/local/hidden"), "was under the /usr mount").unwrap();
        let usr = dir.path().join("hostdirs/0/upper");
        fs::create_dir_all(usr.join("local/bin")).unwrap();
        fs::write(usr.join("local/bin/tool"), "tool").unwrap();
        let missing = dir.path().join("hostdirs/1/upper");
        let dest = dir.path().join("layers/t/b");
        assemble(
            &root,
            &[(usr, "/usr".into()), (missing, "/lib".into())],
            &dest,
            None,
            true,
        )
        .unwrap();
        let tree = dest.join(LAYER_ROOTFS);
        assert_eq!(fs::read_to_string(tree.join("etc/motd")).unwrap(), "hi");
        assert!(!tree.join("etc/resolv.conf").exists());
        assert_eq!(
            fs::read_to_string(tree.join("usr/local/bin/tool")).unwrap(),
            "tool"
        );
        // The host dir's overlay was mounted over the root upper's /usr: only its content
        // was visible in the sandbox.
        assert!(!tree.join("usr/local/hidden").exists());
        assert!(!tree.join("lib").exists());
        let manifest: LayerManifest =
            serde_json::from_slice(&fs::read(dest.join(LAYER_MANIFEST)).unwrap()).unwrap();
        assert!(manifest.host_dirs.is_empty());
        assert!(!dir.path().join("layers/t/b.partial").exists());
        // The disk is only read.
        assert!(root.join("etc/motd").exists());
    }

    #[test]
    fn shifted_ids_come_back_as_seen_inside() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: chown to other ids needs root");
            return;
        }
        let ids = IdRange {
            base: 1 << 30,
            count: 65_536,
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        fs::create_dir_all(root.join("home/user")).unwrap();
        fs::write(root.join("home/user/f"), "x").unwrap();
        fs::write(root.join("sudo"), "x").unwrap();
        std::os::unix::fs::lchown(&root, Some(ids.base), Some(ids.base)).unwrap();
        std::os::unix::fs::lchown(root.join("home"), Some(ids.base), Some(ids.base)).unwrap();
        let user = ids.base + 1000;
        std::os::unix::fs::lchown(root.join("home/user"), Some(user), Some(user)).unwrap();
        std::os::unix::fs::lchown(root.join("home/user/f"), Some(user), Some(user)).unwrap();
        std::os::unix::fs::lchown(root.join("sudo"), Some(ids.base), Some(ids.base)).unwrap();
        fs::set_permissions(root.join("sudo"), fs::Permissions::from_mode(0o4755)).unwrap();
        let dest = dir.path().join("layer");
        assemble(&root, &[], &dest, Some(ids), false).unwrap();
        let tree = dest.join(LAYER_ROOTFS);
        let f = fs::metadata(tree.join("home/user/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (1000, 1000));
        let sudo = fs::metadata(tree.join("sudo")).unwrap();
        assert_eq!((sudo.uid(), sudo.gid()), (0, 0));
        // chown cleared the setuid bit; the shift puts it back.
        assert_eq!(sudo.mode() & 0o7777, 0o4755);
    }

    #[test]
    fn file_capabilities_of_the_sandbox_root_are_rewritten_for_root_zero() {
        let ids = IdRange {
            base: 1 << 30,
            count: 65_536,
        };
        let mut v3 = vec![0u8; 24];
        v3[0..4].copy_from_slice(&0x0300_0001u32.to_le_bytes());
        v3[20..24].copy_from_slice(&ids.base.to_le_bytes());
        let out = unshift_capability(v3.clone(), ids);
        assert_eq!(&out[20..24], &0u32.to_le_bytes());
        assert_eq!(&out[..20], &v3[..20]);
        // v2 (no root id) and foreign roots pass unchanged.
        let v2 = vec![1u8; 20];
        assert_eq!(unshift_capability(v2.clone(), ids), v2);
    }

    #[test]
    fn an_existing_destination_is_refused_before_anything_moves() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        fs::create_dir_all(&root).unwrap();
        let dest = dir.path().join("layer");
        fs::create_dir_all(&dest).unwrap();
        let err = assemble(&root, &[], &dest, None, false).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}
