//! Route table and handlers. Each handler: authenticate, check ownership, parse, call the
//! orchestrator or read the store, shape the answer.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::pr::{WebhookEvent, handle_webhook, redact_url, verify_signature};
use courier_orchestrator::usage::UsageSummary;
use courier_store::{
    Cursor, DeletedFilter, KeyOwner, MAX_PAGE_LIMIT, Message, PageRequest, ProjectId, Provider,
    ProviderKey, Sandbox, SandboxFilter, SandboxId, SandboxStatus, UserId,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Body, Caller};
use crate::{Api, ApiError, Result, events, openapi};

/// Default page size of sandbox and message lists.
const DEFAULT_LIMIT: u32 = 50;

pub(crate) fn router(api: Api) -> Router {
    let v1 = Router::new()
        .route("/me", get(me))
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", get(get_project))
        .route("/projects/{id}/keys", get(list_project_keys))
        .route(
            "/projects/{id}/keys/{provider}",
            put(set_project_key).delete(delete_project_key),
        )
        .route("/projects/{id}/kill-all", post(kill_all))
        .route("/projects/{id}/usage", get(project_usage))
        .route("/projects/{id}/learnings", get(learnings))
        .route("/projects/{id}/learning-versions", get(learning_versions))
        .route("/keys", get(list_user_keys))
        .route(
            "/keys/{provider}",
            put(set_user_key).delete(delete_user_key),
        )
        .route("/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route("/sandboxes/{id}", get(get_sandbox).delete(delete_sandbox))
        .route("/sandboxes/{id}/kill", post(kill))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/restore", post(restore))
        .route("/sandboxes/{id}/purge", post(purge))
        .route(
            "/sandboxes/{id}/messages",
            get(list_messages).post(send_message),
        )
        .route("/sandboxes/{id}/events", get(events::stream))
        .route("/sandboxes/{id}/usage", get(sandbox_usage))
        .route("/usage", get(usage))
        .route(
            "/template-builds",
            get(template_builds).post(build_template),
        )
        // GitHub sends no token: the route is open and checks the delivery's signature.
        // Its own body limit replaces the API's (set outside, so it runs first).
        .route(
            "/github/webhook",
            post(github_webhook).layer(DefaultBodyLimit::max(api.inner.config.webhook_body_limit)),
        );
    let limit = api.inner.config.body_limit;
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .nest("/v1", v1)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(api.clone(), count))
        .with_state(api)
}

async fn count(State(api): State<Api>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    api.inner.metrics.count_request(response.status().as_u16());
    response
}

async fn no_route(req: Request) -> ApiError {
    ApiError::NoRoute(format!("{} {}", req.method(), req.uri().path()))
}

// ---- ids ----

fn parse_uuid(entity: &'static str, raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound {
        entity,
        id: raw.to_owned(),
    })
}

fn project_id(raw: &str) -> Result<ProjectId> {
    parse_uuid("project", raw).map(ProjectId::from_uuid)
}

fn sandbox_id(raw: &str) -> Result<SandboxId> {
    parse_uuid("sandbox", raw).map(SandboxId::from_uuid)
}

fn provider(raw: &str) -> Result<Provider> {
    Ok(Provider::parse_field(raw, "provider")?)
}

// ---- views (what clients see) ----

pub(crate) fn sandbox_view(sandbox: &Sandbox) -> Value {
    let mut sandbox = sandbox.clone();
    sandbox.git.repo_url = sandbox.git.repo_url.as_deref().map(redact_url);
    serde_json::to_value(sandbox).unwrap_or(Value::Null)
}

pub(crate) fn message_view(message: &Message, raw: bool) -> Value {
    let mut value = serde_json::to_value(message).unwrap_or(Value::Null);
    if !raw && let Some(map) = value.as_object_mut() {
        map.remove("raw_log");
    }
    value
}

fn key_view(key: &ProviderKey) -> Value {
    let (owner, owner_id) = match key.owner {
        KeyOwner::User(u) => ("user", u.to_string()),
        KeyOwner::Project(p) => ("project", p.to_string()),
    };
    json!({
        "provider": key.provider,
        "owner": owner,
        "owner_id": owner_id,
        "masked": format!("****{}", key.last_four),
        "created_at": key.created_at,
        "updated_at": key.updated_at,
    })
}

fn usage_view(u: &UsageSummary) -> Value {
    json!({
        "compute_seconds": u.compute_seconds,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cost_usd": u.cost.usd(),
    })
}

// ---- service routes ----

