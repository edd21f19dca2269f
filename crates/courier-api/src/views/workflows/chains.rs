//! Work chains and their issues.

use chrono::{DateTime, Utc};
use courier_orchestrator::pr::redact_url;
use courier_orchestrator::work;
use courier_store::{
    self as store, IssueCardId, PrMode, ProjectId, RunStatus, WorkChainId, WorkflowRunId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::runs::{WorkflowOptions, WorkflowRun, WorkflowSpec};
use crate::{ApiError, Result};

/// One issue of a chain as requested.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChainItem {
    /// Title (default: the prompt's first line).
    #[serde(default)]
    pub title: Option<String>,
    /// The task (not blank).
    pub prompt: String,
    /// The issue card it comes from.
    #[serde(default, alias = "cardId")]
    #[schema(format = "uuid")]
    pub card_id: Option<String>,
}

impl NewChainItem {
    /// The store's item; the card id parsed (422 naming `card_id`).
    pub fn into_item(self) -> Result<store::NewChainItem> {
        let card_id = match self.card_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(
                Uuid::parse_str(raw)
                    .map(IssueCardId::from_uuid)
                    .map_err(|_| ApiError::invalid("card_id", "not an issue card id"))?,
            ),
        };
        Ok(store::NewChainItem {
            title: self.title.unwrap_or_default(),
            prompt: self.prompt,
            card_id,
        })
    }
}

/// `POST /v1/projects/{id}/work-chains`: issues run one after another on one branch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkChain {
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// The issues, in order; at least one.
    pub items: Vec<NewChainItem>,
    /// `single` (one pull request for the chain, default) or `per_issue`.
    #[serde(default, alias = "prMode")]
    #[schema(schema_with = crate::views::pr_mode_or_null)]
    pub pr_mode: Option<String>,
    /// Repository to clone (default: the project's).
    #[serde(default, alias = "repoUrl")]
    pub repo_url: Option<String>,
    /// Base branch.
    #[serde(default, alias = "baseBranch")]
    pub base_branch: Option<String>,
    /// The branch the chain works on.
    #[serde(default)]
    pub branch: Option<String>,
    /// How every run of the chain runs.
    #[serde(default)]
    pub workflow: WorkflowOptions,
}

/// A work chain: workflow runs, one per issue, one after another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkChain {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: WorkChainId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// Title.
    pub title: String,
    /// How every run of the chain runs.
    pub spec: WorkflowSpec,
    /// Repository (credentials removed).
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// The branch the chain works on.
    pub branch: String,
    /// How it opens pull requests.
    #[schema(schema_with = crate::views::pr_mode)]
    pub pr_mode: PrMode,
    /// Where it is.
    #[schema(schema_with = crate::views::run_status)]
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<store::WorkChain> for WorkChain {
    fn from(c: store::WorkChain) -> Self {
        WorkChain {
            id: c.id,
            project_id: c.project_id,
            title: c.title,
            spec: c.spec.into(),
            repo_url: c.repo_url.as_deref().map(redact_url),
            base_branch: c.base_branch,
            branch: c.branch,
            pr_mode: c.pr_mode,
            status: c.status,
            error: c.error,
            created_at: c.created_at,
            updated_at: c.updated_at,
            finished_at: c.finished_at,
        }
    }
}

/// A project's work chains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkChainList {
    /// The chains.
    pub items: Vec<WorkChain>,
}

/// One issue of a work chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChainItem {
    /// Its chain.
    #[schema(value_type = uuid::Uuid)]
    pub chain_id: WorkChainId,
    /// Its place in the chain, from 1.
    pub position: i64,
    /// Title.
    pub title: String,
    /// The task.
    pub prompt: String,
    /// The issue card it came from.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub card_id: Option<IssueCardId>,
    /// The run working on it, once started.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub run_id: Option<WorkflowRunId>,
    /// Where it is.
    #[schema(schema_with = crate::views::run_status)]
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<store::ChainItem> for ChainItem {
    fn from(i: store::ChainItem) -> Self {
        ChainItem {
            chain_id: i.chain_id,
            position: i.position,
            title: i.title,
            prompt: i.prompt,
            card_id: i.card_id,
            run_id: i.run_id,
            status: i.status,
            error: i.error,
        }
    }
}

/// `GET /v1/work-chains/{id}`: a chain with its issues and their runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChainDetail {
    /// The chain.
    pub chain: WorkChain,
    /// Its issues in order.
    pub items: Vec<ChainItem>,
    /// The runs started so far, in item order.
    pub runs: Vec<WorkflowRun>,
}

impl From<work::ChainDetail> for ChainDetail {
    fn from(d: work::ChainDetail) -> Self {
        ChainDetail {
            chain: d.chain.into(),
            items: d.items.into_iter().map(Into::into).collect(),
            runs: d.runs.into_iter().map(Into::into).collect(),
        }
    }
}

/// Parses a request's pull-request mode (422 naming `pr_mode`).
pub fn pr_mode(raw: Option<&str>) -> Result<Option<PrMode>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => Ok(Some(PrMode::parse_field(raw, "pr_mode")?)),
    }
}
