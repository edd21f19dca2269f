//! What a sandbox is made of: its spec, limits, isolation and handle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::rootfs::BindMount;
use crate::error::{Error, Result};

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
    pub(super) fn validate(&self) -> Result<()> {
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
    /// Read-only layers, bottom first (see [`rootfs`](super::rootfs) for their layout). At least one.
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
    /// Outbound network through slirp4netns (see [`network`](super::network)); without it the sandbox
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
    /// Give the init a control socket: on descriptor [`init::INIT_CONTROL_FD`](super::init::INIT_CONTROL_FD) (a socket
    /// bound but not listening) for a namespace sandbox, or the directory
    /// [`GVISOR_CONTROL_DIR`] for a gVisor one; the runtime reaches it with
    /// [`Runtime::connect_control`](super::Runtime::connect_control).
    #[serde(default)]
    pub control_socket: bool,
    /// Kill the sandbox when the process running this runtime exits (for sandboxes that
    /// must not outlive their server, like template build sandboxes). Others survive a
    /// server restart and are adopted by [`Runtime::recover`](super::Runtime::recover).
    #[serde(default)]
    pub die_with_runtime: bool,
    /// gVisor only: restore the memory image in this directory (`runsc restore`, see
    /// [`Runtime::checkpoint`](super::Runtime::checkpoint)) instead of starting the init.
    /// The layers must be those the image's sandbox stood on, its disk's contents
    /// included; its envd comes up with the control socket let go of, to be bound again
    /// with [`Runtime::rebind_control`](super::Runtime::rebind_control).
    #[serde(default)]
    pub restore_from: Option<PathBuf>,
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
            restore_from: None,
        }
    }
}

/// The name of the unprivileged user every sandbox has (the base layer's; its home is
/// `/home/<name>`, which [`Runtime::command_with`](super::Runtime::command_with) sets as
/// `HOME` for a user other than root).
pub const SANDBOX_USER: &str = "user";

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
    /// Frozen by [`Runtime::freeze`](super::Runtime::freeze); memory kept.
    Frozen,
    /// Its init has exited; only [`Runtime::kill`](super::Runtime::kill) (cleanup) remains.
    Exited,
}

/// How [`Runtime::command_with`](super::Runtime::command_with) runs a program inside a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// `(uid, gid)` to run as (no supplementary groups); `None` = root. The base layer's
    /// user is `(1000, 1000)`.
    pub user: Option<(u32, u32)>,
    /// Working directory inside the sandbox; `None` = `/`.
    pub cwd: Option<PathBuf>,
}

pub(super) fn validate_id(id: &str) -> Result<()> {
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
}
