//! The sandbox runtime: create, control and destroy sandboxes on this machine.
//!
//! A [`Runtime`] owns a data directory:
//!
//! ```text
//! <data_dir>/sandboxes/<id>/state.json      what `recover` needs after a restart
//!                           rootfs/         mount point of the overlay root (only
//!                                           mounted inside the sandbox's namespace)
//!                           upper/ work/    the sandbox's writable layer
//!                           hostdirs/<n>/   writable layers over host directories
//!                           console.log     the init's stdout and stderr
//!                           network.log     slirp4netns output (networked sandboxes)
//! ```
//!
//! and one cgroup per sandbox (`courier/<id>` in each hierarchy, see [`cgroup`]).
//! Invariants: a sandbox's processes are all in its cgroup from their first instruction;
//! its mounts exist only in its own mount namespace; after [`Runtime::kill`] or
//! [`Runtime::recover`] nothing of it is left (processes, cgroups, directories).
//!
//! The API is blocking (it waits for the kernel and for the helper); async callers wrap it
//! in `spawn_blocking`.

pub mod cgroup;
pub mod init;
mod layer_capture;
pub mod network;
pub mod rootfs;
mod sys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::mount::{MntFlags, umount2};

pub use cgroup::{CgroupDriver, CgroupStats, CgroupVersion, SandboxCgroup};
pub use rootfs::{BindMount, HostDir, LayerManifest};

use crate::error::{Error, Result};
use init::{HELPER_MARKER, HelperConfig, STATUS_FD};
use rootfs::{RootfsPlan, SandboxDirs};

/// Resource limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in MiB (swap is disabled where the kernel allows). 16..=1048576.
    pub memory_mb: u64,
    /// CPU quota in CPUs; fractions allowed (`0.5` = half a CPU). 0.01..=1024.
    pub cpu_count: f64,
    /// Maximum number of tasks (processes and threads), the runtime's own two included.
    /// 8..=4194304.
    pub pids: u64,
}

impl Default for Limits {
    /// 1024 MiB, 2 CPUs, 1024 tasks (the control plane's defaults).
    fn default() -> Self {
        Self {
            memory_mb: 1024,
            cpu_count: 2.0,
            pids: 1024,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::InvalidSpec {
                field,
                reason: reason.to_string(),
            })
        };
        if !(16..=1_048_576).contains(&self.memory_mb) {
            return bad("limits.memory_mb", "must be 16..=1048576");
        }
        if !(self.cpu_count.is_finite() && (0.01..=1024.0).contains(&self.cpu_count)) {
            return bad("limits.cpu_count", "must be 0.01..=1024");
        }
        if !(8..=4_194_304).contains(&self.pids) {
            return bad("limits.pids", "must be 8..=4194304");
        }
        Ok(())
    }
}

/// What to create.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SandboxSpec {
    /// Sandbox id: 1-64 of `[A-Za-z0-9_-]`. Also the default hostname.
    pub id: String,
    /// Read-only layers, bottom first (see [`rootfs`] for their layout). At least one.
    pub layers: Vec<PathBuf>,
    /// Absolute path of the init program *inside* the sandbox (bind it in with
    /// [`binds`](Self::binds) when it lives on the host, like courier-envd).
    pub init: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// The init's entire environment (nothing is inherited from the server).
    pub env: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Outbound network through slirp4netns (see [`network`]); without it the sandbox
    /// has only loopback. `true` fails with [`Error::Unsupported`] when slirp4netns is
    /// not installed.
    #[serde(default)]
    pub allow_internet: bool,
    /// The egress policy slirp4netns is held to when `allow_internet` is set (shared: the
    /// server may replace its rules live). Not persisted; default: no rules, internal
    /// destinations refused (see [`crate::egress`]).
    #[serde(skip)]
    pub egress: crate::egress::SandboxEgress,
    /// Hostname inside the sandbox; defaults to the id.
    pub hostname: Option<String>,
    /// Host paths bind-mounted into this sandbox only.
    pub binds: Vec<BindMount>,
    /// Working directory of the init; defaults to `/`.
    pub cwd: Option<PathBuf>,
}

