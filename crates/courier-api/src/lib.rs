//! # courier-api
//!
//! Courier's HTTP face: the `/v1` REST API, live sandbox events as server-sent events,
//! bearer-token auth, GitHub's webhook deliveries (`POST /v1/github/webhook`, signed with
//! the hook's secret instead of a token), the OpenAPI document at `/openapi.json`, health,
//! readiness and Prometheus metrics, and the single-page dashboard at `/`.
//!
//! - [`Api`]: the shared state; [`Api::router`] is the axum [`Router`](axum::Router).
//! - [`tokens`]: bearer tokens, stored as SHA-256 hashes in an `api_tokens` table.
//! - [`views`]: the typed JSON bodies of every route, with their derived OpenAPI schemas.
//! - [`openapi`]: the route table and the OpenAPI 3.1 document built from it and the views.
//! - [`Metrics`]: the counters behind `/metrics`.
//!
//! ## Invariant
//!
//! No business logic lives here: handlers authenticate, check that the caller owns the
//! project, parse input, call the [`Orchestrator`] (or read the
//! [`Store`]) and shape the answer. Secrets (provider keys, tokens,
//! the webhook secret) never appear in responses or logs; keys are listed as `****abcd`.
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo(api: courier_api::Api) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, api.router()).await
//! # }
//! ```

mod auth;
mod error;
mod events;
mod metrics;
pub mod openapi;
mod owner;
mod ratelimit;
mod routes;
pub mod tokens;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use courier_orchestrator::keys::KeyVault;
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::pr::PrPipeline;
use courier_orchestrator::work::Workflows;
use courier_store::Store;
use courier_tools::Secret;
use tokio::sync::watch;

pub use error::{ApiError, Result};
pub use metrics::Metrics;
pub use owner::ClusterLink;
pub use ratelimit::RateLimit;
pub use tokens::{IssuedToken, Tokens};

/// The dashboard page, served at `/` (vanilla JS, no build step).
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The default largest GitHub webhook delivery, in bytes (5 MiB).
///
/// GitHub caps deliveries at 25 MB, but the events Courier reads are far smaller: a
/// `pull_request` delivery is tens of kilobytes (a PR body is at most 65 536
/// characters). Only events Courier ignores (a `push` of many commits) come near the cap;
/// refusing those with 413 costs nothing and keeps a forged sender from making the server
/// buffer 25 MB per request before the signature is checked.
pub const DEFAULT_WEBHOOK_BODY_LIMIT: usize = 5 * 1024 * 1024;

/// Tunables of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub body_limit: usize,
    /// Sandbox creations allowed per user.
    pub create_rate: RateLimit,
    /// Interval of SSE keep-alive comments (default 15 s).
    pub keep_alive: Duration,
    /// GitHub webhook deliveries; `None` (the default): `POST /v1/github/webhook` answers
    /// 503 naming the setting.
    pub github_webhook: Option<GitHubWebhook>,
    /// Largest GitHub webhook delivery accepted, in bytes (default
    /// [`DEFAULT_WEBHOOK_BODY_LIMIT`]); `body_limit` does not apply to that route.
    pub webhook_body_limit: usize,
    /// As a replica of a cluster: requests that change a sandbox go to the replica that
    /// follows it (`None`, the default: this server follows every sandbox).
    pub cluster: Option<ClusterLink>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: 1024 * 1024,
            create_rate: RateLimit::default(),
            keep_alive: Duration::from_secs(15),
            github_webhook: None,
            webhook_body_limit: DEFAULT_WEBHOOK_BODY_LIMIT,
            cluster: None,
        }
    }
}

/// What `POST /v1/github/webhook` needs: the secret set on the hook in GitHub, against
/// which every delivery's `X-Hub-Signature-256` is checked, and the pipeline that marks
/// merged pull requests on their sandboxes.
///
/// `Debug` shows the secret only as `****abcd` (see [`Secret`]).
#[derive(Debug, Clone)]
pub struct GitHubWebhook {
    /// The hook's secret (`COURIER_GITHUB_WEBHOOK_SECRET` for `courier serve`).
    pub secret: Secret,
    /// Records verified deliveries ([`PrPipeline::record_webhook`]).
    pub pipeline: PrPipeline,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) vault: KeyVault,
    pub(crate) orchestrator: Orchestrator,
    pub(crate) workflows: Workflows,
    pub(crate) tokens: Tokens,
    pub(crate) config: ApiConfig,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: ratelimit::Limiter,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// The API's shared state. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Api {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// An API over a store, the key vault, the orchestrator and the token table; its
    /// workflow runs, chains and issue sessions run on a [`Workflows`] over the same
    /// orchestrator (see [`Api::with_workflows`] to share one).
    pub fn new(
        store: Arc<dyn Store>,
        vault: KeyVault,
        orchestrator: Orchestrator,
        tokens: Tokens,
        config: ApiConfig,
    ) -> Self {
        let workflows = Workflows::new(orchestrator.clone());
        Self::with_workflows(store, vault, orchestrator, workflows, tokens, config)
    }

    /// An API whose workflow routes drive `workflows` (built over `orchestrator`).
    pub fn with_workflows(
        store: Arc<dyn Store>,
        vault: KeyVault,
        orchestrator: Orchestrator,
        workflows: Workflows,
        tokens: Tokens,
        config: ApiConfig,
    ) -> Self {
        let limiter = ratelimit::Limiter::new(config.create_rate);
        Api {
            inner: Arc::new(Inner {
                store,
                vault,
                orchestrator,
                workflows,
                tokens,
                config,
                metrics: Metrics::default(),
                limiter,
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// The axum router: `/v1/…` (with `/v1/github/webhook`), `/healthz`, `/readyz`,
    /// `/metrics`, `/openapi.json`, `/`.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// The workflow engine behind the persona, run, chain and issue-session routes (call
    /// [`Workflows::resume`] on it at startup, after the orchestrator's reconcile).
    pub fn workflows(&self) -> &Workflows {
        &self.inner.workflows
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Starts shutting down: `/readyz` answers 503 and every open event stream ends after
    /// a final `shutdown` event (clients resume elsewhere with `Last-Event-ID`; every
    /// event is in the store already, so none is lost). Call it before awaiting axum's
    /// graceful shutdown, which otherwise waits for the streams forever.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }
}
