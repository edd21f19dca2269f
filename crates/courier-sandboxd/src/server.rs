//! The control plane's core: [`Sandboxd`] creates, pauses, resumes, times out and kills
//! sandboxes, keeps their [`SandboxRecord`]s on disk, and serves the REST API
//! ([`crate::api`]) and the sandbox proxy ([`crate::proxy`]).
//!
//! Data dir layout:
//!
//! ```text
//! <data_dir>/runtime/          the runtime's data dir (sandboxes' overlays and state)
//!            layers/base/      the base template layer
//!            layers/<tpl>/<build>/  the layer of each template build
//!            templates/<tpl>/  built templates: record, builds, build logs
//!            records/<id>.json the control plane's record of each sandbox
//!            api-keys.json     hashed API keys
//! ```
//!
//! Every sandbox runs courier-envd as its init, serving on the sandbox's control socket
//! (see [`crate::runtime::Runtime::connect_control`]); the host reaches it only through
//! that socket. A sandbox exists for the control plane once its
//! envd is ready and its record is saved; anything the runtime has without a record
//! (a crash mid-create) is killed at startup, and records without a live sandbox are
//! dropped, so nothing is leaked across restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::egress::{Egress, EgressRules, SandboxEgress};
use crate::envd_link::EnvdEndpoint;
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::limits::{Capacity, CapacityUsage, Reservation, ServerLimits};
use crate::runtime::{
    BindMount, IoLimits, Isolation, Limits, RecoverPolicy, Runtime, RuntimeConfig, SandboxSpec,
    SandboxStatus,
};
use crate::state::{
    NetworkRecord, RecordStore, SandboxRecord, SandboxState, SecretToken, new_sandbox_id,
    random_hex,
};
use crate::templates::{Template, Templates};
use crate::warm::{Shape, WarmPool, WarmSandbox};

/// The envd version reported to clients (the E2B envd whose features courier-envd has).
pub const ENVD_VERSION: &str = "0.6.13";
/// Where the envd binary is mounted inside each sandbox.
pub const ENVD_PATH: &str = "/usr/local/bin/courier-envd";
/// Default sandbox lifetime when a create request names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest timeout accepted (24 hours, like E2B's largest plan).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Default of [`ServerConfig::warm_sandboxes`].
pub const DEFAULT_WARM_SANDBOXES: usize = 1;
/// How long create waits for envd to answer `/health` (generous: loaded machines).
const ENVD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the deadline reaper looks at the sandboxes.
const REAPER_TICK: Duration = Duration::from_millis(500);

/// What a server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory (see the [module docs](self)).
    pub data_dir: PathBuf,
    /// The courier-envd binary run as each sandbox's init (bind-mounted read-only).
    pub envd_binary: PathBuf,
    /// The domain sandbox hosts live under (`<port>-<id>.<domain>`); returned to clients
    /// as `domain` when set.
    pub domain: Option<String>,
    /// A fixed API key accepted besides the hashed keys (development and tests).
    pub dev_api_key: Option<String>,
    /// The runtime helper program; `None` = the running executable (which must call
    /// [`crate::runtime::init::main_if_requested`] first thing).
    pub helper: Option<PathBuf>,
    /// The cgroup parent directory name; `None` = the runtime's default (`courier`).
    pub cgroup_parent: Option<String>,
    /// Operator-provided host directories bind-mounted into every sandbox (e.g. a local
    /// git mirror, or tools); empty by default. See [`SharedDir`].
    pub shared_dirs: Vec<SharedDir>,
    /// How long a template's ready command may take to succeed in a new sandbox (and at
    /// the end of its build); default [`crate::templates::build::READY_TIMEOUT`].
    pub template_ready_timeout: Duration,
    /// How sandboxes are isolated unless their template says otherwise; `None` = gVisor
    /// where runsc is installed and works, else container (the reason is logged).
    pub isolation: Option<Isolation>,
    /// The runsc program; `None` = found on `PATH`.
    pub runsc: Option<PathBuf>,
    /// Let sandboxes create namespaces of their own (nested user namespaces); off by
    /// default (see [`crate::runtime::seccomp`]).
    pub nested_namespaces: bool,
    /// Disks kept ready per disk size in use, so creates skip preparing one (default
    /// [`crate::runtime::DEFAULT_READY_DISKS`]; 0 turns it off).
    pub ready_disks: usize,
    /// gVisor sandboxes kept started per recently created shape (template, memory, CPUs,
    /// internet), for creates to take instead of waiting ~0.2 s for runsc; default
    /// [`DEFAULT_WARM_SANDBOXES`], 0 turns it off. See [`crate::warm`].
    pub warm_sandboxes: usize,
    /// I/O throttles on each sandbox's disk.
    pub io: IoLimits,
    /// Server-wide capacity, template build deadlines and upload caps (see
    /// [`crate::limits`]); defaults documented on [`ServerLimits::default`].
    pub limits: ServerLimits,
    /// Internal ranges networked sandboxes may reach anyway (loopback, link-local,
    /// private, CGNAT, the host's own addresses... are refused otherwise; see
    /// [`crate::egress`]). Empty by default. A sandbox's own `denyOut` still applies.
    pub egress_allow: Vec<crate::egress::Cidr>,
}

