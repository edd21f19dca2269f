//! Learnings, their versions, and template builds.

use super::seed::*;
use crate::*;

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
