//! Templates built from recipes through E2B's template build API (the requests the
//! official SDKs' `Template.build` sends), against real sandboxes: the build runs its
//! steps in a build sandbox, the captured layer is used by sandboxes of the new
//! template, failures are reported with the step, templates survive a restart.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. Waits are generous polls, never timed assertions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use courier_e2b::{Client, ConnectionConfig, Sandbox};
use courier_sandboxd::{Sandboxd, ServerConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod support;
use support::envd_binary;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");
const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";
/// How long a build may take on a loaded machine before the test gives up.
const BUILD_WAIT: Duration = Duration::from_secs(300);

/// A server on a data dir that outlives it (for restarts), its API on a local port.
struct Fixture {
    dir: tempfile::TempDir,
    running: Option<Running>,
}

struct Running {
    server: Sandboxd,
    client: Client,
    http: reqwest::Client,
    api: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let mut fx = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            running: None,
        };
        fx.start().await;
        Some(fx)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn start(&mut self) {
        self.start_with(support::isolation()).await;
    }

    async fn start_with(&mut self, isolation: courier_sandboxd::runtime::Isolation) {
        let mut config = ServerConfig::new(self.data_dir(), envd_binary());
        config.isolation = Some(isolation);
        config.helper = Some(PathBuf::from(HELPER));
        config.dev_api_key = Some(KEY.to_owned());
        // Short enough that the never-ready template fails fast, long enough for a
        // loaded machine to run `test -f` a few times.
        config.template_ready_timeout = Duration::from_secs(10);
        let server = Sandboxd::start(config).await.expect("start sandboxd");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let (api_addr, proxy_addr) = (
            api.local_addr().expect("bound listener"),
            proxy.local_addr().expect("bound listener"),
        );
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
        let client = Client::new(
            ConnectionConfig::builder()
                .api_key(KEY)
                .api_url(format!("http://{api_addr}"))
                .sandbox_url(format!("http://{proxy_addr}"))
                .request_timeout(Duration::from_secs(120))
                .build()
                .expect("config"),
        )
        .expect("client");
        self.running = Some(Running {
            server,
            client,
            http: reqwest::Client::new(),
            api: format!("http://{api_addr}"),
            stop,
            tasks,
        });
    }

    /// Stops the server (its sandboxes are killed) and releases the data dir.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.kill_all().await;
            let _ = running.stop.send(true);
            running.server.stop();
            for task in running.tasks {
                let _ = task.await;
            }
        }
    }

    fn run(&self) -> &Running {
        self.running.as_ref().expect("server running")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let run = self.run();
        support::call_api(&run.http, &run.api, KEY, method, path, body).await
    }

    /// `POST /v3/templates` then `POST /v2/.../builds/...`; returns (templateID,
    /// buildID) and the start answer's status and body.
    async fn build(&self, name: &str, recipe: Value) -> (String, String, u16, Value) {
        let (status, requested) = self
            .call(
                reqwest::Method::POST,
                "/v3/templates",
                Some(json!({"name": name, "cpuCount": 1, "memoryMB": 512})),
            )
            .await;
        assert_eq!(status, 202, "{requested}");
        let template_id = requested["templateID"]
            .as_str()
            .expect("the answer names the template")
            .to_owned();
        let build_id = requested["buildID"]
            .as_str()
            .expect("the answer names the build")
            .to_owned();
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
    async fn build_version(&self, name: &str, version: &str) -> (String, String) {
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
    async fn wait_build(&self, template_id: &str, build_id: &str) -> (Value, Vec<Value>) {
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

    async fn sandbox(&self, template: &str) -> Sandbox {
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

fn messages(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn stdout(sbx: &Sandbox, command: &str) -> String {
    sbx.commands()
        .run(command)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"))
        .stdout
}

/// A file of `base`'s own tree (/etc is copied) and one of the host's /usr (a host dir
/// overlay): the recipe deletes both.
const BASE_FILE: &str = "/etc/debian_version";
const USR_FILE: &str = "/usr/share/common-licenses/Artistic";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipe_build_captures_writes_deletions_and_env_and_templates_stack() {
    let Some(fx) = Fixture::new("recipe_build").await else {
        return;
    };
    // The deleted files must exist in base for the deletion check to mean anything.
    let base = fx.sandbox("base").await;
    assert_eq!(
        stdout(
            &base,
            &format!("test -f {BASE_FILE} && test -f {USR_FILE} && echo both")
        )
        .await,
        "both\n",
        "the test expects {BASE_FILE} and {USR_FILE} in base"
    );
    base.kill().await.expect("kill base sandbox");

    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-tpl",
            json!({
                "fromTemplate": "base",
                "force": false,
                "steps": [
                    {"type": "RUN", "args": ["mkdir -p /opt && echo root-file > /opt/marker && id -un", "root"], "force": false},
                    {"type": "RUN", "args": ["printf '#!/bin/sh\\necho tool-ok\\n' > /usr/local/bin/courier-tool && chmod +x /usr/local/bin/courier-tool", "root"], "force": false},
                    {"type": "RUN", "args": ["echo user-file > ~/hello.txt && echo \"default user: $(id -un)\""], "force": false},
                    {"type": "RUN", "args": [format!("rm {BASE_FILE} {USR_FILE}"), "root"], "force": false},
                    {"type": "ENV", "args": ["COURIER_TPL_GREETING", "hi from template", "SECOND", "2"], "force": false},
                    {"type": "RUN", "args": ["echo \"env=$COURIER_TPL_GREETING\"; echo to-stderr >&2"], "force": false},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    let lines = messages(&entries);
    assert_eq!(done["status"], "ready", "{done}\n{lines:#?}");
    assert!(done.get("reason").is_none(), "{done}");
    for expected in [
        "root",
        "default user: user",
        "env=hi from template",
        "to-stderr",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:#?}"
        );
    }
    // Step output is tagged with its step number, 1-based like the SDK's stack traces.
    let env_line = entries
        .iter()
        .find(|e| e["message"] == "env=hi from template")
        .unwrap();
    assert_eq!(env_line["step"], "6");
    assert!(env_line["timestamp"].is_string() && env_line["level"] == "info");

    // Listed, with its limits, and found by alias.
    let (status, list) = fx.call(reqwest::Method::GET, "/templates", None).await;
    assert_eq!(status, 200);
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap_or_else(|| panic!("{template_id} not listed: {list}"));
    assert_eq!(item["buildStatus"], "ready");
    assert_eq!(item["buildID"], build_id.as_str());
    assert_eq!(item["aliases"], json!(["courier-it-tpl"]));
    assert_eq!(
        (item["cpuCount"].as_u64(), item["memoryMB"].as_u64()),
        (Some(1), Some(512))
    );
    let (status, alias) = fx
        .call(
            reqwest::Method::GET,
            "/templates/aliases/courier-it-tpl",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(alias["templateID"], template_id.as_str());
    let (status, _) = fx
        .call(
            reqwest::Method::GET,
            "/templates/aliases/no-such-template",
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A sandbox of the new template has the writes, not the deleted files, and the env.
    let sbx = fx.sandbox("courier-it-tpl").await;
    assert_eq!(sbx.get_info().await.unwrap().template_id, template_id);
    assert_eq!(
        stdout(&sbx, "cat /opt/marker; stat -c %U /opt/marker").await,
        "root-file\nroot\n"
    );
    assert_eq!(
        stdout(
            &sbx,
            "cat /home/user/hello.txt; stat -c %U /home/user/hello.txt"
        )
        .await,
        "user-file\nuser\n"
    );
    assert_eq!(stdout(&sbx, "courier-tool").await, "tool-ok\n");
    assert_eq!(
        stdout(&sbx, "echo \"$COURIER_TPL_GREETING/$SECOND\"; whoami").await,
        "hi from template/2\nuser\n"
    );
    assert_eq!(
        stdout(
            &sbx,
            &format!(
                "for f in {BASE_FILE} {USR_FILE}; do test -e $f && echo present || echo gone; done"
            )
        )
        .await,
        "gone\ngone\n"
    );
    // The host's /usr is untouched.
    assert!(Path::new(USR_FILE).exists());

    // A template built on the built one stacks on its layers.
    let (child_id, child_build, status, body) = fx
        .build(
            "courier-it-child",
            json!({
                "fromTemplate": "courier-it-tpl",
                "steps": [
                    {"type": "WORKDIR", "args": ["/srv"]},
                    // Relative: continues from /srv.
                    {"type": "WORKDIR", "args": ["app"]},
                    {"type": "RUN", "args": ["cat /opt/marker > child.txt; echo \"$COURIER_TPL_GREETING\" >> child.txt"]},
                    {"type": "USER", "args": ["root"]},
                    {"type": "RUN", "args": ["id -un > /opt/built-as"]},
                    {"type": "USER", "args": ["user"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&child_id, &child_build).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    let child = fx.sandbox(&child_id).await;
    assert_eq!(
        stdout(
            &child,
            "pwd; whoami; cat child.txt /opt/built-as; courier-tool; \
             test -e /etc/debian_version || echo gone"
        )
        .await,
        "/srv/app\nuser\nroot-file\nhi from template\nroot\ntool-ok\ngone\n"
    );

    // Delete: refused for base, while sandboxes run, while a child stacks on it.
    let (status, body) = fx
        .call(reqwest::Method::DELETE, "/templates/base", None)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{child_id}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("sandboxes"),
        "{body}"
    );
    child.kill().await.unwrap();
    sbx.kill().await.unwrap();
    let (status, body) = fx
        .call(reqwest::Method::DELETE, "/templates/courier-it-tpl", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(&child_id),
        "{body}"
    );
    let (status, _) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{child_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{template_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = fx
        .call(
            reqwest::Method::GET,
            "/templates/aliases/courier-it-tpl",
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(!fx.data_dir().join("layers").join(&template_id).exists());
    assert!(!fx.data_dir().join("templates").join(&template_id).exists());
    // No build sandbox is left behind.
    assert!(fx.run().server.list().is_empty());
}

/// What the agents' tool templates do: `npm install -g` of a CLI as root, from the npm
/// registry (a public address the egress policy lets build sandboxes reach), then the CLI
/// runs in a sandbox of the template as `user`. Runs under the suites' isolation, so CI
/// checks it for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_installs_an_npm_cli_as_root() {
    let Some(fx) = Fixture::new("npm_cli").await else {
        return;
    };
    if courier_sandboxd::runtime::network::find_slirp4netns().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "slirp4netns is missing (scripts/setup-machine.sh installs it)"
        );
        eprintln!("skipping: build sandboxes need slirp4netns to reach npm");
        return;
    }
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-npm-cli",
            json!({
                "fromTemplate": "base",
                "steps": [{"type": "RUN", "args": [
                    "npm install -g --no-audit --no-fund semver@7.6.3 && semver 7.6.3",
                    "root"
                ]}],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    assert!(
        messages(&entries).iter().any(|l| l == "7.6.3"),
        "{:#?}",
        messages(&entries)
    );
    let sbx = fx.sandbox("courier-it-npm-cli").await;
    assert_eq!(
        stdout(
            &sbx,
            "semver -r '>=7' 7.6.3; stat -c %U $(command -v semver)"
        )
        .await,
        "7.6.3\nroot\n"
    );
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_step_and_unsupported_recipes_are_reported() {
    let Some(fx) = Fixture::new("failing_step").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-fail",
            json!({
                "fromTemplate": "base",
                "steps": [
                    {"type": "RUN", "args": ["echo first-ok"]},
                    {"type": "RUN", "args": ["echo about to fail; echo oops >&2; exit 7"]},
                    {"type": "RUN", "args": ["echo never-runs"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    let lines = messages(&entries);
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "2", "{done}");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("exit code 7") && reason.contains("oops"),
        "{reason}"
    );
    assert!(lines.iter().any(|l| l == "about to fail"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "first-ok"), "{lines:#?}");
    assert!(!lines.iter().any(|l| l == "never-runs"), "{lines:#?}");
    assert!(entries.iter().any(|e| e["level"] == "error"), "{lines:#?}");
    // Not usable, listed as failed, no layer, no build sandbox left.
    let create = Sandbox::builder()
        .template("courier-it-fail")
        .create(&fx.run().client)
        .await;
    assert!(
        create.is_err(),
        "a failed template must not start sandboxes"
    );
    let (_, list) = fx.call(reqwest::Method::GET, "/templates", None).await;
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap();
    assert_eq!(item["buildStatus"], "error");
    assert!(
        !fx.data_dir()
            .join("layers")
            .join(&template_id)
            .join(&build_id)
            .exists()
    );
    assert!(fx.run().server.list().is_empty());

    // A USER step naming nobody fails at that step.
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-nobody",
            json!({"fromTemplate": "base", "steps": [{"type": "USER", "args": ["nobody-here"]}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, _) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "1");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(reason.contains("no user nobody-here"), "{reason}");

    // A COPY whose files were never uploaded: 400 naming the step; the build fails
    // instead of waiting forever.
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-copy",
            json!({
                "fromTemplate": "base",
                "steps": [{"type": "COPY", "args": ["src", "/dst", "", ""], "filesHash": "abc"}],
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("step 1 (COPY)") && message.contains("not uploaded"),
        "{message}"
    );
    let (done, _) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error");
    let (_, _, status, body) = fx
        .build(
            "courier-it-add",
            json!({"fromTemplate": "base", "steps": [{"type": "ADD", "args": ["x", "/x"]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("RUN, ENV, WORKDIR, USER, COPY"),
        "{message}"
    );
    let (_, _, status, body) = fx
        .build(
            "courier-it-image",
            json!({"fromImage": "ubuntu:22.04", "steps": []}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("fromTemplate"),
        "{body}"
    );
    let (_, _, status, body) = fx
        .build(
            "courier-it-missing",
            json!({"fromTemplate": "no-such-parent", "steps": []}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            "/v3/templates",
            Some(json!({"name": "Bad Name"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_survive_a_restart_and_interrupted_builds_fail() {
    let Some(mut fx) = Fixture::new("restart").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-restart",
            json!({
                "fromTemplate": "base",
                "steps": [
                    {"type": "RUN", "args": ["echo persisted > /home/user/p.txt"]},
                    {"type": "ENV", "args": ["KEPT", "yes"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, before) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}");
    // A second build of the same name: same template, new build, left waiting.
    let (status, second) = fx
        .call(
            reqwest::Method::POST,
            "/v3/templates",
            Some(json!({"name": "courier-it-restart"})),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(second["templateID"], template_id.as_str());
    let second_build = second["buildID"].as_str().unwrap().to_owned();
    assert_ne!(second_build, build_id);

    fx.stop().await;
    // Make the second build look like one a crash interrupted mid-way: `building`, with
    // a half-made layer.
    let build_json = fx
        .data_dir()
        .join("templates")
        .join(&template_id)
        .join("builds")
        .join(format!("{second_build}.json"));
    let mut record: Value = serde_json::from_slice(&std::fs::read(&build_json).unwrap()).unwrap();
    record["status"] = json!("building");
    std::fs::write(&build_json, serde_json::to_vec(&record).unwrap()).unwrap();
    let half = fx
        .data_dir()
        .join("layers")
        .join(&template_id)
        .join(format!("{second_build}.partial"));
    std::fs::create_dir_all(half.join("rootfs")).unwrap();
    fx.start().await;

    let (done, after) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready");
    assert_eq!(
        messages(&after),
        messages(&before),
        "the log is kept on disk"
    );
    let (done, log) = fx.wait_build(&template_id, &second_build).await;
    assert_eq!(done["status"], "error");
    assert_eq!(done["reason"]["message"], "interrupted by a server restart");
    assert!(
        messages(&log)
            .iter()
            .any(|l| l.contains("interrupted by a server restart"))
    );
    assert!(!half.exists(), "the half-made layer is removed");

    // The template still starts sandboxes from its ready build.
    let (_, list) = fx.call(reqwest::Method::GET, "/templates", None).await;
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["buildStatus"], "ready", "{item}");
    let sbx = fx.sandbox("courier-it-restart").await;
    assert_eq!(
        stdout(&sbx, "cat /home/user/p.txt; echo $KEPT").await,
        "persisted\nyes\n"
    );
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_command_runs_in_every_sandbox_once_ready_and_a_never_ready_template_fails() {
    let Some(fx) = Fixture::new("start_ready").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-start",
            json!({
                "fromTemplate": "base",
                "steps": [{"type": "ENV", "args": ["STARTED_BY", "startCmd"]}],
                // The file appears only after a while: create must wait for readyCmd.
                "startCmd": "sleep 1; echo \"$STARTED_BY as $(id -un)\" > /tmp/started; exec sleep infinity",
                "readyCmd": "test -f /tmp/started",
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    for _ in 0..2 {
        let sbx = fx.sandbox("courier-it-start").await;
        // /tmp is each sandbox's own tmpfs: the file is this sandbox's start command's.
        assert_eq!(stdout(&sbx, "cat /tmp/started").await, "startCmd as user\n");
        sbx.kill().await.unwrap();
    }

    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-never-ready",
            json!({"fromTemplate": "base", "steps": [], "readyCmd": "echo not-yet; exit 1"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, _) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "finalize");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("readyCmd") && reason.contains("not-yet"),
        "{reason}"
    );
    assert!(fx.run().server.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_steps_use_uploaded_archives() {
    let Some(fx) = Fixture::new("copy").await else {
        return;
    };
    // The archive the SDK would upload: paths relative to the context directory.
    let context = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(context.path().join("app/lib")).unwrap();
    std::fs::write(context.path().join("app/main.py"), "print('main')\n").unwrap();
    std::fs::write(context.path().join("app/lib/util.py"), "UTIL = 1\n").unwrap();
    std::fs::write(context.path().join("notes.txt"), "some notes\n").unwrap();
    let archive = context.path().join("upload.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(context.path())
        .args(["app", "notes.txt"])
        .status()
        .expect("run tar");
    assert!(status.success());

    let (status, requested) = fx
        .call(
            reqwest::Method::POST,
            "/v3/templates",
            Some(json!({"name": "courier-it-copy-ok"})),
        )
        .await;
    assert_eq!(status, 202, "{requested}");
    let template_id = requested["templateID"]
        .as_str()
        .expect("the answer names the template")
        .to_owned();
    let build_id = requested["buildID"]
        .as_str()
        .expect("the answer names the build")
        .to_owned();
    let files = format!("/templates/{template_id}/files/hash-one");
    let (status, link) = fx.call(reqwest::Method::GET, &files, None).await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["present"], false);
    // The link carries a one-time token (like a presigned URL); no credentials are
    // echoed back.
    assert!(link.get("headers").is_none(), "{link}");
    assert!(!link.to_string().contains(KEY), "{link}");
    let url = link["url"].as_str().unwrap().to_owned();
    let put = |url: String| {
        let http = fx.run().http.clone();
        let body = std::fs::read(&archive).unwrap();
        async move {
            http.put(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (base, _) = url.split_once("?token=").expect("token in the upload link");
    assert_eq!(put(format!("{base}?token=forged")).await, 401);
    assert_eq!(put(base.to_owned()).await, 401, "no token, no key");
    // Upload the way the SDK does: a plain PUT to the returned URL.
    assert_eq!(put(url.clone()).await, 200);
    assert_eq!(put(url).await, 401, "an upload link works once");
    let (status, link) = fx.call(reqwest::Method::GET, &files, None).await;
    assert_eq!((status, link["present"].as_bool()), (201, Some(true)));

    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            &format!("/v2/templates/{template_id}/builds/{build_id}"),
            Some(json!({
                "fromTemplate": "base",
                "steps": [
                    // A directory: its content goes to dest, owned by the steps' user.
                    {"type": "COPY", "args": ["app", "/srv/app", "", ""], "filesHash": "hash-one"},
                    // A file into a directory, as root, with a mode.
                    {"type": "COPY", "args": ["notes.txt", "/opt/", "root", "0600"], "filesHash": "hash-one"},
                    {"type": "RUN", "args": ["python3 /srv/app/main.py"]},
                ],
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    assert!(messages(&entries).iter().any(|l| l == "main"));
    let sbx = fx.sandbox("courier-it-copy-ok").await;
    assert_eq!(
        stdout(
            &sbx,
            "cat /srv/app/lib/util.py; stat -c '%U %a' /srv/app/main.py /opt/notes.txt; \
             sudo cat /opt/notes.txt; ls -A /tmp"
        )
        .await,
        "UTIL = 1\nuser 644\nroot 600\nsome notes\n"
    );
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_sandboxes_are_not_listed() {
    let Some(fx) = Fixture::new("build_sandbox_hidden").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-hidden",
            json!({"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["echo step-started; exec sleep 600"]}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Once the step has printed, its build sandbox certainly exists.
    let start = Instant::now();
    loop {
        let (_, page) = fx
            .call(
                reqwest::Method::GET,
                &format!("/templates/{template_id}/builds/{build_id}/status"),
                None,
            )
            .await;
        if messages(page["logEntries"].as_array().unwrap())
            .iter()
            .any(|l| l == "step-started")
        {
            break;
        }
        assert!(
            start.elapsed() < BUILD_WAIT,
            "the step never started: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fx.run().server.list().len(), 1, "the build sandbox runs");
    for path in ["/v2/sandboxes", "/sandboxes"] {
        let (status, listed) = fx.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200);
        assert_eq!(listed, json!([]), "{path}");
    }
    // The fixture kills the build sandbox when dropped; the build then fails.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_layers_go_once_no_template_or_sandbox_uses_them() {
    let Some(fx) = Fixture::new("layer_gc").await else {
        return;
    };
    let layer =
        |template: &str, build: &str| fx.data_dir().join("layers").join(template).join(build);
    let build = |version| fx.build_version("courier-it-gc", version);

    let (template, v1) = build("v1").await;
    let old_sandbox = fx.sandbox("courier-it-gc").await;
    assert_eq!(stdout(&old_sandbox, "cat /opt/version").await, "v1\n");

    // A rebuild: the running sandbox still stands on v1's layer, so it stays.
    let (_, v2) = build("v2").await;
    assert!(layer(&template, &v1).is_dir());
    assert_eq!(stdout(&old_sandbox, "cat /opt/version").await, "v1\n");
    let new_sandbox = fx.sandbox("courier-it-gc").await;
    assert_eq!(stdout(&new_sandbox, "cat /opt/version").await, "v2\n");

    // A child template stacks on v2's layer: rebuilding the parent must keep it.
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            "/v3/templates",
            Some(json!({"name": "courier-it-gc-child"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (child, child_build) = (
        body["templateID"].as_str().unwrap().to_owned(),
        body["buildID"].as_str().unwrap().to_owned(),
    );
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            &format!("/v2/templates/{child}/builds/{child_build}"),
            Some(json!({"fromTemplate": "courier-it-gc", "steps": []})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, _) = fx.wait_build(&child, &child_build).await;
    assert_eq!(done["status"], "ready", "{done}");

    old_sandbox.kill().await.unwrap();
    new_sandbox.kill().await.unwrap();
    assert!(
        !layer(&template, &v1).exists(),
        "v1 is used by nothing any more"
    );
    let (_, v3) = build("v3").await;
    assert!(
        layer(&template, &v2).is_dir(),
        "the child template stands on v2"
    );
    assert!(layer(&template, &v3).is_dir());
    let child_sandbox = fx.sandbox("courier-it-gc-child").await;
    assert_eq!(stdout(&child_sandbox, "cat /opt/version").await, "v2\n");
    child_sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_or_deleted_template_keeps_no_warm_sandbox() {
    if !support::gvisor_or_skip("warm templates") {
        return;
    }
    let Some(mut fx) = Fixture::new("warm templates").await else {
        return;
    };
    fx.stop().await;
    fx.start_with(courier_sandboxd::runtime::Isolation::Gvisor)
        .await;
    let build = |version| fx.build_version("courier-it-warm", version);
    let server = fx.run().server.clone();
    let (template, _) = build("v1").await;
    let first = fx.sandbox("courier-it-warm").await;
    let warm_v1 = support::next_warm(&server, &[first.id()]).await;
    // A rebuild: the warm sandbox runs the old version, which no create asks for any more.
    build("v2").await;
    assert!(
        server.runtime().get(&warm_v1).is_err(),
        "v1's warm sandbox lives on"
    );
    let second = fx.sandbox("courier-it-warm").await;
    assert_ne!(second.id(), warm_v1);
    assert_eq!(stdout(&second, "cat /opt/version").await, "v2\n");
    let warm_v2 = support::next_warm(&server, &[first.id(), second.id()]).await;
    // A deleted template: its warm sandbox goes with it.
    first.kill().await.unwrap();
    second.kill().await.unwrap();
    let (status, body) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{template}"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(
        server.runtime().get(&warm_v2).is_err(),
        "the warm sandbox outlived its template"
    );
    assert!(server.warm_sandboxes().is_empty());
}
