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
//! (`container.rs`, `gvisor.rs`) with the helper's `init::Launch`: how the control
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
//!
//! Code map: this file holds [`Runtime`] and its configuration; `spec.rs` what a sandbox
//! is made of; `create.rs` starting one through the helper (`helper.rs`: helpers started
//! ahead of their tasks and their status); `control.rs` status, freeze, limits, network;
//! `exec.rs` files, control socket and commands inside; `cleanup.rs` kill and recovery;
//! `registry.rs` the sandboxes known and their `state.json`; `isolator.rs` the seam
//! between isolations; [`init`] the helper's own side.

pub mod cgroup;
mod checkpoint;
mod cleanup;
mod container;
mod control;
mod create;
pub mod disk;
mod exec;
pub mod gvisor;
mod handover;
mod helper;
pub mod idmap;
pub mod init;
mod isolator;
mod layer_capture;
pub mod network;
mod registry;
pub mod rootfs;
pub mod seccomp;
mod spec;
mod step;
mod sys;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use cgroup::{CgroupDriver, CgroupStats, CgroupVersion, SandboxCgroup};
pub use checkpoint::CheckpointTimes;
pub use cleanup::Ending;
pub use gvisor::RunscConfig;
pub use idmap::IdRange;
pub use rootfs::{BindMount, HostDir, LayerManifest};
pub use spec::{
    DEFAULT_DISK_MB, DEFAULT_PATH, ExecOptions, GVISOR_CONTROL_DIR, IoLimits, Isolation, Limits,
    SANDBOX_USER, SandboxHandle, SandboxSpec, SandboxStatus,
};

pub(crate) use isolator::{Control, Isolator, Running};

use crate::error::{Error, Result};
use helper::HelperSlot;
use registry::Entry;
use rootfs::SandboxDirs;

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

/// The `RLIMIT_NOFILE` (soft, hard) this process started with, when
/// [`raise_nofile_limit`] raised it: what sandboxes' processes get back.
static SANDBOX_NOFILE: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, once. A runtime holds a
/// few descriptors per sandbox (its network's process and supervisor, lifelines, pooled
/// connections to envd), so a service manager's usual soft limit of 1,024 would end
/// creates at a few hundred sandboxes. The sandboxes' own processes get the original
/// soft limit back (the helper and `exec` restore it; see [`sandbox_nofile`]): programs
/// using `select()` break with descriptors above 1,024.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    SANDBOX_NOFILE.get_or_init(|| {
        let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok(limits) => limits,
            Err(error) => {
                tracing::warn!(%error, "reading RLIMIT_NOFILE; leaving it as it is");
                return None;
            }
        };
        if soft >= hard {
            return None;
        }
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the soft RLIMIT_NOFILE");
                Some((soft, hard))
            }
            Err(error) => {
                tracing::warn!(%error, soft, hard, "raising the soft RLIMIT_NOFILE; creates may run out of descriptors");
                None
            }
        }
    });
}

/// The `RLIMIT_NOFILE` (soft, hard) a sandbox's processes get: the one this process
/// started with, when [`raise_nofile_limit`] changed it (else `None`: inherited as is).
pub(crate) fn sandbox_nofile() -> Option<(u64, u64)> {
    SANDBOX_NOFILE.get().copied().flatten()
}

/// Default of [`RuntimeConfig::ready_disks`].
pub const DEFAULT_READY_DISKS: usize = 2;

/// The sandbox runtime. See the [module docs](self).
pub struct Runtime {
    config: RuntimeConfig,
    cgroups: CgroupDriver,
    ids: idmap::IdAllocator,
    sandboxes: Mutex<HashMap<String, Entry>>,
    /// Ids being created right now (their directory exists but no state yet).
    creating: Mutex<HashSet<String>>,
    /// Sandboxes killed whose cleanup has not finished ([`Runtime::begin_kill`]), with
    /// the layers their overlays may still use.
    ending: Mutex<HashMap<String, Vec<PathBuf>>>,
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

/// How long work done ahead of creates (the next helper, ready disks) waits after the
/// create that triggered it: on a small machine it would otherwise compete with that
/// create for the CPUs and slow the very thing it exists to speed up. (Running it at
/// idle priority instead was measured slower: the pools then often ran dry.)
const BACKGROUND_START_DELAY: Duration = Duration::from_millis(10);

impl Runtime {
    /// A runtime on `data_dir` with the default [`RuntimeConfig`].
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::with_config(RuntimeConfig::new(data_dir))
    }

    /// A runtime with an explicit configuration. Does not touch existing sandboxes; call
    /// [`recover`](Self::recover) at startup for that.
    pub fn with_config(config: RuntimeConfig) -> Result<Self> {
        raise_nofile_limit();
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
            ending: Mutex::new(HashMap::new()),
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
        let spawned = std::thread::Builder::new()
            .name("courier-preload".into())
            .spawn(move || {
                let copied = File::open(&path)
                    .and_then(|mut file| std::io::copy(&mut file, &mut std::io::sink()));
                if let Err(error) = copied {
                    tracing::debug!(%error, path = %path.display(), "preloading");
                }
            });
        if let Err(error) = spawned {
            tracing::debug!(%error, "starting the preload thread");
        }
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
                .ok_or_else(gvisor::missing_runsc),
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
}
