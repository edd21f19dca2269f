//! Remote URLs read as `owner/repo`; credentials removed from URLs and messages.

use crate::pr::{RepoSlug, is_github_remote, redact_credentials, redact_url, remote_host};

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
fn github_remotes_are_told_from_other_hosts() {
    let public = "https://api.github.com";
    for url in [
        "https://github.com/acme/engine.git",
        "https://x-access-token:ghs_abc@GitHub.com/acme/engine.git",
        "git@github.com:acme/engine.git",
        "ssh://git@ssh.github.com:443/acme/engine.git",
    ] {
        assert!(is_github_remote(url, public), "{url}");
    }
    for url in [
        "https://gitlab.com/acme/engine.git",
        "git@bitbucket.org:acme/engine.git",
        "https://github.com.evil.example/acme/engine.git",
        "/srv/git/engine.git",
        "file:///srv/git/engine.git",
        "",
    ] {
        assert!(!is_github_remote(url, public), "{url}");
    }
    // GitHub Enterprise: the API's host (or the host behind `api.`) is GitHub too.
    let ghe = "https://ghe.internal/api/v3";
    assert!(is_github_remote("ssh://git@ghe.internal:2222/a/b.git", ghe));
    assert!(is_github_remote(
        "git@ghe.internal:a/b.git",
        "https://api.ghe.internal"
    ));
    assert!(!is_github_remote("https://gitlab.internal/a/b.git", ghe));
    assert_eq!(
        remote_host("ssh://git@ghe.internal:2222/a/b.git").as_deref(),
        Some("ghe.internal")
    );
}
