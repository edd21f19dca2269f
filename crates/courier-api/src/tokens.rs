//! Bearer tokens: issued once in plaintext, stored only as their SHA-256.
//!
//! The [`Store`](courier_store::Store) trait has no token table, so the API keeps its own
//! `api_tokens` table in the same database (SQLite or Postgres), created with
//! `CREATE TABLE IF NOT EXISTS` when [`Tokens`] is opened. It deliberately does not use
//! sqlx's migrator: that would share `_sqlx_migrations` with the store's own migrations.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use courier_store::UserId;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::{ApiError, Result};

/// Every token starts with this, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "courier_";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
)";

/// A freshly issued token. The plaintext exists only here: `Debug` hides it.
#[derive(Clone)]
pub struct IssuedToken {
    /// The token to hand to the user (shown once).
    pub token: String,
    /// Whose it is.
    pub user_id: UserId,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"****")
            .field("user_id", &self.user_id)
            .finish()
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Memory(Arc<Mutex<HashMap<String, UserId>>>),
}

/// The token table. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    backend: Backend,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
            Backend::Memory(_) => "memory",
        };
        f.debug_struct("Tokens").field("backend", &kind).finish()
    }
}

/// The stored form of a token: its SHA-256 in hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::Internal(format!("token table: {e}"))
}

impl Tokens {
    /// Tokens in a SQLite database (typically the store's own pool).
    pub async fn sqlite(pool: SqlitePool) -> Result<Self> {
        sqlx::query(CREATE_TABLE).execute(&pool).await.map_err(db)?;
        Ok(Tokens {
            backend: Backend::Sqlite(pool),
        })
    }

    /// Tokens in a Postgres database (typically the store's own pool).
    pub async fn postgres(pool: PgPool) -> Result<Self> {
        sqlx::query(CREATE_TABLE).execute(&pool).await.map_err(db)?;
        Ok(Tokens {
            backend: Backend::Postgres(pool),
        })
    }

    /// Tokens held in memory only (tests, demos).
    pub fn in_memory() -> Self {
        Tokens {
            backend: Backend::Memory(Arc::default()),
        }
    }

    /// Issues a new random token for a user; only its hash is stored.
    pub async fn issue(&self, user_id: UserId, name: &str) -> Result<IssuedToken> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let hash = hash_token(&token);
        let user = user_id.as_uuid().to_string();
        let now = Utc::now().to_rfc3339();
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&hash)
                .bind(&user)
                .bind(name)
                .bind(&now)
                .execute(pool)
                .await
                .map_err(db)?;
            }
            Backend::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&hash)
                .bind(&user)
                .bind(name)
                .bind(&now)
                .execute(pool)
                .await
                .map_err(db)?;
            }
            Backend::Memory(map) => {
                map.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(hash, user_id);
            }
        }
        Ok(IssuedToken { token, user_id })
    }

    /// The user a presented token belongs to; `None` for unknown tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Option<UserId>> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = hash_token(token);
        let user: Option<String> = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar("SELECT user_id FROM api_tokens WHERE token_hash = ?")
                    .bind(&hash)
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar("SELECT user_id FROM api_tokens WHERE token_hash = $1")
                    .bind(&hash)
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?
            }
            Backend::Memory(map) => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                return Ok(map.get(&hash).copied());
            }
        };
        user.map(|u| {
            Uuid::parse_str(&u)
                .map(UserId::from_uuid)
                .map_err(|e| ApiError::Internal(format!("token table: bad user id: {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use courier_store::SqliteStore;

    use super::*;

    #[tokio::test]
    async fn issued_tokens_authenticate_and_only_their_hash_is_stored() {
        let store = SqliteStore::in_memory().await.unwrap();
        let tokens = Tokens::sqlite(store.pool().clone()).await.unwrap();
        // Opening twice is fine (the table already exists).
        let tokens2 = Tokens::sqlite(store.pool().clone()).await.unwrap();
        let user = UserId::new();
        let issued = tokens.issue(user, "cli").await.unwrap();
        assert!(issued.token.starts_with(TOKEN_PREFIX));
        assert!(!format!("{issued:?}").contains(&issued.token));
        assert_eq!(
            tokens2.authenticate(&issued.token).await.unwrap(),
            Some(user)
        );
        assert_eq!(tokens.authenticate("courier_nope").await.unwrap(), None);
        assert_eq!(tokens.authenticate("").await.unwrap(), None);
        let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(stored, vec![hash_token(&issued.token)]);
        assert!(!stored[0].contains(&issued.token));
    }

    #[tokio::test]
    async fn memory_tokens_work_the_same() {
        let tokens = Tokens::in_memory();
        let user = UserId::new();
        let issued = tokens.issue(user, "t").await.unwrap();
        assert_eq!(
            tokens.authenticate(&issued.token).await.unwrap(),
            Some(user)
        );
        assert_eq!(tokens.authenticate("courier_x").await.unwrap(), None);
    }
}
