//! What the store holds (records) and what callers hand it (`New*` inputs).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    CostRateId, LearningCategory, LearningId, LearningStatus, LearningVersionId, MessageId,
    MessageRole, MessageStatus, PrStatus, ProjectId, Provider, ProviderKeyId, SandboxId,
    SandboxStatus, Service, TemplateBuildId, TemplateBuildStatus, UsageMetric, UsageRecordId,
    UserId,
};

/// A person who owns projects and keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique e-mail address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// Input for [`Store::create_user`](crate::Store::create_user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewUser {
    /// Unique e-mail address (a duplicate is a conflict).
    pub email: String,
    /// Display name.
    pub name: String,
}

/// A project: a repository's sandboxes, keys and learnings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Id.
    pub id: ProjectId,
    /// Owner.
    pub user_id: UserId,
    /// Display name.
    pub name: String,
    /// Sandboxes now `running` and not soft-deleted; kept exact by every store write.
    pub active_sandboxes: i64,
    /// When the project was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Input for [`Store::create_project`](crate::Store::create_project).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewProject {
    /// Owner (must exist).
    pub user_id: UserId,
    /// Display name.
    pub name: String,
}

/// Whose provider key it is: a user's own (`api_keys`) or a project's, which wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyOwner {
    /// A user-level key.
    User(UserId),
    /// A project-level key.
    Project(ProjectId),
}

/// An encrypted provider key. The store never sees the plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderKey {
    /// Id.
    pub id: ProviderKeyId,
    /// User or project.
    pub owner: KeyOwner,
    /// Whose API it is for.
    pub provider: Provider,
    /// The key encrypted by the orchestrator (e.g. nonce + AES-256-GCM ciphertext).
    pub ciphertext: Vec<u8>,
    /// The plaintext's last four characters, for display as `****abcd`.
    pub last_four: String,
    /// When first stored.
    pub created_at: DateTime<Utc>,
    /// When last replaced.
    pub updated_at: DateTime<Utc>,
}

/// Input for [`Store::put_provider_key`](crate::Store::put_provider_key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewProviderKey {
    /// The encrypted key.
    pub ciphertext: Vec<u8>,
    /// At most four characters of the plaintext's end.
    pub last_four: String,
}

/// Which CLI tool or model each step of a multi-step run uses, when overridden.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliOverrides {
    /// Designer step.
    pub designer: Option<String>,
    /// Optimizer step.
    pub optimizer: Option<String>,
    /// Checker step.
    pub checker: Option<String>,
}

/// How a sandbox was asked to run. Validation (ranges) is the orchestrator's; the store
/// keeps what it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Custom template, or `None` for the tool's own.
    pub template_id: Option<String>,
    /// Sandbox lifetime in milliseconds.
    pub timeout_ms: i64,
    /// Memory in MB.
    pub memory_mb: i64,
    /// CPU count.
    pub cpu_count: i64,
    /// Designer model.
    pub designer_model: Option<String>,
    /// Checker model.
    pub checker_model: Option<String>,
    /// Thinking effort per model name.
    pub thinking_effort: BTreeMap<String, String>,
    /// Checker template.
    pub checker_template_id: Option<String>,
    /// Per-step CLI overrides.
    pub cli_overrides: CliOverrides,
    /// The provider keys and the GitHub token stayed outside the sandbox: it holds a run
    /// token that Courier's gateway swaps for them.
    #[serde(default)]
    pub keys_via_gateway: bool,
    /// The most tokens (input, output and cache) the sandbox's agent may use, counted at
    /// the gateway; `None` for no limit.
    #[serde(default)]
    pub token_budget: Option<u64>,
}

impl Default for SandboxConfig {
    /// The product's documented defaults: 15 minutes, 1024 MB, 2 CPUs.
    fn default() -> Self {
        SandboxConfig {
            template_id: None,
            timeout_ms: 900_000,
            memory_mb: 1024,
            cpu_count: 2,
            designer_model: None,
            checker_model: None,
            thinking_effort: BTreeMap::new(),
            checker_template_id: None,
            cli_overrides: CliOverrides::default(),
            keys_via_gateway: false,
            token_budget: None,
        }
    }
}

/// Where a sandbox came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLinks {
    /// A run this sandbox belongs to.
    pub run_id: Option<String>,
    /// An issue session.
    pub issue_session_id: Option<String>,
    /// A background task.
    pub background_task_id: Option<String>,
}

