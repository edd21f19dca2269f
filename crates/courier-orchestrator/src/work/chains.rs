//! Work chains: issues run one after another as workflow runs, commits accumulating.
//! With one pull request (`single`) every run works on the chain's branch and the last
//! one opens the pull request; with one per issue (`per_issue`) each issue's branch
//! starts from the previous issue's and its pull request targets it (stacked). A run
//! that fails stops the chain with its reason; the issues after it are cancelled.

use courier_store::{
    ChainItem, NewChainItem, NewWorkChain, NewWorkflowRun, PrMode, ProjectId, RunStatus, UserId,
    WorkChain, WorkChainId, WorkflowRun, WorkflowRunId,
};

use super::spec::WorkflowRequest;
use super::{Job, Workflows};
use crate::lifecycle::PullRequest;
use crate::{OrchestratorError, Result};

/// A request to start a work chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainRequest {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// A title; default: the first issue's.
    pub title: Option<String>,
    /// The issues in order (at least one), each a title and a prompt.
    pub items: Vec<NewChainItem>,
    /// How each issue's run runs.
    pub workflow: WorkflowRequest,
    /// The repository; default: the project's.
    pub repo_url: Option<String>,
    /// The branch the chain starts from; default: the project's, else the remote's.
    pub base_branch: Option<String>,
    /// The chain's branch; default `courier/chain-<id>`.
    pub branch: Option<String>,
    /// One pull request at the end (default) or one per issue.
    pub pr_mode: Option<PrMode>,
}

/// A chain with its issues and their runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainDetail {
    /// The chain.
    pub chain: WorkChain,
    /// Its issues in order.
    pub items: Vec<ChainItem>,
    /// The runs so far, in issue order.
    pub runs: Vec<WorkflowRun>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> OrchestratorError {
    OrchestratorError::InvalidConfig {
        field,
        message: message.into(),
    }
}

/// Checks an issue's title and prompt.
fn check_item(item: &NewChainItem) -> Result<NewChainItem> {
    if item.prompt.trim().is_empty() {
        return Err(invalid("items.prompt", "must not be empty"));
    }
    let title = match item.title.trim() {
        "" => item
            .prompt
            .trim()
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect(),
        t => t.chars().take(200).collect(),
    };
    Ok(NewChainItem {
        title,
        prompt: item.prompt.clone(),
        card_id: item.card_id,
    })
}

