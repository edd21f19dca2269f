//! Prometheus counters, kept by hand (a handful of atomics, no registry crate).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The server's counters, rendered in the Prometheus text format at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 5],
    /// Sandboxes created through the API.
    pub sandboxes_created: AtomicU64,
    /// Sandbox creations that failed (validation, keys, provider).
    pub sandbox_create_failures: AtomicU64,
    /// Requests refused by the creation rate limit.
    pub rate_limited: AtomicU64,
    /// Requests refused for a missing or unknown token, or a GitHub webhook delivery
    /// whose signature is missing or wrong.
    pub auth_failures: AtomicU64,
    /// Server-sent events delivered.
    pub sse_events: AtomicU64,
    /// Event streams open now.
    pub sse_streams: AtomicI64,
}

impl Metrics {
    /// Counts one answered request by its status class (1xx–5xx).
    pub fn count_request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP courier_http_requests_total HTTP requests answered, by status class.\n",
        );
        out.push_str("# TYPE courier_http_requests_total counter\n");
        // `writeln!` into a String cannot fail: its results are dropped below.
        for (i, c) in self.requests.iter().enumerate() {
            let _ = writeln!(
                out,
                "courier_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        let simple: [(&str, &str, &str, i64); 6] = [
            (
                "courier_sandboxes_created_total",
                "counter",
                "Sandboxes created through the API.",
                self.sandboxes_created.load(Ordering::Relaxed) as i64,
            ),
            (
                "courier_sandbox_create_failures_total",
                "counter",
                "Sandbox creations that failed.",
                self.sandbox_create_failures.load(Ordering::Relaxed) as i64,
            ),
            (
                "courier_rate_limited_total",
                "counter",
                "Requests refused by the sandbox creation rate limit.",
                self.rate_limited.load(Ordering::Relaxed) as i64,
            ),
            (
                "courier_auth_failures_total",
                "counter",
                "Requests refused for a missing or unknown bearer token or a bad webhook signature.",
                self.auth_failures.load(Ordering::Relaxed) as i64,
            ),
            (
                "courier_sse_events_total",
                "counter",
                "Server-sent events delivered.",
                self.sse_events.load(Ordering::Relaxed) as i64,
            ),
            (
                "courier_sse_streams",
                "gauge",
                "Event streams open now.",
                self.sse_streams.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in simple {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.count_request(200);
        m.count_request(404);
        m.count_request(404);
        m.sandboxes_created.fetch_add(3, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("courier_http_requests_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("courier_http_requests_total{class=\"4xx\"} 2\n"));
        assert!(text.contains(
            "# TYPE courier_sandboxes_created_total counter\ncourier_sandboxes_created_total 3\n"
        ));
    }
}
