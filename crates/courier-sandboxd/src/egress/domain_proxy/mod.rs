//! The domain proxy: where the supervisor points a sandbox's HTTP or HTTPS connection to
//! an address its rules deny, when its `allowOut` names domains.
//!
//! The supervisor connects slirp4netns's own socket to this listener (loopback,
//! ephemeral port) instead of the original destination, after registering the
//! destination under the socket's local port ([`DomainProxy::expect`]). The proxy then:
//!
//! 1. reads the first bytes (at most [`MAX_SNIFF`], within [`SNIFF_TIMEOUT`]) and takes
//!    the TLS SNI or the HTTP `Host` ([`super::sniff`]); nothing usable: closed;
//! 2. requires the name to match a domain of the sandbox's current `allowOut`;
//! 3. resolves the name itself and requires the original address to be among the
//!    answers (so a sandbox cannot send an allowed name to an address of its choosing),
//!    and the address still not internal (the host's addresses may have changed);
//! 4. connects to the original destination, replays the bytes it read and splices both
//!    directions until either side closes.
//!
//! Limits: the name is checked once per connection (an HTTP keep-alive connection may
//! carry later requests for other names served at the same address; inside TLS the
//! `Host` is not visible, so a shared front such as a CDN can be asked for another of
//! its sites — "domain fronting"). The sandbox and the proxy must get the same DNS
//! answers: both use the host's resolver, but a name whose answers rotate can make a
//! connection to an address the proxy's lookup did not return fail.

mod transform_proxy;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::SandboxEgress;
use super::policy::canonical;
use super::sniff::{MAX_SNIFF, Sniff, sniff};

/// How long a client may take to send its ClientHello or request head.
pub(crate) const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long resolving the name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to the destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a registered destination waits for its connection.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// Splice buffer size, each direction.
const SPLICE_BUFFER: usize = 64 * 1024;
/// Most registered connections not yet accepted (all sandboxes together).
const MAX_PENDING: usize = 4096;

/// A redirected connection the proxy expects.
pub(super) struct Pending {
    pub(super) destination: SocketAddr,
    pub(super) egress: SandboxEgress,
    registered: Instant,
    /// Whether the address alone was denied and an `allowOut` domain must let it
    /// through (false: allowed by address, redirected for `network.rules` transforms).
    pub(super) check_domain: bool,
}

type PendingMap = Arc<Mutex<HashMap<u16, Pending>>>;

/// The running proxy: one thread with its own small tokio runtime, shared by every
/// sandbox of the server. Stopped when dropped.
pub(crate) struct DomainProxy {
    addr: SocketAddr,
    pending: PendingMap,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl DomainProxy {
    /// Binds `127.0.0.1:0` and starts serving.
    pub(crate) fn start() -> io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let pending = PendingMap::default();
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("egress-domain-proxy".into())
            .spawn({
                let pending = pending.clone();
                let stop = stop.clone();
                move || runtime.block_on(serve(listener, pending, stop))
            })?;
        Ok(Self {
            addr,
            pending,
            stop,
            thread: Some(thread),
        })
    }

    /// The listener's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers that the connection coming from `127.0.0.1:<local_port>` was meant for
    /// `destination`, under `egress`'s rules (`check_domain`: only an `allowOut` domain
    /// lets it through); false when too many are waiting already.
    pub(crate) fn expect(
        &self,
        local_port: u16,
        destination: SocketAddr,
        egress: SandboxEgress,
        check_domain: bool,
    ) -> bool {
        let mut pending = crate::lock::lock(&self.pending);
        pending.retain(|_, p| p.registered.elapsed() < PENDING_TTL);
        if pending.len() >= MAX_PENDING {
            return false;
        }
        pending.insert(
            local_port,
            Pending {
                destination,
                egress,
                registered: Instant::now(),
                check_domain,
            },
        );
        true
    }
}

impl Drop for DomainProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the domain proxy's thread panicked");
        }
    }
}

