//! Quotas and the running counter under concurrent writers.

use futures::future::join_all;

use super::seed::*;
use crate::*;

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
