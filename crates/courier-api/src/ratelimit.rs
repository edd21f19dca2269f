//! A per-user token bucket for sandbox creation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use courier_store::UserId;

/// How many sandboxes one user may create: `burst` at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Creations allowed back to back.
    pub burst: u32,
    /// Creations regained per minute.
    pub per_minute: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 10,
            per_minute: 10,
        }
    }
}

/// Buckets per user.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<UserId, (f64, Instant)>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Limiter {
            limit,
            buckets: Mutex::default(),
        }
    }

    /// Takes one creation from the user's bucket, or says how long until one is back.
    pub(crate) fn take(&self, user: UserId, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = f64::from(self.limit.per_minute.max(1)) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(user).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = Limiter::new(RateLimit {
            burst: 2,
            per_minute: 60,
        });
        let u = UserId::new();
        let t0 = Instant::now();
        assert!(l.take(u, t0).is_ok());
        assert!(l.take(u, t0).is_ok());
        let wait = l.take(u, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        // Another user has their own bucket.
        assert!(l.take(UserId::new(), t0).is_ok());
        assert!(l.take(u, t0 + Duration::from_secs(1)).is_ok());
    }
}