async fn serve(listener: std::net::TcpListener, pending: PendingMap, stop: CancellationToken) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "egress domain proxy cannot listen");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Only slirp4netns's redirected sockets are expected: they connect from
                // loopback with a registered port. Anything else finds no entry.
                let entry = (canonical(peer.ip()) == Ipv4Addr::LOCALHOST)
                    .then(|| crate::lock::lock(&pending).remove(&peer.port()))
                    .flatten();
                if let Some(entry) = entry {
                    tokio::spawn(relay(stream, entry, stop.clone()));
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "egress domain proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(mut client: TcpStream, entry: Pending, stop: CancellationToken) {
    let destination = entry.destination;
    // The rules now (they may have changed since the connect): a destination with
    // `network.rules` transforms goes to the HTTP proxy, which does the domain check too.
    let transformed = entry
        .egress
        .rules()
        .transforms()
        .intercepts(destination.ip(), destination.port());
    if transformed || !entry.check_domain {
        transform_proxy::serve(client, entry, stop).await;
        return;
    }
    let (name, head, mut upstream) = match check(&mut client, &entry).await {
        Ok(ok) => ok,
        Err(why) => {
            entry.egress.log_refused(&destination, &why);
            return;
        }
    };
    tracing::debug!(sandbox = entry.egress.label(), %destination, name, "egress allowed by domain");
    if upstream.write_all(&head).await.is_err() {
        return;
    }
    splice(client, upstream, &stop).await;
}

/// Copies both ways until either side closes (or the proxy stops).
pub(super) async fn splice(
    mut client: TcpStream,
    mut upstream: TcpStream,
    stop: &CancellationToken,
) {
    // Latency only: a socket without TCP_NODELAY still carries the traffic.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(
            &mut client, &mut upstream, SPLICE_BUFFER, SPLICE_BUFFER) => {}
        _ = stop.cancelled() => {}
    }
}

