//! Workflow runs and their steps.

/// Appends the workflow run methods of [`Store`](crate::Store) to the methods gathered so
/// far and hands them on (see `impl_store!`).
macro_rules! store_workflows {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn create_workflow_run(&self, new: NewWorkflowRun) -> Result<WorkflowRun> {
                let row = sqlx::query(sql::INSERT_RUN)
                    .bind(WorkflowRunId::new().as_uuid())
                    .bind(new.user_id.as_uuid())
                    .bind(new.project_id.as_uuid())
                    .bind(new.chain_id.map(|c| c.as_uuid()))
                    .bind(&new.title)
                    .bind(&new.prompt)
                    .bind(to_json(&new.spec)?)
                    .bind(&new.repo_url)
                    .bind(&new.base_branch)
                    .bind(&new.branch)
                    .bind(now_micros())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::NotFound {
                            entity: "user, project or work chain",
                            id: format!(
                                "{} / {} / {}",
                                new.user_id,
                                new.project_id,
                                new.chain_id.map(|c| c.to_string()).unwrap_or_default()
                            ),
                        },
                        other => other,
                    })?;
                run_from_row(&row)
            }

            async fn get_workflow_run(&self, id: WorkflowRunId) -> Result<WorkflowRun> {
                let row = sqlx::query(sql::GET_RUN)
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("workflow run", id))?;
                run_from_row(&row)
            }

            async fn list_workflow_runs(
                &self,
                project_id: ProjectId,
                chain_id: Option<WorkChainId>,
            ) -> Result<Vec<WorkflowRun>> {
                let rows = sqlx::query(sql::LIST_RUNS)
                    .bind(project_id.as_uuid())
                    .bind(chain_id.map(|c| c.as_uuid()))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn list_unfinished_workflow_runs(&self) -> Result<Vec<WorkflowRun>> {
                let rows = sqlx::query(sql::LIST_UNFINISHED_RUNS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn update_workflow_run(
                &self,
                id: WorkflowRunId,
                from: RunStatus,
                state: RunState,
            ) -> Result<WorkflowRun> {
                if from.is_final() {
                    return Err(StoreError::InvalidRunTransition {
                        entity: "workflow run",
                        from,
                        to: state.status,
                    });
                }
                let now = now_micros();
                let row = sqlx::query(sql::UPDATE_RUN)
                    .bind(id.as_uuid())
                    .bind(from.as_str())
                    .bind(state.status.as_str())
                    .bind(state.iteration)
                    .bind(state.designer_sandbox_id.map(|s| s.as_uuid()))
                    .bind(state.verdict.map(Verdict::as_str))
                    .bind(&state.branch)
                    .bind(&state.error)
                    .bind(now)
                    .bind(state.status.is_final().then_some(now))
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else {
                    return Err(self
                        .status_miss_now(
                            sql::RUN_STATUS,
                            "workflow run",
                            id.as_uuid(),
                            &format!("`{from}`"),
                        )
                        .await);
                };
                run_from_row(&row)
            }

            async fn add_workflow_step(&self, new: NewWorkflowStep) -> Result<WorkflowStep> {
                let (mut tx, _turn) = self.write_tx().await?;
                let seq: i64 = sqlx::query(sql::NEXT_STEP_SEQ)
                    .bind(new.run_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("workflow run", new.run_id))?
                    .try_get("step_seq")?;
                let row = sqlx::query(sql::INSERT_STEP)
                    .bind(WorkflowStepId::new().as_uuid())
                    .bind(new.run_id.as_uuid())
                    .bind(seq)
                    .bind(new.role.as_str())
                    .bind(new.iteration)
                    .bind(now_micros())
                    .fetch_one(&mut *tx)
                    .await?;
                let step = step_from_row(&row)?;
                tx.commit().await?;
                Ok(step)
            }

            async fn set_workflow_step_sandbox(
                &self,
                id: WorkflowStepId,
                sandbox_id: SandboxId,
            ) -> Result<WorkflowStep> {
                let row = sqlx::query(sql::SET_STEP_SANDBOX)
                    .bind(id.as_uuid())
                    .bind(sandbox_id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        StoreError::NotFound { .. } => StoreError::not_found("sandbox", sandbox_id),
                        other => other,
                    })?
                    .ok_or_else(|| StoreError::not_found("workflow step", id))?;
                step_from_row(&row)
            }

            async fn finish_workflow_step(
                &self,
                id: WorkflowStepId,
                outcome: StepOutcome,
            ) -> Result<WorkflowStep> {
                crate::workflows::check_final("status", outcome.status)?;
                let row = sqlx::query(sql::FINISH_STEP)
                    .bind(id.as_uuid())
                    .bind(outcome.status.as_str())
                    .bind(outcome.verdict.map(Verdict::as_str))
                    .bind(outcome.feedback)
                    .bind(outcome.output)
                    .bind(outcome.error)
                    .bind(now_micros())
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else {
                    return Err(self
                        .status_miss_now(sql::STEP_STATUS, "workflow step", id.as_uuid(), "`running`")
                        .await);
                };
                step_from_row(&row)
            }

            async fn list_workflow_steps(&self, run_id: WorkflowRunId) -> Result<Vec<WorkflowStep>> {
                let rows = sqlx::query(sql::LIST_STEPS)
                    .bind(run_id.as_uuid())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(step_from_row).collect()
            }
        ] $($rest),*);
    };
}
