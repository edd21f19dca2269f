//! A workflow as requested, validated into the stored [`WorkflowSpec`], and each step's
//! sandbox resolved from it: the step's CLI override, else its persona, else the run's.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use courier_store::{
    CliOverrides, Persona, ProjectId, ProjectSettings, SandboxConfig, SandboxLinks, StepRole,
    StepSpec, UserId, WorkflowRun, WorkflowSpec,
};

use crate::config::{AgentProfile, CreateRequest};
use crate::{OrchestratorError, Result};

/// Allowed designer–checker iterations.
pub const MAX_ITERATIONS: RangeInclusive<u32> = 1..=10;
/// Iterations when none are asked for.
pub const DEFAULT_MAX_ITERATIONS: u32 = 3;

/// A workflow as it arrives from the API or the CLI; everything is optional. Unset
/// fields come from the project's settings, then the product defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowRequest {
    /// The CLI every step uses unless overridden.
    pub tool: Option<String>,
    /// Its model.
    pub model: Option<String>,
    /// The steps in order; default designer then checker.
    pub steps: Option<Vec<StepSpec>>,
    /// Designer–checker rounds at most ([`MAX_ITERATIONS`], default
    /// [`DEFAULT_MAX_ITERATIONS`]).
    pub max_iterations: Option<u32>,
    /// Memory in MB per sandbox.
    pub memory_mb: Option<i64>,
    /// CPUs per sandbox.
    pub cpu_count: Option<i64>,
    /// Lifetime per sandbox in ms.
    pub timeout_ms: Option<i64>,
    /// The template of every step.
    pub template_id: Option<String>,
    /// The checker's template (falls back to `template_id`).
    pub checker_template_id: Option<String>,
    /// Thinking effort per model name.
    pub thinking_effort: BTreeMap<String, String>,
    /// `designerCliId`, `checkerCliId`, `optimizerCliId`.
    pub cli_overrides: CliOverrides,
    /// The designer's model.
    pub designer_model: Option<String>,
    /// The checker's model.
    pub checker_model: Option<String>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> OrchestratorError {
    OrchestratorError::InvalidConfig {
        field,
        message: message.into(),
    }
}

fn blank_to_none(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Checks the steps' shape: a designer first, each role once, in the order designer,
/// checker, optimizer.
pub fn validate_steps(steps: &[StepSpec]) -> Result<()> {
    if steps.first().map(|s| s.role) != Some(StepRole::Designer) {
        return Err(invalid("steps", "must start with a designer step"));
    }
    for pair in steps.windows(2) {
        if pair[0].role >= pair[1].role {
            return Err(invalid(
                "steps",
                format!(
                    "each role at most once, in the order designer, checker, optimizer (got {} then {})",
                    pair[0].role, pair[1].role
                ),
            ));
        }
    }
    Ok(())
}

impl WorkflowRequest {
    /// The stored spec, sizes the project's defaults fill in (then the product's):
    /// shapes checked here; tools, models, ranges and templates are checked per step
    /// when a run starts (see [`Workflows`](super::Workflows)).
    pub fn to_spec(&self, settings: &ProjectSettings) -> Result<WorkflowSpec> {
        let steps = self.steps.clone().unwrap_or_else(|| {
            vec![
                StepSpec {
                    role: StepRole::Designer,
                    ..Default::default()
                },
                StepSpec {
                    role: StepRole::Checker,
                    ..Default::default()
                },
            ]
        });
        validate_steps(&steps)?;
        let max_iterations = self.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS);
        if !MAX_ITERATIONS.contains(&max_iterations) {
            return Err(invalid(
                "max_iterations",
                format!(
                    "{max_iterations} is out of range: allowed {}–{}",
                    MAX_ITERATIONS.start(),
                    MAX_ITERATIONS.end()
                ),
            ));
        }
        let defaults = SandboxConfig::default();
        let d = &settings.sandbox_defaults;
        Ok(WorkflowSpec {
            tool: blank_to_none(&self.tool),
            model: blank_to_none(&self.model),
            steps,
            max_iterations,
            config: SandboxConfig {
                template_id: blank_to_none(&self.template_id).or_else(|| d.template_id.clone()),
                timeout_ms: self
                    .timeout_ms
                    .or(d.timeout_ms)
                    .unwrap_or(defaults.timeout_ms),
                memory_mb: self.memory_mb.or(d.memory_mb).unwrap_or(defaults.memory_mb),
                cpu_count: self.cpu_count.or(d.cpu_count).unwrap_or(defaults.cpu_count),
                designer_model: blank_to_none(&self.designer_model),
                checker_model: blank_to_none(&self.checker_model),
                thinking_effort: {
                    let mut effort = d.thinking_effort.clone();
                    effort.extend(self.thinking_effort.clone());
                    effort
                },
                checker_template_id: blank_to_none(&self.checker_template_id)
                    .or_else(|| d.checker_template_id.clone()),
                cli_overrides: CliOverrides {
                    designer: blank_to_none(&self.cli_overrides.designer),
                    optimizer: blank_to_none(&self.cli_overrides.optimizer),
                    checker: blank_to_none(&self.cli_overrides.checker),
                },
                // Set by each create from the project's settings.
                keys_via_gateway: false,
                token_budget: None,
            },
        })
    }
}

