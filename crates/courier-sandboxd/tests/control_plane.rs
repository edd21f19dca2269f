//! The control plane and the sandbox proxy, driven in-process through courier-e2b (the
//! same client the orchestrator uses) against real sandboxes.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. Every fixture kills its sandboxes when dropped, even when a test fails.
//! Waits are generous polls, never tight timing: the machine may be loaded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use courier_e2b::models::SandboxState;
use courier_e2b::{Client, ConnectionConfig, Error as E2bError, Sandbox, SandboxQuery};
use courier_sandboxd::{Sandboxd, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

mod support;

const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";
const DOMAIN: &str = "courier.test";

struct Fixture {
    server: Sandboxd,
    client: Client,
    proxy_addr: std::net::SocketAddr,
    api_url: String,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        Self::with_envd(test, None).await
    }

    /// A fixture whose sandboxes run `envd` (default: the real courier-envd) as init.
    async fn with_envd(test: &str, envd: Option<PathBuf>) -> Option<Self> {
        Self::with_config(test, envd, |_| {}).await
    }

    /// A fixture whose server configuration `tweak` changes last. Sandboxes are not kept
    /// warm unless `tweak` says so (the tests count sandboxes).
    async fn with_config(
        test: &str,
        envd: Option<PathBuf>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = support::test_config(dir.path().join("data"), KEY);
        if let Some(envd) = envd {
            config.envd_binary = envd;
        }
        config.domain = Some(DOMAIN.to_owned());
        tweak(&mut config);
        let served = support::serve(config).await;
        Some(Self {
            server: served.server,
            client: served.client,
            proxy_addr: served.proxy_addr,
            api_url: format!("http://{}", served.api_addr),
            stop: served.stop,
            _dir: dir,
        })
    }

    /// A control-plane request with the API key (unless `key` is false) and extra
    /// headers; status and JSON body (`null` when empty).
    async fn api(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
        key: bool,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.api_url));
        if key {
            request = request.header("X-API-Key", KEY);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("api body");
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        };
        (status, body)
    }

    /// A raw HTTP/1.1 GET to the proxy with an explicit Host header; status and body.
    async fn get_via_host(&self, host: &str, path: &str) -> (u16, String) {
        self.get_via_host_with(host, path, "").await
    }

    /// [`get_via_host`](Self::get_via_host) with extra header lines (`Name: value\r\n`).
    async fn get_via_host_with(&self, host: &str, path: &str, headers: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.proxy_addr)
            .await
            .expect("connect proxy");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("receive");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.stop();
        // Kill whatever the test left, even on failure. Drop is synchronous: run the
        // async kill on a helper thread with its own runtime.
        let server = self.server.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(server.kill_all());
        })
        .join();
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_flow_create_run_files_list_info_pause_resume_timeout_kill() {
    let Some(fx) = Fixture::new("sdk_flow").await else {
        return;
    };
    let sbx = Sandbox::builder()
        .template("base")
        .timeout(Duration::from_secs(600))
        .metadata("suite", "control-plane")
        .metadata("odd key & value", "a b=c")
        .env("GREETING", "hello from courier")
        .create(&fx.client)
        .await
        .expect("create");
    let id = sbx.id().to_owned();
    assert_eq!(id.len(), 20);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );

    // Commands see the create request's environment, as user `user` in /home/user.
    let out = sbx
        .commands()
        .run("echo $GREETING; whoami; pwd")
        .await
        .expect("run");
    assert_eq!(out.stdout, "hello from courier\nuser\n/home/user\n");
    match sbx.commands().run("exit 3").await {
        Err(E2bError::CommandExited { exit_code, .. }) => assert_eq!(exit_code, 3),
        other => panic!("expected exit 3, got {other:?}"),
    }

    // Files.
    sbx.files()
        .write("notes.txt", "kept across pause")
        .await
        .expect("write");
    assert_eq!(
        sbx.files().read_text("/home/user/notes.txt").await.unwrap(),
        "kept across pause"
    );

    // List with filters (metadata triple-encoding included), and get_info.
    let other = Sandbox::builder()
        .metadata("suite", "other")
        .create(&fx.client)
        .await
        .expect("create other");
    let page = fx
        .client
        .list_page(
            &SandboxQuery::new().metadata("odd key & value", "a b=c"),
            None,
        )
        .await
        .expect("list");
    let ids: Vec<_> = page
        .sandboxes
        .iter()
        .map(|s| s.sandbox_id.clone())
        .collect();
    assert_eq!(ids, vec![id.clone()]);
    let page = fx
        .client
        .list_page(&SandboxQuery::new().limit(1), None)
        .await
        .expect("list");
    assert_eq!(page.sandboxes.len(), 1);
    assert_eq!(page.sandboxes[0].sandbox_id, other.id(), "newest first");
    let second = fx
        .client
        .list_page(&SandboxQuery::new().limit(1), page.next_token.as_deref())
        .await
        .expect("page 2");
    assert_eq!(second.sandboxes[0].sandbox_id, id);
    assert!(second.next_token.is_none());
    assert!(other.kill().await.expect("kill other"));

    let info = sbx.get_info().await.expect("info");
    assert_eq!(info.sandbox_id, id);
    assert_eq!(info.template_id, "base");
    assert_eq!(info.state, SandboxState::Running);
    assert_eq!(
        info.metadata.get("suite").map(String::as_str),
        Some("control-plane")
    );

    // A long-running process survives pause and resume, and so do files.
    let sleeper = sbx
        .commands()
        .run("sleep 1000")
        .timeout(Duration::ZERO)
        .spawn()
        .await
        .expect("spawn sleeper");
    let pid = sleeper.pid();
    drop(sleeper);
    assert!(sbx.pause().await.expect("pause"));
    assert!(!sbx.pause().await.expect("second pause"), "already paused");
    assert!(!sbx.is_running().await.expect("is_running while paused"));
    let listed = fx
        .client
        .list_page(&SandboxQuery::new().state(SandboxState::Paused), None)
        .await
        .expect("list paused");
    assert_eq!(listed.sandboxes.len(), 1);
    assert_eq!(
        fx.client.get_info(&id).await.unwrap().state,
        SandboxState::Paused
    );

    let resumed = Sandbox::connect(&fx.client, &id).await.expect("resume");
    assert!(resumed.is_running().await.expect("is_running"));
    assert_eq!(
        resumed.files().read_text("notes.txt").await.unwrap(),
        "kept across pause"
    );
    let processes = resumed.commands().list().await.expect("list processes");
    assert!(
        processes.iter().any(|p| p.pid == pid),
        "sleeper survived: {processes:?}"
    );

    // set_timeout moves the deadline both ways; metrics come from the cgroup.
    resumed
        .set_timeout(Duration::from_secs(900))
        .await
        .expect("extend");
    let later = fx.client.get_info(&id).await.unwrap().end_at;
    resumed
        .set_timeout(Duration::from_secs(300))
        .await
        .expect("shorten");
    assert!(fx.client.get_info(&id).await.unwrap().end_at < later);
    let metrics = fx.client.metrics(&id, None, None).await.expect("metrics");
    assert!(metrics[0].mem_used > 0);

    // Kill: gone from the API and the proxy.
    assert!(resumed.kill().await.expect("kill"));
    assert!(!resumed.is_running().await.expect("is_running after kill"));
    assert!(
        !resumed.kill().await.expect("second kill"),
        "404 reads as false"
    );
    assert!(matches!(
        fx.client.get_info(&id).await,
        Err(E2bError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_port_is_reachable_through_the_proxy_by_host_header() {
    let Some(fx) = Fixture::new("user_port").await else {
        return;
    };
    let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
    sbx.files()
        .write("/tmp/www/hello.txt", "served from the sandbox")
        .await
        .unwrap();
    let host = sbx.get_host(8000);
    assert_eq!(host, format!("8000-{}.{DOMAIN}", sbx.id()));
    // Closed port: the SDK-compatible 502.
    let (status, body) = fx.get_via_host(&host, "/hello.txt").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("port is not open"), "{body}");

    let _server = sbx
        .commands()
        .run("cd /tmp/www && exec python3 -m http.server 8000")
        .timeout(Duration::ZERO)
        .spawn()
        .await
        .expect("start http.server");
    eventually("http.server", Duration::from_secs(60), || async {
        fx.get_via_host(&host, "/hello.txt").await.0 == 200
    })
    .await;
    let (status, body) = fx.get_via_host(&host, "/hello.txt").await;
    assert_eq!((status, body.as_str()), (200, "served from the sandbox"));

    sbx.kill().await.expect("kill");
    let (status, body) = fx.get_via_host(&host, "/hello.txt").await;
    assert_eq!(status, 502);
    assert!(body.contains("The sandbox was not found"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_request_host_rewrites_the_host_of_port_requests() {
    let Some(fx) = Fixture::new("mask_host").await else {
        return;
    };
    let network = courier_e2b::api::models::NetworkConfig {
        mask_request_host: Some("custom-host.example.com:${PORT}".into()),
        ..Default::default()
    };
    let sbx = Sandbox::builder()
        .network(network)
        .create(&fx.client)
        .await
        .expect("create");
    // A server in the sandbox that answers with the Host it was sent.
    let script = "import http.server\n\
        class H(http.server.BaseHTTPRequestHandler):\n\
        \x20   def do_GET(self):\n\
        \x20       body = self.headers['Host'].encode()\n\
        \x20       self.send_response(200)\n\
        \x20       self.send_header('Content-Length', str(len(body)))\n\
        \x20       self.end_headers()\n\
        \x20       self.wfile.write(body)\n\
        http.server.HTTPServer(('', 8000), H).serve_forever()\n";
    sbx.files().write("/tmp/host.py", script).await.unwrap();
    let _server = sbx
        .commands()
        .run("exec python3 /tmp/host.py")
        .timeout(Duration::ZERO)
        .spawn()
        .await
        .expect("start the server");
    let host = sbx.get_host(8000);
    eventually("the server", Duration::from_secs(60), || async {
        fx.get_via_host(&host, "/").await.0 == 200
    })
    .await;
    let (status, body) = fx.get_via_host(&host, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "custom-host.example.com:8000"),
        "the Host the sandbox saw"
    );
    let info = sbx.get_info().await.expect("info");
    assert_eq!(
        info.network.unwrap().mask_request_host.as_deref(),
        Some("custom-host.example.com:${PORT}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_sandbox_ports_need_the_traffic_token() {
    let Some(fx) = Fixture::new("private_ports").await else {
        return;
    };
    let network = courier_e2b::api::models::NetworkConfig {
        allow_public_traffic: Some(false),
        ..Default::default()
    };
    let sbx = Sandbox::builder()
        .network(network)
        .create(&fx.client)
        .await
        .expect("create");
    let token = sbx
        .record()
        .traffic_access_token
        .clone()
        .expect("a private sandbox gets a traffic access token");
    let token = token.expose().to_owned();
    let detail = fx.server.get(sbx.id()).unwrap();
    assert!(!detail.network.allow_public_traffic);
    sbx.files()
        .write("/tmp/www/hello.txt", "private")
        .await
        .unwrap();
    let _server = sbx
        .commands()
        .run("cd /tmp/www && exec python3 -m http.server 8000")
        .timeout(Duration::ZERO)
        .spawn()
        .await
        .expect("start http.server");
    let host = sbx.get_host(8000);
    let with_token = format!("e2b-traffic-access-token: {token}\r\n");
    eventually("http.server", Duration::from_secs(60), || async {
        fx.get_via_host_with(&host, "/hello.txt", &with_token)
            .await
            .0
            == 200
    })
    .await;
    // Anyone who learns the sandbox's id or host tries its port without the token, or
    // with a guessed one: 403 with E2B's body, nothing forwarded.
    let (status, body) = fx.get_via_host(&host, "/hello.txt").await;
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 403);
    assert_eq!(body["sandboxId"], sbx.id());
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("e2b-traffic-access-token"),
        "{body}"
    );
    let guessed = format!("e2b-traffic-access-token: {}\r\n", "0".repeat(token.len()));
    let (status, body) = fx.get_via_host_with(&host, "/hello.txt", &guessed).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("invalid"), "{body}");
    let (status, body) = fx.get_via_host_with(&host, "/hello.txt", &with_token).await;
    assert_eq!((status, body.as_str()), (200, "private"));
    // envd's own port keeps its own token: the SDK works without the traffic token.
    assert_eq!(sbx.commands().run("echo ok").await.unwrap().stdout, "ok\n");
    // A public sandbox needs none.
    let public = Sandbox::builder().create(&fx.client).await.expect("create");
    assert!(public.record().traffic_access_token.is_none());
    public.kill().await.unwrap();
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_expiry_kills_and_kill_cuts_in_flight_streams() {
    let Some(fx) = Fixture::new("timeout_expiry").await else {
        return;
    };
    let sbx = Sandbox::builder()
        .timeout(Duration::from_secs(600))
        .create(&fx.client)
        .await
        .expect("create");
    // A long stream in flight when the sandbox dies must end, not hang.
    let stream = sbx
        .commands()
        .run("sleep 600")
        .timeout(Duration::ZERO)
        .spawn()
        .await
        .expect("spawn");
    sbx.set_timeout(Duration::from_secs(2))
        .await
        .expect("set_timeout");
    let waited = tokio::time::timeout(Duration::from_secs(60), stream.wait()).await;
    assert!(
        matches!(waited, Ok(Err(_))),
        "stream ended with an error: {waited:?}"
    );
    eventually("timeout kill", Duration::from_secs(60), || async {
        !sbx.is_running().await.unwrap_or(true)
    })
    .await;
    assert!(matches!(
        fx.client.get_info(sbx.id()).await,
        Err(E2bError::NotFound { .. })
    ));
    assert!(fx.server.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_and_auth_is_required() {
    let Some(fx) = Fixture::new("api_errors").await else {
        return;
    };
    let bad = Client::new(
        ConnectionConfig::builder()
            .api_key("e2b_ffffffffffffffffffffffffffffffffffffffff")
            .api_url(fx.client.config().api_url().as_str())
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = bad.get_info("nosuchsandbox").await.unwrap_err();
    assert!(
        err.to_string().contains("401") || format!("{err:?}").contains("Auth"),
        "{err:?}"
    );
    assert!(matches!(
        fx.client.get_info("nosuchsandbox").await,
        Err(E2bError::NotFound { .. })
    ));
    let err = Sandbox::builder()
        .template("no-such-template")
        .create(&fx.client)
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("no-such-template"), "{err}");
    // Unknown sandbox through the proxy, header-routed.
    let (status, body) = fx
        .get_via_host("8000-nosuchsandbox.courier.test", "/")
        .await;
    assert_eq!(status, 502);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"sandboxId": "nosuchsandbox", "message": "The sandbox was not found", "code": 502})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_to_envd_ready_latency() {
    let Some(fx) = Fixture::new("create_latency").await else {
        return;
    };
    let mut times = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
        times.push(start.elapsed());
        sbx.kill().await.expect("kill");
    }
    times.sort();
    // Measured, not asserted (the machine may be loaded): see `cargo xtask bench`.
    eprintln!(
        "create -> envd ready over the API: p50 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// A minimal upgrade server for port 9000 inside the sandbox: answers 101, then echoes
/// upper-cased bytes (stands in for a WebSocket server; the proxy only sees an upgrade).
const UPGRADE_ECHO: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000))
s.listen()
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(1024)
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
    while True:
        d = c.recv(1024)
        if not d:
            break
        c.sendall(d.upper())
    c.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_through_the_tunnel_and_kill_cuts_them() {
    let Some(fx) = Fixture::new("upgrades").await else {
        return;
    };
    let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
    sbx.files()
        .write("/tmp/echo.py", UPGRADE_ECHO)
        .await
        .unwrap();
    let _server = sbx
        .commands()
        .run("exec python3 /tmp/echo.py")
        .timeout(Duration::ZERO)
        .spawn()
        .await
        .expect("start echo server");
    let host = sbx.get_host(9000);

    // Retry until the server listens (the proxy answers 502 before that).
    let mut stream;
    let start = Instant::now();
    loop {
        stream = TcpStream::connect(fx.proxy_addr)
            .await
            .expect("connect proxy");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "head ended early");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no upgrade: {head}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stream.write_all(b"hello through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 24];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"HELLO THROUGH THE TUNNEL");

    // Killing the sandbox ends the upgraded connection.
    sbx.kill().await.expect("kill");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the upgraded connection outlived the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envd_requires_the_sandbox_access_token() {
    let Some(fx) = Fixture::new("access_token").await else {
        return;
    };
    let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
    let host = format!("49983-{}.{DOMAIN}", sbx.id());
    let (status, _) = fx.get_via_host(&host, "/health").await;
    assert_eq!(status, 204);
    let (status, body) = fx.get_via_host(&host, "/envs").await;
    assert_eq!(status, 401, "{body}");
    sbx.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_serves_one_server_at_a_time() {
    let Some(fx) = Fixture::new("data_dir_lock").await else {
        return;
    };
    let err = Sandboxd::start(fx.server.config().clone())
        .await
        .expect_err("second server on the same data dir");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pause_pauses_at_the_deadline_and_connect_resumes() {
    let Some(fx) = Fixture::new("auto_pause").await else {
        return;
    };
    let sbx = Sandbox::builder()
        .auto_pause(true)
        .create(&fx.client)
        .await
        .expect("create");
    sbx.files()
        .write("kept.txt", "paused, not killed")
        .await
        .unwrap();
    sbx.set_timeout(Duration::from_secs(2))
        .await
        .expect("set_timeout");
    eventually("auto-pause", Duration::from_secs(60), || async {
        matches!(fx.client.get_info(sbx.id()).await, Ok(info) if info.state == SandboxState::Paused)
    })
    .await;
    assert!(!sbx.is_running().await.expect("is_running"));
    let resumed = Sandbox::connect(&fx.client, sbx.id())
        .await
        .expect("resume");
    assert_eq!(
        resumed.files().read_text("kept.txt").await.unwrap(),
        "paused, not killed"
    );
    assert!(resumed.kill().await.expect("kill"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_whose_envd_fails_is_reported_and_leaves_nothing_behind() {
    // `/bin/false` runs (the base layer is the host's /usr) and exits at once.
    let Some(fx) = Fixture::with_envd("envd_fails", Some(PathBuf::from("/bin/false"))).await else {
        return;
    };
    let err = Sandbox::builder()
        .create(&fx.client)
        .await
        .expect_err("create must fail");
    assert!(err.to_string().contains("envd"), "{err}");
    assert!(fx.server.list().is_empty());
    assert!(fx.server.runtime().list().is_empty());
    let data = &fx.server.config().data_dir;
    for dir in ["records", "envd", "runtime/sandboxes"] {
        let left: Vec<_> = std::fs::read_dir(data.join(dir))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_access_through_courier_e2b_is_granted_only_when_asked_for() {
    let Some(fx) = Fixture::new("internet").await else {
        return;
    };
    if courier_sandboxd::runtime::network::find_slirp4netns().is_none() {
        match Sandbox::builder()
            .allow_internet_access(true)
            .create(&fx.client)
            .await
        {
            Err(e) => assert!(e.to_string().contains("slirp4netns"), "{e}"),
            Ok(_) => panic!("internet access granted without slirp4netns"),
        }
        eprintln!("slirp4netns is not installed: only the refusal was checked");
        return;
    }
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '";
    for (asked, expected) in [
        (Some(true), "lo tap0 "),
        (Some(false), "lo "),
        (None, "lo "),
    ] {
        let mut builder = Sandbox::builder().timeout(Duration::from_secs(300));
        if let Some(allow) = asked {
            builder = builder.allow_internet_access(allow);
        }
        let sbx = builder.create(&fx.client).await.expect("create");
        let out = sbx.commands().run(interfaces).await.expect("run");
        assert_eq!(out.stdout, expected, "allow_internet_access = {asked:?}");
        let info = sbx.get_info().await.expect("info");
        assert_eq!(
            info.allow_internet_access,
            Some(asked == Some(true)),
            "reported back for {asked:?}"
        );
        sbx.kill().await.expect("kill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_takes_a_warm_gvisor_sandbox_and_makes_it_its_own() {
    if !support::gvisor_or_skip("warm") {
        return;
    }
    let Some(fx) = Fixture::with_config("warm", None, |config| {
        config.isolation = Some(courier_sandboxd::runtime::Isolation::Gvisor);
        config.warm_sandboxes = 1;
    })
    .await
    else {
        return;
    };
    let first = Sandbox::builder()
        .env("WHO", "first")
        .create(&fx.client)
        .await
        .expect("create");
    // After a create, one of its shape is started ahead of the next.
    let warm = support::next_warm(&fx.server, &[first.id()]).await;
    // Attack: before a create takes it, nobody reaches it: no record, unknown to the API
    // and to the proxy (its envd has no access token yet).
    assert!(fx.server.get(&warm).is_err());
    assert!(fx.server.list().iter().all(|r| r.sandbox_id != warm));
    let (status, _) = fx
        .get_via_host(&format!("49983-{warm}.{DOMAIN}"), "/health")
        .await;
    assert!(status >= 400, "the proxy reached a warm sandbox: {status}");

    let second = Sandbox::builder()
        .env("WHO", "second")
        .create(&fx.client)
        .await
        .expect("create");
    assert_eq!(second.id(), warm, "the create took the warm sandbox");
    // It is the create's own: its environment, its id as hostname, its access token.
    let out = second.commands().run("echo $WHO; hostname").await.unwrap();
    assert_eq!(out.stdout, format!("second\n{warm}\n"));
    assert!(fx.server.get(&warm).is_ok());
    // And the next one is on its way.
    let next = support::next_warm(&fx.server, &[first.id(), &warm]).await;
    // A shutdown kills warm sandboxes too.
    fx.server.kill_all().await;
    assert!(fx.server.warm_sandboxes().is_empty());
    assert!(
        fx.server.runtime().get(&next).is_err(),
        "{next} outlived kill_all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_gives_its_room_to_a_create() {
    if !support::gvisor_or_skip("warm capacity") {
        return;
    }
    let Some(fx) = Fixture::with_config("warm capacity", None, |config| {
        config.isolation = Some(courier_sandboxd::runtime::Isolation::Gvisor);
        config.warm_sandboxes = 1;
        config.limits.max_sandboxes = 2;
    })
    .await
    else {
        return;
    };
    let first = Sandbox::builder()
        .allow_internet_access(false)
        .create(&fx.client)
        .await
        .expect("create");
    let warm = support::next_warm(&fx.server, &[first.id()]).await;
    // The server is full (one sandbox, one warm); a create of another shape (with
    // internet) cannot take the warm one, but gets its room.
    let second = Sandbox::builder()
        .allow_internet_access(true)
        .create(&fx.client)
        .await
        .expect("a create refused for a warm sandbox's sake");
    assert_ne!(second.id(), warm);
    assert!(
        fx.server.runtime().get(&warm).is_err(),
        "the warm one lives on"
    );
    // Full now: no warm sandbox is started into room the server does not have.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fx.server.warm_sandboxes().is_empty());
    assert_eq!(fx.server.capacity().sandboxes, 2);
}

// Attacker: a second tenant of the server (API key B) who learnt the id of key A's
// sandbox (from a log, a URL, a shared screen). With it they try to read its details,
// list it, read its metrics and logs, set its timeout, refresh it, change its network
// policy, pause, resume, connect to (which hands out its envd token) and kill it, and
// snapshot or fork it. Every call must be a 404 identical to an unknown id's (so ids
// cannot be probed), and must change nothing: key A still runs and manages it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_api_key_cannot_see_or_touch_a_sandbox() {
    use serde_json::json;
    let Some(fx) = Fixture::new("another_api_key").await else {
        return;
    };
    let data_dir = fx.server.config().data_dir.clone();
    let other = courier_sandboxd::keys::create_key(&data_dir).expect("second key");
    let as_b = [("X-API-Key", other.as_str())];
    let sbx = Sandbox::builder()
        .timeout(Duration::from_secs(300))
        .create(&fx.client)
        .await
        .expect("create as A");
    let id = sbx.id().to_owned();
    // B's own sandbox, so B's list is not empty for a trivial reason.
    let (status, mine) = fx
        .api(
            "POST",
            "/sandboxes",
            &as_b,
            Some(json!({"templateID": "base"})),
            false,
        )
        .await;
    assert_eq!(status, 201, "{mine}");
    let b_id = mine["sandboxID"].as_str().unwrap().to_owned();

    let probes = |id: &str| {
        vec![
            ("GET", format!("/sandboxes/{id}"), None),
            ("GET", format!("/sandboxes/{id}/metrics"), None),
            ("GET", format!("/sandboxes/{id}/logs"), None),
            ("GET", format!("/v2/sandboxes/{id}/logs"), None),
            (
                "POST",
                format!("/sandboxes/{id}/timeout"),
                Some(json!({"timeout": 5})),
            ),
            (
                "POST",
                format!("/sandboxes/{id}/refreshes"),
                Some(json!({"duration": 5})),
            ),
            (
                "PUT",
                format!("/sandboxes/{id}/network"),
                Some(json!({"denyOut": ["0.0.0.0/0"]})),
            ),
            ("POST", format!("/sandboxes/{id}/pause"), Some(json!({}))),
            ("POST", format!("/sandboxes/{id}/resume"), Some(json!({}))),
            (
                "POST",
                format!("/sandboxes/{id}/connect"),
                Some(json!({"timeout": 5})),
            ),
            (
                "POST",
                format!("/v2/sandboxes/{id}/connect"),
                Some(json!({"timeout": 5})),
            ),
            (
                "POST",
                format!("/sandboxes/{id}/snapshots"),
                Some(json!({})),
            ),
            ("POST", format!("/sandboxes/{id}/fork"), Some(json!({}))),
            ("DELETE", format!("/sandboxes/{id}"), None),
        ]
    };
    for ((method, path, body), (_, unknown_path, _)) in
        probes(&id).into_iter().zip(probes("nosuchsandbox"))
    {
        let (status, answer) = fx.api(method, &path, &as_b, body.clone(), false).await;
        assert_eq!(status, 404, "key B: {method} {path}: {answer}");
        let (unknown_status, unknown) = fx.api(method, &unknown_path, &as_b, body, false).await;
        assert_eq!(unknown_status, 404, "{method} {unknown_path}: {unknown}");
        // The same answer as for an id that does not exist, the id aside.
        assert_eq!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .replace(&id, "ID"),
            unknown["message"]
                .as_str()
                .unwrap_or_default()
                .replace("nosuchsandbox", "ID"),
            "{method} {path}: another key's sandbox must look unknown"
        );
    }
    for path in [
        "/sandboxes",
        "/v2/sandboxes",
        "/v2/sandboxes?state=running,paused",
    ] {
        let (status, list) = fx.api("GET", path, &as_b, None, false).await;
        assert_eq!(status, 200, "{list}");
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["sandboxID"].as_str())
            .collect();
        assert_eq!(ids, [b_id.as_str()], "key B lists only its own: {path}");
    }
    let (status, many) = fx
        .api(
            "GET",
            &format!("/sandboxes/metrics?sandbox_ids={id},{b_id}"),
            &as_b,
            None,
            false,
        )
        .await;
    assert_eq!(status, 200, "{many}");
    assert!(many["sandboxes"].get(&id).is_none(), "{many}");

    // Nothing changed for key A: it still sees, lists, observes and manages its sandbox.
    let info = fx.client.get_info(&id).await.expect("A reads its sandbox");
    assert_eq!(info.state, SandboxState::Running);
    let listed: Vec<String> = fx
        .client
        .list_page(&SandboxQuery::new(), None)
        .await
        .expect("A lists")
        .sandboxes
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();
    assert_eq!(listed, [id.as_str()], "A lists its own, not B's");
    assert_eq!(
        stdout_of(&sbx, "echo alive").await,
        "alive\n",
        "B's kill and pause did nothing"
    );
    for (method, path, body, want) in [
        ("GET", format!("/sandboxes/{id}/metrics"), None, 200),
        ("GET", format!("/v2/sandboxes/{id}/logs"), None, 200),
        (
            "POST",
            format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 120})),
            204,
        ),
        (
            "POST",
            format!("/sandboxes/{id}/pause"),
            Some(json!({})),
            204,
        ),
        (
            "POST",
            format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 120})),
            201,
        ),
    ] {
        let (status, answer) = fx.api(method, &path, &[], body, true).await;
        assert_eq!(status, want, "key A: {method} {path}: {answer}");
    }
    assert!(fx.client.kill(&id).await.expect("A kills"));
    // A killed sandbox's logs stay its owner's.
    let (status, _) = fx
        .api("GET", &format!("/v2/sandboxes/{id}/logs"), &[], None, true)
        .await;
    assert_eq!(status, 200, "A reads its killed sandbox's logs");
    let (status, _) = fx
        .api(
            "GET",
            &format!("/v2/sandboxes/{id}/logs"),
            &as_b,
            None,
            false,
        )
        .await;
    assert_eq!(status, 404, "B does not");
    let (status, _) = fx
        .api("DELETE", &format!("/sandboxes/{b_id}"), &as_b, None, false)
        .await;
    assert_eq!(status, 204, "B kills its own");
}

/// The stdout of `command` run in `sbx`.
async fn stdout_of(sbx: &Sandbox, command: &str) -> String {
    sbx.commands().run(command).await.expect("run").stdout
}

/// Asserts a 400 whose message names `field`.
fn assert_refused(what: &str, (status, body): (u16, serde_json::Value), field: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["code"], 400, "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "{what}: {message:?} does not name {field}"
    );
}

/// Like [`assert_refused`] for a refusal that is not a 400 (the status is checked by the
/// caller): the message names `field`.
fn assert_refused_status(what: &str, (_, body): (u16, serde_json::Value), field: &str) {
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "{what}: {message:?} does not name {field}"
    );
}

/// Nothing accepted and dropped: every documented option of create, connect, pause (and
/// the deprecated resume, timeout and refresh) with a non-default value is honoured (the
/// effect is checked) or refused with a 400 naming it; the defaults the official SDK
/// sends are accepted; E2B's routes this server does not serve answer 501 naming the
/// feature, behind the API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_option_is_honoured_or_refused_by_name() {
    use serde_json::json;
    let Some(fx) = Fixture::new("strict_options").await else {
        return;
    };
    let sandboxes = || fx.server.list().len();

    // The official Python SDK's create body with its defaults (`Sandbox.create()`):
    // autoResume off and `mcp: null` when a lifecycle or MCP is not given, secure on.
    let internet = courier_sandboxd::runtime::network::find_slirp4netns().is_some();
    let (status, body) = fx
        .api(
            "POST",
            "/sandboxes",
            &[],
            Some(json!({
                "templateID": "base", "timeout": 60, "metadata": {}, "envVars": {},
                "secure": true, "allow_internet_access": internet, "mcp": null,
                "autoResume": {"enabled": false}, "autoPauseMemory": true,
                "iam": {"tokens": {}}, "volumeMounts": [], "network": {"rules": {}},
            })),
            true,
        )
        .await;
    assert_eq!(status, 201, "SDK defaults: {body}");
    let defaults = body["sandboxID"].as_str().unwrap().to_owned();

    // Create: every option this server serves, with a non-default value, and its effect.
    let (status, body) = fx
        .api(
            "POST",
            "/v2/sandboxes",
            &[],
            Some(json!({
                "templateID": "base", "timeout": 120, "metadata": {"purpose": "strict"},
                "envVars": {"COURIER_OPT": "honoured"}, "autoPause": true,
                "autoResume": {"enabled": true},
                "allow_internet_access": false,
                "network": {
                    "allowPublicTraffic": false,
                    "maskRequestHost": "custom-host.example.com:${PORT}",
                    "rules": {"10.0.0.7": [{"transform": {"headers": {"X-Proof": "p-0123456789"}}}]},
                },
                "mcp": {"some-server": {}}, "memoryMB": 512, "cpuCount": 1,
            })),
            true,
        )
        .await;
    assert_eq!(status, 201, "served options: {body}");
    let id = body["sandboxID"].as_str().unwrap().to_owned();
    assert!(
        body["trafficAccessToken"].is_string(),
        "allowPublicTraffic: {body}"
    );
    let (status, info) = fx
        .api("GET", &format!("/sandboxes/{id}"), &[], None, true)
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["metadata"], json!({"purpose": "strict"}));
    assert_eq!(info["lifecycle"]["onTimeout"], "pause", "autoPause: {info}");
    assert_eq!(info["lifecycle"]["autoResume"], true, "autoResume: {info}");
    assert_eq!(info["allowInternetAccess"], false, "{info}");
    assert_eq!(info["network"]["allowPublicTraffic"], false, "{info}");
    // maskRequestHost's effect is checked in mask_request_host_rewrites_the_host_of_port_requests,
    // the rules' in tests/egress (transforms need a networked sandbox); here: stored and
    // reported as E2B's SandboxNetworkRuleInfo.
    assert_eq!(
        info["network"]["maskRequestHost"], "custom-host.example.com:${PORT}",
        "{info}"
    );
    assert_eq!(
        info["network"]["rules"],
        json!({"10.0.0.7": [{"transform": {"headers": {"X-Proof": "p-0123456789"}}}]}),
        "{info}"
    );
    assert_eq!(info["memoryMB"], 512, "{info}");
    assert_eq!(info["cpuCount"], 1, "{info}");
    let started = chrono_secs(&info["startedAt"]);
    let ends = chrono_secs(&info["endAt"]);
    assert!((115..=125).contains(&(ends - started)), "timeout: {info}");
    let sbx = Sandbox::connect(&fx.client, &id).await.expect("connect");
    let out = sbx.commands().run("echo $COURIER_OPT").await.expect("run");
    assert_eq!(out.stdout, "honoured\n", "envVars");

    // volumeMounts: the key's volume is mounted where asked, and what the sandbox writes
    // there is the volume's (read back through the volume content API).
    let (status, volume) = fx
        .api(
            "POST",
            "/volumes",
            &[],
            Some(json!({"name": "strict"})),
            true,
        )
        .await;
    assert_eq!(status, 201, "{volume}");
    let (status, body) = fx
        .api(
            "POST",
            "/sandboxes",
            &[],
            Some(json!({"templateID": "base", "volumeMounts": [{"name": "strict", "path": "/data"}]})),
            true,
        )
        .await;
    assert_eq!(status, 201, "volumeMounts: {body}");
    let mounted = Sandbox::connect(&fx.client, body["sandboxID"].as_str().unwrap())
        .await
        .expect("connect");
    mounted
        .commands()
        .run("echo kept > /data/kept.txt")
        .await
        .expect("write to the volume");
    let read = reqwest::Client::new()
        .get(format!(
            "{}/volumecontent/{}/file?path=/kept.txt",
            fx.api_url,
            volume["volumeID"].as_str().unwrap()
        ))
        .bearer_auth(volume["token"].as_str().unwrap())
        .send()
        .await
        .expect("volume content");
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(read.text().await.unwrap(), "kept\n", "volumeMounts");
    mounted.kill().await.expect("kill");

    // Create: every option this server does not serve, each refused by name, and no
    // sandbox made.
    let before = sandboxes();
    for (field, value, named) in [
        ("autoResume", json!({"enabled": "yes"}), "autoResume"),
        ("autoResume", json!({"when": "traffic"}), "autoResume"),
        ("secure", json!(false), "secure"),
        (
            "iam",
            json!({"tokens": {"t": {"audience": "a", "tokenType": "jwt"}}}),
            "iam",
        ),
        // Served, but a volume the key does not have is refused naming it.
        (
            "volumeMounts",
            json!([{"name": "no-such-volume", "path": "/data"}]),
            "no-such-volume",
        ),
        ("mcp", json!("not an object"), "mcp"),
        (
            "network",
            json!({"dnsServers": ["1.1.1.1"]}),
            "network.dnsServers",
        ),
        (
            "network",
            json!({"egressProxy": {"address": "p:1"}}),
            "network.egressProxy",
        ),
        (
            "network",
            json!({"maskRequestHost": "not a host/${PORT}"}),
            "network.maskRequestHost",
        ),
        (
            "network",
            json!({"rules": {"a.com": [{"transform": {"headers": {"Host": "b.com"}}}]}}),
            "network.rules[\"a.com\"][0].transform.headers[\"Host\"]",
        ),
        (
            "network",
            json!({"httpsPorts": [8443]}),
            "network.httpsPorts",
        ),
        ("somethingNew", json!(1), "somethingNew"),
    ] {
        let mut body = json!({"templateID": "base"});
        body[field] = value;
        let answer = fx.api("POST", "/sandboxes", &[], Some(body), true).await;
        assert_refused(&format!("create {field}"), answer, named);
    }
    assert_eq!(sandboxes(), before, "a refused create made a sandbox");

    // Idempotency-Key: honoured (the same key and body answers with the same sandbox),
    // the same key with another body refused naming the header, a malformed key too.
    let keyed = |body: serde_json::Value, key: &'static str| {
        let fx = &fx;
        async move {
            fx.api(
                "POST",
                "/sandboxes",
                &[("Idempotency-Key", key)],
                Some(body),
                true,
            )
            .await
        }
    };
    let body = json!({"templateID": "base", "timeout": 60, "metadata": {"k": "1"}});
    let (status, first) = keyed(body.clone(), "strict-k1").await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = keyed(body, "strict-k1").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        first["sandboxID"], again["sandboxID"],
        "a replay made another sandbox"
    );
    assert_eq!(sandboxes(), before + 1);
    let answer = keyed(json!({"templateID": "base", "timeout": 61}), "strict-k1").await;
    assert_eq!(answer.0, 422, "{}", answer.1);
    assert_refused_status("another body", answer, "Idempotency-Key");
    let answer = keyed(json!({"templateID": "base"}), "bad key").await;
    assert_refused("malformed key", answer, "Idempotency-Key");
    assert_eq!(sandboxes(), before + 1);
    assert!(
        fx.client
            .kill(first["sandboxID"].as_str().unwrap())
            .await
            .expect("kill keyed")
    );

    // Connect (v2 and legacy): `timeout` served, `memory: false` and unknowns refused.
    for path in [
        format!("/sandboxes/{id}/connect"),
        format!("/v2/sandboxes/{id}/connect"),
    ] {
        let (status, body) = fx
            .api(
                "POST",
                &path,
                &[],
                Some(json!({"timeout": 300, "memory": true})),
                true,
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        let answer = fx
            .api(
                "POST",
                &path,
                &[],
                Some(json!({"timeout": 300, "memory": false})),
                true,
            )
            .await;
        assert_refused(&path, answer, "memory");
        let answer = fx
            .api(
                "POST",
                &path,
                &[],
                Some(json!({"timeout": 300, "autoPause": true})),
                true,
            )
            .await;
        assert_refused(&path, answer, "autoPause");
    }
    let (_, info) = fx
        .api("GET", &format!("/sandboxes/{id}"), &[], None, true)
        .await;
    let left = chrono_secs(&info["endAt"]) - chrono_secs(&info["startedAt"]);
    assert!(left > 200, "connect timeout not honoured: {info}");

    // Timeout and refresh: unknown fields refused.
    let answer = fx
        .api(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            &[],
            Some(json!({"timeout": 300, "extra": true})),
            true,
        )
        .await;
    assert_refused("timeout", answer, "extra");
    let answer = fx
        .api(
            "POST",
            &format!("/sandboxes/{id}/refreshes"),
            &[],
            Some(json!({"duration": 10, "extra": true})),
            true,
        )
        .await;
    assert_refused("refresh", answer, "extra");

    // Pause: unknown fields refused and the sandbox left running; the SDK's default
    // body pauses (memory kept: frozen, still in the runtime).
    let pause = format!("/sandboxes/{id}/pause");
    let answer = fx
        .api(
            "POST",
            &pause,
            &[],
            Some(json!({"requireHealthyGuest": true})),
            true,
        )
        .await;
    assert_refused("pause", answer, "requireHealthyGuest");
    assert!(
        sbx.is_running().await.expect("is_running"),
        "a refused pause paused"
    );
    let (status, body) = fx
        .api("POST", &pause, &[], Some(json!({"memory": true})), true)
        .await;
    assert_eq!(status, 204, "pause: {body}");
    let (_, info) = fx
        .api("GET", &format!("/sandboxes/{id}"), &[], None, true)
        .await;
    assert_eq!(info["state"], "paused", "{info}");
    assert!(
        fx.server.runtime().status(&id).is_ok(),
        "a pause with memory keeps the sandbox (frozen)"
    );

    // autoResume: a request through the proxy wakes the paused sandbox and is served.
    assert_eq!(
        sbx.commands()
            .run("echo $COURIER_OPT")
            .await
            .expect("run on an auto-resumed sandbox")
            .stdout,
        "honoured\n"
    );
    let (_, info) = fx
        .api("GET", &format!("/sandboxes/{id}"), &[], None, true)
        .await;
    assert_eq!(info["state"], "running", "autoResume: {info}");
    let (status, body) = fx.api("POST", &pause, &[], Some(json!({})), true).await;
    assert_eq!(status, 204, "pause again: {body}");

    // Logs: the sandbox's lifecycle so far, through both routes.
    let (status, logs) = fx
        .api("GET", &format!("/v2/sandboxes/{id}/logs"), &[], None, true)
        .await;
    assert_eq!(status, 200, "{logs}");
    let events: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    for event in ["created", "paused", "auto_resume", "resumed"] {
        assert!(events.contains(&event), "logs lack {event}: {logs}");
    }
    let (status, logs) = fx
        .api(
            "GET",
            &format!("/sandboxes/{id}/logs?limit=1"),
            &[],
            None,
            true,
        )
        .await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["logs"].as_array().unwrap().len(), 1, "{logs}");
    assert!(logs["logEntries"].is_array(), "{logs}");
    let answer = fx
        .api(
            "GET",
            &format!("/v2/sandboxes/{id}/logs?direction=up"),
            &[],
            None,
            true,
        )
        .await;
    assert_refused("logs", answer, "direction");

    // Metrics of several sandboxes: running ones only (this one is paused).
    let (status, many) = fx
        .api(
            "GET",
            &format!("/sandboxes/metrics?sandbox_ids={id},{defaults}"),
            &[],
            None,
            true,
        )
        .await;
    assert_eq!(status, 200, "{many}");
    assert!(
        many["sandboxes"][&defaults]["memTotal"].is_number(),
        "{many}"
    );
    assert!(
        many["sandboxes"].get(&id).is_none(),
        "a paused sandbox: {many}"
    );
    let answer = fx.api("GET", "/sandboxes/metrics", &[], None, true).await;
    assert_refused("metrics", answer, "sandbox_ids");
    let answer = fx
        .api(
            "GET",
            &format!("/sandboxes/{defaults}/metrics?start=9&end=1"),
            &[],
            None,
            true,
        )
        .await;
    assert_refused("metrics range", answer, "start");

    // The deprecated resume: `autoPause` other than the sandbox's is refused.
    let resume = format!("/sandboxes/{id}/resume");
    let answer = fx
        .api(
            "POST",
            &resume,
            &[],
            Some(json!({"autoPause": false})),
            true,
        )
        .await;
    assert_refused("resume", answer, "autoPause");
    let answer = fx
        .api("POST", &resume, &[], Some(json!({"memory": false})), true)
        .await;
    assert_refused("resume", answer, "memory");
    let (status, body) = fx
        .api(
            "POST",
            &resume,
            &[],
            Some(json!({"autoPause": true, "timeout": 60})),
            true,
        )
        .await;
    assert_eq!(status, 201, "resume: {body}");
    assert_eq!(
        sbx.commands()
            .run("echo $COURIER_OPT")
            .await
            .expect("run")
            .stdout,
        "honoured\n"
    );

    // Pause `memory: false`: filesystem only. Nothing of the sandbox runs any more (its
    // memory is freed); connect reboots it with its files and its create's envVars.
    sbx.files()
        .write("fs-only.txt", "kept")
        .await
        .expect("write");
    let (status, body) = fx
        .api("POST", &pause, &[], Some(json!({"memory": false})), true)
        .await;
    assert_eq!(status, 204, "pause memory false: {body}");
    let (_, info) = fx
        .api("GET", &format!("/sandboxes/{id}"), &[], None, true)
        .await;
    assert_eq!(info["state"], "paused", "{info}");
    assert!(
        fx.server.runtime().status(&id).is_err(),
        "a filesystem-only pause ends the sandbox's processes"
    );
    let (status, body) = fx
        .api(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            &[],
            Some(json!({"timeout": 60})),
            true,
        )
        .await;
    assert_eq!(status, 201, "reboot: {body}");
    assert_eq!(
        sbx.files().read_text("fs-only.txt").await.expect("read"),
        "kept"
    );
    assert_eq!(
        sbx.commands()
            .run("echo $COURIER_OPT")
            .await
            .expect("run")
            .stdout,
        "honoured\n",
        "envVars after the reboot"
    );

    // Create `autoPauseMemory: false`: the deadline's auto-pause is filesystem-only.
    let (status, body) = fx
        .api(
            "POST",
            "/sandboxes",
            &[],
            Some(
                json!({"templateID": "base", "timeout": 1, "autoPause": true,
                        "autoPauseMemory": false}),
            ),
            true,
        )
        .await;
    assert_eq!(status, 201, "autoPauseMemory: {body}");
    let fs_paused = body["sandboxID"].as_str().unwrap().to_owned();
    eventually(
        "a filesystem-only auto-pause",
        Duration::from_secs(60),
        || async {
            fx.server
                .get(&fs_paused)
                .is_ok_and(|r| r.state == SandboxState::Paused)
                && fx.server.runtime().status(&fs_paused).is_err()
        },
    )
    .await;

    // Snapshots and forks: `name`, `count` and `timeout` honoured, others refused.
    let snapshots = format!("/sandboxes/{id}/snapshots");
    let (status, body) = fx
        .api(
            "POST",
            &snapshots,
            &[],
            Some(json!({"name": "strict"})),
            true,
        )
        .await;
    assert_eq!(status, 201, "snapshot: {body}");
    assert_eq!(body["names"], json!(["strict"]), "name: {body}");
    let (status, listed) = fx
        .api("GET", "/snapshots?name=strict", &[], None, true)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let answer = fx
        .api("POST", &snapshots, &[], Some(json!({"extra": 1})), true)
        .await;
    assert_refused("snapshot", answer, "extra");
    let answer = fx.api("GET", "/snapshots?extra=1", &[], None, true).await;
    assert_refused("list snapshots", answer, "extra");
    let fork = format!("/sandboxes/{id}/fork");
    let (status, body) = fx
        .api(
            "POST",
            &fork,
            &[],
            Some(json!({"count": 1, "timeout": 30})),
            true,
        )
        .await;
    assert_eq!(status, 201, "fork: {body}");
    let forked = body[0]["sandbox"]["sandboxID"].as_str().unwrap().to_owned();
    let (_, info) = fx
        .api("GET", &format!("/sandboxes/{forked}"), &[], None, true)
        .await;
    let lives = chrono_secs(&info["endAt"]) - chrono_secs(&info["startedAt"]);
    assert!((25..=35).contains(&lives), "fork timeout: {info}");
    for (body, named) in [
        (json!({"count": 0}), "count"),
        (json!({"count": 101}), "count"),
        (json!({"extra": 1}), "extra"),
    ] {
        let answer = fx.api("POST", &fork, &[], Some(body), true).await;
        assert_refused("fork", answer, named);
    }

    // E2B's routes this server does not serve: 501 naming the feature, 401 without a key.
    for (method, path, feature) in [
        ("POST", "/templates".to_owned(), "legacy build"),
        ("POST", "/templates/base".to_owned(), "legacy build"),
        ("POST", "/v2/templates".to_owned(), "legacy build"),
        (
            "POST",
            "/templates/base/builds/b1".to_owned(),
            "legacy build",
        ),
        ("GET", "/teams".to_owned(), "team"),
        ("GET", "/teams/t1/metrics".to_owned(), "team"),
        ("GET", "/teams/t1/metrics/max".to_owned(), "team"),
        ("GET", "/secrets".to_owned(), "secrets"),
        ("DELETE", "/secrets/s1".to_owned(), "secrets"),
        ("GET", "/api-keys".to_owned(), "API key"),
        ("PATCH", "/api-keys/k1".to_owned(), "API key"),
        ("POST", "/access-tokens".to_owned(), "access token"),
        ("DELETE", "/access-tokens/a1".to_owned(), "access token"),
        ("GET", "/nodes".to_owned(), "node"),
        ("POST", "/nodes/n1".to_owned(), "node"),
        ("POST", "/admin/teams/t1/sandboxes/kill".to_owned(), "admin"),
        ("GET", "/admin/sandboxes/running-counts".to_owned(), "admin"),
    ] {
        let (status, body) = fx.api(method, &path, &[], Some(json!({})), true).await;
        assert_eq!(status, 501, "{method} {path}: {body}");
        assert_eq!(body["code"], 501, "{method} {path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(feature) && message.contains("not supported"),
            "{method} {path}: {message:?} does not name {feature}"
        );
        let (status, _) = fx.api(method, &path, &[], None, false).await;
        assert_eq!(status, 401, "{method} {path} without a key");
    }
    // An unserved route about a sandbox that does not exist is still its 404.
    for path in ["/sandboxes/nosuch/fork", "/sandboxes/nosuch/snapshots"] {
        let (status, body) = fx.api("POST", path, &[], Some(json!({})), true).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // Template updates are served (their flow, owners and `public` are in
    // tests/templates/updates.rs): unknown fields are refused by name, base is built in.
    for path in ["/templates/base", "/v2/templates/base"] {
        let (status, body) = fx
            .api(
                "PATCH",
                path,
                &[],
                Some(json!({"public": true, "color": 1})),
                true,
            )
            .await;
        assert_refused(path, (status, body), "color");
        let (status, body) = fx
            .api("PATCH", path, &[], Some(json!({"public": true})), true)
            .await;
        assert_eq!(status, 409, "{path}: {body}");
        let (status, _) = fx.api("PATCH", path, &[], None, false).await;
        assert_eq!(status, 401, "PATCH {path} without a key");
    }
    // The served neighbours of unserved routes still work.
    let (status, body) = fx.api("GET", "/templates", &[], None, true).await;
    assert_eq!(status, 200, "{body}");
    // Template info, tags and build logs are served (their full flow is in
    // tests/templates/tags.rs): base's one build and its `default` tag; base is not
    // taggable; unknown builds and fields are refused by name.
    let (status, body) = fx.api("GET", "/templates/base", &[], None, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["templateID"], "base");
    assert_eq!(body["builds"][0]["status"], "ready", "{body}");
    let (status, body) = fx
        .api("GET", "/templates/base?limit=0", &[], None, true)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limit")
    );
    let (status, body) = fx
        .api("GET", "/templates/base?sortBy=x", &[], None, true)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sortBy")
    );
    let (status, body) = fx
        .api("GET", "/v2/templates?limit=1", &[], None, true)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["templateID"], "base", "{body}");
    let (status, body) = fx
        .api("GET", "/v2/templates?teamID=t1", &[], None, true)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("teamID")
    );
    let (status, body) = fx.api("GET", "/templates/base/tags", &[], None, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["tag"], "default", "{body}");
    let (status, body) = fx
        .api(
            "POST",
            "/templates/tags",
            &[],
            Some(json!({"target": "base", "tags": ["mine"]})),
            true,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = fx
        .api(
            "POST",
            "/templates/tags",
            &[],
            Some(json!({"target": "base", "tags": ["mine"], "color": "red"})),
            true,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("color")
    );
    let (status, body) = fx
        .api(
            "DELETE",
            "/templates/tags",
            &[],
            Some(json!({"name": "no-such-template", "tags": ["x"]})),
            true,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = fx
        .api("GET", "/templates/base/builds/b1/logs", &[], None, true)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = fx
        .api(
            "GET",
            "/templates/base/builds/base/logs?direction=sideways",
            &[],
            None,
            true,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("direction")
    );
    for (method, path) in [
        ("GET", "/templates/base"),
        ("GET", "/templates/base/tags"),
        ("POST", "/templates/tags"),
        ("GET", "/templates/base/builds/base/logs"),
    ] {
        let (status, _) = fx.api(method, path, &[], None, false).await;
        assert_eq!(status, 401, "{method} {path} without a key");
    }
    let (status, body) = fx.api("GET", "/no/such/route", &[], None, true).await;
    assert_eq!(status, 404, "{body}");

    assert!(sbx.kill().await.expect("kill"));
    assert!(fx.client.kill(&defaults).await.expect("kill defaults"));
}

/// Seconds since the epoch of an RFC 3339 time in a JSON answer.
fn chrono_secs(value: &serde_json::Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp()
}
