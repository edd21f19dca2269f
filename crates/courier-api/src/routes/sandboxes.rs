//! Sandboxes: create, list, read, the lifecycle (kill, pause, resume, delete, restore,
//! purge, kill-all) and messages.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use courier_orchestrator::config::CreateRequest;
use courier_store::{DeletedFilter, ProjectId, SandboxFilter, SandboxStatus};
use serde::Deserialize;

use super::{limit, page, project_id, project_id_field, sandbox_id};
use crate::auth::{Body, Caller};
use crate::views::{
    self, KillAll, Message, MessageList, NewMessage, NewSandbox, Sandbox, SandboxPage,
};
use crate::{Api, ApiError, Result};

/// Default page size of message lists.
const DEFAULT_MESSAGE_LIMIT: u32 = 100;

/// The project a create goes to: the one named, or the caller's first.
async fn target_project(api: &Api, caller: Caller, raw: Option<&str>) -> Result<ProjectId> {
    match raw {
        Some(raw) => Ok(api.owned_project(caller, project_id_field(raw)?).await?.id),
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

pub(super) async fn create_sandbox(
    State(api): State<Api>,
    caller: Caller,
    Body(body): Body<NewSandbox>,
) -> Result<(StatusCode, Json<Sandbox>)> {
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
            Ok((StatusCode::CREATED, Json(sandbox.into())))
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
pub(super) struct ListQuery {
    project_id: Option<String>,
    status: Option<String>,
    deleted: Option<String>,
    tool: Option<String>,
    run_id: Option<String>,
    issue_session_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn deleted_filter(raw: Option<&str>) -> Result<DeletedFilter> {
    match raw {
        None | Some("exclude") | Some("false") => Ok(DeletedFilter::Exclude),
        Some("only") | Some("true") => Ok(DeletedFilter::Only),
        Some("include") | Some("all") => Ok(DeletedFilter::Include),
        Some(other) => Err(ApiError::invalid(
            "deleted",
            format!("`{other}` is not one of: exclude, only, include"),
        )),
    }
}

pub(super) async fn list_sandboxes(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<SandboxPage>> {
    let project = match q.project_id.as_deref() {
        Some(raw) => Some(api.owned_project(caller, project_id_field(raw)?).await?.id),
        None => None,
    };
    let status = q
        .status
        .as_deref()
        .map(|s| SandboxStatus::parse_field(s, "status"))
        .transpose()?;
    let filter = SandboxFilter {
        status,
        project_id: project,
        user_id: Some(caller.0),
        cli_tool: q.tool,
        deleted: deleted_filter(q.deleted.as_deref())?,
        run_id: q.run_id.filter(|v| !v.trim().is_empty()),
        issue_session_id: q.issue_session_id.filter(|v| !v.trim().is_empty()),
    };
    let page = api
        .inner
        .store
        .list_sandboxes(filter, page(q.limit, q.cursor.as_deref())?)
        .await?;
    Ok(Json(SandboxPage {
        items: views::records::views(page.items),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

pub(super) async fn get_sandbox(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let working = api.inner.orchestrator.is_working(sandbox.id);
    Ok(Json(Sandbox {
        working: Some(working),
        ..sandbox.into()
    }))
}

pub(super) async fn kill(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let killed = api
        .inner
        .orchestrator
        .kill(sandbox.id, Some("killed by the user".into()))
        .await?;
    Ok(Json(killed.into()))
}

pub(super) async fn pause(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let paused = api.inner.orchestrator.pause(sandbox.id).await?;
    Ok(Json(paused.into()))
}

pub(super) async fn resume(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let resumed = api.inner.orchestrator.resume(sandbox.id).await?;
    Ok(Json(resumed.into()))
}

pub(super) async fn delete_sandbox(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    api.inner.orchestrator.soft_delete(sandbox.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn restore(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    api.inner.orchestrator.restore(sandbox.id).await?;
    let restored = api.inner.store.get_sandbox(sandbox.id).await?;
    Ok(Json(restored.into()))
}

pub(super) async fn purge(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    api.inner.orchestrator.purge(sandbox.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn kill_all(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<KillAll>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let killed = match &api.inner.config.cluster {
        Some(link) => crate::owner::kill_project(&api, link, &headers, project.id).await?,
        None => api.inner.orchestrator.kill_project(project.id).await?,
    };
    Ok(Json(KillAll { killed }))
}

// ---- messages ----

#[derive(Deserialize)]
pub(super) struct MessagesQuery {
    after_seq: Option<i64>,
    limit: Option<u32>,
    raw: Option<bool>,
    events: Option<bool>,
}

pub(super) async fn list_messages(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<MessageList>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let limit = limit(q.limit, DEFAULT_MESSAGE_LIMIT)?;
    let messages = api
        .inner
        .store
        .list_messages(sandbox.id, q.after_seq.unwrap_or(0).max(0), limit)
        .await?;
    let raw = q.raw.unwrap_or(false);
    // An agent's events, parsed here from its raw log with its tool's parser.
    let events = q
        .events
        .unwrap_or(false)
        .then(|| sandbox.cli_tool.parse().ok());
    let items = messages
        .into_iter()
        .map(|m| {
            let raw_log = raw.then(|| m.raw_log.clone());
            let view = match events {
                Some(tool) => crate::events::with_events(m, tool),
                None => m.into(),
            };
            Message { raw_log, ..view }
        })
        .collect();
    Ok(Json(MessageList { items }))
}

pub(super) async fn send_message(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<NewMessage>,
) -> Result<(StatusCode, Json<Message>)> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("text", "the message must not be empty"));
    }
    let message = api
        .inner
        .orchestrator
        .send_message(sandbox.id, &body.text)
        .await?;
    Ok((StatusCode::CREATED, Json(message.into())))
}
