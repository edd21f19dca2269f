//! Sandbox records: round trips, lifecycle transitions, listing and pages.

use super::seed::*;
use crate::*;

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
