//! The REAL agent CLIs, at the registry's pinned versions, through Courier's real path:
//! the tool's template built at a real courier-sandboxd (`npm install` from the npm
//! registry, through a host npm cache shared into build sandboxes), a sandbox created from
//! it, the agent's stream recorded, a follow-up, a killed run, and a refused key.
//!
//! The model is `courier-llm-standin`, started **inside** each agent sandbox by a test
//! template layered on the tool template (its start command), listening on
//! `127.0.0.1:8787`; Courier points the CLI at it with its provider endpoints. So the
//! sandboxes need no network; only the template build reaches the npm registry.
//!
//! Slow (npm installs, four CLIs) and dependent on the npm registry, so it runs only with
//! `COURIER_REAL_CLIS=1`: `cargo xtask test-real-clis` (see the README for the cadence).
//! With `COURIER_REAL_CLIS_RECORD=1` it also rewrites the recordings under
//! `crates/courier-tools/tests/fixtures/real/` (named `<tool>-<version>-<scenario>`);
//! otherwise each live stream must parse into the same events as the committed recording
//! of the same version.
//!
//! Security: each sandbox is an attacker's machine. What this checks against it: after a
//! kill no agent process is left to keep writing (the agent may rename itself or start
//! sessions of its own), and a refused key ends the run at once instead of letting the CLI
//! retry with it; the stand-in never records credentials.

mod e2e_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{ListedSandbox, NewSandbox as ProviderSandbox, SandboxRecord};
use courier_e2b::{
    BuildRequested, BuildStatus, Client, CommandOutput, CommandSpec, Recipe, SandboxApi,
    SpawnedCommand, TemplateInfo,
};
use courier_llm_standin::{Api, Figures};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::keys::KeyVault;
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::{EventHub, EventKind, SandboxEvent};
use courier_orchestrator::usage::UsageSummary;
use courier_sandboxd::SharedDir;
use courier_store::{
    KeyOwner, Message, MessageStatus, Money, NewCostRate, Provider, SandboxId, SandboxStatus,
    Service, TemplateBuildStatus, UsageMetric,
};
use courier_tools::{AgentEvent, ProviderEndpoints, StreamParser, ToolId, registry};
use e2e_support::{Backend, REPO_URL, World};
use serde_json::Value;

/// Where the stand-in binary is shared into sandboxes.
const STANDIN_DIR: &str = "/opt/courier-standin";
/// Where the host npm cache is shared into (build) sandboxes.
const NPM_CACHE: &str = "/opt/courier-npm-cache";
/// The stand-in's port inside each sandbox.
const PORT: u16 = 8787;
/// The stand-in's recording inside each sandbox.
const RECORD: &str = "/tmp/courier-standin/requests.jsonl";
/// The key the stand-in accepts; any other is answered 401.
const GOOD_KEY: &str = "sk-standin-accepted-0001";
const BAD_KEY: &str = "sk-standin-refused-0002";
/// Generous: npm installs and a loaded machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Rates for every token metric of every service (USD per token).
const RATES: [(UsageMetric, f64); 4] = [
    (UsageMetric::InputTokens, 0.000_003),
    (UsageMetric::OutputTokens, 0.000_015),
    (UsageMetric::CacheReadTokens, 0.000_000_3),
    (UsageMetric::CacheWriteTokens, 0.000_003_75),
];

fn enabled(test: &str) -> bool {
    if std::env::var("COURIER_REAL_CLIS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipping {test}: the real-CLI suite runs with COURIER_REAL_CLIS=1 \
         (`cargo xtask test-real-clis`)"
    );
    false
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// The stand-in binary from this target dir, built on first use; copied alone into a
/// directory to share (the target dir must not be visible to sandboxes).
fn standin_dir(tmp: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let bin = profile_dir.join("courier-llm-standin");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "courier-llm-standin", "--target-dir"])
            .arg(profile_dir.parent().expect("target dir"))
            .current_dir(workspace())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building courier-llm-standin failed");
    }
    let dir = tmp.join("standin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&bin, dir.join("courier-llm-standin")).unwrap();
    dir
}

