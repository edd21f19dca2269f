//! Usage records, their totals, and cost rates.

/// Appends the usage methods of [`Store`](crate::Store) to the methods gathered so far and
/// hands them on (see `impl_store!`).
macro_rules! store_usage {
    ($store:ty; [$($done:tt)*] $next:ident $(, $rest:ident)*) => {
        $next!($store; [
            $($done)*

            async fn record_usage(&self, records: &[NewUsage]) -> Result<Vec<UsageRecord>> {
                for r in records {
                    sql::check_non_negative("quantity", r.quantity)?;
                }
                let (mut tx, _turn) = self.write_tx().await?;
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
        ] $($rest),*);
    };
}
