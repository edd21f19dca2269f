//! The sandbox proxy (protocol reference §2.3, §2.4, §5.7): one HTTP/1.1 listener for
//! all sandboxes.
//!
//! Routing: when the Host is an IP, `localhost` or `sandbox.<domain>` and the
//! `E2b-Sandbox-Id` header is present, the sandbox and port come from `E2b-Sandbox-Id` /
//! `E2b-Sandbox-Port` (that is how `E2B_SANDBOX_URL` clients talk); otherwise from the
//! Host's left-most label `<port>-<id>`.
//!
//! Port 49983 is envd itself: the request is forwarded as is over envd's Unix socket,
//! bodies streaming both ways (long Connect streams included). Any other port goes
//! through envd's tunnel (`GET /tunnel/{port}`, `Upgrade: courier-tunnel`) to
//! `127.0.0.1:<port>` inside the sandbox, and the request (HTTP or a WebSocket upgrade)
//! is passed through it.
//!
//! Ports other than envd's of a sandbox created with `network.allowPublicTraffic: false`
//! require its traffic access token in `e2b-traffic-access-token` (403 otherwise, E2B's
//! `{sandboxId, message, code}`); envd's port keeps using envd's own access token.
//!
//! A sandbox created with `network.maskRequestHost` gets every request to its ports
//! (envd's excepted) with that `Host` (`${PORT}` replaced by the port), as on E2B.
//!
//! A paused sandbox created with `autoResume: {enabled: true}` is resumed by a request
//! that could reach it (see `auto_resume`) and the request is served.
//!
//! A signed `/files` URL (`signature` in the query) that names no sandbox goes to the
//! sandbox whose envd access token produced the signature (`route_signed_files`); no
//! match answers 401 `{"code":401,"message":"invalid signature"}`.
//!
//! A sandbox that is unknown, killed or paused answers 502
//! `{"sandboxId":…,"message":"The sandbox was not found","code":502}`, the shape the SDKs
//! turn into "sandbox not running". Killing or pausing a sandbox cancels its token, which
//! drops every upstream connection of it and so cuts in-flight streams.

use std::net::IpAddr;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::envd_link::{self, Body};
use crate::server::Sandboxd;

/// envd's port.
pub const ENVD_PORT: u16 = 49983;

/// The header carrying a private sandbox's traffic access token.
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Port inside the sandbox.
    pub port: u16,
}

fn is_sandbox_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Parses `<port>-<id>` from the left-most label of `host` (port suffix stripped).
fn route_from_host(host: &str) -> Option<Route> {
    let label = host.split('.').next()?;
    let (port, id) = label.split_once('-')?;
    let port = port.parse().ok()?;
    is_sandbox_id(id).then(|| Route {
        sandbox_id: id.to_owned(),
        port,
    })
}

/// Why a proxied request cannot be routed (answered 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The `E2b-Sandbox-Port` header is no port number.
    #[error("invalid E2b-Sandbox-Port header")]
    InvalidPort,
    /// The `E2b-Sandbox-Id` header is no sandbox id.
    #[error("invalid sandbox id {0:?}")]
    InvalidSandboxId(String),
    /// Neither the host nor the headers name a sandbox.
    #[error(
        "cannot route host {0:?}: expected <port>-<sandboxId>.<domain> or the E2b-Sandbox-Id header"
    )]
    Unroutable(String),
}

