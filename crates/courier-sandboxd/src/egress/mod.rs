//! Egress policy: what a networked sandbox may reach, enforced where sandbox root cannot
//! lift it.
//!
//! # Threats
//!
//! Code in a sandbox (agent code, a cloned repository's scripts, anyone holding an API
//! key) runs as root inside it and may send any packet out of its `tap0`. With internet
//! access it must not reach:
//!
//! - the cloud's metadata service (`169.254.169.254`: instance credentials),
//! - the host itself (its loopback services, its own addresses on every interface),
//! - private networks the host sits in (`10/8`, `172.16/12`, `192.168/16`, CGNAT
//!   `100.64/10`, IPv6 ULA `fc00::/7`, link-local, multicast),
//! - whatever the sandbox's creator denied with E2B's `network.denyOut` (unless
//!   `allowOut` lets it through).
//!
//! # What enforces what
//!
//! A networked sandbox's traffic leaves through slirp4netns ([`crate::runtime::network`]),
//! a user-space TCP/IP stack running on the host: every connection the sandbox opens
//! becomes a `connect()` or `sendto()` of the slirp4netns process. Nothing inside the
//! sandbox (its root included) can change the host side, so the policy is enforced
//! there:
//!
//! - **a seccomp filter on slirp4netns** (`filter.rs`), installed between fork and exec,
//!   stops `connect`, `sendto` with an address, `sendmsg` and `sendmmsg` and hands them
//!   to a **supervisor** in courier-sandboxd (`supervisor.rs`, one thread per sandbox)
//!   through the filter's listener (`SECCOMP_FILTER_FLAG_NEW_LISTENER`). The filter also
//!   refuses io_uring and exotic socket families/protocols, and kills the process on a
//!   foreign calling convention, so an exploited slirp4netns has no side door;
//! - **the supervisor** reads the destination from slirp4netns's memory, decides with
//!   [`policy::decide`], and then **performs the call itself** on a duplicate of
//!   slirp4netns's socket (`pidfd_getfd`): the checked copy of the address is what gets
//!   connected to. It never answers "continue", so the classic seccomp-notify race
//!   (rewriting the address after the check) does not exist, even for an exploited,
//!   multi-threaded slirp4netns. Refused calls fail fast: `connect` with
//!   `ECONNREFUSED` (slirp answers the sandbox's SYN with a RST), datagrams with
//!   `EACCES` (slirp answers with ICMP unreachable);
//! - **fail closed**: slirp4netns never holds the filter's listener. If the supervisor
//!   dies (with courier-sandboxd), the kernel fails every trapped call with `ENOSYS`;
//!   established connections keep working, new ones fail. After a restart,
//!   [`crate::runtime::network::detach_stale`] and [`crate::runtime::network::attach`]
//!   replace slirp4netns and its supervisor for a running sandbox;
//! - **domains** (`allowOut: ["api.example.com", "*.example.com"]`): a TCP connection
//!   to port 80 or 443 of a denied address is connected to the in-process domain proxy
//!   instead (`domain_proxy.rs`), which reads the TLS SNI or HTTP `Host`, requires an
//!   allowed name that resolves (on the host) to the original address, and splices;
//! - **transforms** (E2B's `network.rules`, `transform.rs`): an allowed TCP connection to
//!   a destination with rules goes through the same listener to the transform proxy
//!   (`domain_proxy/transform_proxy.rs`), which sets the rule's headers on every plain-HTTP request
//!   and forwards it to the original destination. TLS whose SNI a domain key names is
//!   intercepted with the server's CA (`interception.rs`), which sandboxes created with
//!   rules trust, and forwarded over TLS verified for that name; other TLS to an
//!   IP/CIDR key's address is closed (fail closed). Rules never allow traffic by
//!   themselves;
//! - **the operator** lifts the internal refusal for chosen ranges with
//!   [`Egress::new`]'s allow list (`--egress-allow CIDR`), or for one TCP port of them
//!   (`--egress-allow IP:PORT`, `CIDR:PORT`, `[v6]:PORT`); a sandbox's own `allowOut`
//!   cannot;
//! - **live updates**: [`SandboxEgress::set_rules`] (E2B's `PUT /sandboxes/{id}/network`)
//!   applies to every later connection at once.
//!
//! # Limits
//!
//! - DNS is not filtered (as on E2B): TCP/UDP port 53 to the resolvers in the host's
//!   `/etc/resolv.conf` (read when the network is attached) is allowed even when those
//!   are internal or all traffic is denied; DNS can carry data out.
//! - UDP (QUIC included) and ICMP are filtered by address only; domains only open
//!   HTTP/HTTPS over TCP.
//! - Established connections survive a rule change; the rules apply to new ones.
//! - The host's addresses are re-read every [`HOST_ADDRS_TTL`]: an address added to the
//!   host is refused at most that long after it appears. Addresses that reach the host
//!   without being on its interfaces (a NAT in front of it) are not known here.
//! - Domain checks see the first request's name only (see `domain_proxy.rs`), except on
//!   connections the transform proxy serves, which checks every request.
//! - Transforms apply to HTTP/1, in clear or inside TLS intercepted for a domain key's
//!   name (HTTP/2 is not offered there); domain keys act on ports 80 and 443, IP/CIDR
//!   keys on every port (non-HTTP traffic to such an address does not pass).
//! - Only sandboxes *created* with transform rules trust the interception CA (their own
//!   copy of `/etc/ssl/certs/ca-certificates.crt`; programs with a bundle of their own,
//!   such as Node.js or Python's `requests`, need `NODE_EXTRA_CA_CERTS` /
//!   `REQUESTS_CA_BUNDLE` pointed at it). Rules a live update adds to a sandbox created
//!   without any are intercepted too, and its clients then fail verification: closed,
//!   never sent without the transform.
//! - An exploited slirp4netns can still listen on host ports and talk to the sandbox;
//!   it runs with slirp4netns's own sandbox (`--enable-sandbox --enable-seccomp`: its
//!   own mount namespace, no capabilities but `CAP_NET_BIND_SERVICE`).

