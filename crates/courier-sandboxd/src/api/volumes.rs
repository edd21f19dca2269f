//! Volumes: E2B's `/volumes` routes (behind the API key; a volume is its key's) and the
//! volume content API `/volumecontent/{volumeID}/{file,dir,path}` (behind the volume's
//! own token, `Authorization: Bearer`, as the official SDKs send it). See
//! [`crate::volumes`] for storage, quota and ownership, and
//! [`crate::volumes::content`] for how paths stay inside a volume.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt as _;

use super::{ApiError, ApiResult, json, parse_body, request_key};
use crate::server::Sandboxd;
use crate::volumes::content::{self, Attrs, ContentError, VolumePath};
use crate::volumes::{Volume, VolumeError, owner_of};

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let status = match &e {
            VolumeError::Invalid(_) | VolumeError::NameTaken(_) => StatusCode::BAD_REQUEST,
            VolumeError::NotFound(_) => StatusCode::NOT_FOUND,
            VolumeError::InUse { .. } => StatusCode::CONFLICT,
            VolumeError::Quota { .. } => StatusCode::INSUFFICIENT_STORAGE,
            VolumeError::Storage(_) => {
                tracing::error!(error = %e, "volume request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> Self {
        let status = match &e {
            ContentError::Invalid(_) => StatusCode::BAD_REQUEST,
            ContentError::NotFound(_) => StatusCode::NOT_FOUND,
            ContentError::Conflict(_) => StatusCode::CONFLICT,
            ContentError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ContentError::Io { .. } => {
                tracing::error!(error = %e, "volume content request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

/// The `/volumes` routes (the caller adds the API key check).
pub(super) fn routes() -> Router<Sandboxd> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/{volume_id}", get(get_one).delete(destroy))
}

/// The content routes: authorised by the volume's token, not the API key.
pub(super) fn content_routes() -> Router<Sandboxd> {
    Router::new()
        .route(
            "/volumecontent/{volume_id}/file",
            get(read_file).put(write_file),
        )
        .route(
            "/volumecontent/{volume_id}/dir",
            get(list_dir).post(make_dir),
        )
        .route(
            "/volumecontent/{volume_id}/path",
            get(stat).patch(update).delete(remove),
        )
}

/// The owner of what a request does: its API key (checked by the key layer already).
fn owner(headers: &HeaderMap) -> String {
    owner_of(request_key(headers).unwrap_or_default())
}

fn volume_json(volume: &Volume, with_token: bool) -> Value {
    let mut out = serde_json::json!({
        "volumeID": volume.meta.volume_id,
        "name": volume.meta.name,
    });
    if with_token {
        out["token"] = Value::String(volume.meta.token.expose().to_owned());
    }
    out
}

async fn create(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let body: Map<String, Value> = parse_body(&body, None)?;
    if let Some(other) = body.keys().find(|k| k.as_str() != "name") {
        return Err(ApiError::bad_request(format!(
            "{other} is not a field of NewVolume (only name)"
        )));
    }
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("name is required (a string)"))?;
    let volume = server.volumes().create(&owner(&headers), name).await?;
    Ok(json(StatusCode::CREATED, volume_json(&volume, true)))
}

async fn list(State(server): State<Sandboxd>, headers: HeaderMap) -> ApiResult<Response> {
    let items: Vec<Value> = server
        .volumes()
        .list(&owner(&headers))
        .iter()
        .map(|v| volume_json(v, false))
        .collect();
    Ok(json(StatusCode::OK, items))
}

async fn get_one(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let volume = server.volumes().get(&owner(&headers), &id)?;
    Ok(json(StatusCode::OK, volume_json(&volume, true)))
}

async fn destroy(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let owner = owner(&headers);
    // 404 before "in use": another key learns nothing about the volume.
    server.volumes().get(&owner, &id)?;
    let mounted_by = server.sandboxes_mounting(&id);
    server.volumes().delete(&owner, &id, &mounted_by).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The volume a content request is for: its token must match (401 otherwise, for an
/// unknown volume too, so ids cannot be probed).
fn authorize(server: &Sandboxd, headers: &HeaderMap, id: &str) -> ApiResult<Arc<Volume>> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer <volume token>",
            )
        })?;
    server
        .volumes()
        .by_token(id, token)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid volume token"))
}

/// What every volume content route starts with: the volume (authorized by its own
/// token), the query's parameters and the required `path` among them.
fn content_request(
    server: &Sandboxd,
    headers: &HeaderMap,
    id: &str,
    query: Option<&str>,
) -> ApiResult<(Arc<Volume>, BTreeMap<String, String>, VolumePath)> {
    let volume = authorize(server, headers, id)?;
    let params = params(query);
    let path = path_param(&params)?;
    Ok((volume, params, path))
}

/// The query's parameters (last value wins).
fn params(query: Option<&str>) -> BTreeMap<String, String> {
    super::list::query_pairs(query.unwrap_or(""))
        .into_iter()
        .collect()
}

/// The `path` parameter (required).
fn path_param(params: &BTreeMap<String, String>) -> ApiResult<VolumePath> {
    let raw = params
        .get("path")
        .ok_or_else(|| ApiError::bad_request("path is required"))?;
    Ok(VolumePath::parse(raw)?)
}

fn u32_param(params: &BTreeMap<String, String>, name: &str) -> ApiResult<Option<u32>> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!("{name} must be a non-negative integer, got {v:?}"))
            })
        })
        .transpose()
}

