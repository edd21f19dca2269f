//! A handle on one sandbox: lifecycle calls plus the envd APIs (commands, PTY, files).

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    Client, Error, PauseOptions, Result, SnapshotQuery,
    api::ceil_secs,
    codec::Codec,
    envd::{Commands, Files, PtyApi, rpc::Envd},
    models::{
        ForkRequest, NetworkConfig, NewSandbox, SandboxDetail, SandboxMetric, SandboxRecord,
        SnapshotInfo,
    },
};

/// A running (or paused) sandbox. Cheap to clone; all clones talk to the same sandbox.
///
/// ```no_run
/// # async fn demo() -> courier_e2b::Result<()> {
/// use std::time::Duration;
/// use courier_e2b::{Client, Sandbox};
///
/// let client = Client::from_env()?;
/// let sandbox = Sandbox::builder()
///     .template("base")
///     .timeout(Duration::from_secs(300))
///     .metadata("project", "courier")
///     .create(&client)
///     .await?;
/// let output = sandbox.commands().run("uname -a").await?;
/// println!("{}", output.stdout);
/// sandbox.kill().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    record: SandboxRecord,
    envd: Envd,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("record", &self.inner.record)
            .field("envd_url", &self.inner.envd.base.as_str())
            .field("codec", &self.inner.envd.codec)
            .finish()
    }
}

