//! Pausing and resuming a sandbox at the provider; a sandbox paused across a restart is
//! followed again when resumed.

use std::time::Duration;

use courier_store::{Sandbox, SandboxId, SandboxStatus};

use super::Orchestrator;
use crate::{OrchestratorError, Result};

impl Orchestrator {
    /// Pauses a running sandbox at the provider; `paused`.
    pub async fn pause(&self, id: SandboxId) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        let pid = provider_id_when(&sandbox, SandboxStatus::Running, "pause")?;
        self.api.pause(&pid).await?;
        Ok(self
            .store
            .transition_sandbox(id, SandboxStatus::Running, SandboxStatus::Paused, None)
            .await?)
    }

    /// Resumes a paused sandbox with its configured timeout; `running`.
    pub async fn resume(&self, id: SandboxId) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        let pid = provider_id_when(&sandbox, SandboxStatus::Paused, "resume")?;
        let timeout = Duration::from_millis(sandbox.config.timeout_ms.max(0) as u64);
        let record = self.api.connect(&pid, Some(timeout)).await?;
        let known = match self.lock().get_mut(&id) {
            Some(live) => {
                live.record = record;
                live.deadline =
                    self.clock.now() + chrono::Duration::from_std(timeout).unwrap_or_default();
                true
            }
            None => false,
        };
        let running = self
            .store
            .transition_sandbox(id, SandboxStatus::Paused, SandboxStatus::Running, None)
            .await?;
        if !known {
            // Paused before a restart: follow it again now that it can be reached.
            let deadline =
                self.clock.now() + chrono::Duration::from_std(timeout).unwrap_or_default();
            if let Err(e) = self.reattach(&running, &pid, deadline).await {
                tracing::warn!(sandbox = %id, error = %e, "could not re-attach a resumed sandbox");
            }
        }
        Ok(running)
    }
}

/// The provider's id of a sandbox in `status`; in any other state (or without one),
/// `action` is not allowed.
fn provider_id_when(
    sandbox: &Sandbox,
    status: SandboxStatus,
    action: &'static str,
) -> Result<String> {
    match sandbox.provider_sandbox_id.as_deref() {
        Some(pid) if sandbox.status == status => Ok(pid.to_owned()),
        _ => Err(OrchestratorError::InvalidState {
            id: sandbox.id,
            status: sandbox.status,
            action,
        }),
    }
}
