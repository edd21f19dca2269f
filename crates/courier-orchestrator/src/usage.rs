//! Usage and cost: compute seconds per sandbox, tokens and cost from agent events, prices
//! from the store's rate table, totals per sandbox and project.

use chrono::{DateTime, Utc};
use courier_store::{
    Money, NewUsage, ProjectId, Sandbox, SandboxId, Service, Store, UsageMetric, UsageTotal,
};
use courier_tools::{AgentEvent, ToolId, Usage};

use crate::Result;

/// Who bills for a tool's tokens (`None` for the `shell` tool, which uses no model).
pub const fn service_for(tool: ToolId) -> Option<Service> {
    match tool {
        ToolId::Claude => Some(Service::Anthropic),
        ToolId::Opencode | ToolId::Pi => Some(Service::OpenRouter),
        ToolId::Codex => Some(Service::OpenAi),
        ToolId::Shell => None,
    }
}

/// Adds up one agent run's tokens and cost without counting anything twice.
///
/// Per-message [`AgentEvent::Usage`] events are summed while the run streams. The run's
/// [`AgentEvent::Result`] may carry the tool's own totals of the same tokens: when it does,
/// they replace the sum (they are never added to it). A cost the tool reports for the run
/// beats the sum of per-message costs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageMeter {
    from_events: Usage,
    result_usage: Option<Usage>,
    result_cost: Option<f64>,
}

impl UsageMeter {
    /// A meter with nothing counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts what `event` reports (other events are ignored).
    pub fn observe(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::Usage(usage) => self.from_events.add(usage),
            AgentEvent::Result(result) => {
                if let Some(usage) = &result.usage {
                    self.result_usage = Some(usage.clone());
                }
                if result.cost_usd.is_some() {
                    self.result_cost = result.cost_usd;
                }
            }
            _ => {}
        }
    }

    /// The run's usage so far; `cost_usd` is `None` when the tool reported no cost.
    pub fn total(&self) -> Usage {
        let mut total = self
            .result_usage
            .clone()
            .unwrap_or_else(|| self.from_events.clone());
        total.cost_usd = self
            .result_cost
            .or(total.cost_usd)
            .or(self.from_events.cost_usd);
        total
    }
}

/// Seconds between the sandbox's creation (the provider bills from there) and its end, or
/// `now` while it lives; never negative.
pub fn compute_seconds(sandbox: &Sandbox, now: DateTime<Utc>) -> f64 {
    seconds_since_creation(sandbox, sandbox.ended_at.unwrap_or(now))
}

fn seconds_since_creation(sandbox: &Sandbox, end: DateTime<Utc>) -> f64 {
    let millis = (end - sandbox.created_at).num_milliseconds().max(0);
    millis as f64 / 1000.0
}

async fn priced(
    store: &dyn Store,
    service: Service,
    metric: UsageMetric,
    quantity: f64,
    at: DateTime<Utc>,
) -> Result<Money> {
    Ok(match store.cost_rate_at(service, metric, at).await? {
        Some(rate) => Money::from_usd(quantity * rate.usd_per_unit),
        None => Money::default(),
    })
}