fn bool_param(params: &BTreeMap<String, String>, name: &str) -> ApiResult<bool> {
    match params.get(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, got {v:?}"
        ))),
    }
}

fn attrs(params: &BTreeMap<String, String>) -> ApiResult<Attrs> {
    Ok(Attrs {
        uid: u32_param(params, "uid")?,
        gid: u32_param(params, "gid")?,
        mode: u32_param(params, "mode")?,
    })
}

/// Runs a content operation off the async threads.
async fn run<T: Send + 'static>(
    volume: Arc<Volume>,
    f: impl FnOnce(&Volume) -> Result<T, ContentError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || f(&volume))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn stat(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (volume, _, path) = content_request(&server, &headers, &id, query.as_deref())?;
    let entry = run(volume, move |v| content::stat(v.root(), &path)).await?;
    Ok(json(StatusCode::OK, entry))
}

async fn make_dir(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (volume, params, path) = content_request(&server, &headers, &id, query.as_deref())?;
    let (attrs, force) = (attrs(&params)?, bool_param(&params, "force")?);
    let entry = run(volume, move |v| {
        content::make_dir(v.root(), &path, attrs, force)
    })
    .await?;
    Ok(json(StatusCode::CREATED, entry))
}

async fn list_dir(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (volume, params, path) = content_request(&server, &headers, &id, query.as_deref())?;
    let depth = u32_param(&params, "depth")?.unwrap_or(1).max(1);
    let entries = run(volume, move |v| content::list(v.root(), &path, depth)).await?;
    Ok(json(StatusCode::OK, entries))
}

async fn update(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let (volume, _, path) = content_request(&server, &headers, &id, query.as_deref())?;
    let body: Map<String, Value> = parse_body(&body, Some(Map::new()))?;
    let field = |name: &str| -> ApiResult<Option<u32>> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{name} must be a non-negative integer"))
                }),
        }
    };
    if let Some(other) = body
        .keys()
        .find(|k| !["uid", "gid", "mode"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "{other} is not a field of the update (uid, gid, mode)"
        )));
    }
    let attrs = Attrs {
        uid: field("uid")?,
        gid: field("gid")?,
        mode: field("mode")?,
    };
    let entry = run(volume, move |v| content::update(v.root(), &path, attrs)).await?;
    Ok(json(StatusCode::OK, entry))
}

async fn remove(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<StatusCode> {
    let (volume, _, path) = content_request(&server, &headers, &id, query.as_deref())?;
    run(volume, move |v| content::remove(v.root(), &path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read_file(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (volume, _, path) = content_request(&server, &headers, &id, query.as_deref())?;
    let file = run(volume, move |v| content::open_file(v.root(), &path)).await?;
    // 256 KiB reads: each is a trip to the blocking pool (4 KiB ones ran at ~30 MB/s).
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 << 10);
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn write_file(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let (volume, params, path) = content_request(&server, &headers, &id, query.as_deref())?;
    let (attrs, force) = (attrs(&params)?, bool_param(&params, "force")?);
    let quota_mb = volume.meta.size_mb;
    let open_path = path.clone();
    let (file, parent) = run(volume.clone(), move |v| {
        content::create_file(v.root(), &open_path, attrs, force)
    })
    .await?;
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let written: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(e, &path, quota_mb))?;
        }
        file.flush()
            .await
            .map_err(|e| write_error(e, &path, quota_mb))?;
        file.sync_all()
            .await
            .map_err(|e| write_error(e, &path, quota_mb))
    }
    .await;
    drop(file);
    let stat_path = path.clone();
    let parent = Arc::new(parent);
    if let Err(e) = written {
        // Nothing half-written stays (a full volume, or a client that went away).
        let (parent, name) = (parent.clone(), path_name(&path));
        let _ = tokio::task::spawn_blocking(move || {
            rustix::fs::unlinkat(&*parent, name.as_str(), rustix::fs::AtFlags::empty())
        })
        .await;
        return Err(e);
    }
    let entry = run(volume, move |_| {
        content::stat_created(std::os::fd::AsFd::as_fd(&*parent), &stat_path)
    })
    .await?;
    Ok(json(StatusCode::CREATED, entry))
}

fn path_name(path: &VolumePath) -> String {
    path.display()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn write_error(e: std::io::Error, path: &VolumePath, quota_mb: u64) -> ApiError {
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        ContentError::Full { quota_mb }.into()
    } else {
        ContentError::Io {
            op: "write",
            path: path.display(),
            source: e,
        }
        .into()
    }
}
