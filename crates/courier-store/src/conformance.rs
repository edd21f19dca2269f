//! The conformance suite: what every [`Store`] backend must do, as plain async
//! functions taking `&dyn Store` (each panics on failure).
//!
//! A backend runs the whole suite with one macro call in an integration test, given an
//! async setup function returning a fresh, empty store (or `None` to skip). The test
//! crate needs `tokio` with the `macros` and `rt-multi-thread` features.
//!
//! ```no_run
//! async fn setup() -> Option<courier_store::conformance::Fixture> {
//!     let store = courier_store::SqliteStore::in_memory().await.unwrap();
//!     Some(courier_store::conformance::Fixture::new(std::sync::Arc::new(store)))
//! }
//! courier_store::conformance_tests!(setup);
//! # fn main() {}
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use futures::future::join_all;

use crate::*;

/// A store under test, and how to clean up after it.
pub struct Fixture {
    /// The fresh, empty store.
    pub store: Arc<dyn Store>,
    teardown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Fixture {
    /// A store that needs no cleanup.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Fixture {
            store,
            teardown: None,
        }
    }

    /// Runs `teardown` after a test passes (e.g. drop a Postgres schema). A failed test
    /// leaves its data for inspection.
    pub fn with_teardown(
        store: Arc<dyn Store>,
        teardown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Fixture {
            store,
            teardown: Some(Box::pin(teardown)),
        }
    }

    /// Drops the store and runs the teardown.
    pub async fn finish(self) {
        drop(self.store);
        if let Some(teardown) = self.teardown {
            teardown.await;
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance test, each calling `$setup().await`
/// for a fresh [`Fixture`] (`None` skips the test).
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            users_and_projects_round_trip,
            sandbox_round_trip,
            lifecycle_transitions_stamp_times_and_count_running,
            invalid_transition_names_both_states,
            stale_expected_status_is_a_conflict,
            racing_transitions_keep_the_counter_exact,
            sandbox_quotas_count_live_sandboxes_of_the_user_and_the_project,
            racing_creates_never_pass_the_quota,
            soft_delete_restore_and_purge_keep_the_counter_exact,
            list_filters_by_status_deleted_tool_project_and_user,
            pagination_is_stable_under_inserts,
            messages_append_and_replay_in_sequence_order,
            concurrent_messages_get_sequence_numbers_without_gaps,
            failed_transaction_leaves_nothing_behind,
            usage_totals_per_sandbox_project_and_day,
            cost_rates_apply_from_their_start,
            learning_versions_keep_one_active,
            learnings_and_their_version_are_recorded_together,
            provider_keys_at_user_and_project_level,
            template_builds_record_progress,
        );
    };
    (@each $setup:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fixture) = $setup().await else { return };
                $crate::conformance::$name(&*fixture.store).await;
                fixture.finish().await;
            }
        )+
    };
}

// ---- helpers ----

async fn user(store: &dyn Store) -> User {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    store
        .create_user(NewUser {
            email: format!("{tag}@example.com"),
            name: format!("user {tag}"),
        })
        .await
        .expect("create user")
}

async fn project(store: &dyn Store) -> Project {
    let user = user(store).await;
    store
        .create_project(NewProject {
            user_id: user.id,
            name: "engine".into(),
        })
        .await
        .expect("create project")
}

fn new_sandbox(project: &Project, tool: &str) -> NewSandbox {
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

async fn sandbox(store: &dyn Store, project: &Project) -> Sandbox {
    store
        .create_sandbox(new_sandbox(project, "claude"))
        .await
        .expect("create sandbox")
}

async fn running_sandbox(store: &dyn Store, project: &Project) -> Sandbox {
    let s = sandbox(store, project).await;
    store
        .transition_sandbox(s.id, SandboxStatus::Creating, SandboxStatus::Running, None)
        .await
        .expect("creating → running")
}

async fn active(store: &dyn Store, project: &Project) -> i64 {
    store
        .get_project(project.id)
        .await
        .expect("get project")
        .active_sandboxes
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0)
        .single()
        .expect("valid time")
}

fn expect_not_found<T: std::fmt::Debug>(result: Result<T>, entity: &str) {
    match result {
        Err(StoreError::NotFound { entity: e, .. }) => assert!(e.contains(entity), "{e}"),
        other => panic!("expected {entity} not found, got {other:?}"),
    }
}

fn expect_conflict<T: std::fmt::Debug>(result: Result<T>) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "expected conflict, got {result:?}"
    );
}

