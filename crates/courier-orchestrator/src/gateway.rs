//! Keys that never enter the sandbox: the orchestrator's side of `courier-gateway`.
//!
//! With a [`GatewayLink`] configured (and the project not opting out), a sandbox is set
//! up with its run's token in place of every provider key and of the GitHub token, and
//! its CLIs' base URLs and git's GitHub URLs pointed at the gateway. The sandbox backend
//! adds the run's proof to every request toward the gateway (a network `transform` rule
//! sent with the create; the proof itself never enters the sandbox). The gateway asks
//! [`RunGrants`](crate::lifecycle::RunGrants) what the run may do: it lives while the sandbox is `creating`, `running`
//! or `paused`, so its tokens die with it. Usage counted at the gateway is billed here
//! (and the CLI's own figures are not, so nothing is billed twice), and a run whose
//! token budget is spent is stopped: its work saved, its status `error` with the reason.

use courier_gateway::{Minter, RunCredentials};
use courier_tools::{GitGateway, ProviderEndpoints, ProviderKeys, Secret};

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
