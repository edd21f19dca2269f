//! The conformance suite on SQLite (a fresh database file per test), plus what only
//! SQLite has: in-memory stores and reopening a file.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use courier_store::conformance::Fixture;
use courier_store::{LearningCategory, NewLearning, NewProject, NewUser, SqliteStore, Store};

async fn setup() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("courier.db"))
        .await
        .expect("open sqlite");
    // The directory must outlive the store; the teardown owns it.
    Some(Fixture::with_teardown(
        Arc::new(store),
        async move { drop(dir) },
    ))
}

courier_store::conformance_tests!(setup);

#[tokio::test]
async fn in_memory_store_passes_a_round_trip() {
    let store = SqliteStore::in_memory().await.unwrap();
    courier_store::conformance::users_and_projects_round_trip(&store).await;
    courier_store::conformance::messages_append_and_replay_in_sequence_order(&store).await;
}

#[tokio::test]
async fn reopened_file_keeps_its_data_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("courier.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let user = store
        .create_user(NewUser {
            email: "a@example.com".into(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: "p".into(),
        })
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await;

    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.get_project(project.id).await.unwrap(), project);
}

/// Learnings extracted before migration 0004 carry their evidence after a
/// `\nEvidence: ` line in the content; the migration moves it into its own column.
#[tokio::test]
async fn migration_0004_moves_folded_evidence_out_of_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("courier.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let project = project(&store).await;
    for content in [
        "Run migrations first.\nEvidence: #4: no such table: users",
        "Prefer small commits.",
    ] {
        store
            .create_learning(NewLearning {
                project_id: project,
                category: LearningCategory::Gotcha,
                content: content.into(),
                evidence: None,
                source_sandbox_id: None,
            })
            .await
            .unwrap();
    }
    // Back to the schema before 0004, holding rows as the old code wrote them.
    for sql in [
        "ALTER TABLE learnings DROP COLUMN evidence",
        "DELETE FROM _sqlx_migrations WHERE version = 4",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    store.close().await;

    let migrated = SqliteStore::open(&path).await.unwrap();
    let learnings = migrated.list_learnings(project).await.unwrap();
    assert_eq!(
        learnings
            .iter()
            .map(|l| (l.content.as_str(), l.evidence.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            ("Run migrations first.", Some("#4: no such table: users")),
            ("Prefer small commits.", None),
        ]
    );
}

async fn project(store: &SqliteStore) -> courier_store::ProjectId {
    let user = store
        .create_user(NewUser {
            email: "m@example.com".into(),
            name: "M".into(),
        })
        .await
        .unwrap();
    store
        .create_project(NewProject {
            user_id: user.id,
            name: "p".into(),
        })
        .await
        .unwrap()
        .id
}
