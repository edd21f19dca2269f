//! `courier-llm-standin [--listen ADDR] [--record FILE] [--slow-secs N]`, key in
//! `STANDIN_KEY`: serves the scripted stand-in LLM (see the library docs) until killed.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use courier_llm_standin::{
    Api, Config, Turn, answer, classify, figures, model_of, recordable_header, unauthorized_body,
    wants_stream,
};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

type Body = BoxBody<Bytes, Infallible>;

struct State {
    config: Config,
    seq: AtomicU64,
    record: std::sync::Mutex<Option<std::fs::File>>,
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

fn presented_key(req: &Request<Incoming>) -> Option<String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    header("x-api-key").or_else(|| {
        header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
    })
}

impl State {
    fn record(&self, entry: Value) {
        let mut file = self.record.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = file.as_mut() {
            // A failed recording must not fail the answer: the CLI under test would see
            // an error the script never meant to give.
            if let Err(e) = writeln!(file, "{entry}").and_then(|()| file.flush()) {
                eprintln!("courier-llm-standin: recording a request: {e}");
            }
        }
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let seq = state.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .filter(|(name, _)| recordable_header(name.as_str()))
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                Value::String(v.to_str().unwrap_or("<binary>").to_owned()),
            )
        })
        .collect();
    let key_ok = presented_key(&req).as_deref() == Some(state.config.key.as_str());
    let websocket = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut entry = json!({"seq": seq, "method": method.as_str(), "path": path,
                           "headers": headers, "key_ok": key_ok, "body": body});

    if path == "/health" {
        return Ok(full(StatusCode::OK, "text/plain", "ok\n"));
    }
    if websocket {
        // Codex tries a Responses WebSocket first; refusing the upgrade makes it use
        // HTTP with SSE.
        entry["answer"] = json!({"status": 426});
        state.record(entry);
        return Ok(full(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "the stand-in speaks HTTP only\n",
        ));
    }
    if method == hyper::Method::GET && path.trim_end_matches('/').ends_with("/models") {
        entry["answer"] = json!({"status": 200});
        state.record(entry);
        return Ok(json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [], "models": [], "has_more": false}),
        ));
    }
    if path.ends_with("/count_tokens") {
        entry["answer"] = json!({"status": 200});
        state.record(entry);
        return Ok(json_response(StatusCode::OK, &json!({"input_tokens": 100})));
    }
    let Some(api) = Api::from_path(&path).filter(|_| method == hyper::Method::POST) else {
        entry["answer"] = json!({"status": 404});
        state.record(entry);
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("the stand-in does not serve {method} {path}")}}),
        ));
    };
    entry["api"] = json!(api.as_str());
    if !key_ok {
        entry["answer"] = json!({"status": 401});
        state.record(entry);
        return Ok(json_response(
            StatusCode::UNAUTHORIZED,
            &unauthorized_body(api),
        ));
    }
    let turn = classify(api, &body);
    let model = model_of(&body);
    let f = figures(api, &turn);
    entry["answer"] = json!({"status": 200, "turn": turn.as_str(), "model": model,
        "figures": {"input": f.input, "output": f.output, "cache_read": f.cache_read, "cache_write": f.cache_write}});
    if let Turn::ToolCall { path, call } = &turn {
        entry["answer"]["write"] = json!(path);
        entry["answer"]["tool"] = json!(call.name);
    }
    state.record(entry);
    if let Turn::Answer { slow: true } = turn {
        tokio::time::sleep(state.config.slow).await;
    }
    let (events, whole) = answer(api, seq, &model, &turn);
    if !wants_stream(&body) {
        return Ok(json_response(StatusCode::OK, &whole));
    }
    let frames = frames(events.iter().map(|e| e.to_wire()).collect());
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// SSE events as body frames, a few milliseconds apart like a real stream.
fn frames(
    events: Vec<String>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    futures::stream::unfold(events.into_iter(), |mut events| async move {
        let event = events.next()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((Ok(Frame::data(Bytes::from(event))), events))
    })
}

fn usage() -> ! {
    eprintln!(
        "usage: courier-llm-standin [--listen 127.0.0.1:8787] [--record FILE] [--slow-secs 300]\n\
         The accepted API key is read from STANDIN_KEY."
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8787).into();
    let mut record = None;
    let mut slow = Duration::from_secs(300);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--record" => record = Some(value().into()),
            "--slow-secs" => {
                slow = Duration::from_secs(value().parse().unwrap_or_else(|_| usage()))
            }
            _ => usage(),
        }
    }
    let Some(key) = std::env::var("STANDIN_KEY").ok().filter(|k| !k.is_empty()) else {
        eprintln!("courier-llm-standin: STANDIN_KEY is not set");
        std::process::exit(2);
    };
    let file = record.as_ref().map(|path: &std::path::PathBuf| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| {
                eprintln!("courier-llm-standin: {}: {e}", path.display());
                std::process::exit(1);
            })
    });
    let state = Arc::new(State {
        config: Config { key, record, slow },
        seq: AtomicU64::new(0),
        record: std::sync::Mutex::new(file),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| {
            eprintln!("courier-llm-standin: binding {listen}: {e}");
            std::process::exit(1);
        });
    eprintln!("courier-llm-standin listening on {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                eprintln!("courier-llm-standin: connection: {e}");
            }
        });
    }
}