#[cfg(test)]
mod attack_tests;
mod domain_proxy;
mod filter;
mod interception;
pub mod policy;
mod sniff;
pub(crate) mod supervisor;
mod sys;

use std::fmt;
use std::io::{self, Read as _};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

pub use interception::{InterceptError, TlsInterception};
pub use policy::transform::{TransformError, TransformRules};
pub use policy::{Cidr, CidrError, EgressRules, OperatorAllow, RuleError};
use policy::{Destination, Environment, Refused, Verdict};

/// How long the host's interface addresses are cached before they are read again.
pub const HOST_ADDRS_TTL: Duration = Duration::from_secs(2);

/// The server-wide egress settings and services every sandbox shares: the operator's
/// allow list, the host's addresses and the domain proxy. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    shared: Arc<Shared>,
}

struct Shared {
    operator_allow: Vec<OperatorAllow>,
    host_addrs: Mutex<Option<(Instant, Arc<[IpAddr]>)>>,
    /// Started on first use (a sandbox with domain rules), then kept.
    domain_proxy: Mutex<Option<Arc<domain_proxy::DomainProxy>>>,
    /// Where the interception CA lives (`None`: TLS to a transformed host is closed).
    interception: Option<TlsInterception>,
    /// The CA, loaded (or made) on first use, then kept.
    interceptor: Mutex<Option<Arc<interception::Interceptor>>>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("operator_allow", &self.shared.operator_allow)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// Egress with the operator's allow list: internal destinations inside these ranges
    /// (or on the one TCP port a port-scoped entry names) are not refused (a sandbox's
    /// own rules still apply to them).
    pub fn new(operator_allow: Vec<OperatorAllow>) -> Self {
        Self::with_interception(operator_allow, None)
    }