/// The host npm cache (`COURIER_NPM_CACHE`, else `$XDG_CACHE_HOME` or `~/.cache`, then
/// `courier/npm-cache`: outside the clone, so fresh CI clones on one machine share it),
/// owned by host `nobody`: a shared directory maps host `nobody` to the sandbox's root (see
/// the runtime's shared-dir idmap), so npm running as root in a build sandbox owns its cache
/// and nothing in it belongs to host root. It holds only public npm packages: a sandbox that
/// writes into it can only spoil later test installs, which then fail their version check.
fn npm_cache() -> PathBuf {
    let dir = std::env::var_os("COURIER_NPM_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("courier/npm-cache"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/courier/npm-cache"))
        })
        .unwrap_or_else(|| workspace().join("target/real-clis/npm-cache"));
    std::fs::create_dir_all(&dir).unwrap();
    // Only root can hand the cache to `nobody`; without root the suite cannot build
    // sandboxes anyway.
    let _ = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&dir)
        .status();
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwX"])
        .arg(&dir)
        .status();
    dir
}

/// The provider a tool's key is kept under, the stand-in API it speaks, and where the
/// endpoints point.
fn provider(tool: ToolId) -> (Provider, Api) {
    match tool {
        ToolId::Claude => (Provider::Anthropic, Api::Anthropic),
        ToolId::Codex => (Provider::OpenAi, Api::Responses),
        _ => (Provider::OpenRouter, Api::Chat),
    }
}

fn endpoints() -> ProviderEndpoints {
    let root = format!("http://127.0.0.1:{PORT}");
    ProviderEndpoints {
        anthropic: Some(root.clone()),
        openai: Some(format!("{root}/v1")),
        openrouter: Some(format!("{root}/api/v1")),
    }
}

/// A provider that, before destroying a sandbox, lists its processes: what a kill left
/// running. Everything else goes to the real client.
struct Watching {
    inner: Client,
    before_destroy: Mutex<Vec<String>>,
}

#[async_trait]
impl SandboxApi for Watching {
    async fn create(&self, request: ProviderSandbox) -> courier_e2b::Result<SandboxRecord> {
        self.inner.create(request).await
    }
    async fn connect(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> courier_e2b::Result<SandboxRecord> {
        SandboxApi::connect(&self.inner, id, timeout).await
    }
    async fn kill(&self, sandbox_id: &str) -> courier_e2b::Result<bool> {
        if let Ok(record) = SandboxApi::connect(&self.inner, sandbox_id, None).await {
            let ps = CommandSpec::new("ps -eo pid=,sid=,comm=,args=");
            if let Ok(out) = self.inner.run(&record, ps).await {
                self.before_destroy.lock().unwrap().push(out.stdout);
            }
        }
        SandboxApi::kill(&self.inner, sandbox_id).await
    }
    async fn set_timeout(&self, id: &str, timeout: Duration) -> courier_e2b::Result<()> {
        SandboxApi::set_timeout(&self.inner, id, timeout).await
    }
    async fn pause(&self, id: &str) -> courier_e2b::Result<bool> {
        SandboxApi::pause(&self.inner, id).await
    }
    async fn run(
        &self,
        sandbox: &SandboxRecord,
        command: CommandSpec,
    ) -> courier_e2b::Result<CommandOutput> {
        self.inner.run(sandbox, command).await
    }
    async fn spawn(
        &self,
        sandbox: &SandboxRecord,
        command: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        self.inner.spawn(sandbox, command).await
    }
    async fn send_stdin(
        &self,
        sandbox: &SandboxRecord,
        pid: u32,
        data: Bytes,
    ) -> courier_e2b::Result<()> {
        self.inner.send_stdin(sandbox, pid, data).await
    }
    async fn kill_process(&self, sandbox: &SandboxRecord, pid: u32) -> courier_e2b::Result<bool> {
        self.inner.kill_process(sandbox, pid).await
    }
    async fn write_file(
        &self,
        sandbox: &SandboxRecord,
        path: &str,
        data: Bytes,
    ) -> courier_e2b::Result<()> {
        self.inner.write_file(sandbox, path, data).await
    }
    async fn read_file(&self, sandbox: &SandboxRecord, path: &str) -> courier_e2b::Result<Bytes> {
        self.inner.read_file(sandbox, path).await
    }
    async fn list(&self) -> courier_e2b::Result<Vec<ListedSandbox>> {
        SandboxApi::list(&self.inner).await
    }
    async fn build_template(
        &self,
        name: &str,
        recipe: Recipe,
    ) -> courier_e2b::Result<BuildRequested> {
        self.inner.build_template(name, recipe).await
    }
    async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        offset: usize,
    ) -> courier_e2b::Result<BuildStatus> {
        self.inner
            .template_build_status(template_id, build_id, offset)
            .await
    }
    async fn list_templates(&self) -> courier_e2b::Result<Vec<TemplateInfo>> {
        self.inner.list_templates().await
    }
}

