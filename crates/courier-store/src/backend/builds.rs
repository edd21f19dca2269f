//! Template builds.

/// Appends the builds methods of [`Store`](crate::Store) to the methods gathered so far and
/// hands them on (see `impl_store!`).
macro_rules! store_builds {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

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
        ] $($rest),*);
    };
}
