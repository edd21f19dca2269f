//! The sandbox lifecycle: create, follow-up messages, kill, pause and resume, soft delete,
//! restore and purge, kill all of a project, timeouts.
//!
//! Every status change is one compare-and-set in the store (which keeps the project's
//! active-sandbox counter exact); the provider is reached only through
//! [`SandboxApi`].
//!
//! ## Timeouts
//!
//! [`Orchestrator::tick_timeouts`] (called periodically) looks at each sandbox's deadline.
//! Within [`TimeoutPolicy::checkpoint_lead`] of it, a sandbox whose agent is working has
//! its deadline pushed back by [`TimeoutPolicy::extension`] (at the provider too, with
//! `set_timeout`), never beyond [`TimeoutPolicy::max_lifetime`] from its creation; an idle
//! one (or one at its maximum) is checkpointed: the work in progress is committed and
//! pushed ([`save_work_command`]) while the sandbox still lives. At the deadline the
//! sandbox is killed (which saves the work again, best effort).
//!
//! "Now" is the orchestrator's [`Clock`] ([`Orchestrator::with_clock`], the system clock
//! by default): [`Orchestrator::check_timeouts`] sweeps at the clock's time, a resumed
//! sandbox's deadline counts from it, and a kill bills compute seconds until it.
//!
//! ## Restart safety
//!
//! The agent runs as a background process tagged [`AGENT_TAG`] whose stdout is also
//! copied (`tee`) into a log file in the sandbox ([`AGENT_RUN_DIR`]), next to its pid and,
//! once it ends, its exit code. envd does not replay past output to a new connection, so
//! that file is what makes re-attaching exact: [`Orchestrator::reconcile`] (run at
//! startup) resumes each running sandbox's `streaming` message from the number of lines
//! its stored raw log already holds (each stdout line is stored as exactly one raw-log
//! line), following the file until the agent's process ends, with the same sequence
//! number, so subscribers see neither a gap nor a repeat: a batch of lines' text and raw
//! lines are stored in one write ([`Store::append_messages`]), so a process that dies
//! mid-write leaves both or neither. The parser's state from before the restart (e.g. the session id) is
//! not restored; usage is taken from the run's result event as usual.
//!
//! Reconcile also ends what a restart left inconsistent: sandboxes `running` or `paused`
//! in the store but gone at the provider become `killed` with the reason, `creating` ones
//! (a create cut short) become `error` with their provider sandbox destroyed, and provider
//! sandboxes carrying Courier's metadata ([`METADATA_SANDBOX_ID`]) whose sandbox is
//! unknown to the store or already ended are killed as orphans. Follow-ups stored but not
//! yet delivered (user messages after the streaming answer) are queued again. A sandbox
//! paused across a restart is followed again when [resumed](Orchestrator::resume).
//!
//! ## Where each part lives
//!
//! - `create`: recording a new sandbox, creating it at the provider, executing its setup
//!   plan and starting its agent.
//! - `run`: one agent run followed in the background, its end delivering the next queued
//!   message; stopping the agent; billing a stopped run.
//! - `follow_up`: follow-up messages, delivered at once or queued.
//! - `kill`: kill, kill all of a project, soft delete, restore and purge.
//! - `pause`: pause and resume.
//! - `timeouts`: the deadline sweep (extend, checkpoint, kill).
//! - `reconcile` and `reattach`: restart safety.
//! - `answers`: waiting for an agent's answer, saving work while the sandbox lives.
//! - `commands`: the shell lines run in sandboxes for all of these.

mod answers;
mod commands;
mod create;
mod follow_up;
mod grants;
mod kill;
mod pause;
mod reattach;
mod reconcile;
mod run;
mod timeouts;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use courier_e2b::models::SandboxRecord;
use courier_e2b::{CommandSpec, SandboxApi};
use courier_store::{SandboxId, SandboxQuota, Store};
use courier_tools::{ProviderEndpoints, ThinkingEffort, ToolId, Usage, shell_quote};
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::keys::KeyVault;
use crate::learnings::LearningPipeline;
use crate::pr::PrPipeline;
use crate::stream::EventHub;
use crate::templates::ToolTemplates;
use crate::{OrchestratorError, Result};

