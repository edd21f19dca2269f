//! Workflow runs: the options every run and chain shares, runs, their steps and detail.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_orchestrator::pr::redact_url;
use courier_orchestrator::work::{self, WorkflowRequest};
use courier_store::{
    self as store, CliOverrides, PersonaId, ProjectId, RunStatus, SandboxId, StepRole, Verdict,
    WorkChainId, WorkflowRunId, WorkflowStepId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::views::{Sandbox, Usage};
use crate::{ApiError, Result};

/// One step of a workflow as requested.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// `designer`, `checker` or `optimizer`; a designer first, each role once, in that
    /// order.
    #[schema(schema_with = crate::views::step_role)]
    pub role: String,
    /// The persona it runs as.
    #[serde(default, alias = "personaId")]
    #[schema(format = "uuid")]
    pub persona_id: Option<String>,
    /// Extra instructions for the step.
    #[serde(default)]
    pub instructions: Option<String>,
}

/// The options of a workflow: a run's, or every run of a chain. All optional: unset ones
/// come from the project's settings, then the product defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowOptions {
    /// The CLI every step uses unless overridden.
    #[serde(default)]
    pub tool: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// The steps; default designer then checker.
    #[serde(default)]
    pub steps: Option<Vec<StepRequest>>,
    /// Designer–checker rounds at most (1–10, default 3).
    #[serde(default, alias = "maxIterations")]
    pub max_iterations: Option<u32>,
    /// Memory in MB per sandbox.
    #[serde(default, alias = "memoryMb")]
    pub memory_mb: Option<i64>,
    /// CPUs per sandbox.
    #[serde(default, alias = "cpuCount")]
    pub cpu_count: Option<i64>,
    /// Lifetime per sandbox in ms.
    #[serde(default, alias = "timeoutMs")]
    pub timeout_ms: Option<i64>,
    /// The template of every step.
    #[serde(default, alias = "templateId")]
    pub template_id: Option<String>,
    /// The checker's template (falls back to `template_id`).
    #[serde(default, alias = "checkerTemplateId")]
    pub checker_template_id: Option<String>,
    /// Thinking effort per model name.
    #[serde(default, alias = "thinkingEffort")]
    pub thinking_effort: BTreeMap<String, String>,
    /// The designer's CLI.
    #[serde(default, alias = "designerCliId")]
    pub designer_cli_id: Option<String>,
    /// The checker's CLI.
    #[serde(default, alias = "checkerCliId")]
    pub checker_cli_id: Option<String>,
    /// The optimizer's CLI.
    #[serde(default, alias = "optimizerCliId")]
    pub optimizer_cli_id: Option<String>,
    /// The designer's model.
    #[serde(default, alias = "designerModel")]
    pub designer_model: Option<String>,
    /// The checker's model.
    #[serde(default, alias = "checkerModel")]
    pub checker_model: Option<String>,
}

fn persona_id_field(raw: &str) -> Result<PersonaId> {
    Uuid::parse_str(raw.trim())
        .map(PersonaId::from_uuid)
        .map_err(|_| ApiError::invalid("steps", format!("`{raw}` is not a persona id")))
}

