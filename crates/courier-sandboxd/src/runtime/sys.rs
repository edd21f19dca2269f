//! Every system call of this crate that needs `unsafe`, each with its justification.
//!
//! Everything else uses nix's or rustix's safe wrappers. The calls here are of three
//! kinds: `fork` in the single-threaded sandbox helper; closures that run between `fork`
//! and `exec` of a `std::process::Command` (`pre_exec`), which must only make
//! async-signal-safe calls (no allocation, no locks, only raw syscalls on values prepared
//! by the parent); and system calls no safe wrapper offers (`mount_setattr`, `seccomp`,
//! `keyctl`, the loop-device ioctls).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;
use nix::unistd::ForkResult;

/// Capabilities kept in the bounding set of a sandbox's processes (inside its own user
/// namespace, so each applies only to the sandbox's own files and processes): what
/// `sudo`, package managers and `npm install -g` as root need, nothing more. Dropped
/// compared to Docker's default set: `CAP_NET_RAW` (raw sockets), `CAP_SETFCAP` (file
/// capabilities), `CAP_SETPCAP`, `CAP_SYS_CHROOT`, `CAP_MKNOD`, `CAP_AUDIT_WRITE`.
/// Notably absent as in Docker: `CAP_SYS_ADMIN` (mount, setns, ...), `CAP_SYS_MODULE`,
/// `CAP_SYS_RAWIO`, `CAP_SYS_PTRACE`, `CAP_NET_ADMIN`, `CAP_DAC_READ_SEARCH`.
pub(crate) const KEPT_CAPS: [u32; 8] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    10, // CAP_NET_BIND_SERVICE
];

/// A compiled seccomp program (classic BPF), ready to install.
pub(crate) type BpfProgram = Vec<libc::sock_filter>;

/// Kills `child` (SIGKILL) and reaps it. Failures are logged, not returned: the kill
/// fails only for a child already reaped, and a failed wait leaves the caller nothing to
/// act on (the child is in the sandbox's cgroup, whose kill ends it anyway).
pub(crate) fn kill_and_reap(child: &mut std::process::Child, what: &str) {
    if let Err(error) = child.kill() {
        tracing::debug!(%error, what, pid = child.id(), "killing a child");
    }
    if let Err(error) = child.wait() {
        tracing::warn!(%error, what, pid = child.id(), "reaping a child");
    }
}

/// Forks the current process.
///
/// Only for the sandbox helper, which is single-threaded by contract:
/// [`super::init::main_if_requested`] must run before the program starts any thread.
pub(crate) fn fork_helper() -> nix::Result<ForkResult> {
    // SAFETY: the helper process is single-threaded (documented contract of
    // `main_if_requested`, which is the only caller chain), so the child is a complete copy
    // with no lock held by a vanished thread and may allocate freely.
    unsafe { nix::unistd::fork() }
}

/// Drops every capability not in [`KEPT_CAPS`] from the bounding set and clears the
/// ambient set, so that no later `exec` (even of a setuid-root binary) can gain them.
/// Async-signal-safe.
pub(crate) fn drop_capabilities() -> io::Result<()> {
    for cap in 0..64u32 {
        if KEPT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP) takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // EINVAL: the kernel does not know this capability number; we are past the last.
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(err);
        }
    }
    // SAFETY: integer-only prctl, as above.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    clear_inheritable()
}

/// Empties the inheritable capability set (keeping permitted and effective), so nothing
/// passes to a program through file inheritable bits. Async-signal-safe (raw capget and
/// capset, no allocation).
fn clear_inheritable() -> io::Result<()> {
    let mut sets = rustix::thread::capabilities(None)?;
    sets.inheritable = rustix::thread::CapabilitySet::empty();
    rustix::thread::set_capabilities(None, sets)?;
    Ok(())
}