struct Harness {
    world: World,
    api: Arc<Watching>,
    orchestrator: Orchestrator,
    hub: EventHub,
    tool: ToolId,
    version: String,
    _tmp: tempfile::TempDir,
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Harness {
    async fn new(tool: ToolId) -> Option<Harness> {
        let tmp = tempfile::tempdir().unwrap();
        let shared = vec![
            SharedDir {
                host: standin_dir(tmp.path()),
                sandbox: STANDIN_DIR.into(),
                read_only: true,
            },
            SharedDir {
                host: npm_cache(),
                sandbox: NPM_CACHE.into(),
                read_only: false,
            },
        ];
        let world =
            World::with_shared_dirs(&format!("real_{tool}"), Backend::Sqlite, shared).await?;
        for s in [Service::Anthropic, Service::OpenAi, Service::OpenRouter] {
            for (metric, usd) in RATES {
                world
                    .store
                    .put_cost_rate(NewCostRate {
                        service: s,
                        metric,
                        usd_per_unit: usd,
                        effective_from: chrono::Utc::now() - chrono::Duration::days(1),
                    })
                    .await
                    .unwrap();
            }
        }
        let api = Arc::new(Watching {
            inner: world.client.clone(),
            before_destroy: Mutex::default(),
        });
        let hub = EventHub::default();
        let orchestrator =
            Orchestrator::new(world.store.clone(), api.clone(), world.vault(), hub.clone())
                .with_tool_templates(|t| {
                    t.with_npm_cache(NPM_CACHE)
                        .with_poll_interval(Duration::from_millis(500))
                })
                .with_provider_endpoints(endpoints())
                .expect("valid endpoints");
        let version = registry::spec(tool)
            .package
            .expect("an npm CLI")
            .version
            .to_owned();
        Some(Harness {
            world,
            api,
            orchestrator,
            hub,
            tool,
            version,
            _tmp: tmp,
        })
    }

    fn vault(&self) -> KeyVault {
        self.world.vault()
    }

    async fn put_key(&self, key: &str) {
        self.vault()
            .put(
                KeyOwner::Project(self.world.project),
                provider(self.tool).0,
                key,
            )
            .save()
            .await
            .unwrap();
    }

    /// Builds the tool's template (the real path: pinned npm install) and the test layer
    /// that starts the stand-in; returns the test template's name.
    async fn templates(&self) -> String {
        let started = Instant::now();
        let build = self
            .orchestrator
            .tool_templates()
            .build(self.tool)
            .await
            .expect("tool template build started");
        assert_eq!(
            build.row.cli_version, self.version,
            "the pinned version is recorded"
        );
        let done = tokio::time::timeout(BUILD_TIMEOUT, build.finished)
            .await
            .expect("tool template build finished in time")
            .unwrap()
            .unwrap();
        assert_eq!(
            done.status,
            TemplateBuildStatus::Succeeded,
            "{}",
            done.error.unwrap_or_default()
        );
        assert!(
            done.cli_version.contains(&self.version),
            "the installed CLI reports the pinned version: {}",
            done.cli_version
        );
        eprintln!(
            "{} template ({}) built in {:.0}s",
            self.tool,
            done.cli_version,
            started.elapsed().as_secs_f64()
        );
        let name = format!("{}-standin", self.tool);
        let start = format!(
            "mkdir -p /tmp/courier-standin && STANDIN_KEY={GOOD_KEY} {STANDIN_DIR}/courier-llm-standin \
             --listen 127.0.0.1:{PORT} --record {RECORD} --slow-secs 600 >/tmp/courier-standin/log 2>&1"
        );
        let recipe = Recipe::from_template(registry::spec(self.tool).default_template)
            .step(courier_e2b::Step::run("true"))
            .start_cmd(start)
            .ready_cmd(format!("curl -sf http://127.0.0.1:{PORT}/health"));
        let requested = self
            .world
            .client
            .build_template(&name, recipe)
            .await
            .expect("test template build started");
        let deadline = Instant::now() + BUILD_TIMEOUT;
        loop {
            let status = self
                .world
                .client
                .template_build_status(&requested.template_id, &requested.build_id, 0)
                .await
                .unwrap();
            match status.status {
                courier_e2b::BuildState::Ready => break,
                courier_e2b::BuildState::Error => panic!("test template: {:?}", status.reason),
                _ => {}
            }
            assert!(Instant::now() < deadline, "test template build timed out");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        name
    }

    async fn create(&self, template: &str, prompt: &str) -> courier_store::Sandbox {
        self.orchestrator
            .create(CreateRequest {
                user_id: self.world.user,
                project_id: self.world.project,
                tool: Some(self.tool.as_str().into()),
                prompt: prompt.into(),
                template_id: Some(template.into()),
                repo_url: Some(REPO_URL.into()),
                base_branch: Some("main".into()),
                ..Default::default()
            })
            .await
            .expect("create")
    }

    async fn messages(&self, id: SandboxId) -> Vec<Message> {
        self.world.store.list_messages(id, 0, 200).await.unwrap()
    }

    /// Waits until `n` messages exist and none is streaming.
    async fn idle(&self, id: SandboxId, n: usize) {
        wait_for("the agent's answer", RUN_TIMEOUT, || async {
            let m = self.messages(id).await;
            !self.orchestrator.is_working(id)
                && m.len() >= n
                && m.iter().all(|m| m.status != MessageStatus::Streaming)
        })
        .await;
    }

    async fn record(&self, id: SandboxId) -> SandboxRecord {
        let sandbox = self.world.store.get_sandbox(id).await.unwrap();
        SandboxApi::connect(
            &self.world.client,
            sandbox.provider_sandbox_id.as_deref().unwrap(),
            None,
        )
        .await
        .unwrap()
    }

    async fn run(&self, id: SandboxId, cmd: &str) -> CommandOutput {
        let record = self.record(id).await;
        self.world
            .client
            .run(
                &record,
                CommandSpec::new(cmd).timeout(Duration::from_secs(60)),
            )
            .await
            .unwrap()
    }

    /// The stand-in's recording so far.
    async fn requests(&self, id: SandboxId) -> Vec<Value> {
        let record = self.record(id).await;
        let bytes = self
            .world
            .client
            .read_file(&record, RECORD)
            .await
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn usage(&self, id: SandboxId) -> UsageSummary {
        UsageSummary::for_sandbox(self.world.store.as_ref(), id)
            .await
            .unwrap()
    }

    fn fixture_path(&self, scenario: &str) -> PathBuf {
        workspace().join(format!(
            "crates/courier-tools/tests/fixtures/real/{}-{}-{scenario}.jsonl",
            self.tool, self.version
        ))
    }

    /// Saves the stream (recording mode) or checks that it parses into the same events as
    /// the committed recording of this version.
    fn stream_matches_recording(&self, scenario: &str, raw: &str, exit: i32) {
        let path = self.fixture_path(scenario);
        if std::env::var("COURIER_REAL_CLIS_RECORD").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, raw).unwrap();
            eprintln!("recorded {}", path.display());
            return;
        }
        let recorded = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (record with COURIER_REAL_CLIS_RECORD=1)",
                path.display()
            )
        });
        assert_eq!(
            shape(&StreamParser::parse_all(
                self.tool,
                raw.as_bytes(),
                Some(exit)
            )),
            shape(&StreamParser::parse_all(self.tool, &recorded, Some(exit))),
            "{} {} {scenario}: the live stream no longer parses like its recording",
            self.tool,
            self.version
        );
    }
}

