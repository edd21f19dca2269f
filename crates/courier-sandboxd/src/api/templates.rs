//! E2B's template API: the list, alias lookup, delete, and the template build API the
//! official SDKs' `Template.build` drives (`POST /v3/templates`, then
//! `POST /v2/templates/{id}/builds/{build}` with the recipe, then polling
//! `GET /templates/{id}/builds/{build}/status`).
//!
//! Supported recipes: `fromTemplate` (any ready template), `fromImage` `e2bdev/base`
//! (the SDK's default image, mapped to `base`) or any other public image (pulled through
//! the OCI distribution API, see [`crate::images`]), with RUN, ENV, WORKDIR, USER and COPY
//! steps. `startCmd` and `readyCmd` and COPY steps (files uploaded with
//! `GET`/`PUT /templates/{id}/files/{hash}`) are supported too (see
//! [`crate::templates::build`]). `fromImageRegistry` (registry credentials) is answered
//! 400 naming it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use courier_e2b::models::{
    self, AssignTags, AssignedTags, BuildLogEntry, BuildLogs, BuildRequested, InvalidStep,
    RemoveTags, TemplateBuild, TemplateInfo, TemplateStep, TemplateTag, TemplateUpdate,
    TemplateUpdated, TemplateWithBuilds, valid_files_hash,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{ApiError, ApiResult, Owner, json, parse_body};
use crate::server::Sandboxd;
use crate::templates::build::{Recipe, Step};
use crate::templates::{BASE_TEMPLATE, BuildReason, LogEntry, LogLevel, Template};

/// The image `Template()` starts from unless told otherwise; it is E2B's `base`.
const DEFAULT_IMAGE: &str = "e2bdev/base";

/// How long an upload link from `GET /templates/{id}/files/{hash}` stays valid.
const UPLOAD_LINK_TTL_SECS: u64 = 3600;

/// The route the SDKs `PUT` COPY archives to: outside the API key check, because the
/// link itself carries a one-time upload token (like a presigned URL), or the caller
/// sends its API key as usual.
pub(super) fn upload_routes() -> Router<Sandboxd> {
    Router::new().route(
        "/templates/{template_id}/files/{hash}",
        axum::routing::put(file_put),
    )
}

/// The template routes (mounted behind the API key check).
pub(super) fn routes() -> Router<Sandboxd> {
    Router::new()
        .route("/templates", get(list))
        .route("/v2/templates", get(list_v2))
        .route("/v3/templates", post(request_build))
        .route(
            "/v2/templates/{template_id}/builds/{build_id}",
            post(start_build),
        )
        .route(
            "/templates/{template_id}/builds/{build_id}/status",
            get(build_status),
        )
        .route("/templates/{template_id}/files/{hash}", get(file_link))
        .route("/templates/aliases/{alias}", get(alias))
        .route(
            "/templates/{template_id}",
            axum::routing::delete(delete).get(info).patch(update_v1),
        )
        .route(
            "/v2/templates/{template_id}",
            axum::routing::patch(update_v2),
        )
        .route(
            "/templates/{template_id}/builds/{build_id}/logs",
            get(build_logs),
        )
        .route("/templates/tags", post(assign_tags).delete(remove_tags))
        .route("/templates/{template_id}/tags", get(list_tags))
}

/// What a caller wants to do with a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// See it and start sandboxes from it: its owner's, or public.
    See,
    /// Build, update, tag, delete it or read its builds: its owner's only.
    Manage,
}

/// Template `name` (id or alias, any build state) when the caller may `access` it.
/// Another key's template the caller may not use is not found, as an unknown one is, so
/// ids and names cannot be probed.
fn template_for(
    server: &Sandboxd,
    owner: &Owner,
    name: &str,
    access: Access,
) -> ApiResult<Template> {
    server
        .templates()
        .find(name)
        .filter(|t| match access {
            Access::See => t.visible_to(&owner.0),
            Access::Manage => t.owned_by(&owner.0),
        })
        .ok_or_else(|| crate::Error::UnknownTemplate(name.to_owned()).into())
}

/// `TemplateBuildRequestV3`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildRequest {
    name: Option<String>,
    /// Deprecated spelling of `name`.
    alias: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u64>,
    #[serde(rename = "diskSizeMB")]
    disk_size_mb: Option<u64>,
    /// Courier's extension: `"gvisor"` or `"container"` for the template's sandboxes.
    isolation: Option<String>,
}

