//! The orchestrator's sense of time.
//!
//! Every decision that depends on the current time (deadlines, checkpoints before them,
//! the compute seconds billed at a kill) asks a [`Clock`] instead of calling
//! [`Utc::now`] directly, so tests can put "now" exactly where a decision flips.
//! Sleeping and periodic ticks stay on tokio's timer: the clock says what time it is, not
//! when to wake up.

use chrono::{DateTime, Utc};

/// Tells the current time.
///
/// Object-safe: the orchestrator holds it as `Arc<dyn Clock>`. With the `mocks` feature
/// (and in this crate's tests) mockall generates `MockClock`.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock ([`Utc::now`]): the default everywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_follows_the_wall_clock() {
        let before = Utc::now();
        let now = SystemClock.now();
        assert!(now >= before && now <= Utc::now());
    }
}