async fn dashboard() -> Html<&'static str> {
    Html(crate::DASHBOARD_HTML)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(api): State<Api>) -> Result<Json<Value>> {
    if api.is_shutting_down() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    // A lookup that must miss: it proves the database answers.
    match api
        .inner
        .store
        .get_user(UserId::from_uuid(Uuid::nil()))
        .await
    {
        Ok(_) | Err(courier_store::StoreError::NotFound { .. }) => {
            Ok(Json(json!({ "status": "ready" })))
        }
        Err(e) => Err(ApiError::Unavailable(format!("store not ready: {e}"))),
    }
}

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.inner.metrics.render(),
    )
}

async fn openapi_json() -> Json<Value> {
    Json(openapi::document())
}

// ---- users and projects ----

async fn me(State(api): State<Api>, caller: Caller) -> Result<Json<Value>> {
    let user = api.inner.store.get_user(caller.0).await?;
    Ok(Json(json!(user)))
}

async fn list_projects(State(api): State<Api>, caller: Caller) -> Result<Json<Value>> {
    let projects = api.inner.store.list_projects(caller.0).await?;
    Ok(Json(json!({ "items": projects })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProjectBody {
    name: String,
}

async fn create_project(
    State(api): State<Api>,
    caller: Caller,
    Body(body): Body<NewProjectBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    let project = api
        .inner
        .store
        .create_project(courier_store::NewProject {
            user_id: caller.0,
            name: name.to_owned(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(project))))
}

async fn get_project(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    Ok(Json(json!(project)))
}

// ---- keys ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    value: String,
}

async fn list_keys(api: &Api, owner: KeyOwner) -> Result<Json<Value>> {
    let keys = api.inner.store.list_provider_keys(owner).await?;
    let items: Vec<Value> = keys.iter().map(key_view).collect();
    Ok(Json(json!({ "items": items })))
}

async fn set_key(
    api: &Api,
    owner: KeyOwner,
    provider: Provider,
    body: KeyBody,
) -> Result<Json<Value>> {
    let value = body.value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid("value", "the key must not be empty"));
    }
    let key = api.inner.vault.put(owner, provider, value).save().await?;
    Ok(Json(key_view(&key)))
}

async fn list_user_keys(State(api): State<Api>, caller: Caller) -> Result<Json<Value>> {
    list_keys(&api, KeyOwner::User(caller.0)).await
}

async fn set_user_key(
    State(api): State<Api>,
    caller: Caller,
    Path(p): Path<String>,
    Body(body): Body<KeyBody>,
) -> Result<Json<Value>> {
    set_key(&api, KeyOwner::User(caller.0), provider(&p)?, body).await
}

