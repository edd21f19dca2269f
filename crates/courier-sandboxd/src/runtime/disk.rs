//! Each sandbox's own disk: a sparse ext4 image holding its writable layer, so the size
//! a sandbox may write is a hard limit (`ENOSPC` when full) and nothing it writes lands on
//! the host's file systems.
//!
//! Why an image per sandbox: the writable layer of an overlay needs a file system with
//! quotas to be capped, and this kernel has neither XFS nor ext4 project quotas (no
//! `CONFIG_XFS_QUOTA`, no `CONFIG_QFMT_V2`). A loop-mounted ext4 image is a quota that
//! works on every Linux with loop devices, costs nothing until written (sparse), and
//! disappears with the sandbox.
//!
//! Layout: `<data>/disks/golden-<MB>.img` is an empty ext4 file system of that size,
//! made once with `mkfs.ext4` (no journal: a sandbox's disk does not outlive a host
//! crash anyway). A sandbox's `disk.img` is a sparse copy of it (a few MB of metadata, ~1
//! ms). The helper attaches it to an auto-clearing loop device and mounts it inside the
//! sandbox's private mount namespace; the image is unmounted and the device freed when the
//! sandbox's last process exits. Inside the file system:
//!
//! ```text
//! upper/  work/            the root overlay's upper and work dirs
//! hostdirs/<n>/upper|work  the overlays over host directories (e.g. /usr)
//! ```
//!
//! **Ready disks.** Copying the image, attaching a loop device (`LOOP_CONFIGURE` freezes
//! the device's queue: ~2 ms here, an RCU grace period) and mounting ext4 cost ~4 ms,
//! nearly half of a create. `DiskPool` does that work ahead of time, off the create
//! path: it keeps a few images of the sizes in use copied, attached and mounted as
//! *detached* mounts (`fsmount`: a mount in no namespace, held by a descriptor). A create
//! takes one, renames its image into the sandbox's directory and hands the mount's
//! descriptor to the helper, which attaches it in the sandbox's private mount namespace
//! (`move_mount`). A ready disk is a fresh copy of the golden image that no sandbox has
//! seen; one never taken goes when its descriptor closes (the pool dropped, the server
//! gone): the kernel unmounts it and the auto-clearing loop device detaches.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

use nix::unistd::{Whence, lseek};

use super::step::StepError;
use crate::error::{Error, Result};

/// Smallest disk accepted, MiB (ext4 metadata plus a little room).
pub const MIN_DISK_MB: u64 = 64;
/// Largest disk accepted, MiB (16 TiB: ext4's limit with 4 KiB blocks).
pub const MAX_DISK_MB: u64 = 16 * 1024 * 1024;

/// Checks a requested disk size.
pub(crate) fn validate_size(mb: u64) -> Result<()> {
    if !(MIN_DISK_MB..=MAX_DISK_MB).contains(&mb) {
        return Err(Error::InvalidSpec {
            field: "disk_mb",
            reason: format!("must be {MIN_DISK_MB}..={MAX_DISK_MB} (MiB), got {mb}"),
        });
    }
    Ok(())
}

/// The golden image of `mb` MiB under `dir`, made on first use.
pub(crate) fn golden(dir: &Path, mb: u64) -> Result<PathBuf> {
    validate_size(mb)?;
    let path = dir.join(format!("golden-{mb}.img"));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(dir).map_err(Error::io("create dir", dir))?;
    // Made under a unique name and renamed: concurrent creates each make one, the last
    // rename wins, and nobody ever copies a half-made image.
    let tmp = dir.join(format!(
        ".golden-{mb}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        file.set_len(mb * 1024 * 1024)
            .map_err(Error::io("size", &tmp))?;
        drop(file);
        let out = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1,nodiscard,root_owner=0:0",
                "-m",
                "0",
                "-L",
                "courier-disk",
            ])
            .arg(&tmp)
            .output()
            .map_err(|e| {
                Error::Unsupported(format!(
                    "disk_mb: sandbox disks need mkfs.ext4 (Debian: apt-get install e2fsprogs): {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(Error::Sys {
                op: format!("mkfs.ext4 {}", tmp.display()),
                source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            });
        }
        fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))
    })();
    if result.is_err()
        && let Err(error) = fs::remove_file(&tmp)
    {
        tracing::debug!(%error, path = %tmp.display(), "removing a half-made golden image");
    }
    result.map(|()| path)
}