/// What a CLI sent, without the bodies' bulk (system prompts, tool schemas): method,
/// path, the headers (credentials were never recorded), the model, the tools offered and
/// what the stand-in answered.
fn summarize(request: &Value) -> Value {
    let body = &request["body"];
    let tools: Vec<Value> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            t.get("name")
                .or_else(|| t.pointer("/function/name"))
                .or_else(|| t.get("type"))
                .cloned()
        })
        .collect();
    let mut headers = request["headers"].clone();
    if let Some(h) = headers.as_object_mut() {
        // Per-request ids and lengths would make every recording differ.
        h.retain(|k, _| {
            !matches!(
                k.as_str(),
                "content-length" | "x-client-request-id" | "session_id" | "x-stainless-retry-count"
            ) && !k.starts_with("x-codex-")
                && !k.contains("session")
                && !k.contains("request-id")
        });
    }
    serde_json::json!({
        "method": request["method"],
        "path": request["path"],
        "headers": headers,
        "model": body["model"],
        "stream": body["stream"],
        "body_keys": body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        "tools": tools,
        "answer": request["answer"],
    })
}

/// What must stay the same between two runs of one version against the stand-in: each
/// event's kind, and the values that do not depend on ids or clocks.
fn shape(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            AgentEvent::SessionStarted { .. } => "session".to_owned(),
            AgentEvent::Text { text } => format!("text {text}"),
            AgentEvent::Thinking { .. } => "thinking".to_owned(),
            AgentEvent::ToolUse { name, .. } => format!("tool_use {name}"),
            AgentEvent::ToolResult { is_error, .. } => format!("tool_result error={is_error}"),
            AgentEvent::Usage(u) => format!(
                "usage {} {} {} {}",
                u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens
            ),
            AgentEvent::Result(r) => format!("result success={}", r.success),
            AgentEvent::AuthFailed { status, .. } => format!("auth_failed {status:?}"),
            AgentEvent::Error { .. } => "error".to_owned(),
            AgentEvent::Raw { .. } => "raw".to_owned(),
        })
        .collect()
}

