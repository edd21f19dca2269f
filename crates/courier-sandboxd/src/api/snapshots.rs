//! Snapshots and forks (E2B's `POST /sandboxes/{id}/snapshots`, `GET /snapshots`,
//! `POST /sandboxes/{id}/fork`; a snapshot is deleted with `DELETE /templates/{id}`, see
//! [`super::templates`]). Everything here acts for the request's [`Owner`]: another
//! key's sandbox or snapshot answers 404.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use courier_e2b::models::{ErrorBody, ForkRequest, ForkResult, SnapshotInfo, SnapshotRequest};

use super::{ApiError, ApiResult, Owner, domain, json, list, models, parse_checked};
use crate::server::{DEFAULT_TIMEOUT, Sandboxd};
use crate::snapshots::SnapshotRecord;

/// `POST /sandboxes/{id}/snapshots` (`SandboxSnapshotRequest`).
const SNAPSHOT_FIELDS: &[(&str, models::Field)] = &[("name", models::Field::Served)];
/// `POST /sandboxes/{id}/fork` (`SandboxForkRequest`).
const FORK_FIELDS: &[(&str, models::Field)] = &[
    ("timeout", models::Field::Served),
    ("count", models::Field::Served),
];

pub(super) fn routes() -> Router<Sandboxd> {
    Router::new()
        .route("/sandboxes/{id}/snapshots", post(create))
        .route("/snapshots", get(list_snapshots))
        .route("/sandboxes/{id}/fork", post(fork))
}

fn info(record: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: record.id.clone(),
        names: record.names(),
    }
}

async fn create(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: SnapshotRequest = parse_checked(&body, SNAPSHOT_FIELDS, true)?;
    let name = body.name.filter(|n| !n.is_empty());
    let record = server.create_snapshot(&id, &owner.0, name).await?;
    let mut response = json(StatusCode::CREATED, info(&record));
    // A Courier extension beside E2B's body: whether the snapshot kept the sandbox's
    // memory (its sandboxes resume its processes) or its files only (they boot afresh;
    // the sandbox's logs say why).
    response.headers_mut().insert(
        SNAPSHOT_MEMORY_HEADER,
        HeaderValue::from_static(if record.memory.is_some() {
            "true"
        } else {
            "false"
        }),
    );
    Ok(response)
}

/// The response header of `POST /sandboxes/{id}/snapshots` saying whether the snapshot
/// kept the sandbox's memory (`true`) or its filesystem only (`false`).
pub(crate) const SNAPSHOT_MEMORY_HEADER: &str = "courier-snapshot-memory";

/// `GET /snapshots?sandboxID=&name=&limit=&nextToken=`: the key's snapshots, newest
/// first; `X-Next-Token` (the last id of the page) when more follow.
async fn list_snapshots(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (mut sandbox_id, mut name, mut limit, mut next) = (None, None, list::MAX_LIMIT, None);
    for (key, value) in list::query_pairs(query.as_deref().unwrap_or("")) {
        match key.as_str() {
            "sandboxID" => sandbox_id = Some(value),
            "name" => name = Some(value),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=list::MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid limit {value:?}: must be 1..={}",
                            list::MAX_LIMIT
                        ))
                    })?
            }
            "nextToken" => next = Some(value),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}; supported: sandboxID, name, limit, \
                     nextToken"
                )));
            }
        }
    }
    let all = server
        .snapshots()
        .list(&owner.0, sandbox_id.as_deref(), name.as_deref());
    let start = match &next {
        Some(token) => {
            all.iter()
                .position(|r| &r.id == token)
                .ok_or_else(|| ApiError::bad_request(format!("invalid nextToken {token:?}")))?
                + 1
        }
        None => 0,
    };
    let page: Vec<SnapshotInfo> = all.iter().skip(start).take(limit).map(info).collect();
    let mut response = json(StatusCode::OK, &page);
    if start + page.len() < all.len()
        && let Some(last) = all.get(start + page.len() - 1)
        && let Ok(value) = HeaderValue::from_str(&last.id)
    {
        response.headers_mut().insert("X-Next-Token", value);
    }
    Ok(response)
}

async fn fork(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: ForkRequest = parse_checked(&body, FORK_FIELDS, true)?;
    let timeout = body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let results = server
        .fork(&id, &owner.0, body.count.unwrap_or(1), timeout)
        .await?;
    let results: Vec<ForkResult> = results
        .into_iter()
        .map(|result| match result {
            Ok(record) => ForkResult {
                sandbox: Some(models::sandbox(&record, domain(&server))),
                error: None,
            },
            Err(e) => {
                let e = ApiError::from(e);
                ForkResult {
                    sandbox: None,
                    error: Some(ErrorBody {
                        code: e.status.as_u16(),
                        message: e.message,
                    }),
                }
            }
        })
        .collect();
    Ok(json(StatusCode::CREATED, results))
}
