//! Entering the assembled root from a namespace sandbox's PID 1.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use rustix::fs::{Mode, OFlags};

use super::assemble::{MOUNT_ATTR_NOSUID, attach, clone_tree};
use super::in_root::{Create, open_in_root};
use super::{err, fd_path};
use crate::runtime::step::StepError;

/// Devices a sandbox gets in `/dev`, bound from the host's (harmless character devices).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The second half for a namespace sandbox, run by its PID 1 inside its own (user-owned)
/// mount, PID and network namespaces, with the assembled root as working directory: `/proc` and `/sys`, then `pivot_root` into the
/// assembled root, then `/tmp`, `/dev` (a small tmpfs with the host's harmless character
/// devices bound in, a private devpts, `/dev/shm`). After the pivot, every path resolves
/// inside the sandbox's tree by construction.
pub(crate) fn enter_root() -> Result<(), StepError> {
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
        .ok_or_else(|| StepError::refused("the sandbox root has no directory name"))?
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
fn mask_virtual_block_devices(root: BorrowedFd<'_>) -> Result<(), StepError> {
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

fn mount_fs(at: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), StepError> {
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
