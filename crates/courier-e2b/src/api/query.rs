//! The list filter (`GET /v2/sandboxes` query) and its metadata triple-encoding.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{
    Error, Result,
    models::{ListedSandbox, SandboxState},
};

/// Sort order by start time (server default: newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// Which sandboxes [`Client::list`](crate::Client::list) returns. Empty = all (running and
/// paused).
///
/// ```
/// use courier_e2b::{SandboxQuery, models::SandboxState};
/// let query = SandboxQuery::new().state(SandboxState::Running).metadata("a", "b c").limit(50);
/// let pairs = query.to_query_pairs().unwrap();
/// assert_eq!(pairs[0], ("metadata".to_owned(), "a=b%2520c".to_owned()));
/// assert_eq!(pairs[1], ("state".to_owned(), "running".to_owned()));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxQuery {
    /// Only sandboxes whose metadata contains all these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Only these states (empty = both).
    pub states: Vec<SandboxState>,
    /// Page size, 1–100 (server default 100).
    pub limit: Option<u32>,
    /// Only this template (id or alias).
    pub template: Option<String>,
    /// Only sandboxes started at or after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Sort order.
    pub order: Option<SortOrder>,
}

impl SandboxQuery {
    /// Everything.
    pub fn new() -> SandboxQuery {
        SandboxQuery::default()
    }

    /// Adds a metadata filter pair.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds a state to the filter.
    pub fn state(mut self, state: SandboxState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Sets the page size (1–100).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Filters by template id or alias.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(template.into());
        self
    }

    /// Only sandboxes started at or after `time`.
    pub fn started_after(mut self, time: DateTime<Utc>) -> Self {
        self.started_after = Some(time);
        self
    }

    /// Sets the sort order.
    pub fn order(mut self, order: SortOrder) -> Self {
        self.order = Some(order);
        self
    }

    /// The query parameters, before the HTTP layer's own encoding. Metadata is encoded as
    /// the official SDKs do: each key and value percent-encoded, then form-joined
    /// (`k=v&k2=v2`, which encodes the `%` again); the URL layer encodes it a third time.
    pub fn to_query_pairs(&self) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        if !self.metadata.is_empty() {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in &self.metadata {
                form.append_pair(&strict_encode(key), &strict_encode(value));
            }
            pairs.push(("metadata".to_owned(), form.finish()));
        }
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            pairs.push(("state".to_owned(), states.join(",")));
        }
        if let Some(order) = self.order {
            let order = match order {
                SortOrder::Asc => "asc",
                SortOrder::Desc => "desc",
            };
            pairs.push(("order".to_owned(), order.to_owned()));
        }
        if let Some(time) = self.started_after {
            pairs.push((
                "startedAfter".to_owned(),
                time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            ));
        }
        if let Some(template) = &self.template {
            pairs.push(("template".to_owned(), template.clone()));
        }
        if let Some(limit) = self.limit {
            if !(1..=100).contains(&limit) {
                return Err(Error::InvalidArgument {
                    message: format!("limit {limit} is out of range 1..=100"),
                });
            }
            pairs.push(("limit".to_owned(), limit.to_string()));
        }
        Ok(pairs)
    }
}

fn strict_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, crate::STRICT).to_string()
}

/// One page of a sandbox listing.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPage {
    /// The sandboxes on this page.
    pub sandboxes: Vec<ListedSandbox>,
    /// The cursor for the next page, `None` on the last one.
    pub next_token: Option<String>,
}
