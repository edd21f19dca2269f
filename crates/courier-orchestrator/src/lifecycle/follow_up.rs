//! Follow-up messages: stored at once, delivered when the agent is idle, queued while it
//! works (the queue is drained by the `run` module as each run ends).

use courier_store::{Message, SandboxId, SandboxStatus};

use super::Orchestrator;
use crate::stream::record_user_message;
use crate::{OrchestratorError, Result};

impl Orchestrator {
    /// Sends a follow-up message: stored as a user message, then delivered at once when
    /// the agent is idle (the tool's continue command) or queued while it works.
    pub async fn send_message(&self, id: SandboxId, text: &str) -> Result<Message> {
        let sandbox = self.store.get_sandbox(id).await?;
        if sandbox.status != SandboxStatus::Running || !self.lock().contains_key(&id) {
            return Err(OrchestratorError::InvalidState {
                id,
                status: sandbox.status,
                action: "send a message",
            });
        }
        let message = record_user_message(self.store.as_ref(), &self.hub, id, text).await?;
        let deliver_now = {
            let mut live = self.lock();
            match live.get_mut(&id) {
                Some(l) if l.working => {
                    l.queue.push_back(text.to_owned());
                    false
                }
                Some(l) => {
                    l.working = true;
                    true
                }
                None => false,
            }
        };
        if deliver_now && let Err(e) = self.start_run(id, text.to_owned(), true).await {
            if let Some(l) = self.lock().get_mut(&id) {
                l.working = false;
            }
            return Err(e);
        }
        Ok(message)
    }
}
