//! The host's side of a sandbox's envd: HTTP/1.1 over the Unix socket envd serves inside
//! the sandbox (bind-mounted to a per-sandbox host directory). Sandboxes have no network
//! interface the host could reach, so this socket is the only way in.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full, combinators::BoxBody};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// Body type of everything the server sends (proxied bodies and its own).
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Starts an HTTP/1.1 client connection over `io`. The connection is driven by a task
/// that stops (dropping the connection, which fails any body still streaming) when
/// `alive` is cancelled: that is how kill and pause cut in-flight requests.
pub(crate) async fn handshake<I>(
    io: I,
    alive: CancellationToken,
) -> hyper::Result<SendRequest<Body>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        tokio::select! {
            _ = conn.with_upgrades() => {}
            _ = alive.cancelled() => {}
        }
    });
    Ok(sender)
}

/// Connects to the envd socket at `socket`.
pub(crate) async fn connect(
    socket: &Path,
    alive: CancellationToken,
) -> std::io::Result<SendRequest<Body>> {
    let stream = UnixStream::connect(socket).await?;
    handshake(stream, alive)
        .await
        .map_err(std::io::Error::other)
}

/// One request on a fresh connection; returns the status and the whole body.
async fn request(socket: &Path, request: Request<Body>) -> Result<(StatusCode, Bytes), String> {
    let mut sender = connect(socket, CancellationToken::new())
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Waits until envd answers `GET /health` with 204, polling quickly at first (envd is
/// usually up within milliseconds) and more slowly later. `alive` is asked between
/// attempts so a crashed envd fails fast instead of waiting out the whole `timeout`.
pub(crate) async fn wait_healthy(
    socket: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(500);
    let mut last_error;
    loop {
        if socket.exists() {
            let req = Request::get("/health")
                .header(header::HOST, "localhost")
                .body(empty())
                .expect("static request");
            match request(socket, req).await {
                Ok((StatusCode::NO_CONTENT, _)) => return Ok(()),
                Ok((status, _)) => last_error = format!("GET /health answered {status}"),
                Err(e) => last_error = e,
            }
        } else {
            last_error = format!("{} does not exist yet", socket.display());
        }
        if !alive() {
            return Err(format!("envd exited before it was ready ({last_error})"));
        }
        if start.elapsed() > timeout {
            return Err(format!("envd not ready after {timeout:?}: {last_error}"));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// `POST /init` with `body` (env vars, token, default user and workdir).
pub(crate) async fn init(
    socket: &Path,
    token: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let req = Request::post("/init")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Access-Token", token)
        .body(full(body.to_string()))
        .map_err(|e| e.to_string())?;
    match request(socket, req).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, body) => Err(format!(
            "POST /init answered {status}: {}",
            String::from_utf8_lossy(&body)
        )),
    }
}
