//! Observation routes: metrics history (`GET /sandboxes/{id}/metrics` with
//! `start`/`end`, `GET /sandboxes/metrics?sandbox_ids=`) and sandbox logs
//! (`GET /sandboxes/{id}/logs`, `GET /v2/sandboxes/{id}/logs`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use courier_e2b::models::SandboxMetric;

use super::{ApiError, ApiResult, Owner, json, list, owned};
use crate::error::Error;
use crate::server::logs::{LogEntry, LogLevel};
use crate::server::{MetricsRange, Sandboxd};
use crate::state::SandboxState;

/// `GET /sandboxes/metrics` takes at most this many ids (E2B's `maxItems`).
pub(crate) const MAX_METRICS_IDS: usize = 100;

pub(super) fn routes() -> Router<Sandboxd> {
    Router::new()
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/metrics", get(metrics_many))
        .route("/sandboxes/{id}/logs", get(logs_v1))
        .route("/v2/sandboxes/{id}/logs", get(logs_v2))
}

/// The default and largest `limit` of the logs routes (E2B's).
pub(crate) const MAX_LOG_LIMIT: usize = 1000;

/// The query of `GET /v2/sandboxes/{id}/logs` (the v1 route's `start` is `cursor`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogsQuery {
    /// Milliseconds since the epoch: forward from it, or backward from it.
    cursor: Option<i64>,
    limit: usize,
    backward: bool,
    level: Option<LogLevel>,
    search: Option<String>,
}

fn logs_query(query: &str, v1: bool) -> ApiResult<LogsQuery> {
    let mut q = LogsQuery {
        cursor: None,
        limit: MAX_LOG_LIMIT,
        backward: false,
        level: None,
        search: None,
    };
    let cursor_name = if v1 { "start" } else { "cursor" };
    for (name, value) in list::query_pairs(query) {
        match name.as_str() {
            n if n == cursor_name => {
                q.cursor = Some(value.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{cursor_name} must be a unix timestamp in milliseconds (an integer >= 0), got {value:?}"
                    ))
                })?);
            }
            "limit" => {
                let limit = value.parse::<usize>().ok();
                q.limit = match limit {
                    Some(l) if v1 || l <= MAX_LOG_LIMIT => l.min(MAX_LOG_LIMIT),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "limit must be an integer in 0..={MAX_LOG_LIMIT}, got {value:?}"
                        )));
                    }
                };
            }
            "direction" if !v1 => {
                q.backward = match value.as_str() {
                    "forward" => false,
                    "backward" => true,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "direction must be forward or backward, got {value:?}"
                        )));
                    }
                };
            }
            "level" if !v1 => {
                q.level = Some(
                    LogLevel::parse(&value)
                        .filter(|_| value != "trace" && value != "warning")
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "level must be one of debug, info, warn, error, got {value:?}"
                            ))
                        })?,
                );
            }
            "search" if !v1 => {
                if value.len() > 256 {
                    return Err(ApiError::bad_request(
                        "search must be at most 256 characters",
                    ));
                }
                q.search = Some(value);
            }
            other => {
                let allowed = if v1 {
                    "start, limit"
                } else {
                    "cursor, limit, direction, level, search"
                };
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: the logs route takes {allowed}"
                )));
            }
        }
    }
    Ok(q)
}

/// Applies `q` to `entries` (oldest first): forward from the cursor oldest first, or
/// backward from it newest first; at most `limit`.
fn select_logs(entries: Vec<LogEntry>, q: &LogsQuery) -> Vec<LogEntry> {
    let keep = |e: &LogEntry| {
        let ms = e.timestamp.timestamp_millis();
        let in_range = match (q.cursor, q.backward) {
            (None, _) => true,
            (Some(c), false) => ms >= c,
            (Some(c), true) => ms <= c,
        };
        in_range
            && q.level.is_none_or(|l| e.level >= l)
            && q.search.as_deref().is_none_or(|s| e.message.contains(s))
    };
    let filtered = entries.into_iter().filter(keep);
    if q.backward {
        filtered.rev().take(q.limit).collect()
    } else {
        filtered.take(q.limit).collect()
    }
}

/// The deprecated `GET /sandboxes/{id}/logs?start=&limit=`: `{logs: [{timestamp, line}],
/// logEntries: [...]}`, oldest first.
async fn logs_v1(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let q = logs_query(query.as_deref().unwrap_or(""), true)?;
    let entries = select_logs(server.logs(&id, &owner.0).await?, &q);
    let lines: Vec<_> = entries
        .iter()
        .map(|e| serde_json::json!({"timestamp": e.timestamp, "line": e.message}))
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"logs": lines, "logEntries": entries}),
    ))
}

/// `GET /v2/sandboxes/{id}/logs?cursor=&limit=&direction=&level=&search=`: `{logs: [...]}`.
async fn logs_v2(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let q = logs_query(query.as_deref().unwrap_or(""), false)?;
    let entries = select_logs(server.logs(&id, &owner.0).await?, &q);
    Ok(json(StatusCode::OK, serde_json::json!({"logs": entries})))
}