/// `TemplateBuildStartV2`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildStart {
    from_image: Option<String>,
    from_template: Option<String>,
    from_image_registry: Option<serde_json::Value>,
    /// Read as sent, then checked one by one by [`Step::try_from`], so an error names
    /// the step.
    #[serde(default)]
    steps: Vec<TemplateStep>,
    start_cmd: Option<String>,
    ready_cmd: Option<String>,
    /// Skip the build cache (`skip_cache()` before the first step); a step's own
    /// `force` does the same.
    #[serde(default)]
    force: bool,
}

/// `TemplateBuildInfo` as this server answers it: the SDK's [`models::BuildStatus`] plus
/// the deprecated `logs` (the entries as plain lines), which older SDKs still read.
#[derive(Debug, Serialize)]
struct BuildInfo {
    #[serde(flatten)]
    status: models::BuildStatus,
    logs: Vec<String>,
}

/// A recipe this server cannot build, or a build it cannot start yet: answered 400 (and the
/// waiting build is failed with the same message).
#[derive(Debug, thiserror::Error)]
enum UnsupportedRecipe {
    #[error(
        "fromImageRegistry is not supported: courier-sandboxd pulls images anonymously \
         (public images, or the operator's registry mirrors)"
    )]
    ImageRegistry,
    #[error("{0}")]
    Image(String),
    #[error("fromTemplate (or fromImage) is required")]
    NoParent,
    /// `force` and `filesHash`'s caching have no effect (there is no build cache, every
    /// build runs every step); everything else is checked by the shared step parser.
    #[error("step {number} ({}): {}", .source.kind, .source.reason)]
    Step { number: usize, source: InvalidStep },
    #[error(
        "step {number} (COPY): files {files_hash} were not uploaded (GET then PUT \
         /templates/{template_id}/files/{files_hash} first)"
    )]
    NotUploaded {
        number: usize,
        template_id: String,
        files_hash: String,
    },
}

/// `TemplateAliasResponse`.
#[derive(Debug, Serialize)]
struct AliasBody {
    #[serde(rename = "templateID")]
    template_id: String,
    public: bool,
}

/// A template as `GET /templates` lists it: the SDK's [`TemplateInfo`] plus the fields of
/// E2B's `Template` it does not model.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TemplateItem {
    #[serde(flatten)]
    info: TemplateInfo,
    #[serde(rename = "diskSizeMB")]
    disk_size_mb: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: Option<String>,
    last_spawned_at: Option<DateTime<Utc>>,
    spawn_count: u64,
    build_count: u64,
    envd_version: &'static str,
}

fn item(t: &Template) -> TemplateItem {
    TemplateItem {
        info: TemplateInfo {
            template_id: t.id.clone(),
            build_id: t.build_id.clone(),
            aliases: t.aliases.clone(),
            names: t.aliases.clone(),
            cpu_count: t.cpu_count,
            memory_mb: t.memory_mb,
            build_status: t.build_status,
            public: t.public,
        },
        disk_size_mb: t.disk_size_mb,
        created_at: t.created_at,
        updated_at: t.updated_at,
        created_by: None,
        last_spawned_at: None,
        spawn_count: 0,
        build_count: t.build_count,
        envd_version: crate::server::ENVD_VERSION,
    }
}

/// A build log entry as the API writes it (`BuildLogEntry`).
fn log_entry(e: LogEntry) -> BuildLogEntry {
    let level = match e.level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    BuildLogEntry {
        timestamp: e.timestamp,
        level: level.to_owned(),
        message: e.message,
        step: e.step,
    }
}

/// The templates the caller may see (see [`Access::See`]), `base` first.
fn visible(server: &Sandboxd, owner: &Owner) -> Vec<Template> {
    let mut all = server.templates().all();
    all.retain(|t| t.visible_to(&owner.0));
    all
}

/// A paged template route's `limit` (1..=100, default 100) and `nextToken` (an offset
/// this server gave), as `(limit, offset)`; any other parameter is refused with what
/// `other` says of its name.
fn page_params(query: Option<&str>, other: impl Fn(&str) -> ApiError) -> ApiResult<(usize, usize)> {
    let mut limit = 100usize;
    let mut offset = 0usize;
    for (name, value) in super::list::query_pairs(query.unwrap_or("")) {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=100).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1..=100, got {value:?}"))
                    })?;
            }
            "nextToken" => {
                offset = value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "nextToken {value:?} is not a token this server gave"
                    ))
                })?;
            }
            name => return Err(other(name)),
        }
    }
    Ok((limit, offset))
}

/// The refusal of a query parameter a paged template route does not take.
fn unknown_param(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unknown query parameter {name:?} (served: limit, nextToken)"
    ))
}

