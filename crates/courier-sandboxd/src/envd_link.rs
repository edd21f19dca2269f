//! The host's side of a sandbox's envd: HTTP/1.1 over the sandbox's control socket
//! ([`Runtime::connect_control`]: a socket the runtime created where the sandbox cannot
//! reach it, or — under gVisor — one opened without following anything the sandbox
//! planted, and always checked to be served by a process of the sandbox). Sandboxes have
//! no network interface the host could reach, so this socket is the only way in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full, combinators::BoxBody};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

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

/// How to reach one sandbox's envd: cheap to clone, opens a checked connection per
/// [`connect`].
#[derive(Clone)]
pub(crate) struct EnvdEndpoint {
    runtime: Arc<Runtime>,
    id: String,
}

impl std::fmt::Debug for EnvdEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "envd of sandbox {}", self.id)
    }
}

impl std::fmt::Display for EnvdEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "envd of sandbox {}", self.id)
    }
}

impl EnvdEndpoint {
    /// The envd of sandbox `id` run by `runtime`.
    pub(crate) fn new(runtime: Arc<Runtime>, id: impl Into<String>) -> Self {
        Self {
            runtime,
            id: id.into(),
        }
    }

    /// A new connection, its peer checked to be the sandbox's.
    async fn stream(&self) -> std::io::Result<UnixStream> {
        // A local connect and a read of /proc: quick enough to run in place.
        let stream = self
            .runtime
            .connect_control(&self.id)
            .map_err(std::io::Error::other)?;
        stream.set_nonblocking(true)?;
        UnixStream::from_std(stream)
    }
}

/// Connects to the sandbox's envd.
pub(crate) async fn connect(
    envd: &EnvdEndpoint,
    alive: CancellationToken,
) -> std::io::Result<SendRequest<Body>> {
    let stream = envd.stream().await?;
    handshake(stream, alive)
        .await
        .map_err(std::io::Error::other)
}

