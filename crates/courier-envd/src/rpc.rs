//! Connect-RPC plumbing on axum: routing `/<package>.<Service>/<Method>`, codecs (JSON and
//! protobuf), unary responses, server-streaming responses (message envelopes, then exactly
//! one end-of-stream envelope, HTTP 200) and client-streaming requests.
//!
//! Errors: unary calls answer with the code's HTTP status and a JSON `{code, message}`
//! body; streams answer 200 and carry the error in the end-of-stream trailer.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use courier_e2b::codec::{Codec, ConnectError, EndOfStream, Envelope, EnvelopeDecoder, RpcMessage};
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;

use crate::{
    Envd, Error, auth,
    identity::Identity,
    users::{User, UserDb},
};

/// Largest request message accepted (a SendInput chunk, a path, ...).
const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Keepalive interval when the client sends no `Keepalive-Ping-Interval` (envd's default).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);
/// Frames buffered between a stream's producer and the socket; small, so a slow client
/// slows the producer down instead of growing memory.
const STREAM_BUFFER_FRAMES: usize = 8;

/// What every RPC handler gets besides its request message.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub envd: Envd,
    /// The Unix user the call acts as (Basic auth, else the default user).
    pub user: User,
    /// The credentials the call's file-system work runs with (`None`: the daemon's own).
    pub identity: Option<Identity>,
    /// The account database, for owner and group names.
    pub db: Arc<UserDb>,
    /// `Connect-Timeout-Ms`, `None` when absent or 0.
    pub timeout: Option<Duration>,
    /// How long a stream may stay silent before a keepalive event.
    pub keepalive: Duration,
}

/// The shape of a method: one message each way, or a stream one way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Unary,
    ServerStream,
    ClientStream,
}

/// Encodes a response message. JSON timestamps are rewritten from pbjson's `+00:00` form
/// to the `Z` form protojson mandates: Go parsers and protobuf-es reject fractional
/// seconds with a numeric offset.
pub(crate) fn encode<M: RpcMessage>(codec: Codec, message: &M) -> Bytes {
    let bytes = codec.encode(message);
    if codec != Codec::Json || !bytes.windows(7).any(|w| w == b"+00:00\"") {
        return bytes;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return bytes;
    };
    fix_timestamps(&mut value);
    serde_json::to_vec(&value).map_or(bytes, Bytes::from)
}

fn fix_timestamps(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "modifiedTime"
                    && let serde_json::Value::String(text) = child
                    && let Some(stem) = text.strip_suffix("+00:00")
                {
                    *text = format!("{stem}Z");
                } else {
                    fix_timestamps(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_timestamps),
        _ => {}
    }
}

/// Writes messages of a server stream; cheap to clone.
#[derive(Clone)]
pub(crate) struct StreamWriter {
    tx: mpsc::Sender<Bytes>,
    codec: Codec,
}

impl StreamWriter {
    /// Sends one message; `false` once the client has gone.
    pub async fn send<M: RpcMessage>(&self, message: &M) -> bool {
        let frame = Envelope::message(encode(self.codec, message)).to_bytes();
        self.tx.send(frame).await.is_ok()
    }

    /// Resolves when the client has gone (the response body was dropped).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    async fn finish(&self, result: Result<(), Error>) {
        let end = match result {
            Ok(()) => EndOfStream::ok(),
            Err(err) => EndOfStream::error(err.to_connect()),
        };
        // A client that has gone needs no end of stream.
        let _ = self
            .tx
            .send(Envelope::end_stream(end.to_json()).to_bytes())
            .await;
    }
}

/// Reads the messages of a client stream as they arrive.
pub(crate) struct MessageReader {
    body: Body,
    decoder: EnvelopeDecoder,
    codec: Codec,
    done: bool,
}

impl MessageReader {
    /// Reads the client stream in `body`, encoded with `codec`.
    pub fn new(body: Body, codec: Codec) -> Self {
        MessageReader {
            body,
            decoder: EnvelopeDecoder::new(MAX_REQUEST_BYTES),
            codec,
            done: false,
        }
    }

    /// The next message, `None` at the end of the request body or its end-of-stream envelope.
    pub async fn next<M: RpcMessage>(&mut self) -> Result<Option<M>, Error> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.decoder.next_envelope() {
                Ok(Some(envelope)) if envelope.is_end_stream() => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(envelope)) => return Ok(Some(self.codec.decode(&envelope.payload)?)),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::InvalidArgument(format!(
                        "malformed request stream: {e}"
                    )));
                }
            }
            match self.body.frame().await {
                None => {
                    self.done = true;
                    self.decoder.finish(false).map_err(|e| {
                        Error::InvalidArgument(format!("malformed request stream: {e}"))
                    })?;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    return Err(Error::InvalidArgument(format!("reading request body: {e}")));
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.decoder.push(data);
                    }
                }
            }
        }
    }
}

pub(crate) fn unimplemented(service: &str, method: &str) -> Response {
    unary_error(&ConnectError::new(
        courier_e2b::codec::Code::Unimplemented,
        format!("{service}/{method} is not implemented"),
    ))
}

