//! Views of the store's records: what `GET`s and most writes answer with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_orchestrator::pr::redact_url;
use courier_store::{
    self as store, KeyOwner, LearningCategory, LearningId, LearningStatus, LearningVersionId,
    MessageId, MessageRole, MessageStatus, PrStatus, ProjectId, Provider, SandboxId, SandboxStatus,
    TemplateBuildId, TemplateBuildStatus, UserId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A list body `{"items": [...]}`.
macro_rules! item_list {
    ($(#[$doc:meta])* $name:ident of $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            /// The items, in the route's order.
            pub items: Vec<$item>,
        }
    };
}

/// The caller (`GET /v1/me`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// The user's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: UserId,
    /// E-mail address (unique).
    pub email: String,
    /// Name shown in the dashboard.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<store::User> for User {
    fn from(u: store::User) -> Self {
        User {
            id: u.id,
            email: u.email,
            name: u.name,
            created_at: u.created_at,
        }
    }
}

/// A project and its count of running sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    /// The project's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: ProjectId,
    /// Its owner.
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    /// Name shown in lists.
    pub name: String,
    /// Sandboxes running now (soft-deleted ones excluded).
    pub active_sandboxes: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

impl From<store::Project> for Project {
    fn from(p: store::Project) -> Self {
        Project {
            id: p.id,
            user_id: p.user_id,
            name: p.name,
            active_sandboxes: p.active_sandboxes,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

item_list!(
    /// The caller's projects.
    ProjectList of Project
);

/// Whose key it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyOwnerKind {
    /// The user's own key, used by all their projects.
    User,
    /// A project's key, which wins over its owner's.
    Project,
}

impl KeyOwnerKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOwnerKind::User => "user",
            KeyOwnerKind::Project => "project",
        }
    }
}

/// A provider key as clients see it: never its value, only its last four characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    /// Whose API the key is for.
    #[schema(schema_with = super::provider)]
    pub provider: Provider,
    /// User or project.
    pub owner: KeyOwnerKind,
    /// The user's or the project's id.
    #[schema(format = "uuid")]
    pub owner_id: String,
    /// `****` and the key's last four characters.
    #[schema(examples("****abcd"))]
    pub masked: String,
    /// When first stored.
    pub created_at: DateTime<Utc>,
    /// When last replaced.
    pub updated_at: DateTime<Utc>,
}

impl From<store::ProviderKey> for Key {
    fn from(key: store::ProviderKey) -> Self {
        let (owner, owner_id) = match key.owner {
            KeyOwner::User(u) => (KeyOwnerKind::User, u.to_string()),
            KeyOwner::Project(p) => (KeyOwnerKind::Project, p.to_string()),
        };
        Key {
            provider: key.provider,
            owner,
            owner_id,
            masked: format!("****{}", key.last_four),
            created_at: key.created_at,
            updated_at: key.updated_at,
        }
    }
}

item_list!(
    /// Provider keys, masked.
    KeyList of Key
);

/// Per-step CLI overrides of a multi-step run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CliOverrides {
    /// The designer step's tool or model.
    pub designer: Option<String>,
    /// The optimizer step's.
    pub optimizer: Option<String>,
    /// The checker step's.
    pub checker: Option<String>,
}

/// The resources and models a sandbox was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxConfig {
    /// A custom template, `null` for the tool's.
    pub template_id: Option<String>,
    /// Lifetime in milliseconds.
    pub timeout_ms: i64,
    /// Memory, MB.
    pub memory_mb: i64,
    /// CPUs.
    pub cpu_count: i64,
    /// The designer step's model.
    pub designer_model: Option<String>,
    /// The checker step's model.
    pub checker_model: Option<String>,
    /// Thinking effort by model name.
    pub thinking_effort: BTreeMap<String, String>,
    /// The checker step's template.
    pub checker_template_id: Option<String>,
    /// Tools or models per step.
    pub cli_overrides: CliOverrides,
    /// The provider keys and the GitHub token stayed outside the sandbox (Courier's
    /// gateway).
    pub keys_via_gateway: bool,
    /// The sandbox's token budget, counted at the gateway.
    pub token_budget: Option<u64>,
}

