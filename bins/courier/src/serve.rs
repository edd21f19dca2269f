//! `courier serve` and `courier admin`: compose store, key vault, sandbox provider,
//! orchestrator and API into one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use clap::Args;
use courier_api::{Api, ApiConfig, GitHubWebhook, Tokens};
use courier_e2b::models::{NewSandbox, SandboxRecord};
use courier_e2b::{CommandOutput, CommandSpec, SandboxApi, SpawnedCommand};
use courier_orchestrator::gateway::GatewayLink;
use courier_orchestrator::keys::{KeyVault, MASTER_KEY_ENV, MasterKey};
use courier_orchestrator::learnings::{LearningPipeline, LearningsConfig, LlmConfig};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::pr::{PrConfig, PrPipeline};
use courier_orchestrator::stream::EventHub;
use courier_orchestrator::work::Workflows;
use courier_store::{
    NewCostRate, NewProject, NewUser, PgStore, SandboxQuota, Service, SqliteStore, Store,
    UsageMetric,
};

use crate::config::{GatewaySetting, Overrides, Settings};

/// How often sandboxes past their timeout are looked for.
const TIMEOUT_TICK: Duration = Duration::from_secs(10);

/// Flags beat `COURIER_*` variables, which beat the config file, which beats the defaults.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file with the same settings as the flags plus `database_url`,
    /// `master_key`, `envd_binary`, `e2b_*` and `github_webhook_secret` [default:
    /// courier.toml in the data dir, if it exists].
    #[arg(long, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite database (`courier.db`) and master key (`master.key`)
    /// [default: ./courier-data].
    #[arg(long, env = "COURIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "COURIER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "COURIER_BODY_LIMIT")]
    body_limit: Option<usize>,
    /// Sandbox creations allowed per user per minute (and back to back) [default: 10].
    #[arg(long, env = "COURIER_CREATE_RATE")]
    create_rate: Option<u32>,
}

struct Database {
    store: Arc<dyn Store>,
    tokens: Tokens,
    sqlite: Option<SqliteStore>,
    postgres: Option<PgStore>,
}