/// An operator-provided host directory bind-mounted into every sandbox at create.
///
/// This is how an operator hands sandboxes host resources without any network: a local
/// git mirror (`file://` remotes), a directory of tools, a package cache. Whatever
/// is shared is visible to every sandbox (and writable by them unless `read_only`), so
/// share only what all sandboxes may see; never the data dir.
///
/// Ownership: files of host uid/gid 1000 are the sandbox `user`'s and every other host
/// id appears as `nobody`, so make what sandboxes should write belong to host uid 1000;
/// what a sandbox's root writes there belongs to host `nobody`, never to host root.
///
/// ```
/// use courier_sandboxd::{ServerConfig, SharedDir};
/// let mut config = ServerConfig::new("/var/lib/courier-sandboxd", "/usr/local/bin/courier-envd");
/// config.shared_dirs.push(SharedDir {
///     host: "/srv/git".into(),
///     sandbox: "/srv/git".into(),
///     read_only: false,
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir {
    /// Absolute host path (a directory, or a file).
    pub host: PathBuf,
    /// Absolute path inside each sandbox (created if missing).
    pub sandbox: PathBuf,
    /// Mount it read-only.
    pub read_only: bool,
}

impl ServerConfig {
    /// A configuration with no domain, no dev key, the default helper and cgroup parent.
    pub fn new(data_dir: impl Into<PathBuf>, envd_binary: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            envd_binary: envd_binary.into(),
            domain: None,
            dev_api_key: None,
            helper: None,
            cgroup_parent: None,
            shared_dirs: Vec::new(),
            template_ready_timeout: crate::templates::build::READY_TIMEOUT,
            isolation: None,
            runsc: None,
            nested_namespaces: false,
            ready_disks: crate::runtime::DEFAULT_READY_DISKS,
            warm_sandboxes: DEFAULT_WARM_SANDBOXES,
            io: IoLimits::standard(),
            limits: ServerLimits::default(),
            egress_allow: Vec::new(),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Template id or alias.
    pub template: String,
    /// Lifetime from now.
    pub timeout: Duration,
    /// User metadata (returned by get/list, usable as a list filter).
    pub metadata: BTreeMap<String, String>,
    /// Environment variables for every process envd starts.
    pub env_vars: BTreeMap<String, String>,
    /// Pause instead of kill at the deadline.
    pub auto_pause: bool,
    /// Memory limit in MiB; `None` = the template's.
    pub memory_mb: Option<u64>,
    /// CPU count; `None` = the template's.
    pub cpu_count: Option<u32>,
    /// Outbound internet (slirp4netns); without it the sandbox has only loopback. Also
    /// off when [`egress`](Self::egress) denies all traffic.
    pub allow_internet: bool,
    /// Kill the sandbox when this server's process exits (template build sandboxes).
    pub die_with_server: bool,
    /// E2B's egress rules (`network.allowOut`/`denyOut`) on top of the server's internal
    /// ranges; default none (everything but internal destinations).
    pub egress: EgressRules,
    /// Whether the sandbox's ports other than envd's are reachable without its traffic
    /// access token (E2B's `network.allowPublicTraffic`, default true).
    pub allow_public_traffic: bool,
}

impl Default for CreateRequest {
    fn default() -> Self {
        Self {
            template: crate::templates::BASE_TEMPLATE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            metadata: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            auto_pause: false,
            memory_mb: None,
            cpu_count: None,
            allow_internet: false,
            die_with_server: false,
            egress: EgressRules::default(),
            allow_public_traffic: true,
        }
    }
}

/// One metrics sample of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// When it was taken.
    pub timestamp: DateTime<Utc>,
    /// CPU quota in CPUs.
    pub cpu_count: u32,
    /// CPU use since the previous sample (or since start), percent of the quota.
    pub cpu_used_pct: f64,
    /// Memory charged to the sandbox's cgroup, bytes.
    pub mem_used: u64,
    /// Its memory limit, bytes.
    pub mem_total: u64,
    /// Bytes written to the sandbox's own layer.
    pub disk_used: u64,
    /// Disk size reported for the sandbox, bytes.
    pub disk_total: u64,
}

/// A sandbox the control plane knows about.
pub(crate) struct Entry {
    pub(crate) id: String,
    /// Serializes pause, resume and kill of this sandbox.
    op: tokio::sync::Mutex<()>,
    record: Mutex<SandboxRecord>,
    /// Cancelled when the sandbox is paused or killed: cuts every proxied connection.
    alive: Mutex<CancellationToken>,
    pub(crate) envd: EnvdEndpoint,
    cpu_sample: Mutex<Option<(Instant, u64)>>,
    /// Set while the reaper acts on the deadline, so one expiry is handled once.
    expiring: AtomicBool,
    /// Its share of the server's capacity, released when it is killed.
    reservation: Reservation,
    /// The sandbox's egress policy (its slirp4netns supervisor reads it; network updates
    /// replace its rules).
    pub(crate) egress: SandboxEgress,
}

impl Entry {
    fn new(
        record: SandboxRecord,
        envd: EnvdEndpoint,
        reservation: Reservation,
        egress: SandboxEgress,
    ) -> Self {
        Self {
            reservation,
            egress,
            id: record.sandbox_id.clone(),
            op: tokio::sync::Mutex::new(()),
            record: Mutex::new(record),
            alive: Mutex::new(CancellationToken::new()),
            envd,
            cpu_sample: Mutex::new(None),
            expiring: AtomicBool::new(false),
        }
    }