/// The usage records for one run's tokens: one per non-zero token metric.
///
/// Each record is priced from Courier's rate table (the rate in force at `at` for the
/// service and metric): the CLIs' own figures are estimates (OpenCode, Pi) or add up the
/// whole session (Claude's `total_cost_usd`). Only when the table has no rate for any of
/// the run's metrics is the cost the agent reported used, all of it on the output-token
/// record (or the first record when there are no output tokens), so the sandbox's total
/// equals what the agent reported; with neither, the tokens are free.
pub async fn token_records(
    store: &dyn Store,
    sandbox_id: SandboxId,
    service: Service,
    usage: &Usage,
    at: DateTime<Utc>,
) -> Result<Vec<NewUsage>> {
    let quantities = [
        (UsageMetric::InputTokens, usage.input_tokens),
        (UsageMetric::OutputTokens, usage.output_tokens),
        (UsageMetric::CacheReadTokens, usage.cache_read_tokens),
        (UsageMetric::CacheWriteTokens, usage.cache_write_tokens),
    ];
    let mut records = Vec::new();
    let mut any_rate = false;
    for (metric, quantity) in quantities.into_iter().filter(|(_, q)| *q > 0) {
        let cost = match store.cost_rate_at(service, metric, at).await? {
            Some(rate) => {
                any_rate = true;
                Money::from_usd(quantity as f64 * rate.usd_per_unit)
            }
            None => Money::default(),
        };
        records.push(NewUsage {
            sandbox_id,
            service,
            metric,
            quantity: quantity as f64,
            cost,
            recorded_at: at,
        });
    }
    if let Some(cost) = usage.cost_usd.filter(|_| !any_rate) {
        let index = records
            .iter()
            .position(|r| r.metric == UsageMetric::OutputTokens)
            .unwrap_or(0);
        match records.get_mut(index) {
            Some(record) => record.cost = Money::from_usd(cost),
            None if cost > 0.0 => records.push(NewUsage {
                sandbox_id,
                service,
                metric: UsageMetric::OutputTokens,
                quantity: 0.0,
                cost: Money::from_usd(cost),
                recorded_at: at,
            }),
            None => {}
        }
    }
    Ok(records)
}

/// The compute record of a sandbox that ended (E2B compute seconds, priced by the rate
/// table at its end): billed until its recorded end, or `now` while it lives.
pub async fn compute_record(
    store: &dyn Store,
    sandbox: &Sandbox,
    now: DateTime<Utc>,
) -> Result<NewUsage> {
    compute_record_until(store, sandbox, sandbox.ended_at.unwrap_or(now)).await
}

/// The compute record of a sandbox billed from its creation until `end` (the orchestrator
/// passes its clock's time when it destroyed the provider sandbox), priced by the rate in
/// force at `end`; never negative.
pub async fn compute_record_until(
    store: &dyn Store,
    sandbox: &Sandbox,
    end: DateTime<Utc>,
) -> Result<NewUsage> {
    let seconds = seconds_since_creation(sandbox, end);
    Ok(NewUsage {
        sandbox_id: sandbox.id,
        service: Service::E2b,
        metric: UsageMetric::ComputeSeconds,
        quantity: seconds,
        cost: priced(
            store,
            Service::E2b,
            UsageMetric::ComputeSeconds,
            seconds,
            end,
        )
        .await?,
        recorded_at: end,
    })
}

/// Usage totals across services.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSummary {
    /// Sandbox seconds.
    pub compute_seconds: f64,
    /// Input tokens (not cached).
    pub input_tokens: f64,
    /// Output tokens.
    pub output_tokens: f64,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: f64,
    /// Tokens written to the prompt cache.
    pub cache_write_tokens: f64,
    /// Total cost.
    pub cost: Money,
}

impl UsageSummary {
    /// Adds another summary (a workflow run sums its sandboxes').
    pub fn add(&mut self, other: &UsageSummary) {
        self.compute_seconds += other.compute_seconds;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost = Money::from_micros(self.cost.micros() + other.cost.micros());
    }

    /// Sums the store's per-service totals.
    pub fn from_totals(totals: &[UsageTotal]) -> Self {
        let mut s = UsageSummary::default();
        for t in totals {
            let slot = match t.metric {
                UsageMetric::ComputeSeconds => &mut s.compute_seconds,
                UsageMetric::InputTokens => &mut s.input_tokens,
                UsageMetric::OutputTokens => &mut s.output_tokens,
                UsageMetric::CacheReadTokens => &mut s.cache_read_tokens,
                UsageMetric::CacheWriteTokens => &mut s.cache_write_tokens,
            };
            *slot += t.quantity;
            s.cost = Money::from_micros(s.cost.micros() + t.cost.micros());
        }
        s
    }

    /// A sandbox's totals.
    pub async fn for_sandbox(store: &dyn Store, id: SandboxId) -> Result<Self> {
        Ok(Self::from_totals(&store.usage_for_sandbox(id).await?))
    }