impl Database {
    /// SQLite in the data dir, or Postgres when a PostgreSQL URL is configured.
    async fn open(settings: &Settings) -> Result<Database> {
        let data_dir = settings.data_dir.as_path();
        if let Some(url) = &settings.database_url {
            let pg = PgStore::connect(url)
                .await
                .context("connecting to Postgres")?;
            let tokens = Tokens::postgres(pg.pool().clone()).await?;
            return Ok(Database {
                store: Arc::new(pg.clone()),
                tokens,
                sqlite: None,
                postgres: Some(pg),
            });
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join("courier.db");
        let sqlite = SqliteStore::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let tokens = Tokens::sqlite(sqlite.pool().clone()).await?;
        Ok(Database {
            store: Arc::new(sqlite.clone()),
            tokens,
            sqlite: Some(sqlite),
            postgres: None,
        })
    }

    async fn close(&self) {
        if let Some(s) = &self.sqlite {
            s.close().await;
        }
        if let Some(p) = &self.postgres {
            p.close().await;
        }
    }
}

/// The sandbox provider: the configured `providers` as one `ProviderSet`, else an
/// E2B-compatible endpoint from the settings (`E2B_API_KEY`,
/// optional `E2B_API_URL`/`E2B_SANDBOX_URL`, from the environment or the file), else the embedded courier-sandboxd (needs
/// root and a `courier-envd` next to this executable or in `COURIER_ENVD_BINARY`), else
/// none (the API and dashboard work; creating a sandbox says what to configure).
async fn sandbox_provider(
    settings: &Settings,
    egress_allow: Vec<courier_sandboxd::egress::OperatorAllow>,
) -> Result<Provider> {
    if !settings.providers.is_empty() {
        for p in &settings.providers {
            tracing::info!(
                provider = %p.name,
                api_url = %p.api_url,
                sandbox_url = p.sandbox_url.as_deref().unwrap_or("-"),
                capacity = p.capacity.map_or_else(|| "none".to_owned(), |c| c.to_string()),
                labels = %p.labels.join(","),
                "sandbox provider"
            );
        }
        let set = crate::providers::provider_set(
            &settings.providers,
            &settings.provider_template_labels,
        )?;
        return Ok(Provider {
            api: Arc::new(set),
            name: "several providers",
            embedded: None,
        });
    }
    if settings.e2b_configured() {
        let config = courier_e2b::ConnectionConfigBuilder::from_vars(&settings.e2b_vars)
            .build()
            .context("configuring the E2B client")?;
        let client = courier_e2b::Client::new(config).context("configuring the E2B client")?;
        return Ok(Provider {
            api: Arc::new(client),
            name: "E2B-compatible endpoint",
            embedded: None,
        });
    }
    match embedded_sandboxd(settings, egress_allow).await {
        Ok(provider) => Ok(provider),
        Err(reason) => {
            tracing::warn!("embedded courier-sandboxd unavailable: {reason:#}");
            Ok(Provider {
                api: Arc::new(NoProvider),
                name: "none",
                embedded: None,
            })
        }
    }
}

/// What `courier serve` creates sandboxes with.
struct Provider {
    api: Arc<dyn SandboxApi>,
    name: &'static str,
    embedded: Option<courier_sandboxd::Sandboxd>,
}

/// Starts courier-sandboxd in this process on loopback ports only this process knows the
/// key of; the orchestrator then reaches it through courier-e2b like any E2B endpoint, so
/// there is one code path for the cloud and the local backend.
async fn embedded_sandboxd(
    settings: &Settings,
    egress_allow: Vec<courier_sandboxd::egress::OperatorAllow>,
) -> Result<Provider> {
    let data_dir = settings.data_dir.as_path();
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        bail!("it needs root (namespaces, mounts, cgroups); run as root or set E2B_API_KEY");
    }
    let envd = match &settings.envd_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("courier-envd"),
    };
    if !envd.is_file() {
        bail!(
            "no courier-envd at {} (build it with `cargo build -p courier-envd-bin`, or set COURIER_ENVD_BINARY)",
            envd.display()
        );
    }
    let key = format!("e2b_{}", courier_sandboxd::state::random_hex(20));
    let mut config = courier_sandboxd::ServerConfig::new(data_dir.join("sandboxd"), envd);
    config.isolation = settings.sandbox_isolation;
    config.dev_api_key = Some(key.clone());
    config.egress_allow = egress_allow;
    config.limits.template_step_timeout = Duration::from_secs(settings.template_step_timeout_secs);
    config.limits.template_build_timeout =
        Duration::from_secs(settings.template_build_timeout_secs);
    let sandboxd = courier_sandboxd::Sandboxd::start(config)
        .await
        .context("starting the embedded courier-sandboxd")?;
    let capacity = sandboxd.capacity();
    tracing::info!(
        max_sandboxes = capacity.max_sandboxes,
        max_memory_mb = capacity.max_memory_mb,
        "embedded courier-sandboxd capacity (a create past it answers 429)"
    );
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_url = format!("http://{}", api_listener.local_addr()?);
    let sandbox_url = format!("http://{}", proxy_listener.local_addr()?);
    let server = sandboxd.clone();
    tokio::spawn(async move {
        if let Err(e) = server
            .serve_api(api_listener, std::future::pending::<()>())
            .await
        {
            tracing::error!(error = %e, "the embedded courier-sandboxd API stopped");
        }
    });
    let server = sandboxd.clone();
    tokio::spawn(async move {
        if let Err(e) = server
            .serve_proxy(proxy_listener, std::future::pending::<()>())
            .await
        {
            tracing::error!(error = %e, "the embedded courier-sandboxd proxy stopped");
        }
    });
    let client = courier_e2b::Client::new(
        courier_e2b::ConnectionConfig::builder()
            .api_key(key)
            .api_url(api_url)
            .sandbox_url(sandbox_url)
            .build()?,
    )?;
    Ok(Provider {
        api: Arc::new(client),
        name: "embedded courier-sandboxd",
        embedded: Some(sandboxd),
    })
}

/// Courier's gateway, bound before the backend starts (its address goes into the
/// embedded backend's egress allow list).
struct GatewayPlan {
    listener: tokio::net::TcpListener,
    /// The URL sandboxes reach it at.
    url: String,
    /// The one `IP:PORT` the embedded backend's sandboxes may reach on this host.
    egress_allow: Option<courier_sandboxd::egress::OperatorAllow>,
}

