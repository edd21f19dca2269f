//! Route table and handlers. Each handler: authenticate, check ownership, parse, call the
//! orchestrator or read the store, and answer with a [view](crate::views).
//!
//! Handlers live by resource: [`projects`] (users, projects, keys), [`sandboxes`]
//! (lifecycle and messages), [`reports`] (usage, learnings, template builds) and
//! [`github`] (the webhook), [`workflows`] (personas, workflow runs, work chains, issue
//! sessions); this module holds the router, the service routes and what
//! they share (id parsing, paging).

mod github;
mod projects;
mod reports;
mod sandboxes;
mod workflows;

use std::str::FromStr;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use courier_store::{Cursor, MAX_PAGE_LIMIT, PageRequest, ProjectId, Provider, SandboxId, UserId};
use uuid::Uuid;

use crate::views::Status;
use crate::{Api, ApiError, Result, events, openapi};

/// Default page size of sandbox lists.
const DEFAULT_LIMIT: u32 = 50;

pub(crate) fn router(api: Api) -> Router {
    let v1 = Router::new()
        .route("/me", get(projects::me))
        .route(
            "/projects",
            get(projects::list_projects).post(projects::create_project),
        )
        .route("/projects/{id}", get(projects::get_project))
        .route(
            "/projects/{id}/settings",
            get(projects::get_settings).put(projects::put_settings),
        )
        .route("/projects/{id}/keys", get(projects::list_project_keys))
        .route(
            "/projects/{id}/keys/{provider}",
            put(projects::set_project_key).delete(projects::delete_project_key),
        )
        .route("/projects/{id}/kill-all", post(sandboxes::kill_all))
        .route("/projects/{id}/usage", get(reports::project_usage))
        .route("/projects/{id}/learnings", get(reports::learnings))
        .route(
            "/projects/{id}/learning-versions",
            get(reports::learning_versions),
        )
        .route(
            "/projects/{id}/personas",
            get(workflows::list_personas).post(workflows::create_persona),
        )
        .route(
            "/personas/{id}",
            get(workflows::get_persona)
                .put(workflows::update_persona)
                .delete(workflows::delete_persona),
        )
        .route(
            "/projects/{id}/workflow-runs",
            get(workflows::list_runs).post(workflows::start_run),
        )
        .route("/workflow-runs/{id}", get(workflows::get_run))
        .route("/workflow-runs/{id}/cancel", post(workflows::cancel_run))
        .route(
            "/projects/{id}/work-chains",
            get(workflows::list_chains).post(workflows::start_chain),
        )
        .route("/work-chains/{id}", get(workflows::get_chain))
        .route("/work-chains/{id}/items", post(workflows::add_chain_item))
        .route("/work-chains/{id}/cancel", post(workflows::cancel_chain))
        .route(
            "/projects/{id}/issue-sessions",
            get(workflows::list_sessions).post(workflows::start_session),
        )
        .route("/issue-sessions/{id}", get(workflows::get_session))
        .route("/issue-cards/{id}/start", post(workflows::start_card))
        .route("/issue-cards/{id}/chain", post(workflows::card_to_chain))
        .route("/keys", get(projects::list_user_keys))
        .route(
            "/keys/{provider}",
            put(projects::set_user_key).delete(projects::delete_user_key),
        )
        .route(
            "/sandboxes",
            get(sandboxes::list_sandboxes).post(sandboxes::create_sandbox),
        )
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get_sandbox).delete(sandboxes::delete_sandbox),
        )
        .route("/sandboxes/{id}/kill", post(sandboxes::kill))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/restore", post(sandboxes::restore))
        .route("/sandboxes/{id}/purge", post(sandboxes::purge))
        .route(
            "/sandboxes/{id}/messages",
            get(sandboxes::list_messages).post(sandboxes::send_message),
        )
        .route("/sandboxes/{id}/events", get(events::stream))
        .route("/sandboxes/{id}/usage", get(reports::sandbox_usage))
        .route("/usage", get(reports::usage))
        .route(
            "/template-builds",
            get(reports::template_builds).post(reports::build_template),
        )
        // GitHub sends no token: the route is open and checks the delivery's signature.
        // Its own body limit replaces the API's (set outside, so it runs first).
        .route(
            "/github/webhook",
            post(github::github_webhook)
                .layer(DefaultBodyLimit::max(api.inner.config.webhook_body_limit)),
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
        .layer(middleware::from_fn_with_state(
            api.clone(),
            crate::owner::to_owner,
        ))
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

// ---- ids and paging ----

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

/// A project id given in a body or a query (422 naming `project_id`, not 404).
fn project_id_field(raw: &str) -> Result<ProjectId> {
    Uuid::parse_str(raw)
        .map(ProjectId::from_uuid)
        .map_err(|_| ApiError::invalid("project_id", "not a project id"))
}

fn provider(raw: &str) -> Result<Provider> {
    Ok(Provider::parse_field(raw, "provider")?)
}

/// A page size within bounds (default `default`).
fn limit(limit: Option<u32>, default: u32) -> Result<u32> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE_LIMIT}"),
        ));
    }
    Ok(limit)
}

fn page(size: Option<u32>, cursor: Option<&str>) -> Result<PageRequest> {
    let size = limit(size, DEFAULT_LIMIT)?;
    Ok(match cursor {
        Some(c) => PageRequest::after(size, Cursor::from_str(c)?),
        None => PageRequest::first(size),
    })
}

// ---- service routes ----

async fn dashboard() -> Html<&'static str> {
    Html(crate::DASHBOARD_HTML)
}

fn status(status: &str) -> Json<Status> {
    Json(Status {
        status: status.to_owned(),
    })
}

async fn healthz() -> Json<Status> {
    status("ok")
}

async fn readyz(State(api): State<Api>) -> Result<Json<Status>> {
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
        Ok(_) | Err(courier_store::StoreError::NotFound { .. }) => Ok(status("ready")),
        Err(e) => Err(ApiError::Unavailable(format!("store not ready: {e}"))),
    }
}

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.inner.metrics.render(),
    )
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document())
}
