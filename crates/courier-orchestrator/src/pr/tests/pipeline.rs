//! Opening a pull request: its text, and the pipeline's decisions against a mocked GitHub.

use courier_store::{PrStatus, SandboxId};

use super::world::{TOKEN, World, pull, sandbox_on};
use crate::OrchestratorError;
use crate::pr::pipeline::TITLE_MAX_CHARS;
use crate::pr::{MockGitHubApi, PrOutcome, pr_text};

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

#[tokio::test]
async fn a_default_branch_is_skipped_without_any_github_call() {
    let w = World::new().await;
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
    let w = World::new().await;
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
    let w = World::new().await;
    let mut github = MockGitHubApi::new();
    github
        .expect_create_pull_request()
        .times(1)
        .returning(|_, _, _| {
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
    let w = World::new().await;
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
