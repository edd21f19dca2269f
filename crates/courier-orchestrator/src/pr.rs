//! Pull requests: a finished sandbox's branch becomes a GitHub pull request.
//!
//! [`PrPipeline::open`] reads the remote URL and current branch of the project inside the
//! sandbox, skips `main`/`master`, pushes the branch (cut off by a timeout), then creates
//! the pull request through the GitHub API with a title and body drawn from the task and
//! the agent's final summary. The sandbox's PR status moves `creating` → `created` (with
//! URL and number) or `failed`; a merge is found later by [`PrPipeline::poll_merged`] or
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_e2b::models::SandboxRecord;
use courier_e2b::{CommandSpec, SandboxApi};
use courier_store::{
    DeletedFilter, GitInfo, MessageRole, MessageStatus, PageRequest, PrStatus, Provider, Sandbox,
    SandboxFilter, SandboxId, Store,
};
use courier_tools::{PROJECT_DIR, Secret, shell_quote};
use hmac::{Hmac, Mac};
use octocrab::Octocrab;
use serde::Deserialize;
use sha2::Sha256;
use tokio::task::JoinHandle;

use crate::keys::KeyVault;
use crate::{OrchestratorError, Result};

/// GitHub's public API; GitHub Enterprise uses `https://HOST/api/v3`.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// How long a push may take before it is cut off.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one GitHub API request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pull request title; GitHub shows about this much in lists.
const TITLE_MAX_CHARS: usize = 72;
/// Extra time beyond the push timeout before the orchestrator itself gives up, in case the
/// provider does not enforce the command timeout.
const PUSH_GRACE: Duration = Duration::from_secs(5);

/// A GitHub repository, `owner/repo`, as named by a git remote URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoSlug {
    /// The user or organisation.
    pub owner: String,
    /// The repository name, without `.git`.
    pub repo: String,
}

impl fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)
    }
}

impl RepoSlug {
    /// Reads `owner/repo` from a GitHub (or GitHub Enterprise) remote URL: `https://HOST/o/r(.git)`
    /// (credentials allowed and ignored), `ssh://git@HOST(:port)/o/r(.git)` or the scp form
    /// `git@HOST:o/r(.git)`.
    ///
    /// ```
    /// use courier_orchestrator::pr::RepoSlug;
    /// let slug = RepoSlug::parse_remote("git@github.com:acme/engine.git").unwrap();
    /// assert_eq!(slug.to_string(), "acme/engine");
    /// assert!(RepoSlug::parse_remote("/srv/git/engine.git").is_err());
    /// ```
    pub fn parse_remote(url: &str) -> Result<RepoSlug> {
        let url = url.trim();
        let fail = |message: &str| OrchestratorError::RemoteUrl {
            url: redact_url(url),
            message: message.to_owned(),
        };
        if url.is_empty() {
            return Err(fail("the remote URL is empty"));
        }
        let path = if let Some((scheme, rest)) = url.split_once("://") {
            if !matches!(scheme, "https" | "http" | "ssh" | "git") {
                return Err(fail(&format!(
                    "unsupported scheme `{scheme}` (use https or ssh)"
                )));
            }
            let (authority, path) = rest
                .split_once('/')
                .ok_or_else(|| fail("no path after the host"))?;
            let host = authority.rsplit('@').next().unwrap_or_default();
            if host.is_empty() {
                return Err(fail("no host"));
            }
            path
        } else if let Some((host, path)) = url.split_once(':')
            && !host.contains('/')
            && !path.starts_with("//")
        {
            // scp-like syntax: [user@]host:owner/repo
            let host = host.rsplit('@').next().unwrap_or_default();
            if host.is_empty() {
                return Err(fail("no host"));
            }
            path
        } else {
            return Err(fail("not a URL (a local path cannot have pull requests)"));
        };
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(owner), Some(repo), None) if valid_name(owner) && valid_name(repo) => {
                Ok(RepoSlug {
                    owner: owner.to_owned(),
                    repo: repo.to_owned(),
                })
            }
            _ => Err(fail("expected the path `owner/repo`")),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The URL with any `user:password@` removed, safe to show and store: clone URLs may
/// carry a token. Nothing else of it changes (the one redaction the API and the pipeline
/// share).
///
/// ```
/// use courier_orchestrator::pr::redact_url;
/// assert_eq!(redact_url("https://x:ghp_1@github.com/a/b.git"), "https://github.com/a/b.git");
/// assert_eq!(redact_url("https://tok@ghe.internal"), "https://ghe.internal");
/// ```
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

/// `text` with the credentials of every URL in it removed: git's error messages quote
/// remote URLs, and those may carry a token.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '\'' | '"' | '>'))
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

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

/// What git says about the project inside the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitState {
    /// `remote.origin.url`, if any.
    pub remote_url: Option<String>,
    /// The checked-out branch (`None` when detached or not a repository).
    pub branch: Option<String>,
    /// The remote's default branch as cloned (`origin/HEAD`), if known.
    pub default_branch: Option<String>,
}

/// The shell line that prints [`GitState`] as `key=value` lines (read by
/// [`parse_git_state`]). It never fails: missing values print empty.
pub fn git_state_command(project_dir: &str) -> String {
    format!(
        "cd {} 2>/dev/null && printf 'remote=%s\\nbranch=%s\\nbase=%s\\n' \
         \"$(git config --get remote.origin.url)\" \
         \"$(git rev-parse --abbrev-ref HEAD 2>/dev/null)\" \
         \"$(git symbolic-ref --quiet --short refs/remotes/origin/HEAD 2>/dev/null)\"",
        shell_quote(project_dir)
    )
}

