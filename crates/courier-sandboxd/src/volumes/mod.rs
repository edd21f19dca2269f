//! Volumes (E2B's `/volumes` and volume content APIs): persistent storage owned by an API
//! key, written through the content API and mounted into sandboxes (`volumeMounts`).
//!
//! Layout, under `<data_dir>/volumes/`:
//!
//! ```text
//! golden-<MB>.img      an empty ext4 image (journaled) of each volume size in use
//! <id>/meta.json       id, name, owner (SHA-256 of its API key), token, size (0600)
//! <id>/volume.img      the volume's ext4 file system (sparse)
//! <id>/mnt/            where it is mounted on the host while the server runs
//! ```
//!
//! **Quota.** Each volume is its own loop-mounted ext4 image of
//! [`VolumeLimits::size_mb`], so its size is a hard limit for the content API and for
//! sandboxes writing through a mount alike (`ENOSPC`), as for sandbox disks (see
//! [`crate::runtime::disk`]: this kernel has no project quotas). An API key may own
//! volumes of [`VolumeLimits::per_key_mb`] in total; a create past it is refused.
//!
//! **Ownership.** A volume belongs to the API key that created it (its SHA-256, as the
//! key store keeps keys): other keys neither see nor mount it, and get 404 as for an
//! unknown id. Its content is reached with its own token (`Authorization: Bearer`), as
//! E2B's; the token is stored in `meta.json` (0600, in the 0700 data dir) because E2B
//! returns it again from `GET /volumes/{id}`.
//!
//! **Restart.** Volumes are loaded from their `meta.json` and mounted again. A server
//! that kills its sandboxes at exit unmounts its volumes too; one whose sandboxes outlive
//! it leaves the mounts, and the next start reuses them rather than mounting the image a
//! second time (two ext4 instances on one image would corrupt it, and adopted sandboxes
//! still write through the first).

pub mod content;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use courier_secret::Secret;
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::lock::lock;

/// Default size of a volume, MiB.
pub const DEFAULT_VOLUME_MB: u64 = 1024;
/// Default total size of the volumes of one API key, MiB.
pub const DEFAULT_PER_KEY_MB: u64 = 16 * 1024;

/// How big volumes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeLimits {
    /// Size of each volume, MiB (64..): what it holds, whoever writes it.
    pub size_mb: u64,
    /// Total size of the volumes one API key may own, MiB.
    pub per_key_mb: u64,
}

impl Default for VolumeLimits {
    /// 1 GiB volumes, 16 GiB per key.
    fn default() -> Self {
        Self {
            size_mb: DEFAULT_VOLUME_MB,
            per_key_mb: DEFAULT_PER_KEY_MB,
        }
    }
}

/// What volume operations fail with (mapped to statuses by the API).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A bad name (400).
    #[error("{0}")]
    Invalid(String),
    /// No such volume for this key (404).
    #[error("volume {0} not found")]
    NotFound(String),
    /// A volume of that name exists for this key (400, as E2B's).
    #[error("volume with name '{0}' already exists")]
    NameTaken(String),
    /// Past the key's quota (507).
    #[error(
        "volume quota exceeded: this API key's volumes may hold {per_key_mb} MiB in total \
         ({used_mb} MiB used, a volume is {size_mb} MiB)"
    )]
    Quota {
        /// The key's allowance.
        per_key_mb: u64,
        /// What its volumes hold now.
        used_mb: u64,
        /// The size of a new volume.
        size_mb: u64,
    },
    /// In use by sandboxes (409).
    #[error("volume {id} is mounted in running sandboxes ({sandboxes}); kill them first")]
    InUse {
        /// The volume.
        id: String,
        /// Who mounts it.
        sandboxes: String,
    },
    /// Anything else (500).
    #[error("volume storage: {0}")]
    Storage(String),
}

type Result<T> = std::result::Result<T, VolumeError>;

fn storage(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |e| VolumeError::Storage(format!("{what}: {e}"))
}