pub use answers::Answer;
pub use commands::{agent_command, reattach_command, save_work_command};
pub use grants::RunGrants;
pub use kill::{KillOptions, PullRequest};
pub use reconcile::ReconcileReport;
pub use timeouts::TimeoutPolicy;

/// Metadata key on provider sandboxes holding Courier's sandbox id (recognises orphans).
pub const METADATA_SANDBOX_ID: &str = "courier_sandbox_id";
/// Metadata key on provider sandboxes holding the project id.
pub const METADATA_PROJECT_ID: &str = "courier_project_id";

/// The envd tag of the agent's background process.
pub const AGENT_TAG: &str = "courier-agent";
/// The directory in the sandbox holding the current agent run's output copy (`out.log`),
/// its shell's pid (`pid`), the agent's session id (`sid`, see
/// [`courier_tools::command::tracked`]) and, once it ended, its exit code (`exit`).
pub const AGENT_RUN_DIR: &str = courier_tools::AGENT_RUN_DIR;

/// The feature branch of a sandbox created without one: `courier/<sandbox id>`. The whole
/// id, not a prefix: a UUIDv7 starts with its timestamp, so a short prefix is shared by
/// every sandbox created within the same minute or so.
pub(crate) fn default_branch(id: SandboxId) -> String {
    format!("courier/{id}")
}

/// What the orchestrator holds for each sandbox it follows.
struct Live {
    record: SandboxRecord,
    tool: ToolId,
    model: Option<String>,
    thinking_effort: Option<ThinkingEffort>,
    env: HashMap<String, String>,
    working: bool,
    queue: VecDeque<String>,
    /// The task following the current run.
    agent: Option<JoinHandle<()>>,
    /// The session's running usage total as the tool last reported it (tools that report
    /// cumulative figures: the next run's baseline).
    session_usage: Option<Usage>,
    /// When the sandbox ends unless extended.
    deadline: DateTime<Utc>,
    /// The deadline the work was last checkpointed for.
    checkpointed: Option<DateTime<Utc>>,
    /// Its tokens are counted and billed at the gateway, not from the CLI's output.
    metered_at_gateway: bool,
}

