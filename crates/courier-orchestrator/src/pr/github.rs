//! GitHub: the [`GitHubApi`] requests the pipeline makes, and [`OctocrabGitHub`], the real
//! client.

use std::time::Duration;

use async_trait::async_trait;
use courier_tools::Secret;
use octocrab::Octocrab;

use super::remote::RepoSlug;
use crate::{OrchestratorError, Result};

/// Builds a GitHub client for `api_base` authenticating with `token`.
pub fn github_client(api_base: &str, token: &Secret, timeout: Duration) -> Result<Octocrab> {
    Octocrab::builder()
        .personal_token(token.expose().to_owned())
        .base_uri(api_base)
        .map_err(|e| OrchestratorError::GitHub {
            status: None,
            message: format!("invalid API base URL {api_base}: {e}"),
        })?
        .set_connect_timeout(Some(timeout))
        .set_read_timeout(Some(timeout))
        .set_write_timeout(Some(timeout))
        .build()
        .map_err(github_error)
}

/// GitHub's answer as an error a caller can read: status, message and the validation
/// errors' own messages (e.g. "A pull request already exists for acme:branch.").
fn github_error(err: octocrab::Error) -> OrchestratorError {
    match err {
        octocrab::Error::GitHub { source, .. } => {
            let mut message = source.message.clone();
            for e in source.errors.iter().flatten() {
                let detail = e
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.to_string());
                message.push_str(": ");
                message.push_str(&detail);
            }
            OrchestratorError::GitHub {
                status: Some(source.status_code.as_u16()),
                message,
            }
        }
        other => OrchestratorError::GitHub {
            status: None,
            message: other.to_string(),
        },
    }
}

/// A pull request, reduced to what Courier records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Its number in the repository.
    pub number: u64,
    /// Its web URL (the API URL when GitHub gave none).
    pub url: String,
    /// Whether it was merged.
    pub merged: bool,
}

impl From<octocrab::models::pulls::PullRequest> for PullRequest {
    fn from(pr: octocrab::models::pulls::PullRequest) -> Self {
        PullRequest {
            number: pr.number,
            merged: pr.merged == Some(true) || pr.merged_at.is_some(),
            url: pr.html_url.map(|u| u.to_string()).unwrap_or(pr.url),
        }
    }
}

/// What a new pull request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPullRequest {
    /// The title.
    pub title: String,
    /// The branch with the work.
    pub head: String,
    /// The branch it should be merged into.
    pub base: String,
    /// The description (Markdown).
    pub body: String,
}

/// The GitHub requests the pipeline makes. Each call carries its token: sandboxes of
/// different projects use different keys.
///
/// Implementations answer GitHub's refusals with [`OrchestratorError::GitHub`] carrying
/// the HTTP status and GitHub's message (a pull request that already exists is a 422 whose
/// message says "already exists"), and a request that takes too long with a `GitHub`
/// error without status. They never put the token in an error or a log.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait GitHubApi: Send + Sync {
    /// Opens a pull request in `repo`.
    async fn create_pull_request(
        &self,
        token: &Secret,
        repo: &RepoSlug,
        new: &NewPullRequest,
    ) -> Result<PullRequest>;

    /// The open pull request whose head is `head_branch` of the repository's owner, if
    /// any.
    async fn find_open_pull_request(
        &self,
        token: &Secret,
        repo: &RepoSlug,
        head_branch: &str,
    ) -> Result<Option<PullRequest>>;

    /// A pull request by number, with its merged state.
    async fn get_pull_request(
        &self,
        token: &Secret,
        repo: &RepoSlug,
        number: u64,
    ) -> Result<PullRequest>;
}

/// The real [`GitHubApi`]: octocrab against GitHub, GitHub Enterprise (`/api/v3`) or a
/// stand-in, each request cut off after a timeout.
#[derive(Debug, Clone)]
pub struct OctocrabGitHub {
    api_base: String,
    timeout: Duration,
}

impl OctocrabGitHub {
    /// A client for `api_base` whose requests give up after `timeout`.
    pub fn new(api_base: impl Into<String>, timeout: Duration) -> Self {
        OctocrabGitHub {
            api_base: api_base.into(),
            timeout,
        }
    }

    fn client(&self, token: &Secret) -> Result<Octocrab> {
        github_client(&self.api_base, token, self.timeout)
    }

    /// Runs one request under the timeout: octocrab's own timeouts are per connection
    /// phase, not for the whole request.
    async fn timed<T>(&self, request: impl Future<Output = octocrab::Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(answer) => answer.map_err(github_error),
            Err(_) => Err(OrchestratorError::GitHub {
                status: None,
                message: format!("no answer within {} s", self.timeout.as_secs()),
            }),
        }
    }
}

#[async_trait]
impl GitHubApi for OctocrabGitHub {
    async fn create_pull_request(
        &self,
        token: &Secret,
        repo: &RepoSlug,
        new: &NewPullRequest,
    ) -> Result<PullRequest> {
        let client = self.client(token)?;
        let pulls = client.pulls(&repo.owner, &repo.repo);
        let request = pulls
            .create(new.title.clone(), new.head.clone(), new.base.clone())
            .body(new.body.clone())
            .send();
        Ok(self.timed(request).await?.into())
    }

    async fn find_open_pull_request(
        &self,
        token: &Secret,
        repo: &RepoSlug,
        head_branch: &str,
    ) -> Result<Option<PullRequest>> {
        let client = self.client(token)?;
        let pulls = client.pulls(&repo.owner, &repo.repo);
        let request = pulls
            .list()
            .state(octocrab::params::State::Open)
            .head(format!("{}:{head_branch}", repo.owner))
            .send();
        Ok(self
            .timed(request)
            .await?
            .items
            .into_iter()
            .next()
            .map(Into::into))
    }

    async fn get_pull_request(
        &self,
        token: &Secret,
        repo: &RepoSlug,
        number: u64,
    ) -> Result<PullRequest> {
        let client = self.client(token)?;
        let pulls = client.pulls(&repo.owner, &repo.repo);
        Ok(self.timed(pulls.get(number)).await?.into())
    }
}
