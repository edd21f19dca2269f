//! Controlling known sandboxes: kill, pause, resume, deadlines and network rules.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::logs::LogLevel;
use super::{Sandboxd, blocking, check_timeout, end_at};
use crate::egress::{EgressRules, SandboxEgress};
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::state::{SandboxRecord, SandboxState};

impl Sandboxd {
    /// Replaces sandbox `id`'s egress rules (E2B's `PUT /sandboxes/{id}/network`): every
    /// connection it opens from now on is decided by `rules`; established ones stay.
    /// [`Error::Conflict`] when the rules would let traffic out of a sandbox created
    /// without internet access: it has no outbound interface to open.
    pub fn update_network(&self, id: &str, rules: EgressRules) -> Result<SandboxRecord> {
        let entry = self.entry_or_404(id)?;
        let record = entry.record();
        if !record.allow_internet_requested && rules.allows_any_traffic() {
            return Err(Error::Conflict(format!(
                "sandbox {id} was created without internet access, so it has no outbound \
                 interface and its egress rules can only deny; create the sandbox with \
                 allow_internet_access or network rules that allow traffic to change them \
                 later"
            )));
        }
        entry.egress.set_rules(rules.clone());
        let record = entry.update(|r| {
            r.network.allow_out = rules.allow_out().to_vec();
            r.network.deny_out = rules.deny_out().to_vec();
            r.network.rules = rules.transforms().clone();
        });
        self.inner.records.save(&record)?;
        Ok(record)
    }

    /// Sandbox `id`'s egress policy handle (what its slirp4netns supervisor enforces), for
    /// re-attaching its network after a restart.
    pub fn sandbox_egress(&self, id: &str) -> Result<SandboxEgress> {
        Ok(self.entry_or_404(id)?.egress.clone())
    }

    /// Removes template layers nothing uses any more (older builds of rebuilt
    /// templates once their last sandbox is gone).
    pub(crate) async fn collect_layer_garbage(&self) {
        let server = self.clone();
        let removed = blocking(move || {
            let mut in_use = server.inner.runtime.layers_in_use();
            // Snapshots and sandboxes paused filesystem-only stand on template layers
            // too, and on their own captured ones.
            in_use.extend(server.inner.snapshots.layers_in_use());
            for entry in lock(&server.inner.sandboxes).values() {
                in_use.extend(entry.record().paused_layers.unwrap_or_default());
            }
            let mut removed = server.templates().collect_garbage(&in_use);
            removed.extend(server.inner.snapshots.collect_garbage(&in_use));
            Ok(removed)
        })
        .await
        .unwrap_or_default();
        for layer in removed {
            tracing::info!(layer = %layer.display(), "removed an unused template layer");
        }
    }

