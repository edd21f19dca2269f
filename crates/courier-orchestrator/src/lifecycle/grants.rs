//! The gateway's questions about runs, answered from the store and the key vault (see
//! [`crate::gateway`]), and a run stopped when its token budget is spent.

use std::sync::Arc;

use courier_gateway::{
    Budget, GitGrant, Grant, Grants, Provider as GatewayProvider, ProviderCredential, Refusal,
    TokenUsage,
};
use courier_store::{SandboxId, SandboxStatus, Service, StoreError};
use courier_tools::Usage;

use super::{KillOptions, Orchestrator};
use crate::keys::ANTHROPIC_OAUTH_PREFIX;
use crate::pr::RepoSlug;
use crate::{OrchestratorError, Result};

/// Whether a sandbox in `status` is a live run (its tokens work).
fn live(status: SandboxStatus) -> bool {
    matches!(
        status,
        SandboxStatus::Creating | SandboxStatus::Running | SandboxStatus::Paused
    )
}

const fn service(provider: GatewayProvider) -> Service {
    match provider {
        GatewayProvider::Anthropic => Service::Anthropic,
        GatewayProvider::OpenAi => Service::OpenAi,
        GatewayProvider::OpenRouter => Service::OpenRouter,
    }
}

/// The gateway's questions, answered from the store and the key vault.
#[derive(Clone)]
pub struct RunGrants {
    orchestrator: Orchestrator,
    proof_at_egress: bool,
}

impl std::fmt::Debug for RunGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunGrants").finish_non_exhaustive()
    }
}

impl RunGrants {
    /// Grants for the runs of `orchestrator`.
    pub fn new(orchestrator: Orchestrator, proof_at_egress: bool) -> Arc<Self> {
        Arc::new(RunGrants {
            orchestrator,
            proof_at_egress,
        })
    }

    async fn tokens_used(&self, id: SandboxId) -> Result<u64> {
        let summary =
            crate::usage::UsageSummary::for_sandbox(self.orchestrator.store().as_ref(), id).await?;
        Ok((summary.input_tokens
            + summary.output_tokens
            + summary.cache_read_tokens
            + summary.cache_write_tokens) as u64)
    }

    async fn grant_for(&self, run: &str) -> std::result::Result<Grant, Refusal> {
        let ended = || Refusal::RunEnded {
            run: run.to_owned(),
        };
        let internal = |e: OrchestratorError| Refusal::Internal(e.to_string());
        let id: SandboxId = run.parse().map_err(|_| ended())?;
        let sandbox = match self.orchestrator.store().get_sandbox(id).await {
            Ok(sandbox) => sandbox,
            Err(StoreError::NotFound { .. }) => return Err(ended()),
            Err(e) => return Err(internal(e.into())),
        };
        if !live(sandbox.status) || !sandbox.config.keys_via_gateway {
            return Err(ended());
        }
        let vault = self.orchestrator.vault();
        let keys = vault
            .provider_keys(sandbox.user_id, sandbox.project_id)
            .await
            .map_err(internal)?;
        let mut credentials = Vec::new();
        if let Some(key) = keys.anthropic_api_key.or(keys.anthropic_oauth_token) {
            let credential = if key.expose().starts_with(ANTHROPIC_OAUTH_PREFIX) {
                ProviderCredential::OAuth(key)
            } else {
                ProviderCredential::ApiKey(key)
            };
            credentials.push((GatewayProvider::Anthropic, credential));
        }
        if let Some(key) = keys.openai_api_key {
            credentials.push((GatewayProvider::OpenAi, ProviderCredential::ApiKey(key)));
        }
        if let Some(key) = keys.openrouter_api_key {
            credentials.push((GatewayProvider::OpenRouter, ProviderCredential::ApiKey(key)));
        }
        let github = vault
            .resolve(
                sandbox.user_id,
                sandbox.project_id,
                courier_store::Provider::GitHub,
            )
            .await
            .map_err(internal)?;
        let slug = sandbox
            .git
            .repo_url
            .as_deref()
            .filter(|url| {
                crate::pr::remote_host(url).is_some_and(|h| h.eq_ignore_ascii_case("github.com"))
            })
            .and_then(|url| RepoSlug::parse_remote(url).ok());
        let git = match (github, slug, sandbox.git.branch.clone()) {
            (Some(key), Some(slug), Some(branch)) => Some(GitGrant {
                repo: slug.to_string(),
                branch,
                token: key.secret,
            }),
            _ => None,
        };
        let budget = match sandbox.config.token_budget {
            Some(limit) => Some(Budget {
                limit,
                used: self.tokens_used(id).await.map_err(internal)?,
            }),
            None => None,
        };
        Ok(Grant {
            proof_required: self.proof_at_egress,
            credentials,
            git,
            budget,
        })
    }

    async fn bill(&self, run: &str, provider: GatewayProvider, usage: TokenUsage) -> Result<()> {
        let Ok(id) = run.parse::<SandboxId>() else {
            return Ok(());
        };
        let store = self.orchestrator.store();
        let used = Usage {
            input_tokens: usage.input,
            output_tokens: usage.output,
            cache_read_tokens: usage.cache_read,
            cache_write_tokens: usage.cache_write,
            cost_usd: None,
        };
        let now = self.orchestrator.now();
        let records =
            crate::usage::token_records(store.as_ref(), id, service(provider), &used, now).await?;
        if !records.is_empty() {
            store.record_usage(&records).await?;
        }
        let sandbox = store.get_sandbox(id).await?;
        if let Some(limit) = sandbox.config.token_budget
            && live(sandbox.status)
        {
            let spent = self.tokens_used(id).await?;
            if spent >= limit {
                let orchestrator = self.orchestrator.clone();
                tokio::spawn(async move {
                    orchestrator.stop_for_budget(id, spent, limit).await;
                });
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Grants for RunGrants {
    async fn grant(&self, run: &str) -> std::result::Result<Grant, Refusal> {
        self.grant_for(run).await
    }

    async fn record_usage(&self, run: &str, provider: GatewayProvider, usage: TokenUsage) {
        if let Err(e) = self.bill(run, provider, usage).await {
            tracing::warn!(run, error = %e, "could not bill usage counted at the gateway");
        }
    }
}

impl Orchestrator {
    /// Ends a run whose token budget is spent: the agent stopped, its work saved and
    /// pushed (no pull request), the sandbox destroyed, status `error` with the reason.
    pub async fn stop_for_budget(&self, id: SandboxId, used: u64, limit: u64) {
        let reason = format!("the run's token budget is spent: {used} of {limit} tokens");
        let options = KillOptions {
            ends_in_error: true,
            ..KillOptions::save_only()
        };
        match self.kill_with(id, Some(reason), options).await {
            Ok(_) | Err(OrchestratorError::InvalidState { .. }) => {}
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not stop a run over budget"),
        }
    }
}