impl SandboxSpec {
    /// A spec with default limits, no network, no binds, `PATH` set, running `init args`.
    pub fn new(
        id: impl Into<String>,
        layers: Vec<PathBuf>,
        init: impl Into<PathBuf>,
        args: &[&str],
    ) -> Self {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
        Self {
            id: id.into(),
            layers,
            init: init.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            limits: Limits::default(),
            allow_internet: false,
            egress: Default::default(),
            hostname: None,
            binds: Vec::new(),
            cwd: None,
        }
    }
}

/// `PATH` for processes started in a sandbox.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A created sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxHandle {
    /// The sandbox id.
    pub id: String,
    /// Host PID of the sandbox's PID 1 (the runtime's reaper; the init is its child).
    pub init_pid: i32,
    /// The init program's PID inside the sandbox.
    pub init_pid_in_sandbox: i32,
}

/// What a sandbox is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SandboxStatus {
    /// Its processes run.
    Running,
    /// Frozen by [`Runtime::freeze`]; memory kept.
    Frozen,
    /// Its init has exited; only [`Runtime::kill`] (cleanup) remains.
    Exited,
}

/// How [`Runtime::command_with`] runs a program inside a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// `(uid, gid)` to run as (no supplementary groups); `None` = root. The base layer's
    /// user is `(1000, 1000)`.
    pub user: Option<(u32, u32)>,
    /// Working directory inside the sandbox; `None` = `/`.
    pub cwd: Option<PathBuf>,
}

/// Whether [`Runtime::recover`] keeps sandboxes that still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverPolicy {
    /// Running sandboxes are registered again; dead or half-created ones are reaped.
    Adopt,
    /// Everything found is reaped.
    KillAll,
}

/// What [`Runtime::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sandboxes found running and registered again.
    pub adopted: Vec<SandboxHandle>,
    /// Ids of sandboxes whose processes, cgroups and directories were removed.
    pub reaped: Vec<String>,
    /// Sandboxes that could not be cleaned up completely, with the first error (a later
    /// `recover` or `kill` tries again).
    pub failed: Vec<(String, String)>,
}

/// Where the runtime keeps things and which program it re-executes as helper.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The data directory (created if missing). Sandboxes never see it.
    pub data_dir: PathBuf,
    /// The helper program; it must call [`init::main_if_requested`] first thing.
    /// Default `/proc/self/exe` (the running program).
    pub helper: PathBuf,
    /// Name of the directory under each cgroup hierarchy holding the sandboxes' cgroups.
    /// Runtimes sharing a host should share it only if they share the data dir.
    pub cgroup_parent: String,
}

impl RuntimeConfig {
    /// Defaults for `data_dir`: helper `/proc/self/exe`, cgroup parent `courier`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            helper: PathBuf::from("/proc/self/exe"),
            cgroup_parent: "courier".into(),
        }
    }
}

/// Persisted per-sandbox state (`state.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SandboxState {
    handle: SandboxHandle,
    /// `starttime` of the PID-1 process, to tell it from a recycled PID.
    init_start_time: u64,
    created_unix_ms: u128,
    spec: SandboxSpec,
}

struct Entry {
    state: SandboxState,
    cgroup: SandboxCgroup,
    /// The helper's monitor process when this runtime started it (reaped on kill).
    monitor: Option<Child>,
    /// slirp4netns when this runtime started it for outbound access (it lives in the
    /// sandbox's cgroup and dies with it; reaped on kill).
    network: Option<network::Attached>,
}

/// The sandbox runtime. See the [module docs](self).
pub struct Runtime {
    config: RuntimeConfig,
    cgroups: CgroupDriver,
    sandboxes: Mutex<HashMap<String, Entry>>,
    /// Ids being created right now (their directory exists but no state yet).
    creating: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("cgroups", &self.cgroups)
            .finish()
    }
}

