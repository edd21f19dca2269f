//! Lifecycle and observation parity with E2B, driven through courier-e2b against a real
//! courier-sandboxd: auto-resume on traffic, metrics history, sandbox logs, idempotent
//! create, and a sandbox killed while a command streams.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. The fixture kills its sandboxes when dropped, even when a test fails.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use courier_e2b::models::{LogLevel, SandboxState};
use courier_e2b::{Client, ConnectionConfig, Error as E2bError, LogsQuery, Sandbox};
use courier_sandboxd::{Sandboxd, ServerConfig};
use tokio::net::TcpListener;

mod support;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");
const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";

struct Fixture {
    server: Sandboxd,
    client: Client,
    /// A client holding a second API key of the same server.
    other_client: Client,
    proxy_url: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    other_key: String,
    dir: tempfile::TempDir,
    /// Whether dropping the fixture kills the server's sandboxes (not on a restart).
    kill_on_drop: bool,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let other_key =
            courier_sandboxd::keys::create_key(&dir.path().join("data")).expect("second key");
        Some(Self::start(dir, other_key).await)
    }

    /// Starts a server on `dir`'s data dir (adopting the sandboxes a previous one left).
    async fn start(dir: tempfile::TempDir, other_key: String) -> Self {
        let mut config = ServerConfig::new(dir.path().join("data"), support::envd_binary());
        config.isolation = Some(support::isolation());
        config.helper = Some(PathBuf::from(HELPER));
        config.domain = Some("courier.test".to_owned());
        config.dev_api_key = Some(KEY.to_owned());
        config.warm_sandboxes = 0;
        let server = Sandboxd::start(config).await.expect("start sandboxd");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let api_url = format!("http://{}", api.local_addr().expect("bound"));
        let proxy_url = format!("http://{}", proxy.local_addr().expect("bound"));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn({
                let server = server.clone();
                let until = support::stopped(stop_rx.clone());
                async move { server.serve_api(api, until).await }
            }),
            tokio::spawn({
                let server = server.clone();
                let until = support::stopped(stop_rx);
                async move { server.serve_proxy(proxy, until).await }
            }),
        ];
        let client_for = |key: &str| {
            Client::new(
                ConnectionConfig::builder()
                    .api_key(key)
                    .api_url(&api_url)
                    .sandbox_url(&proxy_url)
                    .domain("courier.test")
                    .request_timeout(Duration::from_secs(120))
                    .build()
                    .expect("config"),
            )
            .expect("client")
        };
        Self {
            client: client_for(KEY),
            other_client: client_for(&other_key),
            server,
            proxy_url,
            stop,
            tasks,
            other_key,
            dir,
            kill_on_drop: true,
        }
    }

    /// Stops this server without killing its sandboxes and starts another on the same
    /// data dir, as a restarted courier-sandboxd.
    async fn restart(mut self) -> Self {
        self.kill_on_drop = false;
        let _ = self.stop.send(true);
        self.server.stop();
        // As the binary does before it exits: kills answered finish their cleanup.
        self.server.finish_cleanups().await;
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let other_key = std::mem::take(&mut self.other_key);
        // The old server (and its lock on the data dir) goes with the last clone.
        drop(self);
        Self::start(dir, other_key).await
    }

    async fn state(&self, id: &str) -> SandboxState {
        self.client.get_info(id).await.expect("get_info").state
    }

    /// A request to sandbox `id`'s envd `/health` through the proxy, with `token` as its
    /// access token; the status.
    async fn envd_health(&self, id: &str, token: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/health", self.proxy_url))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", "49983")
            .header("X-Access-Token", token)
            .send()
            .await
            .expect("proxy request")
            .status()
            .as_u16()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.stop();
        if !self.kill_on_drop {
            return;
        }
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