/// The figures the stand-in answered with, summed over `requests` (those it answered).
fn answered(requests: &[Value]) -> Figures {
    let mut total = Figures::default();
    for r in requests {
        let Some(f) = r.pointer("/answer/figures") else {
            continue;
        };
        let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
        total.input += n("input");
        total.output += n("output");
        total.cache_read += n("cache_read");
        total.cache_write += n("cache_write");
    }
    total
}

fn add(a: Figures, b: Figures) -> Figures {
    Figures {
        input: a.input + b.input,
        output: a.output + b.output,
        cache_read: a.cache_read + b.cache_read,
        cache_write: a.cache_write + b.cache_write,
    }
}

fn cost_of(f: Figures) -> Money {
    let micros = |q: u64, usd: f64| Money::from_usd(q as f64 * usd).micros();
    Money::from_micros(
        micros(f.input, RATES[0].1)
            + micros(f.output, RATES[1].1)
            + micros(f.cache_read, RATES[2].1)
            + micros(f.cache_write, RATES[3].1),
    )
}

/// The sandbox's billed tokens and cost equal the stand-in's figures for `runs`, priced
/// per run and metric (each run is recorded as one usage record per metric).
fn assert_billed(tool: ToolId, what: &str, usage: &UsageSummary, runs: &[Figures]) {
    let expected = runs.iter().copied().fold(Figures::default(), add);
    let cost = Money::from_micros(runs.iter().map(|r| cost_of(*r).micros()).sum());
    let got = Figures {
        input: usage.input_tokens as u64,
        output: usage.output_tokens as u64,
        cache_read: usage.cache_read_tokens as u64,
        cache_write: usage.cache_write_tokens as u64,
    };
    assert_eq!(got, expected, "{tool}: tokens billed after {what}");
    assert_eq!(usage.cost, cost, "{tool}: cost after {what}");
}

