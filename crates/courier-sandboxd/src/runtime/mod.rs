//! The sandbox runtime: create, control and destroy sandboxes on this machine.
//!
//! A [`Runtime`] owns a data directory:
//!
//! ```text
//! <data_dir>/disks/golden-<MB>.img   empty ext4 file systems, copied for each sandbox
//!            sandboxes/<id>/state.json   what `recover` needs after a restart
//!                           disk.img     the sandbox's own disk (its writable layer)
//!                           rootfs/      mount point of the overlay root (only mounted
//!                                        inside the sandbox's namespaces), with disk/,
//!                                        lower/, hostlower/ beside it
//!                           control.sock the control socket (namespace sandboxes)
//!                           control/     the control socket's directory (gVisor)
//!                           bundle/ runsc/   OCI bundle and runsc state (gVisor)
//!                           console.log  the init's and the runtime's output (capped)
//!                           network.log  slirp4netns output (networked sandboxes)
//! ```
//!
//! and one cgroup per sandbox (`courier/<id>` in each hierarchy, see [`cgroup`]).
//!
//! Two isolations share all of that ([`Isolation`]): **container** (the host kernel
//! behind namespaces: a user namespace with the sandbox's own host ids ([`idmap`]), PID,
//! mount, UTS, IPC, network and cgroup namespaces, a syscall filter ([`seccomp`]) and a
//! minimal capability bounding set) and **gVisor** (a kernel of its own per sandbox,
//! [`gvisor`]). The seam between them is the crate-internal `Isolator` trait
//! (`container.rs`, `gvisor.rs`) with the helper's [`init::Launch`]: how the control
//! socket is prepared and reached, how the assembled root is run, how a program is run
//! inside. A microVM isolation (see ARCHITECTURE.md) would be a third implementation
//! that boots a VM from the same disk and layers.
//!
//! Invariants: a sandbox's processes are all in its cgroup from their first instruction;
//! its mounts exist only in its own mount namespaces; everything the host writes into a
//! sandbox's tree is resolved inside that tree; after [`Runtime::kill`] or
//! [`Runtime::recover`] nothing of it is left (processes, cgroups, directories, loop
//! devices, host id range).
//!
//! The API is blocking (it waits for the kernel and for the helper); async callers wrap it
//! in `spawn_blocking`.

pub mod cgroup;
mod container;
pub mod disk;
pub mod gvisor;
mod handover;
pub mod idmap;
pub mod init;
mod layer_capture;
pub mod network;
pub mod rootfs;
pub mod seccomp;
mod sys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::mount::{MntFlags, umount2};

pub use cgroup::{CgroupDriver, CgroupStats, CgroupVersion, SandboxCgroup};
pub use gvisor::RunscConfig;
pub use idmap::IdRange;
pub use rootfs::{BindMount, HostDir, LayerManifest};

use crate::error::{Error, Result};
use init::{CONTROL_FD, DISK_FD, GO_FD, HELPER_MARKER, HelperTask, LIFELINE_FD, Launch, STATUS_FD};
use rootfs::{RootfsPlan, SandboxDirs};

/// How a sandbox is isolated from the host.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, a user namespace, a syscall filter and cgroups around the host kernel.
    #[default]
    Container,
    /// gVisor: a kernel of its own (runsc's Sentry), in the same cgroup and root.
    Gvisor,
}

impl Isolation {
    /// Its name in flags, config files and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Gvisor => "gvisor",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Isolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "container" => Ok(Isolation::Container),
            "gvisor" => Ok(Isolation::Gvisor),
            other => Err(Error::InvalidSpec {
                field: "isolation",
                reason: format!("{other:?} is not one of \"gvisor\", \"container\""),
            }),
        }
    }
}

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

/// I/O throttles on a sandbox's own disk (bytes or operations per second; `None` = not
/// throttled). On cgroup v1 the kernel throttles reads and direct writes; buffered
/// writes are flushed by kernel threads outside the sandbox's cgroup and escape v1's
/// throttle (v2 accounts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoLimits {
    /// Read bytes per second.
    pub read_bps: Option<u64>,
    /// Write bytes per second.
    pub write_bps: Option<u64>,
    /// Read operations per second.
    pub read_iops: Option<u64>,
    /// Write operations per second.
    pub write_iops: Option<u64>,
}

impl IoLimits {
    /// 512 MiB/s and 20 000 operations/s each way: far above what one agent needs, low
    /// enough that one sandbox cannot take a shared disk's whole bandwidth.
    pub fn standard() -> Self {
        Self {
            read_bps: Some(512 << 20),
            write_bps: Some(512 << 20),
            read_iops: Some(20_000),
            write_iops: Some(20_000),
        }
    }
}

