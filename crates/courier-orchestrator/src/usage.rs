//! Usage and cost: compute seconds per sandbox (priced per vCPU-second and GiB-second, like
//! E2B), tokens and cost from agent events, prices from the store's rate table, totals per
//! sandbox and project.

use chrono::{DateTime, Utc};
use courier_store::{
    CostRate, Money, NewCostRate, NewUsage, ProjectId, Sandbox, SandboxId, Service, Store,
    UsageMetric, UsageTotal,
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

/// E2B's price of one vCPU for one second, in US dollars: $0.0504 per vCPU-hour.
///
/// E2B bills per second for the vCPUs and RAM allocated to a sandbox, not what it uses
/// (<https://e2b.dev/docs/billing>); the rates are those of <https://e2b.dev/pricing>
/// (an 8 vCPU, 4 GiB sandbox costs $0.468 an hour: 8 × $0.0504 + 4 × $0.0162).
pub const E2B_USD_PER_VCPU_SECOND: f64 = 0.000_014;

/// E2B's price of one GiB of RAM for one second, in US dollars: $0.0162 per GiB-hour
/// (see [`E2B_USD_PER_VCPU_SECOND`]).
pub const E2B_USD_PER_GIB_SECOND: f64 = 0.000_004_5;

/// The rates [`seed_default_rates`] puts in the rate table when it has none for their
/// service and metric: E2B's per-second CPU and memory prices.
pub const DEFAULT_RATES: [(Service, UsageMetric, f64); 2] = [
    (
        Service::E2b,
        UsageMetric::CpuSeconds,
        E2B_USD_PER_VCPU_SECOND,
    ),
    (
        Service::E2b,
        UsageMetric::MemoryGibSeconds,
        E2B_USD_PER_GIB_SECOND,
    ),
];

/// Puts each of [`DEFAULT_RATES`] in the rate table, in force since the Unix epoch, unless
/// the table already has a rate (of any date) for its service and metric: a rate the
/// operator set is never replaced, and running this again adds nothing. Returns the rates
/// added.
pub async fn seed_default_rates(store: &dyn Store) -> Result<Vec<CostRate>> {
    let existing = store.list_cost_rates().await?;
    let mut added = Vec::new();
    for (service, metric, usd_per_unit) in DEFAULT_RATES {
        if existing
            .iter()
            .any(|r| r.service == service && r.metric == metric)
        {
            continue;
        }
        added.push(
            store
                .put_cost_rate(NewCostRate {
                    service,
                    metric,
                    usd_per_unit,
                    effective_from: DateTime::<Utc>::UNIX_EPOCH,
                })
                .await?,
        );
    }
    Ok(added)
}

/// The compute records of a sandbox (see [`compute_records_until`]): billed until its
/// recorded end, or `now` while it lives.
pub async fn compute_records(
    store: &dyn Store,
    sandbox: &Sandbox,
    now: DateTime<Utc>,
) -> Result<Vec<NewUsage>> {
    compute_records_until(store, sandbox, sandbox.ended_at.unwrap_or(now)).await
}

/// The compute records of a sandbox billed from its creation until `end` (the
/// orchestrator passes its clock's time when it destroyed the provider sandbox); never
/// negative. Like E2B, compute is priced per second by the resources allocated:
///
/// - `cpu_seconds` (seconds × its `cpu_count`) at the E2B `cpu_seconds` rate,
/// - `memory_gib_seconds` (seconds × `memory_mb` / 1024) at the E2B `memory_gib_seconds`
///   rate,
/// - `compute_seconds` (the wall-clock seconds, kept for display) **unpriced**: its cost
///   is 0 whatever the table says, so a sandbox is never charged twice for the same
///   seconds. Records written before the per-resource metrics existed keep the cost they
///   were written with (history is never re-priced).
///
/// Each rate is the one in force at `end`; a metric without one costs nothing.
pub async fn compute_records_until(
    store: &dyn Store,
    sandbox: &Sandbox,
    end: DateTime<Utc>,
) -> Result<Vec<NewUsage>> {
    let seconds = seconds_since_creation(sandbox, end);
    let cpus = sandbox.config.cpu_count.max(0) as f64;
    let gib = sandbox.config.memory_mb.max(0) as f64 / 1024.0;
    let mut records = vec![NewUsage {
        sandbox_id: sandbox.id,
        service: Service::E2b,
        metric: UsageMetric::ComputeSeconds,
        quantity: seconds,
        cost: Money::default(),
        recorded_at: end,
    }];
    for (metric, quantity) in [
        (UsageMetric::CpuSeconds, seconds * cpus),
        (UsageMetric::MemoryGibSeconds, seconds * gib),
    ] {
        records.push(NewUsage {
            sandbox_id: sandbox.id,
            service: Service::E2b,
            metric,
            quantity,
            cost: priced(store, Service::E2b, metric, quantity, end).await?,
            recorded_at: end,
        });
    }
    Ok(records)
}

/// Usage totals across services.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSummary {
    /// Sandbox seconds.
    pub compute_seconds: f64,
    /// vCPU-seconds (sandbox seconds times vCPUs).
    pub cpu_seconds: f64,
    /// GiB-seconds of memory (sandbox seconds times GiB of RAM).
    pub memory_gib_seconds: f64,
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
        self.cpu_seconds += other.cpu_seconds;
        self.memory_gib_seconds += other.memory_gib_seconds;
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
                UsageMetric::CpuSeconds => &mut s.cpu_seconds,
                UsageMetric::MemoryGibSeconds => &mut s.memory_gib_seconds,
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

    /// A sandbox's totals as of `now`: while it lives, its compute records are written
    /// only at its end, so the figures so far ([`compute_records`]: seconds, vCPU-seconds
    /// and GiB-seconds, priced by the rates in force at `now`) are added to what is
    /// recorded; an ended sandbox's totals are what is recorded.
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
            for live in compute_records(store, sandbox, now).await? {
                totals.push(UsageTotal {
                    service: live.service,
                    metric: live.metric,
                    quantity: live.quantity,
                    cost: live.cost,
                });
            }
        }
        Ok(Self::from_totals(&totals))
    }
}

