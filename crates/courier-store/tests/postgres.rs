//! The conformance suite on PostgreSQL, each test in its own fresh schema so tests can
//! run in parallel processes against one server.
//!
//! Needs `COURIER_TEST_PG_URL` (`cargo xtask test` starts a throwaway cluster and sets
//! it). Without it the tests skip with a message, except under CI (`CI` set), where a
//! silently skipped backend would hide breakage, so they fail.

use std::sync::Arc;

use courier_store::PgStore;
use courier_store::conformance::Fixture;

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