    /// Kills the runtime sandbox `id` and removes its record and socket directory.
    pub(super) async fn destroy(&self, id: &str) {
        let runtime = self.inner.runtime.clone();
        let kid = id.to_owned();
        match blocking(move || runtime.kill(&kid)).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "kill failed"),
        }
        self.collect_layer_garbage().await;
        if let Err(e) = self.inner.records.remove(id) {
            tracing::warn!(sandbox = %id, error = %e, "removing the record failed");
        }
    }

    /// Kills sandbox `id`: its in-flight proxied streams are cut, it leaves the list and
    /// the proxy, its record is removed and every process of it is sent SIGKILL; then
    /// it answers. Its processes' exit, mounts, cgroups, directories and capacity are
    /// dealt with behind (see [`cleanups`](super::cleanups)).
    pub async fn kill(&self, id: &str) -> Result<()> {
        let clock = std::time::Instant::now();
        let entry = lock(&self.inner.sandboxes)
            .remove(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let _op = entry.op.lock().await;
        entry.cut();
        self.logs_killed(id, "killed", entry.record().owner).await;
        let logged = clock.elapsed();
        let runtime = self.inner.runtime.clone();
        let kid = id.to_owned();
        let ending = match blocking(move || runtime.begin_kill(&kid)).await {
            Ok(ending) => Some(ending),
            // Nothing of it runs (paused filesystem-only, or already gone).
            Err(Error::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "kill failed");
                None
            }
        };
        // From here a restart finishes the kill (the runtime's marker) rather than
        // adopting the sandbox again: the record can go before the cleanup is done.
        if let Err(e) = self.inner.records.remove(id) {
            tracing::warn!(sandbox = %id, error = %e, "removing the record failed");
        }
        self.inner.metrics.forget(id);
        tracing::debug!(
            sandbox = id,
            logs_us = logged.as_micros() as u64,
            total_us = clock.elapsed().as_micros() as u64,
            "killed; cleaning up behind"
        );
        let running = self.inner.cleanups.start();
        let server = self.clone();
        let id = id.to_owned();
        let entry = entry.clone();
        tokio::spawn(async move {
            if let Some(ending) = ending {
                let runtime = server.inner.runtime.clone();
                if let Err(e) = blocking(move || runtime.finish_kill(ending)).await {
                    tracing::warn!(sandbox = %id, error = %e, "cleanup after kill failed");
                }
            }
            // Its memory is free and its layers unused only now.
            entry.reservation.release();
            server.collect_layer_garbage().await;
            drop(running);
        });
        Ok(())
    }

    /// Waits until every kill's cleanup has finished (see
    /// [`cleanups`](super::cleanups)): before a shutdown, or to observe a kill's end.
    pub async fn finish_cleanups(&self) {
        self.inner.cleanups.idle().await;
    }

    /// Kills every sandbox (at shutdown, when sandboxes must not outlive the server),
    /// the warm ones too, and waits until all of them are cleaned up.
    pub async fn kill_all(&self) {
        for warm in self.inner.warm.drain() {
            self.destroy(&warm.id).await;
        }
        let ids: Vec<String> = lock(&self.inner.sandboxes).keys().cloned().collect();
        for id in ids {
            match self.kill(&id).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(error) => tracing::warn!(sandbox = %id, %error, "killing at shutdown"),
            }
        }
        self.finish_cleanups().await;
        // No sandbox mounts a volume any more: their host mounts (and loop devices) go
        // too, and the next start mounts them again. Without this kill they stay, so a
        // sandbox that outlives the server never shares its volume with a second mount
        // of the same image.
        self.inner.volumes.unmount_all();
    }

    /// Pauses (freezes) sandbox `id`, cutting its proxied streams. [`Error::Conflict`]
    /// when it is already paused.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let entry = self.entry_or_404(id)?;
        let _op = entry.op.lock().await;
        if !self.still_known(&entry) {
            return Err(Error::NotFound(id.to_owned()));
        }
        if entry.record().state == SandboxState::Paused {
            return Err(Error::Conflict(format!("sandbox {id} is already paused")));
        }
        entry.cut();
        let runtime = self.inner.runtime.clone();
        let fid = id.to_owned();
        blocking(move || runtime.freeze(&fid)).await?;
        self.log_event(
            id,
            LogLevel::Info,
            "paused",
            "sandbox paused (memory kept)".to_owned(),
        );
        let record = entry.update(|r| r.state = SandboxState::Paused);
        self.inner.records.save(&record)
    }

    /// Connects to sandbox `id`: a running one gets its deadline extended to at least
    /// `now + timeout` (never shortened); a paused one is resumed with deadline
    /// `now + timeout`. Returns the record and whether it was resumed.
    pub async fn connect(&self, id: &str, timeout: Duration) -> Result<(SandboxRecord, bool)> {
        check_timeout("timeout", timeout)?;
        let entry = self.entry_or_404(id)?;
        let _op = entry.op.lock().await;
        if !self.still_known(&entry) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let new_end = end_at(timeout);
        if let Some(layers) = entry.record().paused_layers {
            let record = self.reboot(&entry, layers, timeout).await?;
            self.collect_layer_garbage().await;
            return Ok((record, true));
        }
        if entry.record().state == SandboxState::Running {
            let record = entry.update(|r| r.end_at = r.end_at.max(new_end));
            self.inner.records.save(&record)?;
            return Ok((record, false));
        }
        let runtime = self.inner.runtime.clone();
        let tid = id.to_owned();
        blocking(move || runtime.thaw(&tid)).await?;
        self.log_event(
            id,
            LogLevel::Info,
            "resumed",
            format!("sandbox resumed for {} s", timeout.as_secs()),
        );
        entry.renew();
        entry.expiring.store(false, Ordering::SeqCst);
        let record = entry.update(|r| {
            r.state = SandboxState::Running;
            r.end_at = new_end;
        });
        self.inner.records.save(&record)?;
        Ok((record, true))
    }

    /// Sets the deadline of sandbox `id` to `now + timeout` (may shorten it).
    pub fn set_timeout(&self, id: &str, timeout: Duration) -> Result<()> {
        check_timeout("timeout", timeout)?;
        let entry = self.entry_or_404(id)?;
        let record = entry.update(|r| r.end_at = end_at(timeout));
        self.inner.records.save(&record)
    }

    /// Extends the deadline of sandbox `id` to at least `now + duration`.
    pub fn refresh(&self, id: &str, duration: Duration) -> Result<()> {
        let entry = self.entry_or_404(id)?;
        let new_end = end_at(duration);
        let record = entry.update(|r| r.end_at = r.end_at.max(new_end));
        self.inner.records.save(&record)
    }
}
