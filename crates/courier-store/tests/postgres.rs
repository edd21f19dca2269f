//! The conformance suite on PostgreSQL, each test in its own fresh schema so tests can
//! run in parallel processes against one server.
//!
//! Needs `COURIER_TEST_PG_URL` (`cargo xtask test` starts a throwaway cluster and sets
//! it). Without it the tests skip with a message, except under CI (`CI` set), where a
//! silently skipped backend would hide breakage, so they fail.

use std::sync::Arc;

use courier_store::conformance::Fixture;
use courier_store::{LearningCategory, NewLearning, NewProject, NewUser, PgStore, Store};

async fn setup() -> Option<Fixture> {
    let url = match std::env::var("COURIER_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "COURIER_TEST_PG_URL is not set, but CI must run the Postgres conformance suite"
            );
            eprintln!(
                "skipping Postgres conformance test: COURIER_TEST_PG_URL is not set \
                 (`cargo xtask test` starts a throwaway cluster)"
            );
            return None;
        }
    };
    let schema = format!("courier_test_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_in_schema(&url, &schema)
        .await
        .expect("connect to Postgres");
    let pool = store.pool().clone();
    Some(Fixture::with_teardown(Arc::new(store), async move {
        // Dropping the schema from a connection whose search_path points into it is fine.
        let drop = format!("DROP SCHEMA {schema} CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&pool)
            .await
            .expect("drop test schema");
        pool.close().await;
    }))
}

courier_store::conformance_tests!(setup);

/// Learnings extracted before migration 0004 carry their evidence after a
/// `\nEvidence: ` line in the content; the migration moves it into its own column.
#[tokio::test]
async fn migration_0004_moves_folded_evidence_out_of_the_content() {
    let Some(url) = std::env::var("COURIER_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipping: COURIER_TEST_PG_URL is not set");
        return;
    };
    let schema = format!("courier_test_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_in_schema(&url, &schema).await.unwrap();
    let user = store
        .create_user(NewUser {
            email: "m@example.com".into(),
            name: "M".into(),
        })
        .await
        .unwrap();
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: "p".into(),
        })
        .await
        .unwrap()
        .id;
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

    let migrated = PgStore::connect_in_schema(&url, &schema).await.unwrap();
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
    let drop = format!("DROP SCHEMA {schema} CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(migrated.pool())
        .await
        .unwrap();
    migrated.close().await;
}