    /// [`Egress::new`], and TLS to hosts with `network.rules` transforms intercepted with
    /// the CA of `interception` (see `interception.rs`); `None`: such TLS is closed.
    pub fn with_interception(
        operator_allow: Vec<OperatorAllow>,
        interception: Option<TlsInterception>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                operator_allow,
                host_addrs: Mutex::new(None),
                domain_proxy: Mutex::new(None),
                interception,
                interceptor: Mutex::new(None),
            }),
        }
    }

    /// The interception CA, loaded (or made) on first use.
    fn interceptor(&self) -> Result<Arc<interception::Interceptor>, InterceptError> {
        let config = self
            .shared
            .interception
            .as_ref()
            .ok_or(InterceptError::Disabled)?;
        let mut cached = crate::lock::lock(&self.shared.interceptor);
        if let Some(interceptor) = cached.as_ref() {
            return Ok(interceptor.clone());
        }
        let opened = Arc::new(interception::Interceptor::open(config)?);
        *cached = Some(opened.clone());
        Ok(opened)
    }

    /// The interception CA's certificate (PEM) that sandboxes with transform rules trust;
    /// [`InterceptError::Disabled`] when this egress does not intercept.
    pub fn ca_certificate_pem(&self) -> Result<String, InterceptError> {
        Ok(self.interceptor()?.ca_pem().to_owned())
    }

    /// The process-wide egress with no operator allow list, for sandboxes created
    /// without a server (e.g. the runtime used directly).
    fn default_shared() -> Self {
        static DEFAULT: OnceLock<Egress> = OnceLock::new();
        DEFAULT.get_or_init(|| Egress::new(Vec::new())).clone()
    }

    /// The operator's allow list.
    pub fn operator_allow(&self) -> &[OperatorAllow] {
        &self.shared.operator_allow
    }

    /// A sandbox's policy handle with `rules`; `label` names the sandbox in logs.
    pub fn sandbox(&self, label: &str, rules: EgressRules) -> SandboxEgress {
        SandboxEgress {
            egress: self.clone(),
            label: Arc::from(label),
            rules: Arc::new(RwLock::new(Arc::new(rules))),
            log: Arc::new(Mutex::new(LogLimiter::default())),
        }
    }

    /// The addresses of every interface in this network namespace, cached for
    /// [`HOST_ADDRS_TTL`]. A failed read keeps the previous list.
    fn host_addrs(&self) -> Arc<[IpAddr]> {
        let mut cached = crate::lock::lock(&self.shared.host_addrs);
        if let Some((at, addrs)) = cached.as_ref()
            && at.elapsed() < HOST_ADDRS_TTL
        {
            return addrs.clone();
        }
        match read_host_addrs() {
            Ok(addrs) => {
                let addrs: Arc<[IpAddr]> = addrs.into();
                *cached = Some((Instant::now(), addrs.clone()));
                addrs
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the host's addresses failed; keeping the last list");
                cached
                    .as_ref()
                    .map(|(_, a)| a.clone())
                    .unwrap_or_else(|| Arc::from([]))
            }
        }
    }

    /// The domain proxy, started on first use.
    fn domain_proxy(&self) -> io::Result<Arc<domain_proxy::DomainProxy>> {
        let mut proxy = crate::lock::lock(&self.shared.domain_proxy);
        if let Some(proxy) = proxy.as_ref() {
            return Ok(proxy.clone());
        }
        let started = Arc::new(domain_proxy::DomainProxy::start()?);
        tracing::info!(addr = %started.addr(), "egress domain proxy listening");
        *proxy = Some(started.clone());
        Ok(started)
    }
}

pub(crate) use sys::pidfd_open;

#[cfg(test)]
pub(crate) use filter::interpret;

