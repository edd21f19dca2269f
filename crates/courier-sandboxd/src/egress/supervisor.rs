//! The supervisor of one slirp4netns: answers the notifications of its seccomp filter
//! (see [`super::filter`]) on a dedicated thread.
//!
//! For each trapped call it reads the arguments from slirp4netns's memory
//! (`process_vm_readv`), takes the socket (and any descriptors passed with
//! `SCM_RIGHTS`) with `pidfd_getfd`, checks that the notification is still pending
//! (`SECCOMP_IOCTL_NOTIF_ID_VALID`, so that what was read belongs to the caller), decides
//! with the sandbox's policy, and **performs the call itself** on the duplicate, with the
//! copy of the destination it checked; the caller gets that call's result. It never
//! lets a call continue in the kernel: with `SECCOMP_USER_NOTIF_FLAG_CONTINUE` the
//! kernel would re-read the address from the caller's memory after the check, which an
//! exploited slirp4netns (another thread, or a forked child sharing the page) could
//! rewrite in between. slirp4netns itself is single-threaded, so for an intact
//! slirp4netns that race does not exist either way; performing the call closes it for a
//! compromised one too.
//!
//! - `connect`: allowed → connected; refused → `ECONNREFUSED` (slirp4netns answers the
//!   sandbox's SYN with a RST: a quick failure, not a hang); needs a domain check → the
//!   socket is connected to the domain proxy instead, and its destination registered
//!   there; allowed but covered by the sandbox's `network.rules` transforms → the same
//!   redirect, registered as allowed (the transform proxy applies the headers).
//!   `AF_UNSPEC` (dissolving a datagram association) is performed; any other
//!   family (Unix sockets of the host, netlink, vsock...) is refused with `EACCES`.
//! - `sendto` with an address and `sendmsg`: the payload is copied and sent on the
//!   duplicate to the checked address; refused → `EACCES`. Only `SCM_RIGHTS` control
//!   messages are passed on (slirp4netns hands its tap device over one at start-up);
//!   credentials would be sent as the server's, so they are refused.
//! - `sendmmsg`: `ENOSYS`. slirp4netns never calls it, and emulating it would mean
//!   writing the sent lengths into the caller's memory.
//!
//! A call on a blocking socket (slirp4netns's are non-blocking) is performed on a
//! short-lived thread, so one slow `connect` cannot stall the others.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, ControlMessage, MsgFlags, SockType, SockaddrStorage, sockopt};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::SandboxEgress;
use super::policy::{Destination, Proto, Verdict};
use super::sys::{self, Notification};

/// Largest payload copied for one emulated send (UDP datagrams are at most 64 KiB).
const MAX_PAYLOAD: usize = 256 * 1024;
/// Largest socket address (`sizeof(struct sockaddr_storage)`), as the kernel checks.
const MAX_SOCKADDR: usize = 128;
/// Most iovecs in one message (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;
/// Largest control buffer accepted.
const MAX_CONTROL: usize = 4096;
/// Most calls on blocking sockets performed at once (each on its own thread): an intact
/// slirp4netns makes none, an exploited one must not exhaust the server's threads.
const MAX_DEFERRED: usize = 16;

/// What a supervisor decides with.
pub(crate) struct Context {
    /// The sandbox's policy (shared with the server, which may replace the rules).
    pub egress: SandboxEgress,
    /// The resolvers DNS may go to (the host's, when the network was attached).
    pub resolvers: Vec<IpAddr>,
}

/// A running supervisor. Stopping it (or dropping it) takes its listener off the shared
/// thread and closes it; slirp4netns's further trapped calls then fail with `ENOSYS`
/// (fail closed).
///
/// Every sandbox's supervisor is served by one thread ([`Hub`]), not a thread each: the
/// server forks for every create (its helper, slirp4netns), and a fork copies the
/// parent's memory map, which grows with each thread's stack — with a thread per
/// networked sandbox, creates got slower with every sandbox running.
pub(crate) struct Supervisor {
    key: Option<u64>,
}