fn agent_events(events: &[SandboxEvent], seq: i64) -> Vec<AgentEvent> {
    events
        .iter()
        .filter(|e| e.seq == seq)
        .filter_map(|e| match &e.kind {
            EventKind::Agent { event, .. } => Some(event.clone()),
            EventKind::Text { text, .. } => Some(AgentEvent::Text { text: text.clone() }),
            _ => None,
        })
        .collect()
}

fn session_of(events: &[AgentEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        AgentEvent::SessionStarted { session_id, .. } => Some(session_id.clone()),
        _ => None,
    })
}

/// The models the pinned CLI's own catalog lists, read in a sandbox of its template:
/// `None` for a CLI without a catalog command (Claude Code takes any model id).
async fn catalog(h: &Harness, id: SandboxId) -> Option<Vec<String>> {
    let out = match h.tool {
        ToolId::Codex => {
            h.run(id, "CODEX_API_KEY=catalog codex debug models 2>/dev/null")
                .await
        }
        ToolId::Pi => {
            h.run(id, "OPENROUTER_API_KEY=catalog pi --list-models 2>&1")
                .await
        }
        ToolId::Opencode => {
            h.run(
                id,
                "OPENCODE_DISABLE_MODELS_FETCH=1 opencode models openrouter 2>/dev/null",
            )
            .await
        }
        _ => return None,
    };
    assert_eq!(out.exit_code, 0, "{}: catalog: {}", h.tool, out.stderr);
    Some(match h.tool {
        ToolId::Codex => {
            let catalog: Value =
                serde_json::from_str(&out.stdout).expect("codex's catalog is JSON");
            catalog["models"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["slug"].as_str().map(str::to_owned))
                .collect()
        }
        // `provider  model  context …` (on stderr): the registry names them
        // `provider/model`.
        ToolId::Pi => out
            .stdout
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some(format!("{}/{}", words.next()?, words.next()?))
            })
            .collect(),
        _ => out.stdout.lines().map(|l| l.trim().to_owned()).collect(),
    })
}

