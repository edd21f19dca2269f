//! Personas, workflow runs, work chains and issue sessions: each checked to belong to a
//! project of the caller (404 unknown, 403 someone else's), then handed to the
//! [`Workflows`](courier_orchestrator::work::Workflows) engine or read from the store.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use courier_orchestrator::work::{ChainRequest, RunRequest};
use courier_store::{
    IssueCardId, IssueSessionId, PersonaId, ProjectId, WorkChainId, WorkflowRunId,
};
use uuid::Uuid;

use super::{parse_uuid, project_id};
use crate::auth::{Body, Caller};
use crate::views::{
    self, CardToChain, ChainDetail, ChainItem, IssueSession, IssueSessionDetail, IssueSessionList,
    NewChainItem, NewIssueSession, NewWorkChain, NewWorkflowRun, Persona, PersonaList,
    PersonaRequest, RunDetail, StartCard, StartedCard, WorkChain, WorkChainList, WorkflowRun,
    WorkflowRunList,
};
use crate::{Api, ApiError, Result};

fn persona_id(raw: &str) -> Result<PersonaId> {
    parse_uuid("persona", raw).map(PersonaId::from_uuid)
}

fn run_id(raw: &str) -> Result<WorkflowRunId> {
    parse_uuid("workflow run", raw).map(WorkflowRunId::from_uuid)
}

fn chain_id(raw: &str) -> Result<WorkChainId> {
    parse_uuid("work chain", raw).map(WorkChainId::from_uuid)
}

fn session_id(raw: &str) -> Result<IssueSessionId> {
    parse_uuid("issue session", raw).map(IssueSessionId::from_uuid)
}

fn card_id(raw: &str) -> Result<IssueCardId> {
    parse_uuid("issue card", raw).map(IssueCardId::from_uuid)
}

impl Api {
    /// Checks that a record of `project` is the caller's: 403 naming the record if not.
    async fn owns(
        &self,
        caller: Caller,
        project: ProjectId,
        entity: &'static str,
        id: impl ToString,
    ) -> Result<()> {
        let project = self.inner.store.get_project(project).await?;
        if project.user_id != caller.0 {
            return Err(ApiError::Forbidden {
                entity,
                id: id.to_string(),
            });
        }
        Ok(())
    }
}

// ---- personas ----

