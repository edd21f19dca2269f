//! Snapshots, forks and filesystem-only pause: capturing what a sandbox wrote as a layer
//! (see [`crate::snapshots`]) and starting sandboxes on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use super::registry::Entry;
use super::{CreateRequest, Sandboxd, blocking, check_timeout, end_at};
use crate::error::{Error, Result};
use crate::snapshots::{MemoryImage, SnapshotKind, SnapshotRecord, Snapshots};
use crate::state::{SandboxRecord, SandboxState};
use crate::templates::Template;

/// Most forks one request may ask for (E2B's `SandboxForkRequest.count` maximum).
pub const MAX_FORKS: u32 = 100;

/// Most layers a sandbox may stand on (template layers, snapshot layers, the layers of
/// its filesystem-only pauses): the root overlay's `lowerdir` list must fit the one page
/// mount options get, with room to spare.
pub const MAX_LAYERS: usize = 24;

impl Sandboxd {
    /// Sandbox `id` when `owner` may act on it: another key's sandbox is not found, as
    /// one that does not exist (no probing for ids). So is one with no owner: the
    /// server's own (template build sandboxes) and those recorded before owners were.
    pub(crate) fn owned_entry(&self, id: &str, owner: &str) -> Result<Arc<Entry>> {
        let entry = self.entry_or_404(id)?;
        match entry.record().owner.as_deref() {
            Some(o) if o == owner => Ok(entry),
            _ => Err(Error::NotFound(id.to_owned())),
        }
    }

    /// The layers the API's sandboxes (running, paused and paused filesystem-only) stand
    /// on; warm sandboxes, which no create has taken, are not counted.
    pub fn sandbox_layers(&self) -> std::collections::HashSet<PathBuf> {
        let entries: Vec<Arc<Entry>> = crate::lock::lock(&self.inner.sandboxes)
            .values()
            .cloned()
            .collect();
        let mut layers = std::collections::HashSet::new();
        for entry in entries {
            match entry.record().paused_layers {
                Some(paused) => layers.extend(paused),
                None => layers.extend(self.inner.runtime.layers_of(&entry.id).unwrap_or_default()),
            }
        }
        layers
    }

    /// The template a snapshot's sandboxes start from: its template's settings on the
    /// snapshot's layers, under the snapshot's id.
    pub(super) fn snapshot_template(&self, snapshot: &SnapshotRecord) -> Result<Template> {
        let mut template = self
            .inner
            .templates
            .resolve(&snapshot.template_id)
            .ok_or_else(|| Error::UnknownTemplate(snapshot.template_id.clone()))?;
        template.layers = snapshot.layers.clone();
        Ok(template)
    }

    /// Captures sandbox `entry`'s filesystem as a new layer (frozen while copied; a
    /// sandbox paused filesystem-only is its layers already) and, where
    /// [`memory_refusal`](Self::memory_refusal) allows, its memory in the same pause.
    /// The caller holds the entry's `op` lock. The guard keeps the new layer (and its
    /// memory image) from collection until a record or sandbox uses it.
    async fn capture(&self, entry: &Arc<Entry>, prefix: &str) -> Result<Capture> {
        if let Some(layers) = entry.record().paused_layers {
            return Ok(Capture {
                layers,
                guard: None,
                memory: Err("the sandbox is paused filesystem-only: nothing of it runs".into()),
            });
        }
        self.check_layer_count(&entry.id, None)?;
        let dest = self.inner.snapshots.new_layer_dir(prefix);
        let guard = self.inner.snapshots.capturing(&dest)?;
        let runtime = self.inner.runtime.clone();
        let id = entry.id.clone();
        let layer = dest.clone();
        let refusal = self.memory_refusal(entry);
        let image = self.inner.snapshots.memory_dir_for(&dest);
        let memory_dir = image.clone();
        let (mut layers, memory) = blocking(move || {
            let layers = runtime.layers_of(&id)?;
            let refusal = match refusal {
                Some(reason) => Some(reason),
                None => match runtime.checkpoint(&id, &memory_dir, || {
                    runtime.capture_running(&id, &layer)
                }) {
                    Ok(times) => {
                        tracing::info!(
                            sandbox = %id,
                            quiesce_ms = times.quiesce.as_secs_f64() * 1e3,
                            checkpoint_ms = times.checkpoint.as_secs_f64() * 1e3,
                            capture_ms = times.capture.as_secs_f64() * 1e3,
                            resume_ms = times.resume.as_secs_f64() * 1e3,
                            "memory snapshot taken"
                        );
                        return Ok((layers, Ok(())));
                    }
                    // The sandbox runs on (the checkpoint resumes it whatever failed);
                    // the filesystem alone is captured below, as for any sandbox.
                    Err(error) => {
                        tracing::warn!(sandbox = %id, %error, "memory checkpoint failed; capturing the filesystem only");
                        crate::cleanup::remove_dir(&memory_dir);
                        if layer.exists() {
                            crate::cleanup::remove_dir(&layer);
                        }
                        Some(error.to_string())
                    }
                },
            };
            runtime.capture_running(&id, &layer)?;
            Ok((layers, Err(refusal.unwrap_or_default())))
        })
        .await?;
        layers.push(dest);
        let memory = memory.map(|()| MemoryImage {
            dir: image,
            envd_token: entry.record().envd_access_token,
        });
        Ok(Capture {
            layers,
            guard: Some(guard),
            memory,
        })
    }

