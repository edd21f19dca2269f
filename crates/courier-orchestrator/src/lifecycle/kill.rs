//! Ending sandboxes: kill (agent stopped, work saved, pull request opened, provider
//! sandbox destroyed, compute billed, learnings queued), kill all of a project, and soft
//! delete, restore and purge.

use std::time::Duration;

use courier_e2b::models::SandboxRecord;
use courier_store::{PageRequest, Sandbox, SandboxFilter, SandboxId, SandboxStatus, StoreError};

use super::Orchestrator;
use super::commands::{SAVE_WORK_TIMEOUT, save_work_command};
use crate::pr::github_token;
use crate::usage::compute_records_until;
use crate::{OrchestratorError, Result};

/// What a kill does with the sandbox's work besides stopping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillOptions {
    /// Commit and push unfinished work first (default `true`).
    pub save_work: bool,
    /// Which pull request to open, when a pipeline is configured.
    pub pull_request: PullRequest,
    /// End in `error` (with the kill's reason) rather than `killed`: the run was stopped
    /// for a fault of its own, such as a spent token budget.
    pub ends_in_error: bool,
}

impl Default for KillOptions {
    fn default() -> Self {
        KillOptions {
            save_work: true,
            pull_request: PullRequest::Default,
            ends_in_error: false,
        }
    }
}

impl KillOptions {
    /// Nothing saved, no pull request: the sandbox's work is thrown away (a checker's).
    pub fn discard() -> Self {
        KillOptions {
            save_work: false,
            pull_request: PullRequest::None,
            ends_in_error: false,
        }
    }

    /// Work saved and pushed, no pull request.
    pub fn save_only() -> Self {
        KillOptions {
            save_work: true,
            pull_request: PullRequest::None,
            ends_in_error: false,
        }
    }
}

/// The pull request a kill opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PullRequest {
    /// Against the remote's default branch.
    #[default]
    Default,
    /// Against this base branch.
    Against(String),
    /// None.
    None,
}

