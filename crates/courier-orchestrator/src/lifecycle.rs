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
//! number, so subscribers see neither a gap nor a repeat. The one window left: a process
//! that dies between storing a line's text and storing its raw line repeats that line's
//! text on re-attach. The parser's state from before the restart (e.g. the session id) is
//! not restored; usage is taken from the run's result event as usual.
//!
//! Reconcile also ends what a restart left inconsistent: sandboxes `running` or `paused`
//! in the store but gone at the provider become `killed` with the reason, `creating` ones
//! (a create cut short) become `error` with their provider sandbox destroyed, and provider
//! sandboxes carrying Courier's metadata ([`METADATA_SANDBOX_ID`]) whose sandbox is
//! unknown to the store or already ended are killed as orphans. Follow-ups stored but not
//! yet delivered (user messages after the streaming answer) are queued again. A sandbox
//! paused across a restart is followed again when [resumed](Orchestrator::resume).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use courier_e2b::models::{ListedSandbox, NewSandbox as ProviderSandbox, SandboxRecord};
use courier_e2b::{CommandSpec, SandboxApi};
use courier_store::{
    GitInfo, Message, MessageRole, MessageStatus, NewSandbox, PageRequest, Provider, Sandbox,
    SandboxFilter, SandboxId, SandboxQuota, SandboxStatus, Store, StoreError,
};
use courier_tools::{
    PROJECT_DIR, ProviderEndpoints, RunRequest, Secret, SetupContext, SetupStep, ThinkingEffort,
    ToolId, Usage, build_setup_plan, first_run_command, follow_up_command, shell_quote,
    stop_agent_command, tracked,
};
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::CreateRequest;
use crate::keys::{KeyVault, check_required};
use crate::learnings::{LearningPipeline, active_learnings};
use crate::pr::{PrPipeline, github_token};
use crate::stream::{EventHub, RunOutcome, StreamRecorder, record_user_message};
use crate::templates::ToolTemplates;
use crate::usage::compute_record_until;
use crate::{OrchestratorError, Result};

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
/// The exit code reported for a re-attached run whose exit code was never written (its
/// shell was killed).
const UNKNOWN_EXIT: i32 = 137;

/// How the orchestrator treats deadlines (see the [module docs](self#timeouts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// How long before a deadline the work is checkpointed or the deadline extended.
    pub checkpoint_lead: Duration,
    /// How far a working agent's deadline is pushed back at a time.
    pub extension: Duration,
    /// The longest a sandbox may live from its creation, extensions included.
    pub max_lifetime: Duration,
}

impl Default for TimeoutPolicy {
    /// 60 s lead, 10 min extensions, at most 14 400 000 ms (4 h).
    fn default() -> Self {
        TimeoutPolicy {
            checkpoint_lead: Duration::from_secs(60),
            extension: Duration::from_secs(600),
            max_lifetime: Duration::from_millis(*crate::config::TIMEOUT_MS.end() as u64),
        }
    }
}

/// What [`Orchestrator::reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Sandboxes `running`/`paused` in the store but gone at the provider, now `killed`.
    pub vanished: Vec<SandboxId>,
    /// Sandboxes left `creating` by an interrupted create, now `error`.
    pub interrupted: Vec<SandboxId>,
    /// Provider sandboxes (ids) carrying Courier's metadata but unknown or ended here,
    /// killed.
    pub orphans: Vec<String>,
    /// Running sandboxes whose agent this orchestrator follows again.
    pub reattached: Vec<SandboxId>,
}

/// Wraps an agent command line: it runs in a session of its own whose id is recorded
/// ([`tracked`], so [`stop_agent_command`] finds every process of it), its stdout also
/// goes to the run's log file, and its shell's pid and exit code are written next to it
/// (see the [module docs](self)).
pub fn agent_command(line: &str) -> String {
    let dir = AGENT_RUN_DIR;
    format!(
        "mkdir -p {dir} && rm -f {dir}/exit {dir}/sid && echo $$ > {dir}/pid && {{ {} ; }} | tee {dir}/out.log; \
         code=${{PIPESTATUS[0]}}; echo $code > {dir}/exit; exit $code",
        tracked(line)
    )
}

/// Follows a run's log file from line `skip + 1` until the run's shell ends, then exits
/// with the run's exit code (see the [module docs](self)).
pub fn reattach_command(skip: usize) -> String {
    let dir = AGENT_RUN_DIR;
    format!(
        "tail -n +{} -f --pid=\"$(cat {dir}/pid)\" {dir}/out.log; exit \"$(cat {dir}/exit 2>/dev/null || echo {UNKNOWN_EXIT})\"",
        skip + 1
    )
}

/// A create the provider answered 404: the sandbox does not exist yet, so what is
/// missing is its template. Says so and names the fix.
fn missing_template(error: courier_e2b::Error, tool: ToolId, template: &str) -> OrchestratorError {
    match error {
        courier_e2b::Error::NotFound { .. } => OrchestratorError::TemplateMissing {
            template: template.to_owned(),
            tool: tool.as_str(),
            hint: crate::templates::build_hint(tool),
        },
        other => other.into(),
    }
}

/// How long one setup command may run.
const SETUP_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the kill-time commit and push may take.
const SAVE_WORK_TIMEOUT: Duration = Duration::from_secs(120);

