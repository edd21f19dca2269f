//! Serving on a socket the control plane handed over.
//!
//! The control plane (courier-sandboxd) creates envd's Unix stream socket outside anything
//! the sandbox can write, binds it, and passes the descriptor to envd, which calls
//! `listen()` itself. Why envd and not the control plane: `SO_PEERCRED` on a connection
//! reports the process that called `listen()`, so the control plane can check it talks to
//! envd's process and not to something the sandbox put in its place. An already-listening
//! socket is accepted too (`listen()` again only updates the backlog).

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use rustix::{
    io::{FdFlags, fcntl_getfd, fcntl_setfd},
    net::{AddressFamily, SocketType, listen, sockopt},
};
use tokio::net::UnixListener;

/// Pending connections the kernel queues before envd accepts them.
const BACKLOG: i32 = 1024;

/// Turns an inherited, bound Unix stream socket into a listener: checks what it is, marks
/// it close-on-exec (no process envd starts may inherit it), listens, and makes it
/// non-blocking for tokio. Call it inside a tokio runtime.
///
/// Errors (kind `InvalidInput`) name the descriptor and what is wrong with it: not a
/// socket, not `AF_UNIX`, not `SOCK_STREAM`, or not bound to a path or abstract name.
pub fn unix_listener_from_fd(fd: OwnedFd) -> io::Result<UnixListener> {
    let number = fd.as_raw_fd();
    let invalid = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {number}: {what}"),
        )
    };
    // First of all: from here on nothing envd spawns can inherit it.
    let flags = fcntl_getfd(&fd)?;
    fcntl_setfd(&fd, flags | FdFlags::CLOEXEC)?;
    let domain = sockopt::socket_domain(&fd).map_err(|e| {
        if e == rustix::io::Errno::NOTSOCK {
            invalid("is not a socket".to_owned())
        } else {
            e.into()
        }
    })?;
    if domain != AddressFamily::UNIX {
        return Err(invalid(format!(
            "is not a Unix socket (address family {}; expected AF_UNIX)",
            domain.as_raw()
        )));
    }
    let kind = sockopt::socket_type(&fd)?;
    if kind != SocketType::STREAM {
        return Err(invalid(format!(
            "is not a stream socket (type {}; expected SOCK_STREAM)",
            kind.as_raw()
        )));
    }
    let listener = std::os::unix::net::UnixListener::from(fd);
    // The kernel refuses to listen on an unbound Unix socket (EINVAL); say why instead.
    if listener.local_addr()?.is_unnamed() {
        return Err(invalid(
            "is not bound: bind it to a path before handing it over".to_owned(),
        ));
    }
    listen(&listener, BACKLOG)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}
