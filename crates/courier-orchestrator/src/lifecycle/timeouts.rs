//! The deadline sweep (see the [lifecycle docs](super#timeouts)): working agents extended
//! up to the maximum lifetime, idle ones checkpointed, expired ones killed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_e2b::models::SandboxRecord;
use courier_store::{SandboxId, SandboxStatus};

use super::Orchestrator;
use super::commands::{SAVE_WORK_TIMEOUT, save_work_command};
use crate::{OrchestratorError, Result};

/// How the orchestrator treats deadlines (see the [lifecycle docs](super#timeouts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// How long before a deadline the work is checkpointed or the deadline extended.
    pub checkpoint_lead: Duration,
    /// How far a working agent's deadline is pushed back at a time.
    pub extension: Duration,
    /// The longest a sandbox may live from its creation, extensions included.
    pub max_lifetime: Duration,
}

impl Default for TimeoutPolicy {
    /// 60 s lead, 10 min extensions, at most 14 400 000 ms (4 h).
    fn default() -> Self {
        TimeoutPolicy {
            checkpoint_lead: Duration::from_secs(60),
            extension: Duration::from_secs(600),
            max_lifetime: Duration::from_millis(*crate::config::TIMEOUT_MS.end() as u64),
        }
    }
}

impl Orchestrator {
    /// [`tick_timeouts`](Self::tick_timeouts) at the clock's now: what a periodic timeout
    /// sweep calls.
    pub async fn check_timeouts(&self) -> Result<Vec<SandboxId>> {
        self.tick_timeouts(self.clock.now()).await
    }

    /// Acts on deadlines at `now` (see the [lifecycle docs](super#timeouts)): extends working
    /// sandboxes near their deadline up to the maximum lifetime, checkpoints the others
    /// once per deadline, and kills every sandbox whose deadline has passed; returns the
    /// ids killed.
    pub async fn tick_timeouts(&self, now: DateTime<Utc>) -> Result<Vec<SandboxId>> {
        let ids: Vec<SandboxId> = self.lock().keys().copied().collect();
        let mut expired = Vec::new();
        let lead = chrono::Duration::from_std(self.timeouts.checkpoint_lead).unwrap_or_default();
        let extension = chrono::Duration::from_std(self.timeouts.extension).unwrap_or_default();
        let max_lifetime =
            chrono::Duration::from_std(self.timeouts.max_lifetime).unwrap_or_default();
        for id in ids {
            let sandbox = self.store.get_sandbox(id).await?;
            let Some((deadline, working, checkpointed, record)) = self
                .lock()
                .get(&id)
                .map(|l| (l.deadline, l.working, l.checkpointed, l.record.clone()))
            else {
                continue;
            };
            if sandbox.status.is_final() {
                continue;
            }
            if now >= deadline {
                let lived = (deadline - sandbox.created_at).num_milliseconds();
                let reason = format!("timed out after {lived} ms");
                match self.kill(id, Some(reason)).await {
                    Ok(_) => expired.push(id),
                    Err(OrchestratorError::InvalidState { .. }) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            if sandbox.status != SandboxStatus::Running || now < deadline - lead {
                continue;
            }
            let max_deadline = sandbox.created_at + max_lifetime;
            if working && deadline < max_deadline {
                let extended = (deadline + extension).min(max_deadline);
                let remaining = (extended - now).to_std().unwrap_or_default();
                match self.api.set_timeout(&record.sandbox_id, remaining).await {
                    Ok(()) => {
                        tracing::info!(sandbox = %id, deadline = %extended, "agent working: deadline extended");
                        if let Some(live) = self.lock().get_mut(&id) {
                            live.deadline = extended;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %id, error = %e, "could not extend the deadline");
                    }
                }
                continue;
            }
            if checkpointed != Some(deadline) {
                self.checkpoint(id, &record).await;
                if let Some(live) = self.lock().get_mut(&id) {
                    live.checkpointed = Some(deadline);
                }
            }
        }
        Ok(expired)
    }

    /// Commits and pushes the work in progress (best effort), leaving the agent running.
    async fn checkpoint(&self, id: SandboxId, record: &SandboxRecord) {
        let save = self.command(save_work_command()).timeout(SAVE_WORK_TIMEOUT);
        match self.api.run(record, save).await {
            Ok(out) if out.exit_code != 0 => {
                tracing::info!(sandbox = %id, stderr = %out.stderr, "checkpoint: work not pushed");
            }
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "checkpoint failed"),
            Ok(_) => tracing::info!(sandbox = %id, "checkpoint: work pushed"),
        }
    }

    /// The deadline this orchestrator holds for a sandbox it runs.
    pub fn deadline(&self, id: SandboxId) -> Option<DateTime<Utc>> {
        self.lock().get(&id).map(|l| l.deadline)
    }
}