/// Default size of a sandbox's disk, MiB.
pub const DEFAULT_DISK_MB: u64 = 4096;

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
    /// Host paths bind-mounted into this sandbox only (`nosuid`, `nodev`).
    pub binds: Vec<BindMount>,
    /// Working directory of the init; defaults to `/`.
    pub cwd: Option<PathBuf>,
    /// How the sandbox is isolated.
    #[serde(default)]
    pub isolation: Isolation,
    /// Size of the sandbox's own disk (its writable layer), MiB: writing more fails with
    /// `ENOSPC`.
    #[serde(default = "default_disk_mb")]
    pub disk_mb: u64,
    /// I/O throttles on the sandbox's disk.
    #[serde(default)]
    pub io: IoLimits,
    /// Let the sandbox create namespaces of its own (nested user namespaces, mounts in
    /// them); off by default: the syscall filter refuses them.
    #[serde(default)]
    pub nested_namespaces: bool,
    /// Give the init a control socket: on descriptor [`init::INIT_CONTROL_FD`] (a socket
    /// bound but not listening) for a namespace sandbox, or the directory
    /// [`GVISOR_CONTROL_DIR`] for a gVisor one; the runtime reaches it with
    /// [`Runtime::connect_control`].
    #[serde(default)]
    pub control_socket: bool,
    /// Kill the sandbox when the process running this runtime exits (for sandboxes that
    /// must not outlive their server, like template build sandboxes). Others survive a
    /// server restart and are adopted by [`Runtime::recover`].
    #[serde(default)]
    pub die_with_runtime: bool,
}

fn default_disk_mb() -> u64 {
    DEFAULT_DISK_MB
}

/// Where a gVisor sandbox's init finds the directory to create its control socket in.
pub const GVISOR_CONTROL_DIR: &str = "/run/courier";

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
            isolation: Isolation::Container,
            disk_mb: DEFAULT_DISK_MB,
            io: IoLimits::default(),
            nested_namespaces: false,
            control_socket: false,
            die_with_runtime: false,
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
    /// Host PID of the process the sandbox lives as long as: PID 1 of a namespace sandbox
    /// (the runtime's reaper; the init is its child), the helper's monitor for gVisor.
    pub init_pid: i32,
    /// The init program's PID inside the sandbox.
    pub init_pid_in_sandbox: i32,
    /// How it is isolated.
    #[serde(default)]
    pub isolation: Isolation,
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
    /// The data directory (created if missing, mode 0700). Sandboxes never see it.
    pub data_dir: PathBuf,
    /// The helper program; it must call [`init::main_if_requested`] first thing.
    /// Default `/proc/self/exe` (the running program).
    pub helper: PathBuf,
    /// Name of the directory under each cgroup hierarchy holding the sandboxes' cgroups.
    /// Runtimes sharing a host should share it only if they share the data dir.
    pub cgroup_parent: String,
    /// First host id of the sandboxes' id ranges (see [`idmap`]); default 2^30.
    pub first_id: u32,
    /// runsc, when gVisor sandboxes are to be offered (see [`gvisor::probe`]).
    pub runsc: Option<RunscConfig>,
    /// Bytes of console output kept per sandbox (default 16 MiB).
    pub console_cap: u64,
    /// Disks kept ready (copied, attached, mounted) per disk size in use, so that creates
    /// skip that work (see [`disk`]'s module docs); default 2, 0 turns it off.
    pub ready_disks: usize,
}

impl RuntimeConfig {
    /// Defaults for `data_dir`: helper `/proc/self/exe`, cgroup parent `courier`, ids from
    /// 2^30, no gVisor, 16 MiB of console per sandbox, 2 ready disks per size.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            helper: PathBuf::from("/proc/self/exe"),
            cgroup_parent: "courier".into(),
            first_id: idmap::DEFAULT_FIRST_ID,
            runsc: None,
            console_cap: 16 << 20,
            ready_disks: DEFAULT_READY_DISKS,
        }
    }
}

/// Default of [`RuntimeConfig::ready_disks`].
pub const DEFAULT_READY_DISKS: usize = 2;

/// Persisted per-sandbox state (`state.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SandboxState {
    handle: SandboxHandle,
    /// `starttime` of the anchor process, to tell it from a recycled PID.
    init_start_time: u64,
    created_unix_ms: u128,
    spec: SandboxSpec,
    /// The sandbox's host ids (namespace sandboxes).
    #[serde(default)]
    ids: Option<IdRange>,
}

struct Entry {
    state: SandboxState,
    cgroup: SandboxCgroup,
    /// The helper's monitor process when this runtime started it (reaped on kill).
    monitor: Option<Child>,
    /// slirp4netns when this runtime started it for outbound access (it lives in the
    /// sandbox's cgroup and dies with it; reaped on kill).
    network: Option<network::Attached>,
    /// The write end of the sandbox's lifeline ([`SandboxSpec::die_with_runtime`]):
    /// close-on-exec, so it lives exactly as long as this process, whose end — however
    /// it comes — is EOF for the sandbox's monitor, which then kills it.
    lifeline: Option<OwnedFd>,
}

