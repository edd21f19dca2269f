//! Turning a sandbox's writes into a new read-only layer (template builds).
//!
//! A sandbox writes to `<sandbox>/upper` (the root overlay's upper dir) and, for each host
//! directory a layer presents, to `<sandbox>/hostdirs/<n>/upper`, whose content belongs at
//! that host directory's target path (e.g. `/usr`). [`Runtime::capture_layer`] kills the
//! sandbox, then moves those upper dirs (renames, no copies: they live on the data dir's
//! file system) into one structured layer:
//!
//! ```text
//! <dest>/rootfs/        the root upper, with each host-dir upper merged in at its target
//!        layer.json     an empty manifest: the host directories stay declared by the
//!                       layers below, whose nested overlays pick this layer's content at
//!                       their target up as a lower dir above the host directory
//! ```
//!
//! Overlay whiteouts (0/0 character devices) and opaque directories (the
//! `trusted.overlay.opaque` xattr) move with the files, and overlayfs honours both in
//! lower layers, so a file the sandbox deleted stays deleted in sandboxes stacked on the
//! captured layer.

use std::fs;
use std::path::{Path, PathBuf};

use super::Runtime;
use super::rootfs::{self, LAYER_MANIFEST, LAYER_ROOTFS, LayerManifest};
use crate::error::{Error, Result};

impl Runtime {
    /// Kills sandbox `id` and captures everything it wrote as a structured layer at
    /// `dest` (which must not exist; its parent is created). The layer appears atomically:
    /// it is assembled next to `dest` and renamed into place, so `dest` is either absent
    /// or complete. The sandbox is gone afterwards whether or not the capture succeeded.
    pub fn capture_layer(&self, id: &str, dest: &Path) -> Result<()> {
        check_dest(dest)?;
        let entry = self
            .sandboxes
            .lock()
            .expect("lock")
            .remove(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        // Every process must be gone before the upper dirs move: nothing may write to
        // them any more, and the sandbox's mount namespace (holding the overlays) dies
        // with its last process.
        let killed = entry.cgroup.kill_all();
        let mut monitor = entry.monitor;
        if let Some(monitor) = monitor.as_mut() {
            let _ = monitor.kill();
            let _ = monitor.wait();
        }
        let captured = killed.and_then(|()| {
            let dirs = self.dirs(id);
            if entry.state.spec.allow_internet {
                // The resolver the runtime wrote for slirp4netns belongs to this sandbox,
                // not to the layer (a recipe that wrote its own is kept).
                super::network::forget_resolv_conf(&dirs.upper())?;
            }
            let mut targets = Vec::new();
            for layer in &entry.state.spec.layers {
                targets.extend(
                    rootfs::resolve_layer(layer)?
                        .host_dirs
                        .into_iter()
                        .map(|h| h.target),
                );
            }
            let host_uppers: Vec<(PathBuf, PathBuf)> = targets
                .into_iter()
                .enumerate()
                .map(|(n, target)| (dirs.host_dir(n).0, target))
                .collect();
            assemble(&dirs.upper(), &host_uppers, dest)
        });
        let cleaned = self.destroy(id, &entry.cgroup, None, entry.network);
        captured?;
        cleaned
    }
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

/// Builds the layer at `dest` from the root upper dir and the host-dir upper dirs (each
/// with its target path inside the sandbox), through a staging directory.
fn assemble(root_upper: &Path, host_uppers: &[(PathBuf, PathBuf)], dest: &Path) -> Result<()> {
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
        fs::rename(root_upper, &tree).map_err(Error::io("move", root_upper))?;
        for (upper, target) in host_uppers {
            if upper.is_dir() {
                let at = tree.join(target.strip_prefix("/").unwrap_or(target));
                replace_with(upper, &at)?;
            }
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
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Puts host-dir upper `src` at `dst`, replacing whatever the root upper had there: in
/// the sandbox the host directory's overlay was mounted over that path, so the root
/// upper's content below it was never visible and every write under it went to `src`.
fn replace_with(src: &Path, dst: &Path) -> Result<()> {
    if fs::read_dir(src)
        .map_err(Error::io("read dir", src))?
        .next()
        .is_none()
    {
        // Nothing written there; an empty directory would only shadow nothing.
        return Ok(());
    }
    match fs::symlink_metadata(dst) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(dst).map_err(Error::io("remove", dst))?,
        Ok(_) => fs::remove_file(dst).map_err(Error::io("remove", dst))?,
        Err(_) => {
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(Error::io("create dir", parent))?;
            }
        }
    }
    fs::rename(src, dst).map_err(Error::io("move", src))
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
        )
        .unwrap();
        let tree = dest.join(LAYER_ROOTFS);
        assert_eq!(fs::read_to_string(tree.join("etc/motd")).unwrap(), "hi");
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
        assert!(!root.exists(), "the upper dir was moved, not copied");
    }

    #[test]
    fn an_existing_destination_is_refused_before_anything_moves() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        fs::create_dir_all(&root).unwrap();
        let dest = dir.path().join("layer");
        fs::create_dir_all(&dest).unwrap();
        let err = assemble(&root, &[], &dest).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(root.exists());
    }
}
