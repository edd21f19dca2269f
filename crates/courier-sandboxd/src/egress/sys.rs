//! Every system call of the egress supervisor that needs `unsafe`, each with its
//! justification: preparing slirp4netns between fork and exec (a private mount
//! namespace, the seccomp filter), the seccomp
//! notification ioctls, `pidfd_open`/`pidfd_getfd`, and two socket calls nix has no
//! wrapper for. Everything else (memory reads, socket calls) uses nix's safe wrappers.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;

/// In the child of `cmd`, right before `exec`: installs `filter` with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, writes `[pid, listener fd]` (two native `i32`s) to
/// `report`, and waits for one byte on `go` before continuing to `exec` (1: go on,
/// anything else: fail the spawn). The parent takes the listener with `pidfd_getfd` in
/// between (see [`pidfd_getfd`]); the child closes its own copy, so the program that runs
/// never holds its listener (it could answer its own notifications with it).
///
/// Why not send the listener over a socket (`SCM_RIGHTS`)? That `sendmsg` would itself
/// be trapped by the filter just installed, with no supervisor yet to answer it; exempting
/// it in the filter (by descriptor number and flags) would leave a hole an exploited
/// slirp4netns could reuse. Fetching the descriptor from the parent needs no hole.
///
/// `go_write` is the number of the parent's end of the `go` pipe, which the parent keeps
/// open until the spawn returns: the child closes its inherited copy first, so that a
/// parent that goes away makes the child's read end with EOF (and the spawn fail)
/// instead of hanging.
pub(crate) fn install_filter_before_exec(
    cmd: &mut Command,
    filter: Vec<libc::sock_filter>,
    report: OwnedFd,
    go: OwnedFd,
    go_write: RawFd,
) {
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls
    // (close, seccomp, getpid, write, read) on descriptors and a BPF program captured by
    // value and prepared by the parent; it neither allocates nor takes locks (the errors
    // it builds from errno numbers do not allocate). The filter Vec is only borrowed.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(go_write);
            let prog = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr().cast_mut(),
            };
            let listener = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            if listener < 0 {
                return Err(io::Error::last_os_error());
            }
            let message = [libc::getpid(), listener as i32];
            let size = std::mem::size_of_val(&message);
            if libc::write(report.as_raw_fd(), message.as_ptr().cast(), size) != size as isize {
                return Err(io::Error::last_os_error());
            }
            let mut byte = 0u8;
            loop {
                match libc::read(go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) {
                    1 if byte == 1 => break,
                    1 | 0 => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
                    _ if *libc::__errno_location() == libc::EINTR => continue,
                    _ => return Err(io::Error::last_os_error()),
                }
            }
            libc::close(listener as RawFd);
            Ok(())
        });
    }
}

/// In the child of `cmd`, before `exec`: a new mount namespace in which every mount is
/// private.
///
/// slirp4netns's `--enable-sandbox` unshares a mount namespace, makes only `/` private
/// (not recursively), pivots into a tmpfs and detaches the old root: every mount whose
/// parent is a shared mount (`/run/netns/*` under iproute2's shared `/run/netns`, and on
/// hosts where systemd made everything shared, much more) is then unmounted in the
/// host's namespace too, through propagation. Started from a namespace where nothing
/// propagates, its unmounts stay its own.
pub(crate) fn private_mounts_before_exec(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls
    // (unshare, mount) with constant arguments and static C strings; it neither
    // allocates nor takes locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A descriptor for process `pid` that stays valid (and never names another process) for
/// as long as it is open.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned to us and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A duplicate, in this process, of descriptor `fd` of the process behind `pidfd` (same
/// open file description: for a socket, the same socket). Close-on-exec.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two descriptor numbers and flags; it returns a new
    // descriptor or -1 and touches no memory of ours.
    let new = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor returned to us and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new as RawFd) })
}

/// Sends `signal` to the process behind `pidfd` (never to a process that reused its PID).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor, a signal number, a NULL siginfo
    // (meaning "as kill() would") and flags; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One stopped system call of a filtered process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notification {
    /// The notification's cookie (answers and validity checks name it).
    pub id: u64,
    /// The calling thread's PID (in our PID namespace).
    pub pid: u32,
    /// The system call number.
    pub nr: i32,
    /// Its six arguments, raw.
    pub args: [u64; 6],
}

/// Waits for the next notification on `listener` (blocks: poll first).
pub(crate) fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is a plain C struct for which all-zero bytes are valid; the
    // kernel requires it zeroed before SECCOMP_IOCTL_NOTIF_RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into `req`, which is valid, writable and
    // outlives the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req as *mut libc::seccomp_notif,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: req.id,
        pid: req.pid,
        nr: req.data.nr,
        args: req.data.args,
    })
}

/// Whether notification `id` is still pending: its process has not been killed or
/// interrupted since. Checked after reading the process's memory and taking its
/// descriptors, so that what was read belongs to the process that made the call (a PID
/// cannot be reused while its process waits on us).
pub(crate) fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64 from `&id`, valid for the duration of the call.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// Answers notification `id`: the call returns `val` when `errno` is 0, else fails with
/// `errno`. The supervisor never lets a trapped call continue in the kernel: it performs
/// the call itself and reports the result.
pub(crate) fn notif_respond(
    listener: BorrowedFd<'_>,
    id: u64,
    val: i64,
    errno: i32,
) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error: if errno == 0 { 0 } else { -errno },
        flags: 0,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp from `&resp`, valid for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `connect(fd, {AF_UNSPEC})`: dissolves a datagram socket's association (nix has no
/// address type for it).
pub(crate) fn connect_unspec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sockaddr is a plain C struct for which all-zero bytes are valid (AF_UNSPEC).
    let addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    // SAFETY: connect reads `size_of::<sockaddr>()` bytes from `&addr`, valid for the call.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(fd, SOL_SOCKET, SO_PROTOCOL)` (nix has no wrapper for it).
pub(crate) fn socket_protocol(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value` and updates `len`; both
    // are valid and writable for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
