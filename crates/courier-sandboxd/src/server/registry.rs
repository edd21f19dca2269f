//! The sandboxes the control plane knows: one [`Entry`] each.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::egress::SandboxEgress;
use crate::envd_link::EnvdEndpoint;
use crate::limits::Reservation;
use crate::lock::lock;
use crate::state::{SandboxRecord, SandboxState};

/// A sandbox the control plane knows about.
pub(crate) struct Entry {
    pub(crate) id: String,
    /// Serializes pause, resume and kill of this sandbox.
    pub(super) op: tokio::sync::Mutex<()>,
    record: Mutex<SandboxRecord>,
    /// Cancelled when the sandbox is paused or killed: cuts every proxied connection.
    alive: Mutex<CancellationToken>,
    pub(crate) envd: EnvdEndpoint,
    pub(super) cpu_sample: Mutex<Option<(Instant, u64)>>,
    /// Set while the reaper acts on the deadline, so one expiry is handled once.
    pub(super) expiring: AtomicBool,
    /// Its share of the server's capacity, released when it is killed.
    pub(super) reservation: Reservation,
    /// The sandbox's egress policy (its slirp4netns supervisor reads it; network updates
    /// replace its rules).
    pub(crate) egress: SandboxEgress,
}

impl Entry {
    pub(super) fn new(
        record: SandboxRecord,
        envd: EnvdEndpoint,
        reservation: Reservation,
        egress: SandboxEgress,
    ) -> Self {
        Self {
            reservation,
            egress,
            id: record.sandbox_id.clone(),
            op: tokio::sync::Mutex::new(()),
            record: Mutex::new(record),
            alive: Mutex::new(CancellationToken::new()),
            envd,
            cpu_sample: Mutex::new(None),
            expiring: AtomicBool::new(false),
        }
    }

    pub(crate) fn record(&self) -> SandboxRecord {
        lock(&self.record).clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut SandboxRecord)) -> SandboxRecord {
        let mut record = lock(&self.record);
        f(&mut record);
        record.clone()
    }

    /// The token of the current run; `None` when paused.
    pub(crate) fn alive(&self) -> Option<CancellationToken> {
        let record = lock(&self.record);
        (record.state == SandboxState::Running).then(|| lock(&self.alive).clone())
    }

    pub(super) fn cut(&self) {
        lock(&self.alive).cancel();
    }

    pub(super) fn renew(&self) {
        *lock(&self.alive) = CancellationToken::new();
    }
}