/// A paused sandbox created with auto-resume wakes on its next request (through the SDK)
/// and serves it; one without stays paused and gets the proxy's "gone" answer.
///
/// Attacks: another sandbox (or anyone) that knows a sandbox's id but not its envd access
/// token sends requests to its envd port to wake it and keep it running; a sandbox uses
/// its own access token on another sandbox's id. Neither resumes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resume_wakes_a_paused_sandbox_on_traffic_and_only_with_its_token() {
    let Some(fx) = Fixture::new("auto_resume").await else {
        return;
    };
    let waking = Sandbox::builder()
        .auto_pause(true)
        .auto_resume(true)
        .create(&fx.client)
        .await
        .expect("create auto-resume");
    let sleeping = Sandbox::builder()
        .auto_pause(true)
        .create(&fx.client)
        .await
        .expect("create without auto-resume");
    let info = waking.get_info().await.expect("info");
    assert!(info.lifecycle.as_ref().expect("lifecycle").auto_resume);
    assert!(waking.pause().await.expect("pause"));
    assert!(sleeping.pause().await.expect("pause"));

    // Wrong tokens wake nothing.
    let own_token = sleeping
        .record()
        .envd_access_token
        .as_ref()
        .expect("token")
        .expose()
        .to_owned();
    assert_eq!(fx.envd_health(waking.id(), "not-the-token").await, 502);
    assert_eq!(fx.envd_health(waking.id(), &own_token).await, 502);
    assert_eq!(fx.state(waking.id()).await, SandboxState::Paused);

    // The SDK's request (with the right token) wakes it and is served.
    let woken = std::time::Instant::now();
    let out = waking
        .commands()
        .run("echo awake")
        .await
        .expect("run wakes the sandbox");
    assert_eq!(out.stdout, "awake\n");
    eprintln!(
        "measured: a run on a paused auto-resume sandbox took {:?} (resume included)",
        woken.elapsed()
    );
    assert_eq!(fx.state(waking.id()).await, SandboxState::Running);

    // Without auto-resume: the proxy's "gone" answer, still paused.
    let err = sleeping.commands().run("echo no").await.unwrap_err();
    assert!(
        matches!(err, E2bError::SandboxGone { .. }),
        "without autoResume: {err:?}"
    );
    assert_eq!(fx.state(sleeping.id()).await, SandboxState::Paused);

    let events: Vec<String> = waking
        .logs(&LogsQuery::new())
        .await
        .expect("logs")
        .into_iter()
        .filter_map(|e| e.fields.get("event").cloned())
        .collect();
    assert!(
        events.iter().any(|e| e == "auto_resume"),
        "the wake-up is logged: {events:?}"
    );
}

/// Metrics history: a range covering the sandbox's life has samples, all inside it; a
/// range before it existed is empty; several sandboxes at once answer for the running
/// ones only. A killed sandbox's history is gone with it (404), and an id that is not a
/// sandbox of this server reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_history_honours_the_range_and_several_sandboxes_at_once() {
    let Some(fx) = Fixture::new("metrics_history").await else {
        return;
    };
    let start = Utc::now();
    let a = Sandbox::builder()
        .create(&fx.client)
        .await
        .expect("create a");
    let b = Sandbox::builder()
        .create(&fx.client)
        .await
        .expect("create b");
    let mut samples = Vec::new();
    for _ in 0..60 {
        samples = a
            .metrics(Some(start), Some(Utc::now()))
            .await
            .expect("metrics");
        if !samples.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!samples.is_empty(), "no samples in the sandbox's life");
    let end = Utc::now();
    for s in &samples {
        assert!(s.timestamp_unix >= start.timestamp() && s.timestamp_unix <= end.timestamp());
        assert!(s.mem_total > 0);
    }
    // The sampler keeps adding samples every 5 s.
    tokio::time::sleep(courier_sandboxd::server::SAMPLE_EVERY + Duration::from_secs(1)).await;
    let all = a.metrics(None, None).await.expect("metrics");
    assert!(all.len() >= 2, "sampled history: {all:?}");
    let before = a
        .metrics(
            Some(start - chrono::Duration::hours(1)),
            Some(start - chrono::Duration::minutes(30)),
        )
        .await
        .expect("metrics");
    assert!(before.is_empty(), "a range before the sandbox: {before:?}");

    assert!(b.pause().await.expect("pause b"));
    let many = fx
        .client
        .metrics_many(&[a.id(), b.id(), "nosuchsandbox"])
        .await
        .expect("metrics_many");
    assert!(many.contains_key(a.id()), "{many:?}");
    assert!(!many.contains_key(b.id()), "paused: {many:?}");
    assert!(!many.contains_key("nosuchsandbox"));

    assert!(a.kill().await.expect("kill"));
    let err = fx.client.metrics(a.id(), None, None).await.unwrap_err();
    assert!(err.is_not_found(), "a killed sandbox's metrics: {err:?}");
    for id in ["..", "nosuchsandbox"] {
        let err = fx.client.metrics(id, None, None).await.unwrap_err();
        assert!(err.is_not_found(), "{id}: {err:?}");
    }
}