/// Reads the output of [`git_state_command`].
pub fn parse_git_state(stdout: &str) -> GitState {
    let mut state = GitState::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key {
            "remote" => state.remote_url = Some(value.to_owned()),
            // `HEAD` is what rev-parse prints on a detached head: no branch to push.
            "branch" if value != "HEAD" => state.branch = Some(value.to_owned()),
            "base" => {
                let base = value.strip_prefix("origin/").unwrap_or(value);
                state.default_branch = Some(base.to_owned());
            }
            _ => {}
        }
    }
    state
}

/// The shell line that pushes the branch's commits to `origin`. Never forced, never
/// prompting for credentials (a prompt would hang until the timeout).
pub fn push_command(project_dir: &str, branch: &str) -> String {
    format!(
        "cd {} && GIT_TERMINAL_PROMPT=0 git push --porcelain origin {}",
        shell_quote(project_dir),
        shell_quote(&format!("HEAD:refs/heads/{branch}"))
    )
}

/// A pull request's title and body from the task prompt and the agent's final summary.
///
/// The title is the prompt's first line, cut to 72 characters; the body quotes the whole
/// task and the summary.
pub fn pr_text(prompt: &str, summary: Option<&str>, sandbox_id: SandboxId) -> (String, String) {
    let first = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("Work from Courier");
    let title = if first.chars().count() > TITLE_MAX_CHARS {
        let cut: String = first.chars().take(TITLE_MAX_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        first.to_owned()
    };
    let mut body = format!("## Task\n\n{}\n", prompt.trim());
    if let Some(summary) = summary.map(str::trim).filter(|s| !s.is_empty()) {
        body.push_str(&format!("\n## Summary\n\n{summary}\n"));
    }
    body.push_str(&format!(
        "\n---\nOpened by Courier from sandbox `{sandbox_id}`.\n"
    ));
    (title, body)
}

/// How [`PrPipeline::open`] ended. Each outcome is also the sandbox's stored PR status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrOutcome {
    /// No pull request was needed (`skipped`): a default branch, no repository or no
    /// remote.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The pull request exists (`created`).
    Created {
        /// Its number.
        number: u64,
        /// Its web URL.
        url: String,
    },
    /// The push or the GitHub request failed (`failed`); the branch stays committed in
    /// the sandbox.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

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

/// What one [`PrPipeline::poll_open_pull_requests`] sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergePollReport {
    /// Sandboxes whose pull request was open and was asked about.
    pub checked: usize,
    /// Those now recorded as `merged`.
    pub merged: Vec<SandboxId>,
    /// Those that could not be checked, with why (no token, GitHub or store errors). They
    /// are asked about again on the next sweep.
    pub failed: Vec<(SandboxId, String)>,
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
    /// polling](Self::poll_open_pull_requests). An
    /// [`Orchestrator`](crate::lifecycle::Orchestrator) given this pipeline hands it its
    /// own vault when none was set.
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

    /// Turns the sandbox's branch into a pull request (see the module docs).
    ///
    /// Push and GitHub failures are not errors: they end as [`PrOutcome::Failed`] with the
    /// PR status `failed`. Errors are a sandbox that cannot be reached (nothing recorded)
    /// or a store that cannot record the outcome.
    pub async fn open(
        &self,
        sandbox_id: SandboxId,
        record: &SandboxRecord,
        token: Option<&Secret>,
    ) -> Result<PrOutcome> {
        let sandbox = self.store.get_sandbox(sandbox_id).await?;
        let detect = CommandSpec::new(git_state_command(&self.config.project_dir));
        let output = self.api.run(record, detect).await?;
        let state = parse_git_state(&output.stdout);
        let mut git = sandbox.git.clone();

        let (remote, branch) = match (state.remote_url, state.branch) {
            (None, _) => {
                return self
                    .skip(sandbox_id, git, "no git remote in the sandbox")
                    .await;
            }
            (_, None) => {
                return self
                    .skip(sandbox_id, git, "no branch checked out in the sandbox")
                    .await;
            }
            (_, Some(b)) if b == "main" || b == "master" => {
                let reason = format!("branch {b} is a default branch");
                return self.skip(sandbox_id, git, &reason).await;
            }
            (Some(remote), Some(branch)) => (remote, branch),
        };
        git.repo_url = Some(redact_url(&remote));
        git.branch = Some(branch.clone());
        git.pr_status = Some(PrStatus::Creating);
        self.store
            .update_sandbox_git(sandbox_id, git.clone())
            .await?;

        let base = state.default_branch.unwrap_or_else(|| "main".to_owned());
        let created = async {
            let slug = RepoSlug::parse_remote(&remote)?;
            let token = token.ok_or_else(|| OrchestratorError::GitHub {
                status: None,
                message: "no GitHub token: add a GitHub key in the project settings or in your user settings".into(),
            })?;
            self.push(record, &branch).await?;
            let summary = self.final_summary(sandbox_id).await?;
            let (title, body) = pr_text(&sandbox.prompt, summary.as_deref(), sandbox_id);
            let new = NewPullRequest {
                title,
                head: branch.clone(),
                base,
                body,
            };
            let pr = match self.github.create_pull_request(token, &slug, &new).await {
                Ok(pr) => pr,
                // A later sandbox on the same branch (a work chain) finds its PR already
                // open: that PR is the one to record.
                Err(err) => match self.existing_pull(token, &slug, &branch, &err).await {
                    Some(pr) => pr,
                    None => return Err(err),
                },
            };
            Ok::<_, OrchestratorError>((pr.number, pr.url))
        }
        .await;

        match created {
            Ok((number, url)) => {
                git.pr_number = Some(number as i64);
                git.pr_url = Some(url.clone());
                git.pr_status = Some(PrStatus::Created);
                git.pr_error = None;
                self.store.update_sandbox_git(sandbox_id, git).await?;
                tracing::info!(sandbox = %sandbox_id, %url, "pull request created");
                Ok(PrOutcome::Created { number, url })
            }
            // Every failure, a store read included, ends in `failed`: never stuck in
            // `creating`.
            Err(err) => {
                let reason = err.to_string();
                git.pr_status = Some(PrStatus::Failed);
                git.pr_error = Some(reason.clone());
                self.store.update_sandbox_git(sandbox_id, git).await?;
                tracing::warn!(sandbox = %sandbox_id, %reason, "pull request failed");
                Ok(PrOutcome::Failed { reason })
            }
        }
    }

    /// The open pull request of `branch`, when creating one failed because it exists.
    async fn existing_pull(
        &self,
        token: &Secret,
        slug: &RepoSlug,
        branch: &str,
        err: &OrchestratorError,
    ) -> Option<PullRequest> {
        let OrchestratorError::GitHub {
            status: Some(422),
            message,
        } = err
        else {
            return None;
        };
        if !message.contains("already exists") {
            return None;
        }
        match self
            .github
            .find_open_pull_request(token, slug, branch)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the existing pull request");
                None
            }
        }
    }

    async fn skip(
        &self,
        sandbox_id: SandboxId,
        mut git: GitInfo,
        reason: &str,
    ) -> Result<PrOutcome> {
        git.pr_status = Some(PrStatus::Skipped);
        self.store.update_sandbox_git(sandbox_id, git).await?;
        tracing::info!(sandbox = %sandbox_id, %reason, "no pull request");
        Ok(PrOutcome::Skipped {
            reason: reason.to_owned(),
        })
    }

    /// Pushes the branch, cut off after the push timeout. A failed or hung push leaves
    /// the local branch and its commits as they were.
    async fn push(&self, record: &SandboxRecord, branch: &str) -> Result<()> {
        let limit = self.config.push_timeout;
        let spec = CommandSpec::new(push_command(&self.config.project_dir, branch)).timeout(limit);
        let timed_out = || OrchestratorError::Git {
            action: "push",
            message: format!("timed out after {} s", limit.as_secs_f32()),
        };
        let output =
            match tokio::time::timeout(limit + PUSH_GRACE, self.api.run(record, spec)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(courier_e2b::Error::Timeout { .. })) => return Err(timed_out()),
                Ok(Err(e)) => {
                    return Err(OrchestratorError::Git {
                        action: "push",
                        message: redact_credentials(&e.to_string()),
                    });
                }
                Ok(Ok(output)) => output,
            };
        if output.exit_code != 0 {
            // The provider reports a killed command with a signal exit; say it timed out.
            if output.exit_code < 0 || output.exit_code == 124 || output.exit_code == 137 {
                return Err(timed_out());
            }
            let detail = if output.stderr.trim().is_empty() {
                output.stdout.trim().to_owned()
            } else {
                output.stderr.trim().to_owned()
            };
            return Err(OrchestratorError::Git {
                action: "push",
                message: redact_credentials(&detail),
            });
        }
        Ok(())
    }

    /// The last completed assistant message: the agent's own account of what it did.
    async fn final_summary(&self, sandbox_id: SandboxId) -> Result<Option<String>> {
        let mut after = 0;
        let mut last = None;
        loop {
            let page = self.store.list_messages(sandbox_id, after, 200).await?;
            let Some(tail) = page.last() else {
                return Ok(last);
            };
            after = tail.seq;
            if let Some(m) = page.iter().rev().find(|m| {
                m.role == MessageRole::Assistant
                    && m.status == MessageStatus::Completed
                    && !m.content.trim().is_empty()
            }) {
                last = Some(m.content.clone());
            }
        }
    }

    /// Asks GitHub whether the sandbox's pull request was merged; records `merged` when it
    /// was. Returns the PR status afterwards (`None` when the sandbox has no PR).
    pub async fn poll_merged(
        &self,
        sandbox_id: SandboxId,
        token: &Secret,
    ) -> Result<Option<PrStatus>> {
        let sandbox = self.store.get_sandbox(sandbox_id).await?;
        self.poll_sandbox(sandbox, token).await
    }

    async fn poll_sandbox(&self, sandbox: Sandbox, token: &Secret) -> Result<Option<PrStatus>> {
        let mut git = sandbox.git;
        let (Some(PrStatus::Created), Some(number), Some(remote)) =
            (git.pr_status, git.pr_number, git.repo_url.as_deref())
        else {
            return Ok(git.pr_status);
        };
        let slug = RepoSlug::parse_remote(remote)?;
        let pr = self
            .github
            .get_pull_request(token, &slug, number as u64)
            .await?;
        if pr.merged {
            git.pr_status = Some(PrStatus::Merged);
            self.store.update_sandbox_git(sandbox.id, git).await?;
            return Ok(Some(PrStatus::Merged));
        }
        Ok(Some(PrStatus::Created))
    }

    /// Polls every sandbox whose pull request is open (`created`), soft-deleted ones
    /// included, with the GitHub key PR creation uses (the project's, else its user's),
    /// and records the merged ones.
    ///
    /// One sandbox's failure (no key, GitHub refusing, a bad remote) never stops the
    /// sweep: it is listed in [`MergePollReport::failed`]. Errors are a store that cannot
    /// list sandboxes, or no key vault (see [`with_key_vault`](Self::with_key_vault)).
    pub async fn poll_open_pull_requests(&self) -> Result<MergePollReport> {
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| OrchestratorError::GitHub {
                status: None,
                message: "merge polling needs a key vault to read GitHub keys".into(),
            })?;
        let filter = SandboxFilter {
            deleted: DeletedFilter::Include,
            ..Default::default()
        };
        let mut report = MergePollReport::default();
        let mut page = PageRequest::first(courier_store::MAX_PAGE_LIMIT);
        loop {
            let result = self.store.list_sandboxes(filter.clone(), page).await?;
            for sandbox in result.items {
                if sandbox.git.pr_status != Some(PrStatus::Created) {
                    continue;
                }
                let id = sandbox.id;
                report.checked += 1;
                match self.poll_with_key(vault, sandbox).await {
                    Ok(Some(PrStatus::Merged)) => report.merged.push(id),
                    Ok(_) => {}
                    Err(e) => report.failed.push((id, e.to_string())),
                }
            }
            match result.next_cursor {
                Some(cursor) => page = PageRequest::after(courier_store::MAX_PAGE_LIMIT, cursor),
                None => return Ok(report),
            }
        }
    }

    async fn poll_with_key(&self, vault: &KeyVault, sandbox: Sandbox) -> Result<Option<PrStatus>> {
        let token = github_token(vault, &sandbox)
            .await?
            .ok_or_else(|| OrchestratorError::GitHub {
                status: None,
                message: "no GitHub token: add a GitHub key in the project settings or in your user settings".into(),
            })?;
        self.poll_sandbox(sandbox, &token).await
    }

    /// Runs [`poll_open_pull_requests`](Self::poll_open_pull_requests) every `interval`
    /// (the first sweep at once) until the task is aborted, logging each sweep's report
    /// (sandbox ids and errors, never a key).
    pub fn spawn_merge_poller(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            // A slow sweep delays the next one rather than triggering a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.poll_open_pull_requests().await {
                    Ok(report) if report.checked == 0 => {}
                    Ok(report) => {
                        if !report.failed.is_empty() {
                            tracing::warn!(failed = ?report.failed, "merge poll: some pull requests could not be checked");
                        }
                        tracing::info!(
                            checked = report.checked,
                            merged = ?report.merged,
                            failed = report.failed.len(),
                            "merge poll"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "merge poll failed"),
                }
            }
        })
    }

    /// Applies a verified webhook event: a merged pull request marks every sandbox whose
    /// PR URL it is as `merged`. Returns those sandboxes.
    pub async fn record_webhook(&self, event: &WebhookEvent) -> Result<Vec<SandboxId>> {
        let WebhookEvent::PullRequestMerged { url, .. } = event else {
            return Ok(Vec::new());
        };
        let filter = SandboxFilter {
            deleted: DeletedFilter::Include,
            ..Default::default()
        };
        let mut page = PageRequest::first(courier_store::MAX_PAGE_LIMIT);
        let mut marked = Vec::new();
        loop {
            let result = self.store.list_sandboxes(filter.clone(), page).await?;
            for sandbox in result.items {
                if sandbox.git.pr_url.as_deref() == Some(url.as_str())
                    && sandbox.git.pr_status != Some(PrStatus::Merged)
                {
                    let git = GitInfo {
                        pr_status: Some(PrStatus::Merged),
                        ..sandbox.git
                    };
                    self.store.update_sandbox_git(sandbox.id, git).await?;
                    marked.push(sandbox.id);
                }
            }
            match result.next_cursor {
                Some(cursor) => page = PageRequest::after(courier_store::MAX_PAGE_LIMIT, cursor),
                None => return Ok(marked),
            }
        }
    }
}

