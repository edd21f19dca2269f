//! What one server takes on: server-wide capacity, template build deadlines and upload
//! caps ([`ServerLimits`], in [`crate::ServerConfig::limits`]).
//!
//! **Capacity.** Two limits, both counted over running **and paused** sandboxes (a
//! paused sandbox keeps its memory) with template build sandboxes included:
//!
//! - the number of sandboxes ([`ServerLimits::max_sandboxes`], default
//!   [`DEFAULT_MAX_SANDBOXES`]);
//! - the committed memory, the sum of the sandboxes' `memoryMB`
//!   ([`ServerLimits::max_memory_mb`], default the host's `MemTotal` from
//!   `/proc/meminfo`, see [`host_memory_mb`]).
//!
//! A create first takes a reservation (check and reservation under one lock, so twenty
//! concurrent creates can never all pass the check); a create that would go past a limit
//! fails before anything is made, with [`CapacityExceeded`] naming the limit, its value
//! and what is in use (HTTP 429 `{code, message}` at the API). The reservation lives as
//! long as the sandbox: it is released when the sandbox is killed, or when its create
//! fails. A template build needs a build sandbox, so it meets the same limits (its build
//! fails at step `base` with the same message).
//!
//! **Template builds.** Every step (RUN, COPY, USER, WORKDIR) must end within
//! [`ServerLimits::template_step_timeout`] (default [`DEFAULT_TEMPLATE_STEP_TIMEOUT`]),
//! the start and ready commands within [`crate::ServerConfig::template_ready_timeout`],
//! and the whole build within [`ServerLimits::template_build_timeout`] (default
//! [`DEFAULT_TEMPLATE_BUILD_TIMEOUT`]); see [`crate::templates::build`].
//!
//! **Uploads.** One COPY upload may hold at most [`ServerLimits::max_upload_bytes`]
//! (default [`DEFAULT_MAX_UPLOAD_BYTES`]) and all stored uploads together at most
//! [`ServerLimits::max_uploads_total_bytes`] (default
//! [`DEFAULT_MAX_UPLOADS_TOTAL_BYTES`]); past either the upload answers 413 naming it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default most sandboxes (running + paused, build sandboxes included) per server: E2B's
/// concurrent-sandbox limit of its Pro tier. Memory is usually the tighter limit.
pub const DEFAULT_MAX_SANDBOXES: u32 = 100;

/// Default deadline of one template build step (RUN, COPY, USER, WORKDIR): 30 minutes,
/// room for a large `npm install` or `apt-get install` on a slow mirror.
pub const DEFAULT_TEMPLATE_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default deadline of a whole template build, from its start to its layer: 1 hour.
pub const DEFAULT_TEMPLATE_BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Default largest COPY upload (`PUT /templates/{id}/files/{hash}`): 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// Default largest total of stored COPY uploads: 8 GiB.
pub const DEFAULT_MAX_UPLOADS_TOTAL_BYTES: u64 = 8 << 30;

/// What one server takes on (see the [module docs](self)).
///
/// ```
/// use courier_sandboxd::ServerConfig;
/// let mut config = ServerConfig::new("/var/lib/courier-sandboxd", "/usr/local/bin/courier-envd");
/// config.limits.max_sandboxes = 20;
/// config.limits.max_memory_mb = Some(16 * 1024);
/// config.limits.template_step_timeout = std::time::Duration::from_secs(600);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most sandboxes at once, running and paused, build sandboxes included.
    pub max_sandboxes: u32,
    /// Most committed memory (sum of the sandboxes' `memoryMB`), MiB; `None` = the
    /// host's `MemTotal` (see [`host_memory_mb`]).
    pub max_memory_mb: Option<u64>,
    /// Deadline of each template build step.
    pub template_step_timeout: Duration,
    /// Deadline of a whole template build.
    pub template_build_timeout: Duration,
    /// Largest COPY upload, bytes.
    pub max_upload_bytes: u64,
    /// Largest total of stored COPY uploads, bytes.
    pub max_uploads_total_bytes: u64,
}

impl Default for ServerLimits {
    /// The documented defaults: [`DEFAULT_MAX_SANDBOXES`], the host's memory,
    /// [`DEFAULT_TEMPLATE_STEP_TIMEOUT`], [`DEFAULT_TEMPLATE_BUILD_TIMEOUT`],
    /// [`DEFAULT_MAX_UPLOAD_BYTES`], [`DEFAULT_MAX_UPLOADS_TOTAL_BYTES`].
    fn default() -> Self {
        Self {
            max_sandboxes: DEFAULT_MAX_SANDBOXES,
            max_memory_mb: None,
            template_step_timeout: DEFAULT_TEMPLATE_STEP_TIMEOUT,
            template_build_timeout: DEFAULT_TEMPLATE_BUILD_TIMEOUT,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_uploads_total_bytes: DEFAULT_MAX_UPLOADS_TOTAL_BYTES,
        }
    }
}