impl Runtime {
    /// A runtime on `data_dir` with the default [`RuntimeConfig`].
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::with_config(RuntimeConfig::new(data_dir))
    }

    /// A runtime with an explicit configuration. Does not touch existing sandboxes; call
    /// [`recover`](Self::recover) at startup for that.
    pub fn with_config(config: RuntimeConfig) -> Result<Self> {
        let sandboxes_dir = config.data_dir.join("sandboxes");
        fs::create_dir_all(&sandboxes_dir).map_err(Error::io("create dir", &sandboxes_dir))?;
        let cgroups = CgroupDriver::detect_at(Path::new("/sys/fs/cgroup"), &config.cgroup_parent)?;
        Ok(Self {
            config,
            cgroups,
            sandboxes: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
        })
    }

    /// The cgroup driver in use.
    pub fn cgroups(&self) -> &CgroupDriver {
        &self.cgroups
    }

    fn dirs(&self, id: &str) -> SandboxDirs {
        SandboxDirs {
            base: self.config.data_dir.join("sandboxes").join(id),
        }
    }

    /// Creates and starts a sandbox; returns once its init program has been exec'd.
    ///
    /// On any failure everything created so far is removed again.
    pub fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        validate_id(&spec.id)?;
        spec.limits.validate()?;
        let slirp = network::check_supported(spec.allow_internet)?;
        if spec.layers.is_empty() {
            return Err(Error::InvalidSpec {
                field: "layers",
                reason: "at least one layer is required".into(),
            });
        }
        if !spec.init.is_absolute() {
            return Err(Error::InvalidSpec {
                field: "init",
                reason: "must be an absolute path inside the sandbox".into(),
            });
        }
        let hostname = spec.hostname.clone().unwrap_or_else(|| spec.id.clone());
        if hostname.is_empty() || hostname.len() > 64 {
            return Err(Error::InvalidSpec {
                field: "hostname",
                reason: "must be 1-64 bytes".into(),
            });
        }
        let mut layers = Vec::new();
        for layer in &spec.layers {
            rootfs::check_mount_path("layers", layer)?;
            layers.push(rootfs::resolve_layer(layer)?);
        }
        for bind in &spec.binds {
            rootfs::check_mount_path("binds", &bind.source)?;
            rootfs::check_mount_path("binds", &bind.target)?;
        }

        // Reserve the id: the directory is the lock (also across runtimes on one data dir).
        let dirs = self.dirs(&spec.id);
        match fs::create_dir(&dirs.base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(spec.id));
            }
            Err(e) => return Err(Error::io("create dir", &dirs.base)(e)),
        }
        self.creating.lock().expect("lock").insert(spec.id.clone());
        let result = self.start(&spec, &dirs, layers, hostname, slirp.as_deref());
        self.creating.lock().expect("lock").remove(&spec.id);
        match result {
            Ok((entry, handle)) => {
                self.sandboxes
                    .lock()
                    .expect("lock")
                    .insert(spec.id.clone(), entry);
                Ok(handle)
            }
            Err(err) => {
                let cgroup = self.cgroups.sandbox(&spec.id);
                let _ = self.destroy(&spec.id, &cgroup, None, None);
                Err(err)
            }
        }
    }

    fn start(
        &self,
        spec: &SandboxSpec,
        dirs: &SandboxDirs,
        layers: Vec<rootfs::ResolvedLayer>,
        hostname: String,
        slirp: Option<&Path>,
    ) -> Result<(Entry, SandboxHandle)> {
        let host_dir_count: usize = layers.iter().map(|l| l.host_dirs.len()).sum();
        let mut to_create = vec![dirs.rootfs(), dirs.upper(), dirs.work()];
        for n in 0..host_dir_count {
            let (upper, work) = dirs.host_dir(n);
            to_create.extend([upper, work]);
        }
        for dir in &to_create {
            fs::create_dir_all(dir).map_err(Error::io("create dir", dir))?;
        }
        if slirp.is_some() {
            network::write_resolv_conf(&dirs.upper())?;
        }
        let cgroup = self.cgroups.create(&spec.id, &spec.limits)?;

        let config = HelperConfig {
            id: spec.id.clone(),
            cgroup_procs: cgroup.procs_files(),
            rootfs: RootfsPlan {
                dirs: dirs.clone(),
                layers,
                binds: spec.binds.clone(),
                hostname,
            },
            init: spec.init.clone(),
            args: spec.args.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/")),
        };
        let config_json = serde_json::to_vec(&config).map_err(|e| Error::State {
            path: dirs.base.clone(),
            reason: format!("encode helper config: {e}"),
        })?;

        let console_path = dirs.base.join("console.log");
        let console = File::create(&console_path).map_err(Error::io("create", &console_path))?;
        let console2 = console
            .try_clone()
            .map_err(Error::io("dup", &console_path))?;
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys("status pipe")(e.into()))?;
        let mut cmd = Command::new(&self.config.helper);
        cmd.arg(HELPER_MARKER)
            .arg(&spec.id)
            .stdin(Stdio::piped())
            .stdout(console)
            .stderr(console2)
            .env_clear()
            .current_dir("/");
        sys::pass_fd_as(&mut cmd, status_write, STATUS_FD);
        let mut monitor = cmd.spawn().map_err(Error::sys(format!(
            "spawn helper {}",
            self.config.helper.display()
        )))?;
        // Close our copy of the write end (it was moved into the Command's closure).
        drop(cmd);
        let mut stdin = monitor.stdin.take().expect("piped stdin");
        let written = stdin.write_all(&config_json);
        drop(stdin);

        let mut report = String::new();
        let read = read_status(status_read, HELPER_TIMEOUT, &mut report);
        let mut pid = None;
        let mut ready = None;
        let mut error = None;
        for line in report.lines() {
            if let Some(v) = line.strip_prefix("pid ") {
                pid = v.trim().parse::<i32>().ok();
            } else if let Some(v) = line.strip_prefix("ready ") {
                ready = v.trim().parse::<i32>().ok();
            } else if let Some(v) = line.strip_prefix("error ") {
                error = Some(v.to_string());
            }
        }
        let fail = |message: String, mut monitor: Child| {
            let _ = cgroup.kill_all();
            let _ = monitor.kill();
            let _ = monitor.wait();
            Err(Error::Setup {
                id: spec.id.clone(),
                message,
            })
        };
        if let Some(message) = error {
            return fail(message, monitor);
        }
        let (Some(init_pid), Some(init_pid_in_sandbox)) = (pid, ready) else {
            let why = match (written, read) {
                (Err(e), _) => format!("sending config to helper: {e}"),
                (_, Err(e)) => format!("reading helper status: {e}"),
                _ => {
                    let console = fs::read_to_string(&console_path).unwrap_or_default();
                    format!(
                        "helper {} ended without reporting (is `main_if_requested` called first in its main?): {report:?} {}",
                        self.config.helper.display(),
                        console.trim()
                    )
                }
            };
            return fail(why, monitor);
        };
        let network = match slirp {
            None => None,
            Some(program) => {
                match network::attach(
                    program,
                    init_pid,
                    &cgroup.procs_files(),
                    &dirs.base.join("network.log"),
                    &spec.egress,
                ) {
                    Ok(child) => Some(child),
                    Err(e) => return fail(e.to_string(), monitor),
                }
            }
        };

        let handle = SandboxHandle {
            id: spec.id.clone(),
            init_pid,
            init_pid_in_sandbox,
        };
        let state = SandboxState {
            handle: handle.clone(),
            init_start_time: process_start_time(init_pid).unwrap_or(0),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            spec: spec.clone(),
        };
        self.save_state(&dirs.base, &state)?;
        Ok((
            Entry {
                state,
                cgroup,
                monitor: Some(monitor),
                network,
            },
            handle,
        ))
    }

    fn save_state(&self, base: &Path, state: &SandboxState) -> Result<()> {
        let path = base.join("state.json");
        let tmp = base.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, json).map_err(Error::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io("rename", &path))
    }

    fn with_entry<T>(&self, id: &str, f: impl FnOnce(&mut Entry) -> Result<T>) -> Result<T> {
        let mut map = self.sandboxes.lock().expect("lock");
        let entry = map
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        f(entry)
    }

    /// Ids and handles of the sandboxes this runtime knows.
    pub fn list(&self) -> Vec<SandboxHandle> {
        let map = self.sandboxes.lock().expect("lock");
        let mut list: Vec<SandboxHandle> = map.values().map(|e| e.state.handle.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Every layer directory a known sandbox is built on (their overlays use them as
    /// lower dirs, so they must stay until those sandboxes are gone).
    pub fn layers_in_use(&self) -> HashSet<PathBuf> {
        let map = self.sandboxes.lock().expect("lock");
        map.values()
            .flat_map(|e| e.state.spec.layers.iter().cloned())
            .collect()
    }

    /// The handle of sandbox `id`.
    pub fn get(&self, id: &str) -> Result<SandboxHandle> {
        self.with_entry(id, |e| Ok(e.state.handle.clone()))
    }

    /// Running, frozen or exited.
    pub fn status(&self, id: &str) -> Result<SandboxStatus> {
        self.with_entry(id, |e| {
            if !process_alive(e.state.handle.init_pid, e.state.init_start_time) {
                // The monitor exits with the init; reap it now rather than at kill.
                if let Some(monitor) = e.monitor.as_mut() {
                    let _ = monitor.try_wait();
                }
                return Ok(SandboxStatus::Exited);
            }
            Ok(if e.cgroup.is_frozen() {
                SandboxStatus::Frozen
            } else {
                SandboxStatus::Running
            })
        })
    }

    /// The sandbox's cgroup, cloned so that slow kernel waits do not hold the map lock.
    fn cgroup_of(&self, id: &str) -> Result<SandboxCgroup> {
        self.with_entry(id, |e| Ok(e.cgroup.clone()))
    }

    /// Freezes every process of the sandbox (pause); memory is kept.
    pub fn freeze(&self, id: &str) -> Result<()> {
        self.cgroup_of(id)?.freeze()
    }

    /// Resumes a frozen sandbox.
    pub fn thaw(&self, id: &str) -> Result<()> {
        self.cgroup_of(id)?.thaw()
    }

    /// Changes a running sandbox's limits (lowering memory below usage triggers its OOM
    /// killer).
    pub fn update_limits(&self, id: &str, limits: Limits) -> Result<()> {
        limits.validate()?;
        let base = self.dirs(id).base;
        self.with_entry(id, |e| {
            e.cgroup.set_limits(&limits)?;
            e.state.spec.limits = limits;
            self.save_state(&base, &e.state)
        })
    }

    /// Memory, CPU and task usage from the sandbox's cgroup.
    pub fn stats(&self, id: &str) -> Result<CgroupStats> {
        Ok(self.cgroup_of(id)?.stats())
    }

    /// The sandbox's root file system as seen from the host (`/proc/<pid>/root`), for
    /// reading and writing files from outside. Valid while the sandbox runs.
    pub fn root_path(&self, id: &str) -> Result<PathBuf> {
        self.with_entry(id, |e| {
            let pid = e.state.handle.init_pid;
            if !process_alive(pid, e.state.init_start_time) {
                return Err(Error::NotRunning(id.to_string()));
            }
            Ok(PathBuf::from(format!("/proc/{pid}/root")))
        })
    }

    /// A [`Command`] for `program` that runs *inside* the sandbox as root in `/`; see
    /// [`command_with`](Self::command_with).
    pub fn command(&self, id: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        self.command_with(id, program, &ExecOptions::default())
    }

    /// A [`Command`] for `program` that runs *inside* the sandbox: in its cgroups and all
    /// its namespaces, with the sandbox's root, the same capability bounds as the
    /// sandbox's own processes, an empty environment except `PATH` (and `HOME` for a
    /// user), in `options.cwd` as `options.user`. The caller adds arguments, stdio and
    /// environment, then spawns it as usual; it must not use `Command::uid`, `gid`,
    /// `groups` or `current_dir` (they act before the sandbox is entered). The sandbox
    /// must be running and not frozen (a frozen sandbox would freeze the spawn itself).
    pub fn command_with(
        &self,
        id: &str,
        program: impl AsRef<std::ffi::OsStr>,
        options: &ExecOptions,
    ) -> Result<Command> {
        let (pid, cgroup) = self.with_entry(id, |e| {
            if !process_alive(e.state.handle.init_pid, e.state.init_start_time) {
                return Err(Error::NotRunning(id.to_string()));
            }
            if e.cgroup.is_frozen() {
                return Err(Error::NotRunning(format!("{id} (frozen)")));
            }
            Ok((e.state.handle.init_pid, e.cgroup.clone()))
        })?;
        let mut procs = Vec::new();
        for path in cgroup.procs_files() {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(Error::io("open", &path))?;
            procs.push(OwnedFd::from(file));
        }
        let mut namespaces = Vec::new();
        // The mount namespace goes last: entering it changes root and cwd.
        for ns in ["cgroup", "ipc", "uts", "net", "pid", "mnt"] {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
            let file = File::open(&path).map_err(Error::io("open", &path))?;
            namespaces.push(OwnedFd::from(file));
        }
        let cwd = match &options.cwd {
            Some(dir) => Some(
                std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
                    Error::InvalidSpec {
                        field: "cwd",
                        reason: "contains a NUL byte".into(),
                    }
                })?,
            ),
            None => None,
        };
        let mut cmd = Command::new(program);
        cmd.env_clear().env("PATH", DEFAULT_PATH);
        if let Some(user) = options.user {
            cmd.env(
                "HOME",
                if user.0 == 0 {
                    "/root".to_string()
                } else {
                    format!("/home/{}", crate::base_layer::USER)
                },
            );
        }
        sys::enter_sandbox(&mut cmd, procs, namespaces, cwd, options.user);
        Ok(cmd)
    }

    /// Kills the sandbox: SIGKILL to every process in its cgroup, then its cgroups and
    /// directories are removed. Its mounts die with its mount namespace; any that leaked
    /// onto the host are detached.
    pub fn kill(&self, id: &str) -> Result<()> {
        let entry = self.sandboxes.lock().expect("lock").remove(id);
        let Some(entry) = entry else {
            // Known on disk only (e.g. before `recover`)?
            if self.dirs(id).base.exists() && !self.creating.lock().expect("lock").contains(id) {
                return self.destroy(id, &self.cgroups.sandbox(id), None, None);
            }
            return Err(Error::NotFound(id.to_string()));
        };
        self.destroy(id, &entry.cgroup, entry.monitor, entry.network)
    }

    /// Kills every sandbox this runtime knows (e.g. at shutdown when sandboxes must not
    /// outlive the server). Returns the first error after trying all.
    pub fn kill_all(&self) -> Result<()> {
        let ids: Vec<String> = self
            .sandboxes
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        let mut first = Ok(());
        for id in ids {
            if let Err(e) = self.kill(&id)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    fn destroy(
        &self,
        id: &str,
        cgroup: &SandboxCgroup,
        monitor: Option<Child>,
        network: Option<network::Attached>,
    ) -> Result<()> {
        let mut first_err = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, error = %e, "cleanup step failed");
                first_err.get_or_insert(e);
            }
        };
        note(cgroup.kill_all());
        if let Some(mut monitor) = monitor {
            // The monitor is in the cgroup, so it is dead or dying: reap it.
            let _ = monitor.kill();
            let _ = monitor.wait();
        }
        if let Some(mut network) = network {
            let _ = network.kill();
            let _ = network.wait();
        }
        let base = self.dirs(id).base;
        note(detach_mounts_under(&base));
        note(cgroup.remove());
        if base.exists() {
            note(fs::remove_dir_all(&base).map_err(Error::io("remove", &base)));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Finds sandboxes left in the data dir by a previous run. With
    /// [`RecoverPolicy::Adopt`], those still running are registered again; everything else
    /// (dead inits, half-created sandboxes, or all with [`RecoverPolicy::KillAll`]) is
    /// reaped: processes killed, mounts detached, cgroups and directories removed.
    /// Call it once at startup, before creating sandboxes.
    pub fn recover(&self, policy: RecoverPolicy) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let sandboxes_dir = self.config.data_dir.join("sandboxes");
        let entries =
            fs::read_dir(&sandboxes_dir).map_err(Error::io("read dir", &sandboxes_dir))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        for id in ids {
            if validate_id(&id).is_err()
                || self.sandboxes.lock().expect("lock").contains_key(&id)
                || self.creating.lock().expect("lock").contains(&id)
            {
                continue;
            }
            let cgroup = self.cgroups.sandbox(&id);
            let state_path = sandboxes_dir.join(&id).join("state.json");
            let state: Option<SandboxState> = fs::read(&state_path)
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok());
            if policy == RecoverPolicy::Adopt
                && let Some(state) = state
                && process_alive(state.handle.init_pid, state.init_start_time)
                && cgroup.exists()
            {
                report.adopted.push(state.handle.clone());
                self.sandboxes.lock().expect("lock").insert(
                    id,
                    Entry {
                        state,
                        cgroup,
                        monitor: None,
                        network: None,
                    },
                );
                continue;
            }
            match self.destroy(&id, &cgroup, None, None) {
                Ok(()) => report.reaped.push(id),
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        Ok(report)
    }
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            field: "id",
            reason: format!("{id:?} must be 1-64 of [A-Za-z0-9_-], not starting with '-'"),
        })
    }
}

