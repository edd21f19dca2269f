//! The transform proxy: where the domain proxy hands a redirected connection whose
//! destination has `network.rules` transforms (see `transform.rs`).
//!
//! - **TLS** (the first byte is a handshake record) whose SNI a domain key names is
//!   **intercepted**: terminated with a leaf for that name signed by the server's CA
//!   (`../interception.rs`; sandboxes created with rules trust it), ALPN `http/1.1`
//!   only, then served as HTTP/1 below; each request goes to the original, checked
//!   destination over TLS verified for the SNI with the host's roots. A certificate that
//!   does not verify is answered 502 with the reason, never a plain or unverified
//!   fallback. Inside, a domain key's headers go only to requests naming the SNI (the
//!   name the destination proved). TLS that an IP/CIDR key covers without such a name is
//!   closed and the refusal logged: no name to mint a leaf for or verify against, and
//!   passing it on without the transform would be silently wrong (fail closed). Other
//!   TLS is spliced as the domain proxy would (after its domain check when one is due);
//!   no leaf is ever minted for a name without a rule.
//! - **HTTP/1**: a hyper server parses every request on the connection (keep-alive,
//!   chunked or streamed bodies both ways), and a hyper client forwards each one to the
//!   **original, checked destination** — never to what the request names: a different
//!   `Host` or an absolute URI changes which rules match, not where the request goes.
//!   The rule headers replace any the sandbox sent under those names. A domain key's
//!   headers are only added when the request's name resolves (on the host) to the
//!   destination address, so naming the rule's host in a request to another server gets
//!   no secret. The answer streams back frame by frame (server-sent events stay live).
//! - **What the values reach**: the destination, in clear text (plain HTTP) or inside
//!   TLS to the verified name. A
//!   destination that echoes request headers back (an httpbin `/headers`) shows them to
//!   the sandbox: only put rules on hosts that do not.
//! - **Upgrades** are refused with 426 (a WebSocket-first client falls back to HTTP at
//!   once) and `CONNECT` with 501: after a 101 or a tunnel the proxy could no longer see
//!   requests, so they would leave without their transforms.
//! - **Bounds**: a request head larger than [`MAX_HEAD`] is answered 431 and the
//!   connection closed (hyper stops reading there); a head must arrive within
//!   [`HEAD_TIMEOUT`]. The first request must name its host within its first 16 KiB
//!   (the sniff that tells TLS from HTTP), or the connection is closed.
//! - **Only HTTP/1 and TLS pass**: the client must speak first. A protocol whose server
//!   speaks first (SSH, SMTP) to an address an IP/CIDR key covers waits for the sniff's
//!   timeout and is closed: a transform key makes its address HTTP-only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::super::SandboxEgress;
use super::{Pending, Refusal, connect, read_head, resolves_to, splice, verify_domain};

/// Largest request or response head (request line or status line and headers), bytes.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most headers in one request or response.
const MAX_HEADERS: usize = 128;
/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

type Body = BoxBody<Bytes, hyper::Error>;

#[cfg(test)]
#[path = "transform_proxy_tests.rs"]
mod tests;