impl GatewayPlan {
    /// Binds the gateway as the settings ask; `None` when it is off.
    async fn bind(settings: &Settings) -> Result<Option<GatewayPlan>> {
        let url = match &settings.gateway {
            GatewaySetting::Off => return Ok(None),
            // E2B's sandboxes reach this host only at an address the operator knows.
            GatewaySetting::Auto if settings.e2b_configured() => return Ok(None),
            GatewaySetting::Auto => None,
            GatewaySetting::Url(url) => Some(url.clone()),
        };
        let listen = match settings.gateway_listen {
            Some(listen) => listen,
            None => {
                let ip = courier_gateway::outward_ipv4().context(
                    "the gateway needs this host's outward address (no default route): set COURIER_GATEWAY_LISTEN, or COURIER_GATEWAY=off",
                )?;
                let port = match settings.listen.port() {
                    0 => 0,
                    port => port.checked_add(1).unwrap_or(0),
                };
                SocketAddr::new(ip, port)
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            // The default port taken: any free one (sandboxes set up now get its URL).
            Err(e) if settings.gateway_listen.is_none() && listen.port() != 0 => {
                tracing::warn!(%listen, error = %e, "the gateway's default port is taken: using a free one (set COURIER_GATEWAY_LISTEN to fix it)");
                tokio::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0)).await?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("the gateway listening on {listen}"));
            }
        };
        let bound = listener.local_addr()?;
        let embedded = !settings.e2b_configured();
        Ok(Some(GatewayPlan {
            listener,
            url: url.unwrap_or_else(|| format!("http://{bound}")),
            egress_allow: embedded.then(|| bound.to_string().parse().ok()).flatten(),
        }))
    }

    /// Points the orchestrator's sandboxes at the gateway and serves it.
    fn serve(self, orchestrator: Orchestrator, master: &MasterKey) -> Result<Orchestrator> {
        let minter = courier_gateway::Minter::new(master.to_base64().as_bytes());
        let orchestrator = orchestrator.with_gateway(GatewayLink {
            url: self.url.clone(),
            minter: minter.clone(),
            // courier-sandboxd adds the proof for plain HTTP; E2B's egress for HTTPS.
            proof_at_egress: true,
        })?;
        let gateway = courier_gateway::Gateway::new(
            minter,
            courier_gateway::Upstreams::default(),
            orchestrator.gateway_grants(),
        );
        tracing::info!(url = %self.url, "gateway: provider keys and the GitHub token stay outside the sandboxes");
        let listener = courier_envd::tcp::LowLatencyListener::new(self.listener);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, gateway.router()).await {
                tracing::error!(error = %e, "the gateway stopped");
            }
        });
        Ok(orchestrator)
    }
}

/// Stands in while no provider is configured: the API, dashboard and keys work; creating
/// a sandbox fails with a message saying what to configure.
struct NoProvider;

const NO_PROVIDER: &str = "no sandbox provider configured: run `courier serve` as root with \
courier-envd next to it (the embedded courier-sandboxd), or set E2B_API_KEY (E2B cloud), or \
E2B_API_URL and E2B_SANDBOX_URL (a separate courier-sandboxd), and restart `courier serve`";

fn no_provider<T>() -> courier_e2b::Result<T> {
    Err(courier_e2b::Error::InvalidArgument {
        message: NO_PROVIDER.into(),
    })
}

