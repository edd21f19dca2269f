//! Sandboxes: creation within quotas, lifecycle compare-and-sets, git and learning state, soft deletion.

/// Appends the sandboxes methods of [`Store`](crate::Store) to the methods gathered so far and
/// hands them on (see `impl_store!`).
macro_rules! store_sandboxes {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn create_sandbox(&self, new: NewSandbox) -> Result<Sandbox> {
                // The same transaction as a quota'd create, without limits: one insert
                // path, and the row locks double as the user/project existence check.
                self.create_sandbox_within(new, SandboxQuota::default())
                    .await
            }

            async fn create_sandbox_within(
                &self,
                new: NewSandbox,
                quota: SandboxQuota,
            ) -> Result<Sandbox> {
                let config = serde_json::to_string(&new.config)
                    .map_err(|e| StoreError::invalid("config", e.to_string()))?;
                let missing = || StoreError::NotFound {
                    entity: "user or project",
                    id: format!("{} / {}", new.user_id, new.project_id),
                };
                let (mut tx, _turn) = self.write_tx().await?;
                // User first, then project: one lock order, so racing creates queue up
                // instead of deadlocking.
                for (lock, id) in [
                    (sql::LOCK_USER, new.user_id.as_uuid()),
                    (sql::LOCK_PROJECT, new.project_id.as_uuid()),
                ] {
                    let locked = sqlx::query(lock).bind(id).execute(&mut *tx).await?;
                    if locked.rows_affected() == 0 {
                        return Err(missing());
                    }
                }
                if quota != SandboxQuota::default() {
                    let counts = sqlx::query(sql::COUNT_LIVE_SANDBOXES)
                        .bind(new.user_id.as_uuid())
                        .bind(new.project_id.as_uuid())
                        .fetch_one(&mut *tx)
                        .await?;
                    for (scope, limit, in_use) in [
                        (
                            QuotaScope::User,
                            quota.per_user,
                            counts.try_get::<i64, _>("by_user")?,
                        ),
                        (
                            QuotaScope::Project,
                            quota.per_project,
                            counts.try_get::<i64, _>("by_project")?,
                        ),
                    ] {
                        if let Some(limit) = limit
                            && in_use >= i64::from(limit)
                        {
                            return Err(StoreError::QuotaExceeded {
                                scope,
                                limit,
                                in_use,
                            });
                        }
                    }
                }
                let row = sqlx::query(sql::INSERT_SANDBOX)
                    .bind(SandboxId::new().as_uuid())
                    .bind(new.user_id.as_uuid())
                    .bind(new.project_id.as_uuid())
                    .bind(config)
                    .bind(&new.cli_tool)
                    .bind(&new.model)
                    .bind(&new.prompt)
                    .bind(&new.links.run_id)
                    .bind(&new.links.issue_session_id)
                    .bind(&new.links.background_task_id)
                    .bind(&new.repo_url)
                    .bind(&new.branch)
                    .bind(now_micros())
                    .fetch_one(&mut *tx)
                    .await?;
                let sandbox = sandbox_from_row(&row)?;
                tx.commit().await?;
                Ok(sandbox)
            }

            async fn get_sandbox(&self, id: SandboxId) -> Result<Sandbox> {
                let row = sqlx::query(sql::GET_SANDBOX)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("sandbox", id))?;
                sandbox_from_row(&row)
            }

            async fn list_sandboxes(
                &self,
                filter: SandboxFilter,
                page: PageRequest,
            ) -> Result<Page<Sandbox>> {
                let limit = page.checked_limit()?;
                let after = page.cursor.as_ref().map(Cursor::decode).transpose()?;
                // Only the filters given, so the planner picks an index for them (one
                // statement for every combination was planned once, for none: a scan of
                // every user's sandboxes in date order). One extra row tells whether
                // another page follows.
                type Db = <DbRow as sqlx::Row>::Database;
                let mut q = sqlx::QueryBuilder::<Db>::new(sql::LIST_SANDBOXES_WHERE);
                q.push(match filter.deleted {
                    DeletedFilter::Exclude => "deleted_at IS NULL",
                    DeletedFilter::Only => "deleted_at IS NOT NULL",
                    DeletedFilter::Include => "TRUE",
                });
                if let Some(status) = filter.status {
                    q.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(project) = filter.project_id {
                    q.push(" AND project_id = ").push_bind(project.as_uuid());
                }
                if let Some(tool) = filter.cli_tool {
                    q.push(" AND cli_tool = ").push_bind(tool);
                }
                if let Some(user) = filter.user_id {
                    q.push(" AND user_id = ").push_bind(user.as_uuid());
                }
                if let Some(run) = filter.run_id {
                    q.push(" AND run_id = ").push_bind(run);
                }
                if let Some(session) = filter.issue_session_id {
                    q.push(" AND issue_session_id = ").push_bind(session);
                }
                if let Some((created, id)) = after {
                    q.push(" AND (created_at < ")
                        .push_bind(created)
                        .push(" OR (created_at = ")
                        .push_bind(created)
                        .push(" AND id < ")
                        .push_bind(id)
                        .push("))");
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(limit + 1);
                let rows = q.build().fetch_all(&self.pool).await?;
                let mut items = rows
                    .iter()
                    .map(sandbox_from_row)
                    .collect::<Result<Vec<_>>>()?;
                let next_cursor = if items.len() as i64 > limit {
                    items.truncate(limit as usize);
                    items
                        .last()
                        .map(|s| Cursor::encode(micros(s.created_at), s.id.as_uuid()))
                } else {
                    None
                };
                Ok(Page { items, next_cursor })
            }

            async fn transition_sandbox(
                &self,
                id: SandboxId,
                from: SandboxStatus,
                to: SandboxStatus,
                error_message: Option<String>,
            ) -> Result<Sandbox> {
                if !from.can_transition_to(to) {
                    return Err(StoreError::InvalidTransition { from, to });
                }
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::TRANSITION)
                    .bind(id.as_uuid())
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(now_micros())
                    .bind(error_message)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    let (actual, _) = Self::sandbox_state(&mut tx, id).await?;
                    return Err(StoreError::Conflict(format!(
                        "sandbox {id} is `{actual}`, not `{from}`"
                    )));
                };
                let sandbox = sandbox_from_row(&row)?;
                // Soft-deleted sandboxes are not counted, so their transitions don't move it.
                if sandbox.deleted_at.is_none() {
                    Self::adjust_active(
                        &mut tx,
                        sandbox.project_id.as_uuid(),
                        sql::active_delta(from, to),
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(sandbox)
            }

            async fn set_provider_sandbox_id(
                &self,
                id: SandboxId,
                provider_sandbox_id: &str,
            ) -> Result<()> {
                self.update_sandbox(
                    id,
                    sqlx::query(sql::SET_PROVIDER_ID)
                        .bind(id.as_uuid())
                        .bind(provider_sandbox_id.to_owned())
                        .bind(now_micros()),
                )
                .await
            }

            async fn update_sandbox_git(&self, id: SandboxId, git: GitInfo) -> Result<()> {
                self.update_sandbox(
                    id,
                    sqlx::query(sql::SET_GIT)
                        .bind(id.as_uuid())
                        .bind(git.repo_url)
                        .bind(git.branch)
                        .bind(git.pr_url)
                        .bind(git.pr_number)
                        .bind(git.pr_status.map(PrStatus::as_str))
                        .bind(git.pr_error)
                        .bind(now_micros()),
                )
                .await
            }

            async fn set_learning_status(
                &self,
                id: SandboxId,
                status: LearningStatus,
                error: Option<String>,
            ) -> Result<()> {
                self.update_sandbox(
                    id,
                    sqlx::query(sql::SET_LEARNING_STATUS)
                        .bind(id.as_uuid())
                        .bind(status.as_str())
                        .bind(error)
                        .bind(now_micros()),
                )
                .await
            }

            async fn soft_delete_sandbox(&self, id: SandboxId) -> Result<()> {
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::SOFT_DELETE)
                    .bind(id.as_uuid())
                    .bind(now_micros())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    Self::sandbox_state(&mut tx, id).await?;
                    return Err(StoreError::Conflict(format!(
                        "sandbox {id} is already deleted"
                    )));
                };
                let status = SandboxStatus::parse_field(row.try_get("status")?, "status")?;
                if status == SandboxStatus::Running {
                    Self::adjust_active(&mut tx, row.try_get("project_id")?, -1).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn restore_sandbox(&self, id: SandboxId) -> Result<()> {
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::RESTORE)
                    .bind(id.as_uuid())
                    .bind(now_micros())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    Self::sandbox_state(&mut tx, id).await?;
                    return Err(StoreError::Conflict(format!("sandbox {id} is not deleted")));
                };
                let status = SandboxStatus::parse_field(row.try_get("status")?, "status")?;
                if status == SandboxStatus::Running {
                    Self::adjust_active(&mut tx, row.try_get("project_id")?, 1).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn purge_sandbox(&self, id: SandboxId) -> Result<()> {
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::PURGE)
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("sandbox", id))?;
                let status = SandboxStatus::parse_field(row.try_get("status")?, "status")?;
                let deleted: Option<i64> = row.try_get("deleted_at")?;
                if status == SandboxStatus::Running && deleted.is_none() {
                    Self::adjust_active(&mut tx, row.try_get("project_id")?, -1).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        ] $($rest),*);
    };
}
