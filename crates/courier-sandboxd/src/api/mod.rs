//! The REST control plane (E2B's API, see the protocol reference §3): axum handlers over
//! [`Sandboxd`]. Every route but `GET /health` needs an accepted `X-API-Key`; every
//! error, including unknown routes and malformed bodies, is JSON `{code, message}`
//! because the official SDKs parse it unconditionally.
//!
//! Nothing is accepted and dropped: a body field this server does not serve is refused
//! with a 400 naming it unless it carries E2B's default (see [`models::check_fields`]),
//! and the routes of E2B's API this server does not serve answer 501 naming the feature
//! ([`unserved_routes`]).

mod list;
mod models;
mod templates;

pub use models::CLIENT_ID;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
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
            Error::InvalidSpec { .. } | Error::Unsupported(_) | Error::InvalidEgressRule(_) => {
                StatusCode::BAD_REQUEST
            }
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
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/{id}/network", put(update_network))
        .merge(templates::routes())
        .merge(unserved_routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(middleware::from_fn_with_state(server.clone(), require_key))
        // COPY uploads authorize themselves (an upload link's token, or the API key).
        .merge(templates::upload_routes())
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

/// A 501 like [`unserved`] for a route about one sandbox: an unknown sandbox is still a
/// 404, as E2B answers (the SDKs turn it into "sandbox not found").
async fn unserved_for_sandbox(
    State(server): State<Sandboxd>,
    Path(id): Path<String>,
    message: &'static str,
) -> ApiError {
    match server.get(&id) {
        Ok(_) => ApiError::new(StatusCode::NOT_IMPLEMENTED, message),
        Err(e) => e.into(),
    }
}

/// The routes of E2B's API (its `spec/openapi.yml`) this server does not serve: 501
/// naming the feature rather than a generic 404 (which the SDKs report as "sandbox not
/// found"). Authenticated like the others.
fn unserved_routes() -> Router<Sandboxd> {
    const SNAPSHOTS: &str = "snapshots are not supported by courier-sandboxd yet";
    const FORK: &str = "sandbox forks are not supported by courier-sandboxd yet";
    const LOGS: &str = "sandbox logs are not supported by courier-sandboxd yet";
    const TEAMS: &str = "team routes (teams, team metrics) are not supported by courier-sandboxd";
    const VOLUMES: &str = "volumes are not supported by courier-sandboxd yet";
    const SECRETS: &str = "secrets are not supported by courier-sandboxd";
    const KEYS: &str = "API key and access token management is not supported by \
                        courier-sandboxd (keys come from its configuration)";
    const NODES: &str = "cluster node routes are not supported by courier-sandboxd";
    const ADMIN: &str = "admin routes are not supported by courier-sandboxd";
    const LEGACY_BUILD: &str = "template builds through the legacy build API are not \
                                supported by courier-sandboxd (use POST /v3/templates)";
    const TEMPLATE_UPDATE: &str = "template updates are not supported by courier-sandboxd yet";
    Router::new()
        .route("/teams", get(unserved(TEAMS)))
        .route("/teams/{team_id}/metrics", get(unserved(TEAMS)))
        .route("/teams/{team_id}/metrics/max", get(unserved(TEAMS)))
        .route(
            "/sandboxes/metrics",
            get(unserved(
                "metrics of several sandboxes at once (GET /sandboxes/metrics) are not \
                 supported by courier-sandboxd yet; use GET /sandboxes/{id}/metrics",
            )),
        )
        .route(
            "/sandboxes/{id}/logs",
            get(|s: State<Sandboxd>, p: Path<String>| unserved_for_sandbox(s, p, LOGS)),
        )
        .route(
            "/v2/sandboxes/{id}/logs",
            get(|s: State<Sandboxd>, p: Path<String>| unserved_for_sandbox(s, p, LOGS)),
        )
        .route(
            "/sandboxes/{id}/fork",
            post(|s: State<Sandboxd>, p: Path<String>| unserved_for_sandbox(s, p, FORK)),
        )
        .route(
            "/sandboxes/{id}/snapshots",
            post(|s: State<Sandboxd>, p: Path<String>| unserved_for_sandbox(s, p, SNAPSHOTS)),
        )
        .route("/snapshots", get(unserved(SNAPSHOTS)))
        .route("/v2/templates", post(unserved(LEGACY_BUILD)))
        .route("/templates", post(unserved(LEGACY_BUILD)))
        .route(
            "/templates/{template_id}",
            post(unserved(LEGACY_BUILD)).patch(unserved(TEMPLATE_UPDATE)),
        )
        .route(
            "/v2/templates/{template_id}",
            patch(unserved(TEMPLATE_UPDATE)),
        )
        .route(
            "/templates/{template_id}/builds/{build_id}",
            post(unserved(LEGACY_BUILD)),
        )
        .route("/volumes", get(unserved(VOLUMES)).post(unserved(VOLUMES)))
        .route(
            "/volumes/{volume_id}",
            get(unserved(VOLUMES)).delete(unserved(VOLUMES)),
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

/// Whether the request carries a valid API key.
fn authorized(server: &Sandboxd, headers: &HeaderMap) -> bool {
    request_key(headers).is_some_and(|key| server.keys().verify(key.trim()))
}

async fn require_key(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match request_key(&headers) {
        Some(key) if server.keys().verify(key.trim()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key").into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "missing X-API-Key header").into_response(),
    }
}

fn domain(server: &Sandboxd) -> Option<&str> {
    server.config().domain.as_deref()
}

/// `Idempotency-Key` on create is refused: creates are not deduplicated here, and a
/// client relying on the key to retry safely would get a second sandbox.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn create(
    State(server): State<Sandboxd>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if headers.contains_key(IDEMPOTENCY_KEY) {
        return Err(ApiError::bad_request(
            "the Idempotency-Key header is not supported by courier-sandboxd: creates are \
             not deduplicated, so a retried create would make a second sandbox",
        ));
    }
    let body: Map<String, Value> = parse_body(&body, None)?;
    let body = models::read_create(body)?;
    let template = body
        .template_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("templateID is required"))?;
    let network = models::create_network(body.allow_internet_access, body.network.as_ref())?;
    let request = CreateRequest {
        template,
        timeout: body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
        metadata: body.metadata.unwrap_or_default(),
        env_vars: body.env_vars.unwrap_or_default(),
        auto_pause: body.auto_pause.unwrap_or(false),
        memory_mb: body.memory_mb,
        cpu_count: body.cpu_count,
        allow_internet: network.internet,
        egress: network.rules,
        allow_public_traffic: network.allow_public_traffic,
        die_with_server: false,
    };
    let record = server.create(request).await?;
    Ok(json(
        StatusCode::CREATED,
        models::sandbox(&record, domain(&server)),
    ))
}

async fn connect(
    State(server): State<Sandboxd>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
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
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: ConnectBody = parse_checked(&body, models::RESUME_FIELDS, true)?;
    let current = server.get(&id)?;
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

async fn get_one(State(server): State<Sandboxd>, Path(id): Path<String>) -> ApiResult<Response> {
    let record = server.get(&id)?;
    Ok(json(
        StatusCode::OK,
        models::detail(&record, domain(&server)),
    ))
}

async fn kill(State(server): State<Sandboxd>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    server.kill(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(server): State<Sandboxd>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: TimeoutBody = parse_checked(&body, models::TIMEOUT_FIELDS, false)?;
    server.set_timeout(&id, Duration::from_secs(body.timeout))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    State(server): State<Sandboxd>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    // Pause always keeps memory: `memory: false` is refused.
    let _: Map<String, Value> = parse_checked(&body, models::PAUSE_FIELDS, true)?;
    server.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(
    State(server): State<Sandboxd>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
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
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: serde_json::Map<String, serde_json::Value> =
        parse_body(&body, Some(serde_json::Map::new()))?;
    let rules = models::update_network(&body)?;
    server.update_network(&id, rules)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(server): State<Sandboxd>, Path(id): Path<String>) -> ApiResult<Response> {
    let metric = server.metrics(&id).await?;
    Ok(json(
        StatusCode::OK,
        [courier_e2b::models::SandboxMetric::from(metric)],
    ))
}

async fn list_v2(State(server): State<Sandboxd>, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let query = ListQuery::parse(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let template_ids: Option<Vec<String>> = query.template.as_ref().map(|name| {
        server
            .templates()
            .resolve(name)
            .map(|t| vec![t.id.clone()])
            .unwrap_or_default()
    });
    let (page, next) = query.apply(listed(&server), template_ids.as_deref());
    let running = listed(&server)
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
async fn list_v1(State(server): State<Sandboxd>, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let mut metadata = std::collections::BTreeMap::new();
    for (name, value) in list::query_pairs(query.as_deref().unwrap_or("")) {
        if name == "metadata" {
            metadata.extend(
                list::decode_metadata(&value).map_err(|e| ApiError::bad_request(e.to_string()))?,
            );
        }
    }
    let mut items: Vec<_> = listed(&server)
        .into_iter()
        .filter(|r| r.state == crate::state::SandboxState::Running)
        .filter(|r| metadata.iter().all(|(k, v)| r.metadata.get(k) == Some(v)))
        .collect();
    items.sort_by(|a, b| (b.started_at, &b.sandbox_id).cmp(&(a.started_at, &a.sandbox_id)));
    let items: Vec<_> = items.iter().map(models::listed).collect();
    Ok(json(StatusCode::OK, items))
}

/// The sandboxes the list endpoints show: not template build sandboxes, which belong to
/// the server (their builds report on them), as E2B's build machines are not listed.
fn listed(server: &Sandboxd) -> Vec<crate::state::SandboxRecord> {
    let mut records = server.list();
    records.retain(|r| {
        !r.metadata
            .contains_key(crate::templates::build::BUILD_SANDBOX_METADATA)
    });
    records
}