/// Logs: the lifecycle and envd's own lines while the sandbox runs, queried by level and
/// direction; still readable after the sandbox is killed. An id naming a path reads
/// nothing from the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_the_lifecycle_and_envds_lines_and_outlive_the_sandbox() {
    let Some(fx) = Fixture::new("sandbox_logs").await else {
        return;
    };
    let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
    // envd is quiet at its default level; its console (where the runtime's monitor
    // copies envd's stdout and stderr) gets a line as envd's tracing writes one. A
    // sandbox controls what it writes there: the lines are its own, labelled `envd`.
    let console = fx
        .dir
        .path()
        .join("data/runtime/sandboxes")
        .join(sbx.id())
        .join("console.log");
    let line = format!(
        "{}  WARN courier_envd: disk almost full\n",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&console)
            .expect("console log");
        file.write_all(line.as_bytes()).expect("append");
    }
    let logs = sbx.logs(&LogsQuery::new()).await.expect("logs");
    let sources: Vec<&str> = logs
        .iter()
        .filter_map(|e| e.fields.get("source").map(String::as_str))
        .collect();
    assert!(sources.contains(&"sandboxd"), "{logs:?}");
    assert!(sources.contains(&"envd"), "envd's lines: {logs:?}");
    assert!(logs.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let newest = sbx
        .logs(&LogsQuery::new().backward().limit(1))
        .await
        .expect("backward");
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].timestamp, logs.last().expect("entries").timestamp);
    let warnings = sbx
        .logs(&LogsQuery::new().level(LogLevel::Warn))
        .await
        .expect("by level");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].message, "courier_envd: disk almost full");

    assert!(sbx.kill().await.expect("kill"));
    let after = fx
        .client
        .logs(sbx.id(), &LogsQuery::new())
        .await
        .expect("logs after kill");
    assert!(
        after
            .iter()
            .any(|e| e.fields.get("event").map(String::as_str) == Some("killed")),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .any(|e| e.fields.get("source").map(String::as_str) == Some("envd")),
        "envd's lines are captured at kill (the console is removed with the sandbox): {after:?}"
    );
    // The logs directory holds `<id>.json`; ids that are paths or other files of the
    // data dir are not sandboxes.
    for id in ["..", "../records", "lock", "api-keys"] {
        let err = fx.client.logs(id, &LogsQuery::new()).await.unwrap_err();
        assert!(err.is_not_found(), "{id}: {err:?}");
    }
}