/// The sandbox's repository and pull request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    /// Remote URL.
    pub repo_url: Option<String>,
    /// Feature branch.
    pub branch: Option<String>,
    /// Pull request URL.
    pub pr_url: Option<String>,
    /// Pull request number.
    pub pr_number: Option<i64>,
    /// Pull request step.
    pub pr_status: Option<PrStatus>,
    /// Why the pull request failed or was skipped, when `pr_status` is `failed` or
    /// `skipped`.
    pub pr_error: Option<String>,
}

/// A sandbox and everything known about its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Courier's id.
    pub id: SandboxId,
    /// Who started it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// The provider's (E2B or sandboxd) id, once created there.
    pub provider_sandbox_id: Option<String>,
    /// Lifecycle state.
    pub status: SandboxStatus,
    /// Why it is in `error` (or the last error recorded with a transition).
    pub error_message: Option<String>,
    /// How it was asked to run.
    pub config: SandboxConfig,
    /// CLI tool id (`claude`, `opencode`, `codex`, `pi`, `shell`).
    pub cli_tool: String,
    /// Model, when chosen.
    pub model: Option<String>,
    /// The first prompt.
    pub prompt: String,
    /// Where it came from.
    pub links: SandboxLinks,
    /// Repository and pull request.
    pub git: GitInfo,
    /// Learning extraction step.
    pub learning_status: LearningStatus,
    /// Why learning extraction failed.
    pub learning_error: Option<String>,
    /// When recorded.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First time it entered `running`.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached `killed` or `error`.
    pub ended_at: Option<DateTime<Utc>>,
    /// Set while soft-deleted (hidden from default lists, not counted as active).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// How many live sandboxes (`creating`, `running` or `paused`; soft-deleted ones too,
/// since hiding a sandbox does not stop it) one user and one project may have, for
/// [`Store::create_sandbox_within`](crate::Store::create_sandbox_within). `None` = no
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxQuota {
    /// Most live sandboxes of one user, across their projects.
    pub per_user: Option<u32>,
    /// Most live sandboxes in one project.
    pub per_project: Option<u32>,
}

/// Whose quota a [`StoreError::QuotaExceeded`](crate::StoreError::QuotaExceeded) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    /// [`SandboxQuota::per_user`].
    User,
    /// [`SandboxQuota::per_project`].
    Project,
}

impl std::fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaScope::User => "user",
            QuotaScope::Project => "project",
        })
    }
}

/// Input for [`Store::create_sandbox`](crate::Store::create_sandbox); the sandbox starts
/// in `creating` with learning status `pending`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSandbox {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project (must exist).
    pub project_id: ProjectId,
    /// How it should run.
    pub config: SandboxConfig,
    /// CLI tool id.
    pub cli_tool: String,
    /// Model, when chosen.
    pub model: Option<String>,
    /// The first prompt.
    pub prompt: String,
    /// Where it came from.
    pub links: SandboxLinks,
    /// Remote URL.
    pub repo_url: Option<String>,
    /// Feature branch.
    pub branch: Option<String>,
}

/// One message in a sandbox's conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Id.
    pub id: MessageId,
    /// Its sandbox.
    pub sandbox_id: SandboxId,
    /// Per-sandbox sequence number: 1, 2, 3… with no gaps, in commit order.
    pub seq: i64,
    /// Who wrote it.
    pub role: MessageRole,
    /// Text so far.
    pub content: String,
    /// Whether it is still streaming.
    pub status: MessageStatus,
    /// The agent's raw stream output behind this message.
    pub raw_log: String,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// Last append or finish.
    pub updated_at: DateTime<Utc>,
}

/// Input for [`Store::create_message`](crate::Store::create_message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Its sandbox (must exist).
    pub sandbox_id: SandboxId,
    /// Who writes it.
    pub role: MessageRole,
    /// Initial text.
    pub content: String,
    /// `streaming` to append later, or already finished.
    pub status: MessageStatus,
}

/// One message's part of [`Store::append_messages`](crate::Store::append_messages): text
/// and raw log lines stored together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageAppend {
    /// The `streaming` message.
    pub id: MessageId,
    /// Text appended to its content (may be empty).
    pub content: String,
    /// Lines appended to its raw stream log (may be empty).
    pub raw_log: String,
}