/// `response` with `X-Next-Token` naming where the next page starts, when one does.
fn paged(mut response: Response, limit: usize, offset: usize, total: usize) -> Response {
    if offset + limit < total {
        response.headers_mut().insert(
            "x-next-token",
            axum::http::HeaderValue::from(offset + limit),
        );
    }
    response
}

/// `GET /templates`: `base` and every built template the caller may see (also those
/// still building or failed, with their `buildStatus`).
async fn list(State(server): State<Sandboxd>, Extension(owner): Extension<Owner>) -> Response {
    let items: Vec<TemplateItem> = visible(&server, &owner).iter().map(item).collect();
    json(StatusCode::OK, items)
}

/// `GET /v2/templates?limit=&nextToken=`: the same templates as `GET /templates`, a page
/// of at most `limit` (1..=100, default 100), `X-Next-Token` naming where the next page
/// starts. `teamID` is refused: this server has no teams.
async fn list_v2(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (limit, offset) = page_params(query.as_deref(), |name| {
        if name == "teamID" {
            return ApiError::bad_request(
                "teamID is not supported: courier-sandboxd has no teams (its templates are \
                 server-wide)",
            );
        }
        unknown_param(name)
    })?;
    let all = visible(&server, &owner);
    let total = all.len();
    let items: Vec<TemplateItem> = all.iter().skip(offset).take(limit).map(item).collect();
    Ok(paged(json(StatusCode::OK, items), limit, offset, total))
}

