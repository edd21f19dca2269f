//! Opening a pull request for a finished sandbox's branch (see the [pr docs](super)).

use std::time::Duration;

use courier_e2b::CommandSpec;
use courier_e2b::models::SandboxRecord;
use courier_store::{GitInfo, MessageRole, MessageStatus, PrStatus, Provider, Sandbox, SandboxId};
use courier_tools::Secret;

use super::PrPipeline;
use super::git::{git_state_command, parse_git_state, push_command};
use super::github::{NewPullRequest, PullRequest};
use super::remote::{RepoSlug, is_github_remote, redact_credentials, redact_url};
use crate::keys::KeyVault;
use crate::{OrchestratorError, Result};

/// Longest pull request title; GitHub shows about this much in lists.
pub(super) const TITLE_MAX_CHARS: usize = 72;

/// Extra time beyond the push timeout before the orchestrator itself gives up, in case the
/// provider does not enforce the command timeout.
const PUSH_GRACE: Duration = Duration::from_secs(5);

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
    /// No pull request was needed or possible (`skipped`, the reason stored as the PR
    /// error): a default branch, no repository, no remote, or a remote not on GitHub
    /// (whose branch was pushed all the same).
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

impl PrPipeline {
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
        self.open_against(sandbox_id, record, token, None).await
    }

    /// Like [`open`](Self::open), with the pull request's base branch chosen by the
    /// caller (a work chain stacks each issue's branch on the previous one); `None` is
    /// the remote's default branch.
    pub async fn open_against(
        &self,
        sandbox_id: SandboxId,
        record: &SandboxRecord,
        token: Option<&Secret>,
        base: Option<&str>,
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
        if !is_github_remote(&remote, &self.config.api_base) {
            // The work is still delivered; only the pull request needs GitHub.
            return match self.push(record, &branch).await {
                Ok(()) => {
                    let reason = format!(
                        "the remote {} is not on GitHub: branch {branch} was pushed, no pull request opened",
                        redact_url(&remote)
                    );
                    self.skip(sandbox_id, git, &reason).await
                }
                Err(err) => self.fail(sandbox_id, git, err).await,
            };
        }
        git.pr_status = Some(PrStatus::Creating);
        self.store
            .update_sandbox_git(sandbox_id, git.clone())
            .await?;

        let base = base
            .map(str::to_owned)
            .or(state.default_branch)
            .unwrap_or_else(|| "main".to_owned());
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
            Err(err) => self.fail(sandbox_id, git, err).await,
        }
    }

    async fn fail(
        &self,
        sandbox_id: SandboxId,
        mut git: GitInfo,
        err: OrchestratorError,
    ) -> Result<PrOutcome> {
        let reason = err.to_string();
        git.pr_status = Some(PrStatus::Failed);
        git.pr_error = Some(reason.clone());
        self.store.update_sandbox_git(sandbox_id, git).await?;
        tracing::warn!(sandbox = %sandbox_id, %reason, "pull request failed");
        Ok(PrOutcome::Failed { reason })
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
        git.pr_error = Some(reason.to_owned());
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
}

/// The GitHub key for a sandbox's pull requests: its project's, else its user's.
pub async fn github_token(vault: &KeyVault, sandbox: &Sandbox) -> Result<Option<Secret>> {
    Ok(vault
        .resolve(sandbox.user_id, sandbox.project_id, Provider::GitHub)
        .await?
        .map(|k| k.secret))
}