#[async_trait]
impl SandboxApi for NoProvider {
    async fn create(&self, _: NewSandbox) -> courier_e2b::Result<SandboxRecord> {
        no_provider()
    }
    async fn connect(&self, _: &str, _: Option<Duration>) -> courier_e2b::Result<SandboxRecord> {
        no_provider()
    }
    async fn kill(&self, _: &str) -> courier_e2b::Result<bool> {
        Ok(false)
    }
    async fn set_timeout(&self, _: &str, _: Duration) -> courier_e2b::Result<()> {
        no_provider()
    }
    async fn pause(&self, _: &str) -> courier_e2b::Result<bool> {
        no_provider()
    }
    async fn run(&self, _: &SandboxRecord, _: CommandSpec) -> courier_e2b::Result<CommandOutput> {
        no_provider()
    }
    async fn spawn(
        &self,
        _: &SandboxRecord,
        _: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        no_provider()
    }
    async fn send_stdin(&self, _: &SandboxRecord, _: u32, _: Bytes) -> courier_e2b::Result<()> {
        no_provider()
    }
    async fn kill_process(&self, _: &SandboxRecord, _: u32) -> courier_e2b::Result<bool> {
        no_provider()
    }
    async fn write_file(&self, _: &SandboxRecord, _: &str, _: Bytes) -> courier_e2b::Result<()> {
        no_provider()
    }
    async fn read_file(&self, _: &SandboxRecord, _: &str) -> courier_e2b::Result<Bytes> {
        no_provider()
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only when a subscriber is set already (tests that run `serve` in-process):
    // that one keeps logging.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Learning extraction after each sandbox, when an Anthropic API key is configured
/// (`COURIER_LEARNINGS_API_KEY`; `COURIER_LEARNINGS_BASE_URL` and `COURIER_LEARNINGS_MODEL`
/// point it elsewhere). Without one, sandboxes keep the `pending` extraction status.
fn learnings_pipeline(store: Arc<dyn Store>) -> Result<Option<LearningPipeline>> {
    let Ok(key) = std::env::var("COURIER_LEARNINGS_API_KEY") else {
        return Ok(None);
    };
    let mut llm = LlmConfig::new(courier_tools::Secret::new(key));
    if let Ok(url) = std::env::var("COURIER_LEARNINGS_BASE_URL") {
        llm.base_url = url;
    }
    if let Ok(model) = std::env::var("COURIER_LEARNINGS_MODEL") {
        llm.model = model;
    }
    let pipeline = LearningPipeline::new(store, LearningsConfig::new(llm))
        .context("configuring learning extraction")?;
    Ok(Some(pipeline))
}

/// Makes the data dir owner-only (see [`crate::data_dir`]), logging each entry it had to
/// fix.
fn secure_data_dir(settings: &Settings) -> Result<()> {
    for fixed in crate::data_dir::secure(&settings.data_dir)? {
        tracing::warn!(
            path = %fixed.path.display(),
            from = %format_args!("{:04o}", fixed.from),
            to = %format_args!("{:04o}", fixed.to),
            "other users could read this: permissions fixed"
        );
    }
    Ok(())
}

/// How much longer than the provider's build deadline a build is followed: the
/// provider's own reason for a build past its deadline arrives first.
const BUILD_FOLLOW_MARGIN: Duration = Duration::from_secs(600);

/// `courier serve`.
pub async fn run(args: ServeArgs) -> Result<()> {
    init_logging();
    // Before anything is written: the database, its WAL, the master key and the embedded
    // sandbox server's state are owner-only from their first byte.
    crate::data_dir::restrict_umask();
    let settings = crate::config::resolve(Overrides {
        config: args.config,
        data_dir: args.data_dir,
        listen: args.listen,
        body_limit: args.body_limit,
        create_rate: args.create_rate,
    })?;
    secure_data_dir(&settings)?;
    if let Some((path, keys)) = &settings.file {
        // Key names only: values may be secrets.
        tracing::info!(path = %path.display(), keys = %keys.join(","), "config file read");
    }
    let db = Database::open(&settings).await?;
    // SQLite is one replica's: a second `serve` on the same file is refused, not raced.
    let _sqlite_lock = match &db.sqlite {
        Some(_) => Some(lock_sqlite(&settings.data_dir)?),
        None => None,
    };
    let cluster = match &db.postgres {
        Some(pg) => Some(join_cluster(pg, &settings).await?),
        None => None,
    };
    let seeded = courier_orchestrator::usage::seed_default_rates(db.store.as_ref()).await?;
    for rate in &seeded {
        tracing::info!(
            service = %rate.service, metric = %rate.metric, usd_per_unit = rate.usd_per_unit,
            "default cost rate set (change it with `courier admin rates set`)"
        );
    }
    let master = MasterKey::load_or_create(settings.master_key.as_deref(), &settings.data_dir)
        .with_context(|| format!("loading the master key ({MASTER_KEY_ENV} or `master_key`)"))?;
    let vault = KeyVault::new(master.clone(), db.store.clone());
    let gateway = GatewayPlan::bind(&settings).await?;
    let provider = sandbox_provider(
        &settings,
        gateway.iter().filter_map(|g| g.egress_allow).collect(),
    )
    .await?;
    let provider_name = provider.name;
    let pull_requests = PrPipeline::new(
        db.store.clone(),
        provider.api.clone(),
        PrConfig {
            api_base: std::env::var("COURIER_GITHUB_API_URL")
                .unwrap_or_else(|_| courier_orchestrator::pr::DEFAULT_GITHUB_API.to_owned()),
            ..PrConfig::default()
        },
    );
    let sandbox_internet = match settings.sandbox_internet {
        Some(allow) => allow,
        // courier-sandboxd grants outbound access through slirp4netns; without it a
        // sandbox asking for internet is refused, so start without rather than fail
        // every create.
        None if provider.embedded.is_some()
            && courier_sandboxd::runtime::network::find_slirp4netns().is_none() =>
        {
            tracing::warn!(
                "sandboxes get no internet access: slirp4netns is not installed (apt-get install slirp4netns); agents that call remote APIs will fail. Set COURIER_SANDBOX_INTERNET=false to silence this"
            );
            false
        }
        None => true,
    };
    let hub = match &cluster {
        Some(cluster) => EventHub::default()
            .join_cluster(cluster.clone(), db.store.clone())
            .await
            .context("listening for the other replicas' events")?,
        None => EventHub::default(),
    };
    let orchestrator =
        Orchestrator::new(db.store.clone(), provider.api.clone(), vault.clone(), hub)
            .with_sandbox_internet(sandbox_internet)
            .with_pull_requests(pull_requests.clone())
            .with_sandbox_quota(SandboxQuota {
                per_user: settings.max_sandboxes_per_user,
                per_project: settings.max_sandboxes_per_project,
            })
            .with_tool_path(settings.tool_path.clone())
            .with_tool_templates(|t| {
                t.with_build_deadline(
                    Duration::from_secs(settings.template_build_timeout_secs) + BUILD_FOLLOW_MARGIN,
                )
            });
    tracing::info!(
        per_user = settings
            .max_sandboxes_per_user
            .map_or("none".to_owned(), |n| n.to_string()),
        per_project = settings
            .max_sandboxes_per_project
            .map_or("none".to_owned(), |n| n.to_string()),
        "live sandbox quotas"
    );
    // Versions were checked when the settings were read.
    let orchestrator = settings
        .tool_versions
        .iter()
        .fold(orchestrator, |o, (tool, version)| {
            o.with_tool_templates(|t| match t.clone().with_cli_version(*tool, version) {
                Ok(pinned) => pinned,
                Err(e) => {
                    tracing::warn!(error = %e, "CLI version not applied");
                    t
                }
            })
        });
    let orchestrator = match learnings_pipeline(db.store.clone())? {
        Some(pipeline) => orchestrator.with_learnings(pipeline),
        None => {
            tracing::info!(
                "learning extraction is off: set COURIER_LEARNINGS_API_KEY (an Anthropic API key) to turn it on"
            );
            orchestrator
        }
    };
    let orchestrator = match gateway {
        // The sandboxes reach the gateway through their egress: without internet access
        // (no slirp4netns) they could not, so their keys go in as before.
        Some(_) if provider.embedded.is_some() && !sandbox_internet => {
            tracing::warn!(
                "the gateway is off: sandboxes have no network to reach it (install slirp4netns); provider keys and the GitHub token are written into the sandboxes"
            );
            orchestrator
        }
        Some(plan) => plan.serve(orchestrator, &master)?,
        None => {
            tracing::warn!(
                "the gateway is off: provider keys and the GitHub token are written into the sandboxes (set COURIER_GATEWAY to its URL to keep them out)"
            );
            orchestrator
        }
    };
    let orchestrator = match &cluster {
        Some(cluster) => orchestrator.with_cluster(cluster.clone()),
        None => orchestrator,
    };
    // Restart safety: end what the provider lost, kill orphans, follow running agents again.
    match orchestrator.reconcile().await {
        Ok(report) => tracing::info!(?report, "sandboxes reconciled with the provider"),
        Err(e) => tracing::warn!(error = %e, "could not reconcile sandboxes with the provider"),
    }
    // Then drive on every workflow run, work chain and issue session left unfinished.
    let workflows = Workflows::new(orchestrator.clone());
    // In a cluster each replica drives only the work no live replica drives (claimed in
    // the store), so every replica resumes at start, and again on the takeover tick.
    let resumed = workflows.resume().await;
    match resumed {
        Ok(report) => tracing::info!(
            runs = report.runs,
            chains = report.chains,
            issue_sessions = report.sessions,
            "unfinished workflow runs, work chains and issue sessions resumed"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not resume workflow runs, work chains and issue sessions")
        }
    }
    // The embedded backend starts with `base` only: build the tool templates it lacks in
    // the background (a create needs them; E2B cloud has them already).
    let builds_templates = match &cluster {
        Some(cluster) => cluster.lead("template-builds").await?,
        None => true,
    };
    if provider.embedded.is_some() && builds_templates {
        if settings.build_tool_templates {
            let templates = orchestrator.tool_templates().clone();
            tokio::spawn(async move {
                match templates.build_missing().await {
                    Ok(started) if started.is_empty() => {
                        tracing::info!("every tool template exists at the embedded backend")
                    }
                    Ok(started) => {
                        let tools: Vec<_> = started.iter().map(|b| b.row.tool_id.clone()).collect();
                        tracing::info!(
                            ?tools,
                            "building missing tool templates in the background (courier templates list)"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "could not check the tool templates"),
                }
            });
        } else {
            tracing::info!(
                "tool templates are not built at start (build_tool_templates = false): build one with `courier templates build <tool>`"
            );
        }
    }
    // Merged pull requests are learned from GitHub's webhook when a secret is set, and by
    // the merged-PR poller below (for deployments GitHub cannot reach).
    let github_webhook = match settings.github_webhook_secret.clone() {
        Some(secret) => {
            tracing::info!(
                "GitHub webhook on: POST /v1/github/webhook checks deliveries against the configured secret"
            );
            Some(GitHubWebhook {
                secret,
                pipeline: pull_requests,
            })
        }
        None => {
            tracing::info!(
                "GitHub webhook off: set COURIER_GITHUB_WEBHOOK_SECRET (or `github_webhook_secret` in the config file) to the hook's secret to turn it on"
            );
            None
        }
    };
    let config = ApiConfig {
        body_limit: settings.body_limit,
        create_rate: courier_api::RateLimit {
            burst: settings.create_rate,
            per_minute: settings.create_rate,
        },
        github_webhook,
        cluster: match &cluster {
            Some(cluster) => Some(
                courier_api::ClusterLink::new(cluster.clone(), &master)
                    .context("routing requests to their owner replicas")?,
            ),
            None => None,
        },
        ..ApiConfig::default()
    };
    let api = Api::with_workflows(
        db.store.clone(),
        vault,
        orchestrator.clone(),
        workflows,
        db.tokens.clone(),
        config,
    );
    // Periodic work: the merged-PR poller (sandboxes whose PR is `created`; it uses the
    // orchestrator's pipeline, which holds the key vault for each project's GitHub key)
    // and the timeout sweep.
    let merge_poller = match (settings.pr_poll_interval_secs, orchestrator.pull_requests()) {
        (0, _) | (_, None) => {
            tracing::info!("merged-PR polling is off (pr_poll_interval = 0)");
            None
        }
        (secs, Some(pipeline)) => {
            let pipeline = Arc::new(pipeline.clone());
            let cluster = cluster.clone();
            // In a cluster one replica polls; another takes over when it dies.
            Some(tokio::spawn(async move {
                if let Some(cluster) = cluster {
                    while !cluster.lead("merge-poller").await.unwrap_or(false) {
                        tokio::time::sleep(LEAD_RETRY).await;
                    }
                }
                tracing::info!(every_secs = secs, "polling open pull requests for merges");
                let _ = pipeline.spawn_merge_poller(Duration::from_secs(secs)).await;
            }))
        }
    };
    // A replica takes over the sandboxes of replicas that die, and stops at once if it
    // loses its own membership (another replica may be taking its sandboxes over).
    let takeover = cluster.clone().map(|cluster| {
        let orchestrator = orchestrator.clone();
        let workflows = api.workflows().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TAKEOVER_TICK);
            for round in 0u64.. {
                tick.tick().await;
                if let Err(e) = cluster.check_presence().await {
                    tracing::error!(error = %e, "this replica lost its cluster membership; exiting so it restarts as a new replica");
                    std::process::exit(75);
                }
                match orchestrator.take_over().await {
                    Ok(report) if report != Default::default() => {
                        tracing::info!(?report, "sandboxes taken over from a replica that stopped")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "taking sandboxes over failed; retrying"),
                }
                // Work (runs, chains, issue sessions) of dead replicas: three list queries,
                // so every few ticks; sandboxes, which stream, are taken over first.
                if round % WORK_TAKEOVER_EVERY == 0 {
                    match workflows.resume().await {
                        Ok(report) if report != Default::default() => tracing::info!(
                            runs = report.runs,
                            chains = report.chains,
                            issue_sessions = report.sessions,
                            "work taken over from a replica that stopped"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "taking work over failed; retrying"),
                    }
                }
            }
        })
    });
    let following = orchestrator.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TIMEOUT_TICK);
        loop {
            tick.tick().await;
            if let Err(e) = orchestrator.check_timeouts().await {
                tracing::warn!(error = %e, "timeout sweep failed");
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        sandboxes = provider_name,
        "courier is serving: dashboard at http://{}/",
        listener.local_addr()?
    );
    if provider_name == "none" {
        tracing::warn!("{NO_PROVIDER}");
    }
    let stopping = api.clone();
    let stopping_work = api.workflows().clone();
    let listener = courier_envd::tcp::LowLatencyListener::new(listener);
    axum::serve(listener, api.router())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: ending event streams, finishing requests");
            // Streams end with a `shutdown` event; every event is already stored, so
            // clients resume from their Last-Event-ID without losing any.
            stopping.begin_shutdown();
        })
        .await
        .context("serving")?;
    ticker.abort();
    if let Some(takeover) = takeover {
        takeover.abort();
    }
    if let Some(cluster) = &cluster {
        // Stop following and driving first, then hand the sandboxes and the work over:
        // the other replicas re-attach at once, and no two replicas record one agent or
        // drive one run.
        following.detach_all();
        stopping_work.detach_all();
        cluster.leave().await;
        tracing::info!("left the cluster: other replicas follow this one's sandboxes");
    }
    if let Some(poller) = merge_poller {
        poller.abort();
    }
    if let Some(sandboxd) = &provider.embedded {
        // Sandboxes keep running: the next start finds them again. Build sandboxes do
        // not: their builds end with this process (the next start fails them as
        // interrupted), so nothing is left building for nobody.
        sandboxd.stop();
        courier_sandboxd::templates::build::kill_build_sandboxes(sandboxd).await;
        // Kills answered already finish their cleanup (a crash would leave it to the
        // next start).
        sandboxd.finish_cleanups().await;
    }
    // Bounded: a connection still held by a stream being torn down must not keep the
    // process from exiting (the database ends an abandoned session by itself).
    if tokio::time::timeout(DB_CLOSE_WAIT, db.close())
        .await
        .is_err()
    {
        tracing::warn!("the database connections did not close in time; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often a replica looks for sandboxes of dead replicas (and checks its own
/// membership): the bound on how long a dead replica's agents go unfollowed.
const TAKEOVER_TICK: Duration = Duration::from_millis(500);
/// Every how many takeover ticks a replica looks for unfinished work of dead replicas
/// (2 s: a run waits between steps anyway).
const WORK_TAKEOVER_EVERY: u64 = 4;
/// How long a stopping server waits for its database connections to close.
const DB_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How often a replica asks again to run a job another replica runs.
const LEAD_RETRY: Duration = Duration::from_secs(2);

/// Takes the SQLite database's lock for this process's lifetime.
fn lock_sqlite(data_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = data_dir.join("courier.db.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `courier serve` uses the SQLite database in {}: SQLite serves one replica. \
             Stop the other one, or run several replicas on PostgreSQL (set DATABASE_URL)",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Joins the cluster of replicas on this PostgreSQL database.
async fn join_cluster(pg: &PgStore, settings: &Settings) -> Result<Arc<courier_store::Cluster>> {
    let url = match &settings.replica_url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            url.trim_end_matches('/').to_owned()
        }
        Some(_) => bail!(
            "COURIER_REPLICA_URL (`replica_url`) must be an http:// or https:// URL other replicas reach this one at"
        ),
        None => {
            let mut listen = settings.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                tracing::warn!(
                    "replica_url is not set: other replicas forward requests to {listen}, which only works on this machine (set COURIER_REPLICA_URL)"
                );
            }
            format!("http://{listen}")
        }
    };
    let cluster = courier_store::Cluster::join(pg, &url)
        .await
        .context("joining the cluster of replicas on PostgreSQL")?;
    tracing::info!(replica = %cluster.me().id, url = %url, "joined the cluster of replicas");
    Ok(Arc::new(cluster))
}

/// `courier admin user create`.
pub async fn create_user(
    over: Overrides,
    email: &str,
    name: &str,
    project: &str,
    json: bool,
) -> Result<()> {
    if !email.contains('@') {
        bail!("invalid --email {email:?}: expected an e-mail address");
    }
    crate::data_dir::restrict_umask();
    let settings = crate::config::resolve(over)?;
    secure_data_dir(&settings)?;
    let db = Database::open(&settings).await?;
    let name = if name.is_empty() {
        email.split('@').next().unwrap_or(email)
    } else {
        name
    };
    let user = db
        .store
        .create_user(NewUser {
            email: email.to_owned(),
            name: name.to_owned(),
        })
        .await
        .with_context(|| format!("creating user {email}"))?;
    let project = db
        .store
        .create_project(NewProject {
            user_id: user.id,
            name: project.to_owned(),
        })
        .await?;
    let issued = db.tokens.issue(user.id, "admin user create").await?;
    db.close().await;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "user_id": user.id, "email": user.email, "project_id": project.id, "token": issued.token
            })
        );
    } else {
        println!("Created user {} ({})", user.email, user.id);
        println!("Project {} ({})", project.name, project.id);
        println!();
        println!("API token (shown once, store it now):");
        println!("  export COURIER_TOKEN={}", issued.token);
    }
    Ok(())
}