/// The sandbox runtime. See the [module docs](self).
pub struct Runtime {
    config: RuntimeConfig,
    cgroups: CgroupDriver,
    ids: idmap::IdAllocator,
    sandboxes: Mutex<HashMap<String, Entry>>,
    /// Ids being created right now (their directory exists but no state yet).
    creating: Mutex<HashSet<String>>,
    container: container::ContainerIsolator,
    gvisor: Option<gvisor::GvisorIsolator>,
    disks: Arc<disk::DiskPool>,
    /// Helpers started ahead of their tasks.
    helpers: Arc<HelperSlot>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("cgroups", &self.cgroups)
            .finish()
    }
}

/// How long the helper may take to set a sandbox up before `create` gives up on it.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

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
        // Sandboxes' disks, sockets and state: only root may look inside.
        fs::set_permissions(&config.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(Error::io("chmod", &config.data_dir))?;
        let cgroups = CgroupDriver::detect_at(Path::new("/sys/fs/cgroup"), &config.cgroup_parent)?;
        Ok(Self {
            ids: idmap::IdAllocator::new(config.first_id),
            disks: disk::DiskPool::new(config.data_dir.join("disks"), config.ready_disks),
            helpers: Arc::new(HelperSlot::default()),
            container: container::ContainerIsolator,
            gvisor: config.runsc.clone().map(gvisor::GvisorIsolator::new),
            config,
            cgroups,
            sandboxes: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
        })
    }

    /// Starts preparing ready disks of `disk_mb` MiB (see [`RuntimeConfig::ready_disks`])
    /// before the first create of that size asks for one.
    pub fn prewarm_disks(&self, disk_mb: u64) {
        self.disks.prewarm(disk_mb);
    }

    /// Reads a file every sandbox runs (the envd binary) into the page cache on the
    /// runtime's own account, on a thread of its own. A page is charged to the cgroup
    /// that first reads it, and an ended sandbox's charged pages are reclaimed (so that
    /// its memory cgroup is freed, see [`cgroup`]): left to the first sandbox, such a
    /// file would be read from disk again after every sandbox's end.
    pub fn preload(&self, path: &Path) {
        let path = path.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("courier-preload".into())
            .spawn(move || {
                let copied = File::open(&path)
                    .and_then(|mut file| std::io::copy(&mut file, &mut std::io::sink()));
                if let Err(error) = copied {
                    tracing::debug!(%error, path = %path.display(), "preloading");
                }
            });
    }

    /// How many ready disks wait, all sizes together.
    pub fn ready_disks(&self) -> usize {
        self.disks.ready_count()
    }

    /// The cgroup driver in use.
    pub fn cgroups(&self) -> &CgroupDriver {
        &self.cgroups
    }

    /// The isolation strategy for `isolation`.
    fn isolator(&self, isolation: Isolation) -> Result<&dyn Isolator> {
        match isolation {
            Isolation::Container => Ok(&self.container),
            Isolation::Gvisor => self
                .gvisor
                .as_ref()
                .map(|g| g as &dyn Isolator)
                .ok_or_else(|| gvisor::require(None).unwrap_err()),
        }
    }

    /// The isolations this runtime can create.
    pub fn isolations(&self) -> Vec<Isolation> {
        let mut all = vec![Isolation::Container];
        if self.gvisor.is_some() {
            all.push(Isolation::Gvisor);
        }
        all
    }

    /// The runsc configuration gVisor sandboxes use, if any.
    pub fn runsc(&self) -> Option<&RunscConfig> {
        self.config.runsc.as_ref()
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
        disk::validate_size(spec.disk_mb)?;
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
        self.isolator(spec.isolation)?;
        let slirp = network::check_supported(spec.allow_internet)?;
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
        // Search but no read for others, whatever the server's umask: the sandbox's PID 1
        // (an unprivileged host id) steps from its root into the root's own mount through
        // this directory (see rootfs::enter_root); nobody can list it.
        if let Err(e) = fs::set_permissions(&dirs.base, fs::Permissions::from_mode(0o711)) {
            self.creating.lock().expect("lock").remove(&spec.id);
            let _ = fs::remove_dir_all(&dirs.base);
            return Err(Error::io("chmod", &dirs.base)(e));
        }
        self.creating.lock().expect("lock").insert(spec.id.clone());
        // Both isolations run under the sandbox's own host ids: the namespace sandbox's
        // processes, and gVisor's Sentry and gofer (a user namespace in its OCI spec).
        let ids = match self.ids.allocate() {
            Ok(range) => Some(range),
            Err(e) => {
                self.creating.lock().expect("lock").remove(&spec.id);
                let _ = fs::remove_dir_all(&dirs.base);
                return Err(e);
            }
        };
        let result = self.start(&spec, &dirs, layers, hostname, slirp.as_deref(), ids);
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
                let _ = self.destroy(&spec.id, &cgroup, None, None, ids);
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
        ids: Option<IdRange>,
    ) -> Result<(Entry, SandboxHandle)> {
        let started = Instant::now();
        // A ready disk when one waits (its image becomes this sandbox's), else this
        // sandbox's own copy of the golden image, attached and mounted by the helper.
        let ready_disk = self.disks.take(spec.disk_mb).and_then(|ready| {
            match fs::rename(&ready.image, dirs.disk_image()) {
                Ok(()) => Some(ready),
                Err(error) => {
                    tracing::debug!(%error, "taking a ready disk; preparing one instead");
                    let _ = fs::remove_file(&ready.image);
                    None
                }
            }
        });
        if ready_disk.is_none() {
            let golden = disk::golden(&self.config.data_dir.join("disks"), spec.disk_mb)?;
            disk::copy_sparse(&golden, &dirs.disk_image())?;
        }
        let disk_done = started.elapsed();
        let cgroup = self.cgroups.create(&spec.id, &spec.limits)?;
        let cgroup_done = started.elapsed();

        let isolator = self.isolator(spec.isolation)?;
        let mut binds = spec.binds.clone();
        let mut control = None;
        if spec.control_socket {
            let prepared = isolator.prepare_control(dirs, ids)?;
            control = prepared.fd;
            binds.extend(prepared.binds);
        }
        let launch = isolator.launch(spec, dirs)?;
        let task = HelperTask::Sandbox(Box::new(init::SandboxTask {
            id: spec.id.clone(),
            cgroup_procs: cgroup.procs_files(),
            blkio: cgroup.io_limit_files(&spec.io),
            rootfs: RootfsPlan {
                dirs: dirs.clone(),
                layers,
                binds,
                hostname: hostname.clone(),
                resolv_conf: slirp.map(|_| format!("nameserver {}\n", network::SANDBOX_NAMESERVER)),
                ready_disk_minor: ready_disk.as_ref().map(|d| d.minor),
            },
            ids,
            launch,
            console_cap: self.config.console_cap,
        }));

        let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys("go pipe")(e.into()))?;
        let mut extra = vec![(go_read, GO_FD)];
        if let Some(ready) = ready_disk {
            extra.push((ready.mount, DISK_FD));
        }
        if let Some(control) = control {
            extra.push((control, CONTROL_FD));
        }
        let mut lifeline = None;
        if spec.die_with_runtime {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::sys("lifeline pipe")(e.into()))?;
            extra.push((read, LIFELINE_FD));
            lifeline = Some(write);
        }
        let (mut monitor, mut status) = self.spawn_helper(&dirs.console(), &task, extra)?;
        let handed_over = started.elapsed();
        let deadline = Instant::now() + HELPER_TIMEOUT;
        let mut report = String::new();
        let fail = |message: String, mut monitor: Child| {
            let _ = cgroup.kill_all();
            let _ = monitor.kill();
            let _ = monitor.wait();
            Err(Error::Setup {
                id: spec.id.clone(),
                message,
            })
        };

        // Phase 1: the sandbox's network namespace exists; attach the network (and, for
        // gVisor, write the bundle naming that namespace) before it goes on.
        let netns_pid = match status.until(deadline, &mut report, "netns ") {
            Ok(Some(pid)) => pid,
            Ok(None) => return fail(self.helper_failure(&report, &dirs.console()), monitor),
            Err(e) => return fail(format!("reading helper status: {e}"), monitor),
        };
        let root_done = started.elapsed();
        let network = match slirp {
            None => None,
            Some(program) => match network::attach(
                program,
                netns_pid,
                &cgroup.procs_files(),
                &dirs.base.join("network.log"),
                &spec.egress,
            ) {
                Ok(child) => Some(child),
                Err(e) => return fail(e.to_string(), monitor),
            },
        };
        if let Err(e) = isolator.before_start(spec, dirs, &hostname, netns_pid, ids) {
            return fail(e.to_string(), monitor);
        }
        if let Err(e) = File::from(go_write).write_all(b"g") {
            return fail(format!("telling the helper to go on: {e}"), monitor);
        }
        let network_done = started.elapsed();

        // Phase 2: PID 1 (or runsc) runs; the init is exec'd.
        let read = status.read_to_end(deadline, &mut report);
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
        if let Some(message) = error {
            return fail(message, monitor);
        }
        let (Some(init_pid), Some(init_pid_in_sandbox)) = (pid, ready) else {
            let why = match read {
                Err(e) => format!("reading helper status: {e}"),
                Ok(()) => self.helper_failure(&report, &dirs.console()),
            };
            return fail(why, monitor);
        };

        tracing::debug!(
            sandbox = %spec.id,
            isolation = %spec.isolation,
            disk_ms = disk_done.as_secs_f64() * 1e3,
            cgroup_ms = cgroup_done.as_secs_f64() * 1e3,
            handed_over_ms = handed_over.as_secs_f64() * 1e3,
            root_ms = root_done.as_secs_f64() * 1e3,
            network_ms = network_done.as_secs_f64() * 1e3,
            init_ms = started.elapsed().as_secs_f64() * 1e3,
            helper_us = %helper_times(&report),
            "sandbox started (cumulative times)"
        );
        let handle = SandboxHandle {
            id: spec.id.clone(),
            init_pid,
            init_pid_in_sandbox,
            isolation: spec.isolation,
        };
        let state = SandboxState {
            handle: handle.clone(),
            init_start_time: process_start_time(init_pid).unwrap_or(0),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            spec: spec.clone(),
            ids,
        };
        self.save_state(&dirs.base, &state)?;
        // Not waited for by anyone else: a monitor whose sandbox ended is reaped here or
        // at kill.
        let _ = monitor.try_wait();
        Ok((
            Entry {
                state,
                cgroup,
                monitor: Some(monitor),
                network,
                lifeline,
            },
            handle,
        ))
    }

    /// Hands `task` to a helper (the one started ahead of time when it waits, else a new
    /// one), with its console on stdout and stderr and `extra` descriptors at their
    /// numbers; returns the helper and its status pipe. Starts the next helper behind.
    fn spawn_helper(
        &self,
        console: &Path,
        task: &HelperTask,
        extra: Vec<(OwnedFd, i32)>,
    ) -> Result<(Child, StatusReader)> {
        let json = serde_json::to_vec(task).map_err(|e| Error::State {
            path: console.to_path_buf(),
            reason: format!("encode helper task: {e}"),
        })?;
        let console_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(console)
            .map_err(Error::io("create", console))?;
        let console2 = console_file
            .try_clone()
            .map_err(Error::io("dup", console))?;
        let waiting = self.helpers.take();
        let helper = match waiting {
            Some(helper) => helper,
            None => {
                tracing::debug!("no helper waiting: starting one for this task");
                WaitingHelper::start(&self.config.helper)?
            }
        };
        self.helpers.start_next(&self.config.helper);
        let mut fds = vec![
            (OwnedFd::from(console_file), 1),
            (OwnedFd::from(console2), 2),
        ];
        fds.extend(extra);
        let WaitingHelper {
            mut child,
            channel,
            status,
        } = helper;
        if let Err(e) = handover::send_task(channel, &json, &fds) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::sys("hand the task to the helper")(e));
        }
        Ok((child, StatusReader::new(status)))
    }

    /// Runs a helper task that needs no sandbox (a capture) and returns its report.
    fn run_helper_task(&self, task: &HelperTask) -> Result<String> {
        let scratch = self.config.data_dir.join("helper.log");
        let (mut child, mut status) = self.spawn_helper(&scratch, task, Vec::new())?;
        let mut report = String::new();
        let read = status.read_to_end(Instant::now() + Duration::from_secs(3600), &mut report);
        let _ = child.wait();
        read.map_err(Error::sys("read the helper's report"))?;
        Ok(report)
    }

    fn helper_failure(&self, report: &str, console: &Path) -> String {
        let console = fs::read_to_string(console).unwrap_or_default();
        let console = console.trim();
        let tail = &console[console.len().saturating_sub(2000)..];
        format!(
            "helper {} ended without reporting (is `main_if_requested` called first in its main?): {report:?} {tail}",
            self.config.helper.display()
        )
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

    /// The host ids of namespace sandbox `id` (`None` under gVisor).
    pub fn id_range(&self, id: &str) -> Result<Option<IdRange>> {
        self.with_entry(id, |e| Ok(e.state.ids))
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

    /// Lets a sandbox created to die with this runtime ([`SandboxSpec::die_with_runtime`])
    /// outlive it from now on, like any other (a sandbox started ahead of a create, once
    /// the create takes it). Its monitor is told so through the lifeline itself.
    pub fn outlive_runtime(&self, id: &str) -> Result<()> {
        let base = self.dirs(id).base;
        self.with_entry(id, |e| {
            if let Some(lifeline) = e.lifeline.take() {
                File::from(lifeline)
                    .write_all(&[init::LIFELINE_RELEASE])
                    .map_err(|e| Error::sys("release the lifeline")(e))?;
            }
            e.state.spec.die_with_runtime = false;
            self.save_state(&base, &e.state)
        })
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

    /// Bytes the sandbox's disk occupies on the host, and its size limit in bytes.
    pub fn disk_usage(&self, id: &str) -> Result<(u64, u64)> {
        let size = self.with_entry(id, |e| Ok(e.state.spec.disk_mb))?;
        Ok((
            disk::allocated_bytes(&self.dirs(id).disk_image()),
            size * 1024 * 1024,
        ))
    }

    /// The sandbox's root file system as seen from the host (`/proc/<pid>/root`), for
    /// reading files from outside. Valid while a namespace sandbox runs; gVisor's root
    /// is the Sentry's, not reachable this way.
    pub fn root_path(&self, id: &str) -> Result<PathBuf> {
        self.with_entry(id, |e| {
            let pid = e.state.handle.init_pid;
            if !self.isolator(e.state.spec.isolation)?.host_visible_root() {
                return Err(Error::Unsupported(format!(
                    "root_path: a {} sandbox's files are not the host's to read",
                    e.state.spec.isolation
                )));
            }
            if !process_alive(pid, e.state.init_start_time) {
                return Err(Error::NotRunning(id.to_string()));
            }
            Ok(PathBuf::from(format!("/proc/{pid}/root")))
        })
    }

    /// Gives running sandbox `id` a fresh slirp4netns under `egress` (after a server
    /// restart: the previous server's slirp4netns is failed closed, its supervisor gone).
    /// The stale one is killed first. A sandbox without internet is left alone.
    pub fn reattach_network(&self, id: &str, egress: &crate::egress::SandboxEgress) -> Result<()> {
        let (pid, internet, cgroup) = self.with_entry(id, |e| {
            Ok((
                e.state.handle.init_pid,
                e.state.spec.allow_internet,
                e.cgroup.clone(),
            ))
        })?;
        if !internet {
            return Ok(());
        }
        let Some(program) = network::find_slirp4netns() else {
            return Err(Error::Unsupported(
                "allow_internet: slirp4netns is no longer installed".into(),
            ));
        };
        network::detach_stale(pid)?;
        let attached = network::attach(
            &program,
            pid,
            &cgroup.procs_files(),
            &self.dirs(id).base.join("network.log"),
            egress,
        )?;
        self.with_entry(id, |e| {
            e.network = Some(attached);
            Ok(())
        })
    }

    /// Connects to the control socket of sandbox `id` (see
    /// [`SandboxSpec::control_socket`]) and checks that the process answering belongs to
    /// the sandbox.
    ///
    /// A namespace sandbox's socket lives where only the runtime can reach it. A gVisor
    /// sandbox's lives in a directory the sandbox can write: it is opened without
    /// following symlinks, must be a socket, and is connected through its descriptor, so
    /// a sandbox that swaps it for a link to a host socket (Docker's, say) reaches
    /// nothing; at most it answers itself.
    pub fn connect_control(&self, id: &str) -> Result<std::os::unix::net::UnixStream> {
        let (isolation, cgroup) = self.with_entry(id, |e| {
            if !e.state.spec.control_socket {
                return Err(Error::Unsupported(format!(
                    "sandbox {id} was created without a control socket"
                )));
            }
            Ok((e.state.spec.isolation, e.cgroup.clone()))
        })?;
        let stream = self.isolator(isolation)?.connect_control(&self.dirs(id))?;
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| Error::sys("read the control socket's peer")(e.into()))?;
        if !cgroup.contains(peer.pid()) {
            return Err(Error::Envd {
                id: id.to_owned(),
                message: format!(
                    "the control socket is served by process {} (uid {}), which is not part of the sandbox: refusing it",
                    peer.pid(),
                    peer.uid()
                ),
            });
        }
        Ok(stream)
    }

    /// A [`Command`] for `program` that runs *inside* the sandbox as root in `/`; see
    /// [`command_with`](Self::command_with).
    pub fn command(&self, id: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        self.command_with(id, program, &ExecOptions::default())
    }

    /// A [`Command`] for `program` that runs *inside* the sandbox: in its cgroups, user
    /// namespace and all its other namespaces, with the sandbox's root, capability bounds,
    /// syscall filter and a fresh keyring (a gVisor sandbox: through `runsc exec`), an
    /// empty environment except `PATH` (and `HOME` for a user), in `options.cwd` as
    /// `options.user`. The caller adds arguments, stdio and environment, then spawns it
    /// as usual; it must not use `Command::uid`, `gid`, `groups` or `current_dir` (they act
    /// before the sandbox is entered). The sandbox must be running and not frozen (a
    /// frozen sandbox would freeze the spawn itself).
    pub fn command_with(
        &self,
        id: &str,
        program: impl AsRef<std::ffi::OsStr>,
        options: &ExecOptions,
    ) -> Result<Command> {
        let (pid, cgroup, spec) = self.with_entry(id, |e| {
            if !process_alive(e.state.handle.init_pid, e.state.init_start_time) {
                return Err(Error::NotRunning(id.to_string()));
            }
            if e.cgroup.is_frozen() {
                return Err(Error::NotRunning(format!("{id} (frozen)")));
            }
            Ok((
                e.state.handle.init_pid,
                e.cgroup.clone(),
                e.state.spec.clone(),
            ))
        })?;
        let mut cmd = self.isolator(spec.isolation)?.command(
            &Running {
                id,
                init_pid: pid,
                cgroup: &cgroup,
                spec: &spec,
                dirs: &self.dirs(id),
            },
            program.as_ref(),
            options,
        )?;
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
        Ok(cmd)
    }

    /// Kills the sandbox: SIGKILL to every process in its cgroup, then its cgroups and
    /// directories are removed and its host id range freed. Its mounts (and its disk's
    /// loop device) die with its mount namespace; any that leaked onto the host are
    /// detached.
    pub fn kill(&self, id: &str) -> Result<()> {
        let entry = self.sandboxes.lock().expect("lock").remove(id);
        let Some(entry) = entry else {
            // Known on disk only (e.g. before `recover`)?
            if self.dirs(id).base.exists() && !self.creating.lock().expect("lock").contains(id) {
                let ids = self.read_state(id).and_then(|s| s.ids);
                return self.destroy(id, &self.cgroups.sandbox(id), None, None, ids);
            }
            return Err(Error::NotFound(id.to_string()));
        };
        self.destroy(
            id,
            &entry.cgroup,
            entry.monitor,
            entry.network,
            entry.state.ids,
        )
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

    fn read_state(&self, id: &str) -> Option<SandboxState> {
        let path = self.dirs(id).base.join("state.json");
        fs::read(&path)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
    }

    fn destroy(
        &self,
        id: &str,
        cgroup: &SandboxCgroup,
        monitor: Option<Child>,
        network: Option<network::Attached>,
        ids: Option<IdRange>,
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
        // Every process with these ids is gone and the disk holding their files deleted.
        if let Some(ids) = ids
            && first_err.is_none()
        {
            self.ids.release(ids);
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
            let state = self.read_state(&id);
            let range = state.as_ref().and_then(|s| s.ids);
            if let Some(range) = range {
                // Taken until its sandbox is reaped below or killed later.
                self.ids.adopt(range);
            }
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
                        lifeline: None,
                    },
                );
                continue;
            }
            match self.destroy(&id, &cgroup, None, None, range) {
                Ok(()) => report.reaped.push(id),
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        Ok(report)
    }
}

/// What differs between isolations — the seam a third one (a microVM booting the same
/// disk and layers, envd over vsock; see ARCHITECTURE.md) would implement. Everything
/// else (ids, disks, cgroups, the helper's root assembly, network, state, recovery,
/// capture) is the [`Runtime`]'s and shared.
pub(crate) trait Isolator: Send + Sync {
    /// Sets up a sandbox's control channel before it starts: a descriptor for the init
    /// (it receives it as [`init::INIT_CONTROL_FD`]) and/or binds into the sandbox.
    fn prepare_control(&self, dirs: &SandboxDirs, ids: Option<IdRange>) -> Result<Control>;

    /// How the helper runs the assembled root.
    fn launch(&self, spec: &SandboxSpec, dirs: &SandboxDirs) -> Result<Launch>;

    /// Called once the sandbox's network namespace exists (`netns_pid` is in it) and
    /// its network is attached, right before the sandbox starts.
    fn before_start(
        &self,
        _spec: &SandboxSpec,
        _dirs: &SandboxDirs,
        _hostname: &str,
        _netns_pid: i32,
        _ids: Option<IdRange>,
    ) -> Result<()> {
        Ok(())
    }

    /// Connects to the control socket (the runtime then checks the peer).
    fn connect_control(&self, dirs: &SandboxDirs) -> Result<std::os::unix::net::UnixStream>;

    /// A command running `program` inside the running sandbox.
    fn command(
        &self,
        sandbox: &Running<'_>,
        program: &std::ffi::OsStr,
        options: &ExecOptions,
    ) -> Result<Command>;

    /// Whether the host can read the sandbox's files through `/proc/<pid>/root`.
    fn host_visible_root(&self) -> bool;
}

/// A control channel prepared by [`Isolator::prepare_control`].
#[derive(Default)]
pub(crate) struct Control {
    /// Handed to the init as [`init::INIT_CONTROL_FD`].
    pub fd: Option<OwnedFd>,
    /// Bound into the sandbox.
    pub binds: Vec<BindMount>,
}

/// A running sandbox, as [`Isolator::command`] needs it.
pub(crate) struct Running<'a> {
    pub id: &'a str,
    pub init_pid: i32,
    pub cgroup: &'a SandboxCgroup,
    pub spec: &'a SandboxSpec,
    pub dirs: &'a SandboxDirs,
}