/// How long a spawned program may take to install its filter and hand over the listener.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawns `cmd` (slirp4netns) under the egress filter, in a mount namespace of its own
/// with private propagation, and starts the supervisor that enforces `egress` on it (DNS
/// allowed to `resolvers`). The program never holds its filter's listener; the returned
/// supervisor is the only one who does.
pub(crate) fn spawn_supervised(
    mut cmd: Command,
    egress: &SandboxEgress,
    resolvers: Vec<IpAddr>,
) -> io::Result<(Child, supervisor::Supervisor)> {
    let filter = filter::program().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the egress filter is written for x86_64 and aarch64, not {}",
                std::env::consts::ARCH
            ),
        )
    })?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    sys::private_mounts_before_exec(&mut cmd);
    // The go pipe's write end stays open here until the spawn returns (see
    // `install_filter_before_exec`); the handoff thread writes through a clone.
    let go_write = Arc::new(go_write);
    sys::install_filter_before_exec(
        &mut cmd,
        filter,
        report_write,
        go_read,
        go_write.as_raw_fd(),
    );
    let handoff = {
        let go_write = go_write.clone();
        std::thread::Builder::new()
            .name("egress-handoff".into())
            .spawn(move || take_listener(report_read, &go_write, HANDOFF_TIMEOUT))?
    };
    let spawned = cmd.spawn();
    drop(cmd);
    let listener = handoff
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("handoff thread panicked")));
    drop(go_write);
    let mut child = spawned?;
    let started = listener
        .map_err(|e| io::Error::new(e.kind(), format!("taking the filter's listener: {e}")))
        .and_then(|listener| {
            supervisor::Supervisor::start(
                listener,
                supervisor::Context {
                    egress: egress.clone(),
                    resolvers,
                },
            )
        });
    match started {
        Ok(supervisor) => Ok((child, supervisor)),
        Err(e) => {
            if let Err(error) = child.kill() {
                tracing::debug!(%error, "killing a child whose supervisor did not start");
            }
            if let Err(error) = child.wait() {
                tracing::warn!(%error, "reaping a child whose supervisor did not start");
            }
            Err(e)
        }
    }
}

/// The parent's half of the listener handoff (see [`sys::install_filter_before_exec`]):
/// reads `[pid, fd]` from `report` within `timeout`, takes the listener with
/// `pidfd_getfd`, and tells the child through `go` to go on (1) or to fail (0).
fn take_listener(report: OwnedFd, go: &OwnedFd, timeout: Duration) -> io::Result<OwnedFd> {
    let taken = (|| {
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms))? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no listener reported within {timeout:?}"),
            ));
        }
        let mut message = [0u8; 8];
        std::fs::File::from(report).read_exact(&mut message)?;
        let pid = i32::from_ne_bytes(message[..4].try_into().expect("4 bytes"));
        let fd = i32::from_ne_bytes(message[4..].try_into().expect("4 bytes"));
        let pidfd = sys::pidfd_open(pid)?;
        sys::pidfd_getfd(pidfd.as_fd(), fd)
    })();
    let go_on = u8::from(taken.is_ok());
    // The child may already be gone (then the spawn reports why): nothing to add here.
    let _ = nix::unistd::write(go, &[go_on]);
    taken
}

/// SIGKILL to the process behind `pidfd`.
pub(crate) fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    sys::pidfd_send_signal(pidfd.as_fd(), nix::libc::SIGKILL)
}

/// Waits up to `timeout` for the process behind `pidfd` to exit; whether it did.
pub(crate) fn pidfd_wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn read_host_addrs() -> io::Result<Vec<IpAddr>> {
    let mut addrs = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addrs.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addrs.push(IpAddr::V6(v6.ip()));
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// One sandbox's egress policy, shared by the server (which replaces the rules live,
/// [`set_rules`](Self::set_rules)) and the sandbox's supervisor (which reads them for
/// every new connection). Cheap to clone; clones share the rules.
#[derive(Clone)]
pub struct SandboxEgress {
    egress: Egress,
    label: Arc<str>,
    rules: Arc<RwLock<Arc<EgressRules>>>,
    log: Arc<Mutex<LogLimiter>>,
}

impl Default for SandboxEgress {
    /// No rules (everything but internal destinations allowed), no operator allow list.
    fn default() -> Self {
        Egress::default_shared().sandbox("sandbox", EgressRules::default())
    }
}

impl PartialEq for SandboxEgress {
    /// The same shared policy.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.rules, &other.rules)
    }
}

impl fmt::Debug for SandboxEgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxEgress")
            .field("label", &self.label)
            .field("rules", &self.rules())
            .finish_non_exhaustive()
    }
}

impl SandboxEgress {
    /// The current rules.
    pub fn rules(&self) -> Arc<EgressRules> {
        self.rules.read().expect("rules lock").clone()
    }