    /// A project's totals.
    pub async fn for_project(store: &dyn Store, id: ProjectId) -> Result<Self> {
        Ok(Self::from_totals(&store.usage_for_project(id).await?))
    }

    /// A sandbox's totals as of `now`: while it lives, its compute record is written only
    /// at its end, so the seconds so far (priced by the rate in force at `now`) are added
    /// to what is recorded; an ended sandbox's totals are what is recorded.
    pub async fn for_sandbox_at(
        store: &dyn Store,
        sandbox: &Sandbox,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let mut totals = store.usage_for_sandbox(sandbox.id).await?;
        let compute_recorded = totals
            .iter()
            .any(|t| t.metric == UsageMetric::ComputeSeconds);
        if sandbox.ended_at.is_none() && !compute_recorded {
            let live = compute_record(store, sandbox, now).await?;
            totals.push(UsageTotal {
                service: live.service,
                metric: live.metric,
                quantity: live.quantity,
                cost: live.cost,
            });
        }
        Ok(Self::from_totals(&totals))
    }
}

#[cfg(test)]
mod tests {
    use courier_store::NewCostRate;
    use courier_tools::{RunResult, StreamParser};

    use super::*;
    use crate::testing::{Seeded, fixture};

    fn usage(input: u64, output: u64, cost: Option<f64>) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost,
            ..Default::default()
        }
    }

    fn result(usage: Option<Usage>, cost: Option<f64>) -> AgentEvent {
        AgentEvent::Result(RunResult {
            success: true,
            text: None,
            cost_usd: cost,
            usage,
            num_turns: None,
            duration_ms: None,
            session_usage: None,
        })
    }

    #[test]
    fn usage_events_are_summed_when_the_result_has_no_totals() {
        let mut meter = UsageMeter::new();
        meter.observe(&AgentEvent::Usage(usage(10, 5, None)));
        meter.observe(&AgentEvent::Usage(usage(3, 2, None)));
        meter.observe(&result(None, None));
        assert_eq!(meter.total(), usage(13, 7, None));
    }

    #[test]
    fn result_totals_replace_the_event_sum_instead_of_adding_to_it() {
        let mut meter = UsageMeter::new();
        meter.observe(&AgentEvent::Usage(usage(10, 5, Some(0.01))));
        meter.observe(&AgentEvent::Usage(usage(3, 2, Some(0.02))));
        meter.observe(&result(Some(usage(13, 7, None)), Some(0.05)));
        assert_eq!(meter.total(), usage(13, 7, Some(0.05)));
    }

    #[test]
    fn per_message_costs_are_used_when_the_run_reports_none() {
        let mut meter = UsageMeter::new();
        meter.observe(&AgentEvent::Usage(usage(1, 1, Some(0.25))));
        meter.observe(&AgentEvent::Usage(usage(1, 1, Some(0.5))));
        meter.observe(&result(Some(usage(2, 2, None)), None));
        assert_eq!(meter.total(), usage(2, 2, Some(0.75)));
    }

    #[test]
    fn recorded_claude_stream_is_billed_once() {
        let events =
            StreamParser::parse_all(ToolId::Claude, &fixture("claude_success.jsonl"), Some(0));
        let mut meter = UsageMeter::new();
        events.iter().for_each(|e| meter.observe(e));
        let Some(AgentEvent::Result(result)) = events.last() else {
            panic!("stream must end in a result");
        };
        let total = meter.total();
        assert_eq!(
            Some(&total).map(|t| t.input_tokens),
            result.usage.as_ref().map(|u| u.input_tokens)
        );
        assert_eq!(total.cost_usd, result.cost_usd);
    }

    #[test]
    fn each_tool_bills_its_provider() {
        assert_eq!(service_for(ToolId::Claude), Some(Service::Anthropic));
        assert_eq!(service_for(ToolId::Codex), Some(Service::OpenAi));
        assert_eq!(service_for(ToolId::Pi), Some(Service::OpenRouter));
        assert_eq!(service_for(ToolId::Shell), None);
    }

    #[tokio::test]
    async fn unreported_cost_is_priced_from_the_rate_table() {
        let Seeded { store, sandbox, .. } = Seeded::new().await;
        let store = store.as_ref();
        let at = Utc::now();
        store
            .put_cost_rate(NewCostRate {
                service: Service::OpenAi,
                metric: UsageMetric::InputTokens,
                usd_per_unit: 0.000_002,
                effective_from: at - chrono::Duration::days(1),
            })
            .await
            .unwrap();
        store
            .put_cost_rate(NewCostRate {
                service: Service::OpenAi,
                metric: UsageMetric::OutputTokens,
                usd_per_unit: 0.000_01,
                effective_from: at - chrono::Duration::days(1),
            })
            .await
            .unwrap();
        let records = token_records(
            store,
            sandbox.id,
            Service::OpenAi,
            &usage(1000, 500, None),
            at,
        )
        .await
        .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].cost, Money::from_usd(0.002));
        assert_eq!(records[1].cost, Money::from_usd(0.005));
        store.record_usage(&records).await.unwrap();
        let summary = UsageSummary::for_sandbox(store, sandbox.id).await.unwrap();
        assert_eq!(summary.input_tokens, 1000.0);
        assert_eq!(summary.output_tokens, 500.0);
        assert_eq!(summary.cost, Money::from_usd(0.007));
    }

    #[tokio::test]
    async fn a_reported_cost_is_recorded_exactly_once() {
        let Seeded {
            store,
            project,
            sandbox,
            ..
        } = Seeded::new().await;
        let store = store.as_ref();
        let records = token_records(
            store,
            sandbox.id,
            Service::Anthropic,
            &usage(10, 20, Some(0.125)),
            Utc::now(),
        )
        .await
        .unwrap();
        let total: i64 = records.iter().map(|r| r.cost.micros()).sum();
        assert_eq!(total, Money::from_usd(0.125).micros());
        store.record_usage(&records).await.unwrap();
        let summary = UsageSummary::for_project(store, project.id).await.unwrap();
        assert_eq!(summary.cost, Money::from_usd(0.125));
    }

    #[tokio::test]
    async fn compute_seconds_run_from_creation_to_the_end() {
        let Seeded {
            store, mut sandbox, ..
        } = Seeded::new().await;
        let store = store.as_ref();
        sandbox.ended_at = Some(sandbox.created_at + chrono::Duration::milliseconds(90_500));
        assert_eq!(compute_seconds(&sandbox, Utc::now()), 90.5);
        let record = compute_record(store, &sandbox, Utc::now()).await.unwrap();
        assert_eq!(record.metric, UsageMetric::ComputeSeconds);
        assert_eq!(record.quantity, 90.5);
        assert_eq!(record.cost, Money::default());

        sandbox.ended_at = None;
        let later = sandbox.created_at + chrono::Duration::seconds(3);
        // While it lives, its usage shows the seconds so far, priced by today's rate.
        store
            .put_cost_rate(NewCostRate {
                service: Service::E2b,
                metric: UsageMetric::ComputeSeconds,
                usd_per_unit: 0.000_1,
                effective_from: sandbox.created_at - chrono::Duration::days(1),
            })
            .await
            .unwrap();
        let live = UsageSummary::for_sandbox_at(store, &sandbox, later)
            .await
            .unwrap();
        assert_eq!(live.compute_seconds, 3.0);
        assert_eq!(live.cost, Money::from_usd(0.000_3));
        // Once ended and recorded, the record is the whole figure: nothing counted twice.
        sandbox.ended_at = Some(later);
        let record = compute_record(store, &sandbox, later).await.unwrap();
        store.record_usage(&[record]).await.unwrap();
        let ended =
            UsageSummary::for_sandbox_at(store, &sandbox, later + chrono::Duration::hours(1))
                .await
                .unwrap();
        assert_eq!(ended.compute_seconds, 3.0);
        sandbox.ended_at = None;
        assert_eq!(compute_seconds(&sandbox, later), 3.0);
        assert_eq!(
            compute_seconds(&sandbox, sandbox.created_at - chrono::Duration::seconds(3)),
            0.0
        );
    }
}
