//! Usage totals and cost rates.

use chrono::{Duration, NaiveDate};

use super::seed::*;
use crate::*;

/// Totals add up per sandbox, per project and per UTC day.
pub async fn usage_totals_per_sandbox_project_and_day(store: &dyn Store) {
    let p = project(store).await;
    let other = project(store).await;
    let a = sandbox(store, &p).await;
    let b = sandbox(store, &p).await;
    let elsewhere = sandbox(store, &other).await;
    let rec = |sandbox_id, service, metric, quantity, micros, time| NewUsage {
        sandbox_id,
        service,
        metric,
        quantity,
        cost: Money::from_micros(micros),
        recorded_at: time,
    };
    use Service::*;
    use UsageMetric::*;
    let stored = store
        .record_usage(&[
            rec(a.id, Anthropic, InputTokens, 1000.0, 3000, at(1, 10)),
            rec(a.id, Anthropic, InputTokens, 500.0, 1500, at(2, 9)),
            rec(a.id, Anthropic, OutputTokens, 200.0, 3000, at(2, 9)),
            rec(b.id, E2b, ComputeSeconds, 90.5, 2500, at(2, 23)),
            rec(b.id, Anthropic, InputTokens, 100.0, 300, at(3, 0)),
            rec(elsewhere.id, E2b, ComputeSeconds, 10.0, 99, at(2, 1)),
            rec(elsewhere.id, E2b, CpuSeconds, 20.0, 280, at(2, 1)),
            rec(elsewhere.id, E2b, MemoryGibSeconds, 5.0, 23, at(2, 1)),
        ])
        .await
        .unwrap();
    assert_eq!(stored.len(), 8);
    assert_eq!(stored[0].project_id, p.id);
    assert_eq!(stored[0].sandbox_id, Some(a.id));
    assert_eq!(stored[0].recorded_at, at(1, 10));

    let total = |service, metric, quantity, micros| UsageTotal {
        service,
        metric,
        quantity,
        cost: Money::from_micros(micros),
    };
    assert_eq!(
        store.usage_for_sandbox(a.id).await.unwrap(),
        vec![
            total(Anthropic, InputTokens, 1500.0, 4500),
            total(Anthropic, OutputTokens, 200.0, 3000)
        ]
    );
    assert_eq!(
        store.usage_for_project(p.id).await.unwrap(),
        vec![
            total(E2b, ComputeSeconds, 90.5, 2500),
            total(Anthropic, InputTokens, 1600.0, 4800),
            total(Anthropic, OutputTokens, 200.0, 3000),
        ]
    );
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let daily = store.daily_usage(p.id, at(2, 0), at(3, 0)).await.unwrap();
    assert_eq!(
        daily,
        vec![
            DailyUsage {
                day: day(2),
                total: total(E2b, ComputeSeconds, 90.5, 2500)
            },
            DailyUsage {
                day: day(2),
                total: total(Anthropic, InputTokens, 500.0, 1500)
            },
            DailyUsage {
                day: day(2),
                total: total(Anthropic, OutputTokens, 200.0, 3000)
            },
        ]
    );
    let all_days = store.daily_usage(p.id, at(1, 0), at(4, 0)).await.unwrap();
    assert_eq!(
        all_days.iter().map(|d| d.day).collect::<Vec<_>>(),
        vec![day(1), day(2), day(2), day(2), day(3)]
    );
    // The per-resource compute metrics are stored and summed like any other.
    assert_eq!(
        store.usage_for_sandbox(elsewhere.id).await.unwrap(),
        vec![
            total(E2b, ComputeSeconds, 10.0, 99),
            total(E2b, CpuSeconds, 20.0, 280),
            total(E2b, MemoryGibSeconds, 5.0, 23),
        ]
    );
    assert!(
        store
            .usage_for_sandbox(SandboxId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

/// The rate in force is the latest one effective at or before the usage.
pub async fn cost_rates_apply_from_their_start(store: &dyn Store) {
    let old = store
        .put_cost_rate(NewCostRate {
            service: Service::Anthropic,
            metric: UsageMetric::InputTokens,
            usd_per_unit: 0.000003,
            effective_from: at(1, 0),
        })
        .await
        .unwrap();
    let new = store
        .put_cost_rate(NewCostRate {
            service: Service::Anthropic,
            metric: UsageMetric::InputTokens,
            usd_per_unit: 0.0000025,
            effective_from: at(10, 0),
        })
        .await
        .unwrap();
    let e2b = store
        .put_cost_rate(NewCostRate {
            service: Service::E2b,
            metric: UsageMetric::ComputeSeconds,
            usd_per_unit: 0.000014,
            effective_from: at(1, 0),
        })
        .await
        .unwrap();
    let rate = |t| store.cost_rate_at(Service::Anthropic, UsageMetric::InputTokens, t);
    assert_eq!(rate(at(1, 0) - Duration::seconds(1)).await.unwrap(), None);
    assert_eq!(rate(at(1, 0)).await.unwrap(), Some(old.clone()));
    assert_eq!(rate(at(9, 23)).await.unwrap(), Some(old.clone()));
    assert_eq!(rate(at(20, 0)).await.unwrap(), Some(new.clone()));
    assert_eq!(store.list_cost_rates().await.unwrap(), vec![e2b, old, new]);
    expect_conflict(
        store
            .put_cost_rate(NewCostRate {
                service: Service::Anthropic,
                metric: UsageMetric::InputTokens,
                usd_per_unit: 1.0,
                effective_from: at(1, 0),
            })
            .await,
    );
    expect_invalid(
        store
            .put_cost_rate(NewCostRate {
                service: Service::OpenAi,
                metric: UsageMetric::InputTokens,
                usd_per_unit: f64::NAN,
                effective_from: at(1, 0),
            })
            .await,
        "usd_per_unit",
    );
}