/// How long the helper may take to set a sandbox up before `create` gives up on it.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the helper's status pipe until EOF, giving up after `timeout` (a helper stuck
/// in the kernel must not hang `create` forever).
fn read_status(pipe: OwnedFd, timeout: Duration, out: &mut String) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + timeout;
    let mut file = File::from(pipe);
    let mut buf = [0u8; 512];
    let mut raw = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no report from the helper within {timeout:?}"),
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let n = file.read(&mut buf)?;
        if n == 0 {
            *out = String::from_utf8_lossy(&raw).into_owned();
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks after boot.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and is the process that started at `start_time`
/// (0 = don't check).
fn process_alive(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 2..].chars().next();
    if matches!(state, Some('Z') | Some('X')) {
        return false;
    }
    start_time == 0 || process_start_time(pid) == Some(start_time)
}

/// Detaches any mount point under `dir` from the host's mount table (there should be
/// none: sandbox mounts live in the sandbox's own namespace). Deepest first.
fn detach_mounts_under(dir: &Path) -> Result<()> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        umount2(&point, MntFlags::MNT_DETACH)
            .map_err(|e| Error::sys(format!("umount {}", point.display()))(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_restricted_to_safe_characters() {
        for ok in ["a", "sbx-1", "A_b-9", &"x".repeat(64)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_out_of_range_name_the_field() {
        let err = Limits {
            memory_mb: 1,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("limits.memory_mb"), "{err}");
        let err = Limits {
            cpu_count: 0.0,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("limits.cpu_count"), "{err}");
        let err = Limits {
            pids: 2,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("limits.pids"), "{err}");
    }

    #[test]
    fn own_process_is_alive_and_start_time_is_checked() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(process_alive(me, start));
        assert!(process_alive(me, 0));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(i32::MAX, 0));
    }
}
