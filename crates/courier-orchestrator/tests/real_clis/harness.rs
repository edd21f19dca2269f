//! The real-CLI suite's harness: a real courier-sandboxd with the stand-in binary and the
//! host npm cache shared into its sandboxes, a provider that watches what a kill leaves
//! running, and an orchestrator over them pointed at the stand-in.

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
use courier_gateway::{Gateway, Minter, Upstreams};
use courier_llm_standin::Api;
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::gateway::GatewayLink;
use courier_orchestrator::keys::KeyVault;
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::EventHub;
use courier_orchestrator::usage::UsageSummary;
use courier_sandboxd::SharedDir;
use courier_store::{
    KeyOwner, Message, MessageStatus, NewCostRate, Provider, SandboxId, Service,
    TemplateBuildStatus,
};
use courier_tools::{ProviderEndpoints, StreamParser, ToolId, registry};
use serde_json::Value;

use crate::e2e_support::{Backend, REPO_URL, World};
use crate::figures::{RATES, shape};

/// Where the stand-in binary is shared into sandboxes.
pub const STANDIN_DIR: &str = "/opt/courier-standin";
/// Where the host npm cache is shared into (build) sandboxes.
pub const NPM_CACHE: &str = "/opt/courier-npm-cache";
/// The stand-in's port inside each sandbox.
pub const PORT: u16 = 8787;
/// The stand-in's recording inside each sandbox.
pub const RECORD: &str = "/tmp/courier-standin/requests.jsonl";
/// The key the stand-in accepts; any other is answered 401.
pub const GOOD_KEY: &str = "sk-standin-accepted-0001";
pub const BAD_KEY: &str = "sk-standin-refused-0002";
/// Generous: npm installs and a loaded machine.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// The stand-in binary from this target dir, built on first use; copied alone into a
/// directory to share (the target dir must not be visible to sandboxes).
pub fn standin_dir(tmp: &Path) -> PathBuf {
    let bin = standin_binary();
    let dir = tmp.join("standin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&bin, dir.join("courier-llm-standin")).unwrap();
    dir
}

/// The stand-in binary of this target dir, built on first use.
pub fn standin_binary() -> PathBuf {
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
    bin
}

/// The host npm cache (`COURIER_NPM_CACHE`, else `$XDG_CACHE_HOME` or `~/.cache`, then
/// `courier/npm-cache`: outside the clone, so fresh CI clones on one machine share it),
/// owned by host `nobody`: a shared directory maps host `nobody` to the sandbox's root (see
/// the runtime's shared-dir idmap), so npm running as root in a build sandbox owns its cache
/// and nothing in it belongs to host root. It holds only public npm packages: a sandbox that
/// writes into it can only spoil later test installs, which then fail their version check.
pub fn npm_cache() -> PathBuf {
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
    // sandboxes anyway, so a failure is only reported.
    for (tool, args) in [("chown", ["-R", "65534:65534"]), ("chmod", ["-R", "u+rwX"])] {
        match std::process::Command::new(tool)
            .args(args)
            .arg(&dir)
            .status()
        {
            Ok(status) if status.success() => {}
            other => eprintln!("{tool} {} {}: {other:?}", args.join(" "), dir.display()),
        }
    }
    dir
}

/// The provider a tool's key is kept under, the stand-in API it speaks, and where the
/// endpoints point.
pub fn provider(tool: ToolId) -> (Provider, Api) {
    match tool {
        ToolId::Claude => (Provider::Anthropic, Api::Anthropic),
        ToolId::Codex => (Provider::OpenAi, Api::Responses),
        _ => (Provider::OpenRouter, Api::Chat),
    }
}

pub fn endpoints() -> ProviderEndpoints {
    let root = format!("http://127.0.0.1:{PORT}");
    ProviderEndpoints {
        anthropic: Some(root.clone()),
        openai: Some(format!("{root}/v1")),
        openrouter: Some(format!("{root}/api/v1")),
    }
}

/// A provider that, before destroying a sandbox, lists its processes: what a kill left
/// running. Everything else goes to the real client.
pub struct Watching {
    pub inner: Client,
    pub before_destroy: Mutex<Vec<String>>,
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

/// One tool's scenario: the world, the watching provider and an orchestrator over them,
/// the tool and its pinned version.
pub struct Harness {
    pub world: World,
    pub api: Arc<Watching>,
    pub orchestrator: Orchestrator,
    pub hub: EventHub,
    pub tool: ToolId,
    pub version: String,
    /// The gateway and the stand-in behind it, when runs go through the gateway.
    pub gateway: Option<HostGateway>,
    _tmp: tempfile::TempDir,
}

/// The provider's real key in the gateway scenario: only the host's stand-in accepts it,
/// and it must never be found inside a sandbox.
pub const REAL_KEY: &str = "sk-real-provider-key-never-in-a-sandbox-0003";

/// Everything outside the sandbox in the gateway scenario: Courier's gateway, serving on
/// this host's outward address, and behind it, as every provider, the stand-in running on
/// this host (not in the sandbox), accepting only [`REAL_KEY`].
pub struct HostGateway {
    /// Mints each run's token and proof (what the test checks the sandbox never holds).
    pub minter: Minter,
    /// The gateway's root URL as the sandboxes see it.
    pub url: String,
    record: tempfile::NamedTempFile,
    standin: std::process::Child,
}

impl Drop for HostGateway {
    fn drop(&mut self) {
        let _ = self.standin.kill();
        let _ = self.standin.wait();
    }
}

impl HostGateway {
    /// Starts the host stand-in and a gateway on `listener` toward it; returns
    /// `orchestrator` linked to that gateway (the proof added at egress).
    fn start(
        orchestrator: Orchestrator,
        listener: tokio::net::TcpListener,
    ) -> (Orchestrator, HostGateway) {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let record = tempfile::NamedTempFile::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let standin = std::process::Command::new(standin_binary())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--record")
            .arg(record.path())
            .env("STANDIN_KEY", REAL_KEY)
            .spawn()
            .unwrap();
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let minter = Minter::new(b"the real-CLI suite's master key......");
        let orchestrator = orchestrator
            .with_gateway(GatewayLink {
                url: url.clone(),
                minter: minter.clone(),
                proof_at_egress: true,
            })
            .expect("a valid gateway link");
        // Every provider's root is the stand-in: it serves `/v1/messages`, `/v1/responses`
        // and `/api/v1/chat/completions`, the paths each provider's API has under its root.
        let root = format!("http://127.0.0.1:{port}");
        let gateway = Gateway::new(
            minter.clone(),
            Upstreams {
                anthropic: root.clone(),
                openai: root.clone(),
                openrouter: root,
                ..Upstreams::default()
            },
            orchestrator.gateway_grants(),
        );
        tokio::spawn(async move { axum::serve(listener, gateway.router()).await });
        (
            orchestrator,
            HostGateway {
                minter,
                url,
                record,
                standin,
            },
        )
    }

    /// What the host stand-in recorded so far (every request the gateway forwarded).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.record.path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
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
    pub async fn new(tool: ToolId) -> Option<Harness> {
        Self::build(tool, false).await
    }

    /// A harness whose orchestrator sends every run through Courier's gateway: the
    /// gateway on this host's outward address (the only internal address the sandboxes may
    /// reach), the stand-in on this host behind it, accepting only [`REAL_KEY`].
    pub async fn through_gateway(tool: ToolId) -> Option<Harness> {
        Self::build(tool, true).await
    }

    async fn build(tool: ToolId, through_gateway: bool) -> Option<Harness> {
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
        let listener = match through_gateway {
            true => {
                let ip = courier_gateway::outward_ipv4().expect("an outward IPv4 address");
                Some(tokio::net::TcpListener::bind((ip, 0)).await.unwrap())
            }
            false => None,
        };
        let world = match &listener {
            Some(l) => {
                let allow = [l.local_addr().unwrap().to_string()];
                World::with_shared_dirs_and_egress_allow(
                    &format!("real_{tool}_through_gateway"),
                    Backend::Sqlite,
                    shared,
                    &allow,
                )
                .await?
            }
            None => {
                World::with_shared_dirs(&format!("real_{tool}"), Backend::Sqlite, shared).await?
            }
        };
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
        let (orchestrator, gateway) = match listener {
            Some(listener) => {
                let (orchestrator, gateway) = HostGateway::start(orchestrator, listener);
                (orchestrator, Some(gateway))
            }
            None => (orchestrator, None),
        };
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
            gateway,
            _tmp: tmp,
        })
    }

    pub fn vault(&self) -> KeyVault {
        self.world.vault()
    }

    pub async fn put_key(&self, key: &str) {
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
    pub async fn templates(&self) -> String {
        let tool_template = self.tool_template().await;
        self.standin_layer(&tool_template).await
    }

    /// Builds the tool's template (the real path: pinned npm install); returns its name.
    pub async fn tool_template(&self) -> String {
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
        registry::spec(self.tool).default_template.to_owned()
    }

    /// The test layer on `tool_template` whose start command runs the stand-in inside.
    async fn standin_layer(&self, tool_template: &str) -> String {
        let name = format!("{}-standin", self.tool);
        let start = format!(
            "mkdir -p /tmp/courier-standin && STANDIN_KEY={GOOD_KEY} {STANDIN_DIR}/courier-llm-standin \
             --listen 127.0.0.1:{PORT} --record {RECORD} --slow-secs 600 >/tmp/courier-standin/log 2>&1"
        );
        let recipe = Recipe::from_template(tool_template)
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

    pub async fn create(&self, template: &str, prompt: &str) -> courier_store::Sandbox {
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

    pub async fn messages(&self, id: SandboxId) -> Vec<Message> {
        self.world.store.list_messages(id, 0, 200).await.unwrap()
    }

    /// Waits until `n` messages exist and none is streaming.
    pub async fn idle(&self, id: SandboxId, n: usize) {
        wait_for("the agent's answer", RUN_TIMEOUT, || async {
            let m = self.messages(id).await;
            !self.orchestrator.is_working(id)
                && m.len() >= n
                && m.iter().all(|m| m.status != MessageStatus::Streaming)
        })
        .await;
    }

    pub async fn record(&self, id: SandboxId) -> SandboxRecord {
        let sandbox = self.world.store.get_sandbox(id).await.unwrap();
        SandboxApi::connect(
            &self.world.client,
            sandbox.provider_sandbox_id.as_deref().unwrap(),
            None,
        )
        .await
        .unwrap()
    }

    pub async fn run(&self, id: SandboxId, cmd: &str) -> CommandOutput {
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

    /// Runs `cmd` as root inside the sandbox; its stdout.
    pub async fn run_as_root(&self, id: SandboxId, cmd: &str) -> String {
        let record = self.record(id).await;
        let out = self
            .world
            .client
            .run(
                &record,
                CommandSpec::new(cmd)
                    .user("root")
                    .timeout(Duration::from_secs(120)),
            )
            .await
            .unwrap();
        out.stdout
    }

    /// The stand-in's recording so far.
    pub async fn requests(&self, id: SandboxId) -> Vec<Value> {
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

    pub async fn usage(&self, id: SandboxId) -> UsageSummary {
        UsageSummary::for_sandbox(self.world.store.as_ref(), id)
            .await
            .unwrap()
    }

    pub fn fixture_path(&self, scenario: &str) -> PathBuf {
        workspace().join(format!(
            "crates/courier-tools/tests/fixtures/real/{}-{}-{scenario}.jsonl",
            self.tool, self.version
        ))
    }

    /// Saves the stream (recording mode) or checks that it parses into the same events as
    /// the committed recording of this version.
    pub fn stream_matches_recording(&self, scenario: &str, raw: &str, exit: i32) {
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