/// Where the request goes, or why it cannot be routed.
pub fn route(headers: &http::HeaderMap, domain: Option<&str>) -> Result<Route, RouteError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Strip the port (IPv6 literals keep their brackets).
    let hostname = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let shared_host = hostname == "localhost"
        || hostname
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        || domain.is_some_and(|d| hostname == format!("sandbox.{d}"));
    let header_route = || -> Option<Result<Route, RouteError>> {
        let id = headers.get("e2b-sandbox-id")?.to_str().ok()?.to_owned();
        let port = match headers.get("e2b-sandbox-port") {
            Some(v) => match v.to_str().ok().and_then(|p| p.parse().ok()) {
                Some(p) => p,
                None => return Some(Err(RouteError::InvalidPort)),
            },
            None => ENVD_PORT,
        };
        if !is_sandbox_id(&id) {
            return Some(Err(RouteError::InvalidSandboxId(id)));
        }
        Some(Ok(Route {
            sandbox_id: id,
            port,
        }))
    };
    if shared_host && let Some(route) = header_route() {
        return route;
    }
    if let Some(route) = route_from_host(hostname) {
        return Ok(route);
    }
    header_route().unwrap_or_else(|| Err(RouteError::Unroutable(host.to_owned())))
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(envd_link::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The 502 the SDKs read as "sandbox gone".
fn not_found(id: &str) -> Response<Body> {
    json_response(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({"sandboxId": id, "message": "The sandbox was not found", "code": 502}),
    )
}

/// The 403 for a missing or wrong traffic access token (E2B's messages).
fn traffic_token_refused(id: &str, missing: bool) -> Response<Body> {
    let message = if missing {
        format!(
            "Sandbox is secured with traffic access token. Token header '{TRAFFIC_TOKEN_HEADER}' is missing"
        )
    } else {
        "Sandbox is secured with traffic access token. Provided token is invalid.".to_owned()
    };
    json_response(
        StatusCode::FORBIDDEN,
        serde_json::json!({"sandboxId": id, "message": message, "code": 403}),
    )
}

/// Compares secrets in time that depends on their lengths only.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The refusal of a request to `port`, if it is refused: envd's port always passes
/// (envd checks its own token), other ports when the sandbox is public or the request
/// carries its token.
fn traffic_token_refusal(
    id: &str,
    port: u16,
    token: Option<&crate::state::Secret>,
    headers: &http::HeaderMap,
) -> Option<Response<Body>> {
    let token = token.filter(|_| port != ENVD_PORT)?;
    match headers.get(TRAFFIC_TOKEN_HEADER) {
        None => Some(traffic_token_refused(id, true)),
        Some(given) if same_secret(given.as_bytes(), token.expose().as_bytes()) => None,
        Some(_) => Some(traffic_token_refused(id, false)),
    }
}

fn port_closed(id: &str, port: u16) -> Response<Body> {
    json_response(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({
            "sandboxId": id,
            "port": port,
            "message": "The sandbox is running but port is not open",
            "code": 502,
        }),
    )
}

/// The signing operation of a signed `/files` URL (`read` for `GET`, `write` for `POST`),
/// `None` for any other request.
fn signed_files_operation<T>(request: &Request<T>) -> Option<&'static str> {
    if request.uri().path() != "/files" {
        return None;
    }
    let has_signature = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("signature=")));
    if !has_signature {
        return None;
    }
    match *request.method() {
        http::Method::GET => Some("read"),
        http::Method::POST => Some("write"),
        _ => None,
    }
}

/// One query value decoded the way envd's query parser decodes it (`+` is a space).
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            let value = value.replace('+', " ");
            percent_encoding::percent_decode_str(&value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The v1 signature of a `/files` URL (the SDKs' algorithm): `v1_` + unpadded base64 of
/// `sha256("<path>:<operation>:<user>:<token>[:<expiration>]")`.
fn file_signature(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<&str>,
) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut text = format!("{path}:{operation}:{user}:{token}");
    if let Some(expiration) = expiration {
        text.push(':');
        text.push_str(expiration);
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Routes a signed `/files` URL that names no sandbox (the SDKs build download and upload
/// URLs on the sandbox URL alone, and with `E2B_SANDBOX_URL` set that is this shared
/// listener): the sandbox is the one whose envd access token produced the signature.
/// Only a holder of that token can produce one, so this reveals nothing and opens
/// nothing: envd still checks the signature itself (path, user, operation, expiry);
/// the proxy only picks whose envd checks it. `None` when no sandbox's token matches.
fn route_signed_files<T>(server: &Sandboxd, request: &Request<T>) -> Option<Route> {
    let operation = signed_files_operation(request)?;
    let query = request.uri().query()?;
    let signature = query_value(query, "signature")?;
    let path = query_value(query, "path").unwrap_or_default();
    let user = query_value(query, "username").unwrap_or_default();
    let expiration = query_value(query, "signature_expiration");
    server
        .list()
        .into_iter()
        .find(|record| {
            let expected = file_signature(
                &path,
                operation,
                &user,
                record.envd_access_token.expose(),
                expiration.as_deref(),
            );
            same_secret(signature.as_bytes(), expected.as_bytes())
        })
        .map(|record| Route {
            sandbox_id: record.sandbox_id,
            port: ENVD_PORT,
        })
}

fn wants_upgrade<T>(request: &Request<T>) -> bool {
    request.headers().contains_key(header::UPGRADE)
}

/// Serves the proxy on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    server: Sandboxd,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let stop_on = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_on.cancel();
    });
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = stop.cancelled() => return Ok(()),
        };
        // A second handle on the socket, to reset it when a sandbox dies mid-response
        // (see `reset_connection`); without one the connection is only ever closed.
        let socket = nix::unistd::dup(&stream).ok();
        // No delayed-ACK stalls between the SDK's small writes and ours.
        let stream = courier_envd::tcp::LowLatencyStream::from(stream);
        let server = server.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let died = CancellationToken::new();
            let conn_died = died.clone();
            let service = service_fn(move |request| {
                let server = server.clone();
                let died = conn_died.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(server, request, died).await) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
                _ = died.cancelled() => {}
            }
            if died.is_cancelled()
                && let Some(socket) = &socket
            {
                reset_connection(socket);
            }
            drop(socket);
        });
    }
}

