//! Waiting for an agent's answer and saving its work while its sandbox lives on: what a
//! workflow needs to run one step after another, restart-safe because both read the
//! store, not memory.

use std::time::Duration;

use courier_store::{MessageId, MessageRole, MessageStatus, SandboxId, SandboxStatus};

use super::Orchestrator;
use super::commands::{SAVE_WORK_TIMEOUT, save_work_command};
use crate::pr::redact_credentials;
use crate::{OrchestratorError, Result};

/// How an agent answered the last message sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The assistant message.
    pub message_id: MessageId,
    /// `completed`, or `error` when the run failed.
    pub status: MessageStatus,
    /// Its text: the agent's final account.
    pub text: String,
}

impl Answer {
    /// Whether the run ended well.
    pub fn succeeded(&self) -> bool {
        self.status == MessageStatus::Completed
    }
}

impl Orchestrator {
    /// Waits until the sandbox's agent has answered every message sent to it: its last
    /// message is a finished assistant message and no run is in progress or queued.
    /// Reads the store every `poll`, so it holds across a restart (once
    /// [`reconcile`](Self::reconcile) re-attached the agent's output).
    ///
    /// # Errors
    ///
    /// [`OrchestratorError::AgentGone`] when the sandbox ends (killed, timed out, failed)
    /// before the answer; store errors.
    pub async fn wait_for_answer(&self, id: SandboxId, poll: Duration) -> Result<Answer> {
        // Woken by the sandbox's events; while its agent works nothing is read from the
        // store (a streaming message's raw log may be megabytes).
        let mut events = self.hub.watch(id);
        // Messages before this sequence number are settled: only the tail is re-read.
        let mut from = 0;
        loop {
            if !self.is_working(id) {
                let sandbox = self.store.get_sandbox(id).await?;
                if let Some(answer) = self.answer(id, &mut from).await? {
                    return Ok(answer);
                }
                if sandbox.status.is_final() {
                    return Err(OrchestratorError::AgentGone {
                        id,
                        status: sandbox.status,
                        reason: sandbox.error_message,
                    });
                }
            }
            if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
                tokio::time::timeout(poll, events.recv()).await
            {
                // The channel ended (a kill): a new one for whatever comes next.
                tokio::time::sleep(poll).await;
                events = self.hub.watch(id);
            }
        }
    }

    /// The sandbox's last message when it is a finished assistant message and no run is
    /// in progress or queued: the answer to everything sent.
    /// Reads from sequence number `from` on and moves it to the last message (which may
    /// still change).
    async fn answer(&self, id: SandboxId, from: &mut i64) -> Result<Option<Answer>> {
        let mut after = (*from - 1).max(0);
        let mut last = None;
        loop {
            let page = self.store.list_messages(id, after, 200).await?;
            let full = page.len() == 200;
            if let Some(tail) = page.last() {
                after = tail.seq;
                *from = tail.seq;
                last = Some(tail.clone());
            }
            if !full {
                break;
            }
        }
        Ok(last
            .filter(|m| {
                m.role == MessageRole::Assistant
                    && m.status != MessageStatus::Streaming
                    && !self.is_working(id)
            })
            .map(|m| Answer {
                message_id: m.id,
                status: m.status,
                text: m.content,
            }))
    }

    /// The text of the last user message sent to the sandbox's agent, if any: tells a
    /// restarted workflow whether its prompt was delivered before the restart.
    pub async fn last_prompt(&self, id: SandboxId) -> Result<Option<String>> {
        let mut after = 0;
        let mut prompt = None;
        loop {
            let page = self.store.list_messages(id, after, 200).await?;
            let Some(tail) = page.last() else {
                return Ok(prompt);
            };
            after = tail.seq;
            if let Some(m) = page.iter().rev().find(|m| m.role == MessageRole::User) {
                prompt = Some(m.content.clone());
            }
        }
    }

    /// Commits and pushes the sandbox's work now; the sandbox lives on. A workflow does
    /// this between steps so the next step's sandbox clones it.
    ///
    /// # Errors
    ///
    /// [`OrchestratorError::InvalidState`] unless the sandbox is running;
    /// [`OrchestratorError::Git`] with git's (redacted) output when the push fails.
    pub async fn save_work(&self, id: SandboxId) -> Result<()> {
        let sandbox = self.store.get_sandbox(id).await?;
        if sandbox.status != SandboxStatus::Running {
            return Err(OrchestratorError::InvalidState {
                id,
                status: sandbox.status,
                action: "save its work",
            });
        }
        let record =
            self.provider_record(&sandbox)
                .await
                .ok_or_else(|| OrchestratorError::Git {
                    action: "push",
                    message: "the sandbox cannot be reached".into(),
                })?;
        let save = self.command(save_work_command()).timeout(SAVE_WORK_TIMEOUT);
        let out = self.api.run(&record, save).await?;
        if out.exit_code != 0 {
            let detail = if out.stderr.trim().is_empty() {
                out.stdout
            } else {
                out.stderr
            };
            return Err(OrchestratorError::Git {
                action: "push",
                message: redact_credentials(detail.trim()),
            });
        }
        Ok(())
    }
}