impl Supervisor {
    /// Starts answering `listener`'s notifications.
    pub(crate) fn start(listener: OwnedFd, context: Context) -> io::Result<Self> {
        let handler = Handler {
            listener: Arc::new(listener),
            context: Arc::new(context),
            deferred: Arc::new(AtomicUsize::new(0)),
        };
        let key = Hub::get()?.add(handler)?;
        Ok(Self { key: Some(key) })
    }

    /// Stops answering: the listener leaves the shared thread's set and is closed (once
    /// a notification being answered right now is answered).
    pub(crate) fn stop(&mut self) {
        if let Some(key) = self.key.take()
            && let Ok(hub) = Hub::get()
        {
            hub.remove(key);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The one thread answering every supervisor's notifications (an epoll set of their
/// listeners; see [`Supervisor`]). Answers are quick: a call on a blocking socket, the
/// only slow kind, goes to a thread of its own ([`Handler::perform`]).
struct Hub {
    epoll: Epoll,
    handlers: Mutex<HashMap<u64, Arc<Handler>>>,
    next: AtomicU64,
}

/// The hub, started with the first supervisor (or why it could not start).
static HUB: OnceLock<Result<Arc<Hub>, Errno>> = OnceLock::new();

impl Hub {
    fn get() -> io::Result<Arc<Hub>> {
        let hub = HUB.get_or_init(|| {
            let hub = Arc::new(Hub {
                epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
                handlers: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
            });
            let serving = hub.clone();
            std::thread::Builder::new()
                .name("egress-supervisor".into())
                .spawn(move || serving.run())
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
            Ok(hub)
        });
        hub.clone().map_err(io::Error::from)
    }

    fn handlers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Handler>>> {
        // A panic while the map was held left it whole (inserts and removes only).
        self.handlers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, handler: Handler) -> io::Result<u64> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let listener = handler.listener.clone();
        // In the map before the set: an event for the key always finds its handler.
        self.handlers().insert(key, Arc::new(handler));
        if let Err(e) = self
            .epoll
            .add(listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, key))
        {
            self.handlers().remove(&key);
            return Err(e.into());
        }
        Ok(key)
    }

    fn remove(&self, key: u64) {
        if let Some(handler) = self.handlers().remove(&key)
            && let Err(error) = self.epoll.delete(handler.listener.as_fd())
        {
            // Closing the listener (the handler's last reference) removes it anyway.
            tracing::debug!(%error, "taking a listener off the egress supervisor's set");
        }
    }

    fn run(&self) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let ready = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "egress supervisor: epoll failed; new connections of every sandbox will fail");
                    return;
                }
            };
            for event in &events[..ready] {
                let key = event.data();
                let Some(handler) = self.handlers().get(&key).cloned() else {
                    continue;
                };
                if !handler.serve_one(event.events()) {
                    self.remove(key);
                }
            }
        }
    }
}

/// The answer to one notification.
enum Reply {
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Fail(Errno),
    /// Answered later, by the thread performing the call.
    Deferred,
    /// The caller is gone (killed or interrupted): nothing to answer.
    Gone,
}