/// Why the domain proxy refused a connection (logged; the sandbox's connection closes).
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    /// What the client sent names no host.
    #[error("{0}")]
    NoName(&'static str),
    /// The first [`MAX_SNIFF`] bytes named no host.
    #[error("no server name within the first 16 KiB")]
    NameTooLate,
    /// The client closed before naming a host.
    #[error("closed before naming a host")]
    ClosedEarly,
    /// Reading from the client failed.
    #[error("read: {0}")]
    Read(#[source] io::Error),
    /// The client named no host in time.
    #[error("no TLS ClientHello or HTTP request within {SNIFF_TIMEOUT:?}")]
    SniffTimeout,
    /// The named host is not an `allowOut` domain.
    #[error("{0} is not an allowOut domain")]
    NotAllowed(String),
    /// Resolving the named host took too long.
    #[error("resolving {0} took longer than {RESOLVE_TIMEOUT:?}")]
    ResolveTimeout(String),
    /// Resolving the named host failed.
    #[error("resolving {name}: {source}")]
    Resolve {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The named host does not resolve to the address the sandbox connects to.
    #[error("{name} does not resolve to {ip}")]
    Elsewhere { name: String, ip: std::net::IpAddr },
    /// The address is internal.
    #[error("{name}: {refused}")]
    Internal {
        name: String,
        refused: super::policy::Refused,
    },
    /// Connecting upstream took too long.
    #[error("connecting took longer than {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    /// Connecting upstream failed.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// TLS to an address an IP/CIDR transform key covers, without an SNI a domain key
    /// names: no leaf is minted for it, and passing it on would skip the transforms.
    #[error(
        "TLS to an address with network.rules transforms, without a server name a rule \
         names: transforms inside TLS need a domain key matching the SNI, so the \
         connection is closed"
    )]
    TransformOverTlsWithoutName,
    /// TLS interception is unavailable (no CA).
    #[error("TLS to a host with network.rules transforms cannot be intercepted: {0}")]
    Interception(#[source] crate::egress::InterceptError),
    /// The sandbox's TLS handshake with the interception leaf failed.
    #[error("TLS handshake with the sandbox: {0}")]
    Handshake(#[source] io::Error),
    /// The destination's TLS failed (its certificate does not verify for the name...).
    #[error("TLS to {name} failed: {source}")]
    UpstreamTls {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// The first bytes of a connection and the name they carry.
pub(super) struct Head {
    /// The TLS SNI or HTTP `Host`, or why there is none.
    pub(super) name: Result<String, &'static str>,
    /// Everything read so far (to replay upstream).
    pub(super) bytes: Vec<u8>,
}

impl Head {
    /// Whether the connection starts with a TLS handshake record.
    pub(super) fn is_tls(&self) -> bool {
        self.bytes.first() == Some(&0x16)
    }
}

/// Reads the first bytes until they name a host (or say there is none), at most
/// [`MAX_SNIFF`] within [`SNIFF_TIMEOUT`].
pub(super) async fn read_head(client: &mut TcpStream) -> Result<Head, Refusal> {
    let mut bytes = Vec::with_capacity(2048);
    let name = tokio::time::timeout(SNIFF_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match sniff(&bytes) {
                Sniff::Name(name) => return Ok(Ok(name)),
                Sniff::NoName(why) => return Ok(Err(why)),
                Sniff::NeedMore if bytes.len() >= MAX_SNIFF => {
                    return Err(Refusal::NameTooLate);
                }
                Sniff::NeedMore => {}
            }
            let room = (MAX_SNIFF - bytes.len()).min(chunk.len());
            match client.read(&mut chunk[..room]).await {
                Ok(0) => return Err(Refusal::ClosedEarly),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(Refusal::Read(e)),
            }
        }
    })
    .await
    .map_err(|_| Refusal::SniffTimeout)??;
    Ok(Head { name, bytes })
}

/// Checks that `name` is an `allowOut` domain of `egress` that resolves (on the host) to
/// `destination`'s address.
pub(super) async fn verify_domain(
    name: &str,
    destination: SocketAddr,
    egress: &SandboxEgress,
) -> Result<(), Refusal> {
    if !egress.rules().allows_domain(name) {
        return Err(Refusal::NotAllowed(name.to_owned()));
    }
    if !resolves_to(name, destination).await? {
        return Err(Refusal::Elsewhere {
            name: name.to_owned(),
            ip: destination.ip(),
        });
    }
    Ok(())
}

/// Whether `name` resolves (on the host) to `destination`'s address.
pub(super) async fn resolves_to(name: &str, destination: SocketAddr) -> Result<bool, Refusal> {
    let answers = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((name, destination.port())),
    )
    .await
    .map_err(|_| Refusal::ResolveTimeout(name.to_owned()))?
    .map_err(|source| Refusal::Resolve {
        name: name.to_owned(),
        source,
    })?;
    let target = canonical(destination.ip());
    Ok(answers.into_iter().any(|a| canonical(a.ip()) == target))
}

/// Connects to `destination` (within [`CONNECT_TIMEOUT`]).
pub(super) async fn connect(destination: SocketAddr) -> Result<TcpStream, Refusal> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(destination))
        .await
        .map_err(|_| Refusal::ConnectTimeout)?
        .map_err(Refusal::Connect)
}

/// Reads the name, checks it against the rules and DNS, and connects. Returns the name,
/// the bytes read so far and the upstream connection, or why the connection is refused.
async fn check(
    client: &mut TcpStream,
    entry: &Pending,
) -> Result<(String, Vec<u8>, TcpStream), Refusal> {
    let destination = entry.destination;
    let head = read_head(client).await?;
    let name = head.name.map_err(Refusal::NoName)?;
    verify_domain(&name, destination, &entry.egress).await?;
    if let Some(refused) = entry.egress.internal(destination) {
        return Err(Refusal::Internal { name, refused });
    }
    let upstream = connect(destination).await?;
    Ok((name, head.bytes, upstream))
}