impl Sandbox {
    /// Starts configuring a new sandbox.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let sandbox = courier_e2b::Sandbox::builder().template("base").create(&client).await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Connects to an existing sandbox, resuming it if paused.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let sandbox = courier_e2b::Sandbox::connect(&client, "abc123").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(client: &Client, sandbox_id: &str) -> Result<Sandbox> {
        let record = client.connect_sandbox(sandbox_id, None).await?;
        Ok(Sandbox::from_record(client, record))
    }

    /// Connects and extends the sandbox's life to at least `timeout` from now.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let sandbox = courier_e2b::Sandbox::connect_with_timeout(&client, "abc123", std::time::Duration::from_secs(600)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_timeout(
        client: &Client,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<Sandbox> {
        let record = client.connect_sandbox(sandbox_id, Some(timeout)).await?;
        Ok(Sandbox::from_record(client, record))
    }

    /// A handle from a create/connect response, without any call (for example one stored
    /// by an orchestrator).
    ///
    /// ```
    /// use courier_e2b::{Client, ConnectionConfig, Sandbox, models::SandboxRecord};
    /// let client = Client::new(ConnectionConfig::builder().api_key("k").build().unwrap()).unwrap();
    /// let record: SandboxRecord = serde_json::from_str(
    ///     r#"{"templateID":"base","sandboxID":"abc","clientID":"x","envdVersion":"0.6.13"}"#,
    /// ).unwrap();
    /// let sandbox = Sandbox::from_record(&client, record);
    /// assert_eq!(sandbox.id(), "abc");
    /// assert_eq!(sandbox.get_host(8080), "8080-abc.e2b.app");
    /// ```
    pub fn from_record(client: &Client, record: SandboxRecord) -> Sandbox {
        let config = client.config();
        let envd = Envd {
            client: client.clone(),
            base: config.envd_url(&record.sandbox_id, record.domain.as_deref()),
            sandbox_id: record.sandbox_id.clone(),
            access_token: record.envd_access_token.clone(),
            codec: config.codec(),
        };
        Sandbox {
            inner: Arc::new(Inner {
                client: client.clone(),
                record,
                envd,
            }),
        }
    }

    /// The same sandbox, speaking another Connect codec to envd.
    ///
    /// ```no_run
    /// # fn demo(sandbox: courier_e2b::Sandbox) {
    /// let json = sandbox.with_codec(courier_e2b::codec::Codec::Json);
    /// # }
    /// ```
    pub fn with_codec(&self, codec: Codec) -> Sandbox {
        let mut envd = self.inner.envd.clone();
        envd.codec = codec;
        Sandbox {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                record: self.inner.record.clone(),
                envd,
            }),
        }
    }

    /// The sandbox id.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// println!("sandbox {}", sandbox.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &str {
        &self.inner.record.sandbox_id
    }

    /// What the API returned when creating or connecting.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// // Store it to reach the sandbox later without a connect call.
    /// let json = serde_json::to_string(sandbox.record()).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn record(&self) -> &SandboxRecord {
        &self.inner.record
    }

    /// The envd version inside the sandbox.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// println!("envd {}", sandbox.envd_version());
    /// # Ok(()) }
    /// ```
    pub fn envd_version(&self) -> &str {
        &self.inner.record.envd_version
    }

    /// The envd base URL in use.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// println!("envd at {}", sandbox.envd_url());
    /// # Ok(()) }
    /// ```
    pub fn envd_url(&self) -> &url::Url {
        &self.inner.envd.base
    }

    /// The client this sandbox was created with.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let same = sandbox.client().get_info(sandbox.id()).await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Processes: run, spawn, connect, list, signal.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let output = sandbox.commands().run("ls /").await?;
    /// # Ok(()) }
    /// ```
    pub fn commands(&self) -> Commands {
        Commands {
            envd: self.inner.envd.clone(),
        }
    }

    /// Git in the sandbox (clone, status, branches, commit, push, pull, config…), run as
    /// `git` commands; credentials never reach a command line or the repository's config.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let status = sandbox.git().status("/home/user/app").await?;
    /// # Ok(()) }
    /// ```
    pub fn git(&self) -> crate::envd::Git {
        crate::envd::Git {
            commands: self.commands(),
            user: None,
            envs: Vec::new(),
            timeout: None,
        }
    }

    /// Interactive terminals.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let terminal = sandbox.pty().create(courier_e2b::PtySize::new(80, 24)).await?;
    /// # Ok(()) }
    /// ```
    pub fn pty(&self) -> PtyApi {
        PtyApi {
            envd: self.inner.envd.clone(),
        }
    }

    /// Files: read, write, list, stat, watch, signed URLs.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let bytes = sandbox.files().read("/etc/hostname").await?;
    /// # Ok(()) }
    /// ```
    pub fn files(&self) -> Files {
        let config = self.inner.client.config();
        Files {
            envd: self.inner.envd.clone(),
            direct_url: config.direct_envd_url(self.id(), self.inner.record.domain.as_deref()),
            user: None,
        }
    }

    /// The host serving `port` inside the sandbox (`<port>-<id>.<domain>`;
    /// `localhost:<port>` in debug mode).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.commands().run("python3 -m http.server 8000").timeout(std::time::Duration::ZERO).spawn().await?;
    /// let url = format!("https://{}/", sandbox.get_host(8000));
    /// # Ok(()) }
    /// ```
    pub fn get_host(&self, port: u16) -> String {
        self.inner
            .client
            .config()
            .host(port, self.id(), self.inner.record.domain.as_deref())
    }

    /// Whether envd answers (`GET /health`): `false` when the proxy says the sandbox is
    /// gone (502); other failures are errors.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// if !sandbox.is_running().await? { println!("gone"); }
    /// # Ok(()) }
    /// ```
    pub async fn is_running(&self) -> Result<bool> {
        let envd = &self.inner.envd;
        let request = envd
            .headers(self.inner.client.http().get(envd.url("/health")))
            .timeout(self.inner.client.config().request_timeout());
        let response = request.send().await.map_err(Error::from_reqwest)?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            502 => Ok(false),
            status => {
                let body = response.bytes().await.unwrap_or_default();
                Err(Error::from_envd_http(
                    status,
                    &body,
                    crate::NotFoundKind::Sandbox,
                ))
            }
        }
    }

    /// Kills the sandbox: `false` when it was already gone.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let was_running = sandbox.kill().await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self) -> Result<bool> {
        self.inner.client.kill(self.id()).await
    }

    /// Sets the sandbox to end `timeout` from now (may shorten its life).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.set_timeout(std::time::Duration::from_secs(30 * 60)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.client.set_timeout(self.id(), timeout).await
    }

    /// Replaces the sandbox's egress rules (`allowOut`, `denyOut`, transform `rules`) at
    /// once; what `update` leaves out is cleared.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::models::{NetworkRule, NetworkUpdate};
    /// sandbox
    ///     .update_network(NetworkUpdate {
    ///         rules: Some([("api.example.com".to_owned(), vec![NetworkRule::set_headers([("Authorization", "Bearer t")])])].into()),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_network(&self, update: crate::models::NetworkUpdate) -> Result<()> {
        self.inner.client.update_network(self.id(), &update).await
    }

    /// Pauses the sandbox: `false` when it was already paused.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.pause().await?;
    /// // Later: courier_e2b::Sandbox::connect(sandbox.client(), sandbox.id()).await? resumes it.
    /// # Ok(()) }
    /// ```
    pub async fn pause(&self) -> Result<bool> {
        self.inner.client.pause(self.id()).await
    }

    /// Pauses the sandbox as `options` say: `false` when it was already paused. With
    /// [`PauseOptions::filesystem_only`] its processes end and its memory is freed;
    /// [`Sandbox::connect`] reboots it from its kept filesystem (same id and token).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::{PauseOptions, Sandbox};
    /// sandbox.pause_with(PauseOptions::filesystem_only()).await?;
    /// let rebooted = Sandbox::connect(sandbox.client(), sandbox.id()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause_with(&self, options: PauseOptions) -> Result<bool> {
        self.inner.client.pause_with(self.id(), options).await
    }

    /// Takes a filesystem snapshot of the sandbox (it keeps running); its id is a
    /// template new sandboxes start from.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let snapshot = sandbox.create_snapshot().await?;
    /// let copy = courier_e2b::Sandbox::builder()
    ///     .template(snapshot.snapshot_id)
    ///     .create(sandbox.client())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_snapshot(&self) -> Result<SnapshotInfo> {
        self.inner.client.create_snapshot(self.id(), None).await
    }

    /// [`create_snapshot`](Self::create_snapshot) under `name` (letters, digits, `.`,
    /// `_`, `-`); a name used before gets the new capture under the same snapshot id.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let snapshot = sandbox.create_snapshot_named("deps-installed").await?;
    /// assert_eq!(snapshot.names, ["deps-installed"]);
    /// # Ok(()) }
    /// ```
    pub async fn create_snapshot_named(&self, name: &str) -> Result<SnapshotInfo> {
        self.inner
            .client
            .create_snapshot(self.id(), Some(name))
            .await
    }

    /// The API key's snapshots matching `query`, newest first (all pages).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::{Sandbox, SnapshotQuery};
    /// let mine = Sandbox::list_snapshots(sandbox.client(), SnapshotQuery::new().sandbox(sandbox.id())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn list_snapshots(
        client: &Client,
        query: SnapshotQuery,
    ) -> Result<Vec<SnapshotInfo>> {
        use futures::TryStreamExt as _;
        client.list_snapshots(query).try_collect().await
    }

    /// Deletes snapshot `snapshot_id`: `false` when there was none.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let deleted = courier_e2b::Sandbox::delete_snapshot(&client, "snap_0123456789abcdef").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_snapshot(client: &Client, snapshot_id: &str) -> Result<bool> {
        client.delete_snapshot(snapshot_id).await
    }

    /// Forks the sandbox: `count` new running sandboxes with a copy of its filesystem
    /// (it keeps running), each living `timeout` (`None`: the server's default). One
    /// result per fork: each starts or fails on its own.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// for fork in sandbox.fork(2, None).await? {
    ///     let fork = fork?;
    ///     fork.commands().run("make test").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn fork(
        &self,
        count: u32,
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<Sandbox>>> {
        let request = ForkRequest {
            timeout: timeout.map(ceil_secs),
            count: Some(count),
        };
        let results = self.inner.client.fork(self.id(), &request).await?;
        Ok(results
            .into_iter()
            .map(|result| match (result.sandbox, result.error) {
                (Some(record), _) => Ok(Sandbox::from_record(&self.inner.client, record)),
                (None, Some(error)) => Err(Error::from_api(
                    error.code,
                    &serde_json::to_vec(&error).unwrap_or_default(),
                    None,
                )),
                (None, None) => Err(Error::protocol(
                    "a fork result with neither sandbox nor error",
                )),
            })
            .collect())
    }

    /// Keeps the sandbox alive for `duration` more (0–3600 s).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.refresh(std::time::Duration::from_secs(60)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self, duration: Duration) -> Result<()> {
        self.inner.client.refresh(self.id(), duration).await
    }

    /// Everything the control plane knows about the sandbox.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let info = sandbox.get_info().await?;
    /// println!("{:?} until {}", info.state, info.end_at);
    /// # Ok(()) }
    /// ```
    pub async fn get_info(&self) -> Result<SandboxDetail> {
        self.inner.client.get_info(self.id()).await
    }

    /// Resource samples between `start` and `end`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// for sample in sandbox.metrics(None, None).await? {
    ///     println!("{}% cpu", sample.cpu_used_pct);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn metrics(
        &self,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Vec<SandboxMetric>> {
        self.inner.client.metrics(self.id(), start, end).await
    }

    /// The sandbox's logs (see [`Client::logs`]).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::{LogsQuery, models::LogLevel};
    /// let problems = sandbox.logs(&LogsQuery::new().level(LogLevel::Warn)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn logs(
        &self,
        query: &crate::LogsQuery,
    ) -> Result<Vec<crate::models::SandboxLogEntry>> {
        self.inner.client.logs(self.id(), query).await
    }
}