fn reply_of(result: nix::Result<usize>) -> Reply {
    match result {
        Ok(n) => Reply::Value(n as i64),
        Err(e) => Reply::Fail(e),
    }
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// A destination as written by the caller.
enum Target {
    Inet(SocketAddr),
    Unspec,
    Other(u16),
}

/// Parses a `struct sockaddr` the way the kernel would read it for an inet socket.
fn parse_sockaddr(raw: &[u8]) -> Result<Target, Errno> {
    if raw.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    match i32::from(family) {
        libc::AF_INET => {
            if raw.len() < size_of::<libc::sockaddr_in>() {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Ok(Target::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        libc::AF_INET6 => {
            if raw.len() < size_of::<libc::sockaddr_in6>() {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let flowinfo = u32::from_be_bytes(raw[4..8].try_into().expect("4 bytes"));
            let ip: [u8; 16] = raw[8..24].try_into().expect("16 bytes");
            let scope = u32::from_ne_bytes(raw[24..28].try_into().expect("4 bytes"));
            Ok(Target::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope,
            ))))
        }
        libc::AF_UNSPEC => Ok(Target::Unspec),
        other => Ok(Target::Other(other as u16)),
    }
}

/// `len` bytes at `addr` in process `pid`.
fn read_memory(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if addr == 0 {
        return Err(Errno::EFAULT);
    }
    let mut buf = vec![0u8; len];
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let read = process_vm_readv(
        Pid::from_raw(pid as i32),
        &mut [IoSliceMut::new(&mut buf)],
        &remote,
    )
    .map_err(|_| Errno::EFAULT)?;
    if read != len {
        return Err(Errno::EFAULT);
    }
    Ok(buf)
}

fn u64_at(raw: &[u8], offset: usize) -> u64 {
    u64::from_ne_bytes(raw[offset..offset + 8].try_into().expect("8 bytes"))
}

fn u32_at(raw: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes(raw[offset..offset + 4].try_into().expect("4 bytes"))
}

/// A message to send, copied out of the caller.
struct Message {
    name: Option<Vec<u8>>,
    data: Vec<u8>,
    /// Descriptor numbers (in the caller) passed with `SCM_RIGHTS`.
    rights: Vec<RawFd>,
}

/// Reads a `struct msghdr` at `addr` and everything it points to.
fn read_message(pid: u32, addr: u64) -> Result<Message, Errno> {
    let raw = read_memory(pid, addr, size_of::<libc::msghdr>())?;
    let name_ptr = u64_at(&raw, offset_of!(libc::msghdr, msg_name));
    let name_len = u32_at(&raw, offset_of!(libc::msghdr, msg_namelen)) as usize;
    let iov_ptr = u64_at(&raw, offset_of!(libc::msghdr, msg_iov));
    let iov_len = u64_at(&raw, offset_of!(libc::msghdr, msg_iovlen)) as usize;
    let control_ptr = u64_at(&raw, offset_of!(libc::msghdr, msg_control));
    let control_len = u64_at(&raw, offset_of!(libc::msghdr, msg_controllen)) as usize;

    let name = if name_ptr != 0 && name_len != 0 {
        if name_len > MAX_SOCKADDR {
            return Err(Errno::EINVAL);
        }
        Some(read_memory(pid, name_ptr, name_len)?)
    } else {
        None
    };
    if iov_len > MAX_IOV {
        return Err(Errno::EMSGSIZE);
    }
    let iovs = read_memory(pid, iov_ptr, iov_len * size_of::<libc::iovec>())?;
    let mut data = Vec::new();
    for iov in iovs.chunks_exact(size_of::<libc::iovec>()) {
        let base = u64_at(iov, offset_of!(libc::iovec, iov_base));
        let len = u64_at(iov, offset_of!(libc::iovec, iov_len)) as usize;
        if data.len().saturating_add(len) > MAX_PAYLOAD {
            return Err(Errno::EMSGSIZE);
        }
        data.extend(read_memory(pid, base, len)?);
    }
    let mut rights = Vec::new();
    if control_ptr != 0 && control_len != 0 {
        if control_len > MAX_CONTROL {
            return Err(Errno::ENOBUFS);
        }
        let control = read_memory(pid, control_ptr, control_len)?;
        rights = parse_rights(&control)?;
    }
    Ok(Message { name, data, rights })
}

/// The descriptors of the `SCM_RIGHTS` messages in a control buffer; anything else
/// (credentials, IP options...) is refused with `EINVAL`.
fn parse_rights(control: &[u8]) -> Result<Vec<RawFd>, Errno> {
    let header = size_of::<libc::cmsghdr>();
    let align = |n: usize| (n + size_of::<usize>() - 1) & !(size_of::<usize>() - 1);
    let mut fds = Vec::new();
    let mut at = 0;
    while at + header <= control.len() {
        let len = u64_at(control, at + offset_of!(libc::cmsghdr, cmsg_len)) as usize;
        let level = u32_at(control, at + offset_of!(libc::cmsghdr, cmsg_level)) as i32;
        let kind = u32_at(control, at + offset_of!(libc::cmsghdr, cmsg_type)) as i32;
        if len < header || at + len > control.len() {
            return Err(Errno::EINVAL);
        }
        if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
            return Err(Errno::EINVAL);
        }
        for fd in control[at + header..at + len].chunks_exact(4) {
            fds.push(i32::from_ne_bytes(fd.try_into().expect("4 bytes")));
        }
        at += align(len);
    }
    Ok(fds)
}

fn proto_of(sock: &OwnedFd) -> Proto {
    match socket::getsockopt(sock, sockopt::SockType) {
        Ok(SockType::Stream) => Proto::Tcp,
        Ok(SockType::Datagram) => match sys::socket_protocol(sock.as_fd()) {
            Ok(libc::IPPROTO_UDP) => Proto::Udp,
            _ => Proto::Other,
        },
        _ => Proto::Other,
    }
}

fn is_blocking(sock: &OwnedFd) -> bool {
    fcntl(sock, FcntlArg::F_GETFL)
        .is_ok_and(|flags| !OFlag::from_bits_retain(flags).contains(OFlag::O_NONBLOCK))
}

struct Handler {
    listener: Arc<OwnedFd>,
    context: Arc<Context>,
    /// Calls being performed on their own thread.
    deferred: Arc<AtomicUsize>,
}

impl Handler {
    /// Answers one notification after `events` on the listener; `false` when the
    /// listener is done (every filtered process gone, or it failed).
    fn serve_one(&self, events: EpollFlags) -> bool {
        if events.contains(EpollFlags::EPOLLIN) {
            match sys::notif_recv(self.listener.as_fd()) {
                Ok(notification) => self.handle(notification),
                // The caller was killed or interrupted before we got to it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                Err(e) => {
                    tracing::error!(sandbox = self.context.egress.label(), error = %e, "egress supervisor: receiving failed; new connections will fail");
                    return false;
                }
            }
            true
        } else {
            // EPOLLHUP or EPOLLERR: every filtered process is gone.
            !events.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
        }
    }

    fn handle(&self, n: Notification) {
        let nr = i64::from(n.nr);
        let reply = if nr == libc::SYS_connect {
            self.connect(&n)
        } else if nr == libc::SYS_sendto {
            self.sendto(&n)
        } else if nr == libc::SYS_sendmsg {
            self.sendmsg(&n)
        } else {
            // sendmmsg (see the module docs), or anything the filter did not mean to trap.
            Reply::Fail(Errno::ENOSYS)
        };
        respond(&self.listener, n.id, reply);
    }

    /// Duplicates descriptors `fds` of the caller, then checks that the notification is
    /// still pending: only then do the memory read before and the duplicates belong to
    /// the caller.
    fn take(&self, n: &Notification, fds: &[RawFd]) -> Result<Vec<OwnedFd>, Reply> {
        let pidfd = sys::pidfd_open(n.pid as i32).map_err(|_| Reply::Gone)?;
        let mut taken = Vec::with_capacity(fds.len());
        for &fd in fds {
            match sys::pidfd_getfd(pidfd.as_fd(), fd) {
                Ok(dup) => taken.push(dup),
                Err(e) => {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        tracing::error!(
                            sandbox = self.context.egress.label(),
                            "egress supervisor may not take slirp4netns's descriptors (ptrace restrictions?)"
                        );
                    }
                    return Err(Reply::Fail(errno_of(&e)));
                }
            }
        }
        if !sys::notif_id_valid(self.listener.as_fd(), n.id) {
            return Err(Reply::Gone);
        }
        Ok(taken)
    }

    /// Runs `call` now, or on its own thread when the socket blocks.
    fn perform(
        &self,
        n: &Notification,
        blocking: bool,
        call: impl FnOnce() -> Reply + Send + 'static,
    ) -> Reply {
        if !blocking {
            return call();
        }
        if self.deferred.fetch_add(1, Ordering::SeqCst) >= MAX_DEFERRED {
            self.deferred.fetch_sub(1, Ordering::SeqCst);
            return Reply::Fail(Errno::EAGAIN);
        }
        let listener = self.listener.clone();
        let deferred = self.deferred.clone();
        let id = n.id;
        let spawned = std::thread::Builder::new()
            .name("egress-call".into())
            .spawn(move || {
                respond(&listener, id, call());
                deferred.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(_) => Reply::Deferred,
            Err(_) => {
                self.deferred.fetch_sub(1, Ordering::SeqCst);
                Reply::Fail(Errno::EAGAIN)
            }
        }
    }

    fn decide(&self, addr: SocketAddr, proto: Proto) -> Verdict {
        let dest = Destination {
            ip: addr.ip(),
            port: addr.port(),
            proto,
        };
        self.context.egress.decide(dest, &self.context.resolvers)
    }

    fn refuse_family(&self, family: u16, errno: Errno) -> Reply {
        self.context.egress.log_refused(
            &format_args!("address family {family}"),
            &"only IPv4 and IPv6 destinations are allowed",
        );
        Reply::Fail(errno)
    }

    fn connect(&self, n: &Notification) -> Reply {
        let len = n.args[2] as u32 as usize;
        if len > MAX_SOCKADDR {
            return Reply::Fail(Errno::EINVAL);
        }
        let target = match read_memory(n.pid, n.args[1], len).and_then(|raw| parse_sockaddr(&raw)) {
            Ok(target) => target,
            Err(e) => return Reply::Fail(e),
        };
        let sock = match self.take(n, &[n.args[0] as RawFd]) {
            Ok(mut fds) => fds.remove(0),
            Err(reply) => return reply,
        };
        let addr = match target {
            Target::Inet(addr) => addr,
            Target::Unspec => {
                return match sys::connect_unspec(sock.as_fd()) {
                    Ok(()) => Reply::Value(0),
                    Err(e) => Reply::Fail(errno_of(&e)),
                };
            }
            Target::Other(family) => return self.refuse_family(family, Errno::EACCES),
        };
        let proto = proto_of(&sock);
        match self.decide(addr, proto) {
            // Allowed, but the sandbox's `network.rules` transform its requests to this
            // destination: through the proxy, which applies them (or refuses TLS).
            Verdict::Allow(_)
                if proto == Proto::Tcp
                    && self
                        .context
                        .egress
                        .rules()
                        .transforms()
                        .intercepts(addr.ip(), addr.port()) =>
            {
                self.redirect(n, sock, addr, false)
            }
            Verdict::Allow(_) => {
                let blocking = is_blocking(&sock);
                self.perform(n, blocking, move || {
                    let storage = SockaddrStorage::from(addr);
                    reply_of(socket::connect(sock.as_raw_fd(), &storage).map(|()| 0))
                })
            }
            Verdict::Refuse(why) => {
                self.context.egress.log_refused(&addr, &why);
                Reply::Fail(Errno::ECONNREFUSED)
            }
            Verdict::CheckDomain => self.redirect(n, sock, addr, true),
        }
    }

    /// Connects slirp4netns's socket to the domain proxy instead of `addr`, after
    /// registering `addr` under the socket's local port (`check_domain`: only an
    /// `allowOut` domain may let it through).
    fn redirect(
        &self,
        n: &Notification,
        sock: OwnedFd,
        addr: SocketAddr,
        check_domain: bool,
    ) -> Reply {
        let proxy = match self.context.egress.egress().domain_proxy() {
            Ok(proxy) => proxy,
            Err(e) => {
                tracing::error!(error = %e, "egress domain proxy could not start");
                return Reply::Fail(Errno::ECONNREFUSED);
            }
        };
        // The proxy listens on 127.0.0.1; an IPv6 socket reaches it as ::ffff:127.0.0.1.
        let (local, remote) = match addr {
            SocketAddr::V4(_) => (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), proxy.addr()),
            SocketAddr::V6(_) => {
                let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
                (
                    SocketAddr::new(mapped, 0),
                    SocketAddr::new(mapped, proxy.addr().port()),
                )
            }
        };
        // Bound first, so the port is registered before the proxy can accept.
        match socket::bind(sock.as_raw_fd(), &SockaddrStorage::from(local)) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Reply::Fail(e),
        }
        let port = match socket::getsockname::<SockaddrStorage>(sock.as_raw_fd()) {
            Ok(name) => name
                .as_sockaddr_in()
                .map(|a| a.port())
                .or_else(|| name.as_sockaddr_in6().map(|a| a.port())),
            Err(e) => return Reply::Fail(e),
        };
        let Some(port) = port.filter(|p| *p != 0) else {
            return Reply::Fail(Errno::ECONNREFUSED);
        };
        if !proxy.expect(port, addr, self.context.egress.clone(), check_domain) {
            self.context
                .egress
                .log_refused(&addr, &"too many connections waiting for the domain proxy");
            return Reply::Fail(Errno::ECONNREFUSED);
        }
        let blocking = is_blocking(&sock);
        self.perform(n, blocking, move || {
            let storage = SockaddrStorage::from(remote);
            reply_of(socket::connect(sock.as_raw_fd(), &storage).map(|()| 0))
        })
    }

    fn sendto(&self, n: &Notification) -> Reply {
        let [fd, buf, len, flags, addr, addr_len] = n.args;
        let (len, addr_len) = (len as usize, addr_len as u32 as usize);
        if addr_len > MAX_SOCKADDR {
            return Reply::Fail(Errno::EINVAL);
        }
        if len > MAX_PAYLOAD {
            return Reply::Fail(Errno::EMSGSIZE);
        }
        let read = || -> Result<(Option<Vec<u8>>, Vec<u8>), Errno> {
            let name = if addr != 0 {
                Some(read_memory(n.pid, addr, addr_len)?)
            } else {
                None
            };
            Ok((name, read_memory(n.pid, buf, len)?))
        };
        let (name, data) = match read() {
            Ok(read) => read,
            Err(e) => return Reply::Fail(e),
        };
        let message = Message {
            name,
            data,
            rights: Vec::new(),
        };
        self.send(n, fd as RawFd, message, flags as i32)
    }

    fn sendmsg(&self, n: &Notification) -> Reply {
        match read_message(n.pid, n.args[1]) {
            Ok(message) => self.send(n, n.args[0] as RawFd, message, n.args[2] as i32),
            Err(e) => Reply::Fail(e),
        }
    }

    /// Sends `message` on the caller's socket `fd` to its checked destination (if any).
    fn send(&self, n: &Notification, fd: RawFd, message: Message, flags: i32) -> Reply {
        let target = match message.name.as_deref().map(parse_sockaddr).transpose() {
            Ok(target) => target,
            Err(e) => return Reply::Fail(e),
        };
        let mut wanted = vec![fd];
        wanted.extend(&message.rights);
        let mut fds = match self.take(n, &wanted) {
            Ok(fds) => fds,
            Err(reply) => return reply,
        };
        let sock = fds.remove(0);
        let addr = match target {
            None => None,
            Some(Target::Inet(addr)) => {
                match self.decide(addr, proto_of(&sock)) {
                    Verdict::Allow(_) => {}
                    // A domain can only be checked on a connection's first bytes.
                    Verdict::CheckDomain => {
                        self.context.egress.log_refused(
                            &addr,
                            &"needs a domain check, which only connect supports",
                        );
                        return Reply::Fail(Errno::EACCES);
                    }
                    Verdict::Refuse(why) => {
                        self.context.egress.log_refused(&addr, &why);
                        return Reply::Fail(Errno::EACCES);
                    }
                }
                Some(SockaddrStorage::from(addr))
            }
            // UDP reads an AF_UNSPEC address as IPv4: never pass one on unchecked.
            Some(Target::Unspec) => return self.refuse_family(0, Errno::EACCES),
            Some(Target::Other(family)) => return self.refuse_family(family, Errno::EACCES),
        };
        let blocking = is_blocking(&sock);
        let data = message.data;
        self.perform(n, blocking, move || {
            let rights: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            let cmsgs = if rights.is_empty() {
                Vec::new()
            } else {
                vec![ControlMessage::ScmRights(&rights)]
            };
            let flags = MsgFlags::from_bits_retain(flags);
            reply_of(socket::sendmsg(
                sock.as_raw_fd(),
                &[IoSlice::new(&data)],
                &cmsgs,
                flags,
                addr.as_ref(),
            ))
        })
    }
}

