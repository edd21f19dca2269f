//! An in-process fake E2B server (control plane and envd on one port) that records every
//! request and answers from a queue of canned responses.

#![allow(dead_code)]

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use courier_e2b::{
    Client, ConnectionConfig, Sandbox,
    codec::{Codec, EndOfStream, Envelope, RpcMessage},
    models::SandboxRecord,
};

pub const API_KEY: &str = "e2b_0123456789abcdef0123456789abcdef01234567";
pub const ACCESS_TOKEN: &str = "envd-token-abcdef";
pub const SANDBOX_ID: &str = "sbx123";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// The payloads of the request's envelopes.
    pub fn envelopes(&self) -> Vec<Envelope> {
        let mut decoder = courier_e2b::codec::EnvelopeDecoder::new(1 << 20);
        decoder.push(&self.body);
        let mut out = Vec::new();
        while let Some(envelope) = decoder.next_envelope().unwrap() {
            out.push(envelope);
        }
        decoder.finish(false).unwrap();
        out
    }
}

/// A canned response.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Bytes>,
    /// Keep the body open after the chunks (never end it).
    pub hang: bool,
}

impl Canned {
    pub fn status(status: u16) -> Canned {
        Canned {
            status,
            headers: Vec::new(),
            chunks: Vec::new(),
            hang: false,
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Canned {
        Canned::status(status)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
    }

    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Canned {
        self.chunks = vec![body.into()];
        self
    }

    /// Never ends the body after the chunks.
    pub fn hang(mut self) -> Canned {
        self.hang = true;
        self
    }

    /// Splits the body into chunks of `size` bytes (sent as separate reads).
    pub fn chunked(mut self, size: usize) -> Canned {
        let all: Vec<u8> = self.chunks.concat();
        self.chunks = all
            .chunks(size.max(1))
            .map(Bytes::copy_from_slice)
            .collect();
        self
    }
}

/// A Connect server-stream response: the messages, then the trailer (unless `None`).
pub fn stream_response<M: RpcMessage>(
    codec: Codec,
    messages: &[M],
    end: Option<EndOfStream>,
) -> Canned {
    let mut body = BytesMut::new();
    for message in messages {
        Envelope::message(codec.encode(message)).write_to(&mut body);
    }
    if let Some(end) = end {
        Envelope::end_stream(end.to_json()).write_to(&mut body);
    }
    Canned::status(200)
        .header("content-type", codec.stream_content_type())
        .body(body.freeze())
}

/// A Connect unary response.
pub fn unary_response<M: RpcMessage>(codec: Codec, message: &M) -> Canned {
    Canned::status(200)
        .header("content-type", codec.unary_content_type())
        .body(codec.encode(message))
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    responses: Mutex<VecDeque<Canned>>,
}

pub struct FakeServer {
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeServer {
            url: format!("http://{addr}"),
            shared,
        }
    }

    pub fn push(&self, response: Canned) -> &Self {
        self.shared.responses.lock().unwrap().push_back(response);
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one request, got {requests:#?}"
        );
        requests.into_iter().next().unwrap()
    }

    pub fn config(&self) -> courier_e2b::ConnectionConfigBuilder {
        ConnectionConfig::builder()
            .api_key(API_KEY)
            .api_url(&self.url)
            .sandbox_url(&self.url)
    }

    pub fn client(&self) -> Client {
        Client::new(self.config().build().unwrap()).unwrap()
    }

    pub fn client_with(&self, codec: Codec) -> Client {
        Client::new(self.config().codec(codec).build().unwrap()).unwrap()
    }

    pub fn sandbox(&self, codec: Codec) -> Sandbox {
        Sandbox::from_record(&self.client_with(codec), record(Some(ACCESS_TOKEN)))
    }
}

pub fn record(token: Option<&str>) -> SandboxRecord {
    let mut value = serde_json::json!({
        "templateID": "base", "sandboxID": SANDBOX_ID, "clientID": "6532622b", "envdVersion": "0.6.13",
    });
    if let Some(token) = token {
        value["envdAccessToken"] = token.into();
    }
    serde_json::from_value(value).unwrap()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    shared.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    });
    let canned = shared
        .responses
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Canned::status(599));
    let chunks = futures::stream::iter(
        canned
            .chunks
            .into_iter()
            .map(Ok::<_, std::convert::Infallible>),
    );
    let body = if canned.hang {
        Body::from_stream(futures::StreamExt::chain(
            chunks,
            futures::stream::pending(),
        ))
    } else {
        Body::from_stream(chunks)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    for (name, value) in canned.headers {
        response.headers_mut().append(
            axum::http::HeaderName::try_from(name).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}
