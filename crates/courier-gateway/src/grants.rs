//! What a run may do: asked of the application embedding the gateway.

use courier_secret::Secret;

use crate::{Refusal, TokenUsage};

/// A model provider the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Anthropic's Messages API (Claude Code).
    Anthropic,
    /// OpenAI's API (Codex).
    OpenAi,
    /// OpenRouter's OpenAI-compatible API (OpenCode, Pi).
    OpenRouter,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 3] = [Provider::Anthropic, Provider::OpenAi, Provider::OpenRouter];

    /// The path segment naming it: `/llm/{segment}/…`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::OpenRouter => "openrouter",
        }
    }

    /// The provider a path segment names.
    pub fn parse(segment: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == segment)
    }
}

/// The real credential sent upstream for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderCredential {
    /// An API key (`x-api-key` for Anthropic, `Authorization: Bearer` otherwise).
    ApiKey(Secret),
    /// An OAuth access token (Anthropic subscriptions: `Authorization: Bearer` plus the
    /// OAuth beta flag).
    OAuth(Secret),
}

/// What a run may do with git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitGrant {
    /// The one repository, `owner/name` (compared case-insensitively, as GitHub does).
    pub repo: String,
    /// The one branch it may push to (`refs/heads/<branch>`); never a deletion.
    pub branch: String,
    /// The real token sent upstream.
    pub token: Secret,
}

/// What a live run may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Whether requests must carry the run's proof (the sandbox backend adds it at
    /// egress). `false` only for backends that cannot add headers: then the token alone
    /// authenticates, and the README says what that means.
    pub proof_required: bool,
    /// The real credential per provider.
    pub credentials: Vec<(Provider, ProviderCredential)>,
    /// Git, when the run has a repository on GitHub and a token for it.
    pub git: Option<GitGrant>,
    /// The run's token budget and what is spent of it, when it has one.
    pub budget: Option<Budget>,
}

impl Grant {
    /// The credential for `provider`.
    pub fn credential(&self, provider: Provider) -> Option<&ProviderCredential> {
        self.credentials
            .iter()
            .find(|(p, _)| *p == provider)
            .map(|(_, c)| c)
    }
}

/// A token budget and its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The most tokens (input + output) the run may use.
    pub limit: u64,
    /// Counted so far.
    pub used: u64,
}

impl Budget {
    /// Whether nothing is left.
    pub fn spent(&self) -> bool {
        self.used >= self.limit
    }
}

/// The application's side: which runs live and what they may do; where counted usage
/// goes.
#[async_trait::async_trait]
pub trait Grants: Send + Sync + 'static {
    /// What live run `run` may do; [`Refusal::RunEnded`] when it is not live.
    async fn grant(&self, run: &str) -> Result<Grant, Refusal>;

    /// Records tokens counted on one answer of `provider` for `run` (called once per
    /// answer, after it ends). The application bills them and stops the run when its
    /// budget is spent.
    async fn record_usage(&self, run: &str, provider: Provider, usage: TokenUsage);
}
