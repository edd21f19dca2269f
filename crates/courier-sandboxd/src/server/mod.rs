//! The control plane's core: [`Sandboxd`] creates, pauses, resumes, times out and kills
//! sandboxes and keeps their [`SandboxRecord`]s on disk. It knows nothing of HTTP: the REST
//! API ([`crate::api`]) and the sandbox proxy ([`crate::proxy`]) are served on top of it by
//! [`crate::http`].
//!
//! Data dir layout:
//!
//! ```text
//! <data_dir>/runtime/          the runtime's data dir (sandboxes' overlays and state)
//!            layers/base/      the base template layer
//!            layers/<tpl>/<build>/  the layer of each template build
//!            templates/<tpl>/  built templates: record, builds, build logs
//!            snapshots/        filesystem snapshots: records and captured layers
//!                              (see [`crate::snapshots`])
//!            records/<id>.json the control plane's record of each sandbox
//!            api-keys.json     hashed API keys
//!            logs/<id>.json    each sandbox's logs (see [`logs`])
//!            volumes/          volumes (see [`crate::volumes`])
//! ```
//!
//! Every sandbox runs courier-envd as its init, serving on the sandbox's control socket
//! (see [`crate::runtime::Runtime::connect_control`]); the host reaches it only through
//! that socket. A sandbox exists for the control plane once its
//! envd is ready and its record is saved; anything the runtime has without a record
//! (a crash mid-create) is killed at startup, and records without a live sandbox are
//! dropped, so nothing is leaked across restarts.
//!
//! By concern: [`config`] (what a server and a create are given), `startup` (opening the
//! data dir and recovering a previous run's sandboxes), `registry` (the sandboxes it
//! knows), `create` (starting sandboxes, the warm pool), `control` (kill, pause, resume,
//! deadlines, network), `cleanups` (kills finishing behind their answer), `snapshot` (snapshots, forks, filesystem-only pause and its
//! reboot), `metrics`, `reaper` (deadlines and dead sandboxes) and `build_host` (what
//! template builds are given of it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::egress::Egress;
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::limits::{Capacity, CapacityUsage};
use crate::lock::lock;
use crate::runtime::{Isolation, Runtime};
use crate::state::{RecordStore, SandboxRecord};
use crate::templates::Templates;
use crate::warm::WarmPool;

mod build_host;
mod cleanups;
pub mod config;
mod control;
mod create;
pub mod idempotency;
pub mod logs;
mod metrics;
mod reaper;
mod registry;
mod snapshot;
mod startup;

pub use config::{
    CreateRequest, DEFAULT_TIMEOUT, DEFAULT_WARM_SANDBOXES, ENVD_PATH, ENVD_VERSION, MAX_TIMEOUT,
    ServerConfig, SharedDir, VolumeBind,
};
use create::Started;
pub use metrics::{KEPT_SAMPLES, Metric, MetricsRange, SAMPLE_EVERY};
pub(crate) use registry::Entry;

struct Inner {
    config: ServerConfig,
    runtime: Arc<Runtime>,
    /// How sandboxes are isolated unless their template says otherwise.
    isolation: Isolation,
    records: RecordStore,
    templates: Templates,
    snapshots: crate::snapshots::Snapshots,
    keys: KeyStore,
    capacity: Capacity,
    sandboxes: Mutex<HashMap<String, Arc<Entry>>>,
    /// Sandboxes started ahead of creates (see [`crate::warm`]).
    warm: WarmPool<Started>,
    shutdown: CancellationToken,
    /// Egress settings shared by every sandbox (operator allow list, domain proxy).
    egress: Egress,
    /// Each sandbox's recent metrics samples.
    metrics: metrics::MetricsHistory,
    /// The `Idempotency-Key`s of recent creates.
    idempotency: idempotency::IdempotencyKeys,
    /// Every sandbox's logs (kept a while after it is killed).
    logs: logs::SandboxLogs,
    /// Volumes (see [`crate::volumes`]).
    volumes: crate::volumes::Volumes,
    /// Kills whose cleanup has not finished (see [`cleanups`]).
    cleanups: cleanups::Cleanups,
    /// Held for the server's lifetime (see `start`).
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The local E2B-compatible control plane. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Sandboxd {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandboxd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxd")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Sys {
            op: "blocking task".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn end_at(timeout: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX)
}

fn check_timeout(field: &'static str, timeout: Duration) -> Result<()> {
    if timeout > MAX_TIMEOUT {
        return Err(Error::InvalidSpec {
            field,
            reason: format!("must be at most {} seconds", MAX_TIMEOUT.as_secs()),
        });
    }
    Ok(())
}

impl Sandboxd {
    /// The configuration it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The templates it offers.
    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    /// The filesystem snapshots it keeps.
    pub fn snapshots(&self) -> &crate::snapshots::Snapshots {
        &self.inner.snapshots
    }

    /// The accepted API keys.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// Sandboxes and committed memory in use against the server's limits.
    pub fn capacity(&self) -> CapacityUsage {
        self.inner.capacity.usage()
    }

    /// The volumes.
    pub fn volumes(&self) -> &crate::volumes::Volumes {
        &self.inner.volumes
    }

    /// The sandboxes (running or paused) that mount volume `id`.
    pub fn sandboxes_mounting(&self, id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .list()
            .into_iter()
            .filter(|r| r.volume_mounts.iter().any(|m| m.volume_id == id))
            .map(|r| r.sandbox_id)
            .collect();
        ids.sort();
        ids
    }

    /// The sandbox runtime underneath.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// How sandboxes are isolated unless their template says otherwise.
    pub fn default_isolation(&self) -> Isolation {
        self.inner.isolation
    }

    pub(crate) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        lock(&self.inner.sandboxes).get(id).cloned()
    }

    pub(crate) fn entry_or_404(&self, id: &str) -> Result<Arc<Entry>> {
        self.entry(id).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn still_known(&self, entry: &Arc<Entry>) -> bool {
        self.entry(&entry.id)
            .is_some_and(|current| Arc::ptr_eq(&current, entry))
    }

    /// The record of sandbox `id`.
    pub fn get(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.entry_or_404(id)?.record())
    }

    /// Records of all sandboxes (running and paused), unordered.
    pub fn list(&self) -> Vec<SandboxRecord> {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.sandboxes).values().cloned().collect();
        entries.iter().map(|e| e.record()).collect()
    }

    /// no sandbox of the API's until a create takes one.
    pub fn warm_sandboxes(&self) -> Vec<String> {
        self.inner.warm.ids()
    }

    /// Stops the deadline reaper (sandboxes keep running; see [`kill_all`](Self::kill_all)).
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }
}