/// The shell line that saves unfinished work at kill: stage, commit if anything changed,
/// push the branch. Best effort: its failure never blocks the kill.
pub fn save_work_command() -> String {
    format!(
        "cd {} && git add -A && (git diff --cached --quiet || git commit -m {}) && git push -u origin HEAD",
        shell_quote(PROJECT_DIR),
        shell_quote("Courier: save work in progress")
    )
}

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
        }
    }

    /// Limits how many live sandboxes (`creating`, `running` or `paused`) one user and
    /// one project may have at once (default: no limit). A create past a quota fails with
    /// [`StoreError::QuotaExceeded`] (inside [`OrchestratorError::Store`]) before anything
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

    /// The event hub subscribers listen on.
    pub fn hub(&self) -> &EventHub {
        &self.hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the sandbox's agent is working on a message now.
    pub fn is_working(&self, id: SandboxId) -> bool {
        self.lock().get(&id).is_some_and(|l| l.working)
    }

    /// Creates a sandbox and starts its agent on the prompt.
    ///
    /// Validates the request and the keys before anything is recorded; then records
    /// `creating` (within the [sandbox quota](Self::with_sandbox_quota)), creates the
    /// provider sandbox, executes the setup plan, starts the agent
    /// in the background and moves to `running`. Any failure after recording ends in
    /// `error` with its message and the provider sandbox destroyed.
    pub async fn create(&self, request: CreateRequest) -> Result<Sandbox> {
        let valid = request.validate()?;
        let keys = self
            .vault
            .provider_keys(request.user_id, request.project_id)
            .await?;
        check_required(valid.tool, &keys)?;
        let github = self
            .vault
            .resolve(request.user_id, request.project_id, Provider::GitHub)
            .await?
            .map(|k| k.secret);
        let sandbox = self
            .store
            .create_sandbox_within(
                NewSandbox {
                    user_id: request.user_id,
                    project_id: request.project_id,
                    config: valid.sandbox.clone(),
                    cli_tool: valid.tool.as_str().to_owned(),
                    model: valid.model.clone(),
                    prompt: request.prompt.clone(),
                    links: request.links.clone(),
                    repo_url: request.repo_url.clone(),
                    branch: request.branch.clone(),
                },
                self.quota,
            )
            .await?;
        let branch = request
            .branch
            .clone()
            .unwrap_or_else(|| format!("courier/{}", &sandbox.id.to_string()[..8]));
        let context = SetupContext {
            tool: valid.tool,
            repo_url: request.repo_url.clone(),
            base_branch: request.base_branch.clone(),
            branch_name: branch.clone(),
            github_token: github,
            keys,
            learnings: active_learnings(self.store.as_ref(), request.project_id).await?,
            endpoints: self.endpoints.clone(),
            ..Default::default()
        };
        let mut provider_id = None;
        let started = async {
            self.store
                .update_sandbox_git(
                    sandbox.id,
                    GitInfo {
                        repo_url: request.repo_url.clone(),
                        branch: Some(branch),
                        ..Default::default()
                    },
                )
                .await?;
            let plan = build_setup_plan(&context)?;
            let mut metadata = HashMap::new();
            metadata.insert(METADATA_SANDBOX_ID.to_owned(), sandbox.id.to_string());
            metadata.insert(
                METADATA_PROJECT_ID.to_owned(),
                sandbox.project_id.to_string(),
            );
            let record = self
                .api
                .create(ProviderSandbox {
                    template_id: valid.template.clone(),
                    timeout: Some((valid.sandbox.timeout_ms / 1000) as u64),
                    metadata,
                    allow_internet_access: Some(self.sandbox_internet),
                    ..Default::default()
                })
                .await
                .map_err(|e| missing_template(e, valid.tool, &valid.template))?;
            provider_id = Some(record.sandbox_id.clone());
            self.store
                .set_provider_sandbox_id(sandbox.id, &record.sandbox_id)
                .await?;
            let env = self.execute_plan(&record, &plan.steps).await?;
            record_user_message(self.store.as_ref(), &self.hub, sandbox.id, &request.prompt)
                .await?;
            self.lock().insert(
                sandbox.id,
                Live {
                    record,
                    tool: valid.tool,
                    model: valid.model.clone(),
                    thinking_effort: valid.thinking_effort,
                    env,
                    working: true,
                    queue: VecDeque::new(),
                    agent: None,
                    session_usage: None,
                    deadline: sandbox.created_at
                        + chrono::Duration::milliseconds(valid.sandbox.timeout_ms),
                    checkpointed: None,
                },
            );
            let running = self
                .store
                .transition_sandbox(
                    sandbox.id,
                    SandboxStatus::Creating,
                    SandboxStatus::Running,
                    None,
                )
                .await?;
            self.start_run(sandbox.id, request.prompt.clone(), false)
                .await?;
            Ok::<_, OrchestratorError>(running)
        }
        .await;
        match started {
            Ok(running) => Ok(running),
            Err(err) => {
                self.fail(sandbox.id, provider_id.as_deref(), &err).await;
                Err(err)
            }
        }
    }

    /// Ends a failed create: provider sandbox destroyed, `error` with the message.
    async fn fail(&self, id: SandboxId, provider_id: Option<&str>, err: &OrchestratorError) {
        self.fail_with(id, provider_id, err.to_string()).await;
    }

    /// Ends a create with `message`: provider sandbox destroyed, `error`.
    async fn fail_with(&self, id: SandboxId, provider_id: Option<&str>, message: String) {
        if let Some(live) = self.lock().remove(&id)
            && let Some(agent) = live.agent
        {
            agent.abort();
        }
        if let Some(pid) = provider_id
            && let Err(e) = self.api.kill(pid).await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not destroy a failed sandbox");
        }
        for from in [SandboxStatus::Creating, SandboxStatus::Running] {
            match self
                .store
                .transition_sandbox(id, from, SandboxStatus::Error, Some(message.clone()))
                .await
            {
                Ok(_) => break,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::error!(sandbox = %id, error = %e, "could not record a failed create");
                    break;
                }
            }
        }
    }

    /// Executes setup steps in order; returns the environment their `SetEnv` steps built.
    async fn execute_plan(
        &self,
        record: &SandboxRecord,
        steps: &[SetupStep],
    ) -> Result<HashMap<String, String>> {
        let mut env = HashMap::new();
        for (index, step) in steps.iter().enumerate() {
            let number = index + 1;
            let failed = |message: String| OrchestratorError::Setup {
                step: number,
                message,
            };
            match step {
                SetupStep::WriteFile {
                    path,
                    contents,
                    mode,
                } => {
                    self.api
                        .write_file(record, path, Bytes::from(contents.expose().to_owned()))
                        .await
                        .map_err(|e| failed(format!("writing {path}: {e}")))?;
                    let chmod = format!("chmod {mode:o} {}", shell_quote(path));
                    self.run_checked(record, self.command(chmod), &failed)
                        .await?;
                }
                SetupStep::Run {
                    command,
                    cwd,
                    env: step_env,
                } => {
                    let mut spec = self.command(command.clone()).timeout(SETUP_COMMAND_TIMEOUT);
                    spec.envs = env.clone();
                    spec.envs.extend(
                        step_env
                            .iter()
                            .map(|(k, v)| (k.clone(), v.expose().to_owned())),
                    );
                    spec.cwd = cwd.clone();
                    self.run_checked(record, spec, &failed).await?;
                }
                SetupStep::SetEnv { name, value } => {
                    env.insert(name.clone(), value.expose().to_owned());
                }
            }
        }
        Ok(env)
    }

    async fn run_checked(
        &self,
        record: &SandboxRecord,
        spec: CommandSpec,
        failed: &(dyn Fn(String) -> OrchestratorError + Sync),
    ) -> Result<()> {
        let output = self
            .api
            .run(record, spec)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if output.exit_code != 0 {
            let detail = if output.stderr.trim().is_empty() {
                output.stdout.trim()
            } else {
                output.stderr.trim()
            };
            return Err(failed(format!("exit code {}: {detail}", output.exit_code)));
        }
        Ok(())
    }

    /// Starts one agent run in the background; when it ends, the next queued message (if
    /// any) is delivered with the tool's continue command.
    ///
    /// Boxed because a run's end may start the next run (the future is recursive).
    fn start_run(
        &self,
        id: SandboxId,
        prompt: String,
        follow_up: bool,
    ) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(self.start_run_inner(id, prompt, follow_up))
    }

    async fn start_run_inner(&self, id: SandboxId, prompt: String, follow_up: bool) -> Result<()> {
        let (record, tool, command, session_usage) = {
            let live = self.lock();
            let live = live.get(&id).ok_or_else(|| {
                OrchestratorError::Store(StoreError::NotFound {
                    entity: "live sandbox",
                    id: id.to_string(),
                })
            })?;
            let request = RunRequest {
                prompt,
                model: live.model.clone(),
                thinking_effort: live.thinking_effort,
            };
            let line = if follow_up {
                follow_up_command(live.tool, &request)
            } else {
                first_run_command(live.tool, &request)
            };
            let mut spec = self
                .command(agent_command(&line.to_shell()))
                .timeout(Duration::ZERO)
                .tag(AGENT_TAG);
            spec.envs = live.env.clone();
            let session_usage = if follow_up {
                live.session_usage.clone()
            } else {
                None
            };
            (live.record.clone(), live.tool, spec, session_usage)
        };
        let spawned = self.api.spawn(&record, command).await?;
        let recorder = StreamRecorder::start(self.store.clone(), self.hub.clone(), id, tool)
            .await?
            .continuing(session_usage)
            .with_clock(self.clock.clone());
        self.follow(id, spawned, recorder);
        Ok(())
    }

    /// Records a spawned run in the background; its end delivers the next queued message.
    fn follow(
        &self,
        id: SandboxId,
        spawned: courier_e2b::SpawnedCommand,
        recorder: StreamRecorder,
    ) {
        let this = self.clone();
        // The run's sandbox and the session's total before it, for billing a run that is
        // stopped before its stream reports usage (even once a kill forgot the sandbox).
        let before = self
            .lock()
            .get(&id)
            .map(|l| (l.record.clone(), l.tool, l.session_usage.clone()));
        let task = tokio::spawn(async move {
            let outcome = recorder.record(spawned.events).await;
            if matches!(&outcome, Ok(o) if o.auth_failed) {
                // The message already says which key to fix; the CLI may still be
                // retrying with the refused key.
                this.stop_agent(id).await;
            }
            if let (Ok(outcome), Some((record, tool, baseline))) = (&outcome, before) {
                this.bill_stopped_run(id, tool, &record, outcome, baseline)
                    .await;
            }
            this.run_ended(id, outcome).await;
        });
        if let Some(live) = self.lock().get_mut(&id) {
            live.working = true;
            live.agent = Some(task);
        }
    }

    /// Stops the sandbox's agent and everything it started ([`stop_agent_command`]),
    /// best effort: a failure is logged.
    async fn stop_agent(&self, id: SandboxId) {
        let record = self.lock().get(&id).map(|l| l.record.clone());
        let Some(record) = record else { return };
        self.stop_agent_in(id, &record).await;
    }

    async fn stop_agent_in(&self, id: SandboxId, record: &SandboxRecord) {
        let stop = self.command(stop_agent_command().to_shell());
        match self.api.run(record, stop).await {
            Ok(out) if out.exit_code != 0 => {
                tracing::warn!(sandbox = %id, stderr = %out.stderr.trim(), "the agent did not stop");
            }
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not stop the agent"),
            Ok(_) => {}
        }
    }

    /// Bills what a stopped run used when its stream could not say (Codex reports usage
    /// only when a turn ends): the session's total from the CLI's own log, minus what
    /// earlier runs billed. Best effort: a failure is logged.
    async fn bill_stopped_run(
        &self,
        id: SandboxId,
        tool: ToolId,
        record: &SandboxRecord,
        outcome: &RunOutcome,
        baseline: Option<Usage>,
    ) {
        let reported = outcome.usage.input_tokens
            + outcome.usage.output_tokens
            + outcome.usage.cache_read_tokens
            + outcome.usage.cache_write_tokens
            > 0;
        let (Some(service), Some(session)) = (
            crate::usage::service_for(tool),
            outcome.session_id.as_deref(),
        ) else {
            return;
        };
        if reported || outcome.result.session_usage.is_some() {
            return;
        }
        let Some(probe) = courier_tools::command::stopped_run_usage_command(tool, session) else {
            return;
        };
        let total = match self.api.run(record, self.command(probe.to_shell())).await {
            Ok(out) => courier_tools::command::parse_stopped_run_usage(tool, &out.stdout),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "could not read a stopped run's usage");
                return;
            }
        };
        let Some(total) = total else { return };
        let used = match &baseline {
            Some(base) if total.covers(base) => total.minus(base),
            _ => total,
        };
        let billed = async {
            let records = crate::usage::token_records(
                self.store.as_ref(),
                id,
                service,
                &used,
                self.clock.now(),
            )
            .await?;
            if !records.is_empty() {
                self.store.record_usage(&records).await?;
            }
            Ok::<_, OrchestratorError>(())
        };
        if let Err(e) = billed.await {
            tracing::warn!(sandbox = %id, error = %e, "could not bill a stopped run");
        }
    }

    async fn run_ended(&self, id: SandboxId, outcome: Result<RunOutcome>) {
        if let Err(e) = &outcome {
            tracing::warn!(sandbox = %id, error = %e, "agent stream failed");
        }
        let session_usage = outcome
            .as_ref()
            .ok()
            .and_then(|o| o.result.session_usage.clone());
        let next = {
            let mut live = self.lock();
            let Some(live) = live.get_mut(&id) else {
                return;
            };
            live.agent = None;
            if session_usage.is_some() {
                live.session_usage = session_usage;
            }
            let next = live.queue.pop_front();
            live.working = next.is_some();
            next
        };
        if let Some(prompt) = next
            && let Err(e) = self.start_run(id, prompt, true).await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not deliver a queued message");
            if let Some(live) = self.lock().get_mut(&id) {
                live.working = false;
            }
        }
    }

    /// Sends a follow-up message: stored as a user message, then delivered at once when
    /// the agent is idle (the tool's continue command) or queued while it works.
    pub async fn send_message(&self, id: SandboxId, text: &str) -> Result<Message> {
        let sandbox = self.store.get_sandbox(id).await?;
        if sandbox.status != SandboxStatus::Running || !self.lock().contains_key(&id) {
            return Err(OrchestratorError::InvalidState {
                id,
                status: sandbox.status,
                action: "send a message",
            });
        }
        let message = record_user_message(self.store.as_ref(), &self.hub, id, text).await?;
        let deliver_now = {
            let mut live = self.lock();
            match live.get_mut(&id) {
                Some(l) if l.working => {
                    l.queue.push_back(text.to_owned());
                    false
                }
                Some(l) => {
                    l.working = true;
                    true
                }
                None => false,
            }
        };
        if deliver_now && let Err(e) = self.start_run(id, text.to_owned(), true).await {
            if let Some(l) = self.lock().get_mut(&id) {
                l.working = false;
            }
            return Err(e);
        }
        Ok(message)
    }

    async fn provider_record(&self, sandbox: &Sandbox) -> Option<SandboxRecord> {
        if let Some(live) = self.lock().get(&sandbox.id) {
            return Some(live.record.clone());
        }
        let pid = sandbox.provider_sandbox_id.as_deref()?;
        self.api.connect(pid, None).await.ok()
    }

    /// Kills a sandbox: stops the agent and everything it started (tracked by its session,
    /// not by matching command lines), commits and pushes
    /// unfinished work (best effort), hands the branch to the pull request pipeline (when
    /// configured), destroys the provider sandbox, records `killed` and the compute usage,
    /// and queues learning extraction (when configured). `reason` is kept as the sandbox's
    /// message (e.g. a timeout).
    pub async fn kill(&self, id: SandboxId, reason: Option<String>) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        if sandbox.status.is_final() {
            return Err(OrchestratorError::InvalidState {
                id,
                status: sandbox.status,
                action: "kill",
            });
        }
        let record = self.provider_record(&sandbox).await;
        if let Some(record) = &record {
            self.stop_agent_in(id, record).await;
            let save = self.command(save_work_command()).timeout(SAVE_WORK_TIMEOUT);
            match self.api.run(record, save).await {
                Ok(out) if out.exit_code != 0 => {
                    tracing::info!(sandbox = %id, stderr = %out.stderr, "work not pushed");
                }
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not save work"),
                Ok(_) => {}
            }
        }
        let agent = self.lock().remove(&id).and_then(|l| l.agent);
        if let Some(agent) = agent {
            // The agent was killed, so its stream ends; give the recorder a moment to
            // store the verdict (and bill the run) before cutting it off.
            if tokio::time::timeout(Duration::from_secs(5), agent)
                .await
                .is_err()
            {
                tracing::warn!(sandbox = %id, "agent stream did not end after the kill");
            }
        }
        // After the agent's last message is stored (it is the PR's summary), before the
        // sandbox and its repository are gone.
        if let (Some(pipeline), Some(record)) = (&self.pull_requests, &record) {
            let token = match github_token(&self.vault, &sandbox).await {
                Ok(token) => token,
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "GitHub key unreadable");
                    None
                }
            };
            if let Err(e) = pipeline.open(id, record, token.as_ref()).await {
                tracing::warn!(sandbox = %id, error = %e, "pull request pipeline failed");
            }
        }
        if let Some(pid) = sandbox.provider_sandbox_id.as_deref()
            && let Err(e) = self.api.kill(pid).await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not destroy the sandbox");
        }
        // The provider bills until the sandbox is destroyed: now, by our clock.
        let ended = self.clock.now();
        let killed = self
            .transition_to_final(id, SandboxStatus::Killed, reason)
            .await?;
        let compute = compute_record_until(self.store.as_ref(), &killed, ended).await?;
        self.store.record_usage(&[compute]).await?;
        self.hub.close(id);
        if let Some(pipeline) = self.learnings.clone() {
            // In the background: an LLM call must not hold up the kill. The status says
            // how it went.
            tokio::spawn(async move {
                if let Err(e) = pipeline.extract(id).await {
                    tracing::warn!(sandbox = %id, error = %e, "learning extraction failed");
                }
            });
        }
        Ok(killed)
    }

    async fn transition_to_final(
        &self,
        id: SandboxId,
        to: SandboxStatus,
        message: Option<String>,
    ) -> Result<Sandbox> {
        loop {
            let current = self.store.get_sandbox(id).await?;
            if current.status.is_final() {
                return Err(OrchestratorError::InvalidState {
                    id,
                    status: current.status,
                    action: "end it",
                });
            }
            match self
                .store
                .transition_sandbox(id, current.status, to, message.clone())
                .await
            {
                Err(StoreError::Conflict(_)) => continue,
                other => return Ok(other?),
            }
        }
    }

    /// Pauses a running sandbox at the provider; `paused`.
    pub async fn pause(&self, id: SandboxId) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        let pid = match (&sandbox.status, sandbox.provider_sandbox_id.as_deref()) {
            (SandboxStatus::Running, Some(pid)) => pid.to_owned(),
            _ => {
                return Err(OrchestratorError::InvalidState {
                    id,
                    status: sandbox.status,
                    action: "pause",
                });
            }
        };
        self.api.pause(&pid).await?;
        Ok(self
            .store
            .transition_sandbox(id, SandboxStatus::Running, SandboxStatus::Paused, None)
            .await?)
    }

    /// Resumes a paused sandbox with its configured timeout; `running`.
    pub async fn resume(&self, id: SandboxId) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        let pid = match (&sandbox.status, sandbox.provider_sandbox_id.as_deref()) {
            (SandboxStatus::Paused, Some(pid)) => pid.to_owned(),
            _ => {
                return Err(OrchestratorError::InvalidState {
                    id,
                    status: sandbox.status,
                    action: "resume",
                });
            }
        };
        let timeout = Duration::from_millis(sandbox.config.timeout_ms.max(0) as u64);
        let record = self.api.connect(&pid, Some(timeout)).await?;
        let known = match self.lock().get_mut(&id) {
            Some(live) => {
                live.record = record;
                live.deadline =
                    self.clock.now() + chrono::Duration::from_std(timeout).unwrap_or_default();
                true
            }
            None => false,
        };
        let running = self
            .store
            .transition_sandbox(id, SandboxStatus::Paused, SandboxStatus::Running, None)
            .await?;
        if !known {
            // Paused before a restart: follow it again now that it can be reached.
            let deadline =
                self.clock.now() + chrono::Duration::from_std(timeout).unwrap_or_default();
            if let Err(e) = self.reattach(&running, &pid, deadline).await {
                tracing::warn!(sandbox = %id, error = %e, "could not re-attach a resumed sandbox");
            }
        }
        Ok(running)
    }

    /// Hides a sandbox (it stops counting as active).
    pub async fn soft_delete(&self, id: SandboxId) -> Result<()> {
        Ok(self.store.soft_delete_sandbox(id).await?)
    }

    /// Unhides a soft-deleted sandbox.
    pub async fn restore(&self, id: SandboxId) -> Result<()> {
        Ok(self.store.restore_sandbox(id).await?)
    }

    /// Removes a sandbox for good, killing it first if it still lives (usage stays).
    pub async fn purge(&self, id: SandboxId) -> Result<()> {
        let sandbox = self.store.get_sandbox(id).await?;
        if !sandbox.status.is_final() {
            self.kill(id, Some("purged".into())).await?;
        }
        Ok(self.store.purge_sandbox(id).await?)
    }

    async fn live_sandboxes(&self, filter: SandboxFilter) -> Result<Vec<Sandbox>> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(courier_store::MAX_PAGE_LIMIT);
        loop {
            let result = self.store.list_sandboxes(filter.clone(), page).await?;
            out.extend(result.items.into_iter().filter(|s| !s.status.is_final()));
            match result.next_cursor {
                Some(cursor) => page = PageRequest::after(courier_store::MAX_PAGE_LIMIT, cursor),
                None => return Ok(out),
            }
        }
    }

    /// Kills every live sandbox of a project; returns how many were killed.
    pub async fn kill_project(&self, project_id: courier_store::ProjectId) -> Result<usize> {
        let filter = SandboxFilter {
            project_id: Some(project_id),
            deleted: courier_store::DeletedFilter::Include,
            ..Default::default()
        };
        let mut killed = 0;
        for sandbox in self.live_sandboxes(filter).await? {
            match self
                .kill(sandbox.id, Some("project's sandboxes killed".into()))
                .await
            {
                Ok(_) => killed += 1,
                Err(OrchestratorError::InvalidState { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(killed)
    }

    /// [`tick_timeouts`](Self::tick_timeouts) at the clock's now: what a periodic timeout
    /// sweep calls.
    pub async fn check_timeouts(&self) -> Result<Vec<SandboxId>> {
        self.tick_timeouts(self.clock.now()).await
    }

    /// Acts on deadlines at `now` (see the [module docs](self#timeouts)): extends working
    /// sandboxes near their deadline up to the maximum lifetime, checkpoints the others
    /// once per deadline, and kills every sandbox whose deadline has passed; returns the
    /// ids killed.
    pub async fn tick_timeouts(&self, now: DateTime<Utc>) -> Result<Vec<SandboxId>> {
        let ids: Vec<SandboxId> = self.lock().keys().copied().collect();
        let mut expired = Vec::new();
        let lead = chrono::Duration::from_std(self.timeouts.checkpoint_lead).unwrap_or_default();
        let extension = chrono::Duration::from_std(self.timeouts.extension).unwrap_or_default();
        let max_lifetime =
            chrono::Duration::from_std(self.timeouts.max_lifetime).unwrap_or_default();
        for id in ids {
            let sandbox = self.store.get_sandbox(id).await?;
            let Some((deadline, working, checkpointed, record)) = self
                .lock()
                .get(&id)
                .map(|l| (l.deadline, l.working, l.checkpointed, l.record.clone()))
            else {
                continue;
            };
            if sandbox.status.is_final() {
                continue;
            }
            if now >= deadline {
                let lived = (deadline - sandbox.created_at).num_milliseconds();
                let reason = format!("timed out after {lived} ms");
                match self.kill(id, Some(reason)).await {
                    Ok(_) => expired.push(id),
                    Err(OrchestratorError::InvalidState { .. }) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            if sandbox.status != SandboxStatus::Running || now < deadline - lead {
                continue;
            }
            let max_deadline = sandbox.created_at + max_lifetime;
            if working && deadline < max_deadline {
                let extended = (deadline + extension).min(max_deadline);
                let remaining = (extended - now).to_std().unwrap_or_default();
                match self.api.set_timeout(&record.sandbox_id, remaining).await {
                    Ok(()) => {
                        tracing::info!(sandbox = %id, deadline = %extended, "agent working: deadline extended");
                        if let Some(live) = self.lock().get_mut(&id) {
                            live.deadline = extended;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %id, error = %e, "could not extend the deadline");
                    }
                }
                continue;
            }
            if checkpointed != Some(deadline) {
                self.checkpoint(id, &record).await;
                if let Some(live) = self.lock().get_mut(&id) {
                    live.checkpointed = Some(deadline);
                }
            }
        }
        Ok(expired)
    }

    /// Commits and pushes the work in progress (best effort), leaving the agent running.
    async fn checkpoint(&self, id: SandboxId, record: &SandboxRecord) {
        let save = self.command(save_work_command()).timeout(SAVE_WORK_TIMEOUT);
        match self.api.run(record, save).await {
            Ok(out) if out.exit_code != 0 => {
                tracing::info!(sandbox = %id, stderr = %out.stderr, "checkpoint: work not pushed");
            }
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "checkpoint failed"),
            Ok(_) => tracing::info!(sandbox = %id, "checkpoint: work pushed"),
        }
    }

    /// The deadline this orchestrator holds for a sandbox it runs.
    pub fn deadline(&self, id: SandboxId) -> Option<DateTime<Utc>> {
        self.lock().get(&id).map(|l| l.deadline)
    }

    /// Reconciles the store with the provider at startup, and follows running agents
    /// again (see the [module docs](self#restart-safety)).
    ///
    /// Fails when the provider cannot list its sandboxes; then nothing is changed.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let listed = self.api.list().await?;
        let at_provider: HashMap<&str, &ListedSandbox> =
            listed.iter().map(|l| (l.sandbox_id.as_str(), l)).collect();
        let mut report = ReconcileReport::default();
        let filter = SandboxFilter {
            deleted: courier_store::DeletedFilter::Include,
            ..Default::default()
        };
        for sandbox in self.live_sandboxes(filter).await? {
            if self.lock().contains_key(&sandbox.id) {
                continue;
            }
            let provider = sandbox
                .provider_sandbox_id
                .as_deref()
                .and_then(|pid| at_provider.get(pid).copied());
            match (sandbox.status, provider) {
                (SandboxStatus::Creating, _) => {
                    self.fail_with(
                        sandbox.id,
                        sandbox.provider_sandbox_id.as_deref(),
                        "create interrupted by an orchestrator restart".into(),
                    )
                    .await;
                    report.interrupted.push(sandbox.id);
                }
                (_, None) => {
                    let reason = "sandbox vanished at the provider".to_owned();
                    match self.end_vanished(&sandbox, reason).await {
                        Ok(()) => report.vanished.push(sandbox.id),
                        Err(OrchestratorError::InvalidState { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                (SandboxStatus::Running, Some(listed)) => {
                    match self
                        .reattach(&sandbox, &listed.sandbox_id, listed.end_at)
                        .await
                    {
                        Ok(()) => report.reattached.push(sandbox.id),
                        Err(e) => {
                            tracing::warn!(sandbox = %sandbox.id, error = %e, "could not re-attach");
                        }
                    }
                }
                _ => {}
            }
        }
        for listed in &listed {
            let Some(courier_id) = listed.metadata.get(METADATA_SANDBOX_ID) else {
                continue;
            };
            let known = match courier_id.parse::<SandboxId>() {
                Ok(id) => match self.store.get_sandbox(id).await {
                    Ok(s) => !s.status.is_final(),
                    Err(StoreError::NotFound { .. }) => false,
                    Err(e) => return Err(e.into()),
                },
                Err(_) => false,
            };
            if !known {
                tracing::warn!(provider_sandbox = %listed.sandbox_id, "killing an orphan sandbox");
                if let Err(e) = self.api.kill(&listed.sandbox_id).await {
                    tracing::warn!(provider_sandbox = %listed.sandbox_id, error = %e, "could not kill an orphan");
                } else {
                    report.orphans.push(listed.sandbox_id.clone());
                }
            }
        }
        Ok(report)
    }

    /// Ends a sandbox whose provider sandbox is gone: `killed` with the reason, compute
    /// recorded.
    async fn end_vanished(&self, sandbox: &Sandbox, reason: String) -> Result<()> {
        if let Some(live) = self.lock().remove(&sandbox.id)
            && let Some(agent) = live.agent
        {
            agent.abort();
        }
        let killed = self
            .transition_to_final(sandbox.id, SandboxStatus::Killed, Some(reason))
            .await?;
        // Billed until it was found gone: the best bound known.
        let compute = compute_record_until(self.store.as_ref(), &killed, self.clock.now()).await?;
        self.store.record_usage(&[compute]).await?;
        self.hub.close(sandbox.id);
        Ok(())
    }

    /// The environment the setup plan gives agent runs, rebuilt for a re-attached sandbox.
    async fn rebuilt_env(
        &self,
        sandbox: &Sandbox,
        tool: ToolId,
    ) -> Result<HashMap<String, String>> {
        let keys = self
            .vault
            .provider_keys(sandbox.user_id, sandbox.project_id)
            .await?;
        let github: Option<Secret> = self
            .vault
            .resolve(sandbox.user_id, sandbox.project_id, Provider::GitHub)
            .await?
            .map(|k| k.secret);
        let context = SetupContext {
            tool,
            repo_url: sandbox.git.repo_url.clone(),
            branch_name: sandbox
                .git
                .branch
                .clone()
                .unwrap_or_else(|| format!("courier/{}", &sandbox.id.to_string()[..8])),
            github_token: github,
            keys,
            endpoints: self.endpoints.clone(),
            ..Default::default()
        };
        let plan = build_setup_plan(&context)?;
        Ok(plan
            .steps
            .iter()
            .filter_map(|step| match step {
                SetupStep::SetEnv { name, value } => {
                    Some((name.clone(), value.expose().to_owned()))
                }
                _ => None,
            })
            .collect())
    }

    /// Follows a running sandbox again: its live state rebuilt, its `streaming` message
    /// (if any) resumed from the run's log file, undelivered follow-ups queued again.
    async fn reattach(&self, sandbox: &Sandbox, pid: &str, deadline: DateTime<Utc>) -> Result<()> {
        let record = self.api.connect(pid, None).await?;
        let tool: ToolId = sandbox.cli_tool.parse().unwrap_or_default();
        let env = self.rebuilt_env(sandbox, tool).await?;
        // Every earlier run recorded its share, so their sum is the session's total so
        // far: the baseline of tools that report cumulative figures.
        let billed =
            crate::usage::UsageSummary::for_sandbox(self.store.as_ref(), sandbox.id).await?;
        let session_usage = Usage {
            input_tokens: billed.input_tokens as u64,
            output_tokens: billed.output_tokens as u64,
            cache_read_tokens: billed.cache_read_tokens as u64,
            cache_write_tokens: billed.cache_write_tokens as u64,
            cost_usd: None,
        };
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .store
                .list_messages(sandbox.id, after, courier_store::MAX_PAGE_LIMIT)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            messages.extend(page);
        }
        let streaming = messages
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::Assistant && m.status == MessageStatus::Streaming)
            .cloned();
        let answered = messages
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::Assistant)
            .map_or(0, |m| m.seq);
        let mut queue: VecDeque<String> = messages
            .iter()
            .filter(|m| m.role == MessageRole::User && m.seq > answered)
            .map(|m| m.content.clone())
            .collect();
        // A run whose answer message never started (a restart right after storing the
        // follow-up) is started again from the queue below.
        let first_unstarted = if streaming.is_none() && answered > 0 {
            queue.pop_front()
        } else {
            None
        };
        self.lock().insert(
            sandbox.id,
            Live {
                record: record.clone(),
                tool,
                model: sandbox.model.clone(),
                thinking_effort: None,
                env: env.clone(),
                working: streaming.is_some() || first_unstarted.is_some(),
                queue,
                agent: None,
                session_usage: Some(session_usage),
                deadline,
                checkpointed: None,
            },
        );
        if let Some(message) = streaming {
            let skip = message.raw_log.matches('\n').count();
            let mut spec = self.command(reattach_command(skip)).timeout(Duration::ZERO);
            spec.envs = env;
            let spawned = self.api.spawn(&record, spec).await?;
            let recorder = StreamRecorder::resume(
                self.store.clone(),
                self.hub.clone(),
                sandbox.id,
                tool,
                message,
            )
            .with_clock(self.clock.clone());
            self.follow(sandbox.id, spawned, recorder);
        } else if let Some(prompt) = first_unstarted {
            self.start_run(sandbox.id, prompt, true).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use courier_e2b::{CommandEvent, CommandOutput, ExitStatus, MockSandboxApi, SpawnedCommand};
    use courier_store::{KeyOwner, MessageRole, MessageStatus, ProjectId, SqliteStore, UserId};
    use futures::StreamExt;
    use futures::channel::mpsc;

    use super::*;
    use crate::keys::MasterKey;
    use crate::testing::fixture;

    type Runs = Arc<Mutex<Vec<String>>>;
    type Agents = Arc<Mutex<Vec<mpsc::UnboundedSender<courier_e2b::Result<CommandEvent>>>>>;
    type Listed = Arc<Mutex<Vec<ListedSandbox>>>;

    fn listed(id: &str, courier_id: Option<SandboxId>) -> ListedSandbox {
        let mut listed: ListedSandbox = serde_json::from_value(serde_json::json!({
            "templateID": "claude", "sandboxID": id, "clientID": "c",
            "startedAt": "2026-01-01T00:00:00Z", "endAt": "2026-01-01T01:00:00Z",
            "envdVersion": "0.6.13", "cpuCount": 2, "memoryMB": 1024, "diskSizeMB": 1024,
            "state": "running"
        }))
        .unwrap();
        if let Some(courier_id) = courier_id {
            listed
                .metadata
                .insert(METADATA_SANDBOX_ID.to_owned(), courier_id.to_string());
        }
        listed
    }

    fn record() -> SandboxRecord {
        serde_json::from_str(
            r#"{"templateID":"claude","sandboxID":"sbx1","clientID":"c","envdVersion":"0.6.13"}"#,
        )
        .unwrap()
    }

    fn output(exit_code: i32, stderr: &str) -> CommandOutput {
        CommandOutput {
            stdout: String::new(),
            stderr: stderr.into(),
            exit_code,
            error: None,
        }
    }

    /// A provider whose commands succeed (or fail when they contain `fail_on`), recording
    /// every command line, and whose agents stream what the test sends them.
    fn provider(
        fail_on: Option<&'static str>,
        runs: Runs,
        agents: Agents,
        listed: Listed,
    ) -> MockSandboxApi {
        let mut api = MockSandboxApi::new();
        api.expect_list()
            .returning(move || Ok(listed.lock().unwrap().clone()));
        api.expect_set_timeout().returning(|_, _| Ok(()));
        api.expect_create().returning(|_| Ok(record()));
        api.expect_write_file().returning(|_, _, _| Ok(()));
        let run_log = runs.clone();
        api.expect_run().returning(move |_, spec| {
            run_log.lock().unwrap().push(spec.cmd.clone());
            match fail_on {
                Some(f) if spec.cmd.contains(f) => Ok(output(128, "fatal: repository not found")),
                _ => Ok(output(0, "")),
            }
        });
        api.expect_spawn().returning(move |_, spec| {
            runs.lock().unwrap().push(spec.cmd.clone());
            let (tx, rx) = mpsc::unbounded();
            agents.lock().unwrap().push(tx);
            Ok(SpawnedCommand {
                pid: 7,
                events: rx.boxed(),
            })
        });
        api.expect_kill().returning(|_| Ok(true));
        api.expect_pause().returning(|_| Ok(true));
        api.expect_connect().returning(|_, _| Ok(record()));
        api
    }

    struct World {
        orchestrator: Orchestrator,
        store: Arc<dyn Store>,
        user: UserId,
        project: ProjectId,
        runs: Runs,
        agents: Agents,
        listed: Listed,
        vault: KeyVault,
    }

    async fn world(fail_on: Option<&'static str>, with_key: bool) -> World {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (user, project, _) = crate::testing::seed(store.as_ref()).await;
        let vault = KeyVault::new(MasterKey::generate(), store.clone());
        if with_key {
            vault
                .put(
                    KeyOwner::Project(project.id),
                    Provider::Anthropic,
                    "sk-ant-api03-key-1234",
                )
                .save()
                .await
                .unwrap();
        }
        let runs = Runs::default();
        let agents = Agents::default();
        let listed = Listed::default();
        let api = provider(fail_on, runs.clone(), agents.clone(), listed.clone());
        World {
            orchestrator: Orchestrator::new(
                store.clone(),
                Arc::new(api),
                vault.clone(),
                EventHub::default(),
            ),
            store,
            user: user.id,
            project: project.id,
            runs,
            agents,
            listed,
            vault,
        }
    }

    impl World {
        /// A second orchestrator over the same store, vault and provider (a restart).
        fn restarted(&self) -> Orchestrator {
            let api = provider(
                None,
                self.runs.clone(),
                self.agents.clone(),
                self.listed.clone(),
            );
            Orchestrator::new(
                self.store.clone(),
                Arc::new(api),
                self.vault.clone(),
                EventHub::default(),
            )
        }

        fn request(&self) -> CreateRequest {
            CreateRequest {
                user_id: self.user,
                project_id: self.project,
                prompt: "fix the login".into(),
                repo_url: Some("https://github.com/acme/engine.git".into()),
                ..Default::default()
            }
        }

        async fn active(&self) -> i64 {
            self.store
                .get_project(self.project)
                .await
                .unwrap()
                .active_sandboxes
        }

        /// Streams a recorded Claude run to agent `n` and ends it.
        async fn finish_agent(&self, n: usize) {
            let tx = self.agents.lock().unwrap()[n].clone();
            tx.unbounded_send(Ok(CommandEvent::Stdout(
                fixture("claude_success.jsonl").into(),
            )))
            .unwrap();
            tx.unbounded_send(Ok(CommandEvent::Exit(ExitStatus {
                exit_code: 0,
                exited: true,
                status: "exit status 0".into(),
                error: None,
            })))
            .unwrap();
        }

        async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
            for _ in 0..200 {
                if done(self) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("timed out waiting for {what}");
        }
    }

    #[tokio::test]
    async fn create_sets_up_the_sandbox_starts_the_agent_and_is_running() {
        let w = world(None, true).await;
        let sandbox = w.orchestrator.create(w.request()).await.unwrap();
        assert_eq!(sandbox.status, SandboxStatus::Running);
        assert_eq!(sandbox.provider_sandbox_id.as_deref(), Some("sbx1"));
        assert_eq!(w.active().await, 1);
        let runs = w.runs.lock().unwrap().clone();
        assert!(runs.iter().any(|c| c.starts_with("git clone")), "{runs:?}");
        let agent = runs.last().unwrap();
        assert!(
            agent.contains("claude") && agent.contains("'fix the login'"),
            "{agent}"
        );
        assert!(
            !runs.iter().any(|c| c.contains("sk-ant-api03-key-1234")),
            "no secret on a command line"
        );

        w.finish_agent(0).await;
        w.until("the run to end", |w| !w.orchestrator.is_working(sandbox.id))
            .await;
        let messages = w.store.list_messages(sandbox.id, 0, 10).await.unwrap();
        assert_eq!(messages[0].role, MessageRole::User);
        assert_eq!(messages[1].status, MessageStatus::Completed);
    }

    #[tokio::test]
    async fn a_create_whose_tool_template_is_missing_says_so_and_names_the_fix() {
        let w = world(None, true).await;
        let mut api = MockSandboxApi::new();
        api.expect_create().times(1).returning(|new| {
            Err(courier_e2b::Error::NotFound {
                kind: courier_e2b::NotFoundKind::Sandbox,
                message: format!("template {} not found", new.template_id),
            })
        });
        api.expect_kill().times(0);
        let orchestrator = Orchestrator::new(
            w.store.clone(),
            Arc::new(api),
            w.vault.clone(),
            EventHub::default(),
        );
        let err = orchestrator.create(w.request()).await.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, OrchestratorError::TemplateMissing { template, tool: "claude", .. } if template == "claude"),
            "{err:?}"
        );
        assert!(
            message.contains("courier templates build claude")
                && message.contains("POST /v1/template-builds")
                && message.contains("template_id"),
            "{message}"
        );
        let listed = w
            .store
            .list_sandboxes(
                SandboxFilter {
                    project_id: Some(w.project),
                    ..Default::default()
                },
                PageRequest::default(),
            )
            .await
            .unwrap();
        let failed = listed
            .items
            .iter()
            .find(|s| s.status == SandboxStatus::Error)
            .expect("the failed create is recorded");
        assert_eq!(failed.error_message.as_deref(), Some(message.as_str()));
    }

    #[tokio::test]
    async fn a_missing_key_fails_before_anything_is_recorded() {
        let w = world(None, false).await;
        let err = w.orchestrator.create(w.request()).await.unwrap_err();
        assert!(matches!(
            err,
            OrchestratorError::MissingProviderKey {
                provider: Provider::Anthropic,
                ..
            }
        ));
        assert!(w.runs.lock().unwrap().is_empty());
        let listed = w
            .store
            .list_sandboxes(
                SandboxFilter {
                    project_id: Some(w.project),
                    ..Default::default()
                },
                PageRequest::default(),
            )
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1, "only the seeded sandbox");
    }

    #[tokio::test]
    async fn a_failed_setup_step_ends_in_error_with_the_sandbox_destroyed() {
        let w = world(Some("git clone"), true).await;
        let err = w.orchestrator.create(w.request()).await.unwrap_err();
        assert!(matches!(err, OrchestratorError::Setup { .. }), "{err}");
        let listed = w
            .store
            .list_sandboxes(
                SandboxFilter {
                    project_id: Some(w.project),
                    status: Some(SandboxStatus::Error),
                    ..Default::default()
                },
                PageRequest::default(),
            )
            .await
            .unwrap();
        let failed = &listed.items[0];
        assert!(
            failed
                .error_message
                .as_deref()
                .unwrap()
                .contains("repository not found")
        );
        assert_eq!(w.active().await, 0);
        assert!(w.agents.lock().unwrap().is_empty(), "no agent started");
    }

    #[tokio::test]
    async fn follow_ups_are_queued_while_the_agent_works_and_delivered_in_order() {
        let w = world(None, true).await;
        let sandbox = w.orchestrator.create(w.request()).await.unwrap();
        w.orchestrator
            .send_message(sandbox.id, "also add tests")
            .await
            .unwrap();
        w.orchestrator
            .send_message(sandbox.id, "and docs")
            .await
            .unwrap();
        assert_eq!(w.agents.lock().unwrap().len(), 1, "queued while working");

        w.finish_agent(0).await;
        w.until("the first follow-up", |w| {
            w.agents.lock().unwrap().len() == 2
        })
        .await;
        let second = w.runs.lock().unwrap().last().unwrap().clone();
        assert!(
            second.contains("--continue") && second.contains("'also add tests'"),
            "{second}"
        );
        w.finish_agent(1).await;
        w.until("the second follow-up", |w| {
            w.agents.lock().unwrap().len() == 3
        })
        .await;
        assert!(
            w.runs
                .lock()
                .unwrap()
                .last()
                .unwrap()
                .contains("'and docs'")
        );
        w.finish_agent(2).await;
        w.until("idle", |w| !w.orchestrator.is_working(sandbox.id))
            .await;

        // Idle: the next message starts a run at once.
        w.orchestrator
            .send_message(sandbox.id, "one more")
            .await
            .unwrap();
        assert_eq!(w.agents.lock().unwrap().len(), 4);
        let roles: Vec<_> = w
            .store
            .list_messages(sandbox.id, 0, 50)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.role == MessageRole::User)
            .map(|m| m.content)
            .collect();
        assert_eq!(
            roles,
            ["fix the login", "also add tests", "and docs", "one more"]
        );
    }

    #[tokio::test]
    async fn kill_stops_the_agent_saves_work_destroys_and_records_compute() {
        let w = world(None, true).await;
        let sandbox = w.orchestrator.create(w.request()).await.unwrap();
        let tx = w.agents.lock().unwrap()[0].clone();
        // The agent dies when killed: its stream ends.
        drop(tx);
        w.agents.lock().unwrap().clear();
        let killed = w.orchestrator.kill(sandbox.id, None).await.unwrap();
        assert_eq!(killed.status, SandboxStatus::Killed);
        assert!(killed.ended_at.is_some());
        assert_eq!(w.active().await, 0);
        let runs = w.runs.lock().unwrap().clone();
        assert!(
            runs.iter()
                .any(|c| *c == courier_tools::stop_agent_command().to_shell()),
            "{runs:?}"
        );
        assert!(!runs.iter().any(|c| c.contains("pkill")), "{runs:?}");
        assert!(
            runs.iter()
                .any(|c| c.contains("git add -A") && c.contains("git push")),
            "{runs:?}"
        );
        let usage = w.store.usage_for_sandbox(sandbox.id).await.unwrap();
        assert!(
            usage
                .iter()
                .any(|u| u.metric == courier_store::UsageMetric::ComputeSeconds)
        );
        assert!(matches!(
            w.orchestrator.kill(sandbox.id, None).await,
            Err(OrchestratorError::InvalidState { .. })
        ));
        assert!(matches!(
            w.orchestrator.send_message(sandbox.id, "hello?").await,
            Err(OrchestratorError::InvalidState { .. })
        ));
    }

    #[tokio::test]
    async fn pause_and_resume_keep_the_counter_right() {
        let w = world(None, true).await;
        let sandbox = w.orchestrator.create(w.request()).await.unwrap();
        assert_eq!(
            w.orchestrator.pause(sandbox.id).await.unwrap().status,
            SandboxStatus::Paused
        );
        assert_eq!(w.active().await, 0);
        assert_eq!(
            w.orchestrator.resume(sandbox.id).await.unwrap().status,
            SandboxStatus::Running
        );
        assert_eq!(w.active().await, 1);
    }

    #[tokio::test]
    async fn soft_delete_restore_and_purge() {
        let w = world(None, true).await;
        let sandbox = w.orchestrator.create(w.request()).await.unwrap();
        w.orchestrator.soft_delete(sandbox.id).await.unwrap();
        assert_eq!(w.active().await, 0);
        w.orchestrator.restore(sandbox.id).await.unwrap();
        assert_eq!(w.active().await, 1);
        w.agents.lock().unwrap().clear();
        w.orchestrator.purge(sandbox.id).await.unwrap();
        assert_eq!(w.active().await, 0);
        assert!(w.store.get_sandbox(sandbox.id).await.is_err());
    }

    #[tokio::test]
    async fn kill_project_and_timeouts_end_every_live_sandbox() {
        let w = world(None, true).await;
        let a = w.orchestrator.create(w.request()).await.unwrap();
        let b = w.orchestrator.create(w.request()).await.unwrap();
        w.agents.lock().unwrap().clear();
        assert!(
            w.orchestrator
                .tick_timeouts(Utc::now())
                .await
                .unwrap()
                .is_empty()
        );
        let late = a.created_at + chrono::Duration::milliseconds(a.config.timeout_ms);
        let expired = w.orchestrator.tick_timeouts(late).await.unwrap();
        assert!(expired.contains(&a.id));
        let a = w.store.get_sandbox(a.id).await.unwrap();
        assert_eq!(a.status, SandboxStatus::Killed);
        assert!(a.error_message.unwrap().contains("timed out"));

        let c = w.orchestrator.create(w.request()).await.unwrap();
        w.agents.lock().unwrap().clear();
        let _ = b;
        let killed = w.orchestrator.kill_project(w.project).await.unwrap();
        assert!(killed >= 1);
        assert_eq!(
            w.store.get_sandbox(c.id).await.unwrap().status,
            SandboxStatus::Killed
        );
        assert_eq!(w.active().await, 0);
    }

    #[tokio::test]
    async fn a_working_agent_is_extended_an_idle_one_checkpointed_before_the_kill() {
        let w = world(None, true).await;
        let sandbox = w.orchestrator.create(w.request()).await.unwrap();
        let deadline = w.orchestrator.deadline(sandbox.id).unwrap();
        let near = deadline - chrono::Duration::seconds(30);
        assert!(w.orchestrator.tick_timeouts(near).await.unwrap().is_empty());
        let extended = w.orchestrator.deadline(sandbox.id).unwrap();
        assert_eq!(extended, deadline + chrono::Duration::seconds(600));
        let saves = |w: &World| {
            w.runs
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.contains("git push"))
                .count()
        };
        assert_eq!(saves(&w), 0, "no checkpoint while extending");

        w.finish_agent(0).await;
        w.until("idle", |w| !w.orchestrator.is_working(sandbox.id))
            .await;
        let near = extended - chrono::Duration::seconds(30);
        assert!(w.orchestrator.tick_timeouts(near).await.unwrap().is_empty());
        assert_eq!(saves(&w), 1, "checkpointed");
        assert!(w.orchestrator.tick_timeouts(near).await.unwrap().is_empty());
        assert_eq!(saves(&w), 1, "once per deadline");
        assert_eq!(
            w.store.get_sandbox(sandbox.id).await.unwrap().status,
            SandboxStatus::Running
        );
        assert_eq!(
            w.orchestrator.tick_timeouts(extended).await.unwrap(),
            vec![sandbox.id]
        );
        assert_eq!(
            w.store.get_sandbox(sandbox.id).await.unwrap().status,
            SandboxStatus::Killed
        );
    }

    #[tokio::test]
    async fn the_maximum_lifetime_caps_extensions() {
        let w = world(None, true).await;
        let orchestrator = w.orchestrator.clone().with_timeouts(TimeoutPolicy {
            checkpoint_lead: Duration::from_secs(60),
            extension: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(1000),
        });
        let sandbox = orchestrator.create(w.request()).await.unwrap();
        let deadline = orchestrator.deadline(sandbox.id).unwrap();
        orchestrator
            .tick_timeouts(deadline - chrono::Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(
            orchestrator.deadline(sandbox.id).unwrap(),
            sandbox.created_at + chrono::Duration::seconds(1000)
        );
    }

    #[tokio::test]
    async fn reconcile_ends_lost_and_interrupted_kills_orphans_and_reattaches() {
        let w = world(None, true).await;
        // The seeded sandbox was left `creating`.
        let running = w.orchestrator.create(w.request()).await.unwrap();
        let lost = w.orchestrator.create(w.request()).await.unwrap();
        w.store
            .set_provider_sandbox_id(lost.id, "sbx-gone")
            .await
            .unwrap();
        w.orchestrator.detach_all();
        w.agents.lock().unwrap().clear();
        w.listed.lock().unwrap().extend([
            listed("sbx1", Some(running.id)),
            listed("sbx-orphan", Some(SandboxId::new())),
            listed("sbx-foreign", None),
        ]);

        let restarted = w.restarted();
        let report = restarted.reconcile().await.unwrap();
        assert_eq!(report.reattached, vec![running.id]);
        assert_eq!(report.vanished, vec![lost.id]);
        assert_eq!(report.orphans, vec!["sbx-orphan".to_owned()]);
        assert_eq!(report.interrupted.len(), 1);
        let lost = w.store.get_sandbox(lost.id).await.unwrap();
        assert_eq!(lost.status, SandboxStatus::Killed);
        assert!(lost.error_message.unwrap().contains("vanished"));
        let interrupted = w.store.get_sandbox(report.interrupted[0]).await.unwrap();
        assert_eq!(interrupted.status, SandboxStatus::Error);

        // The streaming message is followed again from the run's log file.
        assert!(restarted.is_working(running.id));
        let follow = w.runs.lock().unwrap().last().unwrap().clone();
        assert!(
            follow.contains("tail -n +1 -f") && follow.contains(AGENT_RUN_DIR),
            "{follow}"
        );
        w.finish_agent(0).await;
        w.until("the resumed run to end", |w| {
            !restarted.is_working(running.id) && w.agents.lock().unwrap().len() == 1
        })
        .await;
        let messages = w.store.list_messages(running.id, 0, 10).await.unwrap();
        assert_eq!(messages.len(), 2, "the same message, not a new one");
        assert_eq!(messages[1].status, MessageStatus::Completed);
        assert_eq!(w.active().await, 1);
    }

    #[test]
    fn the_agent_command_copies_its_output_and_keeps_its_exit_code() {
        let cmd = agent_command("cd /p && claude -p 'x'");
        assert!(cmd.contains(&format!(
            "{{ {} ; }} | tee /tmp/courier-agent/out.log",
            tracked("cd /p && claude -p 'x'")
        )));
        assert!(cmd.contains("PIPESTATUS[0]") && cmd.ends_with("exit $code"));
        assert!(reattach_command(3).starts_with("tail -n +4 -f"));
    }

    /// Decisions taken against mocked time and a mocked store.
    mod mocked {
        use courier_store::{MockStore, UsageMetric};
        use mockall::Sequence;

        use super::*;
        use crate::clock::MockClock;

        /// A clock reading whatever the test last put in `at`.
        fn clock(at: Arc<Mutex<DateTime<Utc>>>) -> Arc<dyn Clock> {
            let mut clock = MockClock::new();
            clock.expect_now().returning(move || *at.lock().unwrap());
            Arc::new(clock)
        }

        fn set(at: &Mutex<DateTime<Utc>>, to: DateTime<Utc>) {
            *at.lock().unwrap() = to;
        }

        async fn compute_seconds(store: &dyn Store, id: SandboxId) -> f64 {
            store
                .usage_for_sandbox(id)
                .await
                .unwrap()
                .iter()
                .filter(|u| u.metric == UsageMetric::ComputeSeconds)
                .map(|u| u.quantity)
                .sum()
        }

        #[tokio::test]
        async fn a_provider_failure_during_setup_ends_in_error_with_the_sandbox_destroyed() {
            // Keys come from a real vault; the orchestrator's own store is a mock that
            // expects each write in order.
            let keys: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
            let (user, project, creating) = crate::testing::seed(keys.as_ref()).await;
            let vault = KeyVault::new(MasterKey::generate(), keys.clone());
            vault
                .put(
                    KeyOwner::Project(project.id),
                    Provider::Anthropic,
                    "sk-ant-api03-key-1234",
                )
                .save()
                .await
                .unwrap();
            let id = creating.id;
            let errored = Sandbox {
                status: SandboxStatus::Error,
                ..creating.clone()
            };

            let mut seq = Sequence::new();
            let mut store = MockStore::new();
            let mut api = MockSandboxApi::new();
            store
                .expect_create_sandbox_within()
                .withf(|new, quota| {
                    new.prompt == "fix the login"
                        && new.cli_tool == "claude"
                        && *quota == SandboxQuota::default()
                })
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_, _| Ok(creating.clone()));
            store
                .expect_active_learning_version()
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| Ok(None));
            store
                .expect_update_sandbox_git()
                .withf(move |s, git| {
                    *s == id
                        && git
                            .branch
                            .as_deref()
                            .is_some_and(|b| b.starts_with("courier/"))
                })
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_, _| Ok(()));
            api.expect_create()
                .withf(move |new| {
                    new.metadata.get(METADATA_SANDBOX_ID) == Some(&id.to_string())
                        // Asked for explicitly: providers differ in their default.
                        && new.allow_internet_access == Some(true)
                })
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| Ok(record()));
            store
                .expect_set_provider_sandbox_id()
                .withf(move |s, pid| *s == id && pid == "sbx1")
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_, _| Ok(()));
            // The first setup step, whichever kind it is, hits a provider that stopped
            // answering.
            let gone = || courier_e2b::Error::Timeout {
                message: "envd did not answer".into(),
            };
            api.expect_write_file()
                .times(0..=1)
                .returning(move |_, _, _| Err(gone()));
            api.expect_run()
                .times(0..=1)
                .returning(move |_, _| Err(gone()));
            api.expect_spawn().times(0);
            api.expect_kill()
                .withf(|pid| pid == "sbx1")
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| Ok(true));
            store
                .expect_transition_sandbox()
                .withf(move |s, from, to, message| {
                    *s == id
                        && *from == SandboxStatus::Creating
                        && *to == SandboxStatus::Error
                        && message.as_deref().is_some_and(|m| {
                            m.contains("setup step 1") && m.contains("envd did not answer")
                        })
                })
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_, _, _, _| Ok(errored.clone()));

            let orchestrator =
                Orchestrator::new(Arc::new(store), Arc::new(api), vault, EventHub::default());
            let err = orchestrator
                .create(CreateRequest {
                    user_id: user.id,
                    project_id: project.id,
                    prompt: "fix the login".into(),
                    repo_url: Some("https://github.com/acme/engine.git".into()),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(
                matches!(&err, OrchestratorError::Setup { step: 1, message } if message.contains("envd did not answer")),
                "{err}"
            );
            assert!(!orchestrator.is_working(id));
            // Dropping the mocks checks every `times`.
            drop(orchestrator);
        }

        #[tokio::test]
        async fn the_timeout_sweep_extends_up_to_the_maximum_checkpoints_and_kills_at_the_clocks_time()
         {
            let w = world(None, true).await;
            let now = Arc::new(Mutex::new(Utc::now()));
            let orchestrator = w
                .orchestrator
                .clone()
                .with_clock(clock(now.clone()))
                .with_timeouts(TimeoutPolicy {
                    checkpoint_lead: Duration::from_secs(60),
                    extension: Duration::from_secs(600),
                    max_lifetime: Duration::from_secs(1200),
                });
            let sandbox = orchestrator.create(w.request()).await.unwrap();
            let id = sandbox.id;
            let deadline = orchestrator.deadline(id).unwrap();
            assert_eq!(
                deadline,
                sandbox.created_at + chrono::Duration::seconds(900)
            );
            let saves = || {
                w.runs
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|c| c.contains("git push"))
                    .count()
            };
            let secs = chrono::Duration::seconds;

            // Just before the checkpoint lead: nothing to do.
            set(&now, deadline - secs(61));
            assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
            assert_eq!(orchestrator.deadline(id), Some(deadline));

            // Within the lead while the agent works: extended, but only to the maximum
            // lifetime (1200 s, not 900 + 600).
            set(&now, deadline - secs(30));
            assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
            let capped = sandbox.created_at + secs(1200);
            assert_eq!(orchestrator.deadline(id), Some(capped));
            assert_eq!(saves(), 0, "no checkpoint while extending");

            // At the maximum, still working: the work is checkpointed instead, once.
            set(&now, capped - secs(30));
            assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
            assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
            assert_eq!(orchestrator.deadline(id), Some(capped));
            assert_eq!(saves(), 1, "one checkpoint per deadline");
            assert_eq!(
                w.store.get_sandbox(id).await.unwrap().status,
                SandboxStatus::Running
            );

            // At the deadline: killed, and billed until the clock's time.
            w.agents.lock().unwrap().clear();
            set(&now, capped);
            assert_eq!(orchestrator.check_timeouts().await.unwrap(), vec![id]);
            let killed = w.store.get_sandbox(id).await.unwrap();
            assert_eq!(killed.status, SandboxStatus::Killed);
            assert!(
                killed
                    .error_message
                    .unwrap()
                    .contains("timed out after 1200000 ms")
            );
            assert_eq!(compute_seconds(w.store.as_ref(), id).await, 1200.0);
        }

        #[tokio::test]
        async fn a_kill_bills_compute_seconds_until_the_clocks_time() {
            let w = world(None, true).await;
            let now = Arc::new(Mutex::new(Utc::now()));
            let orchestrator = w.orchestrator.clone().with_clock(clock(now.clone()));
            let sandbox = orchestrator.create(w.request()).await.unwrap();
            w.agents.lock().unwrap().clear();
            set(
                &now,
                sandbox.created_at + chrono::Duration::milliseconds(90_500),
            );
            orchestrator.kill(sandbox.id, None).await.unwrap();
            assert_eq!(compute_seconds(w.store.as_ref(), sandbox.id).await, 90.5);
        }

        #[tokio::test]
        async fn a_resumed_sandbox_gets_its_full_timeout_from_the_clocks_time() {
            let w = world(None, true).await;
            let now = Arc::new(Mutex::new(Utc::now()));
            let orchestrator = w.orchestrator.clone().with_clock(clock(now.clone()));
            let sandbox = orchestrator.create(w.request()).await.unwrap();
            orchestrator.pause(sandbox.id).await.unwrap();
            let resumed_at = sandbox.created_at + chrono::Duration::hours(3);
            set(&now, resumed_at);
            orchestrator.resume(sandbox.id).await.unwrap();
            assert_eq!(
                orchestrator.deadline(sandbox.id),
                Some(resumed_at + chrono::Duration::milliseconds(sandbox.config.timeout_ms))
            );
        }
    }
}