/// A volume's record (`meta.json`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMeta {
    /// Its id (32 lowercase hex digits).
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Its name, unique per owner.
    pub name: String,
    /// SHA-256 (hex) of the API key that owns it.
    pub owner: String,
    /// The content API token.
    #[serde(with = "courier_secret::exposed")]
    pub token: Secret,
    /// Its size, MiB.
    pub size_mb: u64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for VolumeMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeMeta")
            .field("volume_id", &self.volume_id)
            .field("name", &self.name)
            .field("size_mb", &self.size_mb)
            .finish_non_exhaustive()
    }
}

/// A loaded volume: its record and its mounted root.
pub struct Volume {
    /// Its record.
    pub meta: VolumeMeta,
    /// The mounted file system's root, a directory descriptor every content operation
    /// resolves beneath.
    root: OwnedFd,
    /// Where it is mounted on the host (the source of sandbox binds).
    mount: PathBuf,
}

impl Volume {
    /// The root descriptor of its file system.
    pub fn root(&self) -> std::os::fd::BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Its host mount point.
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }
}

/// The SHA-256 (hex) of an API key: a volume's owner.
pub fn owner_of(api_key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(api_key.trim().as_bytes()))
}

/// Constant-time comparison (tokens).
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a volume name: E2B's `^[a-zA-Z0-9_-]+$`, at most 250 characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 250
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(VolumeError::Invalid(format!(
            "name {name:?} is invalid: 1 to 250 of a-z, A-Z, 0-9, _ and -"
        )));
    }
    Ok(())
}

