//! What the control-plane, template and egress tests share.
#![allow(dead_code, unused_imports)] // each test crate uses part of it (and of its re-exports)

use courier_sandboxd::runtime::Isolation;

/// The isolation the suites run under: `COURIER_TEST_ISOLATION` (`container` or
/// `gvisor`), default `container`. CI runs the suites once each way.
pub fn isolation() -> Isolation {
    match std::env::var("COURIER_TEST_ISOLATION") {
        Ok(value) if !value.is_empty() => value
            .parse()
            .unwrap_or_else(|e| panic!("COURIER_TEST_ISOLATION: {e}")),
        _ => Isolation::Container,
    }
}
use serde_json::Value;

pub use courier_testkit::root::root_or_skip;

/// Completes once `stop` says so (or its sender is gone).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// One control-plane call with the dev API key: status and JSON body (`Null` when empty).
pub async fn call_api(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http
        .request(method, format!("{api}{path}"))
        .header("X-API-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    };
    (status, value)
}

/// `POST /v3/templates` with `body`: the new template's and build's ids.
///
/// # Panics
/// Unless the server answers 202 with both ids.
pub async fn request_build(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    body: Value,
) -> (String, String) {
    let (status, requested) = call_api(
        http,
        api,
        key,
        reqwest::Method::POST,
        "/v3/templates",
        Some(body),
    )
    .await;
    assert_eq!(status, 202, "{requested}");
    let id = |field: &str| {
        requested[field]
            .as_str()
            .unwrap_or_else(|| panic!("the answer names no {field}: {requested}"))
            .to_owned()
    };
    (id("templateID"), id("buildID"))
}

pub use courier_testkit::binaries::{envd_binary, sandboxd_binary};

/// Whether gVisor can run here (runsc installed); CI must have it.
pub fn gvisor_or_skip(test: &str) -> bool {
    if courier_sandboxd::runtime::gvisor::find_runsc().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs runsc and CI must run it"
    );
    eprintln!("skipping {test}: runsc is not installed");
    false
}

/// The first warm sandbox of `server` whose id is not in `not`, within a minute.
pub async fn next_warm(server: &courier_sandboxd::Sandboxd, not: &[&str]) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(id) = server
            .warm_sandboxes()
            .into_iter()
            .find(|id| !not.contains(&id.as_str()))
        {
            return id;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no warm sandbox started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether host process `pid` is gone, a zombie, exiting (`PF_EXITING` in its stat
/// flags) or has a SIGKILL pending: in every case it never runs user code again.
pub fn dead_or_dying(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return true;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return true;
    }
    // `rest` starts at field 3 (state); field 9 is the flags.
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if flags & PF_EXITING != 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| mask & SIGKILL_BIT != 0)
}

/// The sandbox helper binary the suites' servers re-execute.
pub const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");

/// A server on `data_dir` as the suites run it: their isolation, the helper binary,
/// `key` as the dev API key, the real courier-envd, no warm sandboxes (the tests count
/// sandboxes).
pub fn test_config(data_dir: std::path::PathBuf, key: &str) -> courier_sandboxd::ServerConfig {
    let mut config = courier_sandboxd::ServerConfig::new(data_dir, envd_binary());
    config.isolation = Some(isolation());
    config.helper = Some(std::path::PathBuf::from(HELPER));
    config.dev_api_key = Some(key.to_owned());
    config.warm_sandboxes = 0;
    config
}

/// A started server, its API and proxy served on loopback ports until `stop` says so,
/// and a courier-e2b client for them.
pub struct Served {
    /// The server.
    pub server: courier_sandboxd::Sandboxd,
    /// A client with the configuration's dev key (and domain, when it has one).
    pub client: courier_e2b::Client,
    /// Where the API listens.
    pub api_addr: std::net::SocketAddr,
    /// Where the proxy listens.
    pub proxy_addr: std::net::SocketAddr,
    /// Send `true` to stop serving.
    pub stop: tokio::sync::watch::Sender<bool>,
    /// The two serving tasks (API, proxy).
    pub tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts a server with `config` and serves it (see [`Served`]).
///
/// # Panics
/// When the server does not start or no loopback port can be bound.
pub async fn serve(config: courier_sandboxd::ServerConfig) -> Served {
    let key = config.dev_api_key.clone().unwrap_or_default();
    let domain = config.domain.clone();
    let server = courier_sandboxd::Sandboxd::start(config)
        .await
        .expect("start sandboxd");
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind api");
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let api_addr = api.local_addr().expect("bound listener");
    let proxy_addr = proxy.local_addr().expect("bound listener");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = vec![
        tokio::spawn({
            let server = server.clone();
            let until = stopped(stop_rx.clone());
            async move { server.serve_api(api, until).await }
        }),
        tokio::spawn({
            let server = server.clone();
            let until = stopped(stop_rx);
            async move { server.serve_proxy(proxy, until).await }
        }),
    ];
    let mut builder = courier_e2b::ConnectionConfig::builder()
        .api_key(key)
        .api_url(format!("http://{api_addr}"))
        .sandbox_url(format!("http://{proxy_addr}"))
        .request_timeout(std::time::Duration::from_secs(120));
    if let Some(domain) = domain {
        builder = builder.domain(domain);
    }
    let client = courier_e2b::Client::new(builder.build().expect("config")).expect("client");
    Served {
        server,
        client,
        api_addr,
        proxy_addr,
        stop,
        tasks,
    }
}