/// Installs a seccomp filter on the calling thread *without* `no_new_privs`: the sandbox's
/// own `sudo` (a setuid binary inside its user namespace) must keep working. The kernel
/// allows that to a caller with `CAP_SYS_ADMIN` in its user namespace, which the helper
/// has (it is root of the sandbox's namespace at that point). Async-signal-safe.
pub(crate) fn install_seccomp(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel copies the program (`prog.len` instructions at `prog.filter`,
    // both valid for the call) and keeps no pointer to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the calling process a new, empty, anonymous session keyring, so nothing of the
/// server's (host root's) session keyring is reachable from the sandbox.
/// Async-signal-safe.
pub(crate) fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) takes an integer and a null name pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, …)` on a detached mount tree from
/// `open_tree`: sets `attr_set`, clears `attr_clr`, and with `idmap` maps the tree's ids
/// through that user namespace (an *idmapped mount*: files owned by host root appear
/// owned by the namespace's root).
pub(crate) fn mount_setattr(
    tree: BorrowedFd<'_>,
    attr_set: u64,
    attr_clr: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let mut attr = MountAttr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd: 0,
    };
    if let Some(ns) = idmap {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` is a valid
    // `struct mount_attr` whose size we pass; the kernel only reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches `image` to a free loop device (auto-clearing: it detaches when its last user