    /// Replaces the rules; every connection made from now on is decided by them.
    pub fn set_rules(&self, rules: EgressRules) {
        *self.rules.write().expect("rules lock") = Arc::new(rules);
    }

    /// The sandbox this policy belongs to (for logs).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The server-wide settings this policy uses.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// The decision for `dest` now.
    pub(crate) fn decide(&self, dest: Destination, resolvers: &[IpAddr]) -> Verdict {
        let host_addrs = self.egress.host_addrs();
        let env = Environment {
            operator_allow: &self.egress.shared.operator_allow,
            host_addrs: &host_addrs,
            resolvers,
        };
        policy::decide(dest, &self.rules(), &env)
    }

    /// Why a TCP connection to `dest` is refused as internal now, if it is.
    pub(crate) fn internal(&self, dest: std::net::SocketAddr) -> Option<Refused> {
        let host_addrs = self.egress.host_addrs();
        let env = Environment {
            operator_allow: &self.egress.shared.operator_allow,
            host_addrs: &host_addrs,
            resolvers: &[],
        };
        let dest = Destination {
            ip: dest.ip(),
            port: dest.port(),
            proto: policy::Proto::Tcp,
        };
        policy::internal(dest, &env)
    }

    /// Logs a refusal, at most [`LogLimiter::BURST`] lines per window per sandbox (a
    /// sandbox hammering a refused address must not flood the server's log).
    pub(crate) fn log_refused(&self, destination: &dyn fmt::Display, reason: &dyn fmt::Display) {
        let mut log = crate::lock::lock(&self.log);
        match log.admit() {
            Admit::Log { suppressed } => tracing::info!(
                sandbox = %self.label,
                %destination,
                %reason,
                suppressed,
                "egress refused"
            ),
            Admit::Drop => {}
        }
    }
}

/// Counts log lines per window.
#[derive(Debug)]
struct LogLimiter {
    window: Instant,
    logged: u32,
    suppressed: u32,
}

enum Admit {
    Log { suppressed: u32 },
    Drop,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self {
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }
}

impl LogLimiter {
    const BURST: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(10);

    fn admit(&mut self) -> Admit {
        if self.window.elapsed() >= Self::WINDOW {
            let suppressed = std::mem::take(&mut self.suppressed);
            *self = Self::default();
            self.logged = 1;
            return Admit::Log { suppressed };
        }
        if self.logged < Self::BURST {
            self.logged += 1;
            Admit::Log { suppressed: 0 }
        } else {
            self.suppressed += 1;
            Admit::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_swapped_live_are_seen_by_every_clone() {
        let egress = Egress::new(Vec::new());
        let a = egress.sandbox("sbx", EgressRules::default());
        let b = a.clone();
        let dest = Destination {
            ip: "8.8.8.8".parse().unwrap(),
            port: 443,
            proto: policy::Proto::Tcp,
        };
        assert!(matches!(b.decide(dest, &[]), Verdict::Allow(_)));
        a.set_rules(EgressRules::deny_all());
        assert_eq!(b.decide(dest, &[]), Verdict::Refuse(Refused::DenyRule));
        assert_eq!(a, b);
        assert_ne!(a, egress.sandbox("sbx", EgressRules::default()));
    }

    #[test]
    fn the_hosts_own_addresses_are_refused() {
        // This machine's loopback is always there; any other address it has must be
        // refused too, whatever range it is in.
        let sbx = Egress::new(Vec::new()).sandbox("sbx", EgressRules::default());
        let addrs = read_host_addrs().unwrap();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
        for ip in addrs {
            assert!(sbx.internal((ip, 80).into()).is_some(), "{ip}");
        }
    }

    #[test]
    fn the_log_limiter_lets_a_burst_through_then_counts() {
        let mut limiter = LogLimiter::default();
        for _ in 0..LogLimiter::BURST {
            assert!(matches!(limiter.admit(), Admit::Log { suppressed: 0 }));
        }
        assert!(matches!(limiter.admit(), Admit::Drop));
        limiter.window -= LogLimiter::WINDOW;
        assert!(matches!(limiter.admit(), Admit::Log { suppressed: 1 }));
    }
}
