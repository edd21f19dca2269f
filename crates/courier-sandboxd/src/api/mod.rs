//! The REST control plane (E2B's API, see the protocol reference §3): axum handlers over
//! [`Sandboxd`]. Every route but `GET /health` needs an accepted `X-API-Key`; every
//! error, including unknown routes and malformed bodies, is JSON `{code, message}`
//! because the official SDKs parse it unconditionally.
//!
//! Nothing is accepted and dropped: a body field this server does not serve is refused
//! with a 400 naming it unless it carries E2B's default (see [`models::check_fields`]),
//! and the routes of E2B's API this server does not serve answer 501 naming the feature
//! ([`unserved_routes`]).
//!
//! Each request acts for its API key (`Owner`): sandboxes (get, list, kill, connect,
//! pause, resume, timeout, refresh, network, metrics, logs, snapshots, forks), snapshots
//! and volumes are only found by the key that made them; another key's are answered
//! 404 exactly as unknown ids, so ids cannot be probed (see [`owned`]).

mod life;
mod list;
mod models;
mod snapshots;
mod templates;
mod volumes;

pub use models::CLIENT_ID;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::server::{CreateRequest, DEFAULT_TIMEOUT, Sandboxd};
use list::ListQuery;
use models::{ConnectBody, Field, RefreshBody, TimeoutBody};

