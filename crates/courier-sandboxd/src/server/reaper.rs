//! The deadline reaper: kills (or pauses) sandboxes at their deadline, and removes
//! sandboxes whose envd died.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;

use super::registry::Entry;
use super::{Inner, Sandboxd, blocking};
use crate::error::Error;
use crate::lock::lock;
use crate::runtime::SandboxStatus;
use crate::state::SandboxState;

/// How often the deadline reaper looks at the sandboxes.
const REAPER_TICK: Duration = Duration::from_millis(500);

impl Sandboxd {
    /// Acts on `entry`'s deadline: pauses it when it asked for that, else kills it.
    async fn expire(&self, entry: Arc<Entry>) {
        let record = entry.record();
        let action = if record.auto_pause {
            "pausing"
        } else {
            "killing"
        };
        self.log_event(
            &entry.id,
            super::logs::LogLevel::Info,
            "timeout",
            format!("timeout reached: {action}"),
        );
        let result = if record.auto_pause && !record.auto_pause_memory {
            tracing::info!(sandbox = %entry.id, "timeout reached: pausing filesystem-only");
            match self.pause_filesystem(&entry.id).await {
                // Past the layer bound its filesystem cannot be captured once more: it is
                // paused with its memory instead (kept, not lost; connect thaws it).
                Err(Error::InvalidSpec { reason, .. }) => {
                    tracing::warn!(sandbox = %entry.id, %reason, "pausing with memory instead");
                    self.pause(&entry.id).await
                }
                other => other,
            }
        } else if record.auto_pause {
            tracing::info!(sandbox = %entry.id, "timeout reached: pausing");
            self.pause(&entry.id).await
        } else {
            tracing::info!(sandbox = %entry.id, "timeout reached: killing");
            self.kill(&entry.id).await
        };
        match result {
            Ok(()) | Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(sandbox = %entry.id, error = %e, "acting on the timeout failed");
                entry.expiring.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// Kills (or pauses) sandboxes at their deadline, and kills sandboxes whose envd died.
///
/// Paused sandboxes have no deadline, as on E2B: a paused sandbox is kept (frozen, its
/// memory held) until it is resumed, which gives it a new deadline, or killed.
pub(super) async fn reaper(inner: Weak<Inner>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(REAPER_TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.shutdown.is_cancelled() {
            return;
        }
        let server = Sandboxd { inner };
        ticks += 1;
        let entries: Vec<Arc<Entry>> = lock(&server.inner.sandboxes).values().cloned().collect();
        let now = Utc::now();
        for entry in entries {
            let record = entry.record();
            let expired = record.state == SandboxState::Running && record.end_at <= now;
            // Every ~5 s: a sandbox whose init exited is dead for good; clean it up.
            let dead = ticks.is_multiple_of(10) && {
                let runtime = server.inner.runtime.clone();
                let id = entry.id.clone();
                matches!(
                    blocking(move || runtime.status(&id)).await,
                    Ok(SandboxStatus::Exited)
                )
            };
            if dead {
                tracing::warn!(sandbox = %entry.id, "envd exited: removing the sandbox");
                server.log_event(
                    &entry.id,
                    super::logs::LogLevel::Error,
                    "envd_exited",
                    "envd (the sandbox's init) exited: removing the sandbox".to_owned(),
                );
                match server.kill(&entry.id).await {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(error) => {
                        tracing::warn!(sandbox = %entry.id, %error, "removing a dead sandbox failed");
                    }
                }
            } else if expired && !entry.expiring.swap(true, Ordering::SeqCst) {
                let server = server.clone();
                tokio::spawn(async move { server.expire(entry).await });
            }
        }
    }
}
