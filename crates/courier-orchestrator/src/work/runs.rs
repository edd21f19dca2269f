//! The workflow run driver: each step begun, waited for and ended in the store, the next
//! action always derived from the stored steps.

use courier_store::{
    DeletedFilter, NewWorkflowRun, NewWorkflowStep, PageRequest, Persona, PersonaId, ProjectId,
    RunStatus, Sandbox, SandboxFilter, SandboxId, SandboxStatus, StepOutcome, StepRole, UserId,
    Verdict, WorkflowRun, WorkflowRunId, WorkflowStep, WorkflowStepId,
};

use super::spec::{StepTarget, WorkflowRequest, step_request};
use super::{Job, Workflows, parse, prompts};
use crate::lifecycle::{Answer, KillOptions, PullRequest};
use crate::usage::UsageSummary;
use crate::{OrchestratorError, Result};

/// A request to start a workflow run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRequest {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// A short title; default: the prompt's first line.
    pub title: Option<String>,
    /// The task (not blank).
    pub prompt: String,
    /// How it runs.
    pub workflow: WorkflowRequest,
    /// The repository; default: the project's.
    pub repo_url: Option<String>,
    /// The branch to start from; default: the project's, else the remote's default.
    pub base_branch: Option<String>,
    /// The feature branch; default `courier/run-<run id>`.
    pub branch: Option<String>,
}

/// A run with its steps and what it cost so far.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    /// The run.
    pub run: WorkflowRun,
    /// Its steps in order.
    pub steps: Vec<WorkflowStep>,
    /// Every sandbox of the run (linked by `run_id`), oldest first.
    pub sandboxes: Vec<Sandbox>,
    /// The sum over its sandboxes, live compute included.
    pub usage: UsageSummary,
}

/// What a run does next, derived from its stored steps alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// Start this role's step for this iteration.
    Start(StepRole, i64),
    /// Wait for (or finish starting) this running step.
    Continue(WorkflowStepId),
    /// End the run.
    End(RunStatus, Option<String>),
}

/// The run's next action: the first designer step, then after each finished step the
/// next role; a `needs_changes` verdict sends the designer round again until the last
/// iteration; a failed step ends the run failed.
pub fn next_action(run: &WorkflowRun, steps: &[WorkflowStep]) -> NextAction {
    let Some(last) = steps.last() else {
        return NextAction::Start(StepRole::Designer, 1);
    };
    let after = |role: StepRole| run.spec.steps.iter().map(|s| s.role).find(|r| *r > role);
    match last.status {
        RunStatus::Running | RunStatus::Pending => NextAction::Continue(last.id),
        RunStatus::Failed | RunStatus::Cancelled => NextAction::End(
            RunStatus::Failed,
            Some(format!(
                "the {} step failed: {}",
                last.role,
                last.error.as_deref().unwrap_or("no reason recorded")
            )),
        ),
        RunStatus::Succeeded => match (last.role, last.verdict) {
            (StepRole::Checker, Some(Verdict::NeedsChanges)) => {
                if last.iteration < i64::from(run.spec.max_iterations) {
                    NextAction::Start(StepRole::Designer, last.iteration + 1)
                } else {
                    NextAction::End(
                        RunStatus::Failed,
                        Some(format!(
                            "the checker still asks for changes after {} iterations: {}",
                            last.iteration,
                            last.feedback.as_deref().unwrap_or("")
                        )),
                    )
                }
            }
            (role, _) => match after(role) {
                Some(next) => NextAction::Start(next, last.iteration),
                None => NextAction::End(RunStatus::Succeeded, None),
            },
        },
    }
}

fn default_title(prompt: &str) -> String {
    let line = prompt.trim().lines().next().unwrap_or_default().trim();
    let mut title: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        title.push('…');
    }
    title
}

/// A short tail of an answer, for error messages.
fn tail(text: &str) -> String {
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(299)
        .map(|(i, _)| i)
        .unwrap_or(0);
    text[start..].to_owned()
}

impl Workflows {
    /// Validates and records a run (`pending`), then drives it in the background.
    ///
    /// Every step's tool, model, template and persona is checked against the project
    /// before anything is recorded, so a misspelt override fails here, naming the field.
    pub async fn start_run(&self, request: RunRequest) -> Result<WorkflowRun> {
        let new = self.new_run(request, None).await?;
        let run = self.store.create_workflow_run(new).await?;
        self.drive_new(Job::Run(run.id)).await?;
        Ok(run)
    }

