//! Records the tests start from, and the error shapes they expect.

use chrono::{DateTime, TimeZone, Utc};

use crate::*;

pub(super) async fn user(store: &dyn Store) -> User {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    store
        .create_user(NewUser {
            email: format!("{tag}@example.com"),
            name: format!("user {tag}"),
        })
        .await
        .expect("create user")
}

pub(super) async fn project(store: &dyn Store) -> Project {
    let user = user(store).await;
    store
        .create_project(NewProject {
            user_id: user.id,
            name: "engine".into(),
        })
        .await
        .expect("create project")
}

pub(super) fn new_sandbox(project: &Project, tool: &str) -> NewSandbox {
    NewSandbox {
        user_id: project.user_id,
        project_id: project.id,
        config: SandboxConfig::default(),
        cli_tool: tool.into(),
        model: Some("sonnet".into()),
        prompt: "fix the bug".into(),
        links: SandboxLinks::default(),
        repo_url: Some("https://example.invalid/repo.git".into()),
        branch: Some("courier/fix".into()),
    }
}

pub(super) async fn sandbox(store: &dyn Store, project: &Project) -> Sandbox {
    store
        .create_sandbox(new_sandbox(project, "claude"))
        .await
        .expect("create sandbox")
}

pub(super) async fn running_sandbox(store: &dyn Store, project: &Project) -> Sandbox {
    let s = sandbox(store, project).await;
    store
        .transition_sandbox(s.id, SandboxStatus::Creating, SandboxStatus::Running, None)
        .await
        .expect("creating → running")
}

pub(super) async fn active(store: &dyn Store, project: &Project) -> i64 {
    store
        .get_project(project.id)
        .await
        .expect("get project")
        .active_sandboxes
}

pub(super) fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0)
        .single()
        .expect("valid time")
}

pub(super) fn expect_not_found<T: std::fmt::Debug>(result: Result<T>, entity: &str) {
    match result {
        Err(StoreError::NotFound { entity: e, .. }) => assert!(e.contains(entity), "{e}"),
        other => panic!("expected {entity} not found, got {other:?}"),
    }
}

pub(super) fn expect_conflict<T: std::fmt::Debug>(result: Result<T>) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "expected conflict, got {result:?}"
    );
}

pub(super) fn expect_invalid<T: std::fmt::Debug>(result: Result<T>, field: &str) {
    match result {
        Err(StoreError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}
