//! Following open pull requests to `merged` by polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use courier_e2b::MockSandboxApi;
use courier_store::{KeyOwner, PrStatus, Provider, SandboxId};
use courier_tools::Secret;

use super::world::{TOKEN, World, pull};
use crate::OrchestratorError;
use crate::pr::{MockGitHubApi, RepoSlug};

#[tokio::test]
async fn a_merged_pull_request_is_recorded_when_polled() {
    let w = World::new().await;
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
    let w = World::new().await;
    let vault = w
        .vault_with(
            KeyOwner::User(w.user.id),
            Provider::GitHub,
            "ghp_user_key_0001",
        )
        .await;
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
    let w = World::new().await;
    let pipeline = w.pipeline(MockSandboxApi::new(), MockGitHubApi::new());
    assert!(matches!(
        pipeline.poll_open_pull_requests().await,
        Err(OrchestratorError::GitHub { status: None, .. })
    ));
}

#[tokio::test]
async fn the_merge_poller_sweeps_in_the_background() {
    let w = World::new().await;
    let vault = w
        .vault_with(KeyOwner::Project(w.project.id), Provider::GitHub, TOKEN)
        .await;
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
