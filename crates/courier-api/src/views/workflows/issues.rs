//! Issue sessions, their cards, and what a card becomes.

use chrono::{DateTime, Utc};
use courier_orchestrator::work;
use courier_store::{
    self as store, IssueCardId, IssueSessionId, ProjectId, RunStatus, SandboxId, Severity,
    WorkChainId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::views::Sandbox;

/// `POST /v1/projects/{id}/issue-sessions`: an agent looks through the project for issues.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIssueSession {
    /// What to look at (default: everything).
    #[serde(default)]
    pub focus: Option<String>,
    /// The scanning agent's CLI (default: the project's).
    #[serde(default)]
    pub tool: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
}

/// An issue session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssueSession {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: IssueSessionId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// What to look at, if narrowed.
    pub focus: Option<String>,
    /// The sandbox the agent looks in.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub sandbox_id: Option<SandboxId>,
    /// Where it is.
    #[schema(schema_with = crate::views::run_status)]
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<store::IssueSession> for IssueSession {
    fn from(s: store::IssueSession) -> Self {
        IssueSession {
            id: s.id,
            project_id: s.project_id,
            focus: s.focus,
            sandbox_id: s.sandbox_id,
            status: s.status,
            error: s.error,
            created_at: s.created_at,
            finished_at: s.finished_at,
        }
    }
}

/// A project's issue sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssueSessionList {
    /// The sessions.
    pub items: Vec<IssueSession>,
}

/// An issue an issue session found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssueCard {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: IssueCardId,
    /// The session that found it.
    #[schema(value_type = uuid::Uuid)]
    pub session_id: IssueSessionId,
    /// Its place in the session's cards, from 1.
    pub position: i64,
    /// Title.
    pub title: String,
    /// What is wrong.
    pub description: String,
    /// How serious it is.
    #[schema(schema_with = crate::views::severity)]
    pub severity: Severity,
    /// A prompt that would fix it.
    pub suggested_prompt: String,
    /// The sandbox started for it.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub sandbox_id: Option<SandboxId>,
    /// The work chain it went into.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub chain_id: Option<WorkChainId>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

impl From<store::IssueCard> for IssueCard {
    fn from(c: store::IssueCard) -> Self {
        IssueCard {
            id: c.id,
            session_id: c.session_id,
            position: c.position,
            title: c.title,
            description: c.description,
            severity: c.severity,
            suggested_prompt: c.suggested_prompt,
            sandbox_id: c.sandbox_id,
            chain_id: c.chain_id,
            created_at: c.created_at,
        }
    }
}

/// `GET /v1/issue-sessions/{id}`: a session with its cards and sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssueSessionDetail {
    /// The session.
    pub session: IssueSession,
    /// Its cards in order.
    pub cards: Vec<IssueCard>,
    /// The sandbox the agent looked in.
    pub sandbox: Option<Sandbox>,
}

impl From<work::IssueSessionDetail> for IssueSessionDetail {
    fn from(d: work::IssueSessionDetail) -> Self {
        IssueSessionDetail {
            session: d.session.into(),
            cards: d.cards.into_iter().map(Into::into).collect(),
            sandbox: d.sandbox.map(Into::into),
        }
    }
}

/// `POST /v1/issue-cards/{id}/start`: a sandbox on the card's suggested prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCard {
    /// The CLI (default: the project's).
    #[serde(default)]
    pub tool: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
}

/// A card and the sandbox started for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartedCard {
    /// The card, linked to its sandbox.
    pub card: IssueCard,
    /// The sandbox.
    pub sandbox: Sandbox,
}

/// `POST /v1/issue-cards/{id}/chain`: the card as a chain's next issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardToChain {
    /// A chain of the card's project that has not ended.
    #[serde(alias = "chainId")]
    #[schema(format = "uuid")]
    pub chain_id: String,
}
