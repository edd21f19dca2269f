//! The API's wire shapes: one typed view per JSON body the server reads or answers with.
//!
//! Handlers, the SSE events and the CLI all use these types, and the OpenAPI document's
//! schemas are derived from them ([`utoipa::ToSchema`]), so the document cannot drift
//! from what is sent. Store records become views through `From` conversions kept here;
//! a view holds only what a client may see (repository URLs are redacted, provider keys
//! appear as `****abcd`, a message's raw log only when asked for).
//!
//! - [`records`]: users, projects, keys, sandboxes, messages, learnings, template builds
//!   and their lists.
//! - [`requests`]: the JSON bodies the API accepts.
//! - [`reports`]: usage, service status, bulk kills, webhook outcomes and the error body.
//! - [`settings`]: project settings and their update.
//! - [`workflows`]: personas, workflow runs, work chains and issue sessions.
//! - [`events`]: the `data` of each server-sent event.

pub mod events;
pub mod records;
pub mod reports;
pub mod requests;
pub mod settings;
pub mod workflows;

pub use events::{
    AgentEvent, EndEvent, FinishedEvent, MessageEvent, ShutdownEvent, StreamError, StreamedEvent,
    TextEvent,
};
pub use records::{
    CliOverrides, GitInfo, Key, KeyList, KeyOwnerKind, Learning, LearningList, LearningVersion,
    LearningVersionList, Message, MessageList, Project, ProjectList, Sandbox, SandboxConfig,
    SandboxLinks, SandboxPage, TemplateBuild, TemplateBuildList, User,
};
pub use reports::{
    ErrorBody, ErrorDetail, KillAll, ProjectUsage, Status, Usage, UsageReport, WebhookOutcome,
    WebhookResult,
};
pub use requests::{
    GitHubWebhookPayload, KeyValue, NewMessage, NewProject, NewSandbox, TemplateBuildRequest,
};
pub use settings::{EnvVar, NamedFile, ProjectSettings, ProjectSettingsUpdate, SandboxDefaults};
pub use workflows::{
    CardToChain, ChainDetail, ChainItem, IssueCard, IssueSession, IssueSessionDetail,
    IssueSessionList, NewChainItem, NewIssueSession, NewWorkChain, NewWorkflowRun, Persona,
    PersonaList, PersonaRequest, RunDetail, StartCard, StartedCard, StepRequest, StepSpec,
    WorkChain, WorkChainList, WorkflowOptions, WorkflowRun, WorkflowRunList, WorkflowSpec,
    WorkflowStep,
};

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// A string schema allowing exactly `values` (and `null` when `nullable`).
fn one_of<'a>(values: impl IntoIterator<Item = &'a str>, nullable: bool) -> Object {
    let mut allowed: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
    let schema_type = if nullable {
        allowed.push(serde_json::Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(allowed))
        .build()
}

/// Schemas of the store's closed sets, written from their `ALL` lists so a new status or
/// provider shows in the document by itself.
macro_rules! closed_sets {
    ($($(#[$doc:meta])* $name:ident => $ty:ty, nullable = $nullable:literal;)+) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name() -> Object {
                one_of(<$ty>::ALL.iter().map(|v| v.as_str()), $nullable)
            }
        )+
    };
}

closed_sets! {
    /// `SandboxStatus`.
    sandbox_status => courier_store::SandboxStatus, nullable = false;
    /// `SandboxStatus` or `null`.
    sandbox_status_or_null => courier_store::SandboxStatus, nullable = true;
    /// `Provider`.
    provider => courier_store::Provider, nullable = false;
    /// `MessageRole`.
    message_role => courier_store::MessageRole, nullable = false;
    /// `MessageStatus`.
    message_status => courier_store::MessageStatus, nullable = false;
    /// `PrStatus` or `null`.
    pr_status_or_null => courier_store::PrStatus, nullable = true;
    /// `LearningStatus`.
    learning_status => courier_store::LearningStatus, nullable = false;
    /// `LearningCategory`.
    learning_category => courier_store::LearningCategory, nullable = false;
    /// `TemplateBuildStatus`.
    template_build_status => courier_store::TemplateBuildStatus, nullable = false;
    /// `StepRole`.
    step_role => courier_store::StepRole, nullable = false;
    /// `RunStatus`.
    run_status => courier_store::RunStatus, nullable = false;
    /// `Verdict` or `null`.
    verdict_or_null => courier_store::Verdict, nullable = true;
    /// `Severity`.
    severity => courier_store::Severity, nullable = false;
    /// `PrMode`.
    pr_mode => courier_store::PrMode, nullable = false;
    /// `PrMode` or `null`.
    pr_mode_or_null => courier_store::PrMode, nullable = true;
}