    pub(crate) fn record(&self) -> SandboxRecord {
        self.record.lock().expect("record lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut SandboxRecord)) -> SandboxRecord {
        let mut record = self.record.lock().expect("record lock");
        f(&mut record);
        record.clone()
    }

    /// The token of the current run; `None` when paused.
    pub(crate) fn alive(&self) -> Option<CancellationToken> {
        let record = self.record.lock().expect("record lock");
        (record.state == SandboxState::Running)
            .then(|| self.alive.lock().expect("alive lock").clone())
    }

    fn cut(&self) {
        self.alive.lock().expect("alive lock").cancel();
    }

    fn renew(&self) {
        *self.alive.lock().expect("alive lock") = CancellationToken::new();
    }
}

/// A started sandbox: what a create, or the warm pool, keeps of it.
struct Started {
    id: String,
    envd: EnvdEndpoint,
    egress: SandboxEgress,
    reservation: Reservation,
}

/// What [`Sandboxd::start_sandbox`] starts.
struct StartPlan<'a> {
    template: &'a Template,
    shape: &'a Shape,
    isolation: Isolation,
    /// Its egress rules (E2B's `allowOut`/`denyOut`).
    rules: crate::egress::EgressRules,
    reservation: Reservation,
    die_with_server: bool,
}

