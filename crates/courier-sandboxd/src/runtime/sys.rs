//! Every system call of this crate that needs `unsafe`, each with its justification.
//!
//! Everything else uses nix's safe wrappers. The calls here are of two kinds:
//! `fork` in the single-threaded sandbox helper, and closures that run between `fork` and
//! `exec` of a `std::process::Command` (`pre_exec`), which must only make
//! async-signal-safe calls: no allocation, no locks, only raw syscalls on values prepared
//! by the parent.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;
use nix::unistd::ForkResult;

/// Capabilities kept in the bounding set of sandbox processes: Docker's default set minus
/// `CAP_MKNOD` (there is no device cgroup here to make mknod harmless). Notably absent:
/// `CAP_SYS_ADMIN` (mount, setns, ...), `CAP_SYS_MODULE`, `CAP_SYS_RAWIO`,
/// `CAP_SYS_PTRACE`, `CAP_NET_ADMIN`, `CAP_DAC_READ_SEARCH`, `CAP_SYS_TIME`, `CAP_SYS_BOOT`.
const KEPT_CAPS: [libc::c_int; 12] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    31, // CAP_SETFCAP
];

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
/// ambient set, so that the next `exec` (even of a setuid-root binary) cannot gain them.
/// Async-signal-safe.
pub(crate) fn drop_capabilities() -> io::Result<()> {
    for cap in 0..64 {
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
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes integers and returns a new descriptor we own right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
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

/// Makes `fd` appear as descriptor `target` (without close-on-exec) in the spawned child.
pub(crate) fn pass_fd_as(cmd: &mut Command, fd: OwnedFd, target: RawFd) {
    // SAFETY: the closure only calls dup2/fcntl on descriptor numbers captured by value
    // (async-signal-safe, no allocation). `fd` is moved into the closure, so it stays open
    // until the Command is dropped, i.e. after the fork.
    unsafe {
        cmd.pre_exec(move || {
            let raw = fd.as_raw_fd();
            if raw == target {
                // dup2 onto itself keeps FD_CLOEXEC; clear it explicitly.
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the spawned child enter a running sandbox: join its cgroups (by writing `0` to
/// the pre-opened `cgroup.procs` files), `setns` into each namespace (pre-opened
/// `/proc/<pid>/ns/*`, the mount namespace last, which also moves root and cwd to the
/// sandbox's root), drop capabilities like the sandbox's own processes, then fork once
/// more so the program runs *inside* the sandbox's PID namespace (setns of a PID namespace
/// only applies to children). The intermediate process waits and exits with the program's
/// status, so the caller's `Child` behaves as usual; the program gets `SIGKILL` if the
/// intermediate dies. Finally the program changes to `cwd` and drops to `user` (uid, gid,
/// no supplementary groups) when given.
pub(crate) fn enter_sandbox(
    cmd: &mut Command,
    cgroup_procs: Vec<OwnedFd>,
    namespaces: Vec<OwnedFd>,
    cwd: Option<std::ffi::CString>,
    user: Option<(u32, u32)>,
) {
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls (write,
    // setns, prctl, fork, waitpid, signal, kill, _exit, chdir, setgroups, setgid, setuid)
    // on descriptors, constants and a C string captured by value; it neither allocates nor
    // takes locks. The Vecs are only iterated, the CString only borrowed.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &cgroup_procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for fd in &namespaces {
                if libc::setns(fd.as_raw_fd(), 0) != 0 {
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
                    if let Some(dir) = &cwd
                        && libc::chdir(dir.as_ptr()) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    if let Some((uid, gid)) = user
                        && (libc::setgroups(0, std::ptr::null()) != 0
                            || libc::setgid(gid) != 0
                            || libc::setuid(uid) != 0)
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

/// Takes ownership of descriptor `fd` inherited from the runtime, if it is open.
pub(crate) fn take_status_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only queries whether the descriptor number is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the runtime installed this descriptor for the helper (pass_fd_as) and no
    // other code in the helper process refers to it, so taking ownership is sound; it is
    // called once, at the start of `main_if_requested`.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
