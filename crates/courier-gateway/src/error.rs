//! Why the gateway refuses a request.

/// A refusal, answered with the status it names and never carrying a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No run token, or one not minted here.
    #[error("no valid Courier run token: the sandbox's credentials are Courier run tokens")]
    NoToken,
    /// The token's proof is missing or wrong: the request did not come from the run's
    /// sandbox.
    #[error("this run token is only accepted from its own sandbox")]
    NoProof,
    /// The run has ended (or never existed): its tokens died with it.
    #[error("the run {run} is not live: its tokens ended with it")]
    RunEnded {
        /// The run.
        run: String,
    },
    /// The run has no credential for the provider asked for.
    #[error("the run has no {provider} key")]
    NoKey {
        /// The provider.
        provider: &'static str,
    },
    /// The run's token budget is spent.
    #[error("the run's token budget is spent ({used} of {budget} tokens)")]
    BudgetSpent {
        /// Tokens counted so far.
        used: u64,
        /// The budget.
        budget: u64,
    },
    /// A git request outside what the run may do.
    #[error("{0}")]
    Git(String),
    /// A request the gateway does not serve.
    #[error("{0}")]
    BadRequest(String),
    /// The upstream could not be reached or answered garbage.
    #[error("the upstream failed: {0}")]
    Upstream(String),
    /// The application behind [`crate::Grants`] failed.
    #[error("the gateway could not check the run: {0}")]
    Internal(String),
}

impl Refusal {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Refusal::NoToken | Refusal::NoProof | Refusal::RunEnded { .. } => S::UNAUTHORIZED,
            Refusal::NoKey { .. } | Refusal::BudgetSpent { .. } | Refusal::Git(_) => S::FORBIDDEN,
            Refusal::BadRequest(_) => S::BAD_REQUEST,
            Refusal::Upstream(_) => S::BAD_GATEWAY,
            Refusal::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}