/// The server's volumes.
pub struct Volumes {
    dir: PathBuf,
    limits: VolumeLimits,
    volumes: Mutex<BTreeMap<String, Arc<Volume>>>,
    /// Volumes a sandbox create is mounting right now (its record does not name them
    /// yet): not deletable meanwhile. Locked after `volumes`.
    holds: Mutex<BTreeMap<String, usize>>,
    /// Serialises creates and deletes (quota and name checks, then the work).
    change: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Volumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volumes")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Volumes {
    /// Loads (and mounts) the volumes under `dir`. A volume that cannot be loaded is
    /// logged and left on disk, not deleted.
    pub fn open(dir: PathBuf, limits: VolumeLimits) -> crate::error::Result<Self> {
        crate::runtime::disk::validate_size(limits.size_mb).map_err(|_| {
            crate::error::Error::Config(format!(
                "volume size {} MiB: must be {}..={} MiB",
                limits.size_mb,
                crate::runtime::disk::MIN_DISK_MB,
                crate::runtime::disk::MAX_DISK_MB
            ))
        })?;
        fs::create_dir_all(&dir).map_err(crate::error::Error::io("create dir", &dir))?;
        let mut volumes = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(crate::error::Error::io("read dir", &dir))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&name) {
                continue;
            }
            match load(&entry.path()) {
                Ok(volume) => {
                    volumes.insert(name, Arc::new(volume));
                }
                Err(error) => {
                    tracing::warn!(volume = %name, %error, "could not load a volume");
                }
            }
        }
        Ok(Self {
            dir,
            limits,
            volumes: Mutex::new(volumes),
            holds: Mutex::new(BTreeMap::new()),
            change: tokio::sync::Mutex::new(()),
        })
    }

    /// The configured limits.
    pub fn limits(&self) -> VolumeLimits {
        self.limits
    }

    /// Volume `id` if `owner` owns it.
    pub fn get(&self, owner: &str, id: &str) -> Result<Arc<Volume>> {
        lock(&self.volumes)
            .get(id)
            .filter(|v| equal(v.meta.owner.as_bytes(), owner.as_bytes()))
            .cloned()
            .ok_or_else(|| VolumeError::NotFound(id.to_owned()))
    }

    /// Volume `name` of `owner`.
    pub fn by_name(&self, owner: &str, name: &str) -> Result<Arc<Volume>> {
        lock(&self.volumes)
            .values()
            .find(|v| v.meta.owner == owner && v.meta.name == name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound(name.to_owned()))
    }

    /// Keeps volume `id` from being deleted until the returned guard drops (a create
    /// mounting it, until its record names it). Fails if it is gone already.
    pub fn hold(&self, id: &str) -> Result<VolumeHold<'_>> {
        let volumes = lock(&self.volumes);
        if !volumes.contains_key(id) {
            return Err(VolumeError::NotFound(id.to_owned()));
        }
        *lock(&self.holds).entry(id.to_owned()).or_default() += 1;
        Ok(VolumeHold {
            volumes: self,
            id: id.to_owned(),
        })
    }

    /// Volume `id` if `token` is its content token (the content API's authorisation).
    /// Unknown id and wrong token are the same answer, so ids cannot be probed.
    pub fn by_token(&self, id: &str, token: &str) -> Option<Arc<Volume>> {
        lock(&self.volumes)
            .get(id)
            .filter(|v| equal(v.meta.token.expose().as_bytes(), token.trim().as_bytes()))
            .cloned()
    }

    /// The volumes of `owner`, oldest first.
    pub fn list(&self, owner: &str) -> Vec<Arc<Volume>> {
        let mut list: Vec<_> = lock(&self.volumes)
            .values()
            .filter(|v| v.meta.owner == owner)
            .cloned()
            .collect();
        list.sort_by(|a, b| {
            (a.meta.created_at, &a.meta.volume_id).cmp(&(b.meta.created_at, &b.meta.volume_id))
        });
        list
    }

    /// Makes volume `name` for `owner`: an empty file system of the configured size.
    pub async fn create(&self, owner: &str, name: &str) -> Result<Arc<Volume>> {
        check_name(name)?;
        let _change = self.change.lock().await;
        let mine = self.list(owner);
        if mine.iter().any(|v| v.meta.name == name) {
            return Err(VolumeError::NameTaken(name.to_owned()));
        }
        let used_mb: u64 = mine.iter().map(|v| v.meta.size_mb).sum();
        if used_mb + self.limits.size_mb > self.limits.per_key_mb {
            return Err(VolumeError::Quota {
                per_key_mb: self.limits.per_key_mb,
                used_mb,
                size_mb: self.limits.size_mb,
            });
        }
        let meta = VolumeMeta {
            volume_id: crate::state::random_hex(16),
            name: name.to_owned(),
            owner: owner.to_owned(),
            token: Secret::new(format!("vol_{}", crate::state::random_hex(32))),
            size_mb: self.limits.size_mb,
            created_at: Utc::now(),
        };
        let dir = self.dir.clone();
        let volume = tokio::task::spawn_blocking(move || make(&dir, meta))
            .await
            .map_err(|e| VolumeError::Storage(e.to_string()))??;
        let volume = Arc::new(volume);
        lock(&self.volumes).insert(volume.meta.volume_id.clone(), volume.clone());
        Ok(volume)
    }

    /// Unmounts every volume from the host and forgets them (at shutdown, once no sandbox
    /// mounts them: see [`crate::Sandboxd::kill_all`]). Content requests answer 401 from
    /// now on; a running one finishes on its descriptor.
    pub fn unmount_all(&self) {
        let volumes = std::mem::take(&mut *lock(&self.volumes));
        for volume in volumes.values() {
            if let Err(error) =
                rustix::mount::unmount(&volume.mount, rustix::mount::UnmountFlags::DETACH)
            {
                tracing::warn!(%error, mount = %volume.mount.display(), "unmounting a volume");
            }
        }
    }

    /// Deletes volume `id` of `owner` and everything in it, unless `mounted_by` (the
    /// sandboxes mounting it) is not empty.
    pub async fn delete(&self, owner: &str, id: &str, mounted_by: &[String]) -> Result<()> {
        let _change = self.change.lock().await;
        let volume = self.get(owner, id)?;
        if !mounted_by.is_empty() {
            return Err(VolumeError::InUse {
                id: id.to_owned(),
                sandboxes: mounted_by.join(", "),
            });
        }
        {
            let mut volumes = lock(&self.volumes);
            if lock(&self.holds).get(id).is_some_and(|n| *n > 0) {
                return Err(VolumeError::InUse {
                    id: id.to_owned(),
                    sandboxes: "a sandbox being created".to_owned(),
                });
            }
            volumes.remove(id);
        }
        let dir = self.dir.join(id);
        let mount = volume.mount.clone();
        drop(volume);
        tokio::task::spawn_blocking(move || {
            // Lazily: a content request still streaming keeps its descriptor working.
            if let Err(error) = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH)
            {
                tracing::warn!(%error, mount = %mount.display(), "unmounting a deleted volume");
            }
            fs::remove_dir_all(&dir).map_err(storage(format!("remove {}", dir.display())))
        })
        .await
        .map_err(|e| VolumeError::Storage(e.to_string()))?
    }
}