/// Makes `dest` a sparse copy of `golden`: only the ranges holding data are copied.
pub(crate) fn copy_sparse(golden: &Path, dest: &Path) -> Result<()> {
    let src = File::open(golden).map_err(Error::io("open", golden))?;
    let len = src.metadata().map_err(Error::io("stat", golden))?.len();
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(Error::io("create", dest))?;
    dst.set_len(len).map_err(Error::io("size", dest))?;
    let mut pos: i64 = 0;
    let len = len as i64;
    while pos < len {
        let start = match lseek(src.as_fd(), pos, Whence::SeekData) {
            Ok(start) => start,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => {
                return Err(Error::sys(format!("seek data in {}", golden.display()))(
                    e.into(),
                ));
            }
        };
        let end = lseek(src.as_fd(), start, Whence::SeekHole)
            .map_err(|e| Error::sys(format!("seek hole in {}", golden.display()))(e.into()))?;
        let mut off_in = start;
        let mut off_out = start;
        while off_in < end {
            let want = (end - off_in) as usize;
            let n = nix::fcntl::copy_file_range(
                src.as_fd(),
                Some(&mut off_in),
                dst.as_fd(),
                Some(&mut off_out),
                want,
            )
            .map_err(|e| Error::sys(format!("copy {}", golden.display()))(e.into()))?;
            if n == 0 {
                break;
            }
        }
        pos = end;
    }
    Ok(())
}

/// Bytes the image occupies on the host (its allocated blocks): what the sandbox wrote,
/// plus the file system's own metadata.
pub(crate) fn allocated_bytes(image: &Path) -> u64 {
    fs::metadata(image).map_or(0, |m| m.blocks() * 512)
}

/// Attaches `image` to an auto-clearing loop device and mounts its ext4 file system
/// *detached* (`fsmount`: in no mount namespace, held by the returned descriptor;
/// `nosuid`, `nodev`, `noatime`, `errors=remount-ro`). The device detaches once the mount
/// goes. Also returns the device's minor number (for I/O limits).
pub(crate) fn mount_detached(image: &Path, read_only: bool) -> Result<(OwnedFd, u32), StepError> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_flag,
        fsconfig_set_string, fsmount, fsopen,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)
        .map_err(StepError::os(format!(
            "open disk image {}",
            image.display()
        )))?;
    let (device, minor) = super::sys::loop_attach(&file, read_only).map_err(StepError::os(
        format!("attach {} to a loop device", image.display()),
    ))?;
    let failed = |what: &str| {
        let what = format!("{what} (/dev/loop{minor}, {})", image.display());
        StepError::os::<rustix::io::Errno>(what)
    };
    let fs = fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC).map_err(failed("fsopen ext4"))?;
    fsconfig_set_string(&fs, "source", format!("/dev/loop{minor}"))
        .map_err(failed("fsconfig source"))?;
    fsconfig_set_string(&fs, "errors", "remount-ro").map_err(failed("fsconfig errors"))?;
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOATIME;
    if read_only {
        fsconfig_set_flag(&fs, "ro").map_err(failed("fsconfig ro"))?;
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    fsconfig_create(&fs).map_err(failed("mount ext4"))?;
    let mount = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(failed("fsmount"))?;
    // The mount holds the device open now; our descriptor of it may close.
    drop(device);
    Ok((mount, minor))
}

/// Mounts the ext4 file system on `device` (already mounted read-write elsewhere: the
/// superblock is shared) detached, with a read-only, `nosuid`, `nodev`, `noexec` mount.
/// The file system must be created read-write (the kernel refuses a second mount of a
/// superblock with a different read-only flag); the mount itself is read-only.
pub(crate) fn mount_existing_read_only(device: &Path) -> Result<OwnedFd, StepError> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_string, fsmount,
        fsopen,
    };
    let failed = |what: &str| {
        let what = format!("{what} ({})", device.display());
        StepError::os::<rustix::io::Errno>(what)
    };
    let fs = fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC).map_err(failed("fsopen ext4"))?;
    fsconfig_set_string(&fs, "source", device).map_err(failed("fsconfig source"))?;
    fsconfig_create(&fs).map_err(failed("mount ext4"))?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(failed("fsmount"))
}

/// A disk prepared ahead of a create: its image (a fresh copy of the golden image),
/// attached to a loop device and mounted, detached, with the mount held by `mount`.
#[derive(Debug)]
pub(crate) struct ReadyDisk {
    /// The image, in the pool's directory until a create renames it.
    pub image: PathBuf,
    /// The detached ext4 mount (close-on-exec).
    pub mount: OwnedFd,
    /// The loop device's minor number (for I/O limits).
    pub minor: u32,
}

/// Disks prepared ahead of creates, per size (see the module docs).
#[derive(Debug)]
pub(crate) struct DiskPool {
    /// `<data>/disks`: the golden images, and `ready/` for the pool's images.
    dir: PathBuf,
    /// How many ready disks of each size in use to keep; 0 turns the pool off.
    depth: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    ready: HashMap<u64, Vec<ReadyDisk>>,
    /// Sizes a filler thread is working on.
    filling: HashSet<u64>,
}