    /// Why sandbox `entry`'s memory cannot be snapshotted, or `None` when it can: a
    /// running gVisor sandbox without internet or volumes (see
    /// [`crate::runtime::Runtime::checkpoint`]).
    fn memory_refusal(&self, entry: &Arc<Entry>) -> Option<String> {
        let record = entry.record();
        if record.state == SandboxState::Paused {
            // Frozen in its cgroup: runsc could not answer.
            return Some(format!("sandbox {} is paused", entry.id));
        }
        if !record.volume_mounts.is_empty() {
            return Some(format!(
                "sandbox {} has volumes mounted, which a restored sandbox would not have",
                entry.id
            ));
        }
        match self.inner.runtime.checkpoint_refusal(&entry.id) {
            Ok(refusal) => refusal,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Refuses a capture that would stack running sandbox `id` on more than
    /// [`MAX_LAYERS`] layers (each filesystem-only pause and each snapshot of a sandbox
    /// started from a snapshot adds one; the overlay's options must fit in a page).
    /// A pause refuses with a 400 naming `memory` (`field`): E2B's 409 there means
    /// "already paused", which the SDKs answer with `false`.
    fn check_layer_count(&self, id: &str, field: Option<&'static str>) -> Result<()> {
        let layers = self.inner.runtime.layers_of(id)?.len();
        if layers >= MAX_LAYERS {
            let reason = format!(
                "sandbox {id} stands on {layers} layers, and a sandbox may stand on at most \
                 {MAX_LAYERS}: its filesystem cannot be captured once more (start a new \
                 sandbox from a template and copy what it needs)"
            );
            return Err(match field {
                Some(field) => Error::InvalidSpec { field, reason },
                None => Error::Conflict(reason),
            });
        }
        Ok(())
    }

    /// Takes a filesystem snapshot of sandbox `id` for `owner` (E2B's `POST
    /// /sandboxes/{id}/snapshots`); a name `owner` used before gets the new capture
    /// under the same snapshot id. The sandbox keeps running (it is frozen while its
    /// writable layer is copied).
    pub async fn create_snapshot(
        &self,
        id: &str,
        owner: &str,
        name: Option<String>,
    ) -> Result<SnapshotRecord> {
        if let Some(name) = &name {
            crate::snapshots::check_name(name)?;
        }
        let entry = self.owned_entry(id, owner)?;
        self.inner.snapshots.check_room(owner)?;
        let _op = entry.op.lock().await;
        if !self.still_known(&entry) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let Capture {
            layers,
            guard,
            memory,
        } = self.capture(&entry, "snap").await?;
        let memory = self.note_memory(id, "snapshot", memory);
        // A new capture is measured against the key's bound (a paused sandbox's layers
        // are shared with it, and were measured by nothing: counted as its own), its
        // memory image included.
        let own = layers.last().cloned().unwrap_or_default();
        let image = memory.as_ref().map(|m| m.dir.clone());
        let bytes = blocking(move || {
            Ok(crate::snapshots::allocated_bytes(&own)
                + image.map_or(0, |i| crate::snapshots::allocated_bytes(&i)))
        })
        .await?;
        if let Err(e) = self
            .inner
            .snapshots
            .check_bytes(owner, name.as_deref(), bytes)
        {
            if guard.is_some()
                && let Some(own) = layers.last()
            {
                crate::cleanup::remove_dir(own);
            }
            if let Some(memory) = &memory {
                crate::cleanup::remove_dir(&memory.dir);
            }
            return Err(e);
        }
        let record = entry.record();
        self.inner.snapshots.insert(SnapshotRecord {
            id: Snapshots::new_id(),
            name,
            owner: owner.to_owned(),
            sandbox_id: id.to_owned(),
            template_id: record.template_id,
            layers,
            kind: SnapshotKind::Snapshot,
            created_at: Utc::now(),
            bytes,
            memory,
        })
    }

    /// Logs on sandbox `id` whether its `what` kept its memory (and why not), and
    /// hands back the image.
    fn note_memory(
        &self,
        id: &str,
        what: &str,
        memory: std::result::Result<MemoryImage, String>,
    ) -> Option<MemoryImage> {
        match memory {
            Ok(image) => {
                self.log_event(
                    id,
                    super::logs::LogLevel::Info,
                    "snapshot",
                    format!("{what} taken with memory: its sandboxes resume its processes"),
                );
                Some(image)
            }
            Err(reason) => {
                self.log_event(
                    id,
                    super::logs::LogLevel::Info,
                    "snapshot",
                    format!(
                        "{what} taken of the filesystem only (its sandboxes boot afresh): \
                         {reason}"
                    ),
                );
                None
            }
        }
    }

    /// Forks sandbox `id`: captures its filesystem once and starts `count` new running
    /// sandboxes on it, each with the source's template settings, limits, metadata,
    /// network rules and `timeout`. The source keeps running. One result per fork: each
    /// succeeds or fails on its own.
    pub async fn fork(
        &self,
        id: &str,
        owner: &str,
        count: u32,
        timeout: Duration,
    ) -> Result<Vec<Result<SandboxRecord>>> {
        if !(1..=MAX_FORKS).contains(&count) {
            return Err(Error::InvalidSpec {
                field: "count",
                reason: format!("must be 1..={MAX_FORKS}"),
            });
        }
        check_timeout("timeout", timeout)?;
        let entry = self.owned_entry(id, owner)?;
        refuse_volumes(&entry.record(), "count")?;
        let (layers, guard, source, memory) = {
            let _op = entry.op.lock().await;
            if !self.still_known(&entry) {
                return Err(Error::NotFound(id.to_owned()));
            }
            let capture = self.capture(&entry, "fork").await?;
            let memory = self.note_memory(id, "fork", capture.memory);
            (capture.layers, capture.guard, entry.record(), memory)
        };
        let capture = self.inner.snapshots.insert(SnapshotRecord {
            id: Snapshots::new_id(),
            name: None,
            owner: owner.to_owned(),
            sandbox_id: id.to_owned(),
            template_id: source.template_id.clone(),
            layers,
            kind: SnapshotKind::Fork,
            created_at: Utc::now(),
            bytes: 0,
            memory,
        })?;
        drop(guard);
        let template = self.snapshot_template(&capture);
        let mut results = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let result = match &template {
                Ok(template) => {
                    let request = fork_request(&source, owner, timeout);
                    match request {
                        Ok(request) => {
                            let origin = super::create::Origin::Snapshot(capture.memory.clone());
                            self.create_from(request, template.clone(), origin).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(Error::UnknownTemplate(e.to_string())),
            };
            results.push(result);
        }
        // The forks run on its layers now; they go when the last fork does.
        self.inner.snapshots.forget(&capture.id);
        Ok(results)
    }

    /// Pauses sandbox `id` filesystem-only (E2B's pause with `memory: false`): its
    /// writes are captured as a layer, every process of it ends and its memory is freed;
    /// [`connect`](Self::connect) reboots it from that layer under the same id and
    /// access token. [`Error::Conflict`] when it is paused already.
    pub async fn pause_filesystem(&self, id: &str) -> Result<()> {
        let entry = self.entry_or_404(id)?;
        let _op = entry.op.lock().await;
        if !self.still_known(&entry) {
            return Err(Error::NotFound(id.to_owned()));
        }
        if entry.record().state == SandboxState::Paused {
            return Err(Error::Conflict(format!("sandbox {id} is already paused")));
        }
        // Refused before anything ends: the sandbox keeps running.
        self.check_layer_count(id, Some("memory"))?;
        refuse_volumes(&entry.record(), "memory")?;
        entry.cut();
        let dest = self.inner.snapshots.new_layer_dir(&format!("pause-{id}"));
        let _guard = self.inner.snapshots.capturing(&dest)?;
        let runtime = self.inner.runtime.clone();
        let (cid, layer) = (id.to_owned(), dest.clone());
        let captured = blocking(move || {
            let layers = runtime.layers_of(&cid)?;
            runtime.capture_layer(&cid, &layer)?;
            Ok(layers)
        })
        .await;
        let mut layers = match captured {
            Ok(layers) => layers,
            Err(e) => {
                // `capture_layer` ended the sandbox whatever happened: it is gone.
                tracing::warn!(sandbox = %id, error = %e, "filesystem-only pause failed; the sandbox is gone");
                drop(_op);
                let _ = self.kill(id).await;
                return Err(e);
            }
        };
        layers.push(dest);
        let record = entry.update(|r| {
            r.state = SandboxState::Paused;
            r.paused_layers = Some(layers);
        });
        self.inner.records.save(&record)
    }

    /// Reboots sandbox `entry`, paused filesystem-only, from its layers (the caller holds
    /// its `op` lock): envd starts afresh with the same access token; the deadline is
    /// `now + timeout`.
    pub(super) async fn reboot(
        &self,
        entry: &Arc<Entry>,
        layers: Vec<PathBuf>,
        timeout: Duration,
    ) -> Result<SandboxRecord> {
        let record = entry.record();
        let started = self
            .restart_sandbox(&record, layers, entry.egress.clone())
            .await;
        if let Err(e) = started {
            // A failed start removed the record file with the runtime's leftovers; the
            // sandbox is still paused on its layers.
            self.inner.records.save(&record)?;
            return Err(e);
        }
        entry.renew();
        entry.expiring.store(false, Ordering::SeqCst);
        let record = entry.update(|r| {
            r.state = SandboxState::Running;
            r.end_at = end_at(timeout);
            r.paused_layers = None;
        });
        self.inner.records.save(&record)?;
        Ok(record)
    }
}

/// What [`Sandboxd::capture`] took.
struct Capture {
    /// The layer stack, the new layer last.
    layers: Vec<PathBuf>,
    /// Keeps the new layer and its image from collection.
    guard: Option<crate::snapshots::CaptureGuard>,
    /// The memory image, or why there is none.
    memory: std::result::Result<MemoryImage, String>,
}

/// Forks and filesystem-only pauses start the sandbox again from its layers, which hold
/// nothing of its volumes: a sandbox with `volumeMounts` is refused (naming `field`)
/// rather than started again without them.
fn refuse_volumes(record: &SandboxRecord, field: &'static str) -> Result<()> {
    if record.volume_mounts.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidSpec {
        field,
        reason: format!(
            "sandbox {} has volumes mounted ({}): forks and filesystem-only pauses of it \
             are not supported yet (pause it with its memory instead)",
            record.sandbox_id,
            record
                .volume_mounts
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A fork's create request: the source's settings (its create's environment too, which
/// a memory fork would have kept in envd), a new deadline.
fn fork_request(source: &SandboxRecord, owner: &str, timeout: Duration) -> Result<CreateRequest> {
    let egress = super::startup::recorded_rules(source);
    Ok(CreateRequest {
        template: source.template_id.clone(),
        timeout,
        metadata: source.metadata.clone(),
        env_vars: source.env_vars(),
        auto_pause: source.auto_pause,
        memory_mb: Some(source.memory_mb),
        cpu_count: Some(source.cpu_count),
        allow_internet: source.allow_internet_requested,
        die_with_server: false,
        egress,
        allow_public_traffic: source.network.allow_public_traffic,
        owner: Some(owner.to_owned()),
        auto_pause_memory: source.auto_pause_memory,
        auto_resume: source.auto_resume_timeout_secs.is_some(),
        mask_request_host: source.network.mask_request_host.clone(),
        // Refused above for a source with volumes.
        volume_mounts: Vec::new(),
    })
}
