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

mod assemble;
mod enter;
mod in_root;

use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Component, Path, PathBuf};

use super::step::StepError;
use crate::error::{Error, Result};

pub(crate) use assemble::{
    assemble, attach_and_mount, attach_at, make_mounts_private, mount_device_read_only,
};
pub(crate) use enter::enter_root;

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
    /// `idmap::create_shared_userns`); for operator directories the sandbox's
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
    /// The egress interception CA (PEM) to add to the sandbox's CA bundle (a sandbox
    /// with `network.rules` transforms; see [`crate::egress`]).
    #[serde(default)]
    pub trust_ca: Option<String>,
    /// The loop minor of a ready disk (already mounted, detached) the runtime hands the
    /// helper at `DISK_FD`; `None`: the helper attaches and mounts `disk.img` itself.
    #[serde(default)]
    pub ready_disk_minor: Option<u32>,
}

/// First line of the `/etc/resolv.conf` the runtime writes (so a capture can tell it
/// from one the sandbox wrote).
pub(crate) const RESOLV_CONF_MARKER: &str = "# written by courier-sandboxd";

/// The failed step `what` with its OS error.
fn err(what: impl std::fmt::Display, e: impl Into<std::io::Error>) -> StepError {
    StepError::os(what.to_string())(e)
}

/// `/proc/self/fd/N` for a descriptor: a path naming exactly that file, for system calls
/// that take paths (mount, overlay's lowerdir) without following anything else.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests;
