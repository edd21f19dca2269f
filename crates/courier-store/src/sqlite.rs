//! The SQLite backend: the embedded default.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for SQLite's single write lock before failing. Writes are
/// short, so only a badly overloaded store waits this long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Store`](crate::Store) in one SQLite file (WAL mode) or in memory.
///
/// SQLite allows one writer at a time: every write transaction starts with
/// `BEGIN IMMEDIATE`, so writers queue for the lock up front instead of failing when a
/// read lock cannot be upgraded. Writers of this process first take turns in order on
/// an in-process lock: SQLite's own busy handler makes a waiting writer sleep (1, 2, 5,
/// … 100 ms), which under many agents turns into tens of milliseconds of idle lock.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    turns: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies migrations.
    pub async fn open(path: impl AsRef<Path>) -> crate::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Safe with WAL: a power loss may drop the last commits but never corrupts.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    /// A fresh private in-memory database, gone when the store is dropped.
    pub async fn in_memory() -> crate::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // Each connection to `:memory:` is its own database, so the pool holds exactly
        // one connection and never closes it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> crate::Result<Self> {
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore {
            pool,
            turns: Arc::default(),
        })
    }

    /// The underlying pool (for diagnostics and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes all connections, waiting for running queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction and this process's turn to write, held until both drop.
    async fn write_tx(
        &self,
    ) -> crate::Result<(
        sqlx::Transaction<'static, Sqlite>,
        tokio::sync::OwnedMutexGuard<()>,
    )> {
        let turn = self.turns.clone().lock_owned().await;
        Ok((self.pool.begin_with("BEGIN IMMEDIATE").await?, turn))
    }
}

impl_store!(SqliteStore, Sqlite);