impl From<store::SandboxConfig> for SandboxConfig {
    fn from(c: store::SandboxConfig) -> Self {
        SandboxConfig {
            template_id: c.template_id,
            timeout_ms: c.timeout_ms,
            memory_mb: c.memory_mb,
            cpu_count: c.cpu_count,
            designer_model: c.designer_model,
            checker_model: c.checker_model,
            thinking_effort: c.thinking_effort,
            checker_template_id: c.checker_template_id,
            keys_via_gateway: c.keys_via_gateway,
            token_budget: c.token_budget,
            cli_overrides: CliOverrides {
                designer: c.cli_overrides.designer,
                optimizer: c.cli_overrides.optimizer,
                checker: c.cli_overrides.checker,
            },
        }
    }
}

/// What started a sandbox, when something other than a person did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxLinks {
    /// Its run.
    pub run_id: Option<String>,
    /// Its issue session.
    pub issue_session_id: Option<String>,
    /// Its background task.
    pub background_task_id: Option<String>,
}

/// A sandbox's repository and pull request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GitInfo {
    /// The remote, with any credentials in it replaced.
    pub repo_url: Option<String>,
    /// The branch the agent works on.
    pub branch: Option<String>,
    /// The pull request, once opened.
    pub pr_url: Option<String>,
    /// Its number.
    pub pr_number: Option<i64>,
    /// Where the pull request stands.
    #[schema(schema_with = super::pr_status_or_null)]
    pub pr_status: Option<PrStatus>,
    /// Why it failed or was skipped, when `pr_status` is `failed` or `skipped`.
    pub pr_error: Option<String>,
}

/// A sandbox: its agent, resources, repository, state and times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    /// The sandbox's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: SandboxId,
    /// Who created it.
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// The sandbox provider's id for it, once created there.
    pub provider_sandbox_id: Option<String>,
    /// Lifecycle state; `killed` and `error` are final.
    #[schema(schema_with = super::sandbox_status)]
    pub status: SandboxStatus,
    /// Why it is in `error`, or the last error recorded.
    pub error_message: Option<String>,
    /// Resources and models.
    pub config: SandboxConfig,
    /// The agent CLI (`claude`, `opencode`, `codex`, `pi`, `shell`).
    pub cli_tool: String,
    /// The model, when one was chosen.
    pub model: Option<String>,
    /// The first prompt.
    pub prompt: String,
    /// What started it.
    pub links: SandboxLinks,
    /// Repository and pull request.
    pub git: GitInfo,
    /// Where the extraction of learnings from its run stands.
    #[schema(schema_with = super::learning_status)]
    pub learning_status: LearningStatus,
    /// Why that extraction failed.
    pub learning_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// When it first ran.
    pub started_at: Option<DateTime<Utc>>,
    /// When it was killed or failed.
    pub ended_at: Option<DateTime<Utc>>,
    /// When it was soft-deleted (`null` unless hidden).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Whether its agent is working on a message now; only in `GET /v1/sandboxes/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working: Option<bool>,
}

impl From<store::Sandbox> for Sandbox {
    fn from(s: store::Sandbox) -> Self {
        Sandbox {
            id: s.id,
            user_id: s.user_id,
            project_id: s.project_id,
            provider_sandbox_id: s.provider_sandbox_id,
            status: s.status,
            error_message: s.error_message,
            config: s.config.into(),
            cli_tool: s.cli_tool,
            model: s.model,
            prompt: s.prompt,
            links: SandboxLinks {
                run_id: s.links.run_id,
                issue_session_id: s.links.issue_session_id,
                background_task_id: s.links.background_task_id,
            },
            git: GitInfo {
                // A remote may carry a token in its URL: clients never see it.
                repo_url: s.git.repo_url.as_deref().map(redact_url),
                branch: s.git.branch,
                pr_url: s.git.pr_url,
                pr_number: s.git.pr_number,
                pr_status: s.git.pr_status,
                pr_error: s.git.pr_error,
            },
            learning_status: s.learning_status,
            learning_error: s.learning_error,
            created_at: s.created_at,
            updated_at: s.updated_at,
            started_at: s.started_at,
            ended_at: s.ended_at,
            deleted_at: s.deleted_at,
            working: None,
        }
    }
}