/// Answers notification `id` (nothing for deferred or gone callers).
fn respond(listener: &OwnedFd, id: u64, reply: Reply) {
    let (val, errno) = match reply {
        Reply::Value(v) => (v, 0),
        Reply::Fail(e) => (0, e as i32),
        Reply::Deferred | Reply::Gone => return,
    };
    if let Err(e) = sys::notif_respond(listener.as_fd(), id, val, errno)
        && e.raw_os_error() != Some(libc::ENOENT)
    {
        tracing::warn!(error = %e, "egress supervisor: answering a notification failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut raw = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        raw.extend_from_slice(&port.to_be_bytes());
        raw.extend_from_slice(&ip);
        raw.resize(size_of::<libc::sockaddr_in>(), 0);
        raw
    }

    fn sockaddr_in6(ip: Ipv6Addr, port: u16, scope: u32) -> Vec<u8> {
        let mut raw = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        raw.extend_from_slice(&port.to_be_bytes());
        raw.extend_from_slice(&0u32.to_be_bytes());
        raw.extend_from_slice(&ip.octets());
        raw.extend_from_slice(&scope.to_ne_bytes());
        raw
    }

    #[test]
    fn socket_addresses_parse_like_the_kernel_reads_them() {
        let raw = sockaddr_in([169, 254, 169, 254], 80);
        match parse_sockaddr(&raw).unwrap() {
            Target::Inet(a) => assert_eq!(a, "169.254.169.254:80".parse().unwrap()),
            _ => panic!("not inet"),
        }
        assert!(matches!(parse_sockaddr(&raw[..8]), Err(Errno::EINVAL)));
        let raw = sockaddr_in6("::ffff:10.0.0.1".parse().unwrap(), 443, 3);
        match parse_sockaddr(&raw).unwrap() {
            Target::Inet(SocketAddr::V6(a)) => {
                assert_eq!(*a.ip(), "::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap());
                assert_eq!((a.port(), a.scope_id()), (443, 3));
            }
            _ => panic!("not inet6"),
        }
        let mut unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        unix.extend_from_slice(b"/run/docker.sock\0");
        assert!(matches!(
            parse_sockaddr(&unix).unwrap(),
            Target::Other(f) if i32::from(f) == libc::AF_UNIX
        ));
        assert!(matches!(parse_sockaddr(&[0, 0]).unwrap(), Target::Unspec));
        assert!(matches!(parse_sockaddr(&[1]), Err(Errno::EINVAL)));
    }

    #[test]
    fn only_scm_rights_control_messages_are_accepted() {
        let header = size_of::<libc::cmsghdr>();
        let mut control = Vec::new();
        control.extend_from_slice(&((header + 8) as u64).to_ne_bytes());
        control.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        control.extend_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        control.extend_from_slice(&5i32.to_ne_bytes());
        control.extend_from_slice(&7i32.to_ne_bytes());
        assert_eq!(parse_rights(&control).unwrap(), vec![5, 7]);
        let mut creds = control.clone();
        creds[12..16].copy_from_slice(&libc::SCM_CREDENTIALS.to_ne_bytes());
        assert_eq!(parse_rights(&creds), Err(Errno::EINVAL));
        let mut lying = control.clone();
        lying[..8].copy_from_slice(&1000u64.to_ne_bytes());
        assert_eq!(parse_rights(&lying), Err(Errno::EINVAL));
        assert_eq!(parse_rights(&[]).unwrap(), Vec::<RawFd>::new());
    }
}
