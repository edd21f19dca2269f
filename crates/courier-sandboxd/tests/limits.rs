//! Server-wide limits against a real courier-sandboxd: capacity (sandboxes and committed
//! memory, answered 429 `{code, message}`), template build deadlines, COPY upload caps.
//!
//! Each test says what an attacker tries: an API-key holder who asks for more than the
//! host has, or a recipe author whose steps never end or whose uploads never stop. Each
//! asserts the attempt fails, names the limit, leaves nothing half-made, and that the
//! server keeps serving.
//!
//! They need root (namespaces, mounts, cgroups): without it each test prints why and
//! returns, except under CI (`CI` set), where a skipped suite would hide a regression,
//! so they fail.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use courier_sandboxd::runtime::Isolation;
use courier_sandboxd::{Sandboxd, ServerConfig, ServerLimits};
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod support;
use support::envd_binary;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");
const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";
/// How long a build may take on a loaded machine before a test gives up.
const BUILD_WAIT: Duration = Duration::from_secs(300);
/// E2B's largest `memoryMB`, what the attacker asks for.
const HUGE_MB: u64 = 65_536;

struct Fixture {
    server: Sandboxd,
    http: reqwest::Client,
    api: String,
    stop: tokio::sync::watch::Sender<bool>,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(test: &str, limits: ServerLimits) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().join("data"), envd_binary());
        config.helper = Some(PathBuf::from(HELPER));
        config.dev_api_key = Some(KEY.to_owned());
        config.limits = limits;
        config.isolation = Some(support::isolation());
        // These tests count sandboxes and reservations exactly (see control_plane.rs for
        // how warm sandboxes share the capacity).
        config.warm_sandboxes = 0;
        let server = Sandboxd::start(config).await.expect("start sandboxd");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let api_addr = api.local_addr().expect("bound listener");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn({
            let server = server.clone();
            let until = support::stopped(stop_rx);
            async move { server.serve_api(api, until).await }
        });
        Some(Self {
            server,
            http: reqwest::Client::new(),
            api: format!("http://{api_addr}"),
            stop,
            dir,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        support::call_api(&self.http, &self.api, KEY, method, path, body).await
    }

    async fn create(&self, memory_mb: u64) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/sandboxes",
            Some(json!({"templateID": "base", "timeout": 600, "memoryMB": memory_mb})),
        )
        .await
    }

    /// Entries of a directory of the data dir (records, runtime sandboxes): what a
    /// half-made create would leave behind.
    fn entries(&self, sub: &str) -> usize {
        std::fs::read_dir(self.dir.path().join("data").join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Asserts that exactly `n` sandboxes exist, in every place a sandbox leaves a trace,
    /// once the cleanups of kills already answered have ended (they run behind the
    /// answer and keep their sandbox's share until then).
    async fn assert_sandboxes(&self, n: usize) {
        self.server.finish_cleanups().await;
        assert_eq!(self.server.list().len(), n, "control-plane entries");
        assert_eq!(self.server.runtime().list().len(), n, "runtime sandboxes");
        assert_eq!(self.entries("records"), n, "records");
        assert_eq!(self.entries("runtime/sandboxes"), n, "runtime sandbox dirs");
        assert_eq!(self.server.capacity().sandboxes as usize, n, "reservations");
    }

    /// `PUT`s `bytes` bytes as COPY files `hash` of `template_id` (with the API key).
    async fn upload(&self, template_id: &str, hash: &str, bytes: u64) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}/templates/{template_id}/files/{hash}", self.api))
            .header("X-API-Key", KEY)
            .body(vec![b'x'; bytes as usize])
            .send()
            .await
            .expect("upload");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Whether COPY files `hash` of `template_id` are stored (`GET …/files/{hash}`).
    async fn present(&self, template_id: &str, hash: &str) -> bool {
        let path = format!("/templates/{template_id}/files/{hash}");
        let (status, link) = self.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 201, "{link}");
        link["present"].as_bool().expect("present is a bool")
    }

    /// `POST /v3/templates` with `body`: the new (templateID, buildID).
    async fn request_build(&self, body: Value) -> (String, String) {
        support::request_build(&self.http, &self.api, KEY, body).await
    }

    /// `POST /v3/templates` then `POST /v2/.../builds/...` with `recipe`; returns the ids.
    async fn build(&self, name: &str, recipe: Value) -> (String, String) {
        let (template_id, build_id) = self
            .request_build(json!({"name": name, "cpuCount": 1, "memoryMB": 512}))
            .await;
        self.start_build(&template_id, &build_id, recipe).await;
        (template_id, build_id)
    }

    async fn start_build(&self, template_id: &str, build_id: &str, recipe: Value) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v2/templates/{template_id}/builds/{build_id}"),
                Some(recipe),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    async fn status(&self, template_id: &str, build_id: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/templates/{template_id}/builds/{build_id}/status"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until the build is `ready` or `error`; returns its last status.
    async fn wait_build(&self, template_id: &str, build_id: &str) -> Value {
        let start = Instant::now();
        loop {
            let body = self.status(template_id, build_id).await;
            if matches!(body["status"].as_str(), Some("ready" | "error")) {
                return body;
            }
            assert!(start.elapsed() < BUILD_WAIT, "build still running: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.stop();
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

fn process_mentions(text: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .any(|raw| String::from_utf8_lossy(&raw).contains(text))
}

/// The statuses and error messages of create answers (never their envd tokens).
fn summary(answers: &[(u16, Value)]) -> Vec<String> {
    answers
        .iter()
        .map(|(status, body)| format!("{status} {}", body["message"].as_str().unwrap_or("")))
        .collect()
}

/// Twenty concurrent creates asking [`HUGE_MB`] each, each on its own task (so they
/// really race at the server); returns the answers.
async fn twenty_huge_creates(fx: &Fixture) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let request = fx
                .http
                .post(format!("{}/sandboxes", fx.api))
                .header("X-API-Key", KEY)
                .json(&json!({"templateID": "base", "timeout": 600, "memoryMB": HUGE_MB}));
            tokio::spawn(async move {
                let response = request.send().await.expect("create");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("json body"))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_defaults_twenty_creates_asking_64_gb_each_get_429_beyond_the_hosts_memory() {
    // The attack from the issue: an API-key holder sends twenty concurrent creates asking
    // 64 GiB each, so the server promises far more memory than the host has. With the
    // default limit (the host's MemTotal) only what fits may start; on this kind of
    // machine that is nothing, and every refusal is E2B's 429 naming the limit.
    let Some(fx) = Fixture::new("defaults_64gb", ServerLimits::default()).await else {
        return;
    };
    let host_mb = courier_sandboxd::limits::host_memory_mb().expect("MemTotal");
    let fits = (host_mb / HUGE_MB).min(20) as usize;
    let answers = twenty_huge_creates(&fx).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), fits, "{:?}", summary(&answers));
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["code"], 429, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("max_memory_mb")
                && message.contains(&format!("{host_mb} MiB"))
                && message.contains(&format!("{HUGE_MB} MiB")),
            "{message}"
        );
    }
    fx.assert_sandboxes(fits).await;
    // The server keeps serving: health, and a modest create.
    let health = fx
        .http
        .get(format!("{}/health", fx.api))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 204);
    let (status, body) = fx.create(512).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_past_the_committed_memory_get_429_and_nothing_half_made() {
    // The same attack against a limit two of the creates fit in: the check and the
    // reservation must be one step, or several racing creates pass the check together.
    let limits = ServerLimits {
        max_memory_mb: Some(2 * HUGE_MB),
        ..ServerLimits::default()
    };
    let Some(fx) = Fixture::new("memory_race", limits).await else {
        return;
    };
    let answers = twenty_huge_creates(&fx).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{:?}",
        summary(&answers)
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        18,
        "{:?}",
        summary(&answers)
    );
    let refused = answers.iter().find(|(s, _)| *s == 429).unwrap();
    assert_eq!(refused.1["code"], 429);
    let message = refused.1["message"].as_str().unwrap();
    assert!(
        message.contains("max_memory_mb")
            && message.contains("131072 MiB")
            && message.contains("65536 MiB"),
        "{message}"
    );
    // Exactly the two that fit exist, everywhere; the refused left nothing behind.
    fx.assert_sandboxes(2).await;
    assert_eq!(fx.server.capacity().memory_mb, 2 * HUGE_MB);
    // Killed sandboxes free their share once their cleanup (behind the kill's answer)
    // ends; a create asking for it right away waits for that rather than being refused.
    for (_, body) in answers.iter().filter(|(s, _)| *s == 201) {
        let id = body["sandboxID"].as_str().unwrap();
        let (status, body) = fx
            .call(reqwest::Method::DELETE, &format!("/sandboxes/{id}"), None)
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let (status, body) = fx.create(HUGE_MB).await;
    assert_eq!(status, 201, "a create right after the kills: {body}");
    let id = body["sandboxID"].as_str().unwrap();
    let (status, body) = fx
        .call(reqwest::Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    fx.assert_sandboxes(0).await;
    assert_eq!(fx.server.capacity().memory_mb, 0);
    let (status, body) = fx.create(HUGE_MB).await;
    assert_eq!(status, 201, "{body}");
    fx.assert_sandboxes(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sandboxes_count_towards_the_sandbox_limit_and_builds_meet_it_too() {
    // An API-key holder keeps sandboxes paused (they hold their memory) and starts
    // template builds, whose build sandboxes are sandboxes too: neither gets around the
    // sandbox limit.
    let limits = ServerLimits {
        max_sandboxes: 2,
        ..ServerLimits::default()
    };
    let Some(fx) = Fixture::new("sandbox_limit", limits).await else {
        return;
    };
    let (status, a) = fx.create(256).await;
    assert_eq!(status, 201, "{a}");
    let (status, b) = fx.create(256).await;
    assert_eq!(status, 201, "{b}");
    let b_id = b["sandboxID"].as_str().unwrap().to_owned();
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            &format!("/sandboxes/{b_id}/pause"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = fx.create(256).await;
    assert_eq!((status, body["code"].as_u64()), (429, Some(429)), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("max_sandboxes") && message.contains("is 2") && message.contains("paused"),
        "{message}"
    );
    fx.assert_sandboxes(2).await;

    // A template build needs a build sandbox: it fails at `base` with the same reason.
    let (template_id, build_id) = fx
        .build(
            "courier-it-full",
            json!({"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["true"]}]}),
        )
        .await;
    let done = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "base", "{done}");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("build sandbox") && reason.contains("max_sandboxes"),
        "{reason}"
    );
    fx.assert_sandboxes(2).await;

    // Killing the paused one makes room.
    let (status, _) = fx
        .call(reqwest::Method::DELETE, &format!("/sandboxes/{b_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = fx.create(256).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_deadline_fails_the_build_and_kills_the_build_sandbox() {
    // A recipe author writes a step that never ends (the issue's `npm install` spinning
    // for 70 minutes): the step deadline fails the build, naming the step and the
    // deadline, and the build sandbox is gone by the time the build reports `error`.
    let limits = ServerLimits {
        template_step_timeout: Duration::from_secs(8),
        ..ServerLimits::default()
    };
    let Some(fx) = Fixture::new("step_deadline", limits).await else {
        return;
    };
    // A command line no other test runs, so its process can be told apart.
    let sleep = format!("sleep 600.{}", std::process::id());
    let (template_id, build_id) = fx
        .build(
            "courier-it-endless-step",
            json!({"fromTemplate": "base", "steps": [
                {"type": "RUN", "args": [format!("echo step-started; exec {sleep}")]},
            ]}),
        )
        .await;
    // While the step runs, its build sandbox exists, and its own timeout backs the
    // build's deadline (default 1 h) plus the grace.
    let start = Instant::now();
    loop {
        let body = fx.status(&template_id, &build_id).await;
        let started = body["logEntries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"] == "step-started");
        if started || body["status"] != "building" {
            break;
        }
        assert!(start.elapsed() < BUILD_WAIT, "the step never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Under gVisor the step's process lives in the Sentry, not on the host: what runs on
    // the host for it are the build sandbox's runsc processes, all named by its data dir.
    let data = fx.dir.path().display().to_string();
    let step_runs = || match support::isolation() {
        Isolation::Container => process_runs(&sleep),
        Isolation::Gvisor => process_mentions(&data),
    };
    let seen = Instant::now();
    while !step_runs() {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "no {sleep} process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(record) = fx.server.list().first() {
        let lifetime = (record.end_at - record.started_at).num_seconds();
        assert!((3650..=3670).contains(&lifetime), "{lifetime}");
    }
    let done = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "1", "{done}");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("step 1 (RUN")
            && reason.contains("8 s")
            && reason.contains("template_step_timeout"),
        "{reason}"
    );
    // Killed before the failure was recorded: no build sandbox, no `sleep` left.
    fx.assert_sandboxes(0).await;
    assert!(!step_runs(), "the step's process outlived its build");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_steps_past_the_build_deadline_fail_the_build() {
    // A recipe author stays under the step deadline with each step, but the steps never
    // run out: the whole build's deadline stops it.
    let limits = ServerLimits {
        template_step_timeout: Duration::from_secs(600),
        template_build_timeout: Duration::from_secs(8),
        ..ServerLimits::default()
    };
    let Some(fx) = Fixture::new("build_deadline", limits).await else {
        return;
    };
    let steps: Vec<Value> = (0..40)
        .map(|_| json!({"type": "RUN", "args": ["sleep 1"]}))
        .collect();
    let (template_id, build_id) = fx
        .build(
            "courier-it-endless-build",
            json!({"fromTemplate": "base", "steps": steps}),
        )
        .await;
    let done = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("8 s") && reason.contains("template_build_timeout"),
        "{reason}"
    );
    let step: u32 = done["reason"]["step"].as_str().unwrap().parse().unwrap();
    assert!((1..40).contains(&step), "{done}");
    fx.assert_sandboxes(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_their_caps_get_413_and_are_removed_once_their_builds_end() {
    // Whoever holds an upload link (or an API key) tries to fill the server's disk: one
    // huge COPY upload, or many that each fit. Both caps answer 413 `{code, message}`
    // naming the limit, and nothing of a refused upload stays.
    const MIB: u64 = 1 << 20;
    let limits = ServerLimits {
        max_upload_bytes: MIB,
        max_uploads_total_bytes: MIB + MIB / 2,
        ..ServerLimits::default()
    };
    let Some(fx) = Fixture::new("upload_caps", limits).await else {
        return;
    };
    let (template_id, build_id) = fx
        .request_build(json!({"name": "courier-it-uploads"}))
        .await;
    let files = fx
        .dir
        .path()
        .join("data/templates")
        .join(&template_id)
        .join("files");
    let (status, body) = fx.upload(&template_id, "too-big", MIB + 1).await;
    assert_eq!((status, body["code"].as_u64()), (413, Some(413)), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("max_upload_bytes") && message.contains(&MIB.to_string()),
        "{message}"
    );
    assert!(!fx.present(&template_id, "too-big").await);
    let leftovers = std::fs::read_dir(&files)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".token"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "a refused upload left a file");

    let (status, body) = fx.upload(&template_id, "first", MIB).await;
    assert_eq!(status, 200, "{body}");
    assert!(fx.present(&template_id, "first").await);
    let (status, body) = fx.upload(&template_id, "second", MIB).await;
    assert_eq!((status, body["code"].as_u64()), (413, Some(413)), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("max_uploads_total_bytes")
            && message.contains(&(MIB + MIB / 2).to_string()),
        "{message}"
    );
    assert!(!fx.present(&template_id, "second").await);

    // Once the template's build is over, its uploads go and make room again.
    fx.start_build(
        &template_id,
        &build_id,
        json!({"fromTemplate": "base", "steps": [
            {"type": "COPY", "args": ["x", "/tmp/x"], "filesHash": "first"},
        ]}),
    )
    .await;
    let done = fx.wait_build(&template_id, &build_id).await;
    // The archive is not a tar file: COPY fails, which is fine here.
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        !fx.present(&template_id, "first").await,
        "the ended build's upload was kept"
    );
    let (status, body) = fx.upload(&template_id, "second", MIB).await;
    assert_eq!(status, 200, "{body}");
}