/// An error answer: status plus message, rendered as `{code, message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) | Error::UnknownTemplate(_) => StatusCode::NOT_FOUND,
            Error::InvalidSpec { .. }
            | Error::Unsupported(_)
            | Error::InvalidEgressRule(_)
            | Error::InvalidTransformRule(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            // E2B answers 429 when a team is at its concurrent-sandbox limit.
            Error::Capacity(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
        }
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body; an empty body is `T::default()` where the endpoint allows it.
fn parse_body<T: DeserializeOwned>(body: &Bytes, empty: Option<T>) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace)
        && let Some(default) = empty
    {
        return Ok(default);
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Parses a JSON object body, refuses what `fields` does not serve (see
/// [`models::check_fields`]) and reads the rest as `T`; an empty body is `{}` where
/// `empty_ok`.
fn parse_checked<T: DeserializeOwned>(
    body: &Bytes,
    fields: &[(&str, Field)],
    empty_ok: bool,
) -> ApiResult<T> {
    let map: Map<String, Value> = parse_body(body, empty_ok.then(Map::new))?;
    models::check_fields(&map, fields)?;
    serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn json(status: StatusCode, value: impl serde::Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

/// The control plane's router (state included).
pub fn router(server: Sandboxd) -> Router {
    Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(get_one).delete(kill))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/network", put(update_network))
        .merge(snapshots::routes())
        .merge(templates::routes())
        .merge(life::routes())
        .merge(volumes::routes())
        .merge(unserved_routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(middleware::from_fn_with_state(server.clone(), require_key))
        // COPY uploads authorize themselves (an upload link's token, or the API key).
        .merge(templates::upload_routes())
        // The volume content API authorizes with each volume's own token.
        .merge(volumes::content_routes())
        // Health needs no key (load balancers and readiness probes).
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .with_state(server)
}

/// A handler answering 501 with E2B's error body, `message` naming the feature.
fn unserved(
    message: &'static str,
) -> impl FnOnce() -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static {
    move || std::future::ready(ApiError::new(StatusCode::NOT_IMPLEMENTED, message))
}

/// The routes of E2B's API (its `spec/openapi.yml`) this server does not serve: 501
/// naming the feature rather than a generic 404 (which the SDKs report as "sandbox not
/// found"). Authenticated like the others.
fn unserved_routes() -> Router<Sandboxd> {
    const TEAMS: &str = "team routes (teams, team metrics) are not supported by courier-sandboxd";
    const SECRETS: &str = "secrets are not supported by courier-sandboxd";
    const KEYS: &str = "API key and access token management is not supported by \
                        courier-sandboxd (keys come from its configuration)";
    const NODES: &str = "cluster node routes are not supported by courier-sandboxd";
    const ADMIN: &str = "admin routes are not supported by courier-sandboxd";
    const LEGACY_BUILD: &str = "template builds through the legacy build API are not \
                                supported by courier-sandboxd (use POST /v3/templates)";
    Router::new()
        .route("/teams", get(unserved(TEAMS)))
        .route("/teams/{team_id}/metrics", get(unserved(TEAMS)))
        .route("/teams/{team_id}/metrics/max", get(unserved(TEAMS)))
        .route("/v2/templates", post(unserved(LEGACY_BUILD)))
        .route("/templates", post(unserved(LEGACY_BUILD)))
        .route("/templates/{template_id}", post(unserved(LEGACY_BUILD)))
        .route(
            "/templates/{template_id}/builds/{build_id}",
            post(unserved(LEGACY_BUILD)),
        )
        .route("/secrets", get(unserved(SECRETS)).post(unserved(SECRETS)))
        .route(
            "/secrets/{secret_id}",
            get(unserved(SECRETS))
                .post(unserved(SECRETS))
                .delete(unserved(SECRETS)),
        )
        .route("/api-keys", get(unserved(KEYS)).post(unserved(KEYS)))
        .route(
            "/api-keys/{key_id}",
            patch(unserved(KEYS)).delete(unserved(KEYS)),
        )
        .route("/access-tokens", post(unserved(KEYS)))
        .route("/access-tokens/{token_id}", delete(unserved(KEYS)))
        .route("/nodes", get(unserved(NODES)))
        .route(
            "/nodes/{node_id}",
            get(unserved(NODES)).post(unserved(NODES)),
        )
        .route(
            "/admin/teams/{team_id}/sandboxes/kill",
            post(unserved(ADMIN)),
        )
        .route("/admin/sandboxes/running-counts", get(unserved(ADMIN)))
        .route(
            "/admin/teams/{team_id}/builds/cancel",
            post(unserved(ADMIN)),
        )
        .route("/admin/teams/{team_id}/api-keys", post(unserved(ADMIN)))
        .route(
            "/admin/teams/{team_id}/api-keys/{key_id}",
            delete(unserved(ADMIN)),
        )
}

/// The API key a request carries (`X-API-Key`, or `Authorization: Bearer`).
fn request_key(headers: &HeaderMap) -> Option<&str> {
    // HeaderMap lookups are case-insensitive: `X-API-KEY` (Python) and `X-API-Key` both work.
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
}

async fn require_key(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match request_key(&headers) {
        Some(key) if server.keys().verify(key.trim()) => {
            let owner = Owner(crate::keys::owner_of(key));
            let mut request = request;
            request.extensions_mut().insert(owner);
            next.run(request).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key").into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "missing X-API-Key header").into_response(),
    }
}

/// Who an authenticated request acts for (see [`crate::keys::owner_of`]), put there by
/// [`require_key`].
#[derive(Debug, Clone)]
pub(crate) struct Owner(pub String);

/// Sandbox `id`'s record when it is `owner`'s; another key's sandbox (and one of the
/// server's own, such as a template build sandbox) is [`Error::NotFound`], the same
/// answer as for an id that does not exist.
fn owned(server: &Sandboxd, owner: &Owner, id: &str) -> Result<crate::state::SandboxRecord, Error> {
    Ok(server.owned_entry(id, &owner.0)?.record())
}

fn domain(server: &Sandboxd) -> Option<&str> {
    server.config().domain.as_deref()
}

/// `Idempotency-Key` on create: a retry with the same key and body answers with the
/// sandbox the first request created (see [`crate::server::idempotency`]).
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set (`true`) on the answer to a create that replayed an earlier one under its
/// `Idempotency-Key`; the status stays 201 as the SDKs accept no other for a create.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

impl From<crate::server::idempotency::IdempotentError> for ApiError {
    fn from(e: crate::server::idempotency::IdempotentError) -> Self {
        use crate::server::idempotency::IdempotentError as E;
        let status = match e {
            E::Create(inner) => return inner.into(),
            E::InvalidKey => StatusCode::BAD_REQUEST,
            // The IETF idempotency-key draft's answer for a reused key with another body;
            // the key's sandbox being gone is a conflict with its state.
            E::DifferentBody => StatusCode::UNPROCESSABLE_ENTITY,
            E::SandboxGone(_) => StatusCode::CONFLICT,
            E::TooMany => StatusCode::TOO_MANY_REQUESTS,
        };
        Self::new(status, e.to_string())
    }
}

async fn create(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    let body: Map<String, Value> = parse_body(&raw, None)?;
    // The canonical body (keys sorted, whitespace gone) an idempotency key is bound to.
    let canonical = crate::server::idempotency::canonical_body(&body);
    let body = models::read_create(body)?;
    let template = body
        .template_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("templateID is required"))?;
    let network = models::create_network(body.allow_internet_access, body.network.as_ref())?;
    let (volume_mounts, _holds) =
        volume_binds(&server, &headers, body.volume_mounts.unwrap_or_default())?;
    let request = CreateRequest {
        template,
        timeout: body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
        metadata: body.metadata.unwrap_or_default(),
        env_vars: body.env_vars.unwrap_or_default(),
        auto_pause: body.auto_pause.unwrap_or(false),
        auto_resume: models::auto_resume(body.auto_resume.as_ref(), body.auto_pause)?,
        memory_mb: body.memory_mb,
        cpu_count: body.cpu_count,
        allow_internet: network.internet,
        egress: network.rules,
        allow_public_traffic: network.allow_public_traffic,
        mask_request_host: network.mask_request_host,
        die_with_server: false,
        volume_mounts,
        owner: Some(owner.0),
        auto_pause_memory: body.auto_pause_memory.unwrap_or(true),
    };
    let (record, replayed) = match headers.get(IDEMPOTENCY_KEY) {
        Some(key) => {
            let key = key.to_str().map_err(|_| {
                ApiError::from(crate::server::idempotency::IdempotentError::InvalidKey)
            })?;
            let api_key = request_key(&headers).unwrap_or("").trim();
            server
                .create_idempotent(api_key, key, &canonical, request)
                .await?
        }
        None => (server.create(request).await?, false),
    };
    let mut response = json(
        StatusCode::CREATED,
        models::sandbox(&record, domain(&server)),
    );
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Resolves `volumeMounts` against the caller's volumes: each must be the API key's
/// (another key's volume is as unknown as a missing one), at an absolute path, once.
///
/// Each volume is held (not deletable) until the returned holds drop, after the create
/// saved its record.
fn volume_binds<'a>(
    server: &'a Sandboxd,
    headers: &HeaderMap,
    mounts: Vec<courier_e2b::models::VolumeMount>,
) -> ApiResult<(
    Vec<crate::server::VolumeBind>,
    Vec<crate::volumes::VolumeHold<'a>>,
)> {
    let owner = crate::volumes::owner_of(request_key(headers).unwrap_or_default());
    let mut binds: Vec<crate::server::VolumeBind> = Vec::new();
    let mut holds = Vec::new();
    for mount in mounts {
        let path = crate::server::VolumeBind::check_path(&mount.path)?;
        if binds.iter().any(|b| b.path == path) {
            return Err(ApiError::bad_request(format!(
                "volumeMounts: two volumes are mounted at {path}"
            )));
        }
        let volume = server.volumes().by_name(&owner, &mount.name).map_err(|_| {
            ApiError::bad_request(format!(
                "volumeMounts: volume {:?} not found (create it with POST /volumes)",
                mount.name
            ))
        })?;
        holds.push(server.volumes().hold(&volume.meta.volume_id)?);
        binds.push(crate::server::VolumeBind {
            volume_id: volume.meta.volume_id.clone(),
            name: volume.meta.name.clone(),
            source: volume.mount_point().to_path_buf(),
            path,
        });
    }
    Ok((binds, holds))
}

async fn connect(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    owned(&server, &owner, &id)?;
    let body: ConnectBody = parse_checked(&body, models::CONNECT_FIELDS, true)?;
    let timeout = body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let (record, resumed) = server.connect(&id, timeout).await?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, models::sandbox(&record, domain(&server))))
}

/// The deprecated `POST /sandboxes/{id}/resume`: only for paused sandboxes.
async fn resume(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let current = owned(&server, &owner, &id)?;
    let body: ConnectBody = parse_checked(&body, models::RESUME_FIELDS, true)?;
    // The deprecated `autoPause` cannot change a sandbox's timeout action here.
    if body.auto_pause.is_some_and(|a| a != current.auto_pause) {
        return Err(ApiError::bad_request(
            "autoPause is not supported by courier-sandboxd on resume: a sandbox keeps the \
             timeout action it was created with",
        ));
    }
    if current.state == crate::state::SandboxState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    let timeout = body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let (record, _) = server.connect(&id, timeout).await?;
    Ok(json(
        StatusCode::CREATED,
        models::sandbox(&record, domain(&server)),
    ))
}

async fn get_one(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = owned(&server, &owner, &id)?;
    Ok(json(
        StatusCode::OK,
        models::detail(&record, domain(&server)),
    ))
}

async fn kill(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    owned(&server, &owner, &id)?;
    server.kill(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    owned(&server, &owner, &id)?;
    let body: TimeoutBody = parse_checked(&body, models::TIMEOUT_FIELDS, false)?;
    server.set_timeout(&id, Duration::from_secs(body.timeout))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    owned(&server, &owner, &id)?;
    let body: models::PauseBody = parse_checked(&body, models::PAUSE_FIELDS, true)?;
    if body.memory.unwrap_or(true) {
        server.pause(&id).await?;
    } else {
        server.pause_filesystem(&id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    owned(&server, &owner, &id)?;
    let body: RefreshBody = parse_checked(&body, models::REFRESH_FIELDS, true)?;
    let duration = body.duration.unwrap_or(0);
    if duration > 3600 {
        return Err(ApiError::bad_request("duration must be 0..=3600 seconds"));
    }
    server.refresh(&id, Duration::from_secs(duration))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /sandboxes/{id}/network`: replaces the sandbox's egress rules; new connections
/// follow them at once.
async fn update_network(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    owned(&server, &owner, &id)?;
    let body: serde_json::Map<String, serde_json::Value> =
        parse_body(&body, Some(serde_json::Map::new()))?;
    let rules = models::update_network(&body)?;
    server.update_network(&id, rules)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_v2(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let template_ids: Option<Vec<String>> = query.template.as_ref().map(|name| {
        server
            .templates()
            .resolve(name)
            .map(|t| vec![t.id.clone()])
            .unwrap_or_default()
    });
    let (page, next) = query.apply(listed(&server, &owner), template_ids.as_deref());
    let running = listed(&server, &owner)
        .iter()
        .filter(|r| r.state == crate::state::SandboxState::Running)
        .count();
    let items: Vec<_> = page.iter().map(models::listed).collect();
    let mut response = json(StatusCode::OK, items);
    let headers = response.headers_mut();
    if let Some(next) = next
        && let Ok(value) = HeaderValue::from_str(&next)
    {
        headers.insert("X-Next-Token", value);
    }
    headers.insert("X-Total-Running", HeaderValue::from(running));
    Ok(response)
}

/// The deprecated v1 list: running sandboxes only, metadata filter.
async fn list_v1(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let mut metadata = std::collections::BTreeMap::new();
    for (name, value) in list::query_pairs(query.as_deref().unwrap_or("")) {
        if name == "metadata" {
            metadata.extend(
                list::decode_metadata(&value).map_err(|e| ApiError::bad_request(e.to_string()))?,
            );
        }
    }
    let mut items: Vec<_> = listed(&server, &owner)
        .into_iter()
        .filter(|r| r.state == crate::state::SandboxState::Running)
        .filter(|r| metadata.iter().all(|(k, v)| r.metadata.get(k) == Some(v)))
        .collect();
    items.sort_by(|a, b| (b.started_at, &b.sandbox_id).cmp(&(a.started_at, &a.sandbox_id)));
    let items: Vec<_> = items.iter().map(models::listed).collect();
    Ok(json(StatusCode::OK, items))
}

/// The sandboxes the list endpoints show the caller: its own, never template build
/// sandboxes, which belong to the server (their builds report on them), as E2B's build
/// machines are not listed.
fn listed(server: &Sandboxd, owner: &Owner) -> Vec<crate::state::SandboxRecord> {
    let mut records = server.list();
    records.retain(|r| {
        r.owner.as_deref() == Some(owner.0.as_str())
            && !r
                .metadata
                .contains_key(crate::templates::build::BUILD_SANDBOX_METADATA)
    });
    records
}
