//! What a template build needs of the control plane that runs it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::runtime::Runtime;
use crate::state::SandboxRecord;
use crate::templates::Templates;

/// The control plane a build runs on: it owns the templates, creates and kills the build
/// sandbox, and runs the sandboxes' runtime. The server (`Sandboxd`) is the one host; the
/// trait keeps builds from depending on the server (which depends on them for the start
/// and ready commands of new sandboxes).
pub trait BuildHost: Clone + Send + Sync + 'static {
    /// The templates builds read and record.
    fn templates(&self) -> &Templates;

    /// The deadlines builds run under.
    fn build_limits(&self) -> BuildLimits;

    /// Creates a build sandbox (one that dies with the server) and returns once its envd
    /// is ready.
    fn create_build_sandbox(
        &self,
        sandbox: BuildSandbox,
    ) -> impl Future<Output = Result<SandboxRecord>> + Send;

    /// Kills sandbox `id` (`NotFound` when it is gone already).
    fn kill_sandbox(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Whether sandbox `id` is still known.
    fn has_sandbox(&self, id: &str) -> bool;

    /// Records of every sandbox known.
    fn sandboxes(&self) -> Vec<SandboxRecord>;

    /// The runtime the sandboxes run in (to reach a sandbox's envd and capture its layer).
    fn shared_runtime(&self) -> Arc<Runtime>;

    /// Told when a build has ended: what the previous version of its template used may
    /// be unused now (warm sandboxes, layers).
    fn build_ended(&self) -> impl Future<Output = ()> + Send;
}

/// The deadlines of template builds (see [`crate::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildLimits {
    /// Each step's deadline.
    pub step: Duration,
    /// The whole build's deadline, from its start.
    pub build: Duration,
    /// How long the start and ready commands may take to succeed.
    pub ready: Duration,
}

/// The build sandbox a build asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSandbox {
    /// The parent template's id.
    pub template: String,
    /// Its lifetime (capped at the server's longest).
    pub timeout: Duration,
    /// Its metadata (marks it as a build sandbox).
    pub metadata: BTreeMap<String, String>,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// CPU count.
    pub cpu_count: u32,
    /// Whether it gets outbound internet access.
    pub allow_internet: bool,
}
