//! Pull requests: a finished sandbox's branch becomes a GitHub pull request.
//!
//! [`PrPipeline::open`] reads the remote URL and current branch of the project inside the
//! sandbox, skips `main`/`master`, pushes the branch (cut off by a timeout), then creates
//! the pull request through the GitHub API with a title and body drawn from the task and
//! the agent's final summary. The sandbox's PR status moves `creating` → `created` (with
//! URL and number) or `failed`; a merge is found later by [`PrPipeline::poll_merged`] or
//! by a webhook delivery checked with [`handle_webhook`] and applied by
//! [`PrPipeline::record_webhook`].
//!
//! Nothing here rewrites history or deletes refs: whatever fails, the branch and its
//! commits stay in the sandbox's repository.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use courier_e2b::models::SandboxRecord;
use courier_e2b::{CommandSpec, SandboxApi};
use courier_store::{
    DeletedFilter, GitInfo, MessageRole, MessageStatus, PageRequest, PrStatus, SandboxFilter,
    SandboxId, Store,
};
use courier_tools::{PROJECT_DIR, Secret, shell_quote};
use hmac::{Hmac, Mac};
use octocrab::Octocrab;
use serde::Deserialize;
use sha2::Sha256;

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
/// carry a token.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}/{path}");
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

/// Opens pull requests for finished sandboxes and follows them to `merged`.
#[derive(Clone)]
pub struct PrPipeline {
    store: Arc<dyn Store>,
    api: Arc<dyn SandboxApi>,
    config: PrConfig,
}

impl fmt::Debug for PrPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrPipeline")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PrPipeline {
    /// A pipeline over the store and the sandbox provider.
    pub fn new(store: Arc<dyn Store>, api: Arc<dyn SandboxApi>, config: PrConfig) -> Self {
        PrPipeline { store, api, config }
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
            let client = github_client(&self.config.api_base, token, self.config.request_timeout)?;
            let pulls = client.pulls(&slug.owner, &slug.repo);
            let request = pulls
                .create(title, branch.clone(), base)
                .body(body)
                .send();
            let pr = match tokio::time::timeout(self.config.request_timeout, request).await {
                Err(_) => {
                    return Err(OrchestratorError::GitHub {
                        status: None,
                        message: format!(
                            "no answer within {} s",
                            self.config.request_timeout.as_secs()
                        ),
                    });
                }
                Ok(Ok(pr)) => pr,
                Ok(Err(err)) => {
                    let err = github_error(err);
                    // A later sandbox on the same branch (a work chain) finds its PR
                    // already open: that PR is the one to record.
                    match self.existing_pull(&client, &slug, &branch, &err).await {
                        Some(pr) => pr,
                        None => return Err(err),
                    }
                }
            };
            let url = pr
                .html_url
                .map(|u| u.to_string())
                .unwrap_or_else(|| pr.url.clone());
            Ok::<_, OrchestratorError>((pr.number, url))
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
        client: &Octocrab,
        slug: &RepoSlug,
        branch: &str,
        err: &OrchestratorError,
    ) -> Option<octocrab::models::pulls::PullRequest> {
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
        let pulls = client.pulls(&slug.owner, &slug.repo);
        let list = pulls
            .list()
            .state(octocrab::params::State::Open)
            .head(format!("{}:{branch}", slug.owner))
            .send();
        match tokio::time::timeout(self.config.request_timeout, list).await {
            Ok(Ok(page)) => page.items.into_iter().next(),
            Ok(Err(e)) => {
                tracing::warn!(error = %github_error(e), "could not look up the existing pull request");
                None
            }
            Err(_) => None,
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
        let mut git = sandbox.git;
        let (Some(PrStatus::Created), Some(number), Some(remote)) =
            (git.pr_status, git.pr_number, git.repo_url.as_deref())
        else {
            return Ok(git.pr_status);
        };
        let slug = RepoSlug::parse_remote(remote)?;
        let client = github_client(&self.config.api_base, token, self.config.request_timeout)?;
        let pr = client
            .pulls(&slug.owner, &slug.repo)
            .get(number as u64)
            .await
            .map_err(github_error)?;
        if pr.merged == Some(true) || pr.merged_at.is_some() {
            git.pr_status = Some(PrStatus::Merged);
            self.store.update_sandbox_git(sandbox_id, git).await?;
            return Ok(Some(PrStatus::Merged));
        }
        Ok(Some(PrStatus::Created))
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
}