/// The GitHub key for a sandbox's pull requests: its project's, else its user's.
pub async fn github_token(vault: &KeyVault, sandbox: &Sandbox) -> Result<Option<Secret>> {
    Ok(vault
        .resolve(sandbox.user_id, sandbox.project_id, Provider::GitHub)
        .await?
        .map(|k| k.secret))
}

/// A verified GitHub webhook delivery, reduced to what Courier acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// GitHub's `ping` when a hook is set up.
    Ping,
    /// A pull request was closed by merging.
    PullRequestMerged {
        /// The repository.
        repo: RepoSlug,
        /// The pull request number.
        number: u64,
        /// Its web URL (what Courier stored at creation).
        url: String,
    },
    /// Anything else (other events, other actions, closed without merging).
    Ignored {
        /// The `X-GitHub-Event` value.
        event: String,
    },
}

/// Checks GitHub's `X-Hub-Signature-256` header (`sha256=` + hex HMAC-SHA256 of the raw
/// body under the hook's secret), in constant time.
///
/// ```
/// use courier_orchestrator::pr::verify_signature;
/// let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// verify_signature(b"It's a Secret to Everybody", Some(sig), b"Hello, World!").unwrap();
/// assert!(verify_signature(b"wrong", Some(sig), b"Hello, World!").is_err());
/// ```
pub fn verify_signature(secret: &[u8], signature: Option<&str>, body: &[u8]) -> Result<()> {
    let reject = |m: &str| OrchestratorError::Webhook(m.to_owned());
    if secret.is_empty() {
        return Err(reject("no webhook secret is configured"));
    }
    let signature = signature.ok_or_else(|| reject("missing X-Hub-Signature-256 header"))?;
    let hex_digest = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| reject("X-Hub-Signature-256 must start with sha256="))?;
    let expected = hex::decode(hex_digest).map_err(|_| reject("X-Hub-Signature-256 is not hex"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).map_err(|_| reject("unusable webhook secret"))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| reject("signature does not match the payload"))
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    pull_request: PullRequestBody,
    repository: RepositoryBody,
}