/// A helper process started ahead of its task: it waits on `channel` (its stdin) for the
/// task and descriptors (see [`handover`]), holding nothing of any sandbox.
struct WaitingHelper {
    child: Child,
    channel: std::os::unix::net::UnixStream,
    /// The read end of its status pipe.
    status: OwnedFd,
}

impl WaitingHelper {
    fn start(program: &Path) -> Result<Self> {
        let (channel, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::sys("helper task channel")(e))?;
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys("status pipe")(e.into()))?;
        let mut cmd = Command::new(program);
        cmd.arg(HELPER_MARKER)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_clear()
            .current_dir("/");
        sys::pass_fds(&mut cmd, vec![(status_write, STATUS_FD)]);
        let child = cmd
            .spawn()
            .map_err(Error::sys(format!("spawn helper {}", program.display())))?;
        Ok(Self {
            child,
            channel,
            status: status_read,
        })
    }

    /// Ends a helper that never got a task: its channel closes and it exits.
    fn dismiss(self) {
        let Self {
            mut child, channel, ..
        } = self;
        drop(channel);
        let _ = child.wait();
    }
}

/// How long work done ahead of creates (the next helper, ready disks) waits after the
/// create that triggered it: on a small machine it would otherwise compete with that
/// create for the CPUs and slow the very thing it exists to speed up. (Running it at
/// idle priority instead was measured slower: the pools then often ran dry.)
const BACKGROUND_START_DELAY: Duration = Duration::from_millis(10);

