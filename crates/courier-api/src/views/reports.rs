//! Answers that are not store records: usage totals, service status, bulk kills, webhook
//! outcomes, and the one error body every failure answers with.

use courier_orchestrator::usage::UsageSummary;
use courier_store::{Project, SandboxId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"status": …}` of `/healthz` (`ok`) and `/readyz` (`ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
}

/// How many sandboxes `POST /v1/projects/{id}/kill-all` killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KillAll {
    /// The number killed.
    pub killed: usize,
}

/// Usage totals of a sandbox, a project or everything the caller has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Sandbox seconds (shown; not priced on their own).
    pub compute_seconds: f64,
    /// vCPU-seconds: sandbox seconds times vCPUs, priced per vCPU-second.
    pub cpu_seconds: f64,
    /// GiB-seconds of memory: sandbox seconds times GiB of RAM, priced per GiB-second.
    pub memory_gib_seconds: f64,
    /// Input tokens (not cached).
    pub input_tokens: f64,
    /// Output tokens.
    pub output_tokens: f64,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: f64,
    /// Tokens written to the prompt cache.
    pub cache_write_tokens: f64,
    /// Total cost in US dollars.
    pub cost_usd: f64,
}

impl From<&UsageSummary> for Usage {
    fn from(u: &UsageSummary) -> Self {
        Usage {
            compute_seconds: u.compute_seconds,
            cpu_seconds: u.cpu_seconds,
            memory_gib_seconds: u.memory_gib_seconds,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            cost_usd: u.cost.usd(),
        }
    }
}

/// One project's row of the usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectUsage {
    /// The project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: courier_store::ProjectId,
    /// Its name.
    pub name: String,
    /// Its running sandboxes.
    pub active_sandboxes: i64,
    /// Its totals.
    pub usage: Usage,
}

impl ProjectUsage {
    /// The row of `project` with its totals.
    pub fn new(project: &Project, usage: &UsageSummary) -> Self {
        ProjectUsage {
            project_id: project.id,
            name: project.name.clone(),
            active_sandboxes: project.active_sandboxes,
            usage: usage.into(),
        }
    }
}

/// `GET /v1/usage`: the caller's usage per project and in total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// One row per project.
    pub projects: Vec<ProjectUsage>,
    /// The sum over all projects.
    pub total: Usage,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookOutcome {
    /// GitHub's `ping` on creating the hook.
    Ping,
    /// A merged pull request: its sandboxes were marked.
    Merged,
    /// Any other event or action.
    Ignored,
}

impl WebhookOutcome {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Ping => "ping",
            WebhookOutcome::Merged => "merged",
            WebhookOutcome::Ignored => "ignored",
        }
    }
}

/// The answer to a verified GitHub webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookResult {
    /// The `X-GitHub-Event` header.
    pub event: Option<String>,
    /// What the delivery did.
    pub outcome: WebhookOutcome,
    /// Sandboxes whose pull request status became `merged`.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub marked: Vec<SandboxId>,
}

/// The body of every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One error: a stable code, a message for people, and the offending field if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: branch on it, not on the message.
    #[schema(examples(
        "invalid",
        "unauthorized",
        "bad_signature",
        "forbidden",
        "not_found",
        "rate_limited",
        "quota_exceeded",
        "unavailable"
    ))]
    pub code: String,
    /// What was wrong and what is allowed; never holds a secret.
    pub message: String,
    /// The offending field, for `invalid` and `missing_provider_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