#[derive(Deserialize)]
struct PullRequestBody {
    number: u64,
    html_url: String,
    #[serde(default)]
    merged: Option<bool>,
}

#[derive(Deserialize)]
struct RepositoryBody {
    name: String,
    owner: OwnerBody,
}

#[derive(Deserialize)]
struct OwnerBody {
    login: String,
}

/// Verifies a webhook delivery and reads it: what the HTTP API calls with the
/// `X-GitHub-Event` and `X-Hub-Signature-256` headers and the raw body. Nothing is read
/// before the signature checks out.
pub fn handle_webhook(
    secret: &[u8],
    event: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<WebhookEvent> {
    verify_signature(secret, signature, body)?;
    let event =
        event.ok_or_else(|| OrchestratorError::Webhook("missing X-GitHub-Event header".into()))?;
    match event {
        "ping" => Ok(WebhookEvent::Ping),
        "pull_request" => {
            let payload: PullRequestPayload = serde_json::from_slice(body).map_err(|e| {
                OrchestratorError::Webhook(format!("unreadable pull_request payload: {e}"))
            })?;
            if payload.action == "closed" && payload.pull_request.merged == Some(true) {
                Ok(WebhookEvent::PullRequestMerged {
                    repo: RepoSlug {
                        owner: payload.repository.owner.login,
                        repo: payload.repository.name,
                    },
                    number: payload.pull_request.number,
                    url: payload.pull_request.html_url,
                })
            } else {
                Ok(WebhookEvent::Ignored {
                    event: event.to_owned(),
                })
            }
        }
        other => Ok(WebhookEvent::Ignored {
            event: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_in_every_github_form_name_owner_and_repo() {
        for url in [
            "https://github.com/acme/engine.git",
            "https://github.com/acme/engine",
            "https://github.com/acme/engine/",
            "https://x-access-token:ghs_abc@github.com/acme/engine.git",
            "http://ghe.internal/acme/engine.git",
            "git@github.com:acme/engine.git",
            "github.com:acme/engine",
            "ssh://git@github.com/acme/engine.git",
            "ssh://git@ghe.internal:2222/acme/engine.git",
        ] {
            let slug = RepoSlug::parse_remote(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(slug.to_string(), "acme/engine", "{url}");
        }
    }

    #[test]
    fn remotes_that_name_no_repository_say_why_and_hide_tokens() {
        let cases = [
            ("", "empty"),
            ("/srv/git/engine.git", "local path"),
            ("file:///srv/git/engine.git", "unsupported scheme"),
            ("https://github.com/acme", "owner/repo"),
            ("https://github.com/acme/engine/tree/main", "owner/repo"),
            ("git@github.com:engine.git", "owner/repo"),
        ];
        for (url, says) in cases {
            let err = RepoSlug::parse_remote(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
        let err = RepoSlug::parse_remote("https://user:ghp_secret123@github.com/acme")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ghp_secret123"), "{err}");
    }

    #[test]
    fn git_state_reads_remote_branch_and_default_branch() {
        let state = parse_git_state(
            "remote=git@github.com:acme/engine.git\nbranch=courier/1\nbase=origin/main\n",
        );
        assert_eq!(
            state,
            GitState {
                remote_url: Some("git@github.com:acme/engine.git".into()),
                branch: Some("courier/1".into()),
                default_branch: Some("main".into()),
            }
        );
        assert_eq!(parse_git_state(""), GitState::default());
        assert_eq!(
            parse_git_state("remote=\nbranch=HEAD\nbase=\n"),
            GitState::default()
        );
    }

    #[test]
    fn title_is_the_prompts_first_line_and_body_carries_task_and_summary() {
        let id = SandboxId::new();
        let (title, body) = pr_text(
            "\nFix the login\nIt fails on Safari.",
            Some("Fixed the cookie."),
            id,
        );
        assert_eq!(title, "Fix the login");
        assert!(body.contains("It fails on Safari."));
        assert!(body.contains("## Summary\n\nFixed the cookie."));
        assert!(body.contains(&id.to_string()));
        let (title, body) = pr_text(&"x".repeat(200), None, id);
        assert_eq!(title.chars().count(), TITLE_MAX_CHARS);
        assert!(title.ends_with('…'));
        assert!(!body.contains("Summary"));
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn webhook_signatures_are_checked_before_anything_is_read() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let good = sign(b"s3cret", body);
        assert_eq!(
            handle_webhook(b"s3cret", Some("ping"), Some(&good), body).unwrap(),
            WebhookEvent::Ping
        );
        for (sig, says) in [
            (None, "missing"),
            (Some("sha1=abcd"), "sha256="),
            (Some("sha256=zz"), "hex"),
            (Some(sign(b"other", body).as_str()), "does not match"),
        ] {
            let err = handle_webhook(b"s3cret", Some("ping"), sig, body)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{sig:?}: {err}");
        }
        let tampered = br#"{"zen":"Keep it logically awesome!"}"#;
        assert!(handle_webhook(b"s3cret", Some("ping"), Some(&good), tampered).is_err());
        assert!(verify_signature(b"", Some(&good), body).is_err());
    }

    #[test]
    fn urls_lose_their_credentials_and_nothing_else() {
        assert_eq!(
            redact_url("https://x-access-token:ghp_secret@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b@c"),
            "https://github.com/a/b@c"
        );
        assert_eq!(redact_url("git@github.com:a/b"), "git@github.com:a/b");
        // No path: none is added.
        assert_eq!(redact_url("https://u:p@host"), "https://host");
        assert_eq!(redact_url("https://host"), "https://host");
    }

    #[test]
    fn credentials_in_git_messages_are_removed() {
        let stderr = "fatal: unable to access 'https://x-access-token:ghs_SECRET@github.com/acme/engine.git/': 403\n\
                      remote: see https://github.com/acme/engine and ssh://git@ghe.internal/acme/e.git";
        let clean = redact_credentials(stderr);
        assert!(
            !clean.contains("ghs_SECRET") && !clean.contains("x-access-token"),
            "{clean}"
        );
        assert!(
            clean.contains("'https://github.com/acme/engine.git/': 403"),
            "{clean}"
        );
        assert!(clean.contains("ssh://ghe.internal/acme/e.git"), "{clean}");
        assert_eq!(redact_credentials("no urls here"), "no urls here");
    }

    #[test]
    fn push_command_never_forces() {
        let cmd = push_command("/home/user/project", "courier/ab");
        assert!(cmd.contains("HEAD:refs/heads/courier/ab"), "{cmd}");
        assert!(!cmd.contains("--force") && !cmd.contains(" -f"), "{cmd}");
    }

    /// The pipeline's decisions against mocks: a sandbox provider whose repository is on
    /// `branch`, an in-memory store, and a GitHub that expects exactly what each test says.
    mod mocked {
        use std::collections::HashMap;
        use std::sync::Arc;

        use courier_e2b::{CommandOutput, MockSandboxApi};
        use courier_store::{KeyOwner, Project, Sandbox, SqliteStore, User};

        use super::super::*;
        use crate::keys::MasterKey;

        const TOKEN: &str = "ghp_mocktoken000000000000000000000000abcd";
        const REMOTE: &str = "https://x-access-token:ghs_clone@github.com/acme/engine.git";

        fn record() -> SandboxRecord {
            serde_json::from_str(
                r#"{"templateID":"claude","sandboxID":"sbx1","clientID":"c","envdVersion":"0.6.13"}"#,
            )
            .unwrap()
        }

        fn output(stdout: String) -> CommandOutput {
            CommandOutput {
                stdout,
                stderr: String::new(),
                exit_code: 0,
                error: None,
            }
        }

        /// A sandbox whose repository has `branch` checked out; pushes succeed.
        fn sandbox_on(branch: &str, pushes: usize) -> MockSandboxApi {
            let mut api = MockSandboxApi::new();
            let state = format!("remote={REMOTE}\nbranch={branch}\nbase=origin/main\n");
            api.expect_run()
                .withf(|_, spec| spec.cmd.contains("git config --get remote.origin.url"))
                .times(1)
                .returning(move |_, _| Ok(output(state.clone())));
            api.expect_run()
                .withf(|_, spec| spec.cmd.contains("git push"))
                .times(pushes)
                .returning(|_, _| Ok(output(String::new())));
            api
        }

        struct World {
            store: Arc<dyn Store>,
            user: User,
            project: Project,
            sandbox: Sandbox,
        }

        async fn world() -> World {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
            let (user, project, sandbox) = crate::testing::seed(store.as_ref()).await;
            World {
                store,
                user,
                project,
                sandbox,
            }
        }

        impl World {
            fn pipeline(&self, api: MockSandboxApi, github: MockGitHubApi) -> PrPipeline {
                PrPipeline::new(self.store.clone(), Arc::new(api), PrConfig::default())
                    .with_github(Arc::new(github))
            }

            async fn open(&self, pipeline: &PrPipeline) -> PrOutcome {
                pipeline
                    .open(self.sandbox.id, &record(), Some(&Secret::new(TOKEN)))
                    .await
                    .unwrap()
            }

            async fn git(&self, id: SandboxId) -> GitInfo {
                self.store.get_sandbox(id).await.unwrap().git
            }

            /// A sandbox of `project` (the seeded one when `None`) whose PR `number` is
            /// open.
            async fn with_open_pr(&self, project: Option<&Project>, number: i64) -> SandboxId {
                let project = project.unwrap_or(&self.project);
                let sandbox = self
                    .store
                    .create_sandbox(courier_store::NewSandbox {
                        user_id: project.user_id,
                        project_id: project.id,
                        config: Default::default(),
                        cli_tool: "claude".into(),
                        model: None,
                        prompt: "fix it".into(),
                        links: Default::default(),
                        repo_url: None,
                        branch: None,
                    })
                    .await
                    .unwrap();
                self.store
                    .update_sandbox_git(
                        sandbox.id,
                        GitInfo {
                            repo_url: Some("https://github.com/acme/engine.git".into()),
                            branch: Some(format!("courier/{number}")),
                            pr_url: Some(format!("https://github.com/acme/engine/pull/{number}")),
                            pr_number: Some(number),
                            pr_status: Some(PrStatus::Created),
                            pr_error: None,
                        },
                    )
                    .await
                    .unwrap();
                sandbox.id
            }
        }

        fn pull(number: u64, merged: bool) -> PullRequest {
            PullRequest {
                number,
                url: format!("https://github.com/acme/engine/pull/{number}"),
                merged,
            }
        }

        #[tokio::test]
        async fn a_default_branch_is_skipped_without_any_github_call() {
            let w = world().await;
            let mut github = MockGitHubApi::new();
            github.expect_create_pull_request().times(0);
            github.expect_find_open_pull_request().times(0);
            let pipeline = w.pipeline(sandbox_on("main", 0), github);
            assert!(
                matches!(w.open(&pipeline).await, PrOutcome::Skipped { reason } if reason.contains("main"))
            );
            assert_eq!(w.git(w.sandbox.id).await.pr_status, Some(PrStatus::Skipped));
        }

        #[tokio::test]
        async fn a_created_pull_request_is_stored_with_its_number_and_url() {
            let w = world().await;
            let mut github = MockGitHubApi::new();
            github
                .expect_create_pull_request()
                .withf(|token, repo, new| {
                    token.expose() == TOKEN
                        && repo.to_string() == "acme/engine"
                        && new.head == "courier/login"
                        && new.base == "main"
                        && new.title == "fix the login"
                })
                .times(1)
                .returning(|_, _, _| Ok(pull(42, false)));
            let pipeline = w.pipeline(sandbox_on("courier/login", 1), github);
            assert_eq!(
                w.open(&pipeline).await,
                PrOutcome::Created {
                    number: 42,
                    url: "https://github.com/acme/engine/pull/42".into()
                }
            );
            let git = w.git(w.sandbox.id).await;
            assert_eq!(git.pr_status, Some(PrStatus::Created));
            assert_eq!(git.pr_number, Some(42));
            assert_eq!(
                git.pr_url.as_deref(),
                Some("https://github.com/acme/engine/pull/42")
            );
            assert_eq!(
                git.repo_url.as_deref(),
                Some("https://github.com/acme/engine.git"),
                "the clone token is not stored"
            );
        }

        #[tokio::test]
        async fn an_already_existing_pull_request_of_the_branch_is_adopted() {
            let w = world().await;
            let mut github = MockGitHubApi::new();
            github.expect_create_pull_request().times(1).returning(|_, _, _| {
                Err(OrchestratorError::GitHub {
                    status: Some(422),
                    message: "Validation Failed: A pull request already exists for acme:courier/login."
                        .into(),
                })
            });
            github
                .expect_find_open_pull_request()
                .withf(|token, repo, head| {
                    token.expose() == TOKEN && repo.owner == "acme" && head == "courier/login"
                })
                .times(1)
                .returning(|_, _, _| Ok(Some(pull(17, false))));
            let pipeline = w.pipeline(sandbox_on("courier/login", 1), github);
            assert!(matches!(
                w.open(&pipeline).await,
                PrOutcome::Created { number: 17, .. }
            ));
            let git = w.git(w.sandbox.id).await;
            assert_eq!(
                (git.pr_status, git.pr_number),
                (Some(PrStatus::Created), Some(17))
            );
        }

        #[tokio::test]
        async fn bad_credentials_fail_with_githubs_reason_and_no_adoption_attempt() {
            let w = world().await;
            let mut github = MockGitHubApi::new();
            github
                .expect_create_pull_request()
                .times(1)
                .returning(|_, _, _| {
                    Err(OrchestratorError::GitHub {
                        status: Some(401),
                        message: "Bad credentials".into(),
                    })
                });
            github.expect_find_open_pull_request().times(0);
            let pipeline = w.pipeline(sandbox_on("courier/login", 1), github);
            let PrOutcome::Failed { reason } = w.open(&pipeline).await else {
                panic!("expected a failure");
            };
            assert!(
                reason.contains("401") && reason.contains("Bad credentials"),
                "{reason}"
            );
            let git = w.git(w.sandbox.id).await;
            assert_eq!(git.pr_status, Some(PrStatus::Failed));
            assert_eq!(git.pr_error.as_deref(), Some(reason.as_str()));
        }

        #[tokio::test]
        async fn a_merged_pull_request_is_recorded_when_polled() {
            let w = world().await;
            let id = w.with_open_pr(None, 9).await;
            let mut github = MockGitHubApi::new();
            github
                .expect_get_pull_request()
                .withf(|token, repo, number| {
                    token.expose() == TOKEN && repo.repo == "engine" && *number == 9
                })
                .times(1)
                .returning(|_, _, n| Ok(pull(n, true)));
            let pipeline = w.pipeline(MockSandboxApi::new(), github);
            assert_eq!(
                pipeline.poll_merged(id, &Secret::new(TOKEN)).await.unwrap(),
                Some(PrStatus::Merged)
            );
            assert_eq!(w.git(id).await.pr_status, Some(PrStatus::Merged));
        }

        #[tokio::test]
        async fn polling_uses_each_sandboxs_key_and_survives_one_failure() {
            let w = world().await;
            let vault = KeyVault::new(MasterKey::generate(), w.store.clone());
            vault
                .put(
                    KeyOwner::User(w.user.id),
                    Provider::GitHub,
                    "ghp_user_key_0001",
                )
                .save()
                .await
                .unwrap();
            vault
                .put(
                    KeyOwner::Project(w.project.id),
                    Provider::GitHub,
                    "ghp_project_key_0002",
                )
                .save()
                .await
                .unwrap();
            // A second project of the same user, without a key of its own.
            let other = w
                .store
                .create_project(courier_store::NewProject {
                    user_id: w.user.id,
                    name: "other".into(),
                })
                .await
                .unwrap();
            // A project of a user without any GitHub key.
            let keyless_user = w
                .store
                .create_user(courier_store::NewUser {
                    email: "grace@example.com".into(),
                    name: "Grace".into(),
                })
                .await
                .unwrap();
            let keyless = w
                .store
                .create_project(courier_store::NewProject {
                    user_id: keyless_user.id,
                    name: "keyless".into(),
                })
                .await
                .unwrap();
            let merged = w.with_open_pr(None, 1).await;
            let open = w.with_open_pr(Some(&other), 2).await;
            let broken = w.with_open_pr(None, 3).await;
            let no_key = w.with_open_pr(Some(&keyless), 4).await;
            let deleted = w.with_open_pr(None, 5).await;
            w.store.soft_delete_sandbox(deleted).await.unwrap();
            // The seeded sandbox has no pull request: never asked about.

            let mut github = MockGitHubApi::new();
            let key = |n: u64, k: &'static str| {
                move |t: &Secret, _: &RepoSlug, number: &u64| *number == n && t.expose() == k
            };
            github
                .expect_get_pull_request()
                .withf(key(1, "ghp_project_key_0002"))
                .times(1)
                .returning(|_, _, n| Ok(pull(n, true)));
            github
                .expect_get_pull_request()
                .withf(key(2, "ghp_user_key_0001"))
                .times(1)
                .returning(|_, _, n| Ok(pull(n, false)));
            github
                .expect_get_pull_request()
                .withf(key(3, "ghp_project_key_0002"))
                .times(1)
                .returning(|_, _, _| {
                    Err(OrchestratorError::GitHub {
                        status: Some(502),
                        message: "Server Error".into(),
                    })
                });
            github
                .expect_get_pull_request()
                .withf(key(5, "ghp_project_key_0002"))
                .times(1)
                .returning(|_, _, n| Ok(pull(n, true)));
            let pipeline = w
                .pipeline(MockSandboxApi::new(), github)
                .with_key_vault(vault);

            let mut report = pipeline.poll_open_pull_requests().await.unwrap();
            report.merged.sort();
            let mut expected = vec![merged, deleted];
            expected.sort();
            assert_eq!(report.checked, 5);
            assert_eq!(report.merged, expected);
            let failed: HashMap<SandboxId, String> = report.failed.into_iter().collect();
            assert_eq!(failed.len(), 2, "{failed:?}");
            assert!(failed[&broken].contains("502"), "{failed:?}");
            assert!(failed[&no_key].contains("no GitHub token"), "{failed:?}");
            assert_eq!(w.git(merged).await.pr_status, Some(PrStatus::Merged));
            assert_eq!(w.git(deleted).await.pr_status, Some(PrStatus::Merged));
            for id in [open, broken, no_key] {
                assert_eq!(w.git(id).await.pr_status, Some(PrStatus::Created));
            }
        }

        #[tokio::test]
        async fn polling_without_a_key_vault_is_an_error() {
            let w = world().await;
            let pipeline = w.pipeline(MockSandboxApi::new(), MockGitHubApi::new());
            assert!(matches!(
                pipeline.poll_open_pull_requests().await,
                Err(OrchestratorError::GitHub { status: None, .. })
            ));
        }

        #[tokio::test]
        async fn the_merge_poller_sweeps_in_the_background() {
            let w = world().await;
            let vault = KeyVault::new(MasterKey::generate(), w.store.clone());
            vault
                .put(KeyOwner::Project(w.project.id), Provider::GitHub, TOKEN)
                .save()
                .await
                .unwrap();
            let id = w.with_open_pr(None, 8).await;
            let mut github = MockGitHubApi::new();
            github
                .expect_get_pull_request()
                .returning(|_, _, n| Ok(pull(n, true)));
            let pipeline = Arc::new(
                w.pipeline(MockSandboxApi::new(), github)
                    .with_key_vault(vault),
            );
            // The first sweep runs at once; the next would be an hour later.
            let poller = pipeline.spawn_merge_poller(Duration::from_secs(3600));
            let mut status = None;
            for _ in 0..500 {
                status = w.git(id).await.pr_status;
                if status == Some(PrStatus::Merged) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            poller.abort();
            assert_eq!(status, Some(PrStatus::Merged));
        }
    }
}
