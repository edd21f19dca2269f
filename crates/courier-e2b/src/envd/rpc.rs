//! The Connect-RPC client transport: unary calls and server streams over reqwest, with the
//! shared codec, the E2B routing headers and the deadline rules.

use std::{pin::Pin, time::Duration};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::time::Instant;
use url::Url;

use crate::{
    Client, Error, NotFoundKind, Result, Secret,
    codec::{
        Codec, ConnectError, DEFAULT_MAX_MESSAGE_SIZE, EndOfStream, Envelope, EnvelopeDecoder,
        RpcMessage,
    },
    config::ENVD_PORT,
};

/// The keepalive interval (seconds) requested on every stream, as the official SDKs.
pub(crate) const KEEPALIVE_PING_INTERVAL: &str = "50";

/// A decoded server stream.
pub(crate) type RpcStream<M> = Pin<Box<dyn Stream<Item = Result<M>> + Send>>;

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallOptions {
    /// The Unix user (`Authorization: Basic base64("user:")`).
    pub(crate) user: Option<String>,
    /// The deadline (`Connect-Timeout-Ms`); `None` = the request timeout for unary calls,
    /// unlimited for streams; zero = unlimited.
    pub(crate) timeout: Option<Duration>,
}

/// How to reach one sandbox's envd.
#[derive(Clone)]
pub(crate) struct Envd {
    pub(crate) client: Client,
    pub(crate) base: Url,
    pub(crate) sandbox_id: String,
    pub(crate) access_token: Option<Secret>,
    pub(crate) codec: Codec,
}

/// How long the health probe after a cut stream may take.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Envd {
    /// Whether the proxy confirms the sandbox gone (`GET /health` answers 502); `false`
    /// when it answers otherwise or not at all (a network failure is not a death).
    pub(crate) async fn confirmed_gone(&self) -> bool {
        let request = self
            .headers(self.client.http().get(self.url("/health")))
            .timeout(HEALTH_PROBE_TIMEOUT);
        matches!(request.send().await, Ok(r) if r.status().as_u16() == 502)
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).unwrap_or_else(|_| self.base.clone())
    }

    /// Adds the routing and auth headers every envd request carries.
    pub(crate) fn headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request
            .header("E2b-Sandbox-Id", &self.sandbox_id)
            .header("E2b-Sandbox-Port", ENVD_PORT.to_string());
        match &self.access_token {
            Some(token) => request.header("X-Access-Token", token.expose()),
            None => request,
        }
    }

    fn rpc_request(
        &self,
        method: &str,
        content_type: &str,
        options: &CallOptions,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .headers(self.client.http().post(self.url(method)))
            .header(http::header::CONTENT_TYPE, content_type)
            .header("Connect-Protocol-Version", "1");
        if let Some(user) = &options.user {
            request = request.header(http::header::AUTHORIZATION, basic_user(user));
        }
        request
    }

    /// A unary call.
    pub(crate) async fn unary<Req: RpcMessage, Resp: RpcMessage>(
        &self,
        method: &str,
        message: &Req,
        options: &CallOptions,
        kind: NotFoundKind,
    ) -> Result<Resp> {
        let timeout = options
            .timeout
            .unwrap_or(self.client.config().request_timeout());
        let mut request = self
            .rpc_request(method, self.codec.unary_content_type(), options)
            .body(self.codec.encode(message));
        if !timeout.is_zero() {
            request = request
                .header("Connect-Timeout-Ms", timeout.as_millis().to_string())
                .timeout(timeout);
        }
        let response = request.send().await.map_err(Error::from_reqwest)?;
        let status = response.status().as_u16();
        let codec = response_codec(&response).map_or(self.codec, |(codec, _)| codec);
        let body = response.bytes().await.map_err(Error::from_reqwest)?;
        if status != 200 {
            return Err(Error::from_connect(
                ConnectError::from_response(status, &body),
                kind,
            ));
        }
        codec.decode(&body).map_err(|e| Error::protocol(e.message))
    }

    /// A client-streaming call: the request envelopes as `messages` yields them (the
    /// request ends when it ends), then one response message and the end of stream.
    /// The response comes only after the request ends, so there is no deadline but
    /// `options.timeout` (`None` or zero: none).
    pub(crate) async fn client_stream<Req, Resp, S>(
        &self,
        method: &str,
        messages: S,
        options: &CallOptions,
        kind: NotFoundKind,
    ) -> Result<Resp>
    where
        Req: RpcMessage,
        Resp: RpcMessage,
        S: Stream<Item = Req> + Send + 'static,
    {
        let codec = self.codec;
        let body = messages.map(move |message| {
            Ok::<_, std::convert::Infallible>(Envelope::message(codec.encode(&message)).to_bytes())
        });
        let mut request = self
            .rpc_request(method, self.codec.stream_content_type(), options)
            .body(reqwest::Body::wrap_stream(body));
        let deadline = match options.timeout {
            Some(timeout) if !timeout.is_zero() => {
                request = request
                    .header("Connect-Timeout-Ms", timeout.as_millis().to_string())
                    .timeout(timeout);
                Some(Instant::now() + timeout)
            }
            _ => None,
        };
        let response = request.send().await.map_err(Error::from_reqwest)?;
        let status = response.status().as_u16();
        let codec = match response_codec(&response) {
            Some((codec, true)) if status == 200 => codec,
            _ => {
                let body = response.bytes().await.unwrap_or_default();
                return Err(Error::from_connect(
                    ConnectError::from_response(status, &body),
                    kind,
                ));
            }
        };
        let mut replies: RpcStream<Resp> =
            decode_stream(response.bytes_stream().boxed(), codec, deadline, kind);
        match replies.next().await {
            Some(reply) => reply,
            None => Err(Error::protocol(format!(
                "{method}: stream ended without a response message"
            ))),
        }
    }

    /// A server-streaming call: one request envelope, then the response envelopes.
    pub(crate) async fn server_stream<Req: RpcMessage, Resp: RpcMessage>(
        &self,
        method: &str,
        message: &Req,
        options: &CallOptions,
        kind: NotFoundKind,
    ) -> Result<RpcStream<Resp>> {
        let mut request = self
            .rpc_request(method, self.codec.stream_content_type(), options)
            .header("Keepalive-Ping-Interval", KEEPALIVE_PING_INTERVAL)
            .body(Envelope::message(self.codec.encode(message)).to_bytes());
        let deadline = match options.timeout {
            Some(timeout) if !timeout.is_zero() => {
                request = request.header("Connect-Timeout-Ms", timeout.as_millis().to_string());
                Some(Instant::now() + timeout)
            }
            _ => None,
        };
        // The response headers must come within the request timeout; the body may then
        // last as long as the deadline allows.
        let request_timeout = self.client.config().request_timeout();
        let wait = deadline.map_or(request_timeout, |d| {
            d.saturating_duration_since(Instant::now())
                .min(request_timeout)
        });
        let response = tokio::time::timeout(wait, request.send())
            .await
            .map_err(|_| Error::Timeout {
                message: format!("no response to {method} within {wait:?}"),
            })?
            .map_err(Error::from_reqwest)?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.bytes().await.unwrap_or_default();
            return Err(Error::from_connect(
                ConnectError::from_response(status, &body),
                kind,
            ));
        }
        let codec = match response_codec(&response) {
            Some((codec, true)) => codec,
            Some((_, false)) => {
                // A unary-typed body on a stream is a Connect error in JSON.
                let body = response.bytes().await.unwrap_or_default();
                return Err(Error::from_connect(
                    ConnectError::from_response(status, &body),
                    kind,
                ));
            }
            None => {
                return Err(Error::protocol(format!(
                    "{method}: response is not a Connect stream"
                )));
            }
        };
        let stream = decode_stream(response.bytes_stream().boxed(), codec, deadline, kind);
        // A stream cut mid-flight (a reset, or a close before the end-of-stream envelope)
        // is told apart from a network failure by probing the sandbox's health, as the
        // official SDKs do.
        let envd = self.clone();
        Ok(stream
            .then(move |item| {
                let envd = envd.clone();
                async move {
                    match item {
                        Err(e @ (Error::Transport(_) | Error::Protocol { .. })) => {
                            if envd.confirmed_gone().await {
                                Err(Error::SandboxKilled {
                                    message: e.to_string(),
                                })
                            } else {
                                Err(e)
                            }
                        }
                        other => other,
                    }
                }
            })
            .boxed())
    }
}