/// Idempotent create: concurrent creates with one key make one sandbox; a later retry
/// gets it too; another body under the key is refused naming the header.
///
/// Attack: a holder of another API key of the same server reuses (guesses) the key to
/// get the first key's sandbox, with its envd access token; it gets a sandbox of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_creates_make_one_sandbox_per_key_and_api_key() {
    let Some(fx) = Fixture::new("idempotent_create").await else {
        return;
    };
    let creates = (0..6).map(|_| {
        let client = fx.client.clone();
        tokio::spawn(async move {
            Sandbox::builder()
                .metadata("job", "42")
                .idempotency_key("job-42")
                .create(&client)
                .await
                .map(|s| s.id().to_owned())
        })
    });
    let ids: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("create"))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one sandbox: {ids:?}");
    assert_eq!(fx.server.list().len(), 1);

    // A replay says so (`Idempotent-Replayed`), with the create's own status; the body's
    // key order and spacing do not matter.
    let raw = reqwest::Client::new()
        .post(format!(
            "{}/v2/sandboxes",
            fx.client.config().api_url().as_str().trim_end_matches('/')
        ))
        .header("X-API-Key", KEY)
        .header("Idempotency-Key", "job-42")
        .header("Content-Type", "application/json")
        .body(r#"{ "envVars": {}, "metadata": {"job": "42"}, "templateID": "base" }"#)
        .send()
        .await
        .expect("raw replay");
    assert_eq!(raw.status().as_u16(), 201);
    assert_eq!(
        raw.headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let body: serde_json::Value = raw.json().await.expect("json");
    assert_eq!(body["sandboxID"], ids[0].as_str());

    let other = Sandbox::builder()
        .metadata("job", "42")
        .idempotency_key("job-42")
        .create(&fx.other_client)
        .await
        .expect("create with the other API key");
    assert_ne!(
        other.id(),
        ids[0],
        "another API key got the first key's sandbox"
    );
    assert_ne!(
        other
            .record()
            .envd_access_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        None
    );
    assert_eq!(fx.server.list().len(), 2);

    let err = Sandbox::builder()
        .metadata("job", "43")
        .idempotency_key("job-42")
        .create(&fx.client)
        .await
        .unwrap_err();
    match &err {
        E2bError::Api {
            status: 422,
            message,
            ..
        } => {
            assert!(message.contains("Idempotency-Key"), "{message}");
        }
        other => panic!("another body under the key: {other:?}"),
    }
    assert_eq!(fx.server.list().len(), 2);
}

/// Killing a sandbox while a command streams ends the stream with
/// [`E2bError::SandboxKilled`], not a generic transport error or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_killed_during_a_run_ends_the_stream_as_killed() {
    let Some(fx) = Fixture::new("killed_during_run").await else {
        return;
    };
    let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
    let handle = sbx.commands().spawn("sleep 60").await.expect("spawn");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::time::Instant::now();
    assert!(sbx.kill().await.expect("kill"));
    let err = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the stream ends promptly")
        .unwrap_err();
    eprintln!(
        "measured: kill to the stream's SandboxKilled took {:?}",
        killed.elapsed()
    );
    assert!(
        matches!(err, E2bError::SandboxKilled { .. }),
        "killed during a run: {err:?}"
    );
    assert!(
        err.to_string()
            .contains("killed or reached its end of life")
    );
}

/// A restarted server keeps what E2B keeps: a paused sandbox's auto-resume (traffic
/// still wakes it), and the logs of live and killed sandboxes; metrics history starts
/// again (it is not persisted) but the range query still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resume_and_logs_survive_a_restart() {
    let Some(fx) = Fixture::new("lifecycle_restart").await else {
        return;
    };
    let waking = Sandbox::builder()
        .auto_pause(true)
        .auto_resume(true)
        .create(&fx.client)
        .await
        .expect("create");
    let gone = Sandbox::builder().create(&fx.client).await.expect("create");
    assert!(waking.pause().await.expect("pause"));
    assert!(gone.kill().await.expect("kill"));
    let (waking_id, gone_id) = (waking.id().to_owned(), gone.id().to_owned());
    let record = waking.record().clone();
    drop(waking);

    let fx = fx.restart().await;
    let info = fx.client.get_info(&waking_id).await.expect("adopted");
    assert_eq!(info.state, SandboxState::Paused);
    assert!(info.lifecycle.expect("lifecycle").auto_resume);
    let after = fx
        .client
        .logs(&gone_id, &LogsQuery::new())
        .await
        .expect("a killed sandbox's logs after a restart");
    assert!(
        after
            .iter()
            .any(|e| e.fields.get("event").map(String::as_str) == Some("killed"))
    );
    // Traffic through the new server's proxy, with the token the first one gave, wakes it.
    let waking = Sandbox::from_record(&fx.client, record);
    let out = waking
        .commands()
        .run("echo awake")
        .await
        .expect("run after restart");
    assert_eq!(out.stdout, "awake\n");
    let info = fx.client.get_info(&waking_id).await.expect("info");
    assert_eq!(info.state, SandboxState::Running, "traffic resumed it");
    let events: Vec<String> = fx
        .client
        .logs(&waking_id, &LogsQuery::new())
        .await
        .expect("logs")
        .into_iter()
        .filter_map(|e| e.fields.get("event").cloned())
        .collect();
    assert!(
        ["created", "paused", "auto_resume", "resumed"]
            .iter()
            .all(|want| events.iter().any(|e| e == want)),
        "the first server's events are kept: {events:?}"
    );
}

