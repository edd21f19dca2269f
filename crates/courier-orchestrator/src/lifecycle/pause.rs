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
        let pid = match (&sandbox.status, sandbox.provider_sandbox_id.as_deref()) {
            (SandboxStatus::Running, Some(pid)) => pid.to_owned(),
            _ => {
                return Err(OrchestratorError::InvalidState {
                    id,
                    status: sandbox.status,
                    action: "pause",
                });
            }
        };
        self.api.pause(&pid).await?;
        Ok(self
            .store
            .transition_sandbox(id, SandboxStatus::Running, SandboxStatus::Paused, None)
            .await?)
    }

    /// Resumes a paused sandbox with its configured timeout; `running`.
    pub async fn resume(&self, id: SandboxId) -> Result<Sandbox> {
        let sandbox = self.store.get_sandbox(id).await?;
        let pid = match (&sandbox.status, sandbox.provider_sandbox_id.as_deref()) {
            (SandboxStatus::Paused, Some(pid)) => pid.to_owned(),
            _ => {
                return Err(OrchestratorError::InvalidState {
                    id,
                    status: sandbox.status,
                    action: "resume",
                });
            }
        };
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