/// See [`Volumes::hold`].
#[derive(Debug)]
pub struct VolumeHold<'a> {
    volumes: &'a Volumes,
    id: String,
}

impl Drop for VolumeHold<'_> {
    fn drop(&mut self) {
        let mut holds = lock(&self.volumes.holds);
        if let Some(n) = holds.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                holds.remove(&self.id);
            }
        }
    }
}

fn write_meta(dir: &Path, meta: &VolumeMeta) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("meta.json");
    let tmp = dir.join("meta.json.tmp");
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| VolumeError::Storage(e.to_string()))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(storage(format!("create {}", tmp.display())))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(storage(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(storage(format!("rename {}", path.display())))
}

/// Makes a volume's directory, image and mount; nothing is left behind on failure.
fn make(volumes_dir: &Path, meta: VolumeMeta) -> Result<Volume> {
    let dir = volumes_dir.join(&meta.volume_id);
    let result = (|| {
        fs::create_dir(&dir).map_err(storage(format!("create {}", dir.display())))?;
        let golden = golden(volumes_dir, meta.size_mb)?;
        let image = dir.join("volume.img");
        crate::runtime::disk::copy_sparse(&golden, &image)
            .map_err(|e| VolumeError::Storage(e.to_string()))?;
        let volume = mount(&dir, meta.clone())?;
        // The root belongs to the sandbox user, as E2B's volumes to theirs; ext4's
        // `lost+found` (root's, 0700) would only be a directory sandboxes cannot use.
        rustix::fs::fchown(
            volume.root(),
            Some(rustix::fs::Uid::from_raw(content::DEFAULT_OWNER)),
            Some(rustix::fs::Gid::from_raw(content::DEFAULT_OWNER)),
        )
        .and_then(|()| rustix::fs::fchmod(volume.root(), Mode::from_raw_mode(0o755)))
        .map_err(|e| VolumeError::Storage(format!("prepare the volume root: {e}")))?;
        if let Err(error) =
            rustix::fs::unlinkat(volume.root(), "lost+found", rustix::fs::AtFlags::REMOVEDIR)
        {
            tracing::debug!(%error, "removing lost+found from a new volume");
        }
        // Written last: a volume without its record is not loaded at the next start.
        write_meta(&dir, &meta)?;
        Ok(volume)
    })();
    if result.is_err() {
        let mnt = dir.join("mnt");
        let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
        if let Err(error) = fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "cleaning up a volume that failed");
        }
    }
    result
}

