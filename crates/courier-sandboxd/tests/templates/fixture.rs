//! What the template tests share: a server on a data dir that outlives it, and helpers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use courier_e2b::{Client, Sandbox};
use courier_sandboxd::Sandboxd;
use serde_json::{Value, json};

use crate::support;

pub(crate) const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";
/// How long a build may take on a loaded machine before the test gives up.
pub(crate) const BUILD_WAIT: Duration = Duration::from_secs(300);

/// A server on a data dir that outlives it (for restarts), its API on a local port.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) running: Option<Running>,
    /// Where `fromImage` builds pull from.
    pub(crate) images: courier_sandboxd::images::ImageConfig,
}

pub(crate) struct Running {
    pub(crate) server: Sandboxd,
    pub(crate) client: Client,
    pub(crate) http: reqwest::Client,
    pub(crate) api: String,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Fixture {
    pub(crate) async fn new(test: &str) -> Option<Self> {
        Self::with_images(test, courier_sandboxd::images::ImageConfig::default()).await
    }

    /// A fixture whose server pulls images as `images` says.
    pub(crate) async fn with_images(
        test: &str,
        images: courier_sandboxd::images::ImageConfig,
    ) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let mut fx = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            running: None,
            images,
        };
        fx.start().await;
        Some(fx)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) async fn start(&mut self) {
        self.start_with(support::isolation()).await;
    }

    pub(crate) async fn start_with(&mut self, isolation: courier_sandboxd::runtime::Isolation) {
        let mut config = support::test_config(self.data_dir(), KEY);
        config.isolation = Some(isolation);
        // Template tests have always kept the default warm pool.
        config.warm_sandboxes = courier_sandboxd::server::DEFAULT_WARM_SANDBOXES;
        config.images = self.images.clone();
        // Short enough that the never-ready template fails fast, long enough for a
        // loaded machine to run `test -f` a few times.
        config.template_ready_timeout = Duration::from_secs(10);
        let served = support::serve(config).await;
        self.running = Some(Running {
            server: served.server,
            client: served.client,
            http: reqwest::Client::new(),
            api: format!("http://{}", served.api_addr),
            stop: served.stop,
            tasks: served.tasks,
        });
    }

    /// Stops the server (its sandboxes are killed) and releases the data dir.
    pub(crate) async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.kill_all().await;
            let _ = running.stop.send(true);
            running.server.stop();
            for task in running.tasks {
                let _ = task.await;
            }
            drop(running.server);
            self.wait_for_the_lock().await;
        }
    }

    /// Waits until no server holds the data dir's lock: a stopped server's background
    /// tasks (the reaper's tick, the metrics sampler) let go of it soon, and the next
    /// server on the data dir would be refused until they do.
    async fn wait_for_the_lock(&self) {
        let lock = self.data_dir().join("lock");
        let start = Instant::now();
        loop {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&lock)
                .expect("open the lock file");
            if nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the server never stopped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server as a crash or an upgrade would: its sandboxes are left to the
    /// next server on the data dir.
    #[allow(dead_code)] // the snapshot tests restart with paused sandboxes
    pub(crate) async fn stop_keeping_sandboxes(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
            running.server.stop();
            for task in running.tasks {
                let _ = task.await;
            }
            drop(running.server);
            self.wait_for_the_lock().await;
        }
    }

    pub(crate) fn run(&self) -> &Running {
        self.running.as_ref().expect("server running")
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let run = self.run();
        support::call_api(&run.http, &run.api, KEY, method, path, body).await
    }

    /// `POST /v3/templates` with `body`: the new (templateID, buildID).
    pub(crate) async fn request_build(&self, body: Value) -> (String, String) {
        let run = self.run();
        support::request_build(&run.http, &run.api, KEY, body).await
    }

    /// `POST /v3/templates` then `POST /v2/.../builds/...`; returns (templateID,
    /// buildID) and the start answer's status and body.
    pub(crate) async fn build(&self, name: &str, recipe: Value) -> (String, String, u16, Value) {
        let (template_id, build_id) = self
            .request_build(json!({"name": name, "cpuCount": 1, "memoryMB": 512}))
            .await;
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v2/templates/{template_id}/builds/{build_id}"),
                Some(recipe),
            )
            .await;
        (template_id, build_id, status, body)
    }

    /// Builds `name` from base with `version` written to `/opt/version` by root; waits
    /// for it to be ready and returns (templateID, buildID).
    pub(crate) async fn build_version(&self, name: &str, version: &str) -> (String, String) {
        let (template_id, build_id, status, body) = self
            .build(
                name,
                json!({"fromTemplate": "base", "steps": [
                    {"type": "RUN", "args": [format!("echo {version} > /opt/version"), "root"]}
                ]}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let (done, _) = self.wait_build(&template_id, &build_id).await;
        assert_eq!(done["status"], "ready", "{done}");
        (template_id, build_id)
    }

    /// Polls the build status like the SDK (offsets, at most 100 entries a call) until it
    /// is `ready` or `error`; returns the last answer and every log entry.
    pub(crate) async fn wait_build(
        &self,
        template_id: &str,
        build_id: &str,
    ) -> (Value, Vec<Value>) {
        let start = Instant::now();
        let mut entries: Vec<Value> = Vec::new();
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "/templates/{template_id}/builds/{build_id}/status?logsOffset={}",
                        entries.len()
                    ),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body["logEntries"]
                .as_array()
                .expect("logEntries is a list")
                .clone();
            assert!(page.len() <= 100);
            let drained = page.is_empty();
            entries.extend(page);
            let state = body["status"]
                .as_str()
                .expect("status is a string")
                .to_owned();
            if (state == "ready" || state == "error") && drained {
                return (body, entries);
            }
            assert!(
                start.elapsed() < BUILD_WAIT,
                "build {build_id} still {state} after {BUILD_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn sandbox(&self, template: &str) -> Sandbox {
        Sandbox::builder()
            .template(template)
            .timeout(Duration::from_secs(600))
            .create(&self.run().client)
            .await
            .unwrap_or_else(|e| panic!("create from {template}: {e}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
            running.server.stop();
            let server = running.server.clone();
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
}

pub(crate) fn messages(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) async fn stdout(sbx: &Sandbox, command: &str) -> String {
    sbx.commands()
        .run(command)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"))
        .stdout
}

/// A file of `base`'s own tree (/etc is copied) and one of the host's /usr (a host dir
/// overlay): the recipe deletes both.
pub(crate) const BASE_FILE: &str = "/etc/debian_version";
pub(crate) const USR_FILE: &str = "/usr/share/common-licenses/Artistic";
