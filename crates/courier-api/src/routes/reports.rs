//! Usage totals, learnings and template builds.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use courier_orchestrator::usage::UsageSummary;
use serde::Deserialize;

use super::{project_id, sandbox_id};
use crate::auth::{Body, Caller};
use crate::views::{
    self, LearningList, LearningVersionList, ProjectUsage, TemplateBuild, TemplateBuildList,
    TemplateBuildRequest, Usage, UsageReport,
};
use crate::{Api, ApiError, Result};

pub(super) async fn sandbox_usage(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Usage>> {
    let sandbox = api.owned_sandbox(caller, sandbox_id(&id)?).await?;
    let usage =
        UsageSummary::for_sandbox_at(api.inner.store.as_ref(), &sandbox, chrono::Utc::now())
            .await?;
    Ok(Json((&usage).into()))
}

pub(super) async fn project_usage(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Usage>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let usage = UsageSummary::for_project(api.inner.store.as_ref(), project.id).await?;
    Ok(Json((&usage).into()))
}

pub(super) async fn usage(State(api): State<Api>, caller: Caller) -> Result<Json<UsageReport>> {
    let projects = api.inner.store.list_projects(caller.0).await?;
    let mut all = Vec::new();
    let mut rows = Vec::new();
    for project in &projects {
        let totals = api.inner.store.usage_for_project(project.id).await?;
        rows.push(ProjectUsage::new(
            project,
            &UsageSummary::from_totals(&totals),
        ));
        all.extend(totals);
    }
    Ok(Json(UsageReport {
        projects: rows,
        total: (&UsageSummary::from_totals(&all)).into(),
    }))
}

pub(super) async fn learnings(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LearningList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let items = api.inner.store.list_learnings(project.id).await?;
    Ok(Json(LearningList {
        items: views::records::views(items),
    }))
}

pub(super) async fn learning_versions(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LearningVersionList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let items = api.inner.store.list_learning_versions(project.id).await?;
    Ok(Json(LearningVersionList {
        items: views::records::views(items),
    }))
}

#[derive(Deserialize)]
pub(super) struct TemplateQuery {
    tool: Option<String>,
}

pub(super) async fn template_builds(
    State(api): State<Api>,
    _caller: Caller,
    Query(q): Query<TemplateQuery>,
) -> Result<Json<TemplateBuildList>> {
    let items = api.inner.store.list_template_builds(q.tool).await?;
    Ok(Json(TemplateBuildList {
        items: views::records::views(items),
    }))
}

/// `POST /v1/template-builds`: starts a build of the tool's template at the sandbox
/// provider (server-wide, like the list; any authenticated caller). 202 with the build
/// row; it is followed to `succeeded` or `failed` in the background.
pub(super) async fn build_template(
    State(api): State<Api>,
    _caller: Caller,
    Body(body): Body<TemplateBuildRequest>,
) -> Result<(StatusCode, Json<TemplateBuild>)> {
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
    Ok((StatusCode::ACCEPTED, Json(started.row.into())))
}
