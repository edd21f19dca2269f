//! Issue sessions and their cards.

/// Appends the issue session methods of [`Store`](crate::Store) to the methods gathered so
/// far and hands them on (see `impl_store!`).
macro_rules! store_issues {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn create_issue_session(&self, new: NewIssueSession) -> Result<IssueSession> {
                let row = sqlx::query(sql::INSERT_SESSION)
                    .bind(IssueSessionId::new().as_uuid())
                    .bind(new.user_id.as_uuid())
                    .bind(new.project_id.as_uuid())
                    .bind(&new.focus)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::NotFound {
                            entity: "user or project",
                            id: format!("{} / {}", new.user_id, new.project_id),
                        },
                        other => other,
                    })?;
                session_from_row(&row)
            }

            async fn get_issue_session(&self, id: IssueSessionId) -> Result<IssueSession> {
                let row = sqlx::query(sql::GET_SESSION)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("issue session", id))?;
                session_from_row(&row)
            }

            async fn list_issue_sessions(&self, project_id: ProjectId) -> Result<Vec<IssueSession>> {
                let rows = sqlx::query(sql::LIST_SESSIONS)
                    .bind(project_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(session_from_row).collect()
            }

            async fn list_unfinished_issue_sessions(&self) -> Result<Vec<IssueSession>> {
                let rows = sqlx::query(sql::LIST_UNFINISHED_SESSIONS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(session_from_row).collect()
            }

            async fn set_issue_session_sandbox(
                &self,
                id: IssueSessionId,
                sandbox_id: SandboxId,
            ) -> Result<IssueSession> {
                let row = sqlx::query(sql::SET_SESSION_SANDBOX)
                    .bind(id.as_uuid())
                    .bind(sandbox_id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::not_found("sandbox", sandbox_id),
                        other => other,
                    })?
                    .ok_or_else(|| StoreError::not_found("issue session", id))?;
                session_from_row(&row)
            }

            async fn finish_issue_session(
                &self,
                id: IssueSessionId,
                status: RunStatus,
                error: Option<String>,
                cards: Vec<NewIssueCard>,
            ) -> Result<(IssueSession, Vec<IssueCard>)> {
                crate::workflows::check_final("status", status)?;
                let now = now_micros();
                let (mut tx, _turn) = self.write_tx().await?;
                let row = sqlx::query(sql::FINISH_SESSION)
                    .bind(id.as_uuid())
                    .bind(status.as_str())
                    .bind(error)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Err(Self::status_miss(
                        &mut tx,
                        sql::SESSION_STATUS,
                        "issue session",
                        id.as_uuid(),
                        "`pending` or `running`",
                    )
                    .await);
                };
                let session = session_from_row(&row)?;
                let mut stored = Vec::with_capacity(cards.len());
                for (position, card) in (1_i64..).zip(cards) {
                    let row = sqlx::query(sql::INSERT_CARD)
                        .bind(IssueCardId::new().as_uuid())
                        .bind(id.as_uuid())
                        .bind(session.project_id.as_uuid())
                        .bind(position)
                        .bind(card.title)
                        .bind(card.description)
                        .bind(card.severity.as_str())
                        .bind(card.suggested_prompt)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                    stored.push(card_from_row(&row)?);
                }
                tx.commit().await?;
                Ok((session, stored))
            }

            async fn list_issue_cards(&self, session_id: IssueSessionId) -> Result<Vec<IssueCard>> {
                let rows = sqlx::query(sql::LIST_CARDS)
                    .bind(session_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(card_from_row).collect()
            }

            async fn get_issue_card(&self, id: IssueCardId) -> Result<IssueCard> {
                let row = sqlx::query(sql::GET_CARD)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("issue card", id))?;
                card_from_row(&row)
            }

            async fn link_issue_card(
                &self,
                id: IssueCardId,
                sandbox_id: Option<SandboxId>,
                chain_id: Option<WorkChainId>,
            ) -> Result<IssueCard> {
                let row = sqlx::query(sql::LINK_CARD)
                    .bind(id.as_uuid())
                    .bind(sandbox_id.map(|s| s.as_uuid()))
                    .bind(chain_id.map(|c| c.as_uuid()))
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("issue card", id))?;
                card_from_row(&row)
            }
        ] $($rest),*);
    };
}
