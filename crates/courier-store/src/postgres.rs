//! The PostgreSQL backend, for deployments with several replicas.

use std::str::FromStr;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A [`Store`](crate::Store) in a PostgreSQL database.
///
/// Transactions run at READ COMMITTED: every compare-and-set is an `UPDATE … WHERE
/// status = expected`, which PostgreSQL re-checks against the latest row version after
/// waiting for a concurrent writer, so exactly one of racing writers wins. Rows are
/// always locked sandbox first, then project, so writers cannot deadlock.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies migrations.
    pub async fn connect(url: &str) -> crate::Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        Self::connect_with(options).await
    }

    /// Like [`connect`](Self::connect), but keeps every table in `schema` (created if
    /// missing) by setting each connection's `search_path`. Lets several stores share
    /// one database, e.g. one per test. `schema` must be `[a-z0-9_]+`.
    pub async fn connect_in_schema(url: &str, schema: &str) -> crate::Result<Self> {
        let valid = !schema.is_empty()
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(StoreError::invalid(
                "schema",
                format!("`{schema}` is not [a-z0-9_]+"),
            ));
        }
        let options = PgConnectOptions::from_str(url)?;
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        // The name was checked above, so formatting it into SQL is safe.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&setup)
        .await?;
        setup.close().await;
        Self::connect_with(options.options([("search_path", schema)])).await
    }

    /// Connects with prepared options and applies migrations.
    pub async fn connect_with(options: PgConnectOptions) -> crate::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// The underlying pool (for diagnostics and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes all connections, waiting for running queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction (PostgreSQL's row locks order writers; no turn to take).
    async fn write_tx(&self) -> crate::Result<(sqlx::Transaction<'static, Postgres>, ())> {
        Ok((self.pool.begin().await?, ()))
    }
}

impl_store!(PgStore, Postgres);
