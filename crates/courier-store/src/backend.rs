//! The one [`Store`](crate::Store) implementation, expanded once per sqlx backend.
//!
//! The expanding module must define `$store` with a `pool` field and an
//! `async fn write_tx(&self) -> Result<sqlx::Transaction<'static, $db>>` that begins a
//! transaction able to write without lock-upgrade failures.

macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        use async_trait::async_trait;
        use chrono::{DateTime, NaiveDate, Utc};
        use sqlx::Row as _;
        use uuid::Uuid;

        use crate::sql::{self, KeySql, micros, now_micros, opt_time, time};
        use crate::*;

        type DbRow = <$db as sqlx::Database>::Row;

        fn user_from_row(r: &DbRow) -> Result<User> {
            Ok(User {
                id: UserId::from_uuid(r.try_get("id")?),
                email: r.try_get("email")?,
                name: r.try_get("name")?,
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn project_from_row(r: &DbRow) -> Result<Project> {
            Ok(Project {
                id: ProjectId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                name: r.try_get("name")?,
                active_sandboxes: r.try_get("active_sandboxes")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        fn key_from_row(r: &DbRow, owner: KeyOwner) -> Result<ProviderKey> {
            let owner_id: Uuid = r.try_get("owner_id")?;
            let owner = match owner {
                KeyOwner::User(_) => KeyOwner::User(UserId::from_uuid(owner_id)),
                KeyOwner::Project(_) => KeyOwner::Project(ProjectId::from_uuid(owner_id)),
            };
            Ok(ProviderKey {
                id: ProviderKeyId::from_uuid(r.try_get("id")?),
                owner,
                provider: Provider::parse_field(r.try_get("provider")?, "provider")?,
                ciphertext: r.try_get("ciphertext")?,
                last_four: r.try_get("last_four")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        fn sandbox_from_row(r: &DbRow) -> Result<Sandbox> {
            let config: String = r.try_get("config")?;
            let config = serde_json::from_str(&config)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
            let pr_status: Option<String> = r.try_get("pr_status")?;
            Ok(Sandbox {
                id: SandboxId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                provider_sandbox_id: r.try_get("provider_sandbox_id")?,
                status: SandboxStatus::parse_field(r.try_get("status")?, "status")?,
                error_message: r.try_get("error_message")?,
                config,
                cli_tool: r.try_get("cli_tool")?,
                model: r.try_get("model")?,
                prompt: r.try_get("prompt")?,
                links: SandboxLinks {
                    run_id: r.try_get("run_id")?,
                    issue_session_id: r.try_get("issue_session_id")?,
                    background_task_id: r.try_get("background_task_id")?,
                },
                git: GitInfo {
                    repo_url: r.try_get("repo_url")?,
                    branch: r.try_get("branch")?,
                    pr_url: r.try_get("pr_url")?,
                    pr_number: r.try_get("pr_number")?,
                    pr_status: pr_status
                        .map(|s| PrStatus::parse_field(&s, "pr status"))
                        .transpose()?,
                    pr_error: r.try_get("pr_error")?,
                },
                learning_status: LearningStatus::parse_field(
                    r.try_get("learning_status")?,
                    "learning status",
                )?,
                learning_error: r.try_get("learning_error")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
                started_at: opt_time(r.try_get("started_at")?)?,
                ended_at: opt_time(r.try_get("ended_at")?)?,
                deleted_at: opt_time(r.try_get("deleted_at")?)?,
            })
        }

        fn message_from_row(r: &DbRow) -> Result<Message> {
            Ok(Message {
                id: MessageId::from_uuid(r.try_get("id")?),
                sandbox_id: SandboxId::from_uuid(r.try_get("sandbox_id")?),
                seq: r.try_get("seq")?,
                role: MessageRole::parse_field(r.try_get("role")?, "role")?,
                content: r.try_get("content")?,
                status: MessageStatus::parse_field(r.try_get("status")?, "message status")?,
                raw_log: r.try_get("raw_log")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        /// Concatenates chunk rows (in id order) into (content, raw log).
        fn fold_chunks(rows: &[DbRow]) -> Result<(String, String)> {
            let mut content = String::new();
            let mut raw_log = String::new();
            for row in rows {
                let kind: i32 = row.try_get("kind")?;
                let text: &str = row.try_get("text")?;
                if kind == sql::CHUNK_RAW_LOG {
                    raw_log.push_str(text);
                } else {
                    debug_assert_eq!(kind, sql::CHUNK_CONTENT);
                    content.push_str(text);
                }
            }
            Ok((content, raw_log))
        }

        fn learning_from_row(r: &DbRow) -> Result<Learning> {
            let source: Option<Uuid> = r.try_get("source_sandbox_id")?;
            Ok(Learning {
                id: LearningId::from_uuid(r.try_get("id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                category: LearningCategory::parse_field(r.try_get("category")?, "category")?,
                content: r.try_get("content")?,
                evidence: r.try_get("evidence")?,
                source_sandbox_id: source.map(SandboxId::from_uuid),
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn version_from_row(r: &DbRow) -> Result<LearningVersion> {
            Ok(LearningVersion {
                id: LearningVersionId::from_uuid(r.try_get("id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                version: r.try_get("version")?,
                compiled: r.try_get("compiled")?,
                active: r.try_get("active")?,
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn build_from_row(r: &DbRow) -> Result<TemplateBuild> {
            Ok(TemplateBuild {
                id: TemplateBuildId::from_uuid(r.try_get("id")?),
                tool_id: r.try_get("tool_id")?,
                template_name: r.try_get("template_name")?,
                cli_version: r.try_get("cli_version")?,
                status: TemplateBuildStatus::parse_field(
                    r.try_get("status")?,
                    "template build status",
                )?,
                error: r.try_get("error")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
                finished_at: opt_time(r.try_get("finished_at")?)?,
            })
        }

        fn usage_from_row(r: &DbRow) -> Result<UsageRecord> {
            let sandbox: Option<Uuid> = r.try_get("sandbox_id")?;
            Ok(UsageRecord {
                id: UsageRecordId::from_uuid(r.try_get("id")?),
                sandbox_id: sandbox.map(SandboxId::from_uuid),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                service: Service::parse_field(r.try_get("service")?, "service")?,
                metric: UsageMetric::parse_field(r.try_get("metric")?, "metric")?,
                quantity: r.try_get("quantity")?,
                cost: Money::from_micros(r.try_get("cost_micros")?),
                recorded_at: time(r.try_get("recorded_at")?)?,
            })
        }

        fn total_from_row(r: &DbRow) -> Result<UsageTotal> {
            Ok(UsageTotal {
                service: Service::parse_field(r.try_get("service")?, "service")?,
                metric: UsageMetric::parse_field(r.try_get("metric")?, "metric")?,
                quantity: r.try_get("quantity")?,
                cost: Money::from_micros(r.try_get("cost_micros")?),
            })
        }

        fn rate_from_row(r: &DbRow) -> Result<CostRate> {
            Ok(CostRate {
                id: CostRateId::from_uuid(r.try_get("id")?),
                service: Service::parse_field(r.try_get("service")?, "service")?,
                metric: UsageMetric::parse_field(r.try_get("metric")?, "metric")?,
                usd_per_unit: r.try_get("usd_per_unit")?,
                effective_from: time(r.try_get("effective_from")?)?,
            })
        }

        fn key_sql(owner: KeyOwner) -> (&'static KeySql, Uuid) {
            match owner {
                KeyOwner::User(id) => (&sql::USER_KEYS, id.as_uuid()),
                KeyOwner::Project(id) => (&sql::PROJECT_KEYS, id.as_uuid()),
            }
        }

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

        #[async_trait]
        impl Store for $store {
            async fn create_user(&self, new: NewUser) -> Result<User> {
                let row = sqlx::query(sql::INSERT_USER)
                    .bind(UserId::new().as_uuid())
                    .bind(&new.email)
                    .bind(&new.name)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!(
                            "a user with e-mail {} already exists",
                            new.email
                        )),
                        other => other,
                    })?;
                user_from_row(&row)
            }

            async fn get_user(&self, id: UserId) -> Result<User> {
                let row = sqlx::query(sql::GET_USER)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("user", id))?;
                user_from_row(&row)
            }

            async fn get_user_by_email(&self, email: &str) -> Result<User> {
                let row = sqlx::query(sql::GET_USER_BY_EMAIL)
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("user", email))?;
                user_from_row(&row)
            }

            async fn create_project(&self, new: NewProject) -> Result<Project> {
                let row = sqlx::query(sql::INSERT_PROJECT)
                    .bind(ProjectId::new().as_uuid())
                    .bind(new.user_id.as_uuid())
                    .bind(&new.name)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::not_found("user", new.user_id),
                        other => other,
                    })?;
                project_from_row(&row)
            }

            async fn get_project(&self, id: ProjectId) -> Result<Project> {
                let row = sqlx::query(sql::GET_PROJECT)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("project", id))?;
                project_from_row(&row)
            }

            async fn list_projects(&self, user_id: UserId) -> Result<Vec<Project>> {
                let rows = sqlx::query(sql::LIST_PROJECTS)
                    .bind(user_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(project_from_row).collect()
            }

            async fn put_provider_key(
                &self,
                owner: KeyOwner,
                provider: Provider,
                key: NewProviderKey,
            ) -> Result<ProviderKey> {
                sql::check_last_four(&key.last_four)?;
                let (q, owner_id) = key_sql(owner);
                let row = sqlx::query(q.upsert)
                    .bind(ProviderKeyId::new().as_uuid())
                    .bind(owner_id)
                    .bind(provider.as_str())
                    .bind(&key.ciphertext)
                    .bind(&key.last_four)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => match owner {
                            KeyOwner::User(id) => StoreError::not_found("user", id),
                            KeyOwner::Project(id) => StoreError::not_found("project", id),
                        },
                        other => other,
                    })?;
                key_from_row(&row, owner)
            }

            async fn get_provider_key(
                &self,
                owner: KeyOwner,
                provider: Provider,
            ) -> Result<Option<ProviderKey>> {
                let (q, owner_id) = key_sql(owner);
                let row = sqlx::query(q.get)
                    .bind(owner_id)
                    .bind(provider.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| key_from_row(&r, owner)).transpose()
            }

            async fn list_provider_keys(&self, owner: KeyOwner) -> Result<Vec<ProviderKey>> {
                let (q, owner_id) = key_sql(owner);
                let rows = sqlx::query(q.list)
                    .bind(owner_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut keys = rows
                    .iter()
                    .map(|r| key_from_row(r, owner))
                    .collect::<Result<Vec<_>>>()?;
                // Sorted here, not in SQL: collations differ between backends.
                keys.sort_by(|a, b| a.provider.as_str().cmp(b.provider.as_str()));
                Ok(keys)
            }

            async fn delete_provider_key(&self, owner: KeyOwner, provider: Provider) -> Result<()> {
                let (q, owner_id) = key_sql(owner);
                let done = sqlx::query(q.delete)
                    .bind(owner_id)
                    .bind(provider.as_str())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("provider key", provider));
                }
                Ok(())
            }

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
                let mut tx = self.write_tx().await?;
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
                // One extra row tells whether another page follows.
                let rows = sqlx::query(sql::LIST_SANDBOXES)
                    .bind(filter.status.map(SandboxStatus::as_str))
                    .bind(filter.project_id.map(|p| p.as_uuid()))
                    .bind(filter.cli_tool)
                    .bind(filter.user_id.map(|u| u.as_uuid()))
                    .bind(filter.deleted.code())
                    .bind(after.map(|(t, _)| t))
                    .bind(after.map(|(_, id)| id))
                    .bind(limit + 1)
                    .fetch_all(&self.pool)
                    .await?;
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
                let mut tx = self.write_tx().await?;
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
                let mut tx = self.write_tx().await?;
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
                let mut tx = self.write_tx().await?;
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
                let mut tx = self.write_tx().await?;
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

            async fn create_message(&self, new: NewMessage) -> Result<Message> {
                let mut tx = self.write_tx().await?;
                let seq: i64 = sqlx::query(sql::NEXT_MESSAGE_SEQ)
                    .bind(new.sandbox_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("sandbox", new.sandbox_id))?
                    .try_get("message_seq")?;
                let row = sqlx::query(sql::INSERT_MESSAGE)
                    .bind(MessageId::new().as_uuid())
                    .bind(new.sandbox_id.as_uuid())
                    .bind(seq)
                    .bind(new.role.as_str())
                    .bind(&new.content)
                    .bind(new.status.as_str())
                    .bind(now_micros())
                    .fetch_one(&mut *tx)
                    .await?;
                let message = message_from_row(&row)?;
                tx.commit().await?;
                Ok(message)
            }

            async fn append_message_content(&self, id: MessageId, delta: &str) -> Result<()> {
                let done = sqlx::query(sql::APPEND_CONTENT)
                    .bind(id.as_uuid())
                    .bind(delta.to_owned())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(self.message_miss(id).await);
                }
                Ok(())
            }

            async fn append_message_raw_log(&self, id: MessageId, delta: &str) -> Result<()> {
                let done = sqlx::query(sql::APPEND_RAW_LOG)
                    .bind(id.as_uuid())
                    .bind(delta.to_owned())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(self.message_miss(id).await);
                }
                Ok(())
            }

            async fn finish_message(
                &self,
                id: MessageId,
                status: MessageStatus,
            ) -> Result<Message> {
                if status == MessageStatus::Streaming {
                    return Err(StoreError::invalid(
                        "message status",
                        "a message finishes as `completed` or `error`",
                    ));
                }
                let mut tx = self.write_tx().await?;
                let chunks = sqlx::query(sql::MESSAGE_CHUNKS)
                    .bind(id.as_uuid())
                    .fetch_all(&mut *tx)
                    .await?;
                if let Some(last) = chunks.last() {
                    let last: i64 = last.try_get("id")?;
                    let (content, raw_log) = fold_chunks(&chunks)?;
                    sqlx::query(sql::FOLD_CHUNKS)
                        .bind(id.as_uuid())
                        .bind(content)
                        .bind(raw_log)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(sql::DELETE_CHUNKS)
                        .bind(id.as_uuid())
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query(sql::FINISH_MESSAGE)
                    .bind(id.as_uuid())
                    .bind(status.as_str())
                    .bind(now_micros())
                    .fetch_optional(&mut *tx)
                    .await?;
                match row {
                    Some(row) => {
                        let message = message_from_row(&row)?;
                        tx.commit().await?;
                        Ok(message)
                    }
                    None => {
                        // Dropping `tx` rolls the fold back: nothing of a finished or
                        // unknown message changes.
                        drop(tx);
                        Err(self.message_miss(id).await)
                    }
                }
            }

            async fn list_messages(
                &self,
                sandbox_id: SandboxId,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<Message>> {
                let limit = sql::check_message_limit(limit)?;
                let rows = sqlx::query(sql::LIST_MESSAGES)
                    .bind(sandbox_id.as_uuid())
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                let mut messages = rows
                    .iter()
                    .map(message_from_row)
                    .collect::<Result<Vec<_>>>()?;
                // A streaming message's output so far is its row plus its chunks.
                for message in &mut messages {
                    if message.status == MessageStatus::Streaming {
                        let chunks = sqlx::query(sql::MESSAGE_CHUNKS)
                            .bind(message.id.as_uuid())
                            .fetch_all(&self.pool)
                            .await?;
                        let (content, raw_log) = fold_chunks(&chunks)?;
                        message.content.push_str(&content);
                        message.raw_log.push_str(&raw_log);
                    }
                }
                Ok(messages)
            }

            async fn create_learning(&self, new: NewLearning) -> Result<Learning> {
                let row = sqlx::query(sql::INSERT_LEARNING)
                    .bind(LearningId::new().as_uuid())
                    .bind(new.project_id.as_uuid())
                    .bind(new.category.as_str())
                    .bind(&new.content)
                    .bind(&new.evidence)
                    .bind(new.source_sandbox_id.map(|s| s.as_uuid()))
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await?;
                learning_from_row(&row)
            }

            async fn list_learnings(&self, project_id: ProjectId) -> Result<Vec<Learning>> {
                let rows = sqlx::query(sql::LIST_LEARNINGS)
                    .bind(project_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(learning_from_row).collect()
            }

            async fn record_learnings(
                &self,
                project_id: ProjectId,
                learnings: Vec<NewLearning>,
                compiled: Option<String>,
            ) -> Result<(Vec<Learning>, Option<LearningVersion>)> {
                let mut tx = self.write_tx().await?;
                // Locks the project row first (same order as every other writer) and
                // proves it exists before anything is inserted.
                let version: i64 = sqlx::query(if compiled.is_some() {
                    sql::NEXT_VERSION
                } else {
                    sql::LOCK_PROJECT
                })
                .bind(project_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::not_found("project", project_id))?
                .try_get("learning_version_seq")?;
                let mut stored = Vec::with_capacity(learnings.len());
                for new in learnings {
                    if new.project_id != project_id {
                        // Dropping `tx` rolls back what was inserted so far.
                        return Err(StoreError::InvalidInput {
                            field: "project_id",
                            message: format!(
                                "learning belongs to project {}, not {project_id}",
                                new.project_id
                            ),
                        });
                    }
                    let row = sqlx::query(sql::INSERT_LEARNING)
                        .bind(LearningId::new().as_uuid())
                        .bind(project_id.as_uuid())
                        .bind(new.category.as_str())
                        .bind(&new.content)
                        .bind(&new.evidence)
                        .bind(new.source_sandbox_id.map(|s| s.as_uuid()))
                        .bind(now_micros())
                        .fetch_one(&mut *tx)
                        .await?;
                    stored.push(learning_from_row(&row)?);
                }
                let version = match compiled {
                    Some(compiled) => {
                        sqlx::query(sql::DEACTIVATE_VERSIONS)
                            .bind(project_id.as_uuid())
                            .execute(&mut *tx)
                            .await?;
                        let row = sqlx::query(sql::INSERT_VERSION)
                            .bind(LearningVersionId::new().as_uuid())
                            .bind(project_id.as_uuid())
                            .bind(version)
                            .bind(compiled)
                            .bind(true)
                            .bind(now_micros())
                            .fetch_one(&mut *tx)
                            .await?;
                        Some(version_from_row(&row)?)
                    }
                    None => None,
                };
                tx.commit().await?;
                Ok((stored, version))
            }

            async fn create_learning_version(
                &self,
                project_id: ProjectId,
                compiled: String,
                activate: bool,
            ) -> Result<LearningVersion> {
                let mut tx = self.write_tx().await?;
                let version: i64 = sqlx::query(sql::NEXT_VERSION)
                    .bind(project_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("project", project_id))?
                    .try_get("learning_version_seq")?;
                if activate {
                    sqlx::query(sql::DEACTIVATE_VERSIONS)
                        .bind(project_id.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query(sql::INSERT_VERSION)
                    .bind(LearningVersionId::new().as_uuid())
                    .bind(project_id.as_uuid())
                    .bind(version)
                    .bind(compiled)
                    .bind(activate)
                    .bind(now_micros())
                    .fetch_one(&mut *tx)
                    .await?;
                let version = version_from_row(&row)?;
                tx.commit().await?;
                Ok(version)
            }

            async fn activate_learning_version(
                &self,
                project_id: ProjectId,
                version: i64,
            ) -> Result<LearningVersion> {
                let mut tx = self.write_tx().await?;
                sqlx::query(sql::LOCK_PROJECT)
                    .bind(project_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("project", project_id))?;
                sqlx::query(sql::DEACTIVATE_VERSIONS)
                    .bind(project_id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(sql::ACTIVATE_VERSION)
                    .bind(project_id.as_uuid())
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?
                    // Returning drops `tx`, rolling the deactivation back.
                    .ok_or_else(|| {
                        StoreError::not_found(
                            "learning version",
                            format!("{project_id} v{version}"),
                        )
                    })?;
                let version = version_from_row(&row)?;
                tx.commit().await?;
                Ok(version)
            }

            async fn active_learning_version(
                &self,
                project_id: ProjectId,
            ) -> Result<Option<LearningVersion>> {
                let row = sqlx::query(sql::ACTIVE_VERSION)
                    .bind(project_id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn list_learning_versions(
                &self,
                project_id: ProjectId,
            ) -> Result<Vec<LearningVersion>> {
                let rows = sqlx::query(sql::LIST_VERSIONS)
                    .bind(project_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(version_from_row).collect()
            }

            async fn create_template_build(&self, new: NewTemplateBuild) -> Result<TemplateBuild> {
                let row = sqlx::query(sql::INSERT_BUILD)
                    .bind(TemplateBuildId::new().as_uuid())
                    .bind(&new.tool_id)
                    .bind(&new.template_name)
                    .bind(&new.cli_version)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await?;
                build_from_row(&row)
            }

            async fn get_template_build(&self, id: TemplateBuildId) -> Result<TemplateBuild> {
                let row = sqlx::query(sql::GET_BUILD)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("template build", id))?;
                build_from_row(&row)
            }

            async fn update_template_build(
                &self,
                id: TemplateBuildId,
                status: TemplateBuildStatus,
                error: Option<String>,
            ) -> Result<TemplateBuild> {
                let now = now_micros();
                let row = sqlx::query(sql::UPDATE_BUILD)
                    .bind(id.as_uuid())
                    .bind(status.as_str())
                    .bind(error)
                    .bind(now)
                    .bind(status.is_finished().then_some(now))
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("template build", id))?;
                build_from_row(&row)
            }

            async fn set_template_build_version(
                &self,
                id: TemplateBuildId,
                cli_version: &str,
            ) -> Result<TemplateBuild> {
                if cli_version.trim().is_empty() || cli_version.len() > 200 {
                    return Err(StoreError::invalid(
                        "cli_version",
                        "must be 1-200 bytes and not blank",
                    ));
                }
                let row = sqlx::query(sql::SET_BUILD_VERSION)
                    .bind(id.as_uuid())
                    .bind(cli_version)
                    .bind(now_micros())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("template build", id))?;
                build_from_row(&row)
            }

            async fn list_template_builds(
                &self,
                tool_id: Option<String>,
            ) -> Result<Vec<TemplateBuild>> {
                let rows = sqlx::query(sql::LIST_BUILDS)
                    .bind(tool_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(build_from_row).collect()
            }

            async fn record_usage(&self, records: &[NewUsage]) -> Result<Vec<UsageRecord>> {
                for r in records {
                    sql::check_non_negative("quantity", r.quantity)?;
                }
                let mut tx = self.write_tx().await?;
                let mut stored = Vec::with_capacity(records.len());
                for r in records {
                    let row = sqlx::query(sql::INSERT_USAGE)
                        .bind(UsageRecordId::new().as_uuid())
                        .bind(r.sandbox_id.as_uuid())
                        .bind(r.service.as_str())
                        .bind(r.metric.as_str())
                        .bind(r.quantity)
                        .bind(r.cost.micros())
                        .bind(micros(r.recorded_at))
                        .fetch_optional(&mut *tx)
                        .await?
                        // Returning drops `tx`: the records inserted so far roll back.
                        .ok_or_else(|| StoreError::not_found("sandbox", r.sandbox_id))?;
                    stored.push(usage_from_row(&row)?);
                }
                tx.commit().await?;
                Ok(stored)
            }

            async fn usage_for_sandbox(&self, sandbox_id: SandboxId) -> Result<Vec<UsageTotal>> {
                let rows = sqlx::query(sql::USAGE_FOR_SANDBOX)
                    .bind(sandbox_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                let mut totals = rows
                    .iter()
                    .map(total_from_row)
                    .collect::<Result<Vec<_>>>()?;
                totals.sort_by_key(|t| (t.service, t.metric));
                Ok(totals)
            }

            async fn usage_for_project(&self, project_id: ProjectId) -> Result<Vec<UsageTotal>> {
                let rows = sqlx::query(sql::USAGE_FOR_PROJECT)
                    .bind(project_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                let mut totals = rows
                    .iter()
                    .map(total_from_row)
                    .collect::<Result<Vec<_>>>()?;
                totals.sort_by_key(|t| (t.service, t.metric));
                Ok(totals)
            }

            async fn daily_usage(
                &self,
                project_id: ProjectId,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<DailyUsage>> {
                let rows = sqlx::query(sql::DAILY_USAGE)
                    .bind(project_id.as_uuid())
                    .bind(micros(from))
                    .bind(micros(to))
                    .fetch_all(&self.pool)
                    .await?;
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                let mut days = rows
                    .iter()
                    .map(|r| {
                        let day: i64 = r.try_get("day")?;
                        Ok(DailyUsage {
                            day: epoch + chrono::Days::new(day.max(0) as u64),
                            total: total_from_row(r)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                days.sort_by_key(|d| (d.day, d.total.service, d.total.metric));
                Ok(days)
            }

            async fn put_cost_rate(&self, new: NewCostRate) -> Result<CostRate> {
                sql::check_non_negative("usd_per_unit", new.usd_per_unit)?;
                let row = sqlx::query(sql::INSERT_RATE)
                    .bind(CostRateId::new().as_uuid())
                    .bind(new.service.as_str())
                    .bind(new.metric.as_str())
                    .bind(new.usd_per_unit)
                    .bind(micros(new.effective_from))
                    .fetch_one(&self.pool)
                    .await?;
                rate_from_row(&row)
            }

            async fn cost_rate_at(
                &self,
                service: Service,
                metric: UsageMetric,
                at: DateTime<Utc>,
            ) -> Result<Option<CostRate>> {
                let row = sqlx::query(sql::RATE_AT)
                    .bind(service.as_str())
                    .bind(metric.as_str())
                    .bind(micros(at))
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(rate_from_row).transpose()
            }

            async fn list_cost_rates(&self) -> Result<Vec<CostRate>> {
                let rows = sqlx::query(sql::LIST_RATES).fetch_all(&self.pool).await?;
                let mut rates = rows.iter().map(rate_from_row).collect::<Result<Vec<_>>>()?;
                rates.sort_by_key(|r| (r.service, r.metric, r.effective_from));
                Ok(rates)
            }
        }
    };
}