/// Checks the content type against the method's kind, and reads user, deadline and
/// keepalive from the headers. Errors come back as finished responses in the right shape.
pub(crate) async fn prepare(
    envd: Envd,
    kind: Kind,
    req: Request,
) -> Result<(Ctx, Codec, Body), Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some((codec, streaming)) = Codec::from_content_type(content_type) else {
        return Err(unsupported_media_type(content_type));
    };
    if streaming != (kind != Kind::Unary) {
        return Err(unsupported_media_type(content_type));
    }
    let headers = req.headers();
    let parsed = (|| -> Result<Ctx, Error> {
        let user_name = auth::basic_user(headers)?;
        let caller = envd.shared.caller(user_name.as_deref())?;
        let timeout = match headers.get("connect-timeout-ms") {
            None => None,
            Some(value) => {
                let text = value.to_str().unwrap_or("");
                // The Connect spec caps the header at 10 digits.
                if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::InvalidArgument(format!(
                        "invalid Connect-Timeout-Ms {text:?}"
                    )));
                }
                let ms: u64 = text.parse().unwrap_or(0);
                (ms > 0).then(|| Duration::from_millis(ms))
            }
        };
        let keepalive = headers
            .get("keepalive-ping-interval")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_KEEPALIVE, Duration::from_secs);
        Ok(Ctx {
            envd: envd.clone(),
            user: caller.user,
            identity: caller.identity,
            db: caller.db,
            timeout,
            keepalive,
        })
    })();
    match parsed {
        Ok(ctx) => Ok((ctx, codec, req.into_body())),
        Err(err) if kind == Kind::Unary => Err(unary_error(&err.to_connect())),
        Err(err) => Err(stream_error_response(codec, &err)),
    }
}

fn unsupported_media_type(content_type: &str) -> Response {
    let err = ConnectError::new(
        courier_e2b::codec::Code::InvalidArgument,
        format!("unsupported content type {content_type:?}"),
    );
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        err.to_json(),
    )
        .into_response()
}

/// A unary error: the code's HTTP status and the JSON body.
pub(crate) fn unary_error(err: &ConnectError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        err.to_json(),
    )
        .into_response()
}

fn stream_error_response(codec: Codec, err: &Error) -> Response {
    let body = Envelope::end_stream(EndOfStream::error(err.to_connect()).to_json()).to_bytes();
    stream_response(codec, Body::from(body))
}

fn stream_response(codec: Codec, body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.stream_content_type()),
        )],
        body,
    )
        .into_response()
}

async fn read_body(body: Body) -> Result<Bytes, Error> {
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(Error::InvalidArgument(format!("reading request body: {e}"))),
    }
}

pub(crate) async fn unary<Req, Resp, F, Fut>(
    ctx: Ctx,
    codec: Codec,
    body: Body,
    handler: F,
) -> Response
where
    Req: RpcMessage,
    Resp: RpcMessage,
    F: FnOnce(Ctx, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Error>>,
{
    let timeout = ctx.timeout;
    let result = async {
        let bytes = read_body(body).await?;
        let request: Req = codec.decode(&bytes)?;
        match timeout {
            Some(limit) => tokio::time::timeout(limit, handler(ctx, request))
                .await
                .map_err(|_| Error::DeadlineExceeded("deadline exceeded".to_owned()))?,
            None => handler(ctx, request).await,
        }
    }
    .await;
    match result {
        Ok(response) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(codec.unary_content_type()),
            )],
            encode(codec, &response),
        )
            .into_response(),
        Err(err) => unary_error(&err.to_connect()),
    }
}

/// Decodes the single request envelope, then runs `handler` in its own task writing to
/// the response body; the trailer is written when the handler returns.
pub(crate) async fn server_stream<Req, F, Fut>(
    ctx: Ctx,
    codec: Codec,
    body: Body,
    handler: F,
) -> Response
where
    Req: RpcMessage,
    F: FnOnce(Ctx, Req, StreamWriter) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let request = async {
        let bytes = read_body(body).await?;
        let mut decoder = EnvelopeDecoder::new(MAX_REQUEST_BYTES);
        decoder.push(&bytes);
        let envelope = decoder
            .next_envelope()
            .map_err(|e| Error::InvalidArgument(format!("malformed request envelope: {e}")))?
            .filter(|e| !e.is_end_stream())
            .ok_or_else(|| {
                Error::InvalidArgument("the request has no message envelope".to_owned())
            })?;
        Ok::<Req, Error>(codec.decode(&envelope.payload)?)
    }
    .await;
    let request = match request {
        Ok(request) => request,
        Err(err) => return stream_error_response(codec, &err),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(STREAM_BUFFER_FRAMES);
    let writer = StreamWriter { tx, codec };
    tokio::spawn(async move {
        let result = handler(ctx, request, writer.clone()).await;
        writer.finish(result).await;
    });
    let frames =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|f| f.map(Ok::<_, Infallible>)));
    stream_response(codec, Body::from_stream(frames))
}

pub(crate) fn client_stream_response<M: RpcMessage>(
    codec: Codec,
    result: Result<M, Error>,
) -> Response {
    let mut out = BytesMut::new();
    match result {
        Ok(message) => {
            Envelope::message(encode(codec, &message)).write_to(&mut out);
            Envelope::end_stream(EndOfStream::ok().to_json()).write_to(&mut out);
        }
        Err(err) => {
            Envelope::end_stream(EndOfStream::error(err.to_connect()).to_json()).write_to(&mut out)
        }
    }
    stream_response(codec, Body::from(out.freeze()))
}