fn response_codec(response: &reqwest::Response) -> Option<(Codec, bool)> {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Codec::from_content_type)
}

/// `Basic base64("<user>:")`.
pub(crate) fn basic_user(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

struct StreamState {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: EnvelopeDecoder,
    codec: Codec,
    deadline: Option<Instant>,
    kind: NotFoundKind,
    done: bool,
}

/// Decodes a byte stream of Connect envelopes into messages, ending with the trailer's
/// error if any. Ending without the end-of-stream envelope, mid-envelope, or past the
/// deadline is an error.
pub(crate) fn decode_stream<M: RpcMessage>(
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    codec: Codec,
    deadline: Option<Instant>,
    kind: NotFoundKind,
) -> RpcStream<M> {
    let state = StreamState {
        body,
        decoder: EnvelopeDecoder::new(DEFAULT_MAX_MESSAGE_SIZE),
        codec,
        deadline,
        kind,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = next_message(&mut state).await?;
        Some((item, state))
    })
    .boxed()
}

async fn next_message<M: RpcMessage>(state: &mut StreamState) -> Option<Result<M>> {
    loop {
        if state.done {
            return None;
        }
        match state.decoder.next_envelope() {
            Err(e) => {
                state.done = true;
                return Some(Err(e.into()));
            }
            Ok(Some(envelope)) if envelope.is_end_stream() => {
                state.done = true;
                return match EndOfStream::from_json(&envelope.payload) {
                    Ok(EndOfStream { error: None, .. }) => None,
                    Ok(EndOfStream {
                        error: Some(error), ..
                    }) => Some(Err(Error::from_connect(error, state.kind))),
                    Err(e) => Some(Err(Error::protocol(e.message))),
                };
            }
            Ok(Some(envelope)) => {
                return Some(
                    state
                        .codec
                        .decode(&envelope.payload)
                        .map_err(|e| Error::protocol(e.message)),
                );
            }
            Ok(None) => {}
        }
        let chunk = match state.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, state.body.next()).await {
                Ok(chunk) => chunk,
                Err(_) => {
                    state.done = true;
                    return Some(Err(Error::Timeout {
                        message: "stream deadline (Connect-Timeout-Ms) exceeded".to_owned(),
                    }));
                }
            },
            None => state.body.next().await,
        };
        match chunk {
            Some(Ok(bytes)) => state.decoder.push(&bytes),
            Some(Err(e)) => {
                state.done = true;
                return Some(Err(Error::from_reqwest(e)));
            }
            None => {
                state.done = true;
                return state.decoder.finish(true).err().map(|e| Err(e.into()));
            }
        }
    }
}
