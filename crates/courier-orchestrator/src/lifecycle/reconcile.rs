//! Reconciling the store with the provider at startup (see the
//! [lifecycle docs](super#restart-safety)): vanished sandboxes killed, interrupted creates
//! failed, orphans destroyed, running agents followed again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use courier_e2b::models::ListedSandbox;
use courier_store::{Sandbox, SandboxFilter, SandboxId, SandboxStatus, StoreError};

use super::{METADATA_SANDBOX_ID, Orchestrator};
use crate::usage::compute_records_until;
use crate::{OrchestratorError, Result};

/// How long a live sandbox may go without an owner before a replica claims it: the
/// creating replica owns it right after recording it, so only a replica that died in
/// between (or a database from before the cluster) leaves one ownerless this long.
const OWNERLESS_GRACE: Duration = Duration::from_secs(30);

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
    ///
    /// As a replica of a cluster ([`with_cluster`](Self::with_cluster)) it first claims
    /// the sandboxes of dead replicas and then reconciles only the sandboxes it owns;
    /// provider sandboxes are swept for orphans by one replica only.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        // Output this process already queued is stored before the positions are read, so
        // a re-attach neither repeats nor skips it.
        self.hub.settle().await;
        match &self.cluster {
            None => self.reconcile_these(None, true).await,
            Some(cluster) => {
                let mut mine = cluster.owned().await?;
                mine.extend(cluster.claim_orphans(OWNERLESS_GRACE).await?);
                let sweep_orphans = cluster.lead("orphan-sweep").await?;
                self.reconcile_these(Some(mine), sweep_orphans).await
            }
        }
    }

    /// As a replica of a cluster: claims the sandboxes whose replica died and follows
    /// them as [`reconcile`](Self::reconcile) does at startup (agents re-attached,
    /// interrupted creates failed, vanished sandboxes ended). Call it periodically; without
    /// a cluster it does nothing. A sandbox claimed but not settled (the provider did not
    /// answer) is tried again on the next call.
    pub async fn take_over(&self) -> Result<ReconcileReport> {
        let Some(cluster) = &self.cluster else {
            return Ok(ReconcileReport::default());
        };
        let mut claimed: HashSet<SandboxId> = cluster
            .claim_orphans(OWNERLESS_GRACE)
            .await?
            .into_iter()
            .collect();
        claimed.extend(
            self.unsettled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(),
        );
        if claimed.is_empty() {
            return Ok(ReconcileReport::default());
        }
        tracing::info!(
            sandboxes = claimed.len(),
            "taking over sandboxes of a replica that stopped"
        );
        let retry = claimed.clone();
        match self.reconcile_these(Some(claimed), false).await {
            Ok(report) => Ok(report),
            Err(e) => {
                self.unsettled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(retry);
                Err(e)
            }
        }
    }

    /// Reconciles the live sandboxes in `only` (all without it); kills orphan provider
    /// sandboxes when `sweep_orphans`.
    async fn reconcile_these(
        &self,
        only: Option<HashSet<SandboxId>>,
        sweep_orphans: bool,
    ) -> Result<ReconcileReport> {
        let listed = self.api.list().await?;
        let at_provider: HashMap<&str, &ListedSandbox> =
            listed.iter().map(|l| (l.sandbox_id.as_str(), l)).collect();
        let mut report = ReconcileReport::default();
        let filter = SandboxFilter {
            deleted: courier_store::DeletedFilter::Include,
            ..Default::default()
        };
        for sandbox in self.live_sandboxes(filter).await? {
            if self.lock().contains_key(&sandbox.id)
                || only
                    .as_ref()
                    .is_some_and(|only| !only.contains(&sandbox.id))
            {
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
                            if self.cluster.is_some() {
                                self.unsettled
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(sandbox.id);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for listed in listed.iter().filter(|_| sweep_orphans) {
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