impl ServerLimits {
    /// The committed memory limit in force: [`max_memory_mb`](Self::max_memory_mb), else
    /// the host's memory, else (no `/proc/meminfo`) no limit.
    pub fn memory_limit_mb(&self) -> u64 {
        self.max_memory_mb
            .or_else(host_memory_mb)
            .unwrap_or(u64::MAX)
    }
}

/// What a limit is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The number of sandboxes ([`ServerLimits::max_sandboxes`]).
    Sandboxes,
    /// The sum of the sandboxes' `memoryMB` ([`ServerLimits::max_memory_mb`]).
    MemoryMb,
}

/// A create refused because the server is full. `Display` names the limit (with the
/// setting that raises it), its value and what is in use; nothing about other tenants'
/// sandboxes beyond those totals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct CapacityExceeded {
    /// The limit that would be exceeded.
    pub limit: Limit,
    /// Its value (sandboxes, or MiB).
    pub value: u64,
    /// What is in use now (sandboxes, or MiB).
    pub in_use: u64,
    /// What the refused create asked for (1 sandbox, or its MiB).
    pub requested: u64,
}

impl CapacityExceeded {
    fn describe(&self) -> String {
        match self.limit {
            Limit::Sandboxes => format!(
                "server at capacity: the sandbox limit (max_sandboxes) is {} and {} sandboxes \
                 are in use (running and paused, template builds included); kill or wait for \
                 one to end",
                self.value, self.in_use
            ),
            Limit::MemoryMb => format!(
                "server at capacity: the committed memory limit (max_memory_mb) is {} MiB, \
                 {} MiB are committed to running and paused sandboxes and this one asks for \
                 {} MiB",
                self.value, self.in_use, self.requested
            ),
        }
    }
}

/// What is in use against the limits, and the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityUsage {
    /// Sandboxes holding a reservation (running, paused, or being created).
    pub sandboxes: u32,
    /// Their committed memory, MiB.
    pub memory_mb: u64,
    /// The sandbox limit.
    pub max_sandboxes: u32,
    /// The committed memory limit, MiB.
    pub max_memory_mb: u64,
}

#[derive(Debug)]
struct Shared {
    max_sandboxes: u32,
    max_memory_mb: u64,
    used: Mutex<(u32, u64)>,
}

impl Shared {
    fn used(&self) -> std::sync::MutexGuard<'_, (u32, u64)> {
        // The counters stay consistent even if a holder panicked: every update is one
        // assignment of both.
        crate::lock::lock(&self.used)
    }
}

/// The server's counters. Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub(crate) struct Capacity {
    shared: Arc<Shared>,
}

impl Capacity {
    /// Limits of `max_sandboxes` sandboxes and `max_memory_mb` MiB of committed memory.
    pub(crate) fn new(max_sandboxes: u32, max_memory_mb: u64) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_sandboxes,
                max_memory_mb,
                used: Mutex::new((0, 0)),
            }),
        }
    }

    /// Reserves room for one sandbox of `memory_mb` MiB, or says which limit it would
    /// exceed. The check and the reservation are one step.
    pub(crate) fn reserve(&self, memory_mb: u64) -> Result<Reservation, CapacityExceeded> {
        let mut used = self.shared.used();
        let (sandboxes, memory) = *used;
        if sandboxes >= self.shared.max_sandboxes {
            return Err(CapacityExceeded {
                limit: Limit::Sandboxes,
                value: u64::from(self.shared.max_sandboxes),
                in_use: u64::from(sandboxes),
                requested: 1,
            });
        }
        if memory.saturating_add(memory_mb) > self.shared.max_memory_mb {
            return Err(CapacityExceeded {
                limit: Limit::MemoryMb,
                value: self.shared.max_memory_mb,
                in_use: memory,
                requested: memory_mb,
            });
        }
        *used = (sandboxes + 1, memory + memory_mb);
        Ok(self.reservation(memory_mb))
    }

    /// Counts a sandbox that exists already (found again after a restart), even past the
    /// limits: it runs whether or not it fits, and new creates must wait for room.
    pub(crate) fn adopt(&self, memory_mb: u64) -> Reservation {
        let mut used = self.shared.used();
        *used = (used.0.saturating_add(1), used.1.saturating_add(memory_mb));
        self.reservation(memory_mb)
    }

    fn reservation(&self, memory_mb: u64) -> Reservation {
        Reservation {
            shared: self.shared.clone(),
            memory_mb,
            held: AtomicBool::new(true),
        }
    }

    /// What is in use now, and the limits.
    pub(crate) fn usage(&self) -> CapacityUsage {
        let (sandboxes, memory_mb) = *self.shared.used();
        CapacityUsage {
            sandboxes,
            memory_mb,
            max_sandboxes: self.shared.max_sandboxes,
            max_memory_mb: self.shared.max_memory_mb,
        }
    }
}