/// Runs sandboxes through their lifecycle. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Orchestrator {
    store: Arc<dyn Store>,
    api: Arc<dyn SandboxApi>,
    vault: KeyVault,
    hub: EventHub,
    live: Arc<Mutex<HashMap<SandboxId, Live>>>,
    pull_requests: Option<PrPipeline>,
    learnings: Option<LearningPipeline>,
    tool_path: Vec<String>,
    timeouts: TimeoutPolicy,
    clock: Arc<dyn Clock>,
    sandbox_internet: bool,
    templates: ToolTemplates,
    quota: SandboxQuota,
    endpoints: ProviderEndpoints,
    gateway: Option<crate::gateway::GatewayLink>,
    cluster: Option<Arc<courier_store::Cluster>>,
    /// Sandboxes claimed from a dead replica whose take-over did not finish.
    unsettled: Arc<Mutex<std::collections::HashSet<SandboxId>>>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator over a store, a sandbox provider, a key vault and an event hub.
    pub fn new(
        store: Arc<dyn Store>,
        api: Arc<dyn SandboxApi>,
        vault: KeyVault,
        hub: EventHub,
    ) -> Self {
        Orchestrator {
            templates: ToolTemplates::new(store.clone(), api.clone()),
            store,
            api,
            vault,
            hub,
            live: Arc::default(),
            pull_requests: None,
            learnings: None,
            tool_path: Vec::new(),
            timeouts: TimeoutPolicy::default(),
            clock: Arc::new(SystemClock),
            sandbox_internet: true,
            quota: SandboxQuota::default(),
            endpoints: ProviderEndpoints::default(),
            gateway: None,
            cluster: None,
            unsettled: Arc::default(),
        }
    }

    /// Runs as one replica of a cluster (see [`courier_store::Cluster`]): it follows only
    /// the sandboxes it owns (those it creates, and those it takes over from dead replicas
    /// with [`take_over`](Self::take_over)), and its hub must have joined the same
    /// cluster ([`EventHub::join_cluster`]) so other replicas stream what it records.
    pub fn with_cluster(mut self, cluster: Arc<courier_store::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster this orchestrator is a replica of, if any.
    pub fn cluster(&self) -> Option<&Arc<courier_store::Cluster>> {
        self.cluster.as_ref()
    }

    /// Marks a sandbox as followed here: owned in the cluster, its events published by
    /// this replica (a tail of it stops first, so nothing is published twice).
    async fn follow_here(&self, id: SandboxId) -> Result<()> {
        if let Some(cluster) = &self.cluster {
            cluster.own(id).await?;
        }
        self.hub.follow_here(id).await;
        Ok(())
    }

    /// Keeps provider keys and the GitHub token out of the sandboxes: each sandbox gets
    /// its run's token and reaches its providers and GitHub through `link`'s gateway
    /// (unless its project turns `keys_via_gateway` off). Serve the gateway with
    /// [`courier_gateway::Gateway`] over [`Self::gateway_grants`]. A malformed URL is
    /// [`OrchestratorError::InvalidConfig`] naming `gateway.url`.
    pub fn with_gateway(mut self, link: crate::gateway::GatewayLink) -> Result<Self> {
        link.validate()?;
        self.gateway = Some(link);
        Ok(self)
    }

    /// What the gateway asks about runs, answered by this orchestrator.
    pub fn gateway_grants(&self) -> std::sync::Arc<RunGrants> {
        let proof = self.gateway.as_ref().is_some_and(|g| g.proof_at_egress);
        grants::RunGrants::new(self.clone(), proof)
    }

    /// The key vault.
    pub fn vault(&self) -> &KeyVault {
        &self.vault
    }

    /// Now, by the orchestrator's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Limits how many live sandboxes (`creating`, `running` or `paused`) one user and
    /// one project may have at once (default: no limit). A create past a quota fails with
    /// [`StoreError::QuotaExceeded`](courier_store::StoreError::QuotaExceeded) (inside [`OrchestratorError::Store`]) before anything
    /// is made; killed and failed sandboxes free their place. Counted and recorded in one
    /// store transaction, so concurrent creates cannot overshoot.
    pub fn with_sandbox_quota(mut self, quota: SandboxQuota) -> Self {
        self.quota = quota;
        self
    }

    /// Points the agents at these provider base URLs instead of the providers' own (an
    /// LLM gateway, or a test's stand-in). Checked at once: a malformed URL is
    /// [`OrchestratorError::InvalidConfig`] naming it.
    pub fn with_provider_endpoints(mut self, endpoints: ProviderEndpoints) -> Result<Self> {
        endpoints
            .validate()
            .map_err(|e| OrchestratorError::InvalidConfig {
                field: "endpoints",
                message: e.to_string(),
            })?;
        self.endpoints = endpoints;
        Ok(self)
    }

    /// Whether sandboxes are created with outbound internet access (default `true`:
    /// agents reach their LLM APIs, package registries and git remotes). The request says
    /// so explicitly, because providers differ in their default (E2B: on;
    /// courier-sandboxd: off).
    pub fn with_sandbox_internet(mut self, allow: bool) -> Self {
        self.sandbox_internet = allow;
        self
    }

    /// Takes the time for every time-based decision (deadlines, checkpoints, billed
    /// compute seconds, token usage dates) from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Puts `dirs` first on `PATH` for every command run in a sandbox: operator tools
    /// mounted into sandboxes (e.g. courier-sandboxd's shared dirs). Set in the command
    /// line itself, because commands run in a login shell, whose `/etc/profile` resets an
    /// inherited `PATH`.
    pub fn with_tool_path(mut self, dirs: Vec<String>) -> Self {
        self.tool_path = dirs;
        self
    }

    /// Replaces the [`TimeoutPolicy`].
    pub fn with_timeouts(mut self, policy: TimeoutPolicy) -> Self {
        self.timeouts = policy;
        self
    }

    /// A command for a sandbox, with the tool path applied.
    fn command(&self, cmd: impl Into<String>) -> CommandSpec {
        let cmd = cmd.into();
        if self.tool_path.is_empty() {
            return CommandSpec::new(cmd);
        }
        let path: Vec<String> = self.tool_path.iter().map(|d| shell_quote(d)).collect();
        CommandSpec::new(format!("export PATH={}:\"$PATH\"; {cmd}", path.join(":")))
    }

    /// Stops following every agent (their processes keep running in the sandboxes) and
    /// forgets the live state: what a process exit does, for a graceful restart or tests.
    /// A later orchestrator picks them up again with [`reconcile`](Self::reconcile).
    pub fn detach_all(&self) {
        for (_, live) in self.lock().drain() {
            if let Some(agent) = live.agent {
                agent.abort();
            }
        }
        self.hub.follow_none();
    }

    /// Opens a pull request for every killed sandbox's branch with `pipeline`. A pipeline
    /// without a key vault gets this orchestrator's (for its merge polling).
    pub fn with_pull_requests(mut self, pipeline: PrPipeline) -> Self {
        let pipeline = if pipeline.has_key_vault() {
            pipeline
        } else {
            pipeline.with_key_vault(self.vault.clone())
        };
        self.pull_requests = Some(pipeline);
        self
    }

    /// The pull request pipeline, when configured (e.g. to
    /// [spawn its merge poller](PrPipeline::spawn_merge_poller)).
    pub fn pull_requests(&self) -> Option<&PrPipeline> {
        self.pull_requests.as_ref()
    }

    /// Queues learning extraction for every killed sandbox with `pipeline`. Without one,
    /// the extraction status stays `pending` for a later worker.
    pub fn with_learnings(mut self, pipeline: LearningPipeline) -> Self {
        self.learnings = Some(pipeline);
        self
    }

    /// Adjusts how the tools' templates are built (install commands, poll interval); the
    /// default builds them over this orchestrator's store and provider with the
    /// registry's install commands.
    ///
    /// ```no_run
    /// # fn demo(orchestrator: courier_orchestrator::lifecycle::Orchestrator) {
    /// use courier_tools::ToolId;
    /// let orchestrator = orchestrator
    ///     .with_tool_templates(|t| t.with_install_command(ToolId::Claude, "npm install -g @anthropic-ai/claude-code@2.1.197"));
    /// # }
    /// ```
    pub fn with_tool_templates(
        mut self,
        adjust: impl FnOnce(ToolTemplates) -> ToolTemplates,
    ) -> Self {
        self.templates = adjust(self.templates);
        self
    }

    /// The tools' templates at this orchestrator's provider: build them, find the missing
    /// ones.
    pub fn tool_templates(&self) -> &ToolTemplates {
        &self.templates
    }

    /// The clock its time-based decisions ask.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store it records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The event hub subscribers listen on.
    pub fn hub(&self) -> &EventHub {
        &self.hub
    }

    /// The live state of every followed sandbox; a lock poisoned by a panicking task is
    /// taken over rather than spreading the panic.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the sandbox's agent is working on a message now.
    pub fn is_working(&self, id: SandboxId) -> bool {
        self.lock().get(&id).is_some_and(|l| l.working)
    }
}
