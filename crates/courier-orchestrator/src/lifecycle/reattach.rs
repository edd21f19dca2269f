//! Following a running sandbox again after a restart: its live state rebuilt, its
//! `streaming` message resumed from the run's log file, undelivered follow-ups queued.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_store::{MessageRole, MessageStatus, Provider, Sandbox};
use courier_tools::{Secret, SetupContext, SetupStep, ToolId, Usage, build_setup_plan};

use super::commands::reattach_command;
use super::{Live, Orchestrator, default_branch};
use crate::Result;
use crate::stream::StreamRecorder;

impl Orchestrator {
    /// The environment the setup plan gives agent runs, rebuilt for a re-attached sandbox.
    async fn rebuilt_env(
        &self,
        sandbox: &Sandbox,
        tool: ToolId,
    ) -> Result<HashMap<String, String>> {
        let keys = self
            .vault
            .provider_keys(sandbox.user_id, sandbox.project_id)
            .await?;
        let github: Option<Secret> = self
            .vault
            .resolve(sandbox.user_id, sandbox.project_id, Provider::GitHub)
            .await?
            .map(|k| k.secret);
        let (keys, github, endpoints) =
            if sandbox.config.keys_via_gateway {
                // Its keys stayed outside: it gets its run token again, never the real keys.
                let gateway = self.gateway.as_ref().ok_or(crate::OrchestratorError::InvalidConfig {
                field: "gateway",
                message: format!(
                    "sandbox {} was set up to reach its providers through Courier's gateway, \
                     and this server runs none: its agent is not restarted with the real keys",
                    sandbox.id
                ),
            })?;
                let credentials = gateway.minter.mint(&sandbox.id.to_string());
                (
                    gateway.sandbox_keys(&keys, &credentials.token),
                    None,
                    gateway.endpoints(),
                )
            } else {
                (keys, github, self.endpoints.clone())
            };
        let context = SetupContext {
            tool,
            repo_url: sandbox.git.repo_url.clone(),
            branch_name: sandbox
                .git
                .branch
                .clone()
                .unwrap_or_else(|| default_branch(sandbox.id)),
            github_token: github,
            keys,
            endpoints,
            ..Default::default()
        };
        let plan = build_setup_plan(&context)?;
        Ok(plan
            .steps
            .iter()
            .filter_map(|step| match step {
                SetupStep::SetEnv { name, value } => {
                    Some((name.clone(), value.expose().to_owned()))
                }
                _ => None,
            })
            .collect())
    }

    /// Follows a running sandbox again: its live state rebuilt, its `streaming` message
    /// (if any) resumed from the run's log file, undelivered follow-ups queued again.
    pub(super) async fn reattach(
        &self,
        sandbox: &Sandbox,
        pid: &str,
        deadline: DateTime<Utc>,
    ) -> Result<()> {
        let record = self.api.connect(pid, None).await?;
        // Whatever another replica stored before it died reaches this replica's
        // subscribers before this replica publishes on its own.
        self.hub.follow_here(sandbox.id).await;
        // The store only holds tools that were valid at create; one a newer release
        // dropped is followed as the default tool rather than left unfollowed.
        let tool: ToolId = sandbox.cli_tool.parse().unwrap_or_else(|e| {
            tracing::warn!(sandbox = %sandbox.id, error = %e, "unknown tool: following it as the default");
            ToolId::default()
        });
        let env = self.rebuilt_env(sandbox, tool).await?;
        // Every earlier run recorded its share, so their sum is the session's total so
        // far: the baseline of tools that report cumulative figures.
        let billed =
            crate::usage::UsageSummary::for_sandbox(self.store.as_ref(), sandbox.id).await?;
        let session_usage = Usage {
            input_tokens: billed.input_tokens as u64,
            output_tokens: billed.output_tokens as u64,
            cache_read_tokens: billed.cache_read_tokens as u64,
            cache_write_tokens: billed.cache_write_tokens as u64,
            cost_usd: None,
        };
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .store
                .list_messages(sandbox.id, after, courier_store::MAX_PAGE_LIMIT)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            messages.extend(page);
        }
        let streaming = messages
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::Assistant && m.status == MessageStatus::Streaming)
            .cloned();
        let answered = messages
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::Assistant)
            .map_or(0, |m| m.seq);
        let mut queue: VecDeque<String> = messages
            .iter()
            .filter(|m| m.role == MessageRole::User && m.seq > answered)
            .map(|m| m.content.clone())
            .collect();
        // A run whose answer message never started (a restart right after storing the
        // follow-up) is started again from the queue below.
        let first_unstarted = if streaming.is_none() && answered > 0 {
            queue.pop_front()
        } else {
            None
        };
        self.lock().insert(
            sandbox.id,
            Live {
                record: record.clone(),
                tool,
                model: sandbox.model.clone(),
                thinking_effort: None,
                env: env.clone(),
                working: streaming.is_some() || first_unstarted.is_some(),
                queue,
                agent: None,
                session_usage: Some(session_usage),
                deadline,
                checkpointed: None,
                metered_at_gateway: sandbox.config.keys_via_gateway,
            },
        );
        if let Some(message) = streaming {
            let skip = message.raw_log.matches('\n').count();
            let mut spec = self.command(reattach_command(skip)).timeout(Duration::ZERO);
            spec.envs = env;
            let spawned = self.api.spawn(&record, spec).await?;
            let recorder = StreamRecorder::resume(
                self.store.clone(),
                self.hub.clone(),
                sandbox.id,
                tool,
                message,
            )
            .metered_elsewhere(sandbox.config.keys_via_gateway)
            .with_clock(self.clock.clone());
            self.follow(sandbox.id, spawned, recorder);
        } else if let Some(prompt) = first_unstarted {
            self.start_run(sandbox.id, prompt, true).await?;
        }
        Ok(())
    }
}