/// Resumes paused sandbox `entry` for a request to `port` when it was created with
/// auto-resume (E2B's `autoResume.enabled`), returning its new run's token; `None` when
/// it stays paused (no auto-resume, the request could not be served anyway, or the
/// resume failed).
///
/// Only a request that could reach the sandbox wakes it: the traffic token of a private
/// sandbox was checked before this, and a request to envd's port must carry the
/// sandbox's envd access token (envd would refuse it otherwise), so knowing a sandbox's
/// id alone, as another sandbox might, resumes nothing but a public port of a sandbox
/// whose creator asked for exactly that.
async fn auto_resume(
    server: &Sandboxd,
    entry: &crate::server::Entry,
    port: u16,
    headers: &http::HeaderMap,
) -> Option<CancellationToken> {
    let record = entry.record();
    let timeout = record.auto_resume_timeout_secs?;
    if port == ENVD_PORT {
        let token = headers.get("x-access-token")?;
        if !same_secret(
            token.as_bytes(),
            record.envd_access_token.expose().as_bytes(),
        ) {
            return None;
        }
    }
    let timeout = std::time::Duration::from_secs(timeout);
    server.log_event(
        &record.sandbox_id,
        crate::server::logs::LogLevel::Info,
        "auto_resume",
        format!("traffic to port {port} reached the paused sandbox: resuming (autoResume)"),
    );
    match server.connect(&record.sandbox_id, timeout).await {
        Ok((_, resumed)) => {
            if resumed {
                tracing::info!(sandbox = %record.sandbox_id, port, "resumed by traffic (autoResume)");
            }
            entry.alive()
        }
        Err(error) => {
            tracing::warn!(sandbox = %record.sandbox_id, %error, "auto-resume failed");
            None
        }
    }
}

/// Makes the last close of `socket` send a TCP reset instead of a FIN.
///
/// A response whose sandbox was killed or paused mid-stream ends in a reset, the way an
/// HTTP/2 stream is reset on E2B: the SDKs read a reset as a transport failure, probe
/// the sandbox's health (502 here) and report "the sandbox was killed or reached its end
/// of life", where an orderly close mid-body reads as a protocol error instead.
fn reset_connection(socket: &std::os::fd::OwnedFd) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    if let Err(error) =
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Linger, &linger)
    {
        tracing::debug!(%error, "could not arm a connection reset");
    }
}