impl DiskPool {
    /// A pool under `dir` (`<data>/disks`) keeping `depth` ready disks per size. Images
    /// left in `ready/` by an earlier process (their mounts went with it) are removed.
    pub(crate) fn new(dir: PathBuf, depth: usize) -> Arc<Self> {
        let ready = dir.join("ready");
        if let Err(error) = fs::remove_dir_all(&ready)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %ready.display(), "removing an earlier process's ready disks");
        }
        Arc::new(Self {
            dir,
            depth,
            state: Mutex::new(PoolState::default()),
        })
    }

    /// A ready disk of `mb` MiB if one is waiting; either way, the pool refills that size
    /// in the background.
    pub(crate) fn take(self: &Arc<Self>, mb: u64) -> Option<ReadyDisk> {
        let disk = self
            .state
            .lock()
            .expect("disk pool lock")
            .ready
            .get_mut(&mb)
            .and_then(Vec::pop);
        self.refill(mb);
        disk
    }

    /// Starts filling the pool for `mb` MiB (before the first create of that size).
    pub(crate) fn prewarm(self: &Arc<Self>, mb: u64) {
        self.refill(mb);
    }

    fn refill(self: &Arc<Self>, mb: u64) {
        if self.depth == 0 || validate_size(mb).is_err() {
            return;
        }
        if !self
            .state
            .lock()
            .expect("disk pool lock")
            .filling
            .insert(mb)
        {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("courier-disk-pool".into())
            .spawn(move || fill(&pool, mb));
        if spawned.is_err() {
            self.state
                .lock()
                .expect("disk pool lock")
                .filling
                .remove(&mb);
        }
    }

    /// Ready disks waiting, all sizes (for tests and diagnostics).
    pub(crate) fn ready_count(&self) -> usize {
        let state = crate::lock::lock(&self.state);
        state.ready.values().map(Vec::len).sum()
    }
}

/// The filler: prepares disks of `mb` MiB until the pool holds its depth (or the pool is
/// gone). A failure stops it quietly: creates then prepare their own disk, and report
/// whatever is wrong themselves.
fn fill(pool: &Weak<DiskPool>, mb: u64) {
    // A refill follows a create: let that create finish before competing for the CPUs.
    std::thread::sleep(super::BACKGROUND_START_DELAY);
    loop {
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let wanted = {
            let mut state = crate::lock::lock(&pool.state);
            let have = state.ready.get(&mb).map_or(0, Vec::len);
            if have >= pool.depth {
                state.filling.remove(&mb);
                return;
            }
            true
        };
        let prepared = wanted.then(|| prepare(&pool.dir, mb));
        let mut state = crate::lock::lock(&pool.state);
        match prepared {
            Some(Ok(disk)) => state.ready.entry(mb).or_default().push(disk),
            Some(Err(error)) => {
                tracing::debug!(%error, mb, "preparing a ready disk failed");
                state.filling.remove(&mb);
                return;
            }
            None => {}
        }
    }
}

/// Copies the golden image of `mb` MiB into `<dir>/ready/`, attaches it and mounts it,
/// detached.
fn prepare(dir: &Path, mb: u64) -> Result<ReadyDisk> {
    let golden = golden(dir, mb)?;
    let ready = dir.join("ready");
    fs::create_dir_all(&ready).map_err(Error::io("create dir", &ready))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let image = ready.join(format!("{mb}-{}-{n}.img", std::process::id()));
    copy_sparse(&golden, &image)?;
    match mount_detached(&image, false) {
        Ok((mount, minor)) => Ok(ReadyDisk {
            image,
            mount,
            minor,
        }),
        Err(message) => {
            if let Err(error) = fs::remove_file(&image) {
                tracing::debug!(%error, image = %image.display(), "removing a ready disk that failed");
            }
            Err(Error::sys("prepare a ready disk")(std::io::Error::other(
                message,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_the_range_name_the_field() {
        assert!(validate_size(4096).is_ok());
        let err = validate_size(1).unwrap_err().to_string();
        assert!(err.contains("disk_mb"), "{err}");
        assert!(validate_size(MAX_DISK_MB + 1).is_err());
    }

    #[test]
    fn a_sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"superblock", 1024).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        let a = fs::read(&src).unwrap();
        let b = fs::read(&dst).unwrap();
        assert_eq!(a, b);
        // Holes stay holes: far less than 64 MiB allocated.
        assert!(allocated_bytes(&dst) < 1 << 20, "{}", allocated_bytes(&dst));
        // Never overwrites.
        assert!(copy_sparse(&src, &dst).is_err());
    }
}