/// Helpers kept waiting: two, so that creates arriving back to back (faster than one
/// helper is started after the create before it) still find one.
const WAITING_HELPERS: usize = 2;

/// Where the next [`WaitingHelper`]s wait.
#[derive(Default)]
struct HelperSlot {
    waiting: Mutex<std::collections::VecDeque<WaitingHelper>>,
    starting: std::sync::atomic::AtomicBool,
}

impl HelperSlot {
    /// A waiting helper that is still alive, if there is one.
    fn take(&self) -> Option<WaitingHelper> {
        loop {
            let mut helper = self.waiting.lock().expect("helper slot lock").pop_front()?;
            match helper.child.try_wait() {
                Ok(None) => return Some(helper),
                _ => helper.dismiss(),
            }
        }
    }

    /// Tops the waiting helpers up on a thread of its own, unless that is under way.
    fn start_next(self: &Arc<Self>, program: &Path) {
        use std::sync::atomic::Ordering;
        if self.starting.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = Arc::downgrade(self);
        let program = program.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("courier-helper-start".into())
            .spawn(move || {
                std::thread::sleep(BACKGROUND_START_DELAY);
                loop {
                    let Some(strong) = slot.upgrade() else {
                        return;
                    };
                    if strong.waiting.lock().expect("helper slot lock").len() >= WAITING_HELPERS {
                        strong.starting.store(false, Ordering::Release);
                        return;
                    }
                    // Not holding the slot while the helper starts: the runtime may end
                    // meanwhile, and its end must not wait for this thread.
                    drop(strong);
                    let started = WaitingHelper::start(&program);
                    let Some(strong) = slot.upgrade() else {
                        if let Ok(helper) = started {
                            helper.dismiss();
                        }
                        return;
                    };
                    match started {
                        Ok(helper) => strong
                            .waiting
                            .lock()
                            .expect("helper slot lock")
                            .push_back(helper),
                        Err(error) => {
                            tracing::debug!(%error, "starting the next helper");
                            strong.starting.store(false, Ordering::Release);
                            return;
                        }
                    }
                }
            });
        if spawned.is_err() {
            self.starting.store(false, Ordering::Release);
        }
    }
}

