//! Remote URLs: `owner/repo` read from a git remote, and credentials removed from URLs
//! and from the messages that quote them.

use std::fmt;

use crate::{OrchestratorError, Result};

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

/// The host a remote URL names, lower-cased and without user or port: `https://HOST/…`,
/// `ssh://git@HOST:22/…` or the scp form `git@HOST:…`. `None` for a local path or a
/// `file://` URL.
///
/// ```
/// use courier_orchestrator::pr::remote_host;
/// assert_eq!(remote_host("https://tok@GitLab.com:443/a/b.git").as_deref(), Some("gitlab.com"));
/// assert_eq!(remote_host("git@github.com:a/b.git").as_deref(), Some("github.com"));
/// assert_eq!(remote_host("/srv/git/b.git"), None);
/// ```
pub fn remote_host(url: &str) -> Option<String> {
    let url = url.trim();
    let authority = if let Some((_, rest)) = url.split_once("://") {
        rest.split('/').next().unwrap_or_default()
    } else {
        match url.split_once(':') {
            Some((host, path)) if !host.contains('/') && !path.starts_with("//") => host,
            _ => return None,
        }
    };
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether pull requests for `remote` can be opened through the GitHub API at `api_base`:
/// the remote is on github.com, or on the API's own host (GitHub Enterprise's
/// `https://HOST/api/v3`, or `api.HOST`).
pub fn is_github_remote(remote: &str, api_base: &str) -> bool {
    let Some(host) = remote_host(remote) else {
        return false;
    };
    if matches!(
        host.as_str(),
        "github.com" | "www.github.com" | "ssh.github.com"
    ) {
        return true;
    }
    remote_host(api_base)
        .is_some_and(|api| api == host || api.strip_prefix("api.").is_some_and(|bare| bare == host))
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
