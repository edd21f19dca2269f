//! `GET /v2/sandboxes`: query decoding (including the metadata triple-encoding of the
//! SDKs), filtering, ordering and the stable `X-Next-Token` cursor.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::state::{SandboxRecord, SandboxState};

/// Largest and default page size.
pub(crate) const MAX_LIMIT: usize = 100;

/// Go's `url.QueryUnescape`: `%XX` escapes and `+` as space. Invalid escapes are kept
/// literally (the filter then simply matches nothing).
pub(crate) fn query_unescape(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query string's `(name, value)` pairs, decoded once (what the HTTP layer does).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (query_unescape(k), query_unescape(v))
        })
        .collect()
}

/// A list query parameter that does not parse; the message names it (answered 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum QueryError {
    /// A `metadata` filter pair without `=`.
    #[error("invalid metadata filter {0:?}: expected key=value")]
    MetadataFilter(String),
    /// A `state` other than `running` or `paused`.
    #[error("invalid state {0:?}: expected running or paused")]
    State(String),
    /// An `order` other than `asc` or `desc`.
    #[error("invalid order {0:?}: expected asc or desc")]
    Order(String),
    /// A `startedAfter` that is no RFC 3339 time.
    #[error("invalid startedAfter {value:?}: {source}")]
    StartedAfter {
        /// The parameter's value.
        value: String,
        /// Why it does not parse.
        source: chrono::ParseError,
    },
    /// A `limit` outside 1..=100.
    #[error("invalid limit {0:?}: must be 1..=100")]
    Limit(String),
    /// A `nextToken` that is no cursor of ours.
    #[error("invalid nextToken {0:?}")]
    NextToken(String),
}

/// Decodes the (already once-decoded) `metadata` parameter as infra's `parseFilters`:
/// unescape the whole string, split on `&` then `=`, unescape each key and value.
pub(crate) fn decode_metadata(param: &str) -> Result<BTreeMap<String, String>, QueryError> {
    let whole = query_unescape(param);
    let mut out = BTreeMap::new();
    for pair in whole.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| QueryError::MetadataFilter(pair.to_owned()))?;
        out.insert(query_unescape(k), query_unescape(v));
    }
    Ok(out)
}

/// The parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListQuery {
    pub metadata: BTreeMap<String, String>,
    pub states: Vec<SandboxState>,
    pub ascending: bool,
    pub started_after: Option<DateTime<Utc>>,
    pub template: Option<String>,
    pub limit: usize,
    pub next_token: Option<(DateTime<Utc>, String)>,
}

/// A cursor: base64url of `<startedAt>__<id>`.
pub(crate) fn encode_cursor(record: &SandboxRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}__{}",
        record
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        record.sandbox_id
    ))
}

fn decode_cursor(token: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?).ok()?;
    let mut parts = raw.split("__");
    let at = DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&Utc);
    let id = parts.next()?.to_owned();
    Some((at, id))
}

