//! Personas, workflow runs and their steps, work chains and issue sessions: the records
//! of multi-step agent work.
//!
//! The store keeps their state and checks shapes (final statuses stay final, one
//! compare-and-set per status change); which step runs next, and when, is the
//! orchestrator's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    IssueCardId, IssueSessionId, NamedText, PersonaId, PrMode, ProjectId, Result, RunStatus,
    SandboxConfig, SandboxId, Severity, StepRole, StoreError, UserId, Verdict, WorkChainId,
    WorkflowRunId, WorkflowStepId,
};

/// A named agent setup of a project that workflow steps can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persona {
    /// Its id.
    pub id: PersonaId,
    /// The project it belongs to.
    pub project_id: ProjectId,
    /// Its name, unique in the project.
    pub name: String,
    /// CLI tool id.
    pub tool: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Thinking effort.
    pub thinking_effort: Option<String>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Skills, in the order given.
    pub skills: Vec<NamedText>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What [`Store::create_persona`](crate::Store::create_persona) and
/// [`Store::update_persona`](crate::Store::update_persona) take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPersona {
    /// The project (ignored by updates: a persona stays in its project).
    pub project_id: ProjectId,
    /// Name, unique in the project.
    pub name: String,
    /// CLI tool id.
    pub tool: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Thinking effort.
    pub thinking_effort: Option<String>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Skills; names must be unique.
    pub skills: Vec<NamedText>,
}

impl NewPersona {
    /// Rejects duplicate skill names.
    pub(crate) fn check_shape(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for skill in &self.skills {
            if !seen.insert(skill.name.as_str()) {
                return Err(StoreError::invalid(
                    "skills",
                    format!("{} appears twice; names must be unique", skill.name),
                ));
            }
        }
        Ok(())
    }
}

/// One step of a workflow definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// What the step does.
    pub role: StepRole,
    /// The persona it runs as, if any.
    pub persona_id: Option<PersonaId>,
    /// Extra instructions for the step.
    pub instructions: Option<String>,
}

/// How a workflow run (or every run of a chain) runs. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    /// CLI tool id.
    pub tool: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// The steps, in order.
    pub steps: Vec<StepSpec>,
    /// Most designer iterations.
    pub max_iterations: u32,
    /// Sandbox configuration of the run's sandboxes.
    pub config: SandboxConfig,
}

/// The mutable part of a run, saved whole by
/// [`Store::update_workflow_run`](crate::Store::update_workflow_run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Where the run is.
    pub status: RunStatus,
    /// The current designer iteration (0 before the first).
    pub iteration: i64,
    /// The sandbox the designer works in.
    pub designer_sandbox_id: Option<SandboxId>,
    /// The last checker verdict.
    pub verdict: Option<Verdict>,
    /// The branch the run works on.
    pub branch: Option<String>,
    /// Why the run failed.
    pub error: Option<String>,
}

