//! Learnings and the versions compiled from them.

/// Appends the learnings methods of [`Store`](crate::Store) to the methods gathered so far and
/// hands them on (see `impl_store!`).
macro_rules! store_learnings {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

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
                let (mut tx, _turn) = self.write_tx().await?;
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
                let (mut tx, _turn) = self.write_tx().await?;
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
                let (mut tx, _turn) = self.write_tx().await?;
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
        ] $($rest),*);
    };
}