/// A unix-seconds query parameter (`start`, `end`), named when it does not parse.
fn seconds(name: &str, value: &str) -> ApiResult<i64> {
    value
        .parse::<i64>()
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be a unix timestamp in seconds (an integer >= 0), got {value:?}"
            ))
        })
}

fn metrics_range(query: &str) -> ApiResult<MetricsRange> {
    let mut range = MetricsRange::default();
    for (name, value) in list::query_pairs(query) {
        match name.as_str() {
            "start" => range.start = Some(seconds("start", &value)?),
            "end" => range.end = Some(seconds("end", &value)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: GET /sandboxes/{{id}}/metrics takes \
                     start and end"
                )));
            }
        }
    }
    if let (Some(start), Some(end)) = (range.start, range.end)
        && start > end
    {
        return Err(ApiError::bad_request(format!(
            "start ({start}) must not be after end ({end})"
        )));
    }
    Ok(range)
}

/// `GET /sandboxes/{id}/metrics[?start=&end=]`: the kept samples in the range, oldest
/// first (the whole kept history, sampled now first, without a range).
async fn metrics(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    owned(&server, &owner, &id)?;
    let range = metrics_range(query.as_deref().unwrap_or(""))?;
    let samples = server.metrics_range(&id, range).await?;
    let samples: Vec<SandboxMetric> = samples.into_iter().map(SandboxMetric::from).collect();
    Ok(json(StatusCode::OK, samples))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the newest sample of each running sandbox
/// named (`{"sandboxes": {id: metric}}`); ids of unknown, paused or another key's
/// sandboxes are left out, as E2B answers for "all running sandboxes".
async fn metrics_many(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let mut ids: Vec<String> = Vec::new();
    for (name, value) in list::query_pairs(query.as_deref().unwrap_or("")) {
        match name.as_str() {
            "sandbox_ids" => ids.extend(
                value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: GET /sandboxes/metrics takes sandbox_ids"
                )));
            }
        }
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "sandbox_ids is required: a comma-separated list of sandbox ids",
        ));
    }
    if ids.len() > MAX_METRICS_IDS {
        return Err(ApiError::bad_request(format!(
            "sandbox_ids names {} sandboxes; at most {MAX_METRICS_IDS} are allowed",
            ids.len()
        )));
    }
    let mut sandboxes = BTreeMap::new();
    for id in ids {
        let running = owned(&server, &owner, &id).is_ok_and(|r| r.state == SandboxState::Running);
        if !running {
            continue;
        }
        match server.metrics_range(&id, MetricsRange::default()).await {
            Ok(samples) => {
                if let Some(newest) = samples.into_iter().next_back() {
                    sandboxes.insert(id, SandboxMetric::from(newest));
                }
            }
            // Killed between the lookup and the sample.
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "sandboxes": sandboxes }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms: i64, level: LogLevel, message: &str) -> LogEntry {
        LogEntry {
            timestamp: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
            level,
            message: message.to_owned(),
            fields: Default::default(),
        }
    }

    #[test]
    fn logs_are_selected_by_cursor_direction_level_search_and_limit() {
        let all = vec![
            entry(1000, LogLevel::Info, "created"),
            entry(2000, LogLevel::Debug, "detail"),
            entry(3000, LogLevel::Warn, "disk low"),
            entry(4000, LogLevel::Error, "envd exited"),
        ];
        let pick = |query: &str| {
            let q = logs_query(query, false).unwrap();
            select_logs(all.clone(), &q)
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
        };
        assert_eq!(pick("").len(), 4);
        assert_eq!(pick("cursor=2000&limit=2"), ["detail", "disk low"]);
        assert_eq!(
            pick("cursor=3000&direction=backward"),
            ["disk low", "detail", "created"]
        );
        assert_eq!(pick("level=warn"), ["disk low", "envd exited"]);
        assert_eq!(pick("search=disk"), ["disk low"]);
        assert_eq!(pick("limit=0"), Vec::<String>::new());
        for bad in [
            "limit=1001",
            "direction=up",
            "level=loud",
            "cursor=-1",
            "start=1",
        ] {
            let e = logs_query(bad, false).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        // v1 names the cursor `start` and clamps its limit.
        let v1 = logs_query("start=5&limit=5000", true).unwrap();
        assert_eq!((v1.cursor, v1.limit), (Some(5), MAX_LOG_LIMIT));
        assert!(logs_query("direction=forward", true).is_err());
    }

    #[test]
    fn metrics_ranges_are_read_by_name_and_checked() {
        assert_eq!(
            metrics_range("start=10&end=20").unwrap(),
            MetricsRange {
                start: Some(10),
                end: Some(20)
            }
        );
        assert_eq!(metrics_range("").unwrap(), MetricsRange::default());
        for bad in ["start=x", "end=-1", "start=5&end=4", "from=1"] {
            let e = metrics_range(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(
            metrics_range("start=abc")
                .unwrap_err()
                .message
                .contains("start")
        );
    }
}
