//! What a server is configured with, and what a create asks for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::egress::EgressRules;
use crate::limits::ServerLimits;
use crate::runtime::{IoLimits, Isolation};

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

/// What a server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory (see the [server module docs](super)).
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
    /// [`DEFAULT_WARM_SANDBOXES`], 0 turns it off. See the warm pool (`warm.rs`).
    pub warm_sandboxes: usize,
    /// I/O throttles on each sandbox's disk.
    pub io: IoLimits,
    /// Server-wide capacity, template build deadlines and upload caps (see
    /// [`crate::limits`]); defaults documented on [`ServerLimits::default`].
    pub limits: ServerLimits,
    /// Internal ranges networked sandboxes may reach anyway (loopback, link-local,
    /// private, CGNAT, the host's own addresses... are refused otherwise; see
    /// [`crate::egress`]). Empty by default. A sandbox's own `denyOut` still applies.
    pub egress_allow: Vec<crate::egress::OperatorAllow>,
    /// PEM files of roots that upstream certificates may chain to when TLS to a host with
    /// `network.rules` transforms is intercepted, besides the host's own roots (an
    /// internal CA; tests name their own). Empty by default.
    pub egress_upstream_roots: Vec<PathBuf>,
    /// Size of each volume and the total per API key (see [`crate::volumes`]).
    pub volumes: crate::volumes::VolumeLimits,
    /// Where `fromImage` templates are pulled from (registry mirrors) and their size
    /// caps (see [`crate::images`]).
    pub images: crate::images::ImageConfig,
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
            egress_upstream_roots: Vec::new(),
            volumes: crate::volumes::VolumeLimits::default(),
            images: crate::images::ImageConfig::default(),
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
    /// Resume the sandbox when traffic reaches it while paused (E2B's
    /// `autoResume.enabled`); see [`crate::proxy`].
    pub auto_resume: bool,
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
    /// E2B's `network.maskRequestHost`: the `Host` requests to the sandbox's ports arrive
    /// with, `${PORT}` standing for the port; `None` (default) keeps the client's.
    pub mask_request_host: Option<String>,
    /// Volumes to mount (E2B's `volumeMounts`, resolved against the caller's volumes by
    /// the API); default none. A create with volumes never takes a warm sandbox.
    pub volume_mounts: Vec<VolumeBind>,
    /// Who asks ([`crate::keys::owner_of`] of the API key); `None` for the server's own
    /// sandboxes. Only the owner's snapshots resolve as `template`.
    pub owner: Option<String>,
    /// Whether the deadline's auto-pause keeps memory (E2B's `autoPauseMemory`, default
    /// true); false makes it filesystem-only.
    pub auto_pause_memory: bool,
}

/// A volume mounted read-write into a new sandbox, its files of host uid/gid 1000 the
/// sandbox `user`'s (see [`crate::runtime::BindMount::map_user`]); `nosuid`, `nodev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBind {
    /// The volume's id.
    pub volume_id: String,
    /// Its name.
    pub name: String,
    /// Its host mount point (see [`crate::volumes::Volume::mount_point`]).
    pub source: PathBuf,
    /// Absolute path inside the sandbox, normalised (see [`VolumeBind::check_path`]).
    pub path: String,
}

/// Paths the runtime provides in every sandbox, which a volume may not cover.
const RESERVED_PATHS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    crate::runtime::GVISOR_CONTROL_DIR,
    ENVD_PATH,
    "/usr/local/bin/sudo",
    "/usr/bin/sudo",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
];

impl VolumeBind {
    /// Checks and normalises a mount path: absolute, no `..`, not `/` nor a path of the
    /// sandbox runtime's (`/proc`, `/sys`, `/dev`, envd, `sudo`, `/etc/hosts`...) or a
    /// directory above one.
    ///
    /// ```
    /// use courier_sandboxd::server::config::VolumeBind;
    /// assert_eq!(VolumeBind::check_path("/mnt//data/").unwrap(), "/mnt/data");
    /// assert!(VolumeBind::check_path("data").is_err());
    /// assert!(VolumeBind::check_path("/mnt/../etc").is_err());
    /// assert!(VolumeBind::check_path("/").is_err());
    /// // Where the runtime's own files are, or above them.
    /// assert!(VolumeBind::check_path("/usr/local/bin").is_err());
    /// assert!(VolumeBind::check_path("/proc/self").is_err());
    /// assert!(VolumeBind::check_path("/etc").is_err());
    /// assert!(VolumeBind::check_path("/usr/local/share/data").is_ok());
    /// ```
    pub fn check_path(path: &str) -> crate::error::Result<String> {
        let invalid = |reason: &str| crate::error::Error::InvalidSpec {
            field: "volumeMounts.path",
            reason: format!("{path:?}: {reason}"),
        };
        if !path.starts_with('/') {
            return Err(invalid("must be an absolute path"));
        }
        if path.contains('\0') {
            return Err(invalid("must not contain NUL"));
        }
        let mut parts = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(invalid("must not contain `..`")),
                part => parts.push(part),
            }
        }
        if parts.is_empty() {
            return Err(invalid("cannot mount a volume over the sandbox's root"));
        }
        let path = format!("/{}", parts.join("/"));
        // What the runtime puts in every sandbox: a volume over it (or over a directory
        // holding it) would hide envd or the kernel's file systems, or have the host
        // write the sandbox's identity files into the volume.
        for reserved in RESERVED_PATHS {
            let covers = reserved == &path || reserved.starts_with(&format!("{path}/"));
            let inside_kernel_fs = ["/proc", "/sys", "/dev"].contains(reserved)
                && path.starts_with(&format!("{reserved}/"));
            if covers || inside_kernel_fs {
                return Err(invalid(&format!(
                    "{reserved} belongs to the sandbox runtime; mount volumes elsewhere \
                     (e.g. /mnt/<name> or under /home/user)"
                )));
            }
        }
        Ok(path)
    }
}

impl Default for CreateRequest {
    fn default() -> Self {
        Self {
            template: crate::templates::BASE_TEMPLATE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            metadata: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            auto_pause: false,
            auto_resume: false,
            memory_mb: None,
            cpu_count: None,
            allow_internet: false,
            die_with_server: false,
            egress: EgressRules::default(),
            allow_public_traffic: true,
            mask_request_host: None,
            volume_mounts: Vec::new(),
            owner: None,
            auto_pause_memory: true,
        }
    }
}