/// A sandbox recorded before sandboxes had owners (no `owner` in its record): with
/// several API keys no key may reach it, since handing it to the wrong one would give one
/// tenant another's sandbox (an attacker holding any key must not get a 200 for it);
/// once the server has a single key, the restart gives it to that key, the only one that
/// can have created it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_recorded_without_an_owner_goes_to_the_only_key() {
    let Some(fx) = Fixture::new("lifecycle_ownerless").await else {
        return;
    };
    let sandbox = Sandbox::builder().create(&fx.client).await.expect("create");
    let id = sandbox.id().to_owned();
    drop(sandbox);
    let data = fx.dir.path().join("data");
    let record_path = data.join("records").join(format!("{id}.json"));
    let strip_owner = || {
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
        record
            .as_object_mut()
            .expect("object")
            .remove("owner")
            .expect("the record names its owner");
        std::fs::write(&record_path, serde_json::to_vec(&record).expect("json")).expect("write");
    };
    strip_owner();

    // Two keys (the dev key and the data dir's own): whose it was cannot be known.
    let fx = fx.restart().await;
    for client in [&fx.client, &fx.other_client] {
        match client.get_info(&id).await {
            Err(E2bError::NotFound { .. }) => {}
            other => panic!("an ownerless sandbox must be 404 to every key: {other:?}"),
        }
    }

    // The data dir's key removed: the dev key is the only one left and gets it.
    std::fs::remove_file(data.join(courier_sandboxd::keys::KEYS_FILE)).expect("remove keys");
    let fx = fx.restart().await;
    let info = fx
        .client
        .get_info(&id)
        .await
        .expect("the only key reaches it");
    assert_eq!(info.state, SandboxState::Running);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
    assert_eq!(
        record["owner"],
        courier_sandboxd::keys::owner_of(KEY),
        "the adoption is written back"
    );
    fx.client.kill(&id).await.expect("kill");
}

/// A kill through the SDK answers once the sandbox is unreachable — out of the list,
/// its envd gone from the proxy, every process of it dead or with a SIGKILL pending —
/// and the rest of its cleanup (cgroups, directory, mounts) follows on its own.
///
/// Attacks: processes inside fork in a loop and ignore SIGTERM/SIGINT/SIGHUP, so that a
/// child forked while the kill is under way could escape it; the sandbox's envd access
/// token is tried through the proxy after the kill. Nothing survives, nothing answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_answers_once_the_sandbox_is_unreachable_and_its_cleanup_follows() {
    let Some(fx) = Fixture::new("kill_behind").await else {
        return;
    };
    let sbx = Sandbox::builder().create(&fx.client).await.expect("create");
    let id = sbx.id().to_owned();
    let token = sbx
        .record()
        .envd_access_token
        .as_ref()
        .expect("token")
        .expose()
        .to_owned();
    sbx.commands()
        .run(
            "setsid sh -c 'trap \"\" TERM INT HUP; while :; do sleep 600 & sleep 0.01; done' \
             > /dev/null 2>&1 < /dev/null &",
        )
        .await
        .expect("start the fork loop");
    assert_eq!(
        fx.envd_health(&id, &token).await,
        204,
        "envd answers before the kill"
    );
    let cgroup = fx.server.runtime().cgroups().sandbox(&id);
    let dir = fx.dir.path().join("data/runtime/sandboxes").join(&id);
    assert!(cgroup.exists() && dir.exists());
    let before = cgroup.pids();
    assert!(before.iter().any(|pid| !support::dead_or_dying(*pid)));

    assert!(sbx.kill().await.expect("kill"));
    let after = cgroup.pids();
    for pid in before.iter().chain(after.iter()) {
        assert!(
            support::dead_or_dying(*pid),
            "process {pid} survived the kill's answer"
        );
    }
    assert!(!fx.server.list().iter().any(|r| r.sandbox_id == id));
    assert_eq!(fx.envd_health(&id, &token).await, 502);
    assert!(
        !sbx.kill().await.expect("a second kill"),
        "a killed sandbox is not found"
    );

    // The cleanup runs behind the answer: polled, with a generous deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cgroup.exists() || dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "cleanup unfinished: cgroup {}, dir {}",
            cgroup.exists(),
            dir.exists()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.server.finish_cleanups().await;
    for pid in before.iter().chain(after.iter()) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || support::dead_or_dying(*pid),
            "process {pid} outlived the cleanup"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&dir.to_string_lossy().into_owned()),
        "a mount under the killed sandbox's directory is left"
    );
}