/// `courier admin rates list` (`set` is `None`) and `courier admin rates set`: the rate
/// table, with E2B's default compute rates put in first when it has none
/// ([`seed_default_rates`](courier_orchestrator::usage::seed_default_rates)). A rate set
/// applies from now on: usage records keep the cost they were written with.
pub async fn rates(
    over: Overrides,
    set: Option<(Service, UsageMetric, f64)>,
    json: bool,
) -> Result<()> {
    if let Some((_, _, usd_per_unit)) = set
        && !(usd_per_unit.is_finite() && usd_per_unit >= 0.0)
    {
        bail!("invalid USD_PER_UNIT {usd_per_unit}: expected a number, 0 or more");
    }
    crate::data_dir::restrict_umask();
    let settings = crate::config::resolve(over)?;
    secure_data_dir(&settings)?;
    let db = Database::open(&settings).await?;
    let result = async {
        courier_orchestrator::usage::seed_default_rates(db.store.as_ref()).await?;
        if let Some((service, metric, usd_per_unit)) = set {
            db.store
                .put_cost_rate(NewCostRate {
                    service,
                    metric,
                    usd_per_unit,
                    effective_from: chrono::Utc::now(),
                })
                .await?;
        }
        anyhow::Ok(db.store.list_cost_rates().await?)
    }
    .await;
    db.close().await;
    let rates = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rates)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rates
        .iter()
        .map(|r| {
            vec![
                r.service.to_string(),
                r.metric.to_string(),
                format!("{}", r.usd_per_unit),
                r.effective_from
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::table::render(&["SERVICE", "METRIC", "USD/UNIT", "FROM"], &rows)
    );
    Ok(())
}
