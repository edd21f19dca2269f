//! # courier-gateway
//!
//! The gateway between Courier's sandboxes and the outside world, so that provider keys
//! and the GitHub token never enter a sandbox.
//!
//! Each run gets a [`RunCredentials`] pair minted from a server secret:
//!
//! - a **run token** the agent's CLI uses as its API key (and git as its credential). It
//!   names the run and is worthless anywhere but here, and only while the run lives;
//! - a **proof** the sandbox never sees: the sandbox backend's egress adds it as a header
//!   to every request toward the gateway (E2B's network `transform` rules; courier-sandboxd
//!   serves the same). A run token presented without its proof (from outside the sandbox)
//!   is refused.
//!
//! The gateway serves two things on one router ([`Gateway::router`]):
//!
//! - `/llm/{provider}/…` ([`llm`]): a streaming reverse proxy to the provider's API
//!   (Anthropic, OpenAI, OpenRouter) with the run token swapped for the real key, only
//!   toward that provider's configured upstream. It counts the tokens each answer reports
//!   (streamed usage included) and stops a run whose budget is spent;
//! - `/git/{owner}/{repo}/…` ([`git`]): git's smart HTTP protocol toward GitHub, scoped to
//!   the run's one repository, pushes only to the run's own branch.
//!
//! Who may do what is the embedding application's business, through [`Grants`].
//!
//! ```no_run
//! # async fn run(grants: std::sync::Arc<dyn courier_gateway::Grants>) -> std::io::Result<()> {
//! use courier_gateway::{Gateway, Minter, Upstreams};
//! let minter = Minter::new(b"a server secret of at least 32 bytes.....");
//! let gateway = Gateway::new(minter, Upstreams::default(), grants);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8090").await?;
//! axum::serve(listener, gateway.router()).await
//! # }
//! ```

mod credentials;
mod error;
pub mod git;
mod grants;
mod headers;
pub mod llm;
mod server;
pub mod usage;

pub use credentials::{Minter, PROOF_HEADER, RUN_TOKEN_HEADER, RunCredentials, TOKEN_PREFIX};
pub use error::Refusal;
pub use grants::{Budget, GitGrant, Grant, Grants, Provider, ProviderCredential};
pub use server::{Gateway, Upstreams, outward_ipv4};
pub use usage::TokenUsage;