impl Drop for HelperSlot {
    fn drop(&mut self) {
        if let Ok(waiting) = self.waiting.get_mut() {
            for helper in waiting.drain(..) {
                helper.dismiss();
            }
        }
    }
}

/// Reads the helper's status pipe line by line, with deadlines (a helper stuck in the
/// kernel must not hang `create` forever).
struct StatusReader {
    file: File,
    buf: Vec<u8>,
    eof: bool,
}

impl StatusReader {
    fn new(pipe: OwnedFd) -> Self {
        Self {
            file: File::from(pipe),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Reads until a line starting with `prefix` arrives (returning the number after it)
    /// or the pipe ends (`None`). Every line read is appended to `report`.
    fn until(
        &mut self,
        deadline: Instant,
        report: &mut String,
        prefix: &str,
    ) -> std::io::Result<Option<i32>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                report.push_str(&line);
                if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                    return Ok(rest.trim().parse().ok());
                }
                if line.starts_with("error ") {
                    return Ok(None);
                }
            }
            if self.eof || !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Reads everything up to EOF into `report`.
    fn read_to_end(&mut self, deadline: Instant, report: &mut String) -> std::io::Result<()> {
        while !self.eof && self.fill(deadline)? {}
        report.push_str(&String::from_utf8_lossy(&self.buf));
        self.buf.clear();
        Ok(())
    }

    /// One read; false at EOF.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no report from the helper in time",
                ));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            let mut chunk = [0u8; 512];
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            return Ok(true);
        }
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

/// The helper's `time <phase> <µs>` lines of `report`, as `phase=µs` pairs.
fn helper_times(report: &str) -> String {
    report
        .lines()
        .filter_map(|line| line.strip_prefix("time "))
        .map(|rest| rest.replacen(' ', "=", 1))
        .collect::<Vec<_>>()
        .join(" ")
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