/// One page of sandboxes, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxPage {
    /// The sandboxes.
    pub items: Vec<Sandbox>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// One message of a sandbox's conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// The message's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: MessageId,
    /// Its sandbox.
    #[schema(value_type = uuid::Uuid)]
    pub sandbox_id: SandboxId,
    /// Its place in the conversation: 1, 2, 3… without gaps.
    pub seq: i64,
    /// Who wrote it.
    #[schema(schema_with = super::message_role)]
    pub role: MessageRole,
    /// The text so far.
    pub content: String,
    /// `streaming` while the agent still writes it.
    #[schema(schema_with = super::message_status)]
    pub status: MessageStatus,
    /// The agent's raw output behind it; only with `?raw=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_log: Option<String>,
    /// An agent message's events in order (text, tool calls and results, thinking,
    /// errors, the run's end) as the event stream sends them, parsed by the server from
    /// the raw log: in the stream's `message` snapshots and with `?events=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<super::StreamedEvent>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last append.
    pub updated_at: DateTime<Utc>,
}

impl From<store::Message> for Message {
    /// The view without the raw log, which only `?raw=true` asks for.
    fn from(m: store::Message) -> Self {
        Message {
            id: m.id,
            sandbox_id: m.sandbox_id,
            seq: m.seq,
            role: m.role,
            content: m.content,
            status: m.status,
            raw_log: None,
            events: None,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

item_list!(
    /// A sandbox's messages in sequence order.
    MessageList of Message
);

/// One piece of advice learned from a sandbox's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Learning {
    /// The learning's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: LearningId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// What kind of advice.
    #[schema(schema_with = super::learning_category)]
    pub category: LearningCategory,
    /// The claim: one piece of advice.
    pub content: String,
    /// What in the source sandbox's transcript shows it: a short quote or a pointer such
    /// as `#12` (a message number). Null when none was given.
    pub evidence: Option<String>,
    /// The sandbox it came from (`null` once that sandbox is purged).
    #[schema(value_type = Option<uuid::Uuid>)]
    pub source_sandbox_id: Option<SandboxId>,
    /// When it was learned.
    pub created_at: DateTime<Utc>,
}

impl From<store::Learning> for Learning {
    fn from(l: store::Learning) -> Self {
        Learning {
            id: l.id,
            project_id: l.project_id,
            category: l.category,
            content: l.content,
            evidence: l.evidence,
            source_sandbox_id: l.source_sandbox_id,
            created_at: l.created_at,
        }
    }
}

item_list!(
    /// A project's learnings, oldest first.
    LearningList of Learning
);

/// A project's learnings compiled into the text agents are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LearningVersion {
    /// The version's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: LearningVersionId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// 1, 2, 3… per project.
    pub version: i64,
    /// The compiled text.
    pub compiled: String,
    /// Whether agents are given this one (at most one per project).
    pub active: bool,
    /// When it was compiled.
    pub created_at: DateTime<Utc>,
}

impl From<store::LearningVersion> for LearningVersion {
    fn from(v: store::LearningVersion) -> Self {
        LearningVersion {
            id: v.id,
            project_id: v.project_id,
            version: v.version,
            compiled: v.compiled,
            active: v.active,
            created_at: v.created_at,
        }
    }
}

item_list!(
    /// A project's compiled learning versions.
    LearningVersionList of LearningVersion
);

/// A build of a tool's sandbox template at the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateBuild {
    /// The build's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: TemplateBuildId,
    /// The tool whose CLI the template holds.
    pub tool_id: String,
    /// The template's name at the provider.
    pub template_name: String,
    /// The CLI version installed.
    pub cli_version: String,
    /// Where the build stands.
    #[schema(schema_with = super::template_build_status)]
    pub status: TemplateBuildStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// When it succeeded or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<store::TemplateBuild> for TemplateBuild {
    fn from(b: store::TemplateBuild) -> Self {
        TemplateBuild {
            id: b.id,
            tool_id: b.tool_id,
            template_name: b.template_name,
            cli_version: b.cli_version,
            status: b.status,
            error: b.error,
            created_at: b.created_at,
            updated_at: b.updated_at,
            finished_at: b.finished_at,
        }
    }
}

item_list!(
    /// Template builds, newest first.
    TemplateBuildList of TemplateBuild
);

/// Views of a list of records.
pub(crate) fn views<R, V: From<R>>(records: Vec<R>) -> Vec<V> {
    records.into_iter().map(V::from).collect()
}