fn expect_invalid<T: std::fmt::Debug>(result: Result<T>, field: &str) {
    match result {
        Err(StoreError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

// ---- tests ----

/// Users and projects round-trip; duplicate e-mails conflict; unknown ids are not found.
pub async fn users_and_projects_round_trip(store: &dyn Store) {
    let u = user(store).await;
    assert_eq!(store.get_user(u.id).await.unwrap(), u);
    assert_eq!(store.get_user_by_email(&u.email).await.unwrap(), u);
    expect_conflict(
        store
            .create_user(NewUser {
                email: u.email.clone(),
                name: "again".into(),
            })
            .await,
    );
    expect_not_found(store.get_user(UserId::new()).await, "user");
    expect_not_found(store.get_user_by_email("nobody@example.com").await, "user");

    let p = store
        .create_project(NewProject {
            user_id: u.id,
            name: "p1".into(),
        })
        .await
        .unwrap();
    assert_eq!(p.active_sandboxes, 0);
    assert_eq!(store.get_project(p.id).await.unwrap(), p);
    let p2 = store
        .create_project(NewProject {
            user_id: u.id,
            name: "p2".into(),
        })
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list_projects(u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, vec![p.id, p2.id]);
    expect_not_found(
        store
            .create_project(NewProject {
                user_id: UserId::new(),
                name: "x".into(),
            })
            .await,
        "user",
    );
    expect_not_found(store.get_project(ProjectId::new()).await, "project");
}

/// Everything a sandbox holds comes back as stored; field updates apply.
pub async fn sandbox_round_trip(store: &dyn Store) {
    let p = project(store).await;
    let mut new = new_sandbox(&p, "codex");
    new.config
        .thinking_effort
        .insert("opus".into(), "high".into());
    new.config.cli_overrides.checker = Some("claude".into());
    new.links.run_id = Some("run-1".into());
    let s = store.create_sandbox(new.clone()).await.unwrap();
    assert_eq!(s.status, SandboxStatus::Creating);
    assert_eq!(s.learning_status, LearningStatus::Pending);
    assert_eq!((s.config.clone(), s.links.clone()), (new.config, new.links));
    assert_eq!(s.git.branch.as_deref(), Some("courier/fix"));
    assert!(s.started_at.is_none() && s.ended_at.is_none() && s.deleted_at.is_none());
    assert_eq!(store.get_sandbox(s.id).await.unwrap(), s);

    store
        .set_provider_sandbox_id(s.id, "e2b-123")
        .await
        .unwrap();
    let git = GitInfo {
        repo_url: Some("https://example.invalid/r.git".into()),
        branch: Some("feature".into()),
        pr_url: Some("https://example.invalid/r/pull/7".into()),
        pr_number: Some(7),
        pr_status: Some(PrStatus::Failed),
        pr_error: Some("push rejected: pre-receive hook declined".into()),
    };
    store.update_sandbox_git(s.id, git.clone()).await.unwrap();
    store
        .set_learning_status(s.id, LearningStatus::Error, Some("llm down".into()))
        .await
        .unwrap();
    let got = store.get_sandbox(s.id).await.unwrap();
    assert_eq!(got.provider_sandbox_id.as_deref(), Some("e2b-123"));
    assert_eq!(got.git, git);
    assert_eq!(got.learning_status, LearningStatus::Error);
    assert_eq!(got.learning_error.as_deref(), Some("llm down"));

    expect_not_found(store.get_sandbox(SandboxId::new()).await, "sandbox");
    expect_not_found(
        store.set_provider_sandbox_id(SandboxId::new(), "x").await,
        "sandbox",
    );
    let mut orphan = new_sandbox(&p, "claude");
    orphan.project_id = ProjectId::new();
    expect_not_found(store.create_sandbox(orphan).await, "project");
}

/// Each edge of the lifecycle moves the counter by entering or leaving `running`, and
/// stamps `started_at` once and `ended_at` on a final state.
pub async fn lifecycle_transitions_stamp_times_and_count_running(store: &dyn Store) {
    use SandboxStatus::*;
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let running = store
        .transition_sandbox(s.id, Creating, Running, None)
        .await
        .unwrap();
    assert_eq!(running.status, Running);
    let started = running.started_at.expect("started_at set");
    assert_eq!(active(store, &p).await, 1);
    store
        .transition_sandbox(s.id, Running, Paused, None)
        .await
        .unwrap();
    assert_eq!(active(store, &p).await, 0);
    let resumed = store
        .transition_sandbox(s.id, Paused, Running, None)
        .await
        .unwrap();
    assert_eq!(
        resumed.started_at,
        Some(started),
        "started_at keeps the first start"
    );
    assert_eq!(active(store, &p).await, 1);
    let failed = store
        .transition_sandbox(s.id, Running, Error, Some("agent crashed".into()))
        .await
        .unwrap();
    assert_eq!(failed.error_message.as_deref(), Some("agent crashed"));
    assert!(failed.ended_at.is_some());
    assert_eq!(active(store, &p).await, 0);
    assert_eq!(store.get_sandbox(s.id).await.unwrap(), failed);

    let k = sandbox(store, &p).await;
    let killed = store
        .transition_sandbox(k.id, Creating, Killed, None)
        .await
        .unwrap();
    assert!(killed.started_at.is_none() && killed.ended_at.is_some());
    assert_eq!(active(store, &p).await, 0);
}

/// A forbidden edge fails before touching the database, naming both states.
pub async fn invalid_transition_names_both_states(store: &dyn Store) {
    use SandboxStatus::*;
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let err = store
        .transition_sandbox(s.id, Creating, Paused, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: Creating,
                to: Paused
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("creating") && text.contains("paused"),
        "{text}"
    );
    for from in [Killed, Error] {
        let err = store
            .transition_sandbox(s.id, from, Running, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidTransition { to: Running, .. }),
            "{err:?}"
        );
    }
    assert_eq!(store.get_sandbox(s.id).await.unwrap().status, Creating);
}

/// A caller whose expected status is stale gets a conflict and changes nothing.
pub async fn stale_expected_status_is_a_conflict(store: &dyn Store) {
    use SandboxStatus::*;
    let p = project(store).await;
    let s = running_sandbox(store, &p).await;
    let err = store
        .transition_sandbox(s.id, Creating, Running, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("running")),
        "{err:?}"
    );
    expect_conflict(store.transition_sandbox(s.id, Paused, Killed, None).await);
    assert_eq!(active(store, &p).await, 1);
    expect_not_found(
        store
            .transition_sandbox(SandboxId::new(), Running, Killed, None)
            .await,
        "sandbox",
    );
}

/// Live sandboxes (`creating`, `running`, `paused`, hidden or not) count against the
/// user's and the project's quotas; ended ones (`killed`, `error`) free their place.
///
/// What an API-key holder tries: more concurrent sandboxes than their quota, spread over
/// projects, kept paused, or hidden with a soft delete. Each is refused.
pub async fn sandbox_quotas_count_live_sandboxes_of_the_user_and_the_project(store: &dyn Store) {
    use SandboxStatus::*;
    let p1 = project(store).await;
    let p2 = store
        .create_project(NewProject {
            user_id: p1.user_id,
            name: "second".into(),
        })
        .await
        .expect("second project");
    let quota = SandboxQuota {
        per_user: Some(3),
        per_project: Some(2),
    };
    let within = |p: &Project| store.create_sandbox_within(new_sandbox(p, "claude"), quota);
    let a = within(&p1).await.expect("first in p1");
    assert_eq!(a.status, Creating);
    let b = within(&p1).await.expect("second in p1");
    match within(&p1).await {
        Err(StoreError::QuotaExceeded {
            scope: QuotaScope::Project,
            limit: 2,
            in_use: 2,
        }) => {}
        other => panic!("expected the project's quota, got {other:?}"),
    }
    within(&p2).await.expect("third of the user, in p2");
    let err = within(&p2).await.expect_err("fourth of the user");
    assert!(
        matches!(
            err,
            StoreError::QuotaExceeded {
                scope: QuotaScope::User,
                limit: 3,
                in_use: 3
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("user's quota of 3"), "{err}");
    // Refusals recorded nothing.
    let listed = store
        .list_sandboxes(
            SandboxFilter {
                user_id: Some(p1.user_id),
                deleted: DeletedFilter::Include,
                ..Default::default()
            },
            PageRequest::first(50),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);

    // Paused still counts; hidden still counts; killed frees.
    store
        .transition_sandbox(a.id, Creating, Running, None)
        .await
        .unwrap();
    store
        .transition_sandbox(a.id, Running, Paused, None)
        .await
        .unwrap();
    store.soft_delete_sandbox(b.id).await.unwrap();
    assert!(
        within(&p1).await.is_err(),
        "paused and hidden sandboxes count"
    );
    store
        .transition_sandbox(a.id, Paused, Killed, None)
        .await
        .unwrap();
    let c = within(&p1).await.expect("a killed sandbox frees its place");
    store
        .transition_sandbox(c.id, Creating, Error, Some("failed".into()))
        .await
        .unwrap();
    within(&p1)
        .await
        .expect("an errored sandbox frees its place");

    // No quota: no limit; an unknown project is not found and records nothing.
    store
        .create_sandbox_within(new_sandbox(&p1, "claude"), SandboxQuota::default())
        .await
        .expect("unlimited");
    let mut stranger = new_sandbox(&p1, "claude");
    stranger.project_id = ProjectId::new();
    assert!(matches!(
        store
            .create_sandbox_within(stranger, quota)
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

/// Twenty creates racing against a quota of five: exactly five are recorded.
///
/// What an API-key holder tries: many concurrent creates, hoping several pass the count
/// before any is recorded.
pub async fn racing_creates_never_pass_the_quota(store: &dyn Store) {
    let p = project(store).await;
    let quota = SandboxQuota {
        per_user: Some(5),
        per_project: None,
    };
    let results =
        join_all((0..20).map(|_| store.create_sandbox_within(new_sandbox(&p, "claude"), quota)))
            .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    StoreError::QuotaExceeded {
                        scope: QuotaScope::User,
                        limit: 5,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
    let listed = store
        .list_sandboxes(
            SandboxFilter {
                project_id: Some(p.id),
                ..Default::default()
            },
            PageRequest::first(50),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 5);
}

/// 100 concurrent compare-and-sets: exactly one per sandbox wins, the counter is exact.
pub async fn racing_transitions_keep_the_counter_exact(store: &dyn Store) {
    use SandboxStatus::*;
    let p = project(store).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(sandbox(store, &p).await.id);
    }
    let start =
        join_all((0..100).map(|i| store.transition_sandbox(ids[i % 10], Creating, Running, None)))
            .await;
    let won = start.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 10, "one winner per sandbox");
    for r in &start {
        if let Err(e) = r {
            assert!(
                matches!(e, StoreError::Conflict(_)),
                "losers conflict: {e:?}"
            );
        }
    }
    assert_eq!(active(store, &p).await, 10);

    // Leaving `running` in two different ways at once: still one winner each.
    let stop = join_all((0..100).map(|i| {
        let to = if i % 2 == 0 { Paused } else { Killed };
        store.transition_sandbox(ids[i % 10], Running, to, None)
    }))
    .await;
    assert_eq!(stop.iter().filter(|r| r.is_ok()).count(), 10);
    assert_eq!(active(store, &p).await, 0);

    // Resume the paused ones while killing them: the counter matches what is running.
    let mixed = join_all((0..100).map(|i| {
        let to = if i % 3 == 0 { Killed } else { Running };
        store.transition_sandbox(ids[i % 10], Paused, to, None)
    }))
    .await;
    drop(mixed);
    let mut running = 0;
    for id in &ids {
        if store.get_sandbox(*id).await.unwrap().status == Running {
            running += 1;
        }
    }
    assert_eq!(active(store, &p).await, running);
}

/// Soft-deleted sandboxes don't count; restore counts them again; purge removes them.
pub async fn soft_delete_restore_and_purge_keep_the_counter_exact(store: &dyn Store) {
    use SandboxStatus::*;
    let p = project(store).await;
    let a = running_sandbox(store, &p).await;
    let b = running_sandbox(store, &p).await;
    assert_eq!(active(store, &p).await, 2);

    store.soft_delete_sandbox(a.id).await.unwrap();
    assert!(store.get_sandbox(a.id).await.unwrap().deleted_at.is_some());
    assert_eq!(active(store, &p).await, 1);
    expect_conflict(store.soft_delete_sandbox(a.id).await);
    // Transitions of a hidden sandbox don't move the counter.
    store
        .transition_sandbox(a.id, Running, Paused, None)
        .await
        .unwrap();
    store
        .transition_sandbox(a.id, Paused, Running, None)
        .await
        .unwrap();
    assert_eq!(active(store, &p).await, 1);

    store.restore_sandbox(a.id).await.unwrap();
    assert!(store.get_sandbox(a.id).await.unwrap().deleted_at.is_none());
    assert_eq!(active(store, &p).await, 2);
    expect_conflict(store.restore_sandbox(a.id).await);

    // Purging a counted sandbox uncounts it; its messages go, its usage stays.
    let m = store
        .create_message(NewMessage {
            sandbox_id: a.id,
            role: MessageRole::User,
            content: "hi".into(),
            status: MessageStatus::Completed,
        })
        .await
        .unwrap();
    let usage = NewUsage {
        sandbox_id: a.id,
        service: Service::E2b,
        metric: UsageMetric::ComputeSeconds,
        quantity: 60.0,
        cost: Money::from_micros(100),
        recorded_at: at(1, 0),
    };
    store.record_usage(&[usage]).await.unwrap();
    store.purge_sandbox(a.id).await.unwrap();
    assert_eq!(active(store, &p).await, 1);
    expect_not_found(store.get_sandbox(a.id).await, "sandbox");
    assert!(store.list_messages(a.id, 0, 10).await.unwrap().is_empty());
    expect_not_found(store.append_message_content(m.id, "x").await, "message");
    assert_eq!(
        store.usage_for_project(p.id).await.unwrap()[0].cost,
        Money::from_micros(100)
    );
    expect_not_found(store.purge_sandbox(a.id).await, "sandbox");

    // Purging a soft-deleted sandbox leaves the counter alone.
    store.soft_delete_sandbox(b.id).await.unwrap();
    assert_eq!(active(store, &p).await, 0);
    store.purge_sandbox(b.id).await.unwrap();
    assert_eq!(active(store, &p).await, 0);
    expect_not_found(store.soft_delete_sandbox(b.id).await, "sandbox");
    expect_not_found(store.restore_sandbox(b.id).await, "sandbox");
}

/// Every filter narrows the list; deleted rows show only when asked for.
pub async fn list_filters_by_status_deleted_tool_project_and_user(store: &dyn Store) {
    use SandboxStatus::*;
    let p1 = project(store).await;
    let p2 = project(store).await;
    let a = running_sandbox(store, &p1).await;
    let b = store
        .create_sandbox(new_sandbox(&p1, "codex"))
        .await
        .unwrap();
    let c = store
        .create_sandbox(new_sandbox(&p2, "codex"))
        .await
        .unwrap();
    store.soft_delete_sandbox(b.id).await.unwrap();

    let ids = |page: Page<Sandbox>| page.items.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let list = |filter: SandboxFilter| store.list_sandboxes(filter, PageRequest::first(50));

    assert_eq!(
        ids(list(SandboxFilter::default()).await.unwrap()),
        vec![c.id, a.id]
    );
    let f = SandboxFilter {
        deleted: DeletedFilter::Include,
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![c.id, b.id, a.id]);
    let f = SandboxFilter {
        deleted: DeletedFilter::Only,
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![b.id]);
    let f = SandboxFilter {
        status: Some(Running),
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![a.id]);
    let f = SandboxFilter {
        status: Some(Creating),
        deleted: DeletedFilter::Include,
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![c.id, b.id]);
    let f = SandboxFilter {
        cli_tool: Some("codex".into()),
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![c.id]);
    let f = SandboxFilter {
        project_id: Some(p1.id),
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![a.id]);
    let f = SandboxFilter {
        user_id: Some(p2.user_id),
        ..Default::default()
    };
    assert_eq!(ids(list(f).await.unwrap()), vec![c.id]);
    let f = SandboxFilter {
        project_id: Some(ProjectId::new()),
        ..Default::default()
    };
    assert!(list(f).await.unwrap().items.is_empty());
}

/// Walking pages while rows are inserted sees every original row exactly once.
pub async fn pagination_is_stable_under_inserts(store: &dyn Store) {
    let p = project(store).await;
    for _ in 0..25 {
        sandbox(store, &p).await;
    }
    let filter = SandboxFilter {
        project_id: Some(p.id),
        ..Default::default()
    };
    let all: Vec<_> = store
        .list_sandboxes(filter.clone(), PageRequest::first(500))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(all.len(), 25);

    let mut seen = Vec::new();
    let mut request = PageRequest::first(10);
    let mut pages = 0;
    loop {
        let page = store
            .list_sandboxes(filter.clone(), request.clone())
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|s| s.id));
        // Newer rows arrive between pages.
        for _ in 0..5 {
            sandbox(store, &p).await;
        }
        match page.next_cursor {
            Some(cursor) => request = PageRequest::after(10, cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "every original row once, in order");

    expect_invalid(
        store
            .list_sandboxes(filter.clone(), PageRequest::first(0))
            .await,
        "limit",
    );
    expect_invalid("garbage".parse::<Cursor>(), "cursor");
}

/// Appends accumulate on a streaming message; finished messages refuse changes; replay
/// after a sequence number returns the rest in order.
pub async fn messages_append_and_replay_in_sequence_order(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let prompt = store
        .create_message(NewMessage {
            sandbox_id: s.id,
            role: MessageRole::User,
            content: "do it".into(),
            status: MessageStatus::Completed,
        })
        .await
        .unwrap();
    assert_eq!(prompt.seq, 1);
    let reply = store
        .create_message(NewMessage {
            sandbox_id: s.id,
            role: MessageRole::Assistant,
            content: String::new(),
            status: MessageStatus::Streaming,
        })
        .await
        .unwrap();
    assert_eq!(reply.seq, 2);
    let mut expected = String::new();
    for i in 0..50 {
        let chunk = format!("chunk {i} ✓\n");
        store
            .append_message_content(reply.id, &chunk)
            .await
            .unwrap();
        expected.push_str(&chunk);
    }
    store
        .append_message_raw_log(reply.id, "{\"type\":\"text\"}\n")
        .await
        .unwrap();
    let done = store
        .finish_message(reply.id, MessageStatus::Completed)
        .await
        .unwrap();
    assert_eq!(done.content, expected);
    assert_eq!(done.raw_log, "{\"type\":\"text\"}\n");
    assert_eq!(done.status, MessageStatus::Completed);

    expect_conflict(store.append_message_content(reply.id, "late").await);
    expect_conflict(store.finish_message(reply.id, MessageStatus::Error).await);
    expect_invalid(
        store
            .finish_message(reply.id, MessageStatus::Streaming)
            .await,
        "message status",
    );
    expect_not_found(
        store.append_message_content(MessageId::new(), "x").await,
        "message",
    );
    expect_not_found(
        store
            .create_message(NewMessage {
                sandbox_id: SandboxId::new(),
                role: MessageRole::User,
                content: String::new(),
                status: MessageStatus::Completed,
            })
            .await,
        "sandbox",
    );

    for i in 3..=10 {
        let m = store
            .create_message(NewMessage {
                sandbox_id: s.id,
                role: MessageRole::Assistant,
                content: format!("m{i}"),
                status: MessageStatus::Completed,
            })
            .await
            .unwrap();
        assert_eq!(m.seq, i);
    }
    let all = store.list_messages(s.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(all[1], done);
    let rest = store.list_messages(s.id, 5, 3).await.unwrap();
    assert_eq!(
        rest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert!(store.list_messages(s.id, 10, 3).await.unwrap().is_empty());
    expect_invalid(store.list_messages(s.id, 0, 0).await, "limit");
}

/// Concurrent writers to one sandbox get 1..=n; another sandbox counts on its own.
pub async fn concurrent_messages_get_sequence_numbers_without_gaps(store: &dyn Store) {
    let p = project(store).await;
    let a = sandbox(store, &p).await;
    let b = sandbox(store, &p).await;
    let results = join_all((0..40).map(|i| {
        store.create_message(NewMessage {
            sandbox_id: if i % 4 == 0 { b.id } else { a.id },
            role: MessageRole::Assistant,
            content: format!("{i}"),
            status: MessageStatus::Streaming,
        })
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.list_messages(a.id, 0, 100).await.unwrap()),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(store.list_messages(b.id, 0, 100).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
}

/// An error part-way through a multi-row write rolls everything back.
pub async fn failed_transaction_leaves_nothing_behind(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let good = NewUsage {
        sandbox_id: s.id,
        service: Service::Anthropic,
        metric: UsageMetric::InputTokens,
        quantity: 1000.0,
        cost: Money::from_micros(3000),
        recorded_at: at(2, 0),
    };
    let bad = NewUsage {
        sandbox_id: SandboxId::new(),
        ..good.clone()
    };
    expect_not_found(
        store.record_usage(&[good.clone(), good.clone(), bad]).await,
        "sandbox",
    );
    assert!(store.usage_for_sandbox(s.id).await.unwrap().is_empty());
    assert!(store.usage_for_project(p.id).await.unwrap().is_empty());
    let negative = NewUsage {
        quantity: -1.0,
        ..good.clone()
    };
    expect_invalid(store.record_usage(&[good, negative]).await, "quantity");
    assert!(store.usage_for_project(p.id).await.unwrap().is_empty());

    // Activating a missing version must not leave the project with none active.
    store
        .create_learning_version(p.id, "v1".into(), true)
        .await
        .unwrap();
    expect_not_found(
        store.activate_learning_version(p.id, 99).await,
        "learning version",
    );
    assert_eq!(
        store
            .active_learning_version(p.id)
            .await
            .unwrap()
            .map(|v| v.version),
        Some(1)
    );
}

/// Totals add up per sandbox, per project and per UTC day.
pub async fn usage_totals_per_sandbox_project_and_day(store: &dyn Store) {
    let p = project(store).await;
    let other = project(store).await;
    let a = sandbox(store, &p).await;
    let b = sandbox(store, &p).await;
    let elsewhere = sandbox(store, &other).await;
    let rec = |sandbox_id, service, metric, quantity, micros, time| NewUsage {
        sandbox_id,
        service,
        metric,
        quantity,
        cost: Money::from_micros(micros),
        recorded_at: time,
    };
    use Service::*;
    use UsageMetric::*;
    let stored = store
        .record_usage(&[
            rec(a.id, Anthropic, InputTokens, 1000.0, 3000, at(1, 10)),
            rec(a.id, Anthropic, InputTokens, 500.0, 1500, at(2, 9)),
            rec(a.id, Anthropic, OutputTokens, 200.0, 3000, at(2, 9)),
            rec(b.id, E2b, ComputeSeconds, 90.5, 2500, at(2, 23)),
            rec(b.id, Anthropic, InputTokens, 100.0, 300, at(3, 0)),
            rec(elsewhere.id, E2b, ComputeSeconds, 10.0, 99, at(2, 1)),
        ])
        .await
        .unwrap();
    assert_eq!(stored.len(), 6);
    assert_eq!(stored[0].project_id, p.id);
    assert_eq!(stored[0].sandbox_id, Some(a.id));
    assert_eq!(stored[0].recorded_at, at(1, 10));

    let total = |service, metric, quantity, micros| UsageTotal {
        service,
        metric,
        quantity,
        cost: Money::from_micros(micros),
    };
    assert_eq!(
        store.usage_for_sandbox(a.id).await.unwrap(),
        vec![
            total(Anthropic, InputTokens, 1500.0, 4500),
            total(Anthropic, OutputTokens, 200.0, 3000)
        ]
    );
    assert_eq!(
        store.usage_for_project(p.id).await.unwrap(),
        vec![
            total(E2b, ComputeSeconds, 90.5, 2500),
            total(Anthropic, InputTokens, 1600.0, 4800),
            total(Anthropic, OutputTokens, 200.0, 3000),
        ]
    );
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let daily = store.daily_usage(p.id, at(2, 0), at(3, 0)).await.unwrap();
    assert_eq!(
        daily,
        vec![
            DailyUsage {
                day: day(2),
                total: total(E2b, ComputeSeconds, 90.5, 2500)
            },
            DailyUsage {
                day: day(2),
                total: total(Anthropic, InputTokens, 500.0, 1500)
            },
            DailyUsage {
                day: day(2),
                total: total(Anthropic, OutputTokens, 200.0, 3000)
            },
        ]
    );
    let all_days = store.daily_usage(p.id, at(1, 0), at(4, 0)).await.unwrap();
    assert_eq!(
        all_days.iter().map(|d| d.day).collect::<Vec<_>>(),
        vec![day(1), day(2), day(2), day(2), day(3)]
    );
    assert!(
        store
            .usage_for_sandbox(SandboxId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

/// The rate in force is the latest one effective at or before the usage.
pub async fn cost_rates_apply_from_their_start(store: &dyn Store) {
    let old = store
        .put_cost_rate(NewCostRate {
            service: Service::Anthropic,
            metric: UsageMetric::InputTokens,
            usd_per_unit: 0.000003,
            effective_from: at(1, 0),
        })
        .await
        .unwrap();
    let new = store
        .put_cost_rate(NewCostRate {
            service: Service::Anthropic,
            metric: UsageMetric::InputTokens,
            usd_per_unit: 0.0000025,
            effective_from: at(10, 0),
        })
        .await
        .unwrap();
    let e2b = store
        .put_cost_rate(NewCostRate {
            service: Service::E2b,
            metric: UsageMetric::ComputeSeconds,
            usd_per_unit: 0.000014,
            effective_from: at(1, 0),
        })
        .await
        .unwrap();
    let rate = |t| store.cost_rate_at(Service::Anthropic, UsageMetric::InputTokens, t);
    assert_eq!(rate(at(1, 0) - Duration::seconds(1)).await.unwrap(), None);
    assert_eq!(rate(at(1, 0)).await.unwrap(), Some(old.clone()));
    assert_eq!(rate(at(9, 23)).await.unwrap(), Some(old.clone()));
    assert_eq!(rate(at(20, 0)).await.unwrap(), Some(new.clone()));
    assert_eq!(store.list_cost_rates().await.unwrap(), vec![e2b, old, new]);
    expect_conflict(
        store
            .put_cost_rate(NewCostRate {
                service: Service::Anthropic,
                metric: UsageMetric::InputTokens,
                usd_per_unit: 1.0,
                effective_from: at(1, 0),
            })
            .await,
    );
    expect_invalid(
        store
            .put_cost_rate(NewCostRate {
                service: Service::OpenAi,
                metric: UsageMetric::InputTokens,
                usd_per_unit: f64::NAN,
                effective_from: at(1, 0),
            })
            .await,
        "usd_per_unit",
    );
}

/// A batch of learnings (with their evidence, or none) and its compiled version are stored
/// together or not at all.
pub async fn learnings_and_their_version_are_recorded_together(store: &dyn Store) {
    let p = project(store).await;
    let other = project(store).await;
    let s = sandbox(store, &p).await;
    let new = |project_id, content: &str| NewLearning {
        project_id,
        category: LearningCategory::Pattern,
        content: content.into(),
        evidence: None,
        source_sandbox_id: Some(s.id),
    };
    // Evidence is kept verbatim (quotes, new lines, non-ASCII), and its absence as NULL.
    let evidence = "#4: the user wrote \"tests/helpers.rs, please\"\n— and `cargo t` passed";
    let (stored, version) = store
        .record_learnings(
            p.id,
            vec![
                NewLearning {
                    evidence: Some(evidence.into()),
                    ..new(p.id, "use the repo's test helper")
                },
                new(p.id, "prefer small PRs"),
            ],
            Some("compiled".into()),
        )
        .await
        .unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|l| (l.content.as_str(), l.evidence.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            ("use the repo's test helper", Some(evidence)),
            ("prefer small PRs", None)
        ]
    );
    let version = version.expect("a version was asked for");
    assert_eq!((version.version, version.active), (1, true));
    assert_eq!(store.list_learnings(p.id).await.unwrap(), stored);
    assert_eq!(
        store.active_learning_version(p.id).await.unwrap(),
        Some(version)
    );

    // A learning of another project in the batch: nothing of the batch is kept.
    let err = store
        .record_learnings(
            p.id,
            vec![new(p.id, "would be lost"), new(other.id, "wrong project")],
            Some("never".into()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidInput {
                field: "project_id",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.list_learnings(p.id).await.unwrap().len(), 2);
    assert_eq!(store.list_learning_versions(p.id).await.unwrap().len(), 1);

    // Unknown project: not found, nothing written.
    let missing = ProjectId::new();
    let err = store
        .record_learnings(missing, vec![new(missing, "x")], None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

/// Versions number 1, 2, 3… per project and exactly one is active at a time.
pub async fn learning_versions_keep_one_active(store: &dyn Store) {
    let p = project(store).await;
    let s = sandbox(store, &p).await;
    let l = store
        .create_learning(NewLearning {
            project_id: p.id,
            category: LearningCategory::Gotcha,
            content: "run migrations first".into(),
            evidence: Some("#12: `cargo test` failed with \"no such table: users\"".into()),
            source_sandbox_id: Some(s.id),
        })
        .await
        .unwrap();
    assert_eq!(
        l.evidence.as_deref(),
        Some("#12: `cargo test` failed with \"no such table: users\"")
    );
    assert_eq!(store.list_learnings(p.id).await.unwrap(), vec![l]);
    assert_eq!(store.active_learning_version(p.id).await.unwrap(), None);

    let v1 = store
        .create_learning_version(p.id, "one".into(), true)
        .await
        .unwrap();
    let v2 = store
        .create_learning_version(p.id, "two".into(), false)
        .await
        .unwrap();
    assert_eq!(
        (v1.version, v1.active, v2.version, v2.active),
        (1, true, 2, false)
    );
    assert_eq!(store.active_learning_version(p.id).await.unwrap(), Some(v1));
    let v3 = store
        .create_learning_version(p.id, "three".into(), true)
        .await
        .unwrap();
    assert_eq!(store.active_learning_version(p.id).await.unwrap(), Some(v3));
    let again = store.activate_learning_version(p.id, 2).await.unwrap();
    assert_eq!(
        (again.version, again.active, again.compiled.as_str()),
        (2, true, "two")
    );
    let versions = store.list_learning_versions(p.id).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.active))
            .collect::<Vec<_>>(),
        vec![(1, false), (2, true), (3, false)]
    );
    expect_not_found(
        store
            .create_learning_version(ProjectId::new(), "x".into(), true)
            .await,
        "project",
    );

    // Another project numbers on its own.
    let q = project(store).await;
    assert_eq!(
        store
            .create_learning_version(q.id, "q".into(), true)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .active_learning_version(p.id)
            .await
            .unwrap()
            .map(|v| v.version),
        Some(2)
    );
}

/// Keys are kept per user and per project, replaced in place, and deleted.
pub async fn provider_keys_at_user_and_project_level(store: &dyn Store) {
    let p = project(store).await;
    let user = KeyOwner::User(p.user_id);
    let proj = KeyOwner::Project(p.id);
    let key = |bytes: &[u8], last: &str| NewProviderKey {
        ciphertext: bytes.to_vec(),
        last_four: last.into(),
    };

    let uk = store
        .put_provider_key(user, Provider::Anthropic, key(&[1, 2, 3], "abcd"))
        .await
        .unwrap();
    assert_eq!(
        (uk.owner, uk.provider, uk.last_four.as_str()),
        (user, Provider::Anthropic, "abcd")
    );
    let pk = store
        .put_provider_key(proj, Provider::Anthropic, key(&[9, 9], "wxyz"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_provider_key(user, Provider::Anthropic)
            .await
            .unwrap(),
        Some(uk.clone())
    );
    assert_eq!(
        store
            .get_provider_key(proj, Provider::Anthropic)
            .await
            .unwrap(),
        Some(pk)
    );
    assert_eq!(
        store
            .get_provider_key(user, Provider::OpenAi)
            .await
            .unwrap(),
        None
    );

    let replaced = store
        .put_provider_key(user, Provider::Anthropic, key(&[4, 5], "efgh"))
        .await
        .unwrap();
    assert_eq!(replaced.id, uk.id, "replacing keeps the key's identity");
    assert_eq!(
        (replaced.ciphertext.as_slice(), replaced.last_four.as_str()),
        (&[4u8, 5][..], "efgh")
    );
    assert_eq!(replaced.created_at, uk.created_at);

    store
        .put_provider_key(user, Provider::GitHub, key(&[7], "1234"))
        .await
        .unwrap();
    let providers: Vec<_> = store
        .list_provider_keys(user)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.provider)
        .collect();
    assert_eq!(providers, vec![Provider::Anthropic, Provider::GitHub]);

    store
        .delete_provider_key(user, Provider::Anthropic)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_provider_key(user, Provider::Anthropic)
            .await
            .unwrap(),
        None
    );
    expect_not_found(
        store.delete_provider_key(user, Provider::Anthropic).await,
        "provider key",
    );
    expect_invalid(
        store
            .put_provider_key(user, Provider::E2b, key(&[1], "toolong"))
            .await,
        "last_four",
    );
    expect_not_found(
        store
            .put_provider_key(
                KeyOwner::Project(ProjectId::new()),
                Provider::E2b,
                key(&[1], "1"),
            )
            .await,
        "project",
    );
}

/// Builds move through their states; finished ones carry a finish time.
pub async fn template_builds_record_progress(store: &dyn Store) {
    let new = |tool: &str| NewTemplateBuild {
        tool_id: tool.into(),
        template_name: format!("courier-{tool}"),
        cli_version: "1.2.3".into(),
    };
    let b = store.create_template_build(new("claude")).await.unwrap();
    assert_eq!(
        (b.status, b.finished_at),
        (TemplateBuildStatus::Pending, None)
    );
    let building = store
        .update_template_build(b.id, TemplateBuildStatus::Building, None)
        .await
        .unwrap();
    assert!(building.finished_at.is_none());
    let failed = store
        .update_template_build(b.id, TemplateBuildStatus::Failed, Some("apt failed".into()))
        .await
        .unwrap();
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.error.as_deref(), Some("apt failed"));
    assert_eq!(store.get_template_build(b.id).await.unwrap(), failed);
    let versioned = store
        .set_template_build_version(b.id, "2.1.197 (Claude Code)")
        .await
        .unwrap();
    assert_eq!(versioned.cli_version, "2.1.197 (Claude Code)");
    assert_eq!(
        (versioned.status, versioned.error.as_deref()),
        (TemplateBuildStatus::Failed, Some("apt failed"))
    );
    assert!(store.set_template_build_version(b.id, "  ").await.is_err());
    let failed = store.get_template_build(b.id).await.unwrap();
    assert_eq!(failed.cli_version, "2.1.197 (Claude Code)");

    let c = store.create_template_build(new("codex")).await.unwrap();
    let d = store.create_template_build(new("claude")).await.unwrap();
    let ids = |v: Vec<TemplateBuild>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .list_template_builds(Some("claude".into()))
            .await
            .unwrap()),
        vec![d.id, b.id]
    );
    assert_eq!(
        ids(store.list_template_builds(None).await.unwrap()),
        vec![d.id, c.id, b.id]
    );
    expect_not_found(
        store.get_template_build(TemplateBuildId::new()).await,
        "template build",
    );
}