async fn delete_user_key(
    State(api): State<Api>,
    caller: Caller,
    Path(p): Path<String>,
) -> Result<StatusCode> {
    api.inner
        .store
        .delete_provider_key(KeyOwner::User(caller.0), provider(&p)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_project_keys(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    list_keys(&api, KeyOwner::Project(project.id)).await
}

async fn set_project_key(
    State(api): State<Api>,
    caller: Caller,
    Path((id, p)): Path<(String, String)>,
    Body(body): Body<KeyBody>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    set_key(&api, KeyOwner::Project(project.id), provider(&p)?, body).await
}

async fn delete_project_key(
    State(api): State<Api>,
    caller: Caller,
    Path((id, p)): Path<(String, String)>,
) -> Result<StatusCode> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    api.inner
        .store
        .delete_provider_key(KeyOwner::Project(project.id), provider(&p)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- sandboxes ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSandboxBody {
    project_id: Option<String>,
    tool: Option<String>,
    model: Option<String>,
    prompt: String,
    memory_mb: Option<i64>,
    cpu_count: Option<i64>,
    timeout_ms: Option<i64>,
    template_id: Option<String>,
    thinking_effort: Option<String>,
    repo_url: Option<String>,
    base_branch: Option<String>,
    branch: Option<String>,
}

/// The project a create goes to: the one named, or the caller's first.
async fn target_project(api: &Api, caller: Caller, raw: Option<&str>) -> Result<ProjectId> {
    match raw {
        Some(raw) => {
            let id = Uuid::parse_str(raw)
                .map_err(|_| ApiError::invalid("project_id", "not a project id"))?;
            Ok(api
                .owned_project(caller, ProjectId::from_uuid(id))
                .await?
                .id)
        }
        None => api
            .inner
            .store
            .list_projects(caller.0)
            .await?
            .first()
            .map(|p| p.id)
            .ok_or_else(|| {
                ApiError::invalid("project_id", "you have no project: create one first")
            }),
    }
}

async fn create_sandbox(
    State(api): State<Api>,
    caller: Caller,
    Body(body): Body<CreateSandboxBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let project = target_project(&api, caller, body.project_id.as_deref()).await?;
    if let Err(wait) = api.inner.limiter.take(caller.0, Instant::now()) {
        api.inner
            .metrics
            .rate_limited
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    let request = CreateRequest {
        user_id: caller.0,
        project_id: project,
        tool: body.tool,
        model: body.model,
        prompt: body.prompt,
        memory_mb: body.memory_mb,
        cpu_count: body.cpu_count,
        timeout_ms: body.timeout_ms,
        template_id: body.template_id,
        thinking_effort: body.thinking_effort,
        repo_url: body.repo_url,
        base_branch: body.base_branch,
        branch: body.branch,
        ..Default::default()
    };
    match api.inner.orchestrator.create(request).await {
        Ok(sandbox) => {
            api.inner
                .metrics
                .sandboxes_created
                .fetch_add(1, Ordering::Relaxed);
            Ok((StatusCode::CREATED, Json(sandbox_view(&sandbox))))
        }
        Err(e) => {
            api.inner
                .metrics
                .sandbox_create_failures
                .fetch_add(1, Ordering::Relaxed);
            Err(e.into())
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    project_id: Option<String>,
    status: Option<String>,
    deleted: Option<String>,
    tool: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn page(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE_LIMIT}"),
        ));
    }
    Ok(match cursor {
        Some(c) => PageRequest::after(limit, Cursor::from_str(c)?),
        None => PageRequest::first(limit),
    })
}

async fn list_sandboxes(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let project = match q.project_id.as_deref() {
        Some(raw) => {
            let id = Uuid::parse_str(raw)
                .map_err(|_| ApiError::invalid("project_id", "not a project id"))?;
            Some(
                api.owned_project(caller, ProjectId::from_uuid(id))
                    .await?
                    .id,
            )
        }
        None => None,
    };
    let status = q
        .status
        .as_deref()
        .map(|s| SandboxStatus::parse_field(s, "status"))
        .transpose()?;
    let deleted = match q.deleted.as_deref() {
        None | Some("exclude") | Some("false") => DeletedFilter::Exclude,
        Some("only") | Some("true") => DeletedFilter::Only,
        Some("include") | Some("all") => DeletedFilter::Include,
        Some(other) => {
            return Err(ApiError::invalid(
                "deleted",
                format!("`{other}` is not one of: exclude, only, include"),
            ));
        }
    };
    let filter = SandboxFilter {
        status,
        project_id: project,
        user_id: Some(caller.0),
        cli_tool: q.tool,
        deleted,
    };
    let page = api
        .inner
        .store
        .list_sandboxes(filter, page(q.limit, q.cursor.as_deref())?)
        .await?;
    let items: Vec<Value> = page.items.iter().map(sandbox_view).collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

async fn get_sandbox(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let mut view = sandbox_view(&sandbox);
    view["working"] = json!(api.inner.orchestrator.is_working(sandbox.id));
    Ok(Json(view))
}

async fn kill(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let killed = api
        .inner
        .orchestrator
        .kill(sandbox.id, Some("killed by the user".into()))
        .await?;
    Ok(Json(sandbox_view(&killed)))
}

async fn pause(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let paused = api.inner.orchestrator.pause(sandbox.id).await?;
    Ok(Json(sandbox_view(&paused)))
}

async fn resume(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let resumed = api.inner.orchestrator.resume(sandbox.id).await?;
    Ok(Json(sandbox_view(&resumed)))
}

async fn delete_sandbox(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    api.inner.orchestrator.soft_delete(sandbox.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restore(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    api.inner.orchestrator.restore(sandbox.id).await?;
    let restored = api.inner.store.get_sandbox(sandbox.id).await?;
    Ok(Json(sandbox_view(&restored)))
}

async fn purge(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    api.inner.orchestrator.purge(sandbox.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill_all(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let killed = api.inner.orchestrator.kill_project(project.id).await?;
    Ok(Json(json!({ "killed": killed })))
}

// ---- messages ----

#[derive(Deserialize)]
struct MessagesQuery {
    after_seq: Option<i64>,
    limit: Option<u32>,
    raw: Option<bool>,
}

async fn list_messages(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE_LIMIT}"),
        ));
    }
    let messages = api
        .inner
        .store
        .list_messages(sandbox.id, q.after_seq.unwrap_or(0).max(0), limit)
        .await?;
    let raw = q.raw.unwrap_or(false);
    let items: Vec<Value> = messages.iter().map(|m| message_view(m, raw)).collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: String,
}

async fn send_message(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<MessageBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("text", "the message must not be empty"));
    }
    let message = api
        .inner
        .orchestrator
        .send_message(sandbox.id, &body.text)
        .await?;
    Ok((StatusCode::CREATED, Json(message_view(&message, false))))
}

// ---- usage, learnings, templates ----

async fn sandbox_usage(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let usage = UsageSummary::for_sandbox(api.inner.store.as_ref(), sandbox.id).await?;
    Ok(Json(usage_view(&usage)))
}

async fn project_usage(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let usage = UsageSummary::for_project(api.inner.store.as_ref(), project.id).await?;
    Ok(Json(usage_view(&usage)))
}

async fn usage(State(api): State<Api>, caller: Caller) -> Result<Json<Value>> {
    let projects = api.inner.store.list_projects(caller.0).await?;
    let mut all = Vec::new();
    let mut rows = Vec::new();
    for project in &projects {
        let totals = api.inner.store.usage_for_project(project.id).await?;
        let summary = UsageSummary::from_totals(&totals);
        rows.push(json!({
            "project_id": project.id,
            "name": project.name,
            "active_sandboxes": project.active_sandboxes,
            "usage": usage_view(&summary),
        }));
        all.extend(totals);
    }
    Ok(Json(json!({
        "projects": rows,
        "total": usage_view(&UsageSummary::from_totals(&all)),
    })))
}

async fn learnings(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let items = api.inner.store.list_learnings(project.id).await?;
    Ok(Json(json!({ "items": items })))
}

async fn learning_versions(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let items = api.inner.store.list_learning_versions(project.id).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct TemplateQuery {
    tool: Option<String>,
}

async fn template_builds(
    State(api): State<Api>,
    _caller: Caller,
    Query(q): Query<TemplateQuery>,
) -> Result<Json<Value>> {
    let items = api.inner.store.list_template_builds(q.tool).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildTemplateBody {
    tool: String,
}

/// `POST /v1/template-builds`: starts a build of the tool's template at the sandbox
/// provider (server-wide, like the list; any authenticated caller). 202 with the build
/// row; it is followed to `succeeded` or `failed` in the background.
async fn build_template(
    State(api): State<Api>,
    _caller: Caller,
    Body(body): Body<BuildTemplateBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let buildable = courier_orchestrator::templates::buildable_tools();
    let allowed = || {
        buildable
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tool = body
        .tool
        .parse::<courier_tools::ToolId>()
        .ok()
        .filter(|t| buildable.contains(t))
        .ok_or_else(|| {
            ApiError::invalid(
                "tool",
                format!(
                    "{:?} has no template to build; allowed: {}",
                    body.tool,
                    allowed()
                ),
            )
        })?;
    let started = api.inner.orchestrator.tool_templates().build(tool).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(started.row))))
}

// ---- GitHub ----

/// The setting that turns the webhook on, named in the 503 answer.
pub(crate) const WEBHOOK_SECRET_SETTING: &str = "COURIER_GITHUB_WEBHOOK_SECRET";

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /v1/github/webhook`: verifies the delivery's signature over the raw body, reads
/// it, and marks the sandboxes of a merged pull request `merged`.
async fn github_webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let Some(hook) = api
        .inner
        .config
        .github_webhook
        .as_ref()
        .filter(|h| !h.secret.expose().is_empty())
    else {
        return Err(ApiError::Unavailable(format!(
            "GitHub webhooks are off: set {WEBHOOK_SECRET_SETTING} (or `github_webhook_secret` in the config file) to the secret of the hook and restart"
        )));
    };
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: api.inner.config.webhook_body_limit,
            }
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let secret = hook.secret.expose().as_bytes();
    let signature = header_str(&headers, "x-hub-signature-256");
    // The signature first, so a forged delivery is 401 whatever its body; the messages
    // say what was wrong, never what was expected.
    verify_signature(secret, signature, &body).map_err(|e| {
        api.inner
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        ApiError::BadSignature(e.to_string())
    })?;
    let event_name = header_str(&headers, "x-github-event");
    // Verified above: what fails now is the payload or the event header (400).
    let event = handle_webhook(secret, event_name, signature, &body)?;
    let marked = hook.pipeline.record_webhook(&event).await?;
    let outcome = match &event {
        WebhookEvent::Ping => "ping",
        WebhookEvent::PullRequestMerged { .. } => "merged",
        WebhookEvent::Ignored { .. } => "ignored",
    };
    tracing::info!(
        delivery = header_str(&headers, "x-github-delivery").unwrap_or("-"),
        event = event_name.unwrap_or("-"),
        outcome,
        marked = marked.len(),
        "GitHub webhook delivery"
    );
    Ok(Json(json!({
        "event": event_name,
        "outcome": outcome,
        "marked": marked,
    })))
}