/// Where a step's sandbox comes from.
pub struct StepTarget<'a> {
    /// Who runs it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// The workflow.
    pub spec: &'a WorkflowSpec,
    /// The run it belongs to, when there is one.
    pub run: Option<&'a WorkflowRun>,
}

/// The create request of a step's sandbox: tool from the step's CLI override, else its
/// persona, else the workflow's; model from the role's model, else the persona's (when it
/// is for the same tool), else the workflow's (same rule); effort from the persona, else
/// the workflow's per-model table; the checker's template from `checker_template_id`,
/// else the workflow's.
pub fn step_request(
    target: &StepTarget<'_>,
    role: StepRole,
    persona: Option<&Persona>,
    prompt: String,
) -> CreateRequest {
    let spec = target.spec;
    let config = &spec.config;
    let override_tool = match role {
        StepRole::Designer => &config.cli_overrides.designer,
        StepRole::Checker => &config.cli_overrides.checker,
        StepRole::Optimizer => &config.cli_overrides.optimizer,
    };
    let tool = override_tool
        .clone()
        .or_else(|| persona.and_then(|p| p.tool.clone()))
        .or_else(|| spec.tool.clone());
    let role_model = match role {
        StepRole::Designer => config.designer_model.clone(),
        StepRole::Checker => config.checker_model.clone(),
        StepRole::Optimizer => None,
    };
    let persona_model = persona
        .filter(|p| p.tool.is_none() || p.tool == tool)
        .and_then(|p| p.model.clone());
    let spec_model = (tool == spec.tool).then(|| spec.model.clone()).flatten();
    let model = role_model.or(persona_model).or(spec_model);
    let thinking_effort = persona.and_then(|p| p.thinking_effort.clone()).or_else(|| {
        model
            .as_deref()
            .and_then(|m| config.thinking_effort.get(m).cloned())
    });
    let template_id = match role {
        StepRole::Checker => config
            .checker_template_id
            .clone()
            .or_else(|| config.template_id.clone()),
        _ => config.template_id.clone(),
    };
    let run = target.run;
    CreateRequest {
        user_id: target.user_id,
        project_id: target.project_id,
        tool,
        model,
        prompt,
        memory_mb: Some(config.memory_mb),
        cpu_count: Some(config.cpu_count),
        timeout_ms: Some(config.timeout_ms),
        template_id,
        thinking_effort,
        repo_url: run.and_then(|r| r.repo_url.clone()),
        base_branch: run.and_then(|r| r.base_branch.clone()),
        branch: run.and_then(|r| r.state.branch.clone()),
        links: SandboxLinks {
            run_id: run.map(|r| r.id.to_string()),
            ..Default::default()
        },
        profile: persona
            .map(|p| AgentProfile {
                system_prompt: p.system_prompt.clone(),
                skills: p.skills.clone(),
            })
            .unwrap_or_default(),
    }
}