pub(super) async fn list_personas(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PersonaList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let personas = api.inner.store.list_personas(project.id).await?;
    Ok(Json(PersonaList {
        items: personas.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn create_persona(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<PersonaRequest>,
) -> Result<(StatusCode, Json<Persona>)> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let persona = api
        .inner
        .workflows
        .create_persona(project.id, &body.into())
        .await?;
    Ok((StatusCode::CREATED, Json(persona.into())))
}

pub(super) async fn get_persona(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Persona>> {
    let persona = api.inner.store.get_persona(persona_id(&id)?).await?;
    api.owns(caller, persona.project_id, "persona", persona.id)
        .await?;
    Ok(Json(persona.into()))
}

pub(super) async fn update_persona(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<PersonaRequest>,
) -> Result<Json<Persona>> {
    let persona = api.inner.store.get_persona(persona_id(&id)?).await?;
    api.owns(caller, persona.project_id, "persona", persona.id)
        .await?;
    let updated = api
        .inner
        .workflows
        .update_persona(persona.id, &body.into())
        .await?;
    Ok(Json(updated.into()))
}

pub(super) async fn delete_persona(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let persona = api.inner.store.get_persona(persona_id(&id)?).await?;
    api.owns(caller, persona.project_id, "persona", persona.id)
        .await?;
    api.inner.store.delete_persona(persona.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- workflow runs ----

pub(super) async fn list_runs(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowRunList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let runs = api.inner.store.list_workflow_runs(project.id, None).await?;
    Ok(Json(WorkflowRunList {
        items: runs.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn start_run(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<NewWorkflowRun>,
) -> Result<(StatusCode, Json<WorkflowRun>)> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    if body.prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt", "must not be empty"));
    }
    let workflow = body.options().into_request()?;
    let run = api
        .inner
        .workflows
        .start_run(RunRequest {
            user_id: caller.0,
            project_id: project.id,
            title: body.title,
            prompt: body.prompt,
            workflow,
            repo_url: body.repo_url,
            base_branch: body.base_branch,
            branch: body.branch,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(run.into())))
}

pub(super) async fn get_run(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>> {
    let run = api.inner.store.get_workflow_run(run_id(&id)?).await?;
    api.owns(caller, run.project_id, "workflow run", run.id)
        .await?;
    let detail = api.inner.workflows.run_detail(run.id).await?;
    Ok(Json(detail.into()))
}

pub(super) async fn cancel_run(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowRun>> {
    let run = api.inner.store.get_workflow_run(run_id(&id)?).await?;
    api.owns(caller, run.project_id, "workflow run", run.id)
        .await?;
    if run.state.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "workflow run {} is already {}",
            run.id, run.state.status
        )));
    }
    let cancelled = api.inner.workflows.cancel_run(run.id).await?;
    Ok(Json(cancelled.into()))
}

// ---- work chains ----

pub(super) async fn list_chains(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkChainList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let chains = api.inner.store.list_work_chains(project.id).await?;
    Ok(Json(WorkChainList {
        items: chains.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn start_chain(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<NewWorkChain>,
) -> Result<(StatusCode, Json<WorkChain>)> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    if body.items.is_empty() {
        return Err(ApiError::invalid(
            "items",
            "a chain needs at least one issue",
        ));
    }
    let items = body
        .items
        .into_iter()
        .map(NewChainItem::into_item)
        .collect::<Result<Vec<_>>>()?;
    let chain = api
        .inner
        .workflows
        .start_chain(ChainRequest {
            user_id: caller.0,
            project_id: project.id,
            title: body.title,
            items,
            workflow: body.workflow.into_request()?,
            repo_url: body.repo_url,
            base_branch: body.base_branch,
            branch: body.branch,
            pr_mode: views::workflows::pr_mode(body.pr_mode.as_deref())?,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(chain.into())))
}

pub(super) async fn get_chain(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ChainDetail>> {
    let chain = api.inner.store.get_work_chain(chain_id(&id)?).await?;
    api.owns(caller, chain.project_id, "work chain", chain.id)
        .await?;
    let detail = api.inner.workflows.chain_detail(chain.id).await?;
    Ok(Json(detail.into()))
}

pub(super) async fn add_chain_item(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<NewChainItem>,
) -> Result<(StatusCode, Json<ChainItem>)> {
    let chain = api.inner.store.get_work_chain(chain_id(&id)?).await?;
    api.owns(caller, chain.project_id, "work chain", chain.id)
        .await?;
    let item = body.into_item()?;
    if let Some(card) = item.card_id {
        let found = api.inner.store.get_issue_card(card).await?;
        if found.project_id != chain.project_id {
            return Err(ApiError::invalid(
                "card_id",
                format!("card {card} belongs to another project"),
            ));
        }
    }
    let added = api.inner.workflows.add_to_chain(chain.id, item).await?;
    Ok((StatusCode::CREATED, Json(added.into())))
}

pub(super) async fn cancel_chain(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkChain>> {
    let chain = api.inner.store.get_work_chain(chain_id(&id)?).await?;
    api.owns(caller, chain.project_id, "work chain", chain.id)
        .await?;
    if chain.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "work chain {} is already {}",
            chain.id, chain.status
        )));
    }
    let cancelled = api.inner.workflows.cancel_chain(chain.id).await?;
    Ok(Json(cancelled.into()))
}

// ---- issue sessions ----

pub(super) async fn list_sessions(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IssueSessionList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let sessions = api.inner.store.list_issue_sessions(project.id).await?;
    Ok(Json(IssueSessionList {
        items: sessions.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn start_session(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<NewIssueSession>,
) -> Result<(StatusCode, Json<IssueSession>)> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let session = api
        .inner
        .workflows
        .start_issue_session(caller.0, project.id, body.focus, body.tool, body.model)
        .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

pub(super) async fn get_session(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IssueSessionDetail>> {
    let session = api.inner.store.get_issue_session(session_id(&id)?).await?;
    api.owns(caller, session.project_id, "issue session", session.id)
        .await?;
    let detail = api.inner.workflows.issue_session_detail(session.id).await?;
    Ok(Json(detail.into()))
}

pub(super) async fn start_card(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<StartCard>,
) -> Result<(StatusCode, Json<StartedCard>)> {
    let card = api.inner.store.get_issue_card(card_id(&id)?).await?;
    api.owns(caller, card.project_id, "issue card", card.id)
        .await?;
    let (card, sandbox) = api
        .inner
        .workflows
        .start_card(card.id, caller.0, body.tool, body.model)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(StartedCard {
            card: card.into(),
            sandbox: sandbox.into(),
        }),
    ))
}

pub(super) async fn card_to_chain(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<CardToChain>,
) -> Result<(StatusCode, Json<ChainItem>)> {
    let card = api.inner.store.get_issue_card(card_id(&id)?).await?;
    api.owns(caller, card.project_id, "issue card", card.id)
        .await?;
    let chain = Uuid::parse_str(body.chain_id.trim())
        .map(WorkChainId::from_uuid)
        .map_err(|_| ApiError::invalid("chain_id", "not a work chain id"))?;
    // A missing chain is a bad field here, not a missing route target.
    let target = match api.inner.store.get_work_chain(chain).await {
        Ok(c) => c,
        Err(courier_store::StoreError::NotFound { .. }) => {
            return Err(ApiError::invalid(
                "chain_id",
                format!("work chain {chain} not found"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    api.owns(caller, target.project_id, "work chain", target.id)
        .await?;
    let item = api
        .inner
        .workflows
        .add_card_to_chain(card.id, target.id)
        .await?;
    Ok((StatusCode::CREATED, Json(item.into())))
}
