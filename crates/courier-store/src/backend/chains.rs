//! Work chains and their items.

/// Appends the work chain methods of [`Store`](crate::Store) to the methods gathered so far
/// and hands them on (see `impl_store!`).
macro_rules! store_chains {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn create_work_chain(&self, new: NewWorkChain) -> Result<WorkChain> {
                if new.items.is_empty() {
                    return Err(StoreError::invalid("items", "a work chain needs at least one item"));
                }
                let id = WorkChainId::new();
                let now = now_micros();
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::INSERT_CHAIN)
                    .bind(id.as_uuid())
                    .bind(new.user_id.as_uuid())
                    .bind(new.project_id.as_uuid())
                    .bind(&new.title)
                    .bind(to_json(&new.spec)?)
                    .bind(&new.repo_url)
                    .bind(&new.base_branch)
                    .bind(&new.branch)
                    .bind(new.pr_mode.as_str())
                    .bind(new.items.len() as i64)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::NotFound {
                            entity: "user or project",
                            id: format!("{} / {}", new.user_id, new.project_id),
                        },
                        other => other,
                    })?;
                let chain = chain_from_row(&row)?;
                for (position, item) in (1..).zip(&new.items) {
                    Self::insert_chain_item(&mut tx, id, position, item).await?;
                }
                tx.commit().await?;
                Ok(chain)
            }

            async fn get_work_chain(&self, id: WorkChainId) -> Result<WorkChain> {
                let row = sqlx::query(sql::GET_CHAIN)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("work chain", id))?;
                chain_from_row(&row)
            }

            async fn list_work_chains(&self, project_id: ProjectId) -> Result<Vec<WorkChain>> {
                let rows = sqlx::query(sql::LIST_CHAINS)
                    .bind(project_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(chain_from_row).collect()
            }

            async fn list_unfinished_work_chains(&self) -> Result<Vec<WorkChain>> {
                let rows = sqlx::query(sql::LIST_UNFINISHED_CHAINS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(chain_from_row).collect()
            }

            async fn list_chain_items(&self, chain_id: WorkChainId) -> Result<Vec<ChainItem>> {
                let rows = sqlx::query(sql::LIST_ITEMS)
                    .bind(chain_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(item_from_row).collect()
            }

            async fn append_chain_item(
                &self,
                chain_id: WorkChainId,
                new: NewChainItem,
            ) -> Result<ChainItem> {
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::NEXT_ITEM_POSITION)
                    .bind(chain_id.as_uuid())
                    .bind(now_micros())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Err(Self::status_miss(
                        &mut tx,
                        sql::CHAIN_STATUS,
                        "work chain",
                        chain_id.as_uuid(),
                        "`pending` or `running`",
                    )
                    .await);
                };
                let position: i64 = row.try_get("item_seq")?;
                let item = Self::insert_chain_item(&mut tx, chain_id, position, &new).await?;
                tx.commit().await?;
                Ok(item)
            }

            async fn update_chain_item(
                &self,
                chain_id: WorkChainId,
                position: i64,
                run_id: Option<WorkflowRunId>,
                status: RunStatus,
                error: Option<String>,
            ) -> Result<ChainItem> {
                let row = sqlx::query(sql::UPDATE_ITEM)
                    .bind(chain_id.as_uuid())
                    .bind(position)
                    .bind(run_id.map(|r| r.as_uuid()))
                    .bind(status.as_str())
                    .bind(error)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| match (StoreError::from(e), run_id) {
                        (StoreError::NotFound { .. }, Some(run)) => {
                            StoreError::not_found("workflow run", run)
                        }
                        (other, _) => other,
                    })?
                    .ok_or_else(|| {
                        StoreError::not_found("chain item", format!("{chain_id} #{position}"))
                    })?;
                item_from_row(&row)
            }

            async fn update_work_chain(
                &self,
                id: WorkChainId,
                from: RunStatus,
                to: RunStatus,
                error: Option<String>,
            ) -> Result<WorkChain> {
                if from.is_final() {
                    return Err(StoreError::InvalidRunTransition {
                        entity: "work chain",
                        from,
                        to,
                    });
                }
                let now = now_micros();
                let row = sqlx::query(sql::UPDATE_CHAIN)
                    .bind(id.as_uuid())
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(error)
                    .bind(now)
                    .bind(to.is_final().then_some(now))
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else {
                    return Err(self
                        .status_miss_now(
                            sql::CHAIN_STATUS,
                            "work chain",
                            id.as_uuid(),
                            &format!("`{from}`"),
                        )
                        .await);
                };
                chain_from_row(&row)
            }
        ] $($rest),*);
    };
}
