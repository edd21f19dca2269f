//! The host's side of a sandbox's envd: HTTP/1.1 over the sandbox's control socket
//! ([`Runtime::connect_control`]: a socket the runtime created where the sandbox cannot
//! reach it, or — under gVisor — one opened without following anything the sandbox
//! planted, and always checked to be served by a process of the sandbox). Sandboxes have
//! no network interface the host could reach, so this socket is the only way in.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_e2b::codec::{
    Codec, ConnectError, DEFAULT_MAX_MESSAGE_SIZE, EndOfStream, Envelope, EnvelopeDecoder,
    FrameError,
};
use courier_e2b::proto::process::process_event::{DataEvent, EndEvent, Event, data_event};
use courier_e2b::proto::process::{ProcessConfig, StartRequest, StartResponse};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full, combinators::BoxBody};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::runtime::Runtime;

/// The codec of the process RPCs: protobuf, which courier-envd (like E2B's envd) speaks
/// beside JSON, and which carries output as raw bytes instead of base64.
const CODEC: Codec = Codec::Proto;

/// Why a call to a sandbox's envd failed. Not a non-zero exit: that is a result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvdError {
    /// The control socket could not be reached (or its peer is not the sandbox's).
    #[error("connect to the {envd}: {source}")]
    Connect {
        /// Which envd (`envd of sandbox <id>`).
        envd: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection cut, malformed answer).
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: &'static str,
        /// What failed.
        source: hyper::Error,
    },
    /// The request could not be built (a path or header value that is not valid HTTP).
    #[error("{what}: invalid request: {source}")]
    Request {
        /// The request.
        what: &'static str,
        /// What is invalid.
        source: http::Error,
    },
    /// envd answered an HTTP error.
    #[error("{what} answered {status}: {body}")]
    Status {
        /// The request.
        what: &'static str,
        /// The status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
    /// A Connect RPC failed: an error answer, or an error in the stream's trailer.
    #[error("envd: {0}")]
    Rpc(ConnectError),
    /// The RPC's stream is not a valid Connect stream.
    #[error("envd sent a broken stream: {0}")]
    Frame(#[from] FrameError),
    /// The process stream ended without the process's end event.
    #[error("the process stream ended without an end event")]
    NoEndEvent,
    /// envd did not answer `/health` in time, or its sandbox exited first.
    #[error("envd {}: {last}", if *.exited { "exited before it was ready" } else { "not ready in time" })]
    NotReady {
        /// Whether the sandbox's process exited (else the timeout passed).
        exited: bool,
        /// The last attempt's failure.
        last: Box<EnvdError>,
    },
    /// A file to upload could not be opened.
    #[error("open {}: {source}", .path.display())]
    Open {
        /// The host path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

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

    /// [`EnvdEndpoint::stream`], failing as [`EnvdError::Connect`].
    async fn checked_stream(&self) -> Result<UnixStream, EnvdError> {
        self.stream()
            .await
            .map_err(|source| self.connect_error(source))
    }

    fn connect_error(&self, source: std::io::Error) -> EnvdError {
        EnvdError::Connect {
            envd: self.to_string(),
            source,
        }
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
    what: &'static str,
    request: Request<Body>,
) -> Result<(StatusCode, Bytes), EnvdError> {
    let http = |source| EnvdError::Http { what, source };
    let mut sender = connect(envd, CancellationToken::new())
        .await
        .map_err(|e| envd.connect_error(e))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    Ok((status, body))
}

/// An [`EnvdError::Status`] for a non-success answer.
fn status_error(what: &'static str, status: StatusCode, body: &[u8]) -> EnvdError {
    EnvdError::Status {
        what,
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    }
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
) -> Result<(), EnvdError> {
    const WHAT: &str = "GET /health";
    let start = Instant::now();
    let mut delay = Duration::from_micros(500);
    loop {
        let req = Request::get("/health")
            .header(header::HOST, "localhost")
            .body(empty())
            .expect("a static path and header make a valid request");
        let last = match request(envd, WHAT, req).await {
            Ok((StatusCode::NO_CONTENT, _)) => return Ok(()),
            Ok((status, body)) => status_error(WHAT, status, &body),
            Err(e) => e,
        };
        let not_ready = |exited| EnvdError::NotReady {
            exited,
            last: Box::new(last),
        };
        if !alive() {
            return Err(not_ready(true));
        }
        if start.elapsed() > timeout {
            return Err(not_ready(false));
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
    body: &courier_e2b::models::EnvdInit,
) -> Result<(), EnvdError> {
    const WHAT: &str = "POST /init";
    let req = Request::post("/init")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Access-Token", token)
        .body(full(
            serde_json::to_string(body).expect("a struct of strings serializes"),
        ))
        .map_err(|source| EnvdError::Request { what: WHAT, source })?;
    match request(envd, WHAT, req).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, body) => Err(status_error(WHAT, status, &body)),
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
) -> Result<(), EnvdError> {
    use futures::StreamExt as _;
    const WHAT: &str = "POST /files";
    let http = |source| EnvdError::Http { what: WHAT, source };
    let file = tokio::fs::File::open(source)
        .await
        .map_err(|e| EnvdError::Open {
            path: source.to_owned(),
            source: e,
        })?;
    let frames =
        tokio_util::io::ReaderStream::new(file).map(|chunk| chunk.map(hyper::body::Frame::data));
    let body = http_body_util::StreamBody::new(frames);
    let stream = envd.checked_stream().await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    tokio::spawn(async move {
        // A failed connection also fails the request below, which reports it.
        if let Err(e) = conn.await {
            debug!(error = %e, "envd upload connection ended with an error");
        }
    });
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
    .map_err(|source| EnvdError::Request { what: WHAT, source })?;
    let response = sender.send_request(req).await.map_err(http)?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(status_error(WHAT, status, &bytes))
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

/// Runs a process in the sandbox through envd's `process.Process/Start` (server
/// streaming: the same RPC the SDKs use), hands each output chunk to `on_output` as it
/// arrives and returns the exit code. An `Err` means the RPC itself failed (envd
/// unreachable, process could not start, stream cut): not a non-zero exit.
pub(crate) async fn run_process(
    envd: &EnvdEndpoint,
    token: &str,
    spec: &ProcessSpec<'_>,
    on_output: impl FnMut(Stream, &[u8]),
) -> Result<i32, EnvdError> {
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
) -> Result<(), EnvdError> {
    let body = start_stream(envd, token, spec).await?;
    read_events(body, |_, _| {}, true).await.map(|_| ())
}

/// Sends `process.Process/Start` and returns the response stream.
async fn start_stream(
    envd: &EnvdEndpoint,
    token: &str,
    spec: &ProcessSpec<'_>,
) -> Result<hyper::body::Incoming, EnvdError> {
    use base64::Engine as _;
    const WHAT: &str = "process.Process/Start";
    let http = |source| EnvdError::Http { what: WHAT, source };
    let engine = base64::engine::general_purpose::STANDARD;
    let message = StartRequest {
        process: Some(ProcessConfig {
            cmd: spec.cmd.to_owned(),
            args: spec.args.to_vec(),
            envs: spec
                .envs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: spec.cwd.map(str::to_owned),
        }),
        ..StartRequest::default()
    };
    let envelope = Envelope::message(CODEC.encode(&message)).to_bytes();
    let req = Request::post("/process.Process/Start")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, CODEC.stream_content_type())
        .header("Connect-Protocol-Version", "1")
        .header("X-Access-Token", token)
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", engine.encode(format!("{}:", spec.user))),
        )
        .body(full(envelope))
        .map_err(|source| EnvdError::Request { what: WHAT, source })?;
    let mut sender = connect(envd, CancellationToken::new())
        .await
        .map_err(|e| envd.connect_error(e))?;
    let response = sender.send_request(req).await.map_err(http)?;
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let bytes = body.collect().await.map_err(http)?.to_bytes();
        return Err(EnvdError::Rpc(ConnectError::from_response(
            status.as_u16(),
            &bytes,
        )));
    }
    Ok(body)
}

/// What one event of Start's stream means to [`read_events`].
enum Progress {
    /// Keep reading.
    More,
    /// The process started (for `until_started`).
    Started,
}

/// Reads Start's event stream: output to `on_output`, then the exit code. With
/// `until_started` it returns (with 0) at the start event instead.
async fn read_events(
    mut body: hyper::body::Incoming,
    mut on_output: impl FnMut(Stream, &[u8]),
    until_started: bool,
) -> Result<i32, EnvdError> {
    let mut decoder = EnvelopeDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    let mut exit_code = None;
    loop {
        while let Some(envelope) = decoder.next_envelope()? {
            if envelope.is_end_stream() {
                let end = EndOfStream::from_json(&envelope.payload).map_err(EnvdError::Rpc)?;
                if let Some(error) = end.error {
                    return Err(EnvdError::Rpc(error));
                }
                return exit_code.ok_or(EnvdError::NoEndEvent);
            }
            let response: StartResponse =
                CODEC.decode(&envelope.payload).map_err(EnvdError::Rpc)?;
            let event = response.event.and_then(|e| e.event);
            if let Progress::Started = on_event(event, &mut exit_code, &mut on_output)
                && until_started
            {
                return Ok(0);
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(source)) => {
                return Err(EnvdError::Http {
                    what: "process stream",
                    source,
                });
            }
            None => return exit_code.ok_or(EnvdError::NoEndEvent),
        }
    }
}

/// Hands output to `on_output` and records the exit code of an end event.
fn on_event(
    event: Option<Event>,
    exit_code: &mut Option<i32>,
    on_output: &mut impl FnMut(Stream, &[u8]),
) -> Progress {
    match event {
        Some(Event::Start(_)) => return Progress::Started,
        Some(Event::Data(DataEvent {
            output: Some(output),
        })) => match output {
            data_event::Output::Stdout(bytes) => on_output(Stream::Stdout, &bytes),
            data_event::Output::Stderr(bytes) => on_output(Stream::Stderr, &bytes),
            // No process started here has a terminal.
            data_event::Output::Pty(_) => {}
        },
        Some(Event::End(EndEvent {
            exit_code: code,
            exited,
            error,
            ..
        })) => {
            // Killed by a signal: no exit code, reported like a shell (-1).
            *exit_code = Some(if exited { code } else { -1 });
            // For a normal exit envd's error only repeats the status ("exit status 1");
            // otherwise it says what happened.
            if !exited && let Some(error) = error {
                on_output(Stream::Stderr, format!("{error}\n").as_bytes());
            }
        }
        Some(Event::Data(DataEvent { output: None }) | Event::Keepalive(_)) | None => {}
    }
    Progress::More
}
