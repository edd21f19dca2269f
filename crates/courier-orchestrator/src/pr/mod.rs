//! Pull requests: a finished sandbox's branch becomes a GitHub pull request.
//!
//! [`PrPipeline::open`] reads the remote URL and current branch of the project inside the
//! sandbox, skips `main`/`master`, pushes the branch (cut off by a timeout), then creates
//! the pull request through the GitHub API with a title and body drawn from the task and
//! the agent's final summary. The sandbox's PR status moves `creating` → `created` (with
//! URL and number) or `failed`. A remote that is not on GitHub (nor on the configured
//! GitHub Enterprise host) still gets the push, then ends `skipped` with the reason in
//! `pr_error`; a merge is found later by [`PrPipeline::poll_merged`] or
//! by a webhook delivery checked with [`handle_webhook`] and applied by
//! [`PrPipeline::record_webhook`]. [`PrPipeline::poll_open_pull_requests`] polls every
//! sandbox whose PR is open, and [`PrPipeline::spawn_merge_poller`] runs that periodically
//! for deployments that receive no webhooks.
//!
//! GitHub is reached only through the [`GitHubApi`] trait: [`OctocrabGitHub`] is the real
//! client, `MockGitHubApi` (feature `mocks`) stands in for it in tests. The pipeline's
//! decisions (skip, adopt an already open PR, record a failure) live here, not in the
//! client.
//!
//! Nothing here rewrites history or deletes refs: whatever fails, the branch and its
//! commits stay in the sandbox's repository.
//!
//! ## Where each part lives
//!
//! - `remote`: a remote URL read as `owner/repo`, and credentials removed from URLs and
//!   from git's messages.
//! - `git`: the git commands run in the sandbox (state, push) and their output read.
//! - `github`: the [`GitHubApi`] seam and its real client.
//! - `pipeline`: [`PrPipeline::open`]: skip, push, create or adopt, record.
//! - `merge`: following open pull requests to `merged` by polling.
//! - `webhook`: GitHub's signed deliveries verified, read and applied.

mod git;
mod github;
mod merge;
mod pipeline;
mod remote;
mod webhook;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use courier_e2b::SandboxApi;
use courier_store::Store;
use courier_tools::PROJECT_DIR;

use crate::keys::KeyVault;

pub use git::{GitState, git_state_command, parse_git_state, push_command};
#[cfg(any(test, feature = "mocks"))]
pub use github::MockGitHubApi;
pub use github::{GitHubApi, NewPullRequest, OctocrabGitHub, PullRequest, github_client};
pub use merge::MergePollReport;
pub use pipeline::{PrOutcome, github_token, pr_text};
pub use remote::{RepoSlug, is_github_remote, redact_credentials, redact_url, remote_host};
pub use webhook::{WebhookEvent, handle_webhook, verify_signature};

/// GitHub's public API; GitHub Enterprise uses `https://HOST/api/v3`.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// How long a push may take before it is cut off.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one GitHub API request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the pull request pipeline reaches git and GitHub.
#[derive(Debug, Clone)]
pub struct PrConfig {
    /// GitHub API base URL ([`DEFAULT_GITHUB_API`], GitHub Enterprise's `/api/v3`, or a
    /// test stand-in).
    pub api_base: String,
    /// The repository inside the sandbox.
    pub project_dir: String,
    /// How long a push may run before it is cut off.
    pub push_timeout: Duration,
    /// How long one GitHub API request may take.
    pub request_timeout: Duration,
}

impl Default for PrConfig {
    fn default() -> Self {
        PrConfig {
            api_base: DEFAULT_GITHUB_API.to_owned(),
            project_dir: PROJECT_DIR.to_owned(),
            push_timeout: DEFAULT_PUSH_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Opens pull requests for finished sandboxes and follows them to `merged`.
#[derive(Clone)]
pub struct PrPipeline {
    store: Arc<dyn Store>,
    api: Arc<dyn SandboxApi>,
    config: PrConfig,
    github: Arc<dyn GitHubApi>,
    vault: Option<KeyVault>,
}

impl fmt::Debug for PrPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrPipeline")
            .field("config", &self.config)
            .field("key_vault", &self.vault.is_some())
            .finish_non_exhaustive()
    }
}

impl PrPipeline {
    /// A pipeline over the store and the sandbox provider, reaching GitHub with
    /// [`OctocrabGitHub`] at `config.api_base`.
    pub fn new(store: Arc<dyn Store>, api: Arc<dyn SandboxApi>, config: PrConfig) -> Self {
        let github = Arc::new(OctocrabGitHub::new(
            config.api_base.clone(),
            config.request_timeout,
        ));
        PrPipeline {
            store,
            api,
            config,
            github,
            vault: None,
        }
    }

    /// Reaches GitHub through `github` instead (a mock in tests).
    pub fn with_github(mut self, github: Arc<dyn GitHubApi>) -> Self {
        self.github = github;
        self
    }

    /// Reads sandboxes' GitHub keys from `vault` for [merge
    /// polling](Self::poll_open_pull_requests). The lifecycle's `Orchestrator`, given this
    /// pipeline, hands it its own vault when none was set.
    pub fn with_key_vault(mut self, vault: KeyVault) -> Self {
        self.vault = Some(vault);
        self
    }

    /// Whether a key vault is set.
    pub fn has_key_vault(&self) -> bool {
        self.vault.is_some()
    }

    /// Its configuration.
    pub fn config(&self) -> &PrConfig {
        &self.config
    }
}