struct Inner {
    config: ServerConfig,
    runtime: Arc<Runtime>,
    /// How sandboxes are isolated unless their template says otherwise.
    isolation: Isolation,
    records: RecordStore,
    templates: Templates,
    keys: KeyStore,
    capacity: Capacity,
    sandboxes: Mutex<HashMap<String, Arc<Entry>>>,
    /// Sandboxes started ahead of creates (see [`crate::warm`]).
    warm: WarmPool<Started>,
    shutdown: CancellationToken,
    /// Egress settings shared by every sandbox (operator allow list, domain proxy).
    egress: Egress,
    /// Held for the server's lifetime (see `start`).
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The local E2B-compatible control plane. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Sandboxd {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandboxd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxd")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Sys {
            op: "blocking task".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn end_at(timeout: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX)
}

fn check_timeout(field: &'static str, timeout: Duration) -> Result<()> {
    if timeout > MAX_TIMEOUT {
        return Err(Error::InvalidSpec {
            field,
            reason: format!("must be at most {} seconds", MAX_TIMEOUT.as_secs()),
        });
    }
    Ok(())
}

impl Sandboxd {
    /// Opens the data dir, assembles the `base` template, finds the sandboxes a previous
    /// run left (keeping those that still run and have a record, reaping the rest) and
    /// starts the deadline reaper. Must run inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        if !config.envd_binary.is_file() {
            return Err(Error::Config(format!(
                "envd binary {} not found (pass --envd-binary)",
                config.envd_binary.display()
            )));
        }
        for shared in &config.shared_dirs {
            if !shared.host.is_absolute() || !shared.sandbox.is_absolute() {
                return Err(Error::Config(format!(
                    "shared dir {} -> {}: both paths must be absolute",
                    shared.host.display(),
                    shared.sandbox.display()
                )));
            }
            if !shared.host.exists() {
                return Err(Error::Config(format!(
                    "shared dir {} not found",
                    shared.host.display()
                )));
            }
        }
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(Error::io("create dir", &data_dir))?;
        // Records hold envd tokens: only root may look inside.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::io("chmod", &data_dir))?;
        }
        // One server per data dir: a second one would adopt, and kill as record-less,
        // the first one's sandboxes.
        let lock_path = data_dir.join("lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
                Error::Config(format!(
                    "data dir {} is in use by another courier-sandboxd",
                    data_dir.display()
                ))
            })?;
        let cfg = config.clone();
        let (runtime, templates, adopted, isolation) = blocking(move || {
            let mut rc = RuntimeConfig::new(cfg.data_dir.join("runtime"));
            if let Some(helper) = &cfg.helper {
                rc.helper = helper.clone();
            }
            if let Some(parent) = &cfg.cgroup_parent {
                rc.cgroup_parent = parent.clone();
            }
            let (runsc, isolation) = choose_isolation(&cfg)?;
            rc.runsc = runsc;
            rc.ready_disks = cfg.ready_disks;
            let runtime = Runtime::with_config(rc)?;
            let report = runtime.recover(RecoverPolicy::Adopt)?;
            runtime.prewarm_disks(crate::runtime::DEFAULT_DISK_MB);
            runtime.preload(&cfg.envd_binary);
            for (id, e) in &report.failed {
                tracing::warn!(sandbox = %id, error = %e, "could not clean up a sandbox from the previous run");
            }
            let templates = Templates::open(&cfg.data_dir)?;
            let adopted: HashSet<String> = report.adopted.into_iter().map(|h| h.id).collect();
            Ok((runtime, templates, adopted, isolation))
        })
        .await?;
        let runtime = Arc::new(runtime);
        let records = RecordStore::open(data_dir.join("records"))?;
        let egress = Egress::new(config.egress_allow.clone());
        let keys = KeyStore::load(&data_dir, config.dev_api_key.as_deref())?;
        let capacity = Capacity::new(config.limits.max_sandboxes, config.limits.memory_limit_mb());
        let mut sandboxes = HashMap::new();
        for record in records.load_all()? {
            let id = record.sandbox_id.clone();
            if !adopted.contains(&id) {
                tracing::info!(sandbox = %id, "dropping the record of a sandbox that no longer runs");
                records.remove(&id)?;
                continue;
            }
            // Make the runtime agree with the record (a crash may have come mid-pause).
            let rt = runtime.clone();
            let want = record.state;
            let rid = id.clone();
            let aligned = blocking(move || match (want, rt.status(&rid)?) {
                (SandboxState::Running, SandboxStatus::Frozen) => rt.thaw(&rid),
                (SandboxState::Paused, SandboxStatus::Running) => rt.freeze(&rid),
                (_, SandboxStatus::Exited) => Err(Error::NotRunning(rid)),
                _ => Ok(()),
            })
            .await;
            if let Err(e) = aligned {
                tracing::warn!(sandbox = %id, error = %e, "killing a recovered sandbox");
                let rt = runtime.clone();
                let kid = id.clone();
                let _ = blocking(move || rt.kill(&kid)).await;
                records.remove(&id)?;
                continue;
            }
            tracing::info!(sandbox = %id, state = record.state.as_str(), "recovered sandbox");
            let envd = EnvdEndpoint::new(runtime.clone(), id.clone());
            let reservation = capacity.adopt(record.memory_mb);
            let sandbox_egress = egress.sandbox(&id, recorded_rules(&record));
            if record.allow_internet_requested {
                // Its slirp4netns answered to the previous server's supervisor, which is
                // gone: it can open nothing new until a fresh one is attached.
                let rt = runtime.clone();
                let (rid, eg) = (id.clone(), sandbox_egress.clone());
                if let Err(e) = blocking(move || rt.reattach_network(&rid, &eg)).await {
                    tracing::warn!(sandbox = %id, error = %e, "could not re-attach the sandbox's network; its outbound access stays closed");
                }
            }
            sandboxes.insert(
                id,
                Arc::new(Entry::new(record, envd, reservation, sandbox_egress)),
            );
        }
        for id in &adopted {
            if !sandboxes.contains_key(id) {
                tracing::info!(sandbox = %id, "killing a sandbox without a record");
                let rt = runtime.clone();
                let kid = id.clone();
                if let Err(e) = blocking(move || rt.kill(&kid)).await {
                    tracing::warn!(sandbox = %id, error = %e, "kill failed");
                }
            }
        }
        // Left by versions that kept envd's socket in a directory the sandbox could write.
        let _ = std::fs::remove_dir_all(data_dir.join("envd"));
        let warm_sandboxes = config.warm_sandboxes;
        let server = Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                isolation,
                records,
                templates,
                keys,
                capacity,
                sandboxes: Mutex::new(sandboxes),
                warm: WarmPool::new(warm_sandboxes),
                shutdown: CancellationToken::new(),
                egress,
                _lock: lock,
            }),
        };
        crate::templates::build::kill_build_sandboxes(&server).await;
        server.collect_layer_garbage().await;
        tokio::spawn(reaper(Arc::downgrade(&server.inner)));
        Ok(server)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The templates it offers.
    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    /// The accepted API keys.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// Sandboxes and committed memory in use against the server's limits.
    pub fn capacity(&self) -> CapacityUsage {
        self.inner.capacity.usage()
    }

    /// The sandbox runtime underneath.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// How sandboxes are isolated unless their template says otherwise.
    pub fn default_isolation(&self) -> Isolation {
        self.inner.isolation
    }

    pub(crate) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.inner
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .get(id)
            .cloned()
    }

    fn entry_or_404(&self, id: &str) -> Result<Arc<Entry>> {
        self.entry(id).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn still_known(&self, entry: &Arc<Entry>) -> bool {
        self.entry(&entry.id)
            .is_some_and(|current| Arc::ptr_eq(&current, entry))
    }

    /// Creates a sandbox and returns once its envd is ready.
    pub async fn create(&self, request: CreateRequest) -> Result<SandboxRecord> {
        check_timeout("timeout", request.timeout)?;
        let template = self
            .inner
            .templates
            .resolve(&request.template)
            .ok_or_else(|| Error::UnknownTemplate(request.template.clone()))?;
        let memory_mb = request.memory_mb.unwrap_or(template.memory_mb);
        let cpu_count = request.cpu_count.unwrap_or(template.cpu_count);
        if !(128..=65_536).contains(&memory_mb) {
            return Err(Error::InvalidSpec {
                field: "memoryMB",
                reason: "must be 128..=65536".to_owned(),
            });
        }
        if !(1..=64).contains(&cpu_count) {
            return Err(Error::InvalidSpec {
                field: "cpuCount",
                reason: "must be 1..=64".to_owned(),
            });
        }
        // Outbound access only when the rules let something out: a sandbox whose rules
        // deny everything gets no interface at all.
        let internet = request.allow_internet && request.egress.allows_any_traffic();
        let isolation = template.isolation.unwrap_or(self.inner.isolation);
        let shape = Shape {
            template: template.id.clone(),
            build: template.build_id.clone(),
            memory_mb,
            cpu_count,
            internet,
        };
        // Template build sandboxes die with the server; only gVisor's slow start is
        // worth a sandbox kept running ahead (see crate::warm).
        let poolable = isolation == Isolation::Gvisor && !request.die_with_server;
        let clock = Instant::now();
        let warm = match poolable.then(|| self.inner.warm.take(&shape)).flatten() {
            Some(warm) => self.claim_warm(warm, &request.egress).await,
            None => None,
        };
        let from_pool = warm.is_some();
        let started = match warm {
            Some(started) => started,
            None => {
                // Before anything is made: a create past the server's capacity leaves
                // nothing behind (dropped, i.e. released, on every early return below).
                // A warm sandbox's share goes to a create that would not fit otherwise.
                let reservation = match self.inner.capacity.reserve(memory_mb) {
                    Ok(reservation) => reservation,
                    Err(full) => match self.inner.warm.take_any() {
                        Some(warm) => {
                            self.destroy(&warm.id).await;
                            // Its reservation goes with it, before the second try.
                            drop(warm);
                            self.inner.capacity.reserve(memory_mb)?
                        }
                        None => return Err(full.into()),
                    },
                };
                self.start_sandbox(StartPlan {
                    template: &template,
                    shape: &shape,
                    isolation,
                    rules: request.egress.clone(),
                    reservation,
                    die_with_server: request.die_with_server,
                })
                .await?
            }
        };
        let Started {
            id,
            envd,
            egress: sandbox_egress,
            reservation,
        } = started;
        let token = random_hex(32);
        if let Err(e) = self
            .init_sandbox(&id, &token, &envd, &request, &template)
            .await
        {
            self.destroy(&id).await;
            return Err(e);
        }
        tracing::debug!(
            sandbox = %id,
            from_pool,
            envd_ready_ms = clock.elapsed().as_secs_f64() * 1e3,
            "sandbox created"
        );
        if poolable {
            self.keep_warm(shape, template.clone(), isolation);
        }
        let now = Utc::now();
        let record = SandboxRecord {
            sandbox_id: id.clone(),
            template_id: template.id.clone(),
            alias: template
                .aliases
                .iter()
                .find(|a| **a == request.template)
                .or(template.aliases.first())
                .cloned(),
            envd_access_token: token,
            started_at: now,
            end_at: end_at(request.timeout),
            metadata: request.metadata,
            cpu_count,
            memory_mb,
            disk_size_mb: template.disk_size_mb,
            state: SandboxState::Running,
            auto_pause: request.auto_pause,
            allow_internet_requested: internet,
            network: NetworkRecord {
                allow_out: request.egress.allow_out().to_vec(),
                deny_out: request.egress.deny_out().to_vec(),
                allow_public_traffic: request.allow_public_traffic,
            },
            traffic_access_token: (!request.allow_public_traffic)
                .then(|| SecretToken::new(random_hex(32))),
        };
        if let Err(e) = self.inner.records.save(&record) {
            self.destroy(&id).await;
            return Err(e);
        }
        self.inner.sandboxes.lock().expect("sandboxes lock").insert(
            id,
            Arc::new(Entry::new(
                record.clone(),
                envd,
                reservation,
                sandbox_egress,
            )),
        );
        Ok(record)
    }

    /// Makes a warm sandbox the create's: it outlives the server from now on, and its
    /// egress rules are the create's before anything of the tenant's runs. `None` (the
    /// sandbox killed) when that fails: the create starts one of its own.
    async fn claim_warm(
        &self,
        warm: WarmSandbox<Started>,
        rules: &crate::egress::EgressRules,
    ) -> Option<Started> {
        warm.started.egress.set_rules(rules.clone());
        let runtime = self.inner.runtime.clone();
        let id = warm.id.clone();
        match blocking(move || runtime.outlive_runtime(&id)).await {
            Ok(()) => Some(warm.started),
            Err(error) => {
                tracing::warn!(sandbox = %warm.id, %error, "taking a warm sandbox");
                self.destroy(&warm.id).await;
                None
            }
        }
    }

    /// Starts a sandbox of `plan`'s shape under a new id and waits for its envd (not yet
    /// initialised: no token, no environment). Cleans up after itself on failure.
    async fn start_sandbox(&self, plan: StartPlan<'_>) -> Result<Started> {
        let StartPlan {
            template,
            shape,
            isolation,
            rules,
            reservation,
            die_with_server,
        } = plan;
        let id = new_sandbox_id();
        let egress = self.inner.egress.sandbox(&id, rules);
        let mut args = match isolation {
            Isolation::Container => vec![
                "--listen-fd".to_owned(),
                crate::runtime::init::INIT_CONTROL_FD.to_string(),
            ],
            Isolation::Gvisor => vec![
                "--socket".to_owned(),
                format!("{}/envd.sock", crate::runtime::GVISOR_CONTROL_DIR),
            ],
        };
        args.extend([
            "--default-user".to_owned(),
            crate::base_layer::USER.to_owned(),
        ]);
        if isolation == Isolation::Gvisor {
            // gVisor ignores setuid bits: envd brokers `sudo` instead (see
            // courier_envd::sudo), its client bound over the sandbox's sudo below.
            args.push("--sudo-socket".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spec = SandboxSpec::new(id.clone(), template.layers.clone(), ENVD_PATH, &args);
        // The access token is installed with `/init`, not in envd's environment, so it is
        // not inherited by the processes envd starts.
        spec.env.insert("HOME".to_owned(), "/root".to_owned());
        spec.env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        spec.env.insert("RUST_LOG".to_owned(), "warn".to_owned());
        spec.limits = Limits {
            memory_mb: shape.memory_mb,
            cpu_count: f64::from(shape.cpu_count),
            pids: 4096,
        };
        spec.allow_internet = shape.internet;
        spec.egress = egress.clone();
        spec.isolation = isolation;
        spec.disk_mb = template.disk_size_mb;
        spec.io = self.inner.config.io;
        spec.nested_namespaces = self.inner.config.nested_namespaces;
        spec.control_socket = true;
        spec.die_with_runtime = die_with_server;
        spec.binds = vec![BindMount {
            source: self.inner.config.envd_binary.clone(),
            target: PathBuf::from(ENVD_PATH),
            readonly: true,
            map_user: false,
        }];
        if isolation == Isolation::Gvisor {
            // The envd binary run as `sudo` is the broker's client; over both places a
            // script may name sudo by.
            for target in ["/usr/local/bin/sudo", "/usr/bin/sudo"] {
                spec.binds.push(BindMount {
                    source: self.inner.config.envd_binary.clone(),
                    target: PathBuf::from(target),
                    readonly: true,
                    map_user: false,
                });
            }
        }
        spec.binds.extend(
            self.inner
                .config
                .shared_dirs
                .iter()
                .map(|shared| BindMount {
                    source: shared.host.clone(),
                    target: shared.sandbox.clone(),
                    readonly: shared.read_only,
                    map_user: true,
                }),
        );

        let runtime = self.inner.runtime.clone();
        let clock = Instant::now();
        blocking(move || runtime.create(spec)).await?;
        let envd = EnvdEndpoint::new(self.inner.runtime.clone(), id.clone());
        let runtime_done = clock.elapsed();
        let runtime = self.inner.runtime.clone();
        let rid = id.clone();
        let ready = crate::envd_link::wait_healthy(&envd, ENVD_READY_TIMEOUT, move || {
            !matches!(runtime.status(&rid), Ok(SandboxStatus::Exited) | Err(_))
        })
        .await;
        if let Err(message) = ready {
            self.destroy(&id).await;
            return Err(Error::Envd { id, message });
        }
        tracing::debug!(
            sandbox = %id,
            runtime_ms = runtime_done.as_secs_f64() * 1e3,
            envd_ready_ms = clock.elapsed().as_secs_f64() * 1e3,
            "sandbox started"
        );
        Ok(Started {
            id,
            envd,
            egress,
            reservation,
        })
    }

    /// Starts a sandbox of `shape` for the warm pool in the background, unless the pool
    /// has its share of that shape (or is starting one). Also kills warm sandboxes whose
    /// template changed since.
    fn keep_warm(&self, shape: Shape, template: Template, isolation: Isolation) {
        if self.inner.shutdown.is_cancelled() || !self.inner.warm.wants(&shape) {
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            server.drop_stale_warm().await;
            // Only into room the server has: a warm sandbox never makes a create wait.
            let Ok(reservation) = server.inner.capacity.reserve(shape.memory_mb) else {
                server.inner.warm.failed(&shape);
                return;
            };
            let started = server
                .start_sandbox(StartPlan {
                    template: &template,
                    shape: &shape,
                    isolation,
                    // Replaced by the create's own before anything of its runs.
                    rules: crate::egress::EgressRules::default(),
                    reservation,
                    // Until a create takes it: a warm sandbox never outlives its server.
                    die_with_server: true,
                })
                .await;
            match started {
                Ok(started) if !server.inner.shutdown.is_cancelled() => {
                    let evicted = server.inner.warm.put(WarmSandbox {
                        id: started.id.clone(),
                        shape,
                        started,
                    });
                    for warm in evicted {
                        server.destroy(&warm.id).await;
                    }
                }
                Ok(started) => {
                    server.inner.warm.failed(&shape);
                    server.destroy(&started.id).await;
                }
                Err(error) => {
                    server.inner.warm.failed(&shape);
                    tracing::warn!(%error, template = %shape.template, "starting a warm sandbox");
                }
            }
        });
    }

    /// Kills the warm sandboxes of templates deleted or rebuilt since they started: no
    /// create would take them.
    pub(crate) async fn drop_stale_warm(&self) {
        let stale = self.inner.warm.remove_stale(|s| {
            self.inner
                .templates
                .resolve(&s.template)
                .is_none_or(|t| t.build_id != s.build)
        });
        for warm in stale {
            self.destroy(&warm.id).await;
        }
    }

    /// Ids of the sandboxes started ahead of creates (see [`crate::warm`]): running, but
    /// no sandbox of the API's until a create takes one.
    pub fn warm_sandboxes(&self) -> Vec<String> {
        self.inner.warm.ids()
    }

    /// Replaces sandbox `id`'s egress rules (E2B's `PUT /sandboxes/{id}/network`): every
    /// connection it opens from now on is decided by `rules`; established ones stay.
    /// [`Error::Conflict`] when the rules would let traffic out of a sandbox created
    /// without internet access: it has no outbound interface to open.
    pub fn update_network(&self, id: &str, rules: EgressRules) -> Result<SandboxRecord> {
        let entry = self.entry_or_404(id)?;
        let record = entry.record();
        if !record.allow_internet_requested && rules.allows_any_traffic() {
            return Err(Error::Conflict(format!(
                "sandbox {id} was created without internet access, so it has no outbound \
                 interface and its egress rules can only deny; create the sandbox with \
                 allow_internet_access or network rules that allow traffic to change them \
                 later"
            )));
        }
        entry.egress.set_rules(rules.clone());
        let record = entry.update(|r| {
            r.network.allow_out = rules.allow_out().to_vec();
            r.network.deny_out = rules.deny_out().to_vec();
        });
        self.inner.records.save(&record)?;
        Ok(record)
    }

    /// Sandbox `id`'s egress policy handle (what its slirp4netns supervisor enforces), for
    /// re-attaching its network after a restart.
    pub fn sandbox_egress(&self, id: &str) -> Result<SandboxEgress> {
        Ok(self.entry_or_404(id)?.egress.clone())
    }

    /// `POST /init` (environment, token, user, workdir) and the template's start and
    /// ready commands: what makes a started sandbox the create's.
    async fn init_sandbox(
        &self,
        id: &str,
        token: &str,
        envd: &EnvdEndpoint,
        request: &CreateRequest,
        template: &Template,
    ) -> Result<()> {
        // A built template's environment, user and workdir (from its recipe's ENV, USER
        // and WORKDIR steps) are the defaults; the request's variables win.
        let mut env_vars = template.envs.clone();
        env_vars.extend(request.env_vars.clone());
        let user = template.user.as_deref().unwrap_or(crate::base_layer::USER);
        let workdir = template.workdir.clone().unwrap_or_else(|| {
            if user == "root" {
                "/root".to_owned()
            } else {
                format!("/home/{user}")
            }
        });
        let body = serde_json::json!({
            "envVars": env_vars,
            "accessToken": token,
            "defaultUser": user,
            "defaultWorkdir": workdir,
        });
        crate::envd_link::init(envd, token, &body)
            .await
            .map_err(|message| Error::Envd {
                id: id.to_owned(),
                message,
            })?;
        let timeout = self.inner.config.template_ready_timeout;
        crate::templates::build::start_template_processes(envd, token, template, timeout)
            .await
            .map_err(|message| Error::Envd {
                id: id.to_owned(),
                message,
            })
    }

    /// Removes template layers nothing uses any more (older builds of rebuilt
    /// templates once their last sandbox is gone).
    pub(crate) async fn collect_layer_garbage(&self) {
        let server = self.clone();
        let removed = blocking(move || {
            let in_use = server.inner.runtime.layers_in_use();
            Ok(server.templates().collect_garbage(&in_use))
        })
        .await
        .unwrap_or_default();
        for layer in removed {
            tracing::info!(layer = %layer.display(), "removed an unused template layer");
        }
    }

    /// Kills the runtime sandbox `id` and removes its record and socket directory.
    async fn destroy(&self, id: &str) {
        let runtime = self.inner.runtime.clone();
        let kid = id.to_owned();
        match blocking(move || runtime.kill(&kid)).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "kill failed"),
        }
        self.collect_layer_garbage().await;
        if let Err(e) = self.inner.records.remove(id) {
            tracing::warn!(sandbox = %id, error = %e, "removing the record failed");
        }
    }

    /// The record of sandbox `id`.
    pub fn get(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.entry_or_404(id)?.record())
    }

    /// Records of all sandboxes (running and paused), unordered.
    pub fn list(&self) -> Vec<SandboxRecord> {
        let entries: Vec<Arc<Entry>> = self
            .inner
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .values()
            .cloned()
            .collect();
        entries.iter().map(|e| e.record()).collect()
    }

    /// Kills sandbox `id`: its in-flight proxied streams are cut, its processes, mounts,
    /// cgroups, record and socket directory removed.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let entry = self
            .inner
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .remove(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let _op = entry.op.lock().await;
        entry.cut();
        self.destroy(id).await;
        entry.reservation.release();
        Ok(())
    }

    /// Kills every sandbox (at shutdown, when sandboxes must not outlive the server),
    /// the warm ones too.
    pub async fn kill_all(&self) {
        for warm in self.inner.warm.drain() {
            self.destroy(&warm.id).await;
        }
        let ids: Vec<String> = self
            .inner
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            match self.kill(&id).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(error) => tracing::warn!(sandbox = %id, %error, "killing at shutdown"),
            }
        }
    }

    /// Pauses (freezes) sandbox `id`, cutting its proxied streams. [`Error::Conflict`]
    /// when it is already paused.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let entry = self.entry_or_404(id)?;
        let _op = entry.op.lock().await;
        if !self.still_known(&entry) {
            return Err(Error::NotFound(id.to_owned()));
        }
        if entry.record().state == SandboxState::Paused {
            return Err(Error::Conflict(format!("sandbox {id} is already paused")));
        }
        entry.cut();
        let runtime = self.inner.runtime.clone();
        let fid = id.to_owned();
        blocking(move || runtime.freeze(&fid)).await?;
        let record = entry.update(|r| r.state = SandboxState::Paused);
        self.inner.records.save(&record)
    }

    /// Connects to sandbox `id`: a running one gets its deadline extended to at least
    /// `now + timeout` (never shortened); a paused one is resumed with deadline
    /// `now + timeout`. Returns the record and whether it was resumed.
    pub async fn connect(&self, id: &str, timeout: Duration) -> Result<(SandboxRecord, bool)> {
        check_timeout("timeout", timeout)?;
        let entry = self.entry_or_404(id)?;
        let _op = entry.op.lock().await;
        if !self.still_known(&entry) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let new_end = end_at(timeout);
        if entry.record().state == SandboxState::Running {
            let record = entry.update(|r| r.end_at = r.end_at.max(new_end));
            self.inner.records.save(&record)?;
            return Ok((record, false));
        }
        let runtime = self.inner.runtime.clone();
        let tid = id.to_owned();
        blocking(move || runtime.thaw(&tid)).await?;
        entry.renew();
        entry.expiring.store(false, Ordering::SeqCst);
        let record = entry.update(|r| {
            r.state = SandboxState::Running;
            r.end_at = new_end;
        });
        self.inner.records.save(&record)?;
        Ok((record, true))
    }

    /// Sets the deadline of sandbox `id` to `now + timeout` (may shorten it).
    pub fn set_timeout(&self, id: &str, timeout: Duration) -> Result<()> {
        check_timeout("timeout", timeout)?;
        let entry = self.entry_or_404(id)?;
        let record = entry.update(|r| r.end_at = end_at(timeout));
        self.inner.records.save(&record)
    }

    /// Extends the deadline of sandbox `id` to at least `now + duration`.
    pub fn refresh(&self, id: &str, duration: Duration) -> Result<()> {
        let entry = self.entry_or_404(id)?;
        let new_end = end_at(duration);
        let record = entry.update(|r| r.end_at = r.end_at.max(new_end));
        self.inner.records.save(&record)
    }

    /// A metrics sample of sandbox `id`, read from its cgroup and its writable layer.
    pub async fn metrics(&self, id: &str) -> Result<Metric> {
        let entry = self.entry_or_404(id)?;
        let runtime = self.inner.runtime.clone();
        let sid = id.to_owned();
        let (stats, (disk_used, disk_total)) =
            blocking(move || Ok((runtime.stats(&sid)?, runtime.disk_usage(&sid)?))).await?;
        let record = entry.record();
        let now = Instant::now();
        let cpu_used_pct = {
            let mut sample = entry.cpu_sample.lock().expect("cpu lock");
            let (since, base) = sample.unwrap_or_else(|| {
                let age = (Utc::now() - record.started_at)
                    .to_std()
                    .unwrap_or_default();
                (now.checked_sub(age).unwrap_or(now), 0)
            });
            *sample = Some((now, stats.cpu_usage_ns));
            let wall = now.duration_since(since).as_nanos() as f64;
            if wall <= 0.0 {
                0.0
            } else {
                let used = stats.cpu_usage_ns.saturating_sub(base) as f64;
                (used / wall / f64::from(record.cpu_count) * 100.0).clamp(0.0, 100.0)
            }
        };
        Ok(Metric {
            timestamp: Utc::now(),
            cpu_count: record.cpu_count,
            cpu_used_pct,
            mem_used: stats.memory_bytes,
            mem_total: stats
                .memory_limit_bytes
                .unwrap_or(record.memory_mb * 1024 * 1024),
            disk_used,
            disk_total,
        })
    }

    /// Serves the REST API on `listener` until `shutdown` completes.
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, crate::api::router(self.clone()))
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves the sandbox proxy on `listener` until `shutdown` completes (open
    /// connections are dropped).
    pub async fn serve_proxy(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::proxy::serve(self.clone(), listener, shutdown).await
    }

    /// Stops the deadline reaper (sandboxes keep running; see [`kill_all`](Self::kill_all)).
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    async fn expire(&self, entry: Arc<Entry>) {
        let record = entry.record();
        let result = if record.auto_pause {
            tracing::info!(sandbox = %entry.id, "timeout reached: pausing");
            self.pause(&entry.id).await
        } else {
            tracing::info!(sandbox = %entry.id, "timeout reached: killing");
            self.kill(&entry.id).await
        };
        match result {
            Ok(()) | Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(sandbox = %entry.id, error = %e, "acting on the timeout failed");
                entry.expiring.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// Kills (or pauses) sandboxes at their deadline, and kills sandboxes whose envd died.
///
/// Paused sandboxes have no deadline, as on E2B: a paused sandbox is kept (frozen, its
/// memory held) until it is resumed, which gives it a new deadline, or killed.
async fn reaper(inner: Weak<Inner>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(REAPER_TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.shutdown.is_cancelled() {
            return;
        }
        let server = Sandboxd { inner };
        ticks += 1;
        let entries: Vec<Arc<Entry>> = server
            .inner
            .sandboxes
            .lock()
            .expect("sandboxes lock")
            .values()
            .cloned()
            .collect();
        let now = Utc::now();
        for entry in entries {
            let record = entry.record();
            let expired = record.state == SandboxState::Running && record.end_at <= now;
            // Every ~5 s: a sandbox whose init exited is dead for good; clean it up.
            let dead = ticks.is_multiple_of(10) && {
                let runtime = server.inner.runtime.clone();
                let id = entry.id.clone();
                matches!(
                    blocking(move || runtime.status(&id)).await,
                    Ok(SandboxStatus::Exited)
                )
            };
            if dead {
                tracing::warn!(sandbox = %entry.id, "envd exited: removing the sandbox");
                let _ = server.kill(&entry.id).await;
            } else if expired && !entry.expiring.swap(true, Ordering::SeqCst) {
                let server = server.clone();
                tokio::spawn(async move { server.expire(entry).await });
            }
        }
    }
}

/// The egress rules a record persisted. They were validated when they were stored; a
/// record that no longer parses (edited by hand) gets every outbound connection refused
/// rather than none.
fn recorded_rules(record: &SandboxRecord) -> EgressRules {
    EgressRules::parse(&record.network.allow_out, &record.network.deny_out, "network.")
        .unwrap_or_else(|e| {
            tracing::warn!(sandbox = %record.sandbox_id, error = %e, "unreadable egress rules in the record: denying all traffic");
            EgressRules::deny_all()
        })
}

/// Picks the default isolation: the operator's choice, or gVisor when runsc is installed
/// and works, else container. gVisor is offered (per template) whenever it works.
fn choose_isolation(
    config: &ServerConfig,
) -> Result<(Option<crate::runtime::RunscConfig>, Isolation)> {
    let program = config
        .runsc
        .clone()
        .or_else(crate::runtime::gvisor::find_runsc);
    let probed = match &program {
        Some(program) => {
            crate::runtime::gvisor::probe(program, &config.data_dir.join("runsc-probe"))
        }
        None => Err(crate::runtime::gvisor::ProbeError::NotInstalled),
    };
    match (config.isolation, probed) {
        (Some(Isolation::Gvisor), Err(why)) => Err(Error::Config(format!(
            "isolation gvisor was asked for but cannot be used: {why}"
        ))),
        (Some(choice), Ok(runsc)) => Ok((Some(runsc), choice)),
        (Some(choice), Err(_)) => Ok((None, choice)),
        (None, Ok(runsc)) => {
            tracing::info!(platform = %runsc.platform, "isolation: gvisor (runsc works here)");
            Ok((Some(runsc), Isolation::Gvisor))
        }
        (None, Err(why)) => {
            tracing::warn!(reason = %why, "isolation: container (gVisor unavailable)");
            Ok((None, Isolation::Container))
        }
    }
}
