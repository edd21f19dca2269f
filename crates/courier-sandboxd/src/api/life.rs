//! Lifecycle and observation routes: metrics history (`GET /sandboxes/{id}/metrics` with
//! `start`/`end`, `GET /sandboxes/metrics?sandbox_ids=`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use courier_e2b::models::SandboxMetric;

use super::{ApiError, ApiResult, json, list};
use crate::error::Error;
use crate::server::{MetricsRange, Sandboxd};
use crate::state::SandboxState;

/// `GET /sandboxes/metrics` takes at most this many ids (E2B's `maxItems`).
pub(crate) const MAX_METRICS_IDS: usize = 100;

pub(super) fn routes() -> Router<Sandboxd> {
    Router::new()
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/metrics", get(metrics_many))
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
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let range = metrics_range(query.as_deref().unwrap_or(""))?;
    let samples = server.metrics_range(&id, range).await?;
    let samples: Vec<SandboxMetric> = samples.into_iter().map(SandboxMetric::from).collect();
    Ok(json(StatusCode::OK, samples))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the newest sample of each running sandbox
/// named (`{"sandboxes": {id: metric}}`); ids of unknown or paused sandboxes are left
/// out, as E2B answers for "all running sandboxes".
async fn metrics_many(
    State(server): State<Sandboxd>,
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
        let running = server
            .get(&id)
            .is_ok_and(|r| r.state == SandboxState::Running);
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