impl ListQuery {
    /// Parses the raw query string; the error names the bad parameter.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut q = ListQuery {
            metadata: BTreeMap::new(),
            states: Vec::new(),
            ascending: false,
            started_after: None,
            template: None,
            limit: MAX_LIMIT,
            next_token: None,
        };
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "metadata" => q.metadata.extend(decode_metadata(&value)?),
                "state" => {
                    for state in value.split(',').filter(|s| !s.is_empty()) {
                        q.states.push(match state {
                            "running" => SandboxState::Running,
                            "paused" => SandboxState::Paused,
                            other => {
                                return Err(QueryError::State(other.to_owned()));
                            }
                        });
                    }
                }
                "order" => {
                    q.ascending = match value.as_str() {
                        "asc" => true,
                        "desc" => false,
                        other => {
                            return Err(QueryError::Order(other.to_owned()));
                        }
                    }
                }
                "startedAfter" => {
                    q.started_after = Some(
                        DateTime::parse_from_rfc3339(&value)
                            .map_err(|source| QueryError::StartedAfter {
                                value: value.clone(),
                                source,
                            })?
                            .with_timezone(&Utc),
                    )
                }
                "template" => q.template = Some(value),
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| QueryError::Limit(value.clone()))?
                }
                "nextToken" if !value.is_empty() => {
                    q.next_token = Some(
                        decode_cursor(&value)
                            .ok_or_else(|| QueryError::NextToken(value.clone()))?,
                    )
                }
                _ => {}
            }
        }
        if q.states.is_empty() {
            q.states = vec![SandboxState::Running, SandboxState::Paused];
        }
        Ok(q)
    }

    /// Filters, orders and pages `records`; returns the page and the next cursor
    /// (`None` on the last page). `template_ids` are the ids the `template` filter
    /// resolved to (empty when it names no template: then nothing matches).
    pub fn apply(
        &self,
        mut records: Vec<SandboxRecord>,
        template_ids: Option<&[String]>,
    ) -> (Vec<SandboxRecord>, Option<String>) {
        records.retain(|r| {
            self.states.contains(&r.state)
                && self
                    .metadata
                    .iter()
                    .all(|(k, v)| r.metadata.get(k) == Some(v))
                && template_ids.is_none_or(|ids| ids.contains(&r.template_id))
                // Second precision, inclusive (what E2B does).
                && self
                    .started_after
                    .is_none_or(|after| r.started_at.timestamp() >= after.timestamp())
        });
        let key = |r: &SandboxRecord| (r.started_at, r.sandbox_id.clone());
        records.sort_by_key(key);
        if !self.ascending {
            records.reverse();
        }
        if let Some(cursor) = &self.next_token {
            records.retain(|r| {
                let k = key(r);
                if self.ascending {
                    k > *cursor
                } else {
                    k < *cursor
                }
            });
        }
        let more = records.len() > self.limit;
        records.truncate(self.limit);
        let next = more.then(|| records.last().map(encode_cursor)).flatten();
        (records, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, secs: i64, state: SandboxState, meta: &[(&str, &str)]) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: id.to_owned(),
            template_id: "base".to_owned(),
            alias: Some("base".to_owned()),
            envd_access_token: crate::state::Secret::new(""),
            started_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            end_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cpu_count: 2,
            memory_mb: 1024,
            disk_size_mb: 4096,
            state,
            auto_pause: false,
            auto_resume_timeout_secs: None,
            allow_internet_requested: false,
            network: Default::default(),
            traffic_access_token: None,
            volume_mounts: Vec::new(),
            owner: None,
            auto_pause_memory: true,
            paused_layers: None,
            env_vars: None,
        }
    }

    #[test]
    fn metadata_filter_undoes_the_sdk_triple_encoding() {
        // The protocol reference's example: {"a":"b c","x&y":"1"}.
        let q = ListQuery::parse("metadata=a%3Db%252520c%26x%252526y%3D1").unwrap();
        assert_eq!(
            q.metadata,
            BTreeMap::from([
                ("a".to_owned(), "b c".to_owned()),
                ("x&y".to_owned(), "1".to_owned())
            ])
        );
    }

    #[test]
    fn state_defaults_to_both_and_accepts_comma_lists() {
        let q = ListQuery::parse("").unwrap();
        assert_eq!(q.states, vec![SandboxState::Running, SandboxState::Paused]);
        let q = ListQuery::parse("state=paused").unwrap();
        assert_eq!(q.states, vec![SandboxState::Paused]);
        let q = ListQuery::parse("state=running%2Cpaused").unwrap();
        assert_eq!(q.states.len(), 2);
        assert!(ListQuery::parse("state=dead").is_err());
        assert!(ListQuery::parse("limit=0").is_err());
        assert!(ListQuery::parse("limit=101").is_err());
    }

    #[test]
    fn pagination_is_stable_and_ordered() {
        let all: Vec<_> = (0..7)
            .map(|i| record(&format!("s{i}"), i / 2, SandboxState::Running, &[]))
            .collect();
        for order in ["desc", "asc"] {
            let mut seen = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut query = format!("limit=3&order={order}");
                if let Some(t) = &token {
                    query.push_str(&format!("&nextToken={t}"));
                }
                let (page, next) = ListQuery::parse(&query).unwrap().apply(all.clone(), None);
                seen.extend(page.into_iter().map(|r| r.sandbox_id));
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let mut expected: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
            if order == "desc" {
                expected.reverse();
            }
            assert_eq!(seen, expected, "order {order}");
        }
    }

    #[test]
    fn filters_by_state_metadata_template_and_start() {
        let all = vec![
            record("a", 0, SandboxState::Running, &[("team", "x")]),
            record("b", 10, SandboxState::Paused, &[("team", "x")]),
            record("c", 20, SandboxState::Running, &[("team", "y")]),
        ];
        let ids = |q: &str, t: Option<&[String]>| -> Vec<String> {
            ListQuery::parse(q)
                .unwrap()
                .apply(all.clone(), t)
                .0
                .into_iter()
                .map(|r| r.sandbox_id)
                .collect()
        };
        assert_eq!(ids("metadata=team%3Dx", None), vec!["b", "a"]);
        assert_eq!(ids("metadata=team%3Dx&state=running", None), vec!["a"]);
        assert_eq!(ids("", Some(&[])), Vec::<String>::new());
        assert_eq!(
            ids("startedAfter=2023-11-14T22%3A13%3A30Z", None),
            vec!["c", "b"]
        );
    }
}