/// `POST /v3/templates`: registers a build (status `waiting`).
async fn request_build(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: BuildRequest = parse_body(&body, None)?;
    let name = body
        .name
        .or(body.alias)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name is required (\"name\" or \"name:tag\")"))?;
    let isolation = match body.isolation.as_deref() {
        None => None,
        Some(name) => {
            let isolation: crate::runtime::Isolation = name.parse()?;
            if !server.runtime().isolations().contains(&isolation) {
                return Err(ApiError::bad_request(format!(
                    "isolation {name:?} is not available on this server (available: {})",
                    server
                        .runtime()
                        .isolations()
                        .iter()
                        .map(|i| format!("\"{i}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(isolation)
        }
    };
    let settings = crate::templates::BuildSettings {
        cpu_count: body.cpu_count,
        memory_mb: body.memory_mb,
        disk_size_mb: body.disk_size_mb,
        isolation,
    };
    let requested =
        server
            .templates()
            .request_build(&name, &body.tags, &settings, Some(&owner.0))?;
    let public = server
        .templates()
        .find(&requested.template_id)
        .is_some_and(|t| t.public);
    Ok(json(
        StatusCode::ACCEPTED,
        BuildRequested {
            template_id: requested.template_id,
            build_id: requested.build_id,
            public,
            names: vec![requested.name.clone()],
            tags: requested.tags,
            aliases: vec![requested.name],
        },
    ))
}

/// Turns the wire recipe into a [`Recipe`], or says precisely what is not supported.
fn recipe(body: BuildStart) -> Result<Recipe, UnsupportedRecipe> {
    if body.from_image_registry.is_some() {
        return Err(UnsupportedRecipe::ImageRegistry);
    }
    let mut from_image = None;
    let from_template = match (body.from_template, body.from_image) {
        (Some(t), _) if !t.is_empty() => t,
        (_, Some(image))
            if image == DEFAULT_IMAGE || image.starts_with(&format!("{DEFAULT_IMAGE}:")) =>
        {
            BASE_TEMPLATE.to_owned()
        }
        (_, Some(image)) => {
            let parsed = crate::images::ImageRef::parse(&image)
                .map_err(|e| UnsupportedRecipe::Image(e.to_string()))?;
            from_image = Some(parsed);
            String::new()
        }
        _ => return Err(UnsupportedRecipe::NoParent),
    };
    let force = body.force || body.steps.iter().any(|s| s.force);
    let steps = body
        .steps
        .into_iter()
        .enumerate()
        .map(|(index, step)| {
            Step::try_from(step).map_err(|source| UnsupportedRecipe::Step {
                number: index + 1,
                source,
            })
        })
        .collect::<Result<Vec<Step>, _>>()?;
    Ok(Recipe {
        from_template,
        from_image,
        force,
        steps,
        start_cmd: body.start_cmd.filter(|c| !c.is_empty()),
        ready_cmd: body.ready_cmd.filter(|c| !c.is_empty()),
    })
}

/// `POST /v2/templates/{templateID}/builds/{buildID}`: starts the build in the
/// background. An unsupported recipe fails the build too, so it does not wait forever.
async fn start_build(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path((template_id, build_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    template_for(&server, &owner, &template_id, Access::Manage)?;
    let body: BuildStart = parse_body(&body, None)?;
    // Unknown builds are 404 before anything else.
    server.templates().build_view(&template_id, &build_id, 0)?;
    let uploaded = |recipe: &Recipe| -> Result<(), UnsupportedRecipe> {
        for (index, step) in recipe.steps.iter().enumerate() {
            if let Step::Copy { files_hash, .. } = step
                && !server
                    .templates()
                    .files_path(&template_id, files_hash)
                    .is_file()
            {
                return Err(UnsupportedRecipe::NotUploaded {
                    number: index + 1,
                    template_id: template_id.clone(),
                    files_hash: files_hash.clone(),
                });
            }
        }
        Ok(())
    };
    let checked = match recipe(body).and_then(|r| uploaded(&r).map(|()| r)) {
        // A registry at an address pulls may not reach is refused now, by name (the
        // pull checks every connection again).
        Ok(recipe) => match &recipe.from_image {
            Some(image) => server
                .templates()
                .images()
                .check_registry(image)
                .await
                .map(|()| recipe)
                .map_err(|e| UnsupportedRecipe::Image(e.to_string())),
            None => Ok(recipe),
        },
        Err(unsupported) => Err(unsupported),
    };
    let recipe = match checked {
        Ok(recipe) => recipe,
        Err(unsupported) => {
            let message = unsupported.to_string();
            let reason = BuildReason {
                message: message.clone(),
                step: None,
            };
            // Only a waiting build is failed: a running one is not this request's to end.
            if server
                .templates()
                .build_view(&template_id, &build_id, 0)
                .is_ok_and(|b| b.record.status == crate::templates::BuildState::Waiting)
            {
                server
                    .templates()
                    .fail_build(&template_id, &build_id, reason)?;
            }
            return Err(ApiError::bad_request(message));
        }
    };
    crate::templates::build::start(&server, &template_id, &build_id, recipe).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /templates/{templateID}/builds/{buildID}/status?logsOffset=N&limit=M`.
async fn build_status(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path((template_id, build_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    template_for(&server, &owner, &template_id, Access::Manage)?;
    let mut offset = 0usize;
    let mut limit = crate::templates::MAX_LOG_ENTRIES;
    for (name, value) in super::list::query_pairs(query.as_deref().unwrap_or("")) {
        match name.as_str() {
            "logsOffset" => {
                offset = value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "logsOffset must be a non-negative integer, got {value:?}"
                    ))
                })?;
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=crate::templates::MAX_LOG_ENTRIES).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be 1..={}, got {value:?}",
                            crate::templates::MAX_LOG_ENTRIES
                        ))
                    })?;
            }
            _ => {}
        }
    }
    let view = server
        .templates()
        .build_view(&template_id, &build_id, offset)?;
    let entries: Vec<LogEntry> = view.entries.into_iter().take(limit).collect();
    Ok(json(
        StatusCode::OK,
        BuildInfo {
            logs: entries
                .iter()
                .map(|e| format!("{} {}", e.timestamp.to_rfc3339(), e.message))
                .collect(),
            status: models::BuildStatus {
                template_id: view.record.template_id,
                build_id: view.record.build_id,
                status: view.record.status,
                log_entries: entries.into_iter().map(log_entry).collect(),
                reason: view.record.reason.map(|r| models::BuildReason {
                    message: r.message,
                    step: r.step,
                }),
            },
        },
    ))
}

/// `TemplateBuildFileUpload`.
#[derive(Debug, Serialize)]
struct FileUpload {
    present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<std::collections::BTreeMap<String, String>>,
}

/// `GET /templates/{templateID}/files/{hash}`: whether COPY's files are here already,
/// else where to `PUT` them: this same path on this API server with a one-time upload
/// token in the query (valid for [`UPLOAD_LINK_TTL_SECS`], for this template and hash
/// only; only its SHA-256 is kept). No credentials are echoed back.
async fn file_link(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path((template_id, hash)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    template_for(&server, &owner, &template_id, Access::Manage)?;
    let path = upload_path(&server, &template_id, &hash)?;
    // 201 either way: it is the only success status the SDKs parse here.
    if path.is_file() {
        return Ok(json(
            StatusCode::CREATED,
            FileUpload {
                present: true,
                url: None,
                headers: None,
            },
        ));
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("a Host header is required"))?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let token = crate::state::random_hex(24);
    let expires = unix_now() + UPLOAD_LINK_TTL_SECS;
    let token_path = upload_token_path(&path);
    if let Some(dir) = token_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io("create dir", dir)(e))?;
    }
    std::fs::write(&token_path, format!("{} {expires}\n", token_digest(&token)))
        .map_err(|e| crate::error::Error::io("write", &token_path)(e))?;
    Ok(json(
        StatusCode::CREATED,
        FileUpload {
            present: false,
            url: Some(format!(
                "{scheme}://{host}/templates/{}/files/{}?token={token}",
                encode(&template_id),
                encode(&hash)
            )),
            headers: None,
        },
    ))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where the digest of an upload link's token is kept, beside the upload itself.
fn upload_token_path(upload: &std::path::Path) -> std::path::PathBuf {
    let mut name = upload.file_name().unwrap_or_default().to_os_string();
    name.push(".token");
    upload.with_file_name(format!(".{}", name.to_string_lossy()))
}

fn token_digest(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Whether `token` is the live upload token for `upload`. Digests are compared, so the
/// comparison time says nothing about the token.
fn upload_token_valid(upload: &std::path::Path, token: &str) -> bool {
    let Ok(stored) = std::fs::read_to_string(upload_token_path(upload)) else {
        return false;
    };
    let mut parts = stored.split_whitespace();
    let (Some(digest), Some(expires)) = (parts.next(), parts.next()) else {
        return false;
    };
    let expires: u64 = expires.parse().unwrap_or(0);
    digest == token_digest(token) && unix_now() <= expires
}

/// `?token=` of an upload link.
#[derive(Debug, Deserialize)]
struct UploadQuery {
    token: Option<String>,
}

/// Checks the template and hash and returns where the upload lives.
fn upload_path(server: &Sandboxd, template_id: &str, hash: &str) -> ApiResult<std::path::PathBuf> {
    if !valid_files_hash(hash) {
        return Err(ApiError::bad_request(
            "the files hash must be 1-128 of [A-Za-z0-9_-]",
        ));
    }
    let template = server
        .templates()
        .find(template_id)
        .filter(|t| t.id == template_id && t.id != BASE_TEMPLATE)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("template {template_id} not found"),
            )
        })?;
    Ok(server.templates().files_path(&template.id, hash))
}

/// `PUT /templates/{templateID}/files/{hash}`: the upload (a tar archive, gzipped or
/// not), streamed to a temp file and renamed into place, so a build never sees half an
/// upload. Each chunk is counted against the upload caps (see
/// [`crate::templates::uploads`]); past one the answer is 413 naming it, and nothing of
/// the upload is kept.
async fn file_put(
    State(server): State<Sandboxd>,
    Path((template_id, hash)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    let path = upload_path(&server, &template_id, &hash)?;
    let by_token = query
        .token
        .as_deref()
        .is_some_and(|t| upload_token_valid(&path, t));
    // Without a link, the API key must be the template's owner's.
    let by_key = || {
        super::request_key(&headers)
            .filter(|key| server.keys().verify(key.trim()))
            .is_some_and(|key| {
                let owner = Owner(crate::keys::owner_of(key));
                template_for(&server, &owner, &template_id, Access::Manage).is_ok()
            })
    };
    if !by_token && !by_key() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "upload needs a valid, unexpired upload link (GET /templates/{templateID}/files/{hash}) or an API key",
        ));
    }
    let dir = path
        .parent()
        .expect("files path has a parent")
        .to_path_buf();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| crate::error::Error::io("create dir", &dir)(e))?;
    let tmp = dir.join(format!(".{hash}.{}.upload", crate::state::random_hex(6)));
    let counted = server.clone();
    let mut ticket = tokio::task::spawn_blocking(move || {
        counted.templates().begin_upload(&counted.config().limits)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let result: ApiResult<()> = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| crate::error::Error::io("create", &tmp)(e))?;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request(format!("upload failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                // Counted before it is written: a refused chunk never reaches the disk.
                ticket
                    .add(data.len() as u64)
                    .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
                file.write_all(&data)
                    .await
                    .map_err(|e| crate::error::Error::io("write", &tmp)(e))?;
            }
        }
        file.sync_all()
            .await
            .map_err(|e| crate::error::Error::io("sync", &tmp)(e))?;
        Ok(())
    }
    .await;
    // Renamed into place under the counters' lock, so the upload turns from arriving to
    // stored in one step for every other upload's count.
    let result = result.and_then(|()| {
        ticket
            .complete(|| std::fs::rename(&tmp, &path))
            .map_err(|e| crate::error::Error::io("rename", &path)(e).into())
    });
    let leftover = if result.is_err() {
        tmp
    } else {
        // One upload per link.
        upload_token_path(&path)
    };
    if let Err(e) = tokio::fs::remove_file(&leftover).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %leftover.display(), error = %e, "could not remove an upload leftover");
    }
    result.map(|()| StatusCode::OK)
}

/// `GET /templates/aliases/{alias}`: 200 for a template of that name (any build
/// status), 404 otherwise.
async fn alias(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(alias): Path<String>,
) -> ApiResult<Response> {
    let template = server
        .templates()
        .find(&alias)
        .filter(|t| t.visible_to(&owner.0))
        .filter(|t| {
            t.aliases
                .iter()
                .any(|a| a == alias.split(':').next().unwrap_or(""))
        })
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("alias {alias} not found")))?;
    Ok(json(
        StatusCode::OK,
        AliasBody {
            public: template.public,
            template_id: template.id,
        },
    ))
}

/// `DELETE /templates/{templateID}` (id or alias): 204, 404, or 409 while it is in use
/// (see [`crate::templates::Templates::delete`]).
async fn delete(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<super::Owner>,
    Path(template_id): Path<String>,
) -> ApiResult<StatusCode> {
    // A snapshot is a template to E2B's SDKs (`Sandbox.delete_snapshot`); only its
    // owner's: another key's snapshot is not found.
    if server.templates().resolve(&template_id).is_none() {
        if server.snapshots().remove(&owner.0, &template_id)? {
            server.collect_layer_garbage().await;
            return Ok(StatusCode::NO_CONTENT);
        }
        return Err(crate::Error::UnknownTemplate(template_id).into());
    }
    template_for(&server, &owner, &template_id, Access::Manage)?;
    // A template's layers stay while a snapshot, or a sandbox (one from a snapshot of
    // it too), stands on them.
    if let Some(template) = server.templates().resolve(&template_id) {
        let own_layers = server.templates().layers_root().join(&template.id);
        if let Some(snapshot) = server.snapshots().uses_layers_under(&own_layers) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "template {} is the base of snapshot {snapshot}; delete the snapshot first",
                    template.id
                ),
            ));
        }
        if server
            .sandbox_layers()
            .iter()
            .any(|l| l.starts_with(&own_layers))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "template {} is used by running sandboxes; kill them first",
                    template.id
                ),
            ));
        }
    }
    let records = server.list();
    server.templates().delete(&template_id, |id| {
        records.iter().any(|r| r.template_id == id)
    })?;
    // Its warm sandboxes (never a create's) go with it.
    server.drop_stale_warm().await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /templates/tags`: points the tags at the build `target` (`name:tag`, or
/// `name` for its current build) names; 201 with the build and the bare tags.
async fn assign_tags(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: AssignTags = parse_body(&body, None)?;
    template_for(&server, &owner, &body.target, Access::Manage)?;
    let (build_id, tags) = server.templates().assign_tags(&body.target, &body.tags)?;
    Ok(json(StatusCode::CREATED, AssignedTags { tags, build_id }))
}

/// `DELETE /templates/tags`: 204, 404 when the template or one of the tags is unknown
/// (nothing removed then).
async fn remove_tags(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: RemoveTags = parse_body(&body, None)?;
    template_for(&server, &owner, &body.name, Access::Manage)?;
    server.templates().remove_tags(&body.name, &body.tags)?;
    // Warm sandboxes of builds that are not current are only spares: they must not keep
    // an untagged build's layer alive (the pool starts them again when asked).
    server.drop_stale_warm().await;
    // Sandboxes keep their layers; what no tag, version or sandbox uses goes now.
    server.collect_layer_garbage().await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/{templateID}/tags`.
async fn list_tags(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(template_id): Path<String>,
) -> ApiResult<Response> {
    template_for(&server, &owner, &template_id, Access::See)?;
    let tags: Vec<TemplateTag> = server
        .templates()
        .tags(&template_id)?
        .into_iter()
        .map(|t| TemplateTag {
            tag: t.tag,
            build_id: t.build_id,
            created_at: t.created_at,
        })
        .collect();
    Ok(json(StatusCode::OK, tags))
}

/// `GET /templates/{templateID}?limit=&nextToken=`: the template with its builds,
/// newest first, a page of at most `limit` (1..=100, default 100); `X-Next-Token` says
/// where the next page starts (an opaque offset).
async fn info(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(template_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    template_for(&server, &owner, &template_id, Access::See)?;
    let (limit, offset) = page_params(query.as_deref(), unknown_param)?;
    let (template, builds) = server.templates().builds(&template_id)?;
    let total = builds.len();
    let page: Vec<TemplateBuild> = builds
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|b| TemplateBuild {
            build_id: b.build_id,
            status: b.status,
            created_at: b.created_at,
            updated_at: b.finished_at.unwrap_or(b.created_at),
            finished_at: b.finished_at,
            cpu_count: template.cpu_count,
            memory_mb: template.memory_mb,
            disk_size_mb: Some(template.disk_size_mb),
            envd_version: Some(crate::server::ENVD_VERSION.to_owned()),
        })
        .collect();
    let body = TemplateWithBuilds {
        public: template.public,
        aliases: template.aliases.clone(),
        names: template.aliases.clone(),
        template_id: template.id,
        created_at: template.created_at,
        updated_at: template.updated_at,
        last_spawned_at: None,
        spawn_count: 0,
        builds: page,
    };
    Ok(paged(json(StatusCode::OK, body), limit, offset, total))
}

/// `GET /templates/{templateID}/builds/{buildID}/logs?cursor=&limit=&direction=&level=
/// &source=`: entries at or after `cursor` (ms since the epoch; `forward`, oldest first)
/// or at or before it (`backward`, newest first), of `level` or above, at most `limit`
/// (0..=100, default 100). Every log here is kept with its build, so both `source`s
/// (`temporary`, `persistent`) read the same entries.
async fn build_logs(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path((template_id, build_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    template_for(&server, &owner, &template_id, Access::Manage)?;
    let mut cursor: Option<i64> = None;
    let mut limit = 100usize;
    let mut backward = false;
    let mut min_level = LogLevel::Debug;
    for (name, value) in super::list::query_pairs(query.as_deref().unwrap_or("")) {
        match name.as_str() {
            "cursor" => {
                cursor = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|c| *c >= 0)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "cursor must be milliseconds since the epoch, got {value:?}"
                            ))
                        })?,
                );
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| *l <= 100)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 0..=100, got {value:?}"))
                    })?;
            }
            "direction" => {
                backward = match value.as_str() {
                    "forward" => false,
                    "backward" => true,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "direction must be \"forward\" or \"backward\", got {value:?}"
                        )));
                    }
                };
            }
            "level" => {
                min_level = match value.as_str() {
                    "debug" => LogLevel::Debug,
                    "info" => LogLevel::Info,
                    "warn" => LogLevel::Warn,
                    "error" => LogLevel::Error,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "level must be debug, info, warn or error, got {value:?}"
                        )));
                    }
                };
            }
            "source" => {
                if value != "temporary" && value != "persistent" {
                    return Err(ApiError::bad_request(format!(
                        "source must be \"temporary\" or \"persistent\", got {value:?}"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (served: cursor, limit, direction, \
                     level, source)"
                )));
            }
        }
    }
    let entries = server.templates().build_log(&template_id, &build_id)?;
    let rank = |l: LogLevel| match l {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
    };
    let wanted = |e: &LogEntry| {
        rank(e.level) >= rank(min_level)
            && cursor.is_none_or(|c| {
                let at = e.timestamp.timestamp_millis();
                if backward { at <= c } else { at >= c }
            })
    };
    let logs: Vec<BuildLogEntry> = if backward {
        entries
            .into_iter()
            .rev()
            .filter(wanted)
            .take(limit)
            .map(log_entry)
            .collect()
    } else {
        entries
            .into_iter()
            .filter(wanted)
            .take(limit)
            .map(log_entry)
            .collect()
    };
    Ok(json(StatusCode::OK, BuildLogs { logs }))
}

