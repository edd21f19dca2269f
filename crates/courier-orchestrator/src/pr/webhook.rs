//! GitHub webhook deliveries: the signature verified before anything is read, the payload
//! reduced to what Courier acts on, a merge recorded.

use courier_store::{DeletedFilter, GitInfo, PageRequest, PrStatus, SandboxFilter, SandboxId};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::PrPipeline;
use super::remote::RepoSlug;
use crate::{Result, WebhookRejection};

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
    if secret.is_empty() {
        return Err(WebhookRejection::NoSecret.into());
    }
    let signature = signature.ok_or(WebhookRejection::MissingSignature)?;
    let hex_digest = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookRejection::NotSha256)?;
    let expected = hex::decode(hex_digest).map_err(|_| WebhookRejection::NotHex)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookRejection::UnusableSecret)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookRejection::Mismatch.into())
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
    let event = event.ok_or(WebhookRejection::MissingEvent)?;
    match event {
        "ping" => Ok(WebhookEvent::Ping),
        "pull_request" => {
            let payload: PullRequestPayload =
                serde_json::from_slice(body).map_err(WebhookRejection::UnreadablePayload)?;
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

impl PrPipeline {
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