    /// Validates a run request into what the store records.
    pub(super) async fn new_run(
        &self,
        request: RunRequest,
        chain_id: Option<courier_store::WorkChainId>,
    ) -> Result<NewWorkflowRun> {
        if request.prompt.trim().is_empty() {
            return Err(OrchestratorError::InvalidConfig {
                field: "prompt",
                message: "must not be empty".into(),
            });
        }
        let project = self.store.get_project(request.project_id).await?;
        if project.user_id != request.user_id {
            return Err(OrchestratorError::InvalidConfig {
                field: "project_id",
                message: format!("project {} is not yours", request.project_id),
            });
        }
        let settings = self.store.get_project_settings(request.project_id).await?;
        let spec = request.workflow.to_spec(&settings)?;
        self.check_steps(request.user_id, request.project_id, &spec)
            .await?;
        let title = request
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| default_title(&request.prompt));
        Ok(NewWorkflowRun {
            user_id: request.user_id,
            project_id: request.project_id,
            chain_id,
            title,
            prompt: request.prompt,
            spec,
            repo_url: request.repo_url.or(settings.repo_url),
            base_branch: request.base_branch.or(settings.base_branch),
            branch: request.branch,
        })
    }

    /// Checks every step's sandbox as it would be created (project defaults applied).
    pub(super) async fn check_steps(
        &self,
        user_id: UserId,
        project_id: ProjectId,
        spec: &courier_store::WorkflowSpec,
    ) -> Result<()> {
        let settings = self.store.get_project_settings(project_id).await?;
        let target = StepTarget {
            user_id,
            project_id,
            spec,
            run: None,
        };
        for step in &spec.steps {
            let persona = self.step_persona(project_id, step.persona_id).await?;
            let request = step_request(&target, step.role, persona.as_ref(), "check".into());
            crate::settings::with_defaults(request, &settings)
                .validate()
                .map_err(|e| match e {
                    OrchestratorError::InvalidConfig { field, message } => {
                        OrchestratorError::InvalidConfig {
                            field,
                            message: format!("{} step: {message}", step.role),
                        }
                    }
                    other => other,
                })?;
        }
        Ok(())
    }

    /// A step's persona, which must belong to the project.
    async fn step_persona(
        &self,
        project_id: ProjectId,
        id: Option<PersonaId>,
    ) -> Result<Option<Persona>> {
        let Some(id) = id else { return Ok(None) };
        let persona = self.store.get_persona(id).await?;
        if persona.project_id != project_id {
            return Err(OrchestratorError::InvalidConfig {
                field: "persona_id",
                message: format!("persona {id} belongs to another project"),
            });
        }
        Ok(Some(persona))
    }

    /// A run with its steps, sandboxes and summed usage.
    pub async fn run_detail(&self, id: WorkflowRunId) -> Result<RunDetail> {
        let run = self.store.get_workflow_run(id).await?;
        let steps = self.store.list_workflow_steps(id).await?;
        let mut sandboxes = self.run_sandboxes(id).await?;
        sandboxes.reverse();
        let now = self.orchestrator.clock().now();
        let mut usage = UsageSummary::default();
        for sandbox in &sandboxes {
            usage.add(&UsageSummary::for_sandbox_at(self.store.as_ref(), sandbox, now).await?);
        }
        Ok(RunDetail {
            run,
            steps,
            sandboxes,
            usage,
        })
    }

    /// Every sandbox linked to the run, newest first.
    async fn run_sandboxes(&self, id: WorkflowRunId) -> Result<Vec<Sandbox>> {
        let mut all = Vec::new();
        let mut page = PageRequest::default();
        loop {
            let found = self
                .store
                .list_sandboxes(
                    SandboxFilter {
                        run_id: Some(id.to_string()),
                        deleted: DeletedFilter::Include,
                        ..Default::default()
                    },
                    page.clone(),
                )
                .await?;
            all.extend(found.items);
            match found.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(all),
            }
        }
    }

    /// Cancels a run: it stops being driven, its live sandboxes are killed with their
    /// work saved (no pull request), and it ends `cancelled`.
    pub async fn cancel_run(&self, id: WorkflowRunId) -> Result<WorkflowRun> {
        let run = self.store.get_workflow_run(id).await?;
        if run.state.status.is_final() {
            return Err(OrchestratorError::InvalidConfig {
                field: "status",
                message: format!("run {id} is already {}", run.state.status),
            });
        }
        self.abort(Job::Run(id));
        self.end_sandboxes(id, None, KillOptions::save_only()).await;
        let mut state = run.state.clone();
        state.status = RunStatus::Cancelled;
        state.error = Some("cancelled".into());
        Ok(self
            .store
            .update_workflow_run(id, run.state.status, state)
            .await?)
    }

    /// Kills the run's live sandboxes except `keep`, with `options`; best effort.
    async fn end_sandboxes(
        &self,
        id: WorkflowRunId,
        keep: Option<SandboxId>,
        options: KillOptions,
    ) {
        let sandboxes = match self.run_sandboxes(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "could not list the run's sandboxes");
                return;
            }
        };
        for sandbox in sandboxes {
            if sandbox.status.is_final() || Some(sandbox.id) == keep {
                continue;
            }
            if let Err(e) = self
                .orchestrator
                .kill_with(
                    sandbox.id,
                    Some("workflow run ended".into()),
                    options.clone(),
                )
                .await
            {
                tracing::warn!(run = %id, sandbox = %sandbox.id, error = %e, "could not end a run's sandbox");
            }
        }
    }

    /// Drives a run to its end from wherever the store says it stands.
    pub(super) async fn drive_run(&self, id: WorkflowRunId) -> Result<WorkflowRun> {
        let mut run = self.store.get_workflow_run(id).await?;
        if run.state.status == RunStatus::Pending {
            let mut state = run.state.clone();
            state.status = RunStatus::Running;
            state
                .branch
                .get_or_insert_with(|| format!("courier/run-{id}"));
            run = self
                .store
                .update_workflow_run(id, RunStatus::Pending, state)
                .await?;
        }
        loop {
            if run.state.status.is_final() {
                return Ok(run);
            }
            let steps = self.store.list_workflow_steps(id).await?;
            let step = match next_action(&run, &steps) {
                NextAction::End(status, error) => {
                    return self.end_run(run, &steps, status, error).await;
                }
                NextAction::Continue(step) => steps
                    .iter()
                    .find(|s| s.id == step)
                    .cloned()
                    .ok_or_else(|| {
                        OrchestratorError::Store(courier_store::StoreError::NotFound {
                            entity: "workflow step",
                            id: step.to_string(),
                        })
                    })?,
                NextAction::Start(role, iteration) => {
                    if iteration != run.state.iteration {
                        let mut state = run.state.clone();
                        state.iteration = iteration;
                        run = self
                            .store
                            .update_workflow_run(id, run.state.status, state)
                            .await?;
                    }
                    self.store
                        .add_workflow_step(NewWorkflowStep {
                            run_id: id,
                            role,
                            iteration,
                        })
                        .await?
                }
            };
            let outcome = self.execute_step(&run, &steps, &step).await?;
            self.store.finish_workflow_step(step.id, outcome).await?;
            run = self.store.get_workflow_run(id).await?;
        }
    }

    /// Runs one step to its outcome. Failures of the step (a create refused, a run that
    /// failed, no verdict) are its outcome; only store failures are errors.
    async fn execute_step(
        &self,
        run: &WorkflowRun,
        steps: &[WorkflowStep],
        step: &WorkflowStep,
    ) -> Result<StepOutcome> {
        let failed = |error: String| StepOutcome {
            status: RunStatus::Failed,
            verdict: None,
            feedback: None,
            output: None,
            error: Some(error),
        };
        let sandbox = match self.step_sandbox(run, steps, step).await {
            Ok(sandbox) => sandbox,
            Err(e @ OrchestratorError::Store(_)) => return Err(e),
            Err(e) => return Ok(failed(e.to_string())),
        };
        let answer: Answer = match self.orchestrator.wait_for_answer(sandbox, self.poll).await {
            Ok(answer) => answer,
            Err(e @ OrchestratorError::Store(_)) => return Err(e),
            Err(e) => return Ok(failed(e.to_string())),
        };
        let role = step.role;
        if role == StepRole::Checker {
            // A checker's sandbox has nothing to keep.
            if let Err(e) = self
                .orchestrator
                .kill_with(sandbox, Some("check done".into()), KillOptions::discard())
                .await
            {
                tracing::debug!(sandbox = %sandbox, error = %e, "checker sandbox already ended");
            }
        }
        if !answer.succeeded() {
            return Ok(failed(format!(
                "the {role}'s run failed: {}",
                tail(&answer.text)
            )));
        }
        match role {
            StepRole::Checker => match parse::parse_verdict(&answer.text) {
                Some((verdict, feedback)) => Ok(StepOutcome {
                    status: RunStatus::Succeeded,
                    verdict: Some(verdict),
                    feedback: Some(feedback),
                    output: Some(answer.text),
                    error: None,
                }),
                None => Ok(failed(format!(
                    "the checker's answer has no verdict line ({}): …{}",
                    prompts::VERDICT_FORMAT,
                    tail(&answer.text)
                ))),
            },
            StepRole::Designer | StepRole::Optimizer => {
                if let Err(e) = self.orchestrator.save_work(sandbox).await {
                    return Ok(failed(format!(
                        "the {role}'s work could not be pushed: {e}"
                    )));
                }
                Ok(StepOutcome {
                    status: RunStatus::Succeeded,
                    verdict: None,
                    feedback: None,
                    output: Some(answer.text),
                    error: None,
                })
            }
        }
    }

    /// The step's sandbox with the step's prompt delivered: created (or found again after
    /// a crash between its creation and its recording), or for a later designer
    /// iteration the designer's sandbox sent the checker's feedback.
    async fn step_sandbox(
        &self,
        run: &WorkflowRun,
        steps: &[WorkflowStep],
        step: &WorkflowStep,
    ) -> Result<SandboxId> {
        let spec_step = run
            .spec
            .steps
            .iter()
            .find(|s| s.role == step.role)
            .cloned()
            .unwrap_or_default();
        let instructions = spec_step.instructions.as_deref();
        // The latest: a designer sandbox that ended between iterations (its timeout) is
        // replaced by a new one on the branch.
        let designer_sandbox = steps
            .iter()
            .rev()
            .find(|s| s.role == StepRole::Designer && s.sandbox_id.is_some())
            .and_then(|s| s.sandbox_id);
        let feedback_of = |before: i64| {
            steps
                .iter()
                .rev()
                .find(|s| s.role == StepRole::Checker && s.iteration == before)
                .and_then(|s| s.feedback.clone())
                .unwrap_or_default()
        };
        let last_output = |role: StepRole| {
            steps
                .iter()
                .rev()
                .find(|s| s.role == role && s.status == RunStatus::Succeeded)
                .and_then(|s| s.output.clone())
                .unwrap_or_default()
        };
        let designer_alive = match designer_sandbox {
            Some(id) => !self.store.get_sandbox(id).await?.status.is_final(),
            None => false,
        };
        if step.role == StepRole::Designer
            && step.iteration > 1
            && let Some(sandbox) = designer_sandbox.filter(|_| designer_alive)
        {
            if step.sandbox_id.is_none() {
                self.store
                    .set_workflow_step_sandbox(step.id, sandbox)
                    .await?;
            }
            let prompt =
                prompts::designer_again(run, step.iteration, &feedback_of(step.iteration - 1));
            if self.orchestrator.last_prompt(sandbox).await?.as_deref() != Some(prompt.as_str()) {
                self.orchestrator.send_message(sandbox, &prompt).await?;
            }
            return Ok(sandbox);
        }
        if let Some(sandbox) = step.sandbox_id {
            return Ok(sandbox);
        }
        if let Some(adopted) = self.unrecorded_sandbox(run, steps, step).await? {
            self.record_step_sandbox(run, step, adopted).await?;
            return Ok(adopted);
        }
        let prompt = match step.role {
            StepRole::Designer if step.iteration > 1 => format!(
                "{}\n\n{}",
                prompts::designer(run, instructions),
                prompts::designer_again(run, step.iteration, &feedback_of(step.iteration - 1))
            ),
            StepRole::Designer => prompts::designer(run, instructions),
            StepRole::Checker => prompts::checker(
                run,
                step.iteration,
                &last_output(StepRole::Designer),
                instructions,
            ),
            StepRole::Optimizer => {
                // One writer on the branch at a time: the designer's work is pushed, its
                // sandbox ends before the optimizer's starts.
                if let Some(designer) = designer_sandbox {
                    self.end_one(designer, KillOptions::save_only()).await;
                }
                prompts::optimizer(run, instructions)
            }
        };
        let persona = self
            .step_persona(run.project_id, spec_step.persona_id)
            .await?;
        let target = StepTarget {
            user_id: run.user_id,
            project_id: run.project_id,
            spec: &run.spec,
            run: Some(run),
        };
        let request = step_request(&target, step.role, persona.as_ref(), prompt);
        let sandbox = self.orchestrator.create(request).await?;
        self.record_step_sandbox(run, step, sandbox.id).await?;
        Ok(sandbox.id)
    }

    async fn record_step_sandbox(
        &self,
        run: &WorkflowRun,
        step: &WorkflowStep,
        sandbox: SandboxId,
    ) -> Result<()> {
        self.store
            .set_workflow_step_sandbox(step.id, sandbox)
            .await?;
        if step.role == StepRole::Designer && run.state.designer_sandbox_id != Some(sandbox) {
            let mut state = run.state.clone();
            state.designer_sandbox_id = Some(sandbox);
            self.store
                .update_workflow_run(run.id, run.state.status, state)
                .await?;
        }
        Ok(())
    }

    /// A sandbox of the run that no step records, created after `step` began: the
    /// step's own, created just before a crash.
    async fn unrecorded_sandbox(
        &self,
        run: &WorkflowRun,
        steps: &[WorkflowStep],
        step: &WorkflowStep,
    ) -> Result<Option<SandboxId>> {
        let recorded: Vec<SandboxId> = steps.iter().filter_map(|s| s.sandbox_id).collect();
        Ok(self
            .run_sandboxes(run.id)
            .await?
            .into_iter()
            .find(|s| {
                !recorded.contains(&s.id)
                    && s.created_at >= step.started_at
                    && s.status != SandboxStatus::Error
            })
            .map(|s| s.id))
    }

    /// Kills one sandbox with `options`, ignoring one that already ended.
    async fn end_one(&self, id: SandboxId, options: KillOptions) {
        match self
            .orchestrator
            .kill_with(id, Some("workflow step done".into()), options)
            .await
        {
            Ok(_) | Err(OrchestratorError::InvalidState { .. }) => {}
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not end a step's sandbox"),
        }
    }

    /// Ends a run: its last writer killed (pushing and, when the run passed, opening the
    /// pull request the run's chain allows), every other sandbox of it ended, the status
    /// recorded. Safe to repeat after a crash.
    async fn end_run(
        &self,
        run: WorkflowRun,
        steps: &[WorkflowStep],
        status: RunStatus,
        error: Option<String>,
    ) -> Result<WorkflowRun> {
        let writer = steps
            .iter()
            .rev()
            .find(|s| {
                matches!(s.role, StepRole::Optimizer | StepRole::Designer) && s.sandbox_id.is_some()
            })
            .and_then(|s| s.sandbox_id);
        if let Some(writer) = writer {
            let pull_request = if status == RunStatus::Succeeded {
                self.pull_request_for(&run).await?
            } else {
                PullRequest::None
            };
            self.end_one(
                writer,
                KillOptions {
                    pull_request,
                    ..KillOptions::default()
                },
            )
            .await;
        }
        self.end_sandboxes(run.id, writer, KillOptions::discard())
            .await;
        let mut state = run.state.clone();
        state.status = status;
        state.error = error;
        state.verdict = steps
            .iter()
            .rev()
            .find(|s| s.role == StepRole::Checker)
            .and_then(|s| s.verdict);
        Ok(self
            .store
            .update_workflow_run(run.id, run.state.status, state)
            .await?)
    }

    /// The pull request a finished run opens: against its base branch; within a chain,
    /// as the chain's mode says.
    async fn pull_request_for(&self, run: &WorkflowRun) -> Result<PullRequest> {
        if let Some(chain) = run.chain_id {
            return self.chain_pull_request(chain, run).await;
        }
        Ok(match &run.base_branch {
            Some(base) => PullRequest::Against(base.clone()),
            None => PullRequest::Default,
        })
    }
}
