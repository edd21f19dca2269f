//! Metrics samples of a sandbox, read from its cgroup and its writable layer, and the
//! bounded history of them that `GET /sandboxes/{id}/metrics?start=&end=` and
//! `GET /sandboxes/metrics?sandbox_ids=` answer from.
//!
//! E2B collects a sample per running sandbox every 5 s and answers a time range from
//! them; so does this server ([`SAMPLE_EVERY`]), keeping the last [`KEPT_SAMPLES`] per
//! sandbox (one hour) in memory. The history is not persisted: like E2B's, it describes a
//! sandbox's processes, which a server restart does not keep sampling across, and it is
//! dropped when the sandbox is killed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::registry::Entry;
use super::{Inner, Sandboxd, blocking};
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::state::SandboxState;

/// How often every running sandbox is sampled (E2B's collection bucket).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples kept per sandbox: one hour at [`SAMPLE_EVERY`].
pub const KEPT_SAMPLES: usize = 720;

/// An on-demand read adds a sample only when the newest is at least this old, so a
/// client polling in a loop cannot push the sampled history out of the ring.
const FRESH_ENOUGH: Duration = Duration::from_secs(1);

/// One metrics sample of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// When it was taken.
    pub timestamp: DateTime<Utc>,
    /// CPU quota in CPUs.
    pub cpu_count: u32,
    /// CPU use since the previous sample (or since start), percent of the quota.
    pub cpu_used_pct: f64,
    /// Memory charged to the sandbox's cgroup, bytes.
    pub mem_used: u64,
    /// Its memory limit, bytes.
    pub mem_total: u64,
    /// Bytes written to the sandbox's own layer.
    pub disk_used: u64,
    /// Disk size reported for the sandbox, bytes.
    pub disk_total: u64,
}

/// The per-sandbox rings of samples.
#[derive(Debug, Default)]
pub(super) struct MetricsHistory {
    rings: Mutex<HashMap<String, VecDeque<Metric>>>,
}

impl MetricsHistory {
    fn push(&self, id: &str, metric: Metric) {
        let mut rings = lock(&self.rings);
        let ring = rings.entry(id.to_owned()).or_default();
        if ring.len() == KEPT_SAMPLES {
            ring.pop_front();
        }
        ring.push_back(metric);
    }

    fn newest_at(&self, id: &str) -> Option<DateTime<Utc>> {
        lock(&self.rings)
            .get(id)
            .and_then(|r| r.back())
            .map(|m| m.timestamp)
    }