impl Workflows {
    /// Validates and records a chain (`pending`, its issues `pending`), then drives it in
    /// the background.
    pub async fn start_chain(&self, request: ChainRequest) -> Result<WorkChain> {
        if request.items.is_empty() {
            return Err(invalid("items", "a chain needs at least one issue"));
        }
        let items = request
            .items
            .iter()
            .map(check_item)
            .collect::<Result<Vec<_>>>()?;
        let project = self.store.get_project(request.project_id).await?;
        if project.user_id != request.user_id {
            return Err(invalid(
                "project_id",
                format!("project {} is not yours", request.project_id),
            ));
        }
        let settings = self.store.get_project_settings(request.project_id).await?;
        let spec = request.workflow.to_spec(&settings)?;
        self.check_steps(request.user_id, request.project_id, &spec)
            .await?;
        if let Some(branch) = &request.branch {
            courier_tools::validate_branch(branch)
                .map_err(|e| crate::settings::names(e, "branch"))?;
        }
        let title = request
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("Work chain: {}", items[0].title));
        let chain = self
            .store
            .create_work_chain(NewWorkChain {
                user_id: request.user_id,
                project_id: request.project_id,
                title,
                spec,
                repo_url: request.repo_url.or(settings.repo_url),
                base_branch: request.base_branch.or(settings.base_branch),
                branch: request
                    .branch
                    .unwrap_or_else(|| format!("courier/chain-{}", WorkChainId::new())),
                pr_mode: request.pr_mode.unwrap_or(PrMode::Single),
                items,
            })
            .await?;
        for item in self.store.list_chain_items(chain.id).await? {
            if let Some(card) = item.card_id {
                self.store
                    .link_issue_card(card, None, Some(chain.id))
                    .await?;
            }
        }
        self.drive_new(Job::Chain(chain.id)).await?;
        Ok(chain)
    }

    /// Adds an issue at the end of a chain that has not ended.
    pub async fn add_to_chain(&self, chain: WorkChainId, item: NewChainItem) -> Result<ChainItem> {
        let item = check_item(&item)?;
        let card = item.card_id;
        let added = self.store.append_chain_item(chain, item).await?;
        if let Some(card) = card {
            self.store.link_issue_card(card, None, Some(chain)).await?;
        }
        Ok(added)
    }

    /// A chain with its issues and runs.
    pub async fn chain_detail(&self, id: WorkChainId) -> Result<ChainDetail> {
        let chain = self.store.get_work_chain(id).await?;
        let items = self.store.list_chain_items(id).await?;
        let mut runs = Vec::new();
        for run in items.iter().filter_map(|i| i.run_id) {
            runs.push(self.store.get_workflow_run(run).await?);
        }
        Ok(ChainDetail { chain, items, runs })
    }

    /// Cancels a chain: its current run is cancelled (work saved, no pull request), the
    /// issues not done are cancelled, the chain ends `cancelled`.
    pub async fn cancel_chain(&self, id: WorkChainId) -> Result<WorkChain> {
        let chain = self.store.get_work_chain(id).await?;
        if chain.status.is_final() {
            return Err(invalid(
                "status",
                format!("chain {id} is already {}", chain.status),
            ));
        }
        self.abort(Job::Chain(id));
        for item in self.store.list_chain_items(id).await? {
            if item.status.is_final() {
                continue;
            }
            if let Some(run) = item.run_id
                && let Err(e) = self.cancel_run(run).await
            {
                tracing::debug!(run = %run, error = %e, "chain's run already ended");
            }
            self.store
                .update_chain_item(
                    id,
                    item.position,
                    item.run_id,
                    RunStatus::Cancelled,
                    Some("cancelled".into()),
                )
                .await?;
        }
        Ok(self
            .store
            .update_work_chain(
                id,
                chain.status,
                RunStatus::Cancelled,
                Some("cancelled".into()),
            )
            .await?)
    }

    /// The feature and base branch of a chain's issue.
    fn item_branches(
        chain: &WorkChain,
        items: &[ChainItem],
        position: i64,
    ) -> (String, Option<String>) {
        match chain.pr_mode {
            PrMode::Single => (chain.branch.clone(), chain.base_branch.clone()),
            PrMode::PerIssue => {
                let branch = format!("{}-{position}", chain.branch);
                let base = items
                    .iter()
                    .rfind(|i| i.position < position)
                    .map(|i| format!("{}-{}", chain.branch, i.position))
                    .or_else(|| chain.base_branch.clone());
                (branch, base)
            }
        }
    }

    /// The run of a chain's issue: the one recorded, else one created earlier for it
    /// and not yet recorded (a crash in between), else a new one.
    async fn item_run(
        &self,
        chain: &WorkChain,
        items: &[ChainItem],
        item: &ChainItem,
    ) -> Result<WorkflowRunId> {
        if let Some(run) = item.run_id {
            return Ok(run);
        }
        let recorded: Vec<WorkflowRunId> = items.iter().filter_map(|i| i.run_id).collect();
        let earlier = self
            .store
            .list_workflow_runs(chain.project_id, Some(chain.id))
            .await?
            .into_iter()
            .find(|r| !recorded.contains(&r.id) && r.prompt == item.prompt);
        let run = match earlier {
            Some(run) => run.id,
            None => {
                let (branch, base_branch) = Self::item_branches(chain, items, item.position);
                let new = NewWorkflowRun {
                    user_id: chain.user_id,
                    project_id: chain.project_id,
                    chain_id: Some(chain.id),
                    title: item.title.clone(),
                    prompt: item.prompt.clone(),
                    spec: chain.spec.clone(),
                    repo_url: chain.repo_url.clone(),
                    base_branch,
                    branch: Some(branch),
                };
                self.store.create_workflow_run(new).await?.id
            }
        };
        self.store
            .update_chain_item(chain.id, item.position, Some(run), RunStatus::Running, None)
            .await?;
        Ok(run)
    }

    /// Drives a chain to its end from wherever the store says it stands.
    pub(super) async fn drive_chain(&self, id: WorkChainId) -> Result<WorkChain> {
        let mut chain = self.store.get_work_chain(id).await?;
        if chain.status == RunStatus::Pending {
            chain = self
                .store
                .update_work_chain(id, RunStatus::Pending, RunStatus::Running, None)
                .await?;
        }
        loop {
            if chain.status.is_final() {
                return Ok(chain);
            }
            let items = self.store.list_chain_items(id).await?;
            let Some(item) = items.iter().find(|i| !i.status.is_final()).cloned() else {
                return Ok(self
                    .store
                    .update_work_chain(id, RunStatus::Running, RunStatus::Succeeded, None)
                    .await?);
            };
            let run_id = self.item_run(&chain, &items, &item).await?;
            let run = self.drive_run(run_id).await?;
            if run.state.status == RunStatus::Succeeded {
                self.store
                    .update_chain_item(id, item.position, Some(run_id), RunStatus::Succeeded, None)
                    .await?;
            } else {
                let reason = run
                    .state
                    .error
                    .clone()
                    .unwrap_or_else(|| run.state.status.to_string());
                self.store
                    .update_chain_item(
                        id,
                        item.position,
                        Some(run_id),
                        RunStatus::Failed,
                        Some(reason.clone()),
                    )
                    .await?;
                for later in items
                    .iter()
                    .filter(|i| i.position > item.position && !i.status.is_final())
                {
                    self.store
                        .update_chain_item(
                            id,
                            later.position,
                            None,
                            RunStatus::Cancelled,
                            Some(format!("issue {} failed", item.position)),
                        )
                        .await?;
                }
                return Ok(self
                    .store
                    .update_work_chain(
                        id,
                        RunStatus::Running,
                        RunStatus::Failed,
                        Some(format!(
                            "issue {} ({}) failed: {reason}",
                            item.position, item.title
                        )),
                    )
                    .await?);
            }
            chain = self.store.get_work_chain(id).await?;
        }
    }

    /// The pull request a chain's finished run opens: per issue, against the previous
    /// issue's branch; with one for the chain, only from the last issue left.
    pub(super) async fn chain_pull_request(
        &self,
        id: WorkChainId,
        run: &WorkflowRun,
    ) -> Result<PullRequest> {
        let chain = self.store.get_work_chain(id).await?;
        let base = || match &run.base_branch {
            Some(base) => PullRequest::Against(base.clone()),
            None => PullRequest::Default,
        };
        if chain.pr_mode == PrMode::PerIssue {
            return Ok(base());
        }
        let items = self.store.list_chain_items(id).await?;
        let more = items
            .iter()
            .any(|i| i.run_id != Some(run.id) && !i.status.is_final());
        Ok(if more { PullRequest::None } else { base() })
    }
}