#[cfg(test)]
mod tests {
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

    /// Puts `usd_per_unit` for E2B's `metric` in force since a day before `at`.
    async fn rate(store: &dyn Store, metric: UsageMetric, usd_per_unit: f64, at: DateTime<Utc>) {
        store
            .put_cost_rate(NewCostRate {
                service: Service::E2b,
                metric,
                usd_per_unit,
                effective_from: at - chrono::Duration::days(1),
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn compute_seconds_run_from_creation_to_the_end() {
        let Seeded {
            store, mut sandbox, ..
        } = Seeded::new().await;
        let store = store.as_ref();
        (sandbox.config.cpu_count, sandbox.config.memory_mb) = (2, 1024);
        sandbox.ended_at = Some(sandbox.created_at + chrono::Duration::milliseconds(90_500));
        assert_eq!(compute_seconds(&sandbox, Utc::now()), 90.5);
        let records = compute_records(store, &sandbox, Utc::now()).await.unwrap();
        let figures: Vec<_> = records.iter().map(|r| (r.metric, r.quantity)).collect();
        assert_eq!(
            figures,
            vec![
                (UsageMetric::ComputeSeconds, 90.5),
                (UsageMetric::CpuSeconds, 181.0),
                (UsageMetric::MemoryGibSeconds, 90.5),
            ]
        );
        // No rate in the table: free.
        assert!(records.iter().all(|r| r.cost == Money::default()));

        sandbox.ended_at = None;
        let later = sandbox.created_at + chrono::Duration::seconds(3);
        // While it lives, its usage shows the figures so far, priced by today's rates.
        rate(store, UsageMetric::CpuSeconds, 0.000_1, sandbox.created_at).await;
        rate(
            store,
            UsageMetric::MemoryGibSeconds,
            0.000_01,
            sandbox.created_at,
        )
        .await;
        let live = UsageSummary::for_sandbox_at(store, &sandbox, later)
            .await
            .unwrap();
        assert_eq!(
            (
                live.compute_seconds,
                live.cpu_seconds,
                live.memory_gib_seconds
            ),
            (3.0, 6.0, 3.0)
        );
        assert_eq!(live.cost, Money::from_usd(6.0 * 0.000_1 + 3.0 * 0.000_01));
        // Once ended and recorded, the records are the whole figure: nothing counted twice.
        sandbox.ended_at = Some(later);
        let records = compute_records(store, &sandbox, later).await.unwrap();
        store.record_usage(&records).await.unwrap();
        let ended =
            UsageSummary::for_sandbox_at(store, &sandbox, later + chrono::Duration::hours(1))
                .await
                .unwrap();
        assert_eq!(ended, live);
        sandbox.ended_at = None;
        assert_eq!(compute_seconds(&sandbox, later), 3.0);
        assert_eq!(
            compute_seconds(&sandbox, sandbox.created_at - chrono::Duration::seconds(3)),
            0.0
        );
    }

    #[tokio::test]
    async fn compute_is_priced_per_vcpu_second_and_gib_second_and_charged_once() {
        let Seeded {
            store, mut sandbox, ..
        } = Seeded::new().await;
        let store = store.as_ref();
        assert_eq!(seed_default_rates(store).await.unwrap().len(), 2);
        // A flat rate per sandbox-second left in the table is not charged on top.
        rate(store, UsageMetric::ComputeSeconds, 0.01, sandbox.created_at).await;
        (sandbox.config.cpu_count, sandbox.config.memory_mb) = (2, 2048);
        let end = sandbox.created_at + chrono::Duration::seconds(100);
        let expected = Money::from_usd(
            100.0 * 2.0 * E2B_USD_PER_VCPU_SECOND + 100.0 * 2.0 * E2B_USD_PER_GIB_SECOND,
        );
        assert_eq!(expected, Money::from_micros(3_700), "$0.0028 + $0.0009");

        // Live, before the kill.
        let live = UsageSummary::for_sandbox_at(store, &sandbox, end)
            .await
            .unwrap();
        assert_eq!(live.cost, expected);

        let records = compute_records_until(store, &sandbox, end).await.unwrap();
        let costs: Vec<_> = records.iter().map(|r| (r.metric, r.cost)).collect();
        assert_eq!(
            costs,
            vec![
                (UsageMetric::ComputeSeconds, Money::default()),
                (UsageMetric::CpuSeconds, Money::from_micros(2_800)),
                (UsageMetric::MemoryGibSeconds, Money::from_micros(900)),
            ]
        );
        store.record_usage(&records).await.unwrap();
        sandbox.ended_at = Some(end);
        let ended = UsageSummary::for_sandbox_at(store, &sandbox, end + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(
            (
                ended.compute_seconds,
                ended.cpu_seconds,
                ended.memory_gib_seconds
            ),
            (100.0, 200.0, 200.0)
        );
        assert_eq!(ended.cost, expected);
    }

    #[tokio::test]
    async fn records_from_before_the_resource_metrics_keep_their_price() {
        let Seeded {
            store,
            project,
            sandbox,
            ..
        } = Seeded::new().await;
        let store = store.as_ref();
        // History: compute seconds alone, priced by a flat rate when written.
        store
            .record_usage(&[NewUsage {
                sandbox_id: sandbox.id,
                service: Service::E2b,
                metric: UsageMetric::ComputeSeconds,
                quantity: 100.0,
                cost: Money::from_usd(0.01),
                recorded_at: sandbox.created_at,
            }])
            .await
            .unwrap();
        seed_default_rates(store).await.unwrap();
        let summary = UsageSummary::for_project(store, project.id).await.unwrap();
        assert_eq!(
            (summary.compute_seconds, summary.cpu_seconds, summary.cost),
            (100.0, 0.0, Money::from_usd(0.01))
        );
    }

    #[tokio::test]
    async fn default_rates_never_replace_the_operators() {
        let Seeded { store, .. } = Seeded::new().await;
        let store = store.as_ref();
        let now = Utc::now();
        rate(store, UsageMetric::CpuSeconds, 0.000_02, now).await;
        let added = seed_default_rates(store).await.unwrap();
        assert_eq!(
            added.iter().map(|r| r.metric).collect::<Vec<_>>(),
            vec![UsageMetric::MemoryGibSeconds]
        );
        assert!(seed_default_rates(store).await.unwrap().is_empty());
        let cpu = store
            .cost_rate_at(Service::E2b, UsageMetric::CpuSeconds, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cpu.usd_per_unit, 0.000_02);
        let memory = store
            .cost_rate_at(Service::E2b, UsageMetric::MemoryGibSeconds, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(memory.usd_per_unit, E2B_USD_PER_GIB_SECOND);
    }
}