async fn handle(
    server: Sandboxd,
    mut request: Request<Incoming>,
    died: CancellationToken,
) -> Response<Body> {
    let route = match route(request.headers(), server.config().domain.as_deref()) {
        Ok(route) => route,
        Err(RouteError::Unroutable(_)) if signed_files_operation(&request).is_some() => {
            match route_signed_files(&server, &request) {
                Some(route) => route,
                None => {
                    return json_response(
                        StatusCode::UNAUTHORIZED,
                        serde_json::json!({"code": 401, "message": "invalid signature"}),
                    );
                }
            }
        }
        Err(error) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"code": 400, "message": error.to_string()}),
            );
        }
    };
    let id = route.sandbox_id.as_str();
    let Some(entry) = server.entry(id) else {
        return not_found(id);
    };
    if let Some(refused) = traffic_token_refusal(
        id,
        route.port,
        entry.record().traffic_access_token.as_ref(),
        request.headers(),
    ) {
        return refused;
    }
    let alive = match entry.alive() {
        Some(alive) => alive,
        None => match auto_resume(&server, &entry, route.port, request.headers()).await {
            Some(alive) => alive,
            None => return not_found(id),
        },
    };
    let Ok(mut sender) = envd_link::connect(&entry.envd, alive.clone()).await else {
        // envd is gone (the sandbox is dying): the same answer as for a dead sandbox.
        return not_found(id);
    };
    if route.port != ENVD_PORT {
        let token = entry.record().envd_access_token;
        let tunnel = Request::get(format!("/tunnel/{}", route.port))
            .header(header::HOST, "localhost")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "courier-tunnel")
            .header("X-Access-Token", token.expose())
            .body(envd_link::empty())
            .expect("static request");
        let response = match sender.send_request(tunnel).await {
            Ok(response) => response,
            Err(_) => return not_found(id),
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return port_closed(id, route.port);
        }
        let upgraded = match hyper::upgrade::on(response).await {
            Ok(upgraded) => upgraded,
            Err(_) => return port_closed(id, route.port),
        };
        sender = match envd_link::handshake(TokioIo::new(upgraded), alive.clone()).await {
            Ok(sender) => sender,
            Err(_) => return port_closed(id, route.port),
        };
    }
    if route.port != ENVD_PORT
        && let Some(host) = masked_host(
            entry.record().network.mask_request_host.as_deref(),
            route.port,
        )
    {
        request.headers_mut().insert(header::HOST, host);
    }
    let client_upgrade = wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let request = request.map(|body| body.boxed());
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(sandbox = id, error = %e, "upstream request failed");
            return if alive.is_cancelled() {
                not_found(id)
            } else {
                json_response(
                    StatusCode::BAD_GATEWAY,
                    serde_json::json!({"sandboxId": id, "code": 502, "message": format!("upstream error: {e}")}),
                )
            };
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(bridge(client_upgrade, upstream_upgrade, alive));
        return response.map(|body| body.boxed());
    }
    // A body cut because the sandbox died resets the client's connection (see
    // `reset_connection`); one that fails for another reason is closed as hyper does.
    response.map(move |body| {
        body.map_err(move |error| {
            if alive.is_cancelled() {
                died.cancel();
            }
            error
        })
        .boxed()
    })
}

/// The `Host` a request to `port` arrives with under E2B's `maskRequestHost` (`${PORT}`
/// replaced by the port); `None` without a mask (the client's Host is kept).
fn masked_host(mask: Option<&str>, port: u16) -> Option<HeaderValue> {
    let host = mask?.replace("${PORT}", &port.to_string());
    // Validated when the sandbox was created; a value that is not a header value is
    // dropped rather than forwarded broken.
    HeaderValue::from_str(&host).ok()
}