/// A piece of knowledge extracted from a sandbox run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Id.
    pub id: LearningId,
    /// Its project.
    pub project_id: ProjectId,
    /// Kind.
    pub category: LearningCategory,
    /// The claim: one piece of advice.
    pub content: String,
    /// What in the source sandbox's transcript shows it (a short quote or a pointer such
    /// as a message number); `None` when it was recorded without any.
    pub evidence: Option<String>,
    /// The sandbox it came from (cleared when that sandbox is purged).
    pub source_sandbox_id: Option<SandboxId>,
    /// When recorded.
    pub created_at: DateTime<Utc>,
}

/// Input for [`Store::create_learning`](crate::Store::create_learning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLearning {
    /// Its project.
    pub project_id: ProjectId,
    /// Kind.
    pub category: LearningCategory,
    /// The claim: one piece of advice.
    pub content: String,
    /// What in the source sandbox's transcript shows it, if known.
    pub evidence: Option<String>,
    /// The sandbox it came from.
    pub source_sandbox_id: Option<SandboxId>,
}

/// A project's learnings compiled into one text given to agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningVersion {
    /// Id.
    pub id: LearningVersionId,
    /// Its project.
    pub project_id: ProjectId,
    /// 1, 2, 3… per project.
    pub version: i64,
    /// The compiled text.
    pub compiled: String,
    /// At most one version per project is active.
    pub active: bool,
    /// When compiled.
    pub created_at: DateTime<Utc>,
}

/// A build of a tool's sandbox template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateBuild {
    /// Id.
    pub id: TemplateBuildId,
    /// CLI tool id.
    pub tool_id: String,
    /// Template name.
    pub template_name: String,
    /// Tool version baked in.
    pub cli_version: String,
    /// Build state.
    pub status: TemplateBuildStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When queued.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it succeeded or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Input for [`Store::create_template_build`](crate::Store::create_template_build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTemplateBuild {
    /// CLI tool id.
    pub tool_id: String,
    /// Template name.
    pub template_name: String,
    /// Tool version.
    pub cli_version: String,
}

/// An amount of US dollars, held as integer micro-dollars so sums are exact on every
/// backend.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// From micro-dollars (1 USD = 1 000 000).
    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// From dollars, rounded to the nearest micro-dollar.
    pub fn from_usd(usd: f64) -> Self {
        Money((usd * 1_000_000.0).round() as i64)
    }

    /// Micro-dollars.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Dollars, for display.
    pub fn usd(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

/// One measured use of a billed service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Id.
    pub id: UsageRecordId,
    /// The sandbox (cleared when purged; the record stays for billing).
    pub sandbox_id: Option<SandboxId>,
    /// The sandbox's project.
    pub project_id: ProjectId,
    /// Who bills.
    pub service: Service,
    /// What was counted.
    pub metric: UsageMetric,
    /// How much.
    pub quantity: f64,
    /// What it cost.
    pub cost: Money,
    /// When it was used.
    pub recorded_at: DateTime<Utc>,
}

/// Input for [`Store::record_usage`](crate::Store::record_usage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewUsage {
    /// The sandbox (must exist); its project is recorded with it.
    pub sandbox_id: SandboxId,
    /// Who bills.
    pub service: Service,
    /// What was counted.
    pub metric: UsageMetric,
    /// How much.
    pub quantity: f64,
    /// What it cost (computed by the caller from a [`CostRate`]).
    pub cost: Money,
    /// When it was used.
    pub recorded_at: DateTime<Utc>,
}

/// Summed usage for one service and metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageTotal {
    /// Who bills.
    pub service: Service,
    /// What was counted.
    pub metric: UsageMetric,
    /// Total quantity.
    pub quantity: f64,
    /// Total cost.
    pub cost: Money,
}

/// Summed usage of one UTC day for one service and metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The UTC day.
    pub day: NaiveDate,
    /// Totals of that day.
    pub total: UsageTotal,
}

/// The price of one unit of a metric from a point in time on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRate {
    /// Id.
    pub id: CostRateId,
    /// Who bills.
    pub service: Service,
    /// What is priced.
    pub metric: UsageMetric,
    /// US dollars per unit.
    pub usd_per_unit: f64,
    /// Applies to usage at or after this time, until a later rate.
    pub effective_from: DateTime<Utc>,
}

/// Input for [`Store::put_cost_rate`](crate::Store::put_cost_rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCostRate {
    /// Who bills.
    pub service: Service,
    /// What is priced.
    pub metric: UsageMetric,
    /// US dollars per unit (not negative).
    pub usd_per_unit: f64,
    /// From when it applies.
    pub effective_from: DateTime<Utc>,
}