/// Configures a new sandbox; finish with [`SandboxBuilder::create`].
///
/// ```
/// use std::time::Duration;
/// let body = courier_e2b::Sandbox::builder()
///     .template("base")
///     .timeout(Duration::from_secs(120))
///     .metadata("k", "v")
///     .env("A", "1")
///     .to_request();
/// assert_eq!(
///     serde_json::to_string(&body).unwrap(),
///     r#"{"templateID":"base","timeout":120,"metadata":{"k":"v"},"envVars":{"A":"1"}}"#,
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct SandboxBuilder {
    template: Option<String>,
    timeout: Option<Duration>,
    metadata: HashMap<String, String>,
    envs: HashMap<String, String>,
    allow_internet_access: Option<bool>,
    auto_pause: Option<bool>,
    auto_resume: Option<bool>,
    auto_pause_memory: Option<bool>,
    network: Option<NetworkConfig>,
    idempotency_key: Option<String>,
    volume_mounts: Vec<crate::models::VolumeMount>,
}

/// The template used when none is given.
pub const DEFAULT_TEMPLATE: &str = "base";

impl SandboxBuilder {
    /// The template id or alias (default `base`).
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(template.into());
        self
    }

    /// How long the sandbox lives (whole seconds, rounded up; server default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a metadata label (filterable in [`Client::list`]).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds an environment variable for every process in the sandbox.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Adds environment variables for every process in the sandbox.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        envs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.envs
            .extend(envs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Allows or blocks outbound internet access.
    pub fn allow_internet_access(mut self, allow: bool) -> Self {
        self.allow_internet_access = Some(allow);
        self
    }

    /// Pause instead of kill when the timeout expires.
    pub fn auto_pause(mut self, pause: bool) -> Self {
        self.auto_pause = Some(pause);
        self
    }

    /// Resume the sandbox when traffic (a request through the sandbox proxy to envd or
    /// one of its ports) reaches it while paused: with [`auto_pause`](Self::auto_pause),
    /// a sandbox that timed out wakes on its next request.
    ///
    /// ```
    /// let body = courier_e2b::Sandbox::builder().auto_pause(true).auto_resume(true).to_request();
    /// assert_eq!(body.auto_resume, Some(courier_e2b::models::AutoResume { enabled: true }));
    /// ```
    pub fn auto_resume(mut self, resume: bool) -> Self {
        self.auto_resume = Some(resume);
        self
    }

    /// Makes the create idempotent (`Idempotency-Key`): a retry with the same key and the
    /// same settings, from the same API key, within the server's window (an hour on
    /// courier-sandboxd) answers with the sandbox the first attempt created, so the create
    /// is retried on transient failures like other calls. The same key with other
    /// settings is refused.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let sandbox = courier_e2b::Sandbox::builder()
    ///     .idempotency_key("job-42-attempt")
    ///     .create(&client)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Whether the timeout's auto-pause (see [`auto_pause`](Self::auto_pause)) keeps
    /// memory (default true); `false` makes it filesystem-only: processes end, memory is
    /// freed, and connecting reboots the sandbox from its kept filesystem.
    ///
    /// ```
    /// let body = courier_e2b::Sandbox::builder().auto_pause(true).auto_pause_memory(false).to_request();
    /// assert_eq!(body.auto_pause_memory, Some(false));
    /// ```
    pub fn auto_pause_memory(mut self, keep: bool) -> Self {
        self.auto_pause_memory = Some(keep);
        self
    }

    /// The network policy.
    pub fn network(mut self, network: NetworkConfig) -> Self {
        self.network = Some(network);
        self
    }

    /// Mounts the volume named `volume` (one of the API key's, see
    /// [`Volume`](crate::Volume)) read-write at `path` (absolute) in the sandbox; two
    /// sandboxes mounting one volume see each other's writes.
    ///
    /// ```
    /// let body = courier_e2b::Sandbox::builder().volume_mount("/data", "my-volume").to_request();
    /// assert_eq!(body.volume_mounts[0].name, "my-volume");
    /// assert_eq!(body.volume_mounts[0].path, "/data");
    /// ```
    pub fn volume_mount(mut self, path: impl Into<String>, volume: impl Into<String>) -> Self {
        self.volume_mounts.push(crate::models::VolumeMount {
            name: volume.into(),
            path: path.into(),
        });
        self
    }

    /// The `POST /v2/sandboxes` body this builder sends.
    ///
    /// ```
    /// let body = courier_e2b::Sandbox::builder().to_request();
    /// assert_eq!(body.template_id, "base");
    /// ```
    pub fn to_request(&self) -> NewSandbox {
        NewSandbox {
            template_id: self
                .template
                .clone()
                .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned()),
            timeout: self.timeout.map(ceil_secs),
            metadata: self.metadata.clone(),
            env_vars: self.envs.clone(),
            auto_pause: self.auto_pause,
            auto_resume: self
                .auto_resume
                .map(|enabled| crate::models::AutoResume { enabled }),
            auto_pause_memory: self.auto_pause_memory,
            allow_internet_access: self.allow_internet_access,
            network: self.network.clone(),
            volume_mounts: self.volume_mounts.clone(),
        }
    }

    /// Creates the sandbox (never retried: a retry could create two; unless it has an
    /// [`idempotency_key`](Self::idempotency_key), which makes retries safe).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let sandbox = courier_e2b::Sandbox::builder().template("base").env("CI", "1").create(&client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(self, client: &Client) -> Result<Sandbox> {
        let request = self.to_request();
        let record = match &self.idempotency_key {
            Some(key) => client.create_sandbox_idempotent(&request, key).await?,
            None => client.create_sandbox(&request).await?,
        };
        Ok(Sandbox::from_record(client, record))
    }
}