impl Orchestrator {
    /// The provider's record of the sandbox: the live one, else connected to. `None` when
    /// it has none or cannot be reached (then its agent is not stopped nor its work saved;
    /// the kill goes on).
    pub(super) async fn provider_record(&self, sandbox: &Sandbox) -> Option<SandboxRecord> {
        if let Some(live) = self.lock().get(&sandbox.id) {
            return Some(live.record.clone());
        }
        let pid = sandbox.provider_sandbox_id.as_deref()?;
        match self.api.connect(pid, None).await {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot reach the sandbox: its work is not saved");
                None
            }
        }
    }

    /// Kills a sandbox: stops the agent and everything it started (tracked by its session,
    /// not by matching command lines), commits and pushes
    /// unfinished work (best effort), hands the branch to the pull request pipeline (when
    /// configured), destroys the provider sandbox, records `killed` and the compute usage,
    /// and queues learning extraction (when configured). `reason` is kept as the sandbox's
    /// message (e.g. a timeout).
    ///
    /// A workflow's sandbox (linked by `run_id`) is killed with its work saved but no pull
    /// request: its run opens the one pull request when it ends.
    pub async fn kill(&self, id: SandboxId, reason: Option<String>) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        let options = if sandbox.links.run_id.is_some() {
            KillOptions::save_only()
        } else {
            KillOptions::default()
        };
        self.kill_with(id, reason, options).await
    }

    /// Kills a sandbox like [`kill`](Self::kill), with the work saving and the pull
    /// request chosen by the caller: a workflow's checker sandbox ends without either, a
    /// work chain's issue opens its pull request against the previous issue's branch.
    pub async fn kill_with(
        &self,
        id: SandboxId,
        reason: Option<String>,
        options: KillOptions,
    ) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        if sandbox.status.is_final() {
            return Err(OrchestratorError::InvalidState {
                id,
                status: sandbox.status,
                action: "kill",
            });
        }
        let record = self.provider_record(&sandbox).await;
        if let Some(record) = &record {
            self.stop_agent_in(id, record).await;
        }
        if let Some(record) = record.as_ref().filter(|_| options.save_work) {
            let save = self.command(save_work_command()).timeout(SAVE_WORK_TIMEOUT);
            match self.api.run(record, save).await {
                Ok(out) if out.exit_code != 0 => {
                    tracing::info!(sandbox = %id, stderr = %out.stderr, "work not pushed");
                }
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not save work"),
                Ok(_) => {}
            }
        }
        let agent = self.lock().remove(&id).and_then(|l| l.agent);
        if let Some(agent) = agent {
            // The agent was killed, so its stream ends; give the recorder a moment to
            // store the verdict (and bill the run) before cutting it off.
            if tokio::time::timeout(Duration::from_secs(5), agent)
                .await
                .is_err()
            {
                tracing::warn!(sandbox = %id, "agent stream did not end after the kill");
            }
        }
        // After the agent's last message is stored (it is the PR's summary), before the
        // sandbox and its repository are gone.
        let base = match &options.pull_request {
            PullRequest::None => None,
            PullRequest::Default => Some(None),
            PullRequest::Against(base) => Some(Some(base.as_str())),
        };
        if let (Some(pipeline), Some(record), Some(base)) = (&self.pull_requests, &record, base) {
            let token = match github_token(&self.vault, &sandbox).await {
                Ok(token) => token,
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "GitHub key unreadable");
                    None
                }
            };
            if let Err(e) = pipeline
                .open_against(id, record, token.as_ref(), base)
                .await
            {
                tracing::warn!(sandbox = %id, error = %e, "pull request pipeline failed");
            }
        }
        if let Some(pid) = sandbox.provider_sandbox_id.as_deref()
            && let Err(e) = self.api.kill(pid).await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not destroy the sandbox");
        }
        // The provider bills until the sandbox is destroyed: now, by our clock.
        let ended = self.clock.now();
        let to = if options.ends_in_error {
            SandboxStatus::Error
        } else {
            SandboxStatus::Killed
        };
        let killed = self.transition_to_final(id, to, reason).await?;
        let compute = compute_records_until(self.store.as_ref(), &killed, ended).await?;
        self.store.record_usage(&compute).await?;
        self.hub.close(id);
        if let Some(pipeline) = self.learnings.clone() {
            // In the background: an LLM call must not hold up the kill. The status says
            // how it went.
            tokio::spawn(async move {
                if let Err(e) = pipeline.extract(id).await {
                    tracing::warn!(sandbox = %id, error = %e, "learning extraction failed");
                }
            });
        }
        Ok(killed)
    }

    pub(super) async fn transition_to_final(
        &self,
        id: SandboxId,
        to: SandboxStatus,
        message: Option<String>,
    ) -> Result<Sandbox> {
        loop {
            let current = self.store.get_sandbox(id).await?;
            if current.status.is_final() {
                return Err(OrchestratorError::InvalidState {
                    id,
                    status: current.status,
                    action: "end it",
                });
            }
            match self
                .store
                .transition_sandbox(id, current.status, to, message.clone())
                .await
            {
                Err(StoreError::Conflict(_)) => continue,
                other => return Ok(other?),
            }
        }
    }

    /// Hides a sandbox (it stops counting as active).
    pub async fn soft_delete(&self, id: SandboxId) -> Result<()> {
        Ok(self.store.soft_delete_sandbox(id).await?)
    }

    /// Unhides a soft-deleted sandbox.
    pub async fn restore(&self, id: SandboxId) -> Result<()> {
        Ok(self.store.restore_sandbox(id).await?)
    }

    /// Removes a sandbox for good, killing it first if it still lives (usage stays).
    pub async fn purge(&self, id: SandboxId) -> Result<()> {
        let sandbox = self.store.get_sandbox(id).await?;
        if !sandbox.status.is_final() {
            self.kill(id, Some("purged".into())).await?;
        }
        Ok(self.store.purge_sandbox(id).await?)
    }

    /// The sandboxes of a project that have not ended (deleted ones included: deleting
    /// hides a sandbox, it does not stop it).
    pub async fn live_sandboxes_of(
        &self,
        project_id: courier_store::ProjectId,
    ) -> Result<Vec<Sandbox>> {
        let filter = SandboxFilter {
            project_id: Some(project_id),
            deleted: courier_store::DeletedFilter::Include,
            ..Default::default()
        };
        self.live_sandboxes(filter).await
    }

    pub(super) async fn live_sandboxes(&self, filter: SandboxFilter) -> Result<Vec<Sandbox>> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(courier_store::MAX_PAGE_LIMIT);
        loop {
            let result = self.store.list_sandboxes(filter.clone(), page).await?;
            out.extend(result.items.into_iter().filter(|s| !s.status.is_final()));
            match result.next_cursor {
                Some(cursor) => page = PageRequest::after(courier_store::MAX_PAGE_LIMIT, cursor),
                None => return Ok(out),
            }
        }
    }

    /// Kills every live sandbox of a project; returns how many were killed.
    pub async fn kill_project(&self, project_id: courier_store::ProjectId) -> Result<usize> {
        let mut killed = 0;
        for sandbox in self.live_sandboxes_of(project_id).await? {
            match self
                .kill(sandbox.id, Some("project's sandboxes killed".into()))
                .await
            {
                Ok(_) => killed += 1,
                Err(OrchestratorError::InvalidState { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(killed)
    }
}
