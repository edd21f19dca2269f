//! Metrics samples of a sandbox, read from its cgroup and its writable layer.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Sandboxd, blocking};
use crate::error::{Error, Result};
use crate::lock::lock;

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

impl Sandboxd {
    /// A metrics sample of sandbox `id`, read from its cgroup and its writable layer.
    pub async fn metrics(&self, id: &str) -> Result<Metric> {
        let entry = self.entry_or_404(id)?;
        if entry.record().paused_layers.is_some() {
            return Err(Error::Conflict(format!(
                "sandbox {id} is paused filesystem-only: nothing of it runs to measure"
            )));
        }
        let runtime = self.inner.runtime.clone();
        let sid = id.to_owned();
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
        Ok(Metric {
            timestamp: Utc::now(),
            cpu_count: record.cpu_count,
            cpu_used_pct,
            mem_used: stats.memory_bytes,
            mem_total: stats
                .memory_limit_bytes
                .unwrap_or(record.memory_mb * 1024 * 1024),
            disk_used,
            disk_total,
        })
    }
}