/// One request on a fresh connection; returns the status and the whole body.
async fn request(
    envd: &EnvdEndpoint,
    request: Request<Body>,
) -> Result<(StatusCode, Bytes), String> {
    let mut sender = connect(envd, CancellationToken::new())
        .await
        .map_err(|e| format!("connect to the {envd}: {e}"))?;
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

/// How long [`wait_healthy`] polls every half millisecond before backing off.
const FAST_POLL_WINDOW: Duration = Duration::from_millis(200);

/// Waits until envd answers `GET /health` with 204, polling quickly at first (envd is
/// usually up within milliseconds) and more slowly later. `alive` is asked between
/// attempts so a crashed envd fails fast instead of waiting out the whole `timeout`.
pub(crate) async fn wait_healthy(
    envd: &EnvdEndpoint,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(500);
    let mut last_error;
    loop {
        let req = Request::get("/health")
            .header(header::HOST, "localhost")
            .body(empty())
            .expect("static request");
        match request(envd, req).await {
            Ok((StatusCode::NO_CONTENT, _)) => return Ok(()),
            Ok((status, _)) => last_error = format!("GET /health answered {status}"),
            Err(e) => last_error = e,
        }
        if !alive() {
            return Err(format!("envd exited before it was ready ({last_error})"));
        }
        if start.elapsed() > timeout {
            return Err(format!("envd not ready after {timeout:?}: {last_error}"));
        }
        tokio::time::sleep(delay).await;
        // envd is normally up within ~10 ms of its exec; backing off early would add
        // up to one whole delay to every create (a 0.5, 1, 2, 4, 8 ms schedule sees a
        // socket that appeared at 8.1 ms only at 15.5 ms). Poll tightly at first, and
        // back off only for a slow start.
        if start.elapsed() > FAST_POLL_WINDOW {
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}

/// `POST /init` with `body` (env vars, token, default user and workdir).
pub(crate) async fn init(
    envd: &EnvdEndpoint,
    token: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let req = Request::post("/init")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Access-Token", token)
        .body(full(body.to_string()))
        .map_err(|e| e.to_string())?;
    match request(envd, req).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, body) => Err(format!(
            "POST /init answered {status}: {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

/// Uploads the file at `source` (on the host) to `path` in the sandbox as `user`, through
/// envd's `POST /files` (raw body, streamed): the file is written by envd inside the
/// sandbox with that user's permissions, never through the sandbox's paths from the host.
pub(crate) async fn upload(
    envd: &EnvdEndpoint,
    token: &str,
    source: &std::path::Path,
    path: &str,
    user: &str,
) -> Result<(), String> {
    use futures::StreamExt as _;
    let file = tokio::fs::File::open(source)
        .await
        .map_err(|e| format!("open {}: {e}", source.display()))?;
    let frames =
        tokio_util::io::ReaderStream::new(file).map(|chunk| chunk.map(hyper::body::Frame::data));
    let body = http_body_util::StreamBody::new(frames);
    let stream = envd
        .stream()
        .await
        .map_err(|e| format!("connect to the {envd}: {e}"))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let encode = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let req = Request::post(format!(
        "/files?path={}&username={}",
        encode(path),
        encode(user)
    ))
    .header(header::HOST, "localhost")
    .header(header::CONTENT_TYPE, "application/octet-stream")
    .header("X-Access-Token", token)
    .body(body)
    .map_err(|e| e.to_string())?;
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "POST /files answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))
    }
}

/// Which output stream a chunk of a process's output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// What to run with [`run_process`].
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec<'a> {
    /// The program (absolute or found on `PATH` by envd).
    pub cmd: &'a str,
    /// Its arguments.
    pub args: &'a [String],
    /// Extra environment (over envd's and `/init`'s).
    pub envs: &'a std::collections::BTreeMap<String, String>,
    /// Working directory; `None` = the user's home.
    pub cwd: Option<&'a str>,
    /// The Unix user it runs as (sent as `Authorization: Basic base64("<user>:")`).
    pub user: &'a str,
}

/// Connect-RPC envelope flag of the stream's last message (trailers as JSON).
const END_STREAM: u8 = 0x02;
/// Largest envelope accepted from envd (its output chunks are far smaller).
const MAX_ENVELOPE: usize = 16 * 1024 * 1024;

/// Runs a process in the sandbox through envd's `process.Process/Start` (server
/// streaming, Connect JSON codec: the same RPC the SDKs use), hands each output chunk to
/// `on_output` as it arrives and returns the exit code. An `Err` means the RPC itself
/// failed (envd unreachable, process could not start, stream cut): not a non-zero exit.
pub(crate) async fn run_process(
    envd: &EnvdEndpoint,
    token: &str,
    spec: &ProcessSpec<'_>,
    on_output: impl FnMut(Stream, &[u8]),
) -> Result<i32, String> {
    let body = start_stream(envd, token, spec).await?;
    read_events(body, on_output, false).await
}

/// Starts a process in the sandbox like [`run_process`] but returns as soon as envd
/// reports it started, leaving it running (envd keeps processes whose client went away
/// and drops their output). Used for templates' start commands.
pub(crate) async fn start_process(
    envd: &EnvdEndpoint,
    token: &str,
    spec: &ProcessSpec<'_>,
) -> Result<(), String> {
    let body = start_stream(envd, token, spec).await?;
    read_events(body, |_, _| {}, true).await.map(|_| ())
}

/// Sends `process.Process/Start` and returns the response stream.
async fn start_stream(
    envd: &EnvdEndpoint,
    token: &str,
    spec: &ProcessSpec<'_>,
) -> Result<hyper::body::Incoming, String> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut process = serde_json::json!({
        "cmd": spec.cmd,
        "args": spec.args,
        "envs": spec.envs,
    });
    if let Some(cwd) = spec.cwd {
        process["cwd"] = serde_json::Value::from(cwd);
    }
    let message = serde_json::json!({ "process": process }).to_string();
    let mut envelope = Vec::with_capacity(5 + message.len());
    envelope.push(0);
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(message.as_bytes());
    let req = Request::post("/process.Process/Start")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/connect+json")
        .header("Connect-Protocol-Version", "1")
        .header("X-Access-Token", token)
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", engine.encode(format!("{}:", spec.user))),
        )
        .body(full(envelope))
        .map_err(|e| e.to_string())?;
    let mut sender = connect(envd, CancellationToken::new())
        .await
        .map_err(|e| format!("connect to the {envd}: {e}"))?;
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        return Err(format!(
            "process.Process/Start answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(body)
}

/// Reads Start's event stream: output to `on_output`, then the exit code. With
/// `until_started` it returns (with 0) at the start event instead.
async fn read_events(
    mut body: hyper::body::Incoming,
    mut on_output: impl FnMut(Stream, &[u8]),
    until_started: bool,
) -> Result<i32, String> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;

    let mut buffer: Vec<u8> = Vec::new();
    let mut exit_code = None;
    loop {
        // Take every complete envelope out of the buffer.
        while buffer.len() >= 5 {
            let flags = buffer[0];
            let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if len > MAX_ENVELOPE {
                return Err(format!("envd sent a {len}-byte message"));
            }
            if buffer.len() < 5 + len {
                break;
            }
            let payload: serde_json::Value = serde_json::from_slice(&buffer[5..5 + len])
                .map_err(|e| format!("envd sent invalid JSON: {e}"))?;
            buffer.drain(..5 + len);
            if flags & END_STREAM != 0 {
                if let Some(error) = payload.get("error") {
                    return Err(format!(
                        "envd: {}: {}",
                        error["code"].as_str().unwrap_or("unknown"),
                        error["message"].as_str().unwrap_or("")
                    ));
                }
                return exit_code
                    .ok_or_else(|| "the process stream ended without an end event".to_owned());
            }
            let event = &payload["event"];
            if until_started && event.get("start").is_some() {
                return Ok(0);
            }
            if let Some(data) = event.get("data") {
                for (key, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
                    if let Some(chunk) = data.get(key).and_then(|v| v.as_str()) {
                        let bytes = engine
                            .decode(chunk)
                            .map_err(|e| format!("envd sent invalid base64: {e}"))?;
                        on_output(stream, &bytes);
                    }
                }
            } else if let Some(end) = event.get("end") {
                // pbjson leaves out zero values: a missing exitCode is 0.
                let code = end.get("exitCode").and_then(|v| v.as_i64()).unwrap_or(0);
                let exited = end.get("exited").and_then(|v| v.as_bool()).unwrap_or(false);
                exit_code = Some(if exited {
                    i32::try_from(code).unwrap_or(-1)
                } else {
                    // Killed by a signal: no exit code, report like a shell (-1).
                    -1
                });
                // For a normal exit envd's error only repeats the status ("exit status
                // 1"); otherwise it says what happened.
                if !exited && let Some(error) = end.get("error").and_then(|v| v.as_str()) {
                    on_output(Stream::Stderr, format!("{error}\n").as_bytes());
                }
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(format!("process stream failed: {e}")),
            None => {
                return exit_code
                    .ok_or_else(|| "the process stream ended without an end event".to_owned());
            }
        }
    }
}
