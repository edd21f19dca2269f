//! The one [`Store`](crate::Store) implementation, expanded once per sqlx backend.
//!
//! The expanding module must define `$store` with a `pool` field and an
//! `async fn write_tx(&self) -> Result<(sqlx::Transaction<'static, $db>, Turn)>` that begins a
//! transaction able to write without lock-upgrade failures; `Turn` is whatever must be
//! held until the transaction ends (SQLite's in-process writer turn).
//!
//! The methods live in one macro per concern (`users`, `sandboxes`, `messages`,
//! `learnings`, `builds`, `usage`, `personas`, `workflows`, `chains`, `issues`). `#[async_trait]` must see every method of the impl at
//! once, so each concern's macro appends its methods to the list it is given and passes
//! the list to the next; the last, `store_impl!`, writes the impl.

#[macro_use]
mod rows;
#[macro_use]
mod users;
#[macro_use]
mod sandboxes;
#[macro_use]
mod messages;
#[macro_use]
mod learnings;
#[macro_use]
mod builds;
#[macro_use]
mod usage;
#[macro_use]
mod personas;
#[macro_use]
mod workflows;
#[macro_use]
mod chains;
#[macro_use]
mod issues;

/// Writes `impl Store for $store` with the gathered methods.
macro_rules! store_impl {
    ($store:ty; [$($methods:tt)*]) => {
        #[async_trait]
        impl Store for $store {
            $($methods)*
        }
    };
}

/// Implements [`Store`](crate::Store) for `$store` over the sqlx database `$db`: the
/// row decoders, the shared compare-and-set helpers, then every concern's methods.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        use async_trait::async_trait;
        use chrono::{DateTime, NaiveDate, Utc};
        use sqlx::Row as _;
        use uuid::Uuid;

        use crate::sql::{self, KeySql, micros, now_micros, opt_time, time};
        use crate::*;

        store_rows!($db);

        impl $store {
            /// Why a compare-and-set on a message matched no row.
            async fn message_miss(&self, id: MessageId) -> StoreError {
                match sqlx::query(sql::MESSAGE_STATUS)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await
                {
                    Ok(Some(row)) => {
                        let status: String = row.try_get("status").unwrap_or_default();
                        StoreError::Conflict(format!("message {id} is already {status}"))
                    }
                    Ok(None) => StoreError::not_found("message", id),
                    Err(e) => e.into(),
                }
            }

            /// Applies a counter change inside the caller's transaction.
            async fn adjust_active(
                tx: &mut sqlx::Transaction<'static, $db>,
                project: Uuid,
                delta: i64,
            ) -> Result<()> {
                if delta != 0 {
                    sqlx::query(sql::ADJUST_ACTIVE)
                        .bind(project)
                        .bind(delta)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Distinguishes "no such sandbox" from "in another state" after a missed
            /// compare-and-set, reading inside the same transaction.
            async fn sandbox_state(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: SandboxId,
            ) -> Result<(SandboxStatus, bool)> {
                let row = sqlx::query(sql::SANDBOX_STATE)
                    .bind(id.as_uuid())
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("sandbox", id))?;
                let deleted: Option<i64> = row.try_get("deleted_at")?;
                Ok((
                    SandboxStatus::parse_field(row.try_get("status")?, "status")?,
                    deleted.is_some(),
                ))
            }

            /// Why a compare-and-set on a run, step, chain or issue session matched no
            /// row: not found, or a conflict naming the status it is in. `query` selects
            /// `status` by id.
            async fn status_miss(
                conn: &mut <$db as sqlx::Database>::Connection,
                query: &'static str,
                entity: &'static str,
                id: Uuid,
                expected: &str,
            ) -> StoreError {
                match sqlx::query(query).bind(id).fetch_optional(&mut *conn).await {
                    Ok(Some(row)) => {
                        let status: String = row.try_get("status").unwrap_or_default();
                        StoreError::Conflict(format!(
                            "{entity} {id} is `{status}`, not {expected}"
                        ))
                    }
                    Ok(None) => StoreError::not_found(entity, id),
                    Err(e) => e.into(),
                }
            }

            /// [`status_miss`](Self::status_miss) outside a transaction.
            async fn status_miss_now(
                &self,
                query: &'static str,
                entity: &'static str,
                id: Uuid,
                expected: &str,
            ) -> StoreError {
                match self.pool.acquire().await {
                    Ok(mut conn) => Self::status_miss(&mut conn, query, entity, id, expected).await,
                    Err(e) => e.into(),
                }
            }

            /// Inserts a `pending` chain item inside the caller's transaction.
            async fn insert_chain_item(
                tx: &mut sqlx::Transaction<'static, $db>,
                chain_id: WorkChainId,
                position: i64,
                item: &NewChainItem,
            ) -> Result<ChainItem> {
                let row = sqlx::query(sql::INSERT_ITEM)
                    .bind(chain_id.as_uuid())
                    .bind(position)
                    .bind(&item.title)
                    .bind(&item.prompt)
                    .bind(item.card_id.map(|c| c.as_uuid()))
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| match (StoreError::from(e), item.card_id) {
                        (StoreError::NotFound { .. }, Some(card)) => {
                            StoreError::not_found("issue card", card)
                        }
                        (other, _) => other,
                    })?;
                item_from_row(&row)
            }

            async fn update_sandbox(
                &self,
                id: SandboxId,
                query: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>,
            ) -> Result<()> {
                let done = query.execute(&self.pool).await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("sandbox", id));
                }
                Ok(())
            }
        }

        store_users!($store; [] store_sandboxes, store_messages, store_learnings, store_builds, store_usage,
            store_personas, store_workflows, store_chains, store_issues, store_impl);
    };
}
