//! The official SDKs' retry rule for control-plane calls: retry on `Should-Retry: true`, or
//! on 429/502/503/504 without a `Should-Retry` header; wait `Retry-After` seconds, else an
//! exponential backoff from 100 ms to 10 s with jitter; all within the request timeout.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::{Error, Result};

const BASE_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);

pub(crate) struct Policy {
    pub(crate) max_retries: u32,
    pub(crate) timeout: Duration,
}

/// Whether a response with this status and `Should-Retry` header may be retried.
pub(crate) fn is_retryable(status: u16, should_retry: Option<&str>) -> bool {
    match should_retry {
        Some(value) => value.trim().eq_ignore_ascii_case("true"),
        None => matches!(status, 429 | 502 | 503 | 504),
    }
}

/// `Retry-After` as integer seconds.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Backoff before retry number `attempt` (0-based): 100 ms · 2^attempt, at most 10 s, with
/// jitter between half and all of it.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let full = BASE_DELAY
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_DELAY);
    let factor: f64 = rand::rng().random_range(0.5..=1.0);
    full.mul_f64(factor)
}

impl Policy {
    /// Sends the request built by `build(remaining_time)` until it succeeds, fails for
    /// good, or the retries or the time run out.
    pub(crate) async fn run(
        &self,
        build: impl Fn(Duration) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout {
                    message: "request timeout elapsed during retries".to_owned(),
                });
            }
            let (delay, error) = match build(remaining).send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let should_retry = response
                        .headers()
                        .get("should-retry")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let after = retry_after(response.headers());
                    let retryable = is_retryable(status, should_retry.as_deref());
                    let body = response.bytes().await.unwrap_or_default();
                    let error = Error::from_api(status, &body, after);
                    if !retryable {
                        return Err(error);
                    }
                    (after.unwrap_or_else(|| backoff(attempt)), error)
                }
                // Only failures to connect are safe to retry blindly: nothing was sent.
                Err(e) if e.is_connect() => (backoff(attempt), Error::from_reqwest(e)),
                Err(e) => return Err(Error::from_reqwest(e)),
            };
            if attempt >= self.max_retries || Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::debug!(attempt, ?delay, %error, "retrying control-plane call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses_follow_should_retry_first() {
        assert!(is_retryable(429, None));
        assert!(is_retryable(502, None));
        assert!(!is_retryable(500, None));
        assert!(!is_retryable(429, Some("false")));
        assert!(is_retryable(500, Some("true")));
    }

    #[test]
    fn backoff_grows_and_caps_at_ten_seconds() {
        for attempt in 0..20 {
            let full = BASE_DELAY
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_DELAY);
            let delay = backoff(attempt);
            assert!(
                delay <= full && delay >= full / 2,
                "attempt {attempt}: {delay:?}"
            );
        }
        assert!(backoff(30) <= MAX_DELAY);
    }
}