/// One sandbox's share of the capacity; given back by [`Reservation::release`] or when
/// dropped, whichever comes first (only once).
#[derive(Debug)]
pub(crate) struct Reservation {
    shared: Arc<Shared>,
    memory_mb: u64,
    held: AtomicBool,
}

impl Reservation {
    /// Gives the room back (idempotent).
    pub(crate) fn release(&self) {
        if self.held.swap(false, Ordering::SeqCst) {
            let mut used = self.shared.used();
            *used = (
                used.0.saturating_sub(1),
                used.1.saturating_sub(self.memory_mb),
            );
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// The host's memory in MiB: `MemTotal` from `/proc/meminfo`; `None` when unreadable.
pub fn host_memory_mb() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib / 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // What an API-key holder tries here: asking for more than the host has, in many
    // concurrent creates, so that the server promises memory it cannot give. Each test
    // asserts the counters refuse it.

    #[test]
    fn a_reservation_beyond_either_limit_is_refused_naming_it() {
        let capacity = Capacity::new(2, 4096);
        let a = capacity.reserve(1024).unwrap();
        let err = capacity.reserve(4000).unwrap_err();
        assert_eq!(
            err,
            CapacityExceeded {
                limit: Limit::MemoryMb,
                value: 4096,
                in_use: 1024,
                requested: 4000
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("max_memory_mb")
                && message.contains("4096 MiB")
                && message.contains("1024 MiB")
                && message.contains("4000 MiB"),
            "{message}"
        );
        let _b = capacity.reserve(128).unwrap();
        let err = capacity.reserve(128).unwrap_err();
        assert_eq!((err.limit, err.value, err.in_use), (Limit::Sandboxes, 2, 2));
        assert!(err.to_string().contains("max_sandboxes"), "{err}");
        // Giving one back makes room again, once only.
        a.release();
        a.release();
        assert_eq!(capacity.usage().sandboxes, 1);
        assert_eq!(capacity.usage().memory_mb, 128);
        drop(a);
        assert_eq!(capacity.usage().sandboxes, 1);
        capacity.reserve(1024).unwrap().release();
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limits() {
        // Twenty threads asking 64 GiB each against 128 GiB: exactly two fit.
        let capacity = Capacity::new(100, 2 * 65_536);
        let barrier = std::sync::Barrier::new(20);
        let kept: Vec<Reservation> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        capacity.reserve(65_536)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap().ok())
                .collect()
        });
        assert_eq!(kept.len(), 2);
        assert_eq!(capacity.usage().memory_mb, 2 * 65_536);
        drop(kept);
        assert_eq!(capacity.usage().sandboxes, 0);
        assert_eq!(capacity.usage().memory_mb, 0);
    }

    #[test]
    fn adopted_sandboxes_count_even_past_the_limits() {
        let capacity = Capacity::new(1, 1024);
        let _a = capacity.adopt(2048);
        assert_eq!(capacity.usage().memory_mb, 2048);
        assert_eq!(
            capacity.reserve(128).unwrap_err().limit,
            Limit::Sandboxes,
            "no room until the adopted sandbox is gone"
        );
    }

    #[test]
    fn the_memory_limit_defaults_to_the_hosts_memory() {
        let limits = ServerLimits::default();
        assert_eq!(Some(limits.memory_limit_mb()), host_memory_mb());
        let set = ServerLimits {
            max_memory_mb: Some(4096),
            ..ServerLimits::default()
        };
        assert_eq!(set.memory_limit_mb(), 4096);
    }

    #[test]
    fn mem_total_is_read_in_mebibytes() {
        let meminfo = "MemTotal:       24683772 kB\nMemFree:         5246012 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_105));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert!(host_memory_mb().is_some_and(|mb| mb > 0));
    }
}