/// The empty volume image of `mb` MiB under `dir`, made on first use. Unlike a sandbox
/// disk (which ends with its sandbox) a volume outlives host crashes, so its file system
/// has a journal.
fn golden(dir: &Path, mb: u64) -> Result<PathBuf> {
    let path = dir.join(format!("golden-{mb}.img"));
    if path.is_file() {
        return Ok(path);
    }
    // Under a unique name, renamed when complete: nobody copies a half-made image.
    let tmp = dir.join(format!(".golden-{mb}.{}.tmp", crate::state::random_hex(8)));
    let result = (|| {
        let file = fs::File::create(&tmp).map_err(storage(format!("create {}", tmp.display())))?;
        file.set_len(mb * 1024 * 1024)
            .map_err(storage(format!("size {}", tmp.display())))?;
        drop(file);
        let out = std::process::Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
                "-m",
                "0",
                "-L",
                "courier-volume",
            ])
            .arg(&tmp)
            .output()
            .map_err(|e| {
                VolumeError::Storage(format!(
                    "volumes need mkfs.ext4 (Debian: apt-get install e2fsprogs): {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(VolumeError::Storage(format!(
                "mkfs.ext4 {}: {}",
                tmp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        fs::rename(&tmp, &path).map_err(storage(format!("rename {}", tmp.display())))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// Loads the volume in `dir` (its record), mounting it unless it still is.
fn load(dir: &Path) -> Result<Volume> {
    let path = dir.join("meta.json");
    let bytes = fs::read(&path).map_err(storage(format!("read {}", path.display())))?;
    let meta: VolumeMeta = serde_json::from_slice(&bytes)
        .map_err(|e| VolumeError::Storage(format!("{}: {e}", path.display())))?;
    if dir.file_name().and_then(|n| n.to_str()) != Some(meta.volume_id.as_str()) {
        return Err(VolumeError::Storage(format!(
            "{}: the record names another volume",
            path.display()
        )));
    }
    mount(dir, meta)
}

/// Mounts `<dir>/volume.img` at `<dir>/mnt` unless something is mounted there already
/// (the previous run's mount), and opens its root.
fn mount(dir: &Path, meta: VolumeMeta) -> Result<Volume> {
    let mnt = dir.join("mnt");
    fs::create_dir_all(&mnt).map_err(storage(format!("create {}", mnt.display())))?;
    if !is_mount_point(&mnt)? {
        let image = dir.join("volume.img");
        let (tree, _minor) = crate::runtime::disk::mount_detached(&image, false)
            .map_err(|e| VolumeError::Storage(format!("mount {}: {e}", image.display())))?;
        crate::runtime::rootfs::attach_at(tree.as_fd(), &mnt, &image.display().to_string())
            .map_err(|e| VolumeError::Storage(format!("mount {}: {e}", image.display())))?;
    }
    let root = rustix::fs::open(
        &mnt,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| VolumeError::Storage(format!("open {}: {e}", mnt.display())))?;
    Ok(Volume {
        meta,
        root,
        mount: mnt,
    })
}

/// Whether `path` is the root of a mount (another device than its parent's).
fn is_mount_point(path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let own = fs::symlink_metadata(path).map_err(storage(format!("stat {}", path.display())))?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let up = fs::metadata(parent).map_err(storage(format!("stat {}", parent.display())))?;
    Ok(own.dev() != up.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A create mounting a volume holds it: a delete racing the create (before its
    /// record names the volume) is refused instead of unmounting the volume under it.
    #[tokio::test]
    async fn a_held_volume_is_not_deleted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (loop devices, mounts)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let limits = VolumeLimits {
            size_mb: 64,
            per_key_mb: 64,
        };
        let volumes = Volumes::open(dir.path().join("volumes"), limits).unwrap();
        let owner = owner_of("e2b_key");
        let volume = volumes.create(&owner, "held").await.unwrap();
        let id = volume.meta.volume_id.clone();
        drop(volume);
        assert!(matches!(
            volumes.create(&owner, "second").await,
            Err(VolumeError::Quota { .. })
        ));
        let hold = volumes.hold(&id).unwrap();
        assert!(matches!(
            volumes.delete(&owner, &id, &[]).await,
            Err(VolumeError::InUse { .. })
        ));
        drop(hold);
        // Another key cannot delete it, its owner can; then it cannot be held.
        assert!(matches!(
            volumes.delete(&owner_of("e2b_other"), &id, &[]).await,
            Err(VolumeError::NotFound(_))
        ));
        volumes.delete(&owner, &id, &[]).await.unwrap();
        assert!(volumes.hold(&id).is_err());
        assert!(!dir.path().join("volumes").join(&id).exists());
        volumes.unmount_all();
    }
}