/// A workflow run: one prompt worked on by designer, checker and optimizer steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Its id.
    pub id: WorkflowRunId,
    /// Who started it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// The chain it is an item of, if any.
    pub chain_id: Option<WorkChainId>,
    /// Title.
    pub title: String,
    /// The task.
    pub prompt: String,
    /// How it runs.
    pub spec: WorkflowSpec,
    /// Repository to clone.
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// Its mutable state.
    pub state: RunState,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::create_workflow_run`](crate::Store::create_workflow_run) takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorkflowRun {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// The chain it is an item of, if any.
    pub chain_id: Option<WorkChainId>,
    /// Title.
    pub title: String,
    /// The task.
    pub prompt: String,
    /// How it runs.
    pub spec: WorkflowSpec,
    /// Repository to clone.
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// The branch to work on, if already known.
    pub branch: Option<String>,
}

/// One step of a workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStep {
    /// Its id.
    pub id: WorkflowStepId,
    /// Its run.
    pub run_id: WorkflowRunId,
    /// Its number in the run, from 1.
    pub seq: i64,
    /// What it does.
    pub role: StepRole,
    /// The designer iteration it belongs to.
    pub iteration: i64,
    /// The sandbox it runs in.
    pub sandbox_id: Option<SandboxId>,
    /// `running` until finished.
    pub status: RunStatus,
    /// A checker's verdict.
    pub verdict: Option<Verdict>,
    /// A checker's feedback.
    pub feedback: Option<String>,
    /// What the step produced.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::add_workflow_step`](crate::Store::add_workflow_step) takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorkflowStep {
    /// Its run.
    pub run_id: WorkflowRunId,
    /// What it does.
    pub role: StepRole,
    /// The designer iteration it belongs to.
    pub iteration: i64,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// A final status.
    pub status: RunStatus,
    /// A checker's verdict.
    pub verdict: Option<Verdict>,
    /// A checker's feedback.
    pub feedback: Option<String>,
    /// What the step produced.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A work chain: workflow runs, one per item, one after another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkChain {
    /// Its id.
    pub id: WorkChainId,
    /// Who started it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// Title.
    pub title: String,
    /// How every run of the chain runs.
    pub spec: WorkflowSpec,
    /// Repository to clone.
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// The branch the chain works on.
    pub branch: String,
    /// How it opens pull requests.
    pub pr_mode: PrMode,
    /// Where it is.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::create_work_chain`](crate::Store::create_work_chain) takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorkChain {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// Title.
    pub title: String,
    /// How every run of the chain runs.
    pub spec: WorkflowSpec,
    /// Repository to clone.
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// The branch the chain works on.
    pub branch: String,
    /// How it opens pull requests.
    pub pr_mode: PrMode,
    /// Its items, in order; at least one.
    pub items: Vec<NewChainItem>,
}

/// One item of a work chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainItem {
    /// Its chain.
    pub chain_id: WorkChainId,
    /// Its place in the chain, from 1.
    pub position: i64,
    /// Title.
    pub title: String,
    /// The task.
    pub prompt: String,
    /// The issue card it came from, if any.
    pub card_id: Option<IssueCardId>,
    /// The run working on it, once started.
    pub run_id: Option<WorkflowRunId>,
    /// Where it is.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
}

/// An item given to [`Store::create_work_chain`](crate::Store::create_work_chain) or
/// [`Store::append_chain_item`](crate::Store::append_chain_item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewChainItem {
    /// Title.
    pub title: String,
    /// The task.
    pub prompt: String,
    /// The issue card it comes from, if any.
    pub card_id: Option<IssueCardId>,
}

/// An issue session: an agent looking through a project for issues worth fixing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueSession {
    /// Its id.
    pub id: IssueSessionId,
    /// Who started it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// What to look at, if narrowed.
    pub focus: Option<String>,
    /// The sandbox the agent looks in.
    pub sandbox_id: Option<SandboxId>,
    /// Where it is.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::create_issue_session`](crate::Store::create_issue_session) takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIssueSession {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// What to look at, if narrowed.
    pub focus: Option<String>,
}

/// An issue an issue session found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueCard {
    /// Its id.
    pub id: IssueCardId,
    /// The session that found it.
    pub session_id: IssueSessionId,
    /// Its project.
    pub project_id: ProjectId,
    /// Its place in the session's cards, from 1.
    pub position: i64,
    /// Title.
    pub title: String,
    /// What is wrong.
    pub description: String,
    /// How serious it is.
    pub severity: Severity,
    /// A prompt that would fix it.
    pub suggested_prompt: String,
    /// The sandbox started for it, if any.
    pub sandbox_id: Option<SandboxId>,
    /// The work chain it went into, if any.
    pub chain_id: Option<WorkChainId>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// A card given to [`Store::finish_issue_session`](crate::Store::finish_issue_session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIssueCard {
    /// Title.
    pub title: String,
    /// What is wrong.
    pub description: String,
    /// How serious it is.
    pub severity: Severity,
    /// A prompt that would fix it.
    pub suggested_prompt: String,
}

/// Rejects a status that is not final where one is required.
pub(crate) fn check_final(field: &'static str, status: RunStatus) -> Result<()> {
    if !status.is_final() {
        return Err(StoreError::invalid(
            field,
            format!("`{status}` is not final (succeeded, failed or cancelled)"),
        ));
    }
    Ok(())
}
