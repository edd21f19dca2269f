//! One agent run: started in the background and followed, its output recorded; its end
//! delivers the next queued message. Also stopping the agent, and billing a run stopped
//! before its stream reported usage.

use std::time::Duration;

use courier_e2b::models::SandboxRecord;
use courier_store::{SandboxId, StoreError};
use courier_tools::{
    RunRequest, ToolId, Usage, first_run_command, follow_up_command, stop_agent_command,
};

use super::commands::agent_command;
use super::{AGENT_TAG, Orchestrator};
use crate::stream::{RunOutcome, StreamRecorder};
use crate::{OrchestratorError, Result};

impl Orchestrator {
    /// Starts one agent run in the background; when it ends, the next queued message (if
    /// any) is delivered with the tool's continue command.
    ///
    /// Boxed because a run's end may start the next run (the future is recursive).
    pub(super) fn start_run(
        &self,
        id: SandboxId,
        prompt: String,
        follow_up: bool,
    ) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(self.start_run_inner(id, prompt, follow_up))
    }

    async fn start_run_inner(&self, id: SandboxId, prompt: String, follow_up: bool) -> Result<()> {
        let (record, tool, command, session_usage, metered) = {
            let live = self.lock();
            let live = live.get(&id).ok_or_else(|| {
                OrchestratorError::Store(StoreError::NotFound {
                    entity: "live sandbox",
                    id: id.to_string(),
                })
            })?;
            let request = RunRequest {
                prompt,
                model: live.model.clone(),
                thinking_effort: live.thinking_effort,
            };
            let line = if follow_up {
                follow_up_command(live.tool, &request)
            } else {
                first_run_command(live.tool, &request)
            };
            let mut spec = self
                .command(agent_command(&line.to_shell()))
                .timeout(Duration::ZERO)
                .tag(AGENT_TAG);
            spec.envs = live.env.clone();
            let session_usage = if follow_up {
                live.session_usage.clone()
            } else {
                None
            };
            (
                live.record.clone(),
                live.tool,
                spec,
                session_usage,
                live.metered_at_gateway,
            )
        };
        let spawned = self.api.spawn(&record, command).await?;
        let recorder = StreamRecorder::start(self.store.clone(), self.hub.clone(), id, tool)
            .await?
            .continuing(session_usage)
            .metered_elsewhere(metered)
            .with_clock(self.clock.clone());
        self.follow(id, spawned, recorder);
        Ok(())
    }

    /// Records a spawned run in the background; its end delivers the next queued message.
    pub(super) fn follow(
        &self,
        id: SandboxId,
        spawned: courier_e2b::SpawnedCommand,
        recorder: StreamRecorder,
    ) {
        let this = self.clone();
        // The run's sandbox and the session's total before it, for billing a run that is
        // stopped before its stream reports usage (even once a kill forgot the sandbox).
        let before = self
            .lock()
            .get(&id)
            .filter(|l| !l.metered_at_gateway)
            .map(|l| (l.record.clone(), l.tool, l.session_usage.clone()));
        let task = tokio::spawn(async move {
            let outcome = recorder.record(spawned.events).await;
            if matches!(&outcome, Ok(o) if o.auth_failed) {
                // The message already says which key to fix; the CLI may still be
                // retrying with the refused key.
                this.stop_agent(id).await;
            }
            if let (Ok(outcome), Some((record, tool, baseline))) = (&outcome, before) {
                this.bill_stopped_run(id, tool, &record, outcome, baseline)
                    .await;
            }
            this.run_ended(id, outcome).await;
        });
        if let Some(live) = self.lock().get_mut(&id) {
            live.working = true;
            live.agent = Some(task);
        }
    }

    /// Stops the sandbox's agent and everything it started ([`stop_agent_command`]),
    /// best effort: a failure is logged.
    async fn stop_agent(&self, id: SandboxId) {
        let record = self.lock().get(&id).map(|l| l.record.clone());
        let Some(record) = record else { return };
        self.stop_agent_in(id, &record).await;
    }

    pub(super) async fn stop_agent_in(&self, id: SandboxId, record: &SandboxRecord) {
        let stop = self.command(stop_agent_command().to_shell());
        match self.api.run(record, stop).await {
            Ok(out) if out.exit_code != 0 => {
                tracing::warn!(sandbox = %id, stderr = %out.stderr.trim(), "the agent did not stop");
            }
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not stop the agent"),
            Ok(_) => {}
        }
    }

    /// Bills what a stopped run used when its stream could not say (Codex reports usage
    /// only when a turn ends): the session's total from the CLI's own log, minus what
    /// earlier runs billed. Best effort: a failure is logged.
    async fn bill_stopped_run(
        &self,
        id: SandboxId,
        tool: ToolId,
        record: &SandboxRecord,
        outcome: &RunOutcome,
        baseline: Option<Usage>,
    ) {
        let reported = outcome.usage.input_tokens
            + outcome.usage.output_tokens
            + outcome.usage.cache_read_tokens
            + outcome.usage.cache_write_tokens
            > 0;
        let (Some(service), Some(session)) = (
            crate::usage::service_for(tool),
            outcome.session_id.as_deref(),
        ) else {
            return;
        };
        if reported || outcome.result.session_usage.is_some() {
            return;
        }
        let Some(probe) = courier_tools::command::stopped_run_usage_command(tool, session) else {
            return;
        };
        let total = match self.api.run(record, self.command(probe.to_shell())).await {
            Ok(out) => courier_tools::command::parse_stopped_run_usage(tool, &out.stdout),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "could not read a stopped run's usage");
                return;
            }
        };
        let Some(total) = total else { return };
        let used = match &baseline {
            Some(base) if total.covers(base) => total.minus(base),
            _ => total,
        };
        let billed = async {
            let records = crate::usage::token_records(
                self.store.as_ref(),
                id,
                service,
                &used,
                self.clock.now(),
            )
            .await?;
            if !records.is_empty() {
                self.store.record_usage(&records).await?;
            }
            Ok::<_, OrchestratorError>(())
        };
        if let Err(e) = billed.await {
            tracing::warn!(sandbox = %id, error = %e, "could not bill a stopped run");
        }
    }

    async fn run_ended(&self, id: SandboxId, outcome: Result<RunOutcome>) {
        if let Err(e) = &outcome {
            tracing::warn!(sandbox = %id, error = %e, "agent stream failed");
        }
        let session_usage = outcome
            .as_ref()
            .ok()
            .and_then(|o| o.result.session_usage.clone());
        let next = {
            let mut live = self.lock();
            let Some(live) = live.get_mut(&id) else {
                return;
            };
            live.agent = None;
            if session_usage.is_some() {
                live.session_usage = session_usage;
            }
            let next = live.queue.pop_front();
            live.working = next.is_some();
            next
        };
        if let Some(prompt) = next
            && let Err(e) = self.start_run(id, prompt, true).await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not deliver a queued message");
            if let Some(live) = self.lock().get_mut(&id) {
                live.working = false;
            }
        }
    }
}
