//! Lifecycle and observation calls: idempotent create, several sandboxes' metrics at
//! once, and sandbox logs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use reqwest::Method;

use super::{Client, debug_record, read_json, segment};
use crate::Result;
use crate::models::{
    LogLevel, NewSandbox, SandboxLogEntry, SandboxLogs, SandboxMetric, SandboxRecord,
    SandboxesWithMetrics,
};

/// The header that makes a create idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// What `GET /v2/sandboxes/{id}/logs` returns: from where, which way, how many, how
/// severe, containing what.
///
/// ```
/// use courier_e2b::LogsQuery;
/// use courier_e2b::models::LogLevel;
/// let q = LogsQuery::new().backward().limit(50).level(LogLevel::Warn).search("oom");
/// assert_eq!(
///     q.to_pairs(),
///     [("limit", "50".to_owned()), ("direction", "backward".to_owned()),
///      ("level", "warn".to_owned()), ("search", "oom".to_owned())],
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsQuery {
    cursor: Option<DateTime<Utc>>,
    limit: Option<u32>,
    backward: bool,
    level: Option<LogLevel>,
    search: Option<String>,
}

impl LogsQuery {
    /// Every entry (up to the server's limit, 1000), oldest first.
    pub fn new() -> LogsQuery {
        LogsQuery::default()
    }

    /// Entries from `at` on (or, [`backward`](Self::backward), up to `at`); millisecond
    /// precision.
    pub fn cursor(mut self, at: DateTime<Utc>) -> Self {
        self.cursor = Some(at);
        self
    }

    /// At most `limit` entries (the server allows 0..=1000).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Newest first, from the cursor (or now) back.
    pub fn backward(mut self) -> Self {
        self.backward = true;
        self
    }

    /// Only entries at least this severe.
    pub fn level(mut self, level: LogLevel) -> Self {
        self.level = Some(level);
        self
    }

    /// Only entries whose message contains `text` (case-sensitive, at most 256 bytes).
    pub fn search(mut self, text: impl Into<String>) -> Self {
        self.search = Some(text.into());
        self
    }

    /// The query parameters this sends.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(cursor) = self.cursor {
            pairs.push(("cursor", cursor.timestamp_millis().to_string()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if self.backward {
            pairs.push(("direction", "backward".to_owned()));
        }
        if let Some(level) = self.level {
            pairs.push(("level", level.as_str().to_owned()));
        }
        if let Some(search) = &self.search {
            pairs.push(("search", search.clone()));
        }
        pairs
    }
}

impl Client {
    /// Creates a sandbox under idempotency `key` (`POST /v2/sandboxes` with
    /// `Idempotency-Key`): retried like other calls, since a retry with the same key and
    /// body answers with the sandbox the first attempt created. The same key with another
    /// body is refused ([`Error::Api`](crate::Error::Api) with status 422 on
    /// courier-sandboxd). Prefer
    /// [`SandboxBuilder::idempotency_key`](crate::SandboxBuilder::idempotency_key).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::models::NewSandbox;
    /// let body = NewSandbox { template_id: "base".into(), ..Default::default() };
    /// let first = client.create_sandbox_idempotent(&body, "job-42").await?;
    /// let again = client.create_sandbox_idempotent(&body, "job-42").await?;
    /// assert_eq!(first.sandbox_id, again.sandbox_id);
    /// # Ok(()) }
    /// ```
    pub async fn create_sandbox_idempotent(
        &self,
        body: &NewSandbox,
        key: &str,
    ) -> Result<SandboxRecord> {
        if self.config().debug() {
            return Ok(debug_record(super::DEBUG_SANDBOX_ID, &body.template_id));
        }
        let url = self.endpoint("/v2/sandboxes", &[])?;
        let response = self
            .send_with(
                Method::POST,
                url,
                Some(body),
                true,
                &[(IDEMPOTENCY_KEY_HEADER, key)],
            )
            .await?;
        read_json(response).await
    }

    /// The newest metrics sample of each running sandbox among `sandbox_ids`
    /// (`GET /sandboxes/metrics`, at most 100 ids); unknown and paused sandboxes are
    /// left out. Empty in debug mode.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let samples = client.metrics_many(&["abc", "def"]).await?;
    /// for (id, sample) in &samples {
    ///     println!("{id}: {} bytes of memory", sample.mem_used);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn metrics_many(
        &self,
        sandbox_ids: &[&str],
    ) -> Result<HashMap<String, SandboxMetric>> {
        if self.config().debug() || sandbox_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let url = self.endpoint(
            "/sandboxes/metrics",
            &[("sandbox_ids".to_owned(), sandbox_ids.join(","))],
        )?;
        let answer: SandboxesWithMetrics = self.json(Method::GET, url, None::<&()>, true).await?;
        Ok(answer.sandboxes)
    }

    /// Sandbox `sandbox_id`'s logs (`GET /v2/sandboxes/{id}/logs`): on courier-sandboxd,
    /// its lifecycle events (created, paused, resumed, timed out, killed) and its envd's
    /// own log lines; still readable for a while after the sandbox is killed. Empty in
    /// debug mode.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::LogsQuery;
    /// for entry in client.logs("abc", &LogsQuery::new().limit(100)).await? {
    ///     println!("{} {:?} {}", entry.timestamp, entry.level, entry.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn logs(&self, sandbox_id: &str, query: &LogsQuery) -> Result<Vec<SandboxLogEntry>> {
        if self.config().debug() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(String, String)> = query
            .to_pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let url = self.endpoint(
            &format!("/v2/sandboxes/{}/logs", segment(sandbox_id)),
            &pairs,
        )?;
        let answer: SandboxLogs = self.json(Method::GET, url, None::<&()>, true).await?;
        Ok(answer.logs)
    }
}