impl WorkflowOptions {
    /// The engine's request; roles and persona ids parsed (422 naming `steps`).
    pub fn into_request(self) -> Result<WorkflowRequest> {
        let steps = match self.steps {
            Some(steps) => Some(
                steps
                    .into_iter()
                    .map(|s| {
                        Ok(store::StepSpec {
                            role: StepRole::parse_field(s.role.trim(), "steps")?,
                            persona_id: s
                                .persona_id
                                .as_deref()
                                .filter(|p| !p.trim().is_empty())
                                .map(persona_id_field)
                                .transpose()?,
                            instructions: s.instructions,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok(WorkflowRequest {
            tool: self.tool,
            model: self.model,
            steps,
            max_iterations: self.max_iterations,
            memory_mb: self.memory_mb,
            cpu_count: self.cpu_count,
            timeout_ms: self.timeout_ms,
            template_id: self.template_id,
            checker_template_id: self.checker_template_id,
            thinking_effort: self.thinking_effort,
            cli_overrides: CliOverrides {
                designer: self.designer_cli_id,
                optimizer: self.optimizer_cli_id,
                checker: self.checker_cli_id,
            },
            designer_model: self.designer_model,
            checker_model: self.checker_model,
        })
    }
}

/// `POST /v1/projects/{id}/workflow-runs`: a prompt worked on by designer, checker (and
/// optimizer) steps. Everything but `prompt` is optional.
///
/// The workflow options are repeated here rather than `#[serde(flatten)]`ed from
/// [`WorkflowOptions`]: serde cannot combine `flatten` with `deny_unknown_fields`, and a
/// misspelt option must be refused; [`NewWorkflowRun::options`] maps them across.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkflowRun {
    /// The task.
    pub prompt: String,
    /// Title (default: the prompt's first line).
    #[serde(default)]
    pub title: Option<String>,
    /// Repository to clone (default: the project's).
    #[serde(default, alias = "repoUrl")]
    pub repo_url: Option<String>,
    /// Base branch.
    #[serde(default, alias = "baseBranch")]
    pub base_branch: Option<String>,
    /// The branch to work on.
    #[serde(default)]
    pub branch: Option<String>,
    /// The CLI every step uses unless overridden.
    #[serde(default)]
    pub tool: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// The steps; default designer then checker.
    #[serde(default)]
    pub steps: Option<Vec<StepRequest>>,
    /// Designer–checker rounds at most (1–10, default 3).
    #[serde(default, alias = "maxIterations")]
    pub max_iterations: Option<u32>,
    /// Memory in MB per sandbox.
    #[serde(default, alias = "memoryMb")]
    pub memory_mb: Option<i64>,
    /// CPUs per sandbox.
    #[serde(default, alias = "cpuCount")]
    pub cpu_count: Option<i64>,
    /// Lifetime per sandbox in ms.
    #[serde(default, alias = "timeoutMs")]
    pub timeout_ms: Option<i64>,
    /// The template of every step.
    #[serde(default, alias = "templateId")]
    pub template_id: Option<String>,
    /// The checker's template (falls back to `template_id`).
    #[serde(default, alias = "checkerTemplateId")]
    pub checker_template_id: Option<String>,
    /// Thinking effort per model name.
    #[serde(default, alias = "thinkingEffort")]
    pub thinking_effort: BTreeMap<String, String>,
    /// The designer's CLI.
    #[serde(default, alias = "designerCliId")]
    pub designer_cli_id: Option<String>,
    /// The checker's CLI.
    #[serde(default, alias = "checkerCliId")]
    pub checker_cli_id: Option<String>,
    /// The optimizer's CLI.
    #[serde(default, alias = "optimizerCliId")]
    pub optimizer_cli_id: Option<String>,
    /// The designer's model.
    #[serde(default, alias = "designerModel")]
    pub designer_model: Option<String>,
    /// The checker's model.
    #[serde(default, alias = "checkerModel")]
    pub checker_model: Option<String>,
}

impl NewWorkflowRun {
    /// The workflow options of the run.
    pub fn options(&self) -> WorkflowOptions {
        WorkflowOptions {
            tool: self.tool.clone(),
            model: self.model.clone(),
            steps: self.steps.clone(),
            max_iterations: self.max_iterations,
            memory_mb: self.memory_mb,
            cpu_count: self.cpu_count,
            timeout_ms: self.timeout_ms,
            template_id: self.template_id.clone(),
            checker_template_id: self.checker_template_id.clone(),
            thinking_effort: self.thinking_effort.clone(),
            designer_cli_id: self.designer_cli_id.clone(),
            checker_cli_id: self.checker_cli_id.clone(),
            optimizer_cli_id: self.optimizer_cli_id.clone(),
            designer_model: self.designer_model.clone(),
            checker_model: self.checker_model.clone(),
        }
    }
}

/// One step of a stored workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepSpec {
    /// What it does.
    #[schema(schema_with = crate::views::step_role)]
    pub role: StepRole,
    /// The persona it runs as.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub persona_id: Option<PersonaId>,
    /// Extra instructions.
    pub instructions: Option<String>,
}

/// How a run (or every run of a chain) runs, as resolved when it was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSpec {
    /// CLI tool id (`null`: the project's default).
    pub tool: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// The steps, in order.
    pub steps: Vec<StepSpec>,
    /// Most designer iterations.
    pub max_iterations: u32,
    /// Memory in MB per sandbox.
    pub memory_mb: i64,
    /// CPUs per sandbox.
    pub cpu_count: i64,
    /// Lifetime per sandbox in ms.
    pub timeout_ms: i64,
    /// The template of every step.
    pub template_id: Option<String>,
    /// The checker's template.
    pub checker_template_id: Option<String>,
    /// Thinking effort per model name.
    pub thinking_effort: BTreeMap<String, String>,
    /// The designer's CLI.
    pub designer_cli_id: Option<String>,
    /// The checker's CLI.
    pub checker_cli_id: Option<String>,
    /// The optimizer's CLI.
    pub optimizer_cli_id: Option<String>,
    /// The designer's model.
    pub designer_model: Option<String>,
    /// The checker's model.
    pub checker_model: Option<String>,
}

impl From<store::WorkflowSpec> for WorkflowSpec {
    fn from(s: store::WorkflowSpec) -> Self {
        let c = s.config;
        WorkflowSpec {
            tool: s.tool,
            model: s.model,
            steps: s
                .steps
                .into_iter()
                .map(|st| StepSpec {
                    role: st.role,
                    persona_id: st.persona_id,
                    instructions: st.instructions,
                })
                .collect(),
            max_iterations: s.max_iterations,
            memory_mb: c.memory_mb,
            cpu_count: c.cpu_count,
            timeout_ms: c.timeout_ms,
            template_id: c.template_id,
            checker_template_id: c.checker_template_id,
            thinking_effort: c.thinking_effort,
            designer_cli_id: c.cli_overrides.designer,
            checker_cli_id: c.cli_overrides.checker,
            optimizer_cli_id: c.cli_overrides.optimizer,
            designer_model: c.designer_model,
            checker_model: c.checker_model,
        }
    }
}

/// A workflow run: one prompt worked on by designer, checker and optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowRun {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: WorkflowRunId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// The chain it is an item of, if any.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub chain_id: Option<WorkChainId>,
    /// Title.
    pub title: String,
    /// The task.
    pub prompt: String,
    /// `pending → running →` `succeeded`, `failed` or `cancelled`.
    #[schema(schema_with = crate::views::run_status)]
    pub status: RunStatus,
    /// The current designer iteration (0 before the first).
    pub iteration: i64,
    /// The last checker verdict.
    #[schema(schema_with = crate::views::verdict_or_null)]
    pub verdict: Option<Verdict>,
    /// The branch the run works on.
    pub branch: Option<String>,
    /// Repository (credentials removed).
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// The sandbox the designer works in.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub designer_sandbox_id: Option<SandboxId>,
    /// Why it failed.
    pub error: Option<String>,
    /// How it runs.
    pub spec: WorkflowSpec,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<store::WorkflowRun> for WorkflowRun {
    fn from(r: store::WorkflowRun) -> Self {
        WorkflowRun {
            id: r.id,
            project_id: r.project_id,
            chain_id: r.chain_id,
            title: r.title,
            prompt: r.prompt,
            status: r.state.status,
            iteration: r.state.iteration,
            verdict: r.state.verdict,
            branch: r.state.branch,
            repo_url: r.repo_url.as_deref().map(redact_url),
            base_branch: r.base_branch,
            designer_sandbox_id: r.state.designer_sandbox_id,
            error: r.state.error,
            spec: r.spec.into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        }
    }
}

/// A project's workflow runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowRunList {
    /// The runs.
    pub items: Vec<WorkflowRun>,
}

/// One step of a workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowStep {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: WorkflowStepId,
    /// Its number in the run, from 1.
    pub seq: i64,
    /// What it does.
    #[schema(schema_with = crate::views::step_role)]
    pub role: StepRole,
    /// The designer iteration it belongs to.
    pub iteration: i64,
    /// The sandbox it runs in.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub sandbox_id: Option<SandboxId>,
    /// `running` until finished.
    #[schema(schema_with = crate::views::run_status)]
    pub status: RunStatus,
    /// A checker's verdict.
    #[schema(schema_with = crate::views::verdict_or_null)]
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

impl From<store::WorkflowStep> for WorkflowStep {
    fn from(s: store::WorkflowStep) -> Self {
        WorkflowStep {
            id: s.id,
            seq: s.seq,
            role: s.role,
            iteration: s.iteration,
            sandbox_id: s.sandbox_id,
            status: s.status,
            verdict: s.verdict,
            feedback: s.feedback,
            output: s.output,
            error: s.error,
            started_at: s.started_at,
            finished_at: s.finished_at,
        }
    }
}

/// `GET /v1/workflow-runs/{id}`: a run with its steps, its sandboxes (oldest first) and
/// their summed usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    pub run: WorkflowRun,
    /// Its steps in order.
    pub steps: Vec<WorkflowStep>,
    /// Every sandbox of the run.
    pub sandboxes: Vec<Sandbox>,
    /// Their usage summed.
    pub usage: Usage,
}

impl From<work::RunDetail> for RunDetail {
    fn from(d: work::RunDetail) -> Self {
        RunDetail {
            usage: (&d.usage).into(),
            run: d.run.into(),
            steps: d.steps.into_iter().map(Into::into).collect(),
            sandboxes: d.sandboxes.into_iter().map(Into::into).collect(),
        }
    }
}