/// The whole scenario for one tool (see the module docs).
async fn real_cli(tool: ToolId) {
    if !enabled(&format!("real_{tool}")) {
        return;
    }
    let Some(h) = Harness::new(tool).await else {
        return;
    };
    let suite = Instant::now();
    let template = h.templates().await;
    let (_, api) = provider(tool);
    h.put_key(GOOD_KEY).await;

    // 1. A first run: the file is written, the events stream, usage is the stand-in's.
    let file = |n: u32| format!("{}/standin-{n}.txt", courier_tools::PROJECT_DIR);
    let sandbox = h
        .create(
            &template,
            &format!("Create the file [[write:{}]] please.", file(1)),
        )
        .await;
    assert_eq!(sandbox.status, SandboxStatus::Running);
    let mut sub = h
        .hub
        .subscribe(h.world.store.clone(), sandbox.id, 0)
        .await
        .unwrap();
    let events: Arc<Mutex<Vec<SandboxEvent>>> = Arc::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = sub.next().await {
            sink.lock().unwrap().push(e);
        }
    });
    h.idle(sandbox.id, 2).await;
    let messages = h.messages(sandbox.id).await;
    assert_eq!(
        messages[1].status,
        MessageStatus::Completed,
        "{tool}: {}\n{}",
        messages[1].content,
        messages[1].raw_log
    );
    assert!(
        messages[1]
            .content
            .contains(courier_llm_standin::FINAL_TEXT),
        "{}",
        messages[1].content
    );
    let written = h.run(sandbox.id, &format!("cat {}", file(1))).await;
    assert_eq!(
        written.stdout,
        format!("{}{}\n", courier_llm_standin::WRITTEN_PREFIX, file(1)),
        "{tool}: the agent wrote the file"
    );
    // After the run: OpenCode's first start migrates its database, and a second opencode
    // process at the same time makes the agent fail.
    if let Some(models) = catalog(&h, sandbox.id).await {
        for m in registry::spec(tool).models {
            assert!(
                models.iter().any(|c| c == m.id),
                "{tool} {}: the registry's model {} is not in the CLI's catalog",
                h.version,
                m.id
            );
        }
    }
    // The subscription began after the create returned, so the run's first events may
    // have been replayed inside the stored message: the stored stream is the reference,
    // and the live events must show the run streaming.
    let first = StreamParser::parse_all(tool, messages[1].raw_log.as_bytes(), Some(0));
    let live = agent_events(&events.lock().unwrap(), messages[1].seq);
    assert!(
        live.iter().any(|e| matches!(e, AgentEvent::Result(_))),
        "{tool}: the run's events streamed to the subscriber: {live:?}"
    );
    let session = session_of(&first).unwrap_or_else(|| panic!("{tool}: no session id: {first:?}"));
    for (what, found) in [
        ("tool use", first.iter().any(|e| matches!(e, AgentEvent::ToolUse { .. }))),
        (
            "tool result",
            first
                .iter()
                .any(|e| matches!(e, AgentEvent::ToolResult { is_error: false, .. })),
        ),
        ("usage", first.iter().any(|e| matches!(e, AgentEvent::Usage(_)))),
        (
            "final text",
            first.iter().any(
                |e| matches!(e, AgentEvent::Text { text } if text.contains(courier_llm_standin::FINAL_TEXT)),
            ),
        ),
    ] {
        assert!(found, "{tool}: no {what} event in {first:?}");
    }
    let requests = h.requests(sandbox.id).await;
    assert!(
        requests.iter().all(|r| !r.to_string().contains(GOOD_KEY)),
        "the stand-in never records a key"
    );
    let run1 = answered(&requests);
    assert_eq!(
        run1,
        add(
            courier_llm_standin::figures(api, &tool_call()),
            courier_llm_standin::figures(api, &courier_llm_standin::Turn::Answer { slow: false })
        ),
        "{tool}: one tool call and one answer, no side request Courier could not bill"
    );
    assert_billed(tool, "the first run", &h.usage(sandbox.id).await, &[run1]);
    h.stream_matches_recording("first", &messages[1].raw_log, 0);
    let seen = requests.len();

    // 2. A follow-up resumes the same session.
    h.orchestrator
        .send_message(
            sandbox.id,
            &format!("Now also create [[write:{}]].", file(2)),
        )
        .await
        .unwrap();
    h.idle(sandbox.id, 4).await;
    let messages = h.messages(sandbox.id).await;
    assert_eq!(
        messages[3].status,
        MessageStatus::Completed,
        "{}",
        messages[3].raw_log
    );
    let written = h.run(sandbox.id, &format!("cat {}", file(2))).await;
    assert!(written.stdout.contains(&file(2)), "{tool}: second file");
    let second = agent_events(&events.lock().unwrap(), messages[3].seq);
    assert!(
        second
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolUse { .. }))
            && second.iter().any(|e| matches!(e, AgentEvent::Usage(_))),
        "{tool}: the follow-up streamed live: {second:?}"
    );
    assert_eq!(
        session_of(&second).as_deref(),
        Some(session.as_str()),
        "{tool}: the follow-up continues the session"
    );
    let requests = h.requests(sandbox.id).await;
    let run2 = answered(&requests[seen..]);
    assert_billed(
        tool,
        "the follow-up",
        &h.usage(sandbox.id).await,
        &[run1, run2],
    );
    h.stream_matches_recording("follow_up", &messages[3].raw_log, 0);
    let seen = requests.len();

    // 3. A run killed while the model is slow: billed for what was answered, and no agent
    //    process survives the kill.
    h.orchestrator
        .send_message(
            sandbox.id,
            &format!("Create [[write:{}]] [[slow]] then stop.", file(3)),
        )
        .await
        .unwrap();
    wait_for("the slow answer to be asked for", RUN_TIMEOUT, || async {
        h.requests(sandbox.id).await[seen..]
            .iter()
            .any(|r| r.pointer("/answer/turn").and_then(Value::as_str) == Some("answer"))
    })
    .await;
    let requests = h.requests(sandbox.id).await;
    let run3 = answered(
        &requests[seen..]
            .iter()
            .filter(|r| r.pointer("/answer/turn").and_then(Value::as_str) != Some("answer"))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut sent: Vec<Value> = requests.iter().map(summarize).collect();
    let sid = h.run(sandbox.id, "cat /tmp/courier-agent/sid").await.stdout;
    let killed = h.orchestrator.kill(sandbox.id, None).await.unwrap();
    assert_eq!(killed.status, SandboxStatus::Killed);
    let ps = h.api.before_destroy.lock().unwrap().join("\n");
    let agent_names = ["claude", "codex", "opencode", "pi", "node"];
    for line in ps.lines() {
        let mut words = line.split_whitespace();
        let (_, session, comm) = (words.next(), words.next(), words.next());
        assert!(
            !agent_names.contains(&comm.unwrap_or_default()) && session != Some(sid.trim()),
            "{tool}: an agent process survived the kill: {line}\n{ps}"
        );
    }
    let messages = h.messages(sandbox.id).await;
    let last = messages.last().unwrap();
    assert_eq!(
        last.status,
        MessageStatus::Error,
        "the killed run ends in error"
    );
    assert_billed(
        tool,
        "the killed run",
        &h.usage(sandbox.id).await,
        &[run1, run2, run3],
    );
    h.stream_matches_recording("killed", &last.raw_log, 143);

    // 4. A refused key: the message ends in error within 30 s, naming the key to fix.
    h.put_key(BAD_KEY).await;
    let started = Instant::now();
    let refused = h
        .create(&template, &format!("Create [[write:{}]].", file(4)))
        .await;
    h.idle(refused.id, 2).await;
    let took = started.elapsed();
    let messages = h.messages(refused.id).await;
    assert_eq!(
        messages[1].status,
        MessageStatus::Error,
        "{}",
        messages[1].raw_log
    );
    let provider_name = provider(tool).0.to_string();
    assert!(
        messages[1]
            .content
            .contains(&format!("courier keys set {provider_name}")),
        "{tool}: the message names the key: {}",
        messages[1].content
    );
    assert!(
        took < Duration::from_secs(30),
        "{tool}: a refused key took {took:?} to surface"
    );
    assert!(
        !messages[1].content.contains(BAD_KEY),
        "the refused key is never shown"
    );
    h.stream_matches_recording("unauthorized", &messages[1].raw_log, 1);
    let refused_requests = h.requests(refused.id).await;
    assert!(
        refused_requests
            .iter()
            .all(|r| !r.to_string().contains(BAD_KEY)),
        "the stand-in never records a key"
    );
    sent.extend(refused_requests.iter().map(summarize));
    if std::env::var("COURIER_REAL_CLIS_RECORD").as_deref() == Ok("1") {
        let path = h.fixture_path("requests").with_extension("json");
        std::fs::write(&path, serde_json::to_string_pretty(&sent).unwrap() + "\n").unwrap();
        eprintln!("recorded {}", path.display());
    }
    h.orchestrator.kill(refused.id, None).await.unwrap();
    eprintln!(
        "{tool} {}: real-CLI scenario passed in {:.0}s",
        h.version,
        suite.elapsed().as_secs_f64()
    );
}

/// A tool-call turn (its figures do not depend on the call).
fn tool_call() -> courier_llm_standin::Turn {
    courier_llm_standin::Turn::ToolCall {
        path: String::new(),
        call: courier_llm_standin::ToolCall {
            name: String::new(),
            input: courier_llm_standin::CallInput::Text(String::new()),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_for_real() {
    real_cli(ToolId::Claude).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_for_real() {
    real_cli(ToolId::Codex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_for_real() {
    real_cli(ToolId::Opencode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_for_real() {
    real_cli(ToolId::Pi).await;
}
