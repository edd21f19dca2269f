//! Following open pull requests to `merged` by asking GitHub, for deployments that
//! receive no webhooks.

use std::sync::Arc;
use std::time::Duration;

use courier_store::{DeletedFilter, PageRequest, PrStatus, Sandbox, SandboxFilter, SandboxId};
use courier_tools::Secret;
use tokio::task::JoinHandle;

use super::PrPipeline;
use super::pipeline::github_token;
use super::remote::RepoSlug;
use crate::keys::KeyVault;
use crate::{OrchestratorError, Result};

/// What one [`PrPipeline::poll_open_pull_requests`] sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergePollReport {
    /// Sandboxes whose pull request was open and was asked about.
    pub checked: usize,
    /// Those now recorded as `merged`.
    pub merged: Vec<SandboxId>,
    /// Those that could not be checked, with why (no token, GitHub or store errors). They
    /// are asked about again on the next sweep.
    pub failed: Vec<(SandboxId, String)>,
}

impl PrPipeline {
    /// Asks GitHub whether the sandbox's pull request was merged; records `merged` when it
    /// was. Returns the PR status afterwards (`None` when the sandbox has no PR).
    pub async fn poll_merged(
        &self,
        sandbox_id: SandboxId,
        token: &Secret,
    ) -> Result<Option<PrStatus>> {
        let sandbox = self.store.get_sandbox(sandbox_id).await?;
        self.poll_sandbox(sandbox, token).await
    }

    async fn poll_sandbox(&self, sandbox: Sandbox, token: &Secret) -> Result<Option<PrStatus>> {
        let mut git = sandbox.git;
        let (Some(PrStatus::Created), Some(number), Some(remote)) =
            (git.pr_status, git.pr_number, git.repo_url.as_deref())
        else {
            return Ok(git.pr_status);
        };
        let slug = RepoSlug::parse_remote(remote)?;
        let pr = self
            .github
            .get_pull_request(token, &slug, number as u64)
            .await?;
        if pr.merged {
            git.pr_status = Some(PrStatus::Merged);
            self.store.update_sandbox_git(sandbox.id, git).await?;
            return Ok(Some(PrStatus::Merged));
        }
        Ok(Some(PrStatus::Created))
    }

    /// Polls every sandbox whose pull request is open (`created`), soft-deleted ones
    /// included, with the GitHub key PR creation uses (the project's, else its user's),
    /// and records the merged ones.
    ///
    /// One sandbox's failure (no key, GitHub refusing, a bad remote) never stops the
    /// sweep: it is listed in [`MergePollReport::failed`]. Errors are a store that cannot
    /// list sandboxes, or no key vault (see [`with_key_vault`](Self::with_key_vault)).
    pub async fn poll_open_pull_requests(&self) -> Result<MergePollReport> {
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| OrchestratorError::GitHub {
                status: None,
                message: "merge polling needs a key vault to read GitHub keys".into(),
            })?;
        let filter = SandboxFilter {
            deleted: DeletedFilter::Include,
            ..Default::default()
        };
        let mut report = MergePollReport::default();
        let mut page = PageRequest::first(courier_store::MAX_PAGE_LIMIT);
        loop {
            let result = self.store.list_sandboxes(filter.clone(), page).await?;
            for sandbox in result.items {
                if sandbox.git.pr_status != Some(PrStatus::Created) {
                    continue;
                }
                let id = sandbox.id;
                report.checked += 1;
                match self.poll_with_key(vault, sandbox).await {
                    Ok(Some(PrStatus::Merged)) => report.merged.push(id),
                    Ok(_) => {}
                    Err(e) => report.failed.push((id, e.to_string())),
                }
            }
            match result.next_cursor {
                Some(cursor) => page = PageRequest::after(courier_store::MAX_PAGE_LIMIT, cursor),
                None => return Ok(report),
            }
        }
    }

    async fn poll_with_key(&self, vault: &KeyVault, sandbox: Sandbox) -> Result<Option<PrStatus>> {
        let token = github_token(vault, &sandbox)
            .await?
            .ok_or_else(|| OrchestratorError::GitHub {
                status: None,
                message: "no GitHub token: add a GitHub key in the project settings or in your user settings".into(),
            })?;
        self.poll_sandbox(sandbox, &token).await
    }

    /// Runs [`poll_open_pull_requests`](Self::poll_open_pull_requests) every `interval`
    /// (the first sweep at once) until the task is aborted, logging each sweep's report
    /// (sandbox ids and errors, never a key).
    pub fn spawn_merge_poller(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            // A slow sweep delays the next one rather than triggering a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.poll_open_pull_requests().await {
                    Ok(report) if report.checked == 0 => {}
                    Ok(report) => {
                        if !report.failed.is_empty() {
                            tracing::warn!(failed = ?report.failed, "merge poll: some pull requests could not be checked");
                        }
                        tracing::info!(
                            checked = report.checked,
                            merged = ?report.merged,
                            failed = report.failed.len(),
                            "merge poll"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "merge poll failed"),
                }
            }
        })
    }
}