/// Serves one redirected connection (see the module docs).
pub(super) async fn serve(mut client: TcpStream, entry: Pending, stop: CancellationToken) {
    let destination = entry.destination;
    let egress = entry.egress.clone();
    let intercepted = egress
        .rules()
        .transforms()
        .intercepts(destination.ip(), destination.port());
    if !intercepted && !entry.check_domain {
        // The rules changed between the connect and now: nothing to transform or check
        // any more, so the bytes pass untouched (whatever the protocol).
        if let Some(refused) = egress.internal(destination) {
            egress.log_refused(&destination, &refused);
            return;
        }
        match connect(destination).await {
            Ok(upstream) => splice(client, upstream, &stop).await,
            Err(why) => egress.log_refused(&destination, &why),
        }
        return;
    }
    let head = match read_head(&mut client).await {
        Ok(head) => head,
        Err(why) => {
            egress.log_refused(&destination, &why);
            return;
        }
    };
    // TLS whose SNI a domain key names is intercepted; TLS that an IP/CIDR key covers
    // without such a name is closed (no leaf is minted for a name without a rule, and
    // without a name there is none to verify the destination against).
    let mut intercept = None;
    if head.is_tls() {
        let rules = egress.rules();
        let transforms = rules.transforms();
        match &head.name {
            Ok(name) if transforms.names(name) => intercept = Some(name.clone()),
            _ if transforms.covers_ip(destination.ip()) => {
                egress.log_refused(&destination, &Refusal::TransformOverTlsWithoutName);
                return;
            }
            _ => {}
        }
    }
    if entry.check_domain {
        // The first request's name opens the connection, as in the domain proxy; later
        // requests (HTTP) are checked one by one below.
        let checked = match &head.name {
            Ok(name) => verify_domain(name, destination, &egress).await,
            Err(why) => Err(Refusal::NoName(why)),
        };
        if let Err(why) = checked {
            egress.log_refused(&destination, &why);
            return;
        }
    }
    if let Some(refused) = egress.internal(destination) {
        egress.log_refused(&destination, &refused);
        return;
    }
    if head.is_tls() && intercept.is_none() {
        let mut upstream = match connect(destination).await {
            Ok(upstream) => upstream,
            Err(why) => {
                egress.log_refused(&destination, &why);
                return;
            }
        };
        if upstream.write_all(&head.bytes).await.is_ok() {
            splice(client, upstream, &stop).await;
        }
        return;
    }
    // Latency only: a socket without TCP_NODELAY still carries the traffic.
    let _ = client.set_nodelay(true);
    let io = Prefixed {
        head: Bytes::from(head.bytes),
        inner: client,
    };
    let Some(sni) = intercept else {
        let state = Connection::new(destination, egress, entry.check_domain, None);
        serve_http(TokioIo::new(io), state, stop).await;
        return;
    };
    let tls = match terminate(io, &sni, &egress).await {
        Ok(tls) => tls,
        Err(why) => {
            egress.log_refused(&destination, &why);
            return;
        }
    };
    tracing::debug!(sandbox = egress.label(), %destination, sni, "TLS intercepted for transforms");
    let state = Connection::new(destination, egress, entry.check_domain, Some(tls.1));
    serve_http(TokioIo::new(tls.0), state, stop).await;
}

/// Terminates the sandbox's TLS with a leaf for `sni` signed by the interception CA.
/// Returns the decrypted stream and how to reach the destination over TLS.
async fn terminate(
    io: Prefixed,
    sni: &str,
    egress: &SandboxEgress,
) -> Result<(tokio_rustls::server::TlsStream<Prefixed>, UpstreamTls), Refusal> {
    let interceptor = egress
        .egress()
        .interceptor()
        .map_err(Refusal::Interception)?;
    let config = interceptor
        .server_config(sni)
        .map_err(Refusal::Interception)?;
    let server_name = ServerName::try_from(sni.to_owned())
        .map_err(|_| Refusal::NoName("the SNI is not a DNS name"))?;
    let accepted = tokio::time::timeout(
        HEAD_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(config).accept(io),
    )
    .await
    .map_err(|_| Refusal::Handshake(std::io::ErrorKind::TimedOut.into()))?
    .map_err(Refusal::Handshake)?;
    Ok((
        accepted,
        UpstreamTls {
            sni: sni.to_owned(),
            server_name,
            config: interceptor.upstream(),
        },
    ))
}

