//! The seam between isolations.

use std::os::fd::OwnedFd;
use std::process::Command;

use super::cgroup::SandboxCgroup;
use super::idmap::IdRange;
use super::init::Launch;
use super::rootfs::{BindMount, SandboxDirs};
use super::spec::{ExecOptions, SandboxSpec};
use crate::error::Result;

/// What differs between isolations — the seam a third one (a microVM booting the same
/// disk and layers, envd over vsock; see ARCHITECTURE.md) would implement. Everything
/// else (ids, disks, cgroups, the helper's root assembly, network, state, recovery,
/// capture) is the [`Runtime`](super::Runtime)'s and shared.
pub(crate) trait Isolator: Send + Sync {
    /// Sets up a sandbox's control channel before it starts: a descriptor for the init
    /// (it receives it as [`init::INIT_CONTROL_FD`](super::init::INIT_CONTROL_FD)) and/or binds into the sandbox.
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
    /// Handed to the init as [`init::INIT_CONTROL_FD`](super::init::INIT_CONTROL_FD).
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