    /// The samples of `id` whose second falls in `start..=end` (unix seconds, either
    /// open), oldest first.
    fn range(&self, id: &str, start: Option<i64>, end: Option<i64>) -> Vec<Metric> {
        lock(&self.rings)
            .get(id)
            .map(|ring| {
                ring.iter()
                    .filter(|m| {
                        let s = m.timestamp.timestamp();
                        start.is_none_or(|start| s >= start) && end.is_none_or(|end| s <= end)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn forget(&self, id: &str) {
        lock(&self.rings).remove(id);
    }
}

/// A time range of `GET /sandboxes/{id}/metrics`, in unix seconds (E2B's `start`, `end`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsRange {
    /// First second included; `None` for the oldest kept sample.
    pub start: Option<i64>,
    /// Last second included; `None` for now.
    pub end: Option<i64>,
}

impl Sandboxd {
    /// A metrics sample of sandbox `id`, read from its cgroup and its writable layer (and
    /// added to its history).
    pub async fn metrics(&self, id: &str) -> Result<Metric> {
        let entry = self.entry_or_404(id)?;
        if entry.record().paused_layers.is_some() {
            return Err(Error::Conflict(format!(
                "sandbox {id} is paused filesystem-only: nothing of it runs to measure"
            )));
        }
        self.sample(&entry).await
    }

    /// The kept samples of sandbox `id` within `range`, oldest first. A running sandbox
    /// whose newest sample is older than a second is sampled first, so a range ending now
    /// includes now; a range wholly before the sandbox existed is empty.
    pub async fn metrics_range(&self, id: &str, range: MetricsRange) -> Result<Vec<Metric>> {
        let entry = self.entry_or_404(id)?;
        let stale = self
            .inner
            .metrics
            .newest_at(id)
            .is_none_or(|at| (Utc::now() - at).to_std().unwrap_or_default() >= FRESH_ENOUGH);
        if stale && entry.record().state == SandboxState::Running {
            self.sample(&entry).await?;
        }
        Ok(self.inner.metrics.range(id, range.start, range.end))
    }

    async fn sample(&self, entry: &Arc<Entry>) -> Result<Metric> {
        let runtime = self.inner.runtime.clone();
        let sid = entry.id.clone();
        let (stats, (disk_used, disk_total)) =
            blocking(move || Ok((runtime.stats(&sid)?, runtime.disk_usage(&sid)?))).await?;
        let record = entry.record();
        let now = Instant::now();
        let cpu_used_pct = {
            let mut sample = lock(&entry.cpu_sample);
            let (since, base) = sample.unwrap_or_else(|| {
                let age = (Utc::now() - record.started_at)
                    .to_std()
                    .unwrap_or_default();
                (now.checked_sub(age).unwrap_or(now), 0)
            });
            *sample = Some((now, stats.cpu_usage_ns));
            let wall = now.duration_since(since).as_nanos() as f64;
            if wall <= 0.0 {
                0.0
            } else {
                let used = stats.cpu_usage_ns.saturating_sub(base) as f64;
                (used / wall / f64::from(record.cpu_count) * 100.0).clamp(0.0, 100.0)
            }
        };
        let metric = Metric {
            timestamp: Utc::now(),
            cpu_count: record.cpu_count,
            cpu_used_pct,
            mem_used: stats.memory_bytes,
            mem_total: stats
                .memory_limit_bytes
                .unwrap_or(record.memory_mb * 1024 * 1024),
            disk_used,
            disk_total,
        };
        // A sandbox killed while it was being sampled keeps no history.
        if self.still_known(entry) {
            self.inner.metrics.push(&entry.id, metric.clone());
        }
        Ok(metric)
    }
}

/// Samples every running sandbox every [`SAMPLE_EVERY`] until the server stops.
pub(super) async fn sampler(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.shutdown.is_cancelled() {
            return;
        }
        let server = Sandboxd { inner };
        let entries: Vec<Arc<Entry>> = lock(&server.inner.sandboxes).values().cloned().collect();
        for entry in entries {
            if entry.record().state != SandboxState::Running {
                continue;
            }
            if let Err(error) = server.sample(&entry).await {
                tracing::debug!(sandbox = %entry.id, %error, "metrics sample failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Metric {
        Metric {
            timestamp: DateTime::from_timestamp(secs, 500_000_000).unwrap(),
            cpu_count: 1,
            cpu_used_pct: 0.0,
            mem_used: 0,
            mem_total: 0,
            disk_used: 0,
            disk_total: 0,
        }
    }

    #[test]
    fn the_ring_is_bounded_and_ranges_are_inclusive_by_second() {
        let history = MetricsHistory::default();
        for s in 0..(KEPT_SAMPLES as i64 + 10) {
            history.push("a", at(s));
        }
        let all = history.range("a", None, None);
        assert_eq!(all.len(), KEPT_SAMPLES);
        assert_eq!(all[0].timestamp.timestamp(), 10, "the oldest fell out");
        // Second precision: a sample at 100.5 s is in 100..=100.
        let one = history.range("a", Some(100), Some(100));
        assert_eq!(one.len(), 1);
        assert!(history.range("a", Some(-100), Some(5)).is_empty());
        // Another sandbox's history is not reachable through this one's id.
        assert!(history.range("b", None, None).is_empty());
        history.forget("a");
        assert!(history.range("a", None, None).is_empty());
    }
}
