//! Reconciling the store with the provider at startup (see the
//! [lifecycle docs](super#restart-safety)): vanished sandboxes killed, interrupted creates
//! failed, orphans destroyed, running agents followed again.

use std::collections::HashMap;

use courier_e2b::models::ListedSandbox;
use courier_store::{Sandbox, SandboxFilter, SandboxId, SandboxStatus, StoreError};

use super::{METADATA_SANDBOX_ID, Orchestrator};
use crate::usage::compute_records_until;
use crate::{OrchestratorError, Result};

/// What [`Orchestrator::reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Sandboxes `running`/`paused` in the store but gone at the provider, now `killed`.
    pub vanished: Vec<SandboxId>,
    /// Sandboxes left `creating` by an interrupted create, now `error`.
    pub interrupted: Vec<SandboxId>,
    /// Provider sandboxes (ids) carrying Courier's metadata but unknown or ended here,
    /// killed.
    pub orphans: Vec<String>,
    /// Running sandboxes whose agent this orchestrator follows again.
    pub reattached: Vec<SandboxId>,
}

impl Orchestrator {
    /// Reconciles the store with the provider at startup, and follows running agents
    /// again (see the [lifecycle docs](super#restart-safety)).
    ///
    /// Fails when the provider cannot list its sandboxes; then nothing is changed.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let listed = self.api.list().await?;
        let at_provider: HashMap<&str, &ListedSandbox> =
            listed.iter().map(|l| (l.sandbox_id.as_str(), l)).collect();
        let mut report = ReconcileReport::default();
        let filter = SandboxFilter {
            deleted: courier_store::DeletedFilter::Include,
            ..Default::default()
        };
        for sandbox in self.live_sandboxes(filter).await? {
            if self.lock().contains_key(&sandbox.id) {
                continue;
            }
            let provider = sandbox
                .provider_sandbox_id
                .as_deref()
                .and_then(|pid| at_provider.get(pid).copied());
            match (sandbox.status, provider) {
                (SandboxStatus::Creating, _) => {
                    self.fail_with(
                        sandbox.id,
                        sandbox.provider_sandbox_id.as_deref(),
                        "create interrupted by an orchestrator restart".into(),
                    )
                    .await;
                    report.interrupted.push(sandbox.id);
                }
                (_, None) => {
                    let reason = "sandbox vanished at the provider".to_owned();
                    match self.end_vanished(&sandbox, reason).await {
                        Ok(()) => report.vanished.push(sandbox.id),
                        Err(OrchestratorError::InvalidState { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                (SandboxStatus::Running, Some(listed)) => {
                    match self
                        .reattach(&sandbox, &listed.sandbox_id, listed.end_at)
                        .await
                    {
                        Ok(()) => report.reattached.push(sandbox.id),
                        Err(e) => {
                            tracing::warn!(sandbox = %sandbox.id, error = %e, "could not re-attach");
                        }
                    }
                }
                _ => {}
            }
        }
        for listed in &listed {
            let Some(courier_id) = listed.metadata.get(METADATA_SANDBOX_ID) else {
                continue;
            };
            let known = match courier_id.parse::<SandboxId>() {
                Ok(id) => match self.store.get_sandbox(id).await {
                    Ok(s) => !s.status.is_final(),
                    Err(StoreError::NotFound { .. }) => false,
                    Err(e) => return Err(e.into()),
                },
                // Not a sandbox id: it names no sandbox of ours.
                Err(_) => false,
            };
            if !known {
                tracing::warn!(provider_sandbox = %listed.sandbox_id, "killing an orphan sandbox");
                if let Err(e) = self.api.kill(&listed.sandbox_id).await {
                    tracing::warn!(provider_sandbox = %listed.sandbox_id, error = %e, "could not kill an orphan");
                } else {
                    report.orphans.push(listed.sandbox_id.clone());
                }
            }
        }
        Ok(report)
    }

    /// Ends a sandbox whose provider sandbox is gone: `killed` with the reason, compute
    /// recorded.
    async fn end_vanished(&self, sandbox: &Sandbox, reason: String) -> Result<()> {
        if let Some(live) = self.lock().remove(&sandbox.id)
            && let Some(agent) = live.agent
        {
            agent.abort();
        }
        let killed = self
            .transition_to_final(sandbox.id, SandboxStatus::Killed, Some(reason))
            .await?;
        // Billed until it was found gone: the best bound known.
        let compute = compute_records_until(self.store.as_ref(), &killed, self.clock.now()).await?;
        self.store.record_usage(&compute).await?;
        self.hub.close(sandbox.id);
        Ok(())
    }
}