/// Serves HTTP/1 on `io` (plain, or the decrypted side of intercepted TLS), forwarding
/// each request through `state`.
async fn serve_http<I>(io: TokioIo<I>, state: Connection, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let destination = state.destination;
    let state = Arc::new(state);
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(state.forward(request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let connection = builder.serve_connection(io, service);
    tokio::select! {
        served = connection => {
            if let Err(error) = served {
                tracing::debug!(%destination, %error, "transform proxy: connection ended");
            }
        }
        _ = stop.cancelled() => {}
    }
}

/// How an intercepted connection reaches its destination: TLS verified for the SNI the
/// sandbox sent.
struct UpstreamTls {
    sni: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

/// One sandbox connection's state: its checked destination and the upstream connection
/// its requests are forwarded on (requests of one HTTP/1 connection come one at a time).
struct Connection {
    destination: SocketAddr,
    egress: SandboxEgress,
    check_domain: bool,
    /// Intercepted TLS: the sandbox's SNI and the upstream TLS settings.
    tls: Option<UpstreamTls>,
    upstream: Mutex<Upstream>,
}

#[derive(Default)]
struct Upstream {
    sender: Option<hyper::client::conn::http1::SendRequest<Incoming>>,
    /// Names already resolved: whether each resolves to the destination.
    resolved: HashMap<String, bool>,
}

/// Headers that belong to one connection, not to the message: never forwarded.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names the `Connection` header lists are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        // The message's framing is never the connection's to drop.
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The host a request names: its absolute URI's, else its `Host`'s (lowercase, without
/// port or trailing dot).
fn request_name(request: &Request<Incoming>) -> Option<String> {
    let host = match request.uri().host() {
        Some(host) => host.to_owned(),
        None => {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            value
                .parse::<http::uri::Authority>()
                .ok()?
                .host()
                .to_owned()
        }
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

impl Connection {
    fn new(
        destination: SocketAddr,
        egress: SandboxEgress,
        check_domain: bool,
        tls: Option<UpstreamTls>,
    ) -> Self {
        Self {
            destination,
            egress,
            check_domain,
            tls,
            upstream: Mutex::new(Upstream::default()),
        }
    }

    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let destination = self.destination;
        if request.method() == Method::CONNECT {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "courier-sandboxd: CONNECT is not proxied to a host with network transform \
                 rules",
            );
        }
        if request.headers().contains_key(header::UPGRADE) {
            // 426, as Courier's gateway and OpenAI answer it: a client that tries a
            // WebSocket first (Codex's Responses API) reads 426 as "not here" and uses
            // plain HTTP at once. A 501 made Codex retry five times, each an error event
            // in the agent's stream, before falling back.
            return text(
                StatusCode::UPGRADE_REQUIRED,
                "courier-sandboxd: protocol upgrades are not proxied to a host with network \
                 transform rules; use plain HTTP",
            );
        }
        // An absolute URI names the host (RFC 9112 §3.2.2): forward it as the Host, so
        // that the name the rules matched is the name the server sees.
        if let Some(authority) = request.uri().authority().cloned() {
            match HeaderValue::from_str(authority.as_str()) {
                Ok(host) => {
                    request.headers_mut().insert(header::HOST, host);
                }
                Err(_) => return text(StatusCode::BAD_REQUEST, "invalid request target"),
            }
        }
        let name = request_name(&request);
        let rules = self.egress.rules();
        let mut upstream = self.upstream.lock().await;
        if self.check_domain {
            let allowed = match &name {
                Some(name) if rules.allows_domain(name) => {
                    upstream.resolves(name, destination).await
                }
                _ => false,
            };
            if !allowed {
                let why = format!(
                    "{} is not an allowOut domain resolving to {}",
                    name.as_deref().unwrap_or("a request without a host"),
                    destination.ip()
                );
                self.egress.log_refused(&destination, &why);
                return text(
                    StatusCode::FORBIDDEN,
                    "courier-sandboxd: egress refused for this host",
                );
            }
        }
        let transforms = rules.transforms();
        // Inside intercepted TLS a domain key applies to the name the destination's
        // certificate is verified for only: a request naming another ruled host (a
        // shared front) gets no header meant for that host.
        let sni = self.tls.as_ref().map(|t| t.sni.as_str());
        let verified_name = match &name {
            Some(name) if sni.is_some_and(|sni| sni != name) => None,
            Some(name) if transforms.names(name) => {
                if upstream.resolves(name, destination).await {
                    Some(name.as_str())
                } else {
                    // A request naming the rule's host sent to another address: its
                    // headers are not for this server.
                    tracing::info!(
                        sandbox = self.egress.label(),
                        %destination,
                        name,
                        "transform not applied: the name does not resolve to the destination"
                    );
                    None
                }
            }
            _ => None,
        };
        let set = transforms.headers_for(destination.ip(), verified_name);
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        // hyper decoded the body by its Transfer-Encoding; a Content-Length beside it
        // would make the forwarded message ambiguous to the server (request smuggling).
        if headers.contains_key(header::TRANSFER_ENCODING) {
            headers.remove(header::CONTENT_LENGTH);
        }
        for h in &set {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_str(h.value.expose()),
            ) else {
                // Validated when the rules were parsed.
                continue;
            };
            // `insert` replaces every value the sandbox sent under that name.
            headers.insert(n, v);
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = match path.parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => return text(StatusCode::BAD_REQUEST, "invalid request target"),
        };
        *request.version_mut() = http::Version::HTTP_11;
        if !set.is_empty() {
            tracing::debug!(
                sandbox = self.egress.label(),
                %destination,
                headers = set.len(),
                "transform applied"
            );
        }
        let sender = match upstream.sender(destination, self.tls.as_ref()).await {
            Ok(sender) => sender,
            Err(why) => {
                self.egress.log_refused(&destination, &why);
                let message = match &why {
                    // The sandbox learns why (its own request's destination failed
                    // verification), never gets an unverified answer.
                    Refusal::UpstreamTls { .. } => format!("courier-sandboxd: {why}"),
                    _ => "courier-sandboxd: the destination could not be reached".to_owned(),
                };
                return text(StatusCode::BAD_GATEWAY, &message);
            }
        };
        match sender.send_request(request).await {
            Ok(response) => {
                drop(upstream);
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed())
            }
            Err(error) => {
                upstream.sender = None;
                tracing::debug!(%destination, %error, "transform proxy: upstream request failed");
                text(
                    StatusCode::BAD_GATEWAY,
                    "courier-sandboxd: the destination did not answer",
                )
            }
        }
    }
}

impl Upstream {
    /// Whether `name` resolves to `destination`'s address (cached per connection).
    async fn resolves(&mut self, name: &str, destination: SocketAddr) -> bool {
        if let Some(ok) = self.resolved.get(name) {
            return *ok;
        }
        let ok = resolves_to(name, destination).await.unwrap_or(false);
        // Bounded: a connection naming endless hosts re-resolves instead of growing.
        if self.resolved.len() < 64 {
            self.resolved.insert(name.to_owned(), ok);
        }
        ok
    }

    /// The open upstream connection, or a new one to `destination` (over TLS verified
    /// for `tls`'s name when the sandbox's connection was intercepted).
    async fn sender(
        &mut self,
        destination: SocketAddr,
        tls: Option<&UpstreamTls>,
    ) -> Result<&mut hyper::client::conn::http1::SendRequest<Incoming>, Refusal> {
        let usable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = connect(destination).await?;
            let _ = stream.set_nodelay(true);
            let sender = match tls {
                None => handshake(stream).await?,
                Some(tls) => {
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    let stream = tokio::time::timeout(
                        HEAD_TIMEOUT,
                        connector.connect(tls.server_name.clone(), stream),
                    )
                    .await
                    .map_err(|_| Refusal::UpstreamTls {
                        name: tls.sni.clone(),
                        source: std::io::ErrorKind::TimedOut.into(),
                    })?
                    .map_err(|source| Refusal::UpstreamTls {
                        name: tls.sni.clone(),
                        source,
                    })?;
                    handshake(stream).await?
                }
            };
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("set above"))
    }
}

/// An HTTP/1 client connection on `stream`, its connection task spawned.
async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Refusal::Connect(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "transform proxy: upstream connection ended");
        }
    });
    Ok(sender)
}

/// A stream whose first bytes were already read: they are replayed before the rest.
struct Prefixed {
    head: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            let chunk = self.head.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