/// Applies a `TemplateUpdateRequest` for the caller, who must own the template (another
/// key's is not found); unknown fields are refused by name.
fn apply_update(
    server: &Sandboxd,
    owner: &Owner,
    template_id: &str,
    body: &Bytes,
) -> ApiResult<Template> {
    let update: TemplateUpdate = parse_body(body, None)?;
    Ok(server
        .templates()
        .update(template_id, &owner.0, update.public)?)
}

/// `PATCH /templates/{templateID}` (deprecated): 200 with no body.
async fn update_v1(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(template_id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    apply_update(&server, &owner, &template_id, &body)?;
    Ok(StatusCode::OK)
}

/// `PATCH /v2/templates/{templateID}`: 200 with the template's names.
async fn update_v2(
    State(server): State<Sandboxd>,
    Extension(owner): Extension<Owner>,
    Path(template_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let template = apply_update(&server, &owner, &template_id, &body)?;
    Ok(json(
        StatusCode::OK,
        TemplateUpdated {
            names: template.aliases,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(value: serde_json::Value) -> Result<Recipe, String> {
        recipe(serde_json::from_value(value).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn paged_template_routes_read_limit_and_next_token_and_name_the_next_page() {
        use axum::response::IntoResponse as _;
        assert_eq!(page_params(None, unknown_param).unwrap(), (100, 0));
        assert_eq!(
            page_params(Some("limit=2&nextToken=4"), unknown_param).unwrap(),
            (2, 4)
        );
        for bad in ["limit=0", "limit=101", "nextToken=x", "sortBy=name"] {
            let err = page_params(Some(bad), unknown_param).unwrap_err();
            let name = bad.split('=').next().unwrap();
            assert!(err.message.contains(name), "{bad}: {}", err.message);
        }
        let next = paged(StatusCode::OK.into_response(), 2, 4, 7);
        assert_eq!(next.headers()["x-next-token"], "6");
        let last = paged(StatusCode::OK.into_response(), 2, 4, 6);
        assert!(last.headers().get("x-next-token").is_none());
    }

    #[test]
    fn sdk_recipes_parse_into_steps() {
        let parsed = start(serde_json::json!({
            "fromTemplate": "base",
            "force": false,
            "steps": [
                {"type": "RUN", "args": ["echo hi"], "force": false},
                {"type": "RUN", "args": ["apt-get update", "root"], "force": false},
                {"type": "ENV", "args": ["A", "1", "B", "2"], "force": false},
                {"type": "WORKDIR", "args": ["/app"], "force": false},
                {"type": "USER", "args": ["root"], "force": false},
                {"type": "COPY", "args": ["app/*.py", "/srv/", "", "0755"], "filesHash": "abc", "force": false},
            ],
        }))
        .unwrap();
        assert_eq!(parsed.from_template, "base");
        assert_eq!(
            parsed.steps,
            vec![
                Step::Run {
                    command: "echo hi".into(),
                    user: None
                },
                Step::Run {
                    command: "apt-get update".into(),
                    user: Some("root".into())
                },
                Step::Env(vec![("A".into(), "1".into()), ("B".into(), "2".into())]),
                Step::Workdir("/app".into()),
                Step::User("root".into()),
                Step::Copy {
                    src: "app/*.py".into(),
                    dest: "/srv/".into(),
                    user: None,
                    mode: Some("0755".into()),
                    files_hash: "abc".into(),
                },
            ]
        );
        let default_image =
            start(serde_json::json!({"fromImage": "e2bdev/base", "steps": []})).unwrap();
        assert_eq!(default_image.from_template, "base");
    }

    #[test]
    fn unsupported_recipes_name_what_is_supported() {
        let image = start(serde_json::json!({"fromImage": "python:3.11"})).unwrap();
        assert_eq!(
            image.from_image.map(|i| i.to_string()).as_deref(),
            Some("docker.io/library/python:3.11")
        );
        let err = start(serde_json::json!({"fromImage": "../../etc"})).unwrap_err();
        assert!(err.contains("fromImage"), "{err}");
        let err = start(serde_json::json!({
            "fromImage": "private/app",
            "fromImageRegistry": {"type": "registry", "username": "u", "password": "p"},
        }))
        .unwrap_err();
        assert!(err.contains("fromImageRegistry"), "{err}");
        let err = start(serde_json::json!({
            "fromTemplate": "base",
            "steps": [{"type": "ADD", "args": ["a", "/a"]}],
        }))
        .unwrap_err();
        assert!(
            err.contains("step 1 (ADD)") && err.contains(models::SUPPORTED_STEPS),
            "{err}"
        );
        let err = start(serde_json::json!({
            "fromTemplate": "base",
            "steps": [{"type": "COPY", "args": ["../etc", "/a", "", ""], "filesHash": "x"}],
        }))
        .unwrap_err();
        assert!(
            err.contains("step 1 (COPY)") && err.contains("src"),
            "{err}"
        );
        let err = start(serde_json::json!({
            "fromTemplate": "base",
            "steps": [{"type": "COPY", "args": ["a", "/a"]}],
        }))
        .unwrap_err();
        assert!(err.contains("filesHash"), "{err}");
        let err = start(serde_json::json!({
            "fromTemplate": "base",
            "steps": [{"type": "COPY", "args": ["a", "/a", "", "999"], "filesHash": "x"}],
        }))
        .unwrap_err();
        assert!(err.contains("mode"), "{err}");
        let err = start(serde_json::json!({
            "fromTemplate": "base",
            "steps": [{"type": "ENV", "args": ["A"]}],
        }))
        .unwrap_err();
        assert!(err.contains("step 1 (ENV)"), "{err}");
        let err = start(serde_json::json!({"steps": []})).unwrap_err();
        assert!(err.contains("fromTemplate"), "{err}");
    }
}
