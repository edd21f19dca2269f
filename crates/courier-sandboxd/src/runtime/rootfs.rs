//! The sandbox's root file system: layers, the per-sandbox writable layer, and the mounts
//! made inside the sandbox's own mount namespace.
//!
//! A *layer* is a read-only directory. It is either a plain directory tree, or a
//! structured layer: a directory holding `rootfs/` (the tree) and `layer.json`
//! ([`LayerManifest`]), which may list *host directories* (e.g. the host's `/usr`) that
//! the layer presents at a path without copying them (see [`crate::base_layer`]).
//!
//! Inside the sandbox the root is an overlay with the layers as lower dirs (the last layer
//! on top) and `<sandbox>/upper` as the upper dir; each host directory is a nested overlay
//! at its path with (the layers' own content at that path, then) the host directory as
//! lower dirs and `<sandbox>/hostdirs/<n>/upper` as upper. So every path is writable in
//! the sandbox, every write lands in the sandbox's own directory, and nothing the sandbox
//! does reaches a layer or the host. All these mounts live only in the sandbox's mount
//! namespace: they disappear with its last process, and the host's mount table never
//! holds them.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

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

/// A host file or directory bind-mounted into one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox (created if missing).
    pub target: PathBuf,
    /// Mount it read-only (the usual choice, e.g. for the envd binary).
    pub readonly: bool,
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

/// Per-sandbox directories on the host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SandboxDirs {
    /// `<data>/sandboxes/<id>`.
    pub base: PathBuf,
}

impl SandboxDirs {
    pub fn rootfs(&self) -> PathBuf {
        self.base.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.base.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.base.join("work")
    }
    pub fn host_dir(&self, n: usize) -> (PathBuf, PathBuf) {
        let d = self.base.join("hostdirs").join(n.to_string());
        (d.join("upper"), d.join("work"))
    }
}

/// Everything the helper needs to build the root file system.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RootfsPlan {
    pub dirs: SandboxDirs,
    pub layers: Vec<ResolvedLayer>,
    pub binds: Vec<BindMount>,
    pub hostname: String,
}

fn step(what: impl FnOnce() -> String) -> impl FnOnce(nix::Error) -> String {
    move |e| format!("{}: {e}", what())
}

fn io_step(what: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{}: {e}", what())
}

/// Builds the sandbox's root and makes it `/`. Runs in the helper, as PID 1 of the new
/// PID namespace, inside the new (still host-shaped) mount namespace.
pub(crate) fn enter_root(plan: &RootfsPlan) -> Result<(), String> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step(|| "make / private".into()))?;

    let root = plan.dirs.rootfs();
    let lowers: Vec<PathBuf> = plan.layers.iter().map(|l| l.tree.clone()).collect();
    let opts = overlay_options(&lowers, &plan.dirs.upper(), &plan.dirs.work());
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(step(|| format!("mount overlay root ({opts})")))?;

    // Host directories, in layer order; a later layer may present the same target again.
    let host_dirs: Vec<&HostDir> = plan.layers.iter().flat_map(|l| &l.host_dirs).collect();
    for (n, hd) in host_dirs.iter().enumerate() {
        let target = inside(&root, &hd.target);
        fs::create_dir_all(&target).map_err(io_step(|| format!("create {}", target.display())))?;
        // The layers' own content at this path sits above the host directory.
        let mut lower = vec![hd.source.clone()];
        for layer in &plan.layers {
            let own = inside(&layer.tree, &hd.target);
            if own.is_dir() && fs::read_dir(&own).is_ok_and(|mut d| d.next().is_some()) {
                lower.push(own);
            }
        }
        let (upper, work) = plan.dirs.host_dir(n);
        let opts = overlay_options(&lower, &upper, &work);
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(step(|| {
            format!("mount overlay {} ({opts})", hd.target.display())
        }))?;
    }

    for bind in &plan.binds {
        bind_into(&root, bind)?;
    }

    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(
        &root,
        "/proc",
        "proc",
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
    )?;
    // Kernel knobs stay read-only even for the sandbox's root.
    for knob in ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"] {
        let path = inside(&root, Path::new(knob));
        if path.exists() {
            readonly_bind(&path, &path).map_err(|e| format!("protect {knob}: {e}"))?;
        }
    }
    // sysfs is informative (python and friends read it) and mounted read-only.
    let _ = mount_fs(
        &root,
        "/sys",
        "sysfs",
        nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None,
    );
    mount_fs(&root, "/tmp", "tmpfs", nosuid_nodev, Some("mode=1777"))?;
    populate_dev(&root)?;
    write_identity(&root, &plan.hostname)?;

    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
    // the sandbox's tree.
    nix::unistd::chdir(&root).map_err(step(|| "chdir to new root".into()))?;
    nix::unistd::pivot_root(".", ".").map_err(step(|| "pivot_root".into()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step(|| "detach old root".into()))?;
    nix::unistd::chdir("/").map_err(step(|| "chdir /".into()))?;
    Ok(())
}

/// `root` joined with an absolute in-sandbox path.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mount_fs(
    root: &Path,
    at: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let target = inside(root, Path::new(at));
    fs::create_dir_all(&target).map_err(io_step(|| format!("create {at}")))?;
    mount(Some(fstype), &target, Some(fstype), flags, data)
        .map_err(step(|| format!("mount {fstype} on {at}")))
}

fn readonly_bind(source: &Path, target: &Path) -> nix::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

fn bind_into(root: &Path, bind: &BindMount) -> Result<(), String> {
    let target = inside(root, &bind.target);
    if bind.source.is_dir() {
        fs::create_dir_all(&target)
            .map_err(io_step(|| format!("create {}", bind.target.display())))?;
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_step(|| {
                format!("create parent of {}", bind.target.display())
            }))?;
        }
        if !target.exists() {
            fs::write(&target, b"")
                .map_err(io_step(|| format!("create {}", bind.target.display())))?;
        }
    }
    let what = || {
        format!(
            "bind {} to {}",
            bind.source.display(),
            bind.target.display()
        )
    };
    if bind.readonly {
        readonly_bind(&bind.source, &target).map_err(step(what))
    } else {
        mount(
            Some(&bind.source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(step(what))
    }
}

/// A minimal `/dev`: a small tmpfs with the harmless character devices, a private devpts
/// instance for PTYs and `/dev/shm`.
fn populate_dev(root: &Path) -> Result<(), String> {
    mount_fs(
        root,
        "/dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    let dev = inside(root, Path::new("/dev"));
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(step(|| format!("mknod /dev/{name}")))?;
        // mknod honours the umask; the mode must be exactly 0666.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(io_step(|| format!("chmod /dev/{name}")))?;
    }
    mount_fs(
        root,
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount_fs(
        root,
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
        symlink(to, dev.join(link)).map_err(io_step(|| format!("symlink /dev/{link}")))?;
    }
    Ok(())
}

/// `/etc/hostname` and `/etc/hosts` for the sandbox's hostname (written to its upper dir).
fn write_identity(root: &Path, hostname: &str) -> Result<(), String> {
    let etc = inside(root, Path::new("/etc"));
    fs::create_dir_all(&etc).map_err(io_step(|| "create /etc".into()))?;
    fs::write(etc.join("hostname"), format!("{hostname}\n"))
        .map_err(io_step(|| "write /etc/hostname".into()))?;
    let hosts =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    fs::write(etc.join("hosts"), hosts).map_err(io_step(|| "write /etc/hosts".into()))?;
    Ok(())
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
}