/// Pipes an upgraded client connection (e.g. a WebSocket) to the upgraded upstream
/// until either side closes or the sandbox dies.
async fn bridge(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    alive: CancellationToken,
) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = alive.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn routes_by_headers_on_ip_and_localhost_hosts() {
        for host in [
            "127.0.0.1:3001",
            "localhost",
            "[::1]:80",
            "sandbox.courier.test",
        ] {
            let h = headers(&[
                ("host", host),
                ("e2b-sandbox-id", "abc123"),
                ("e2b-sandbox-port", "49983"),
            ]);
            assert_eq!(
                route(&h, Some("courier.test")).unwrap(),
                Route {
                    sandbox_id: "abc123".into(),
                    port: 49983
                },
                "{host}"
            );
        }
    }

    #[test]
    fn routes_by_host_label() {
        let h = headers(&[("host", "8000-abc123.courier.test:3001")]);
        assert_eq!(
            route(&h, Some("courier.test")).unwrap(),
            Route {
                sandbox_id: "abc123".into(),
                port: 8000
            }
        );
        // The host wins over headers on a per-sandbox host.
        let h = headers(&[
            ("host", "8000-abc123.courier.test"),
            ("e2b-sandbox-id", "abc123"),
            ("e2b-sandbox-port", "49983"),
        ]);
        assert_eq!(route(&h, Some("courier.test")).unwrap().port, 8000);
    }

    #[test]
    fn private_sandboxes_need_their_traffic_token_on_every_port_but_envds() {
        // An attacker who knows a private sandbox's id tries its ports without the
        // token, with a wrong one, and with one of the right length.
        let token = crate::state::Secret::new("a".repeat(64));
        let refused = |port, headers: &http::HeaderMap| {
            traffic_token_refusal("sbx", port, Some(&token), headers).map(|r| r.status())
        };
        let none = headers(&[]);
        assert_eq!(refused(8000, &none), Some(StatusCode::FORBIDDEN));
        let wrong = headers(&[("e2b-traffic-access-token", &"b".repeat(64))]);
        assert_eq!(refused(8000, &wrong), Some(StatusCode::FORBIDDEN));
        let short = headers(&[("e2b-traffic-access-token", "a")]);
        assert_eq!(refused(8000, &short), Some(StatusCode::FORBIDDEN));
        let right = headers(&[("E2B-Traffic-Access-Token", &"a".repeat(64))]);
        assert_eq!(refused(8000, &right), None);
        // envd's port uses envd's own token; public sandboxes need none.
        assert_eq!(refused(ENVD_PORT, &none), None);
        assert!(traffic_token_refusal("sbx", 8000, None, &none).is_none());
    }

    #[test]
    fn mask_request_host_replaces_the_port_placeholder() {
        assert_eq!(
            masked_host(Some("custom-host.example.com:${PORT}"), 8080).unwrap(),
            "custom-host.example.com:8080"
        );
        assert_eq!(
            masked_host(Some("${PORT}-app.example.com"), 3000).unwrap(),
            "3000-app.example.com"
        );
        assert!(masked_host(None, 8080).is_none());
        assert!(masked_host(Some("bad\nhost"), 8080).is_none());
    }

    #[test]
    fn rejects_unroutable_requests() {
        assert!(route(&headers(&[("host", "example.com")]), None).is_err());
        assert!(
            route(
                &headers(&[("host", "localhost"), ("e2b-sandbox-id", "BAD-id")]),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn file_signatures_match_the_sdks_algorithm() {
        // Vectors computed with the official Python SDK's formula (e2b/sandbox/signature.py).
        assert_eq!(
            file_signature("dir/a b.txt", "read", "user", "tok123", Some("1700000000")),
            "v1_j5fxNq+0gAyldBDA0/DMbGeK9V2mNUzQm/n/wXdX3f0"
        );
        assert_eq!(
            file_signature("x.txt", "write", "", "tok123", None),
            "v1_aLdHP72DZ35Gxte3Z0H3BBNZlIJiiK/1D14o/T87Ew8"
        );
    }

    #[test]
    fn signed_files_requests_are_recognised_by_route_method_and_query() {
        let request =
            |method: &str, uri: &str| Request::builder().method(method).uri(uri).body(()).unwrap();
        assert_eq!(
            signed_files_operation(&request("GET", "/files?path=a&signature=v1_x")),
            Some("read")
        );
        assert_eq!(
            signed_files_operation(&request("POST", "/files?signature=v1_x&path=a")),
            Some("write")
        );
        // Anything else is routed (or refused) as before: no signature, another route or
        // method never reaches the signature lookup.
        assert_eq!(
            signed_files_operation(&request("GET", "/files?path=a")),
            None
        );
        assert_eq!(
            signed_files_operation(&request("GET", "/health?signature=v1_x")),
            None
        );
        assert_eq!(
            signed_files_operation(&request("DELETE", "/files?signature=v1_x")),
            None
        );
        // Values decode as envd decodes them, `+` included.
        let query = "path=dir%2Fa%20b+c.txt&signature=v1_a%2Bb%2F&username=user";
        assert_eq!(query_value(query, "path").as_deref(), Some("dir/a b c.txt"));
        assert_eq!(query_value(query, "signature").as_deref(), Some("v1_a+b/"));
        assert_eq!(query_value(query, "signature_expiration"), None);
    }
}
