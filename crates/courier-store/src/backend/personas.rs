//! Personas.

/// Appends the personas methods of [`Store`](crate::Store) to the methods gathered so far
/// and hands them on (see `impl_store!`).
macro_rules! store_personas {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn create_persona(&self, new: NewPersona) -> Result<Persona> {
                new.check_shape()?;
                let row = sqlx::query(sql::INSERT_PERSONA)
                    .bind(PersonaId::new().as_uuid())
                    .bind(new.project_id.as_uuid())
                    .bind(&new.name)
                    .bind(&new.tool)
                    .bind(&new.model)
                    .bind(&new.thinking_effort)
                    .bind(&new.system_prompt)
                    .bind(to_json(&new.skills)?)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => {
                            StoreError::not_found("project", new.project_id)
                        }
                        StoreError::Conflict(_) => StoreError::Conflict(format!(
                            "a persona named {} already exists in the project",
                            new.name
                        )),
                        other => other,
                    })?;
                persona_from_row(&row)
            }

            async fn get_persona(&self, id: PersonaId) -> Result<Persona> {
                let row = sqlx::query(sql::GET_PERSONA)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("persona", id))?;
                persona_from_row(&row)
            }

            async fn list_personas(&self, project_id: ProjectId) -> Result<Vec<Persona>> {
                let rows = sqlx::query(sql::LIST_PERSONAS)
                    .bind(project_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                let mut personas = rows
                    .iter()
                    .map(persona_from_row)
                    .collect::<Result<Vec<_>>>()?;
                // Sorted here, not in SQL: collations differ between backends.
                personas.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(personas)
            }

            async fn update_persona(&self, id: PersonaId, new: NewPersona) -> Result<Persona> {
                new.check_shape()?;
                let row = sqlx::query(sql::UPDATE_PERSONA)
                    .bind(id.as_uuid())
                    .bind(&new.name)
                    .bind(&new.tool)
                    .bind(&new.model)
                    .bind(&new.thinking_effort)
                    .bind(&new.system_prompt)
                    .bind(to_json(&new.skills)?)
                    .bind(now_micros())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!(
                            "a persona named {} already exists in the project",
                            new.name
                        )),
                        other => other,
                    })?
                    .ok_or_else(|| StoreError::not_found("persona", id))?;
                persona_from_row(&row)
            }

            async fn delete_persona(&self, id: PersonaId) -> Result<()> {
                let done = sqlx::query(sql::DELETE_PERSONA)
                    .bind(id.as_uuid())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("persona", id));
                }
                Ok(())
            }
        ] $($rest),*);
    };
}
