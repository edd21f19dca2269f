//! A real courier-envd on 127.0.0.1:0 and a tiny HTTP/1.1 client (hyper) to drive it.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;

use bytes::Bytes;
use courier_e2b::codec::{Envelope, EnvelopeDecoder};
use courier_envd::{Envd, EnvdBuilder};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct TestEnvd {
    pub addr: SocketAddr,
    pub envd: Envd,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestEnvd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start() -> TestEnvd {
    start_with(Envd::builder()).await
}

pub async fn start_with(builder: EnvdBuilder) -> TestEnvd {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let envd = builder.build();
    let server = envd.clone();
    let task = tokio::spawn(async move {
        let _ = server.serve(listener).await;
    });
    TestEnvd { addr, envd, task }
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh connection and returns the streaming response.
pub async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    try_open(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`open`], with the client's error (a reset connection, say) returned instead of a panic.
pub async fn try_open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response<Incoming>, hyper::Error> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    try_open_on(stream, &addr.to_string(), method, path, headers, body).await
}

/// [`try_open`] over a connected stream (TCP or Unix), with `host` as the Host header.
pub async fn try_open_on<S>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response<Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Full::new(body.into())).unwrap())
        .await
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let response = open(addr, method, path, headers, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A unary JSON Connect call.
pub async fn unary(addr: SocketAddr, route: &str, message: Value) -> Reply {
    unary_with(addr, route, message, &[]).await
}

pub async fn unary_with(
    addr: SocketAddr,
    route: &str,
    message: Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut all = vec![
        ("content-type", "application/json"),
        ("connect-protocol-version", "1"),
    ];
    all.extend_from_slice(headers);
    request(
        addr,
        "POST",
        &format!("/{route}"),
        &all,
        serde_json::to_vec(&message).unwrap(),
    )
    .await
}

pub fn envelope(message: &Value) -> Bytes {
    Envelope::message(serde_json::to_vec(message).unwrap().into()).to_bytes()
}

/// The envelopes of a streaming response, read as they arrive.
pub struct Frames {
    body: Incoming,
    decoder: EnvelopeDecoder,
}

impl Frames {
    pub fn new(response: Response<Incoming>) -> Frames {
        assert_eq!(response.status(), 200);
        Frames {
            body: response.into_body(),
            decoder: EnvelopeDecoder::new(64 << 20),
        }
    }

    /// The next envelope: (is end-of-stream, payload).
    pub async fn next_raw(&mut self) -> Option<(bool, Bytes)> {
        loop {
            if let Some(envelope) = self.decoder.next_envelope().unwrap() {
                return Some((envelope.is_end_stream(), envelope.payload));
            }
            match self.body.frame().await {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }

    pub async fn next(&mut self) -> Option<(bool, Value)> {
        let (end, payload) = self.next_raw().await?;
        Some((end, serde_json::from_slice(&payload).unwrap()))
    }

    /// All remaining messages and the trailer.
    pub async fn collect(mut self) -> (Vec<Value>, Value) {
        let mut messages = Vec::new();
        while let Some((end, value)) = self.next().await {
            if end {
                return (messages, value);
            }
            messages.push(value);
        }
        panic!("stream ended without an end-of-stream envelope; got {messages:?}");
    }
}

/// Opens a server-streaming JSON call.
pub async fn stream(
    addr: SocketAddr,
    route: &str,
    message: Value,
    headers: &[(&str, &str)],
) -> Frames {
    let mut all = vec![
        ("content-type", "application/connect+json"),
        ("connect-protocol-version", "1"),
    ];
    all.extend_from_slice(headers);
    Frames::new(open(addr, "POST", &format!("/{route}"), &all, envelope(&message)).await)
}

/// `commands.run`-style Start request for a shell snippet (no login profile: tests must
/// not depend on the machine's dotfiles).
pub fn sh(script: &str) -> Value {
    serde_json::json!({ "process": { "cmd": "/bin/sh", "args": ["-c", script] }, "stdin": false })
}

/// Concatenated stdout of process events.
pub fn stdout_of(messages: &[Value]) -> String {
    use base64::Engine as _;
    let mut out = Vec::new();
    for m in messages {
        if let Some(data) = m["event"]["data"]["stdout"].as_str() {
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            );
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn pty_of(messages: &[Value]) -> String {
    use base64::Engine as _;
    let mut out = Vec::new();
    for m in messages {
        if let Some(data) = m["event"]["data"]["pty"].as_str() {
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            );
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(unused_imports)] // only the test binaries that need root use it
pub use courier_testkit::root::is_root;

/// Sends `head` and the first part of `body`, pauses (envd has refused by then), sends the
/// rest, then reads the answer's status line.
pub async fn slow_post<S>(mut stream: S, head: &str, body: &[u8]) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (first, rest) = body.split_at(64 << 10);
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(first).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for chunk in rest.chunks(64 << 10) {
        stream.write_all(chunk).await?;
    }
    let mut answer = vec![0; 256];
    let n = stream.read(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer[..n]).into_owned())
}
