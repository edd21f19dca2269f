//! The real `courier-sandboxd` binary: `keys create`, `serve`, and a restart that finds
//! the running sandbox again.
//!
//! Needs root (sandboxes); without it each test prints why and returns early. Every
//! server started here is stopped, and every sandbox killed, even when a test fails.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_e2b::{Client, ConnectionConfig, Sandbox};
use courier_testkit::binaries::envd_binary;
use courier_testkit::root::root_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_courier-sandboxd");

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A running `courier-sandboxd serve`, stopped with SIGTERM on drop.
struct Server {
    child: Child,
    api: SocketAddr,
    proxy: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let (api, proxy) = (free_addr(), free_addr());
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--api-addr",
                &api.to_string(),
                "--proxy-addr",
                &proxy.to_string(),
            ])
            .arg("--envd-binary")
            .arg(envd_binary())
            // The suites' isolation (`COURIER_TEST_ISOLATION`, default container): these
            // tests look at the sandboxes' processes from the host.
            .args([
                "--isolation",
                &std::env::var("COURIER_TEST_ISOLATION")
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "container".to_owned()),
            ])
            .args(extra)
            .env_remove("COURIER_SANDBOXD_API_KEY")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn courier-sandboxd");
        let server = Server { child, api, proxy };
        let start = Instant::now();
        while std::net::TcpStream::connect(api).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn client(&self, key: &str) -> Client {
        Client::new(
            ConnectionConfig::builder()
                .api_key(key)
                .api_url(format!("http://{}", self.api))
                .sandbox_url(format!("http://{}", self.proxy))
                .request_timeout(Duration::from_secs(120))
                .build()
                .expect("config"),
        )
        .expect("client")
    }

    /// SIGTERM, then wait (SIGKILL after a minute).
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keys_create(data_dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["keys", "create", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("the command prints UTF-8")
        .trim()
        .to_owned()
}

#[test]
fn keys_create_prints_an_e2b_key_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys_create(dir.path());
    assert!(key.starts_with("e2b_") && key.len() == 44, "{key}");
    assert!(
        key[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let stored = std::fs::read_to_string(dir.path().join("api-keys.json")).unwrap();
    assert!(!stored.contains(&key[4..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_finds_its_running_sandboxes_and_kill_on_exit_cleans_up() {
    if !root_or_skip("restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = keys_create(&data);

    let mut first = Server::start(&data, &[]);
    let client = first.client(&key);
    let sbx = Sandbox::builder()
        .metadata("survives", "restart")
        .create(&client)
        .await
        .expect("create");
    sbx.files()
        .write("state.txt", "before restart")
        .await
        .unwrap();
    let id = sbx.id().to_owned();
    let token = sbx.record().envd_access_token.clone();
    first.stop();
    drop(first);

    // The sandbox kept running without a server; the next one adopts it.
    let second = Server::start(&data, &["--kill-on-exit"]);
    let client = second.client(&key);
    let info = client.get_info(&id).await.expect("found again");
    assert_eq!(
        info.metadata.get("survives").map(String::as_str),
        Some("restart")
    );
    let again = Sandbox::connect(&client, &id).await.expect("connect");
    assert_eq!(again.record().envd_access_token, token);
    assert_eq!(
        again.files().read_text("state.txt").await.unwrap(),
        "before restart"
    );
    assert_eq!(
        again.commands().run("echo alive").await.unwrap().stdout,
        "alive\n"
    );
    let runtime_dir = data.join("runtime/sandboxes").join(&id);
    assert!(runtime_dir.exists());
    drop(second); // SIGTERM with --kill-on-exit

    assert!(!runtime_dir.exists(), "kill-on-exit removed the sandbox");
    assert!(!data.join("records").join(format!("{id}.json")).exists());
}

/// Starts and stops a `--kill-on-exit` server on the data dir when dropped.
struct KillEverythingOnDrop(PathBuf);

impl Drop for KillEverythingOnDrop {
    fn drop(&mut self) {
        drop(Server::start(&self.0, &["--kill-on-exit"]));
    }
}

/// Whether a process with exactly this command line runs on the host.
fn process_runs(cmdline: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .any(|raw| {
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            args.join(&b' ') == cmdline.as_bytes()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_kills_its_build_sandboxes_and_keeps_the_others() {
    // The orphans: a recipe whose step runs for a long time (an `npm install`),
    // and the server stopped under it. The build cannot go on without its server, so its
    // build sandbox must not keep running; ordinary sandboxes survive as before.
    if !root_or_skip("build_sandboxes_at_shutdown") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = keys_create(&data);
    // Whatever happens below, a last server with --kill-on-exit removes every sandbox
    // (declared before the servers, so it runs after they stopped).
    let _cleanup = KillEverythingOnDrop(data.clone());
    let mut server = Server::start(&data, &[]);
    let client = server.client(&key);
    let kept = Sandbox::builder().create(&client).await.expect("create");
    // A command line no other test runs, so its process can be told apart.
    let sleep = format!("sleep 600.{}", std::process::id());
    let requested = client
        .templates()
        .request_build(&courier_e2b::BuildRequest::new("courier-it-orphan"))
        .await
        .expect("request build");
    let recipe = courier_e2b::Recipe::from_template("base").step(courier_e2b::Step::run(format!(
        "echo step-started; exec {sleep}"
    )));
    client
        .templates()
        .start_build(&requested.template_id, &requested.build_id, &recipe)
        .await
        .expect("start build");
    let start = Instant::now();
    let mut offset = 0;
    'started: loop {
        let status = client
            .templates()
            .build_status(&requested.template_id, &requested.build_id, offset)
            .await
            .expect("status");
        offset += status.log_entries.len();
        if status
            .log_entries
            .iter()
            .any(|e| e.message == "step-started")
        {
            break 'started;
        }
        assert!(!status.status.is_finished(), "the build ended: {status:?}");
        assert!(start.elapsed() < Duration::from_secs(300), "never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wait = Instant::now();
    while !process_runs(&sleep) {
        assert!(
            wait.elapsed() < Duration::from_secs(30),
            "no {sleep} process"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sandboxes = || {
        std::fs::read_dir(data.join("runtime/sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(sandboxes(), 2, "the kept sandbox and the build sandbox");

    server.stop(); // SIGTERM, without --kill-on-exit
    assert!(
        !process_runs(&sleep),
        "the build's step outlived its server"
    );
    assert_eq!(sandboxes(), 1, "only the build sandbox was killed");
    assert!(data.join("runtime/sandboxes").join(kept.id()).exists());

    // The next start finds the kept sandbox and records the build as interrupted.
    let server = Server::start(&data, &["--kill-on-exit"]);
    let client = server.client(&key);
    client
        .get_info(kept.id())
        .await
        .expect("kept sandbox found again");
    let status = client
        .templates()
        .build_status(&requested.template_id, &requested.build_id, 0)
        .await
        .expect("status");
    assert_eq!(status.status, courier_e2b::BuildState::Error, "{status:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_flags_are_checked_and_applied() {
    // An operator's typo must not start a server without limits.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--max-sandboxes", "0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-sandboxes"));
    if !root_or_skip("limit_flags") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        return;
    }
    // What an API-key holder tries: a second sandbox on a server allowed one. The flag
    // reaches the server: 429 naming the limit, through the SDK as a rate-limit error.
    let key = keys_create(&data);
    let server = Server::start(&data, &["--max-sandboxes", "1", "--kill-on-exit"]);
    let client = server.client(&key);
    let first = Sandbox::builder().create(&client).await.expect("create");
    match Sandbox::builder().create(&client).await {
        Err(courier_e2b::Error::RateLimited { message, .. }) => {
            assert!(
                message.contains("max_sandboxes") && message.contains("is 1"),
                "{message}"
            );
        }
        other => panic!("expected 429, got {:?}", other.map(|s| s.id().to_owned())),
    }
    first.kill().await.expect("kill");
    Sandbox::builder()
        .create(&client)
        .await
        .expect("room again after the kill");
    drop(server);
}