/// unmounts) and returns the open device and its minor number.
pub(crate) fn loop_attach(image: &File, read_only: bool) -> io::Result<(File, u32)> {
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
    const LO_FLAGS_READ_ONLY: u32 = 1;
    const LO_FLAGS_AUTOCLEAR: u32 = 4;
    #[repr(C)]
    struct LoopInfo64 {
        device: u64,
        inode: u64,
        rdevice: u64,
        offset: u64,
        sizelimit: u64,
        number: u32,
        encrypt_type: u32,
        encrypt_key_size: u32,
        flags: u32,
        file_name: [u8; 64],
        crypt_name: [u8; 64],
        encrypt_key: [u8; 32],
        init: [u64; 2],
    }
    #[repr(C)]
    struct LoopConfig {
        fd: u32,
        block_size: u32,
        info: LoopInfo64,
        reserved: [u64; 8],
    }
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Two creates may pick the same free device; the loser's LOOP_CONFIGURE fails with
    // EBUSY and it asks again.
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let minor = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if minor < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = format!("/dev/loop{minor}");
        let device = match std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
        {
            Ok(device) => device,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: LoopConfig is a plain C struct for which all-zero bytes are valid.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` that lives across the call.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok((device, minor as u32));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
    }
    Err(io::Error::other("no free loop device after 64 attempts"))
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes integers and returns a new descriptor we own right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a plain C struct/union for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface name from and writes the flags into `req`,
    // a valid, writable ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union was just filled by SIOCGIFFLAGS, so `ifru_flags` is initialised.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, valid for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes each `(fd, target)` appear as descriptor `target` (without close-on-exec) in the
/// spawned child. Sources are first moved above every target, so one move never clobbers
/// another source.
pub(crate) fn pass_fds(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    // SAFETY: the closure only calls fcntl/dup2/close on descriptor numbers captured by
    // value (async-signal-safe, no allocation: the Vec is only iterated). The OwnedFds are
    // moved into the closure, so they stay open until the Command is dropped, i.e. after
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [-1 as RawFd; 8];
            for (slot, (fd, _)) in high.iter_mut().zip(&fds) {
                let copy = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000);
                if copy < 0 {
                    return Err(io::Error::last_os_error());
                }
                *slot = copy;
            }
            for (copy, (_, target)) in high.iter().zip(&fds) {
                if libc::dup2(*copy, *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(*copy);
            }
            Ok(())
        });
    }
}

/// Closes every descriptor from `first` up, at the start of a process that owns none of
/// them (std opens none before `main`): what a parent left open without meaning to.
pub(crate) fn close_unowned_from(first: RawFd) {
    // SAFETY: nothing in this process owns these descriptors yet, so no OwnedFd or File
    // is invalidated; close_range only closes.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0);
    }
}

/// Makes `fd` appear as descriptor `target` (without close-on-exec) in the spawned child.
pub(crate) fn pass_fd_as(cmd: &mut Command, fd: OwnedFd, target: RawFd) {
    pass_fds(cmd, vec![(fd, target)]);
}

/// What a command entering a running sandbox needs, all prepared by the parent.
pub(crate) struct Entry {
    /// Pre-opened `cgroup.procs` files of the sandbox.
    pub cgroup_procs: Vec<OwnedFd>,
    /// The sandbox's user namespace (joined first), when it has one.
    pub userns: Option<OwnedFd>,
    /// The other namespaces, the mount namespace last.
    pub namespaces: Vec<OwnedFd>,
    /// Working directory inside the sandbox.
    pub cwd: Option<std::ffi::CString>,
    /// `(uid, gid)` inside the sandbox; `None` = root.
    pub user: Option<(u32, u32)>,
    /// The sandbox's syscall filter.
    pub seccomp: BpfProgram,
    /// `RLIMIT_NOFILE` (soft, hard) to set, when the runtime raised its own.
    pub nofile: Option<(u64, u64)>,
}

/// Makes the spawned child enter a running sandbox: join its cgroups (by writing `0` to
/// the pre-opened `cgroup.procs` files), join its user namespace, `setns` into each other
/// namespace (the mount namespace last, which also moves root and cwd to the sandbox's
/// root), drop capabilities like the sandbox's own processes, then fork once more so the
/// program runs *inside* the sandbox's PID namespace (setns of a PID namespace only
/// applies to children). The intermediate process waits and exits with the program's
/// status, so the caller's `Child` behaves as usual; the program gets `SIGKILL` if the
/// intermediate dies. The program then becomes the sandbox's root, takes a fresh session
/// keyring, gets the sandbox's syscall filter, changes to `cwd` and drops to `user` (uid,
/// gid, no supplementary groups) when given.
pub(crate) fn enter_sandbox(cmd: &mut Command, entry: Entry) {
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls (write,
    // setns, setrlimit, prctl, capget/capset, fork, waitpid, signal, kill, _exit, chdir, setgroups,
    // setresgid, setresuid, keyctl, seccomp) on descriptors, constants, a C string and a
    // BPF program captured by value; it neither allocates nor takes locks. The Vecs are
    // only iterated, the CString only borrowed.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &entry.cgroup_procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(ns) = &entry.userns
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for fd in &entry.namespaces {
                if libc::setns(fd.as_raw_fd(), 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some((soft, hard)) = entry.nofile {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            drop_capabilities()?;
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    if libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    // Root of the sandbox first (in its user namespace: an unprivileged
                    // host id), so the keyring and the filter belong to it.
                    if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    join_new_session_keyring()?;
                    install_seccomp(&entry.seccomp)?;
                    if let Some(dir) = &entry.cwd
                        && libc::chdir(dir.as_ptr()) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    if let Some((uid, gid)) = entry.user
                        && (libc::setgroups(0, std::ptr::null()) != 0
                            || libc::setresgid(gid, gid, gid) != 0
                            || libc::setresuid(uid, uid, uid) != 0)
                    {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                }
                child => {
                    // Drop every descriptor, notably std's exec-status pipe: otherwise
                    // `spawn` would wait for this process to exit, not for the exec.
                    libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0);
                    let mut status = 0;
                    loop {
                        let rc = libc::waitpid(child, &mut status, 0);
                        if rc == child {
                            break;
                        }
                        if rc < 0 && *libc::__errno_location() != libc::EINTR {
                            libc::_exit(127);
                        }
                    }
                    if libc::WIFSIGNALED(status) {
                        let sig = libc::WTERMSIG(status);
                        libc::signal(sig, libc::SIG_DFL);
                        libc::kill(libc::getpid(), sig);
                        libc::_exit(128 + sig);
                    }
                    libc::_exit(libc::WEXITSTATUS(status));
                }
            }
        });
    }
}

/// Installs `program` in the spawned child right before `exec` (after every other
/// `pre_exec` step registered earlier). The child must still have `CAP_SYS_ADMIN` (it
/// is host root when this is used: for `runsc`, which needs no namespace of ours).
pub(crate) fn seccomp_before_exec(cmd: &mut Command, program: BpfProgram) {
    // SAFETY: the closure only calls `install_seccomp` (prctl-free seccomp syscall on a
    // program captured by value, no allocation).
    unsafe {
        cmd.pre_exec(move || install_seccomp(&program));
    }
}

/// Takes ownership of descriptor `fd` inherited from the runtime, if it is open.
pub(crate) fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only queries whether the descriptor number is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the runtime installed this descriptor for the helper (`pass_fds`) and no
    // other code in the helper process refers to it, so taking ownership is sound; each
    // number is taken once, at the start of `main_if_requested`.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of a descriptor that arrived with `SCM_RIGHTS`.
pub(crate) fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed this descriptor in this process when the message was
    // received, and nothing else has its number: ours alone to own and close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `dup2(fd, target)`: a copy of `fd` at `target`, without close-on-exec, replacing
/// whatever `target` was. Only for descriptor numbers the helper reserves for its init.
pub(crate) fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on integers; `target` is a number the helper reserved (no OwnedFd of
    // ours refers to it), so replacing it closes nothing another owner still uses.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
