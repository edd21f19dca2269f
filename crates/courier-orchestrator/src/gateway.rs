//! Keys that never enter the sandbox: the orchestrator's side of `courier-gateway`.
//!
//! With a [`GatewayLink`] configured (and the project not opting out), a sandbox is set
//! up with its run's token in place of every provider key and of the GitHub token, and
//! its CLIs' base URLs and git's GitHub URLs pointed at the gateway. The sandbox backend
//! adds the run's proof to every request toward the gateway (a network `transform` rule
//! sent with the create; the proof itself never enters the sandbox). The gateway asks
//! [`RunGrants`] what the run may do: it lives while the sandbox is `creating`, `running`
//! or `paused`, so its tokens die with it. Usage counted at the gateway is billed here
//! (and the CLI's own figures are not, so nothing is billed twice), and a run whose
//! token budget is spent is stopped: its work saved, its status `error` with the reason.

use std::sync::Arc;

use courier_gateway::{
    Budget, GitGrant, Grant, Grants, Minter, Provider as GatewayProvider, ProviderCredential,
    Refusal, RunCredentials, TokenUsage,
};
use courier_store::{SandboxId, SandboxStatus, Service, StoreError};
use courier_tools::{GitGateway, ProviderEndpoints, ProviderKeys, Secret, Usage};

use crate::keys::ANTHROPIC_OAUTH_PREFIX;
use crate::lifecycle::{KillOptions, Orchestrator};
use crate::pr::RepoSlug;
use crate::{OrchestratorError, Result};

/// How the sandboxes reach Courier's gateway.
#[derive(Clone)]
pub struct GatewayLink {
    /// The gateway's root URL as seen from inside a sandbox (e.g.
    /// `http://10.1.2.3:8090`).
    pub url: String,
    /// Mints each run's token and proof (keyed by the server's master key).
    pub minter: Minter,
    /// Whether the sandbox backend adds the proof at egress (network `transform` rules:
    /// courier-sandboxd for plain HTTP, E2B for HTTPS). Without it the run token alone
    /// authenticates: still worthless after the run, but usable from elsewhere while the
    /// run lives.
    pub proof_at_egress: bool,
}

impl std::fmt::Debug for GatewayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayLink")
            .field("url", &self.url)
            .field("proof_at_egress", &self.proof_at_egress)
            .finish_non_exhaustive()
    }
}

impl GatewayLink {
    /// Checks the URL (`http://` or `https://`, URL characters only): it ends up in
    /// config files inside the sandbox. The error names the field.
    pub fn validate(&self) -> Result<()> {
        ProviderEndpoints {
            anthropic: Some(self.url.clone()),
            ..Default::default()
        }
        .validate()
        .map_err(|e| OrchestratorError::InvalidConfig {
            field: "gateway.url",
            message: e.to_string(),
        })
    }

    /// The host the sandbox's requests toward the gateway go to (the key of the network
    /// rule that adds the proof).
    pub fn host(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let authority = rest.split('/').next()?;
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next()?,
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        (!host.is_empty()).then(|| host.to_owned())
    }

    /// Each CLI's base URL, through the gateway.
    pub fn endpoints(&self) -> ProviderEndpoints {
        let root = self.url.trim_end_matches('/');
        ProviderEndpoints {
            anthropic: Some(format!("{root}/llm/anthropic")),
            openai: Some(format!("{root}/llm/openai/v1")),
            openrouter: Some(format!("{root}/llm/openrouter/api/v1")),
        }
    }

    /// The keys a sandbox gets: the run token for every provider the real keys cover.
    /// An Anthropic subscription token becomes an API key for the CLI (the gateway sends
    /// the real token upstream in its own form).
    pub fn sandbox_keys(&self, real: &ProviderKeys, token: &Secret) -> ProviderKeys {
        let stand_in = |present: bool| present.then(|| token.clone());
        ProviderKeys {
            anthropic_api_key: stand_in(
                real.anthropic_api_key.is_some() || real.anthropic_oauth_token.is_some(),
            ),
            anthropic_oauth_token: None,
            openrouter_api_key: stand_in(real.openrouter_api_key.is_some()),
            openai_api_key: stand_in(real.openai_api_key.is_some()),
        }
    }

    /// Git through the gateway with the run token.
    pub fn git(&self, credentials: &RunCredentials) -> GitGateway {
        GitGateway {
            url: self.url.clone(),
            token: credentials.token.clone(),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(url: &str) -> GatewayLink {
        GatewayLink {
            url: url.into(),
            minter: Minter::new(b"k"),
            proof_at_egress: true,
        }
    }

    #[test]
    fn the_sandbox_gets_the_run_token_for_exactly_the_keys_it_has() {
        let token = Secret::new("crt_run.tag");
        let real = ProviderKeys {
            anthropic_oauth_token: Some(Secret::new("sk-ant-oat01-real")),
            openai_api_key: Some(Secret::new("sk-proj-real")),
            ..Default::default()
        };
        let keys = link("http://10.0.0.5:8090").sandbox_keys(&real, &token);
        assert_eq!(keys.anthropic_api_key.as_ref(), Some(&token));
        assert_eq!(keys.anthropic_oauth_token, None);
        assert_eq!(keys.openai_api_key.as_ref(), Some(&token));
        assert_eq!(keys.openrouter_api_key, None);
        assert!(!format!("{keys:?}").contains("real"));
    }

    #[test]
    fn endpoints_and_host_come_from_the_url() {
        let l = link("http://10.0.0.5:8090/");
        assert_eq!(l.host().as_deref(), Some("10.0.0.5"));
        assert_eq!(
            l.endpoints().openai.as_deref(),
            Some("http://10.0.0.5:8090/llm/openai/v1")
        );
        assert_eq!(
            link("https://gw.example").host().as_deref(),
            Some("gw.example")
        );
        assert_eq!(
            link("http://[fd00::1]:80").host().as_deref(),
            Some("fd00::1")
        );
        assert!(link("http://gw\"x").validate().is_err());
        assert!(!format!("{:?}", link("http://a")).contains("Minter"));
    }
}
