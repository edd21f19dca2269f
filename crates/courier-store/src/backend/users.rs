//! Users, projects and provider keys.

/// Appends the users methods of [`Store`](crate::Store) to the methods gathered so far and
/// hands them on (see `impl_store!`).
macro_rules! store_users {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

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

            async fn get_project_settings(&self, project_id: ProjectId) -> Result<ProjectSettings> {
                let project = project_id.as_uuid();
                let row = sqlx::query(sql::GET_SETTINGS)
                    .bind(project)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else {
                    self.get_project(project_id).await?;
                    return Ok(ProjectSettings::default());
                };
                let vars = sqlx::query(sql::LIST_ENV_VARS)
                    .bind(project)
                    .fetch_all(&self.pool)
                    .await?;
                let mut env_vars = vars
                    .iter()
                    .map(|r| {
                        Ok(EncryptedEnvVar {
                            name: r.try_get("name")?,
                            ciphertext: r.try_get("ciphertext")?,
                            last_four: r.try_get("last_four")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                // Sorted here, not in SQL: collations differ between backends.
                env_vars.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(ProjectSettings {
                    repo_url: row.try_get("repo_url")?,
                    base_branch: row.try_get("base_branch")?,
                    env_vars,
                    system_prompt: row.try_get("system_prompt")?,
                    claude_md: row.try_get("claude_md")?,
                    skills: from_json(row.try_get("skills")?)?,
                    commands: from_json(row.try_get("commands")?)?,
                    sandbox_defaults: from_json(row.try_get("sandbox_defaults")?)?,
                })
            }

            async fn put_project_settings(
                &self,
                project_id: ProjectId,
                settings: ProjectSettings,
            ) -> Result<ProjectSettings> {
                settings.check_shape()?;
                let project = project_id.as_uuid();
                let (mut tx, _turn) = self.write_tx().await?;
                sqlx::query(sql::PUT_SETTINGS)
                    .bind(project)
                    .bind(&settings.repo_url)
                    .bind(&settings.base_branch)
                    .bind(&settings.system_prompt)
                    .bind(&settings.claude_md)
                    .bind(to_json(&settings.skills)?)
                    .bind(to_json(&settings.commands)?)
                    .bind(to_json(&settings.sandbox_defaults)?)
                    .bind(now_micros())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::not_found("project", project_id),
                        other => other,
                    })?;
                sqlx::query(sql::DELETE_ENV_VARS)
                    .bind(project)
                    .execute(&mut *tx)
                    .await?;
                for var in &settings.env_vars {
                    sqlx::query(sql::INSERT_ENV_VAR)
                        .bind(project)
                        .bind(&var.name)
                        .bind(&var.ciphertext)
                        .bind(&var.last_four)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                let mut stored = settings;
                stored.env_vars.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(stored)
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
        ] $($rest),*);
    };
}
