//! The caller, their projects, their settings, and provider keys at both levels.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use courier_store::{KeyOwner, Provider};

use super::{project_id, provider};
use crate::auth::{Body, Caller};
use crate::views::{
    self, Key, KeyList, KeyValue, NewProject, Project, ProjectList, ProjectSettings,
    ProjectSettingsUpdate, User,
};
use crate::{Api, ApiError, Result};

pub(super) async fn me(State(api): State<Api>, caller: Caller) -> Result<Json<User>> {
    let user = api.inner.store.get_user(caller.0).await?;
    Ok(Json(user.into()))
}

pub(super) async fn list_projects(
    State(api): State<Api>,
    caller: Caller,
) -> Result<Json<ProjectList>> {
    let projects = api.inner.store.list_projects(caller.0).await?;
    Ok(Json(ProjectList {
        items: views::records::views(projects),
    }))
}

pub(super) async fn create_project(
    State(api): State<Api>,
    caller: Caller,
    Body(body): Body<NewProject>,
) -> Result<(StatusCode, Json<Project>)> {
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
    Ok((StatusCode::CREATED, Json(project.into())))
}

pub(super) async fn get_project(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Project>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    Ok(Json(project.into()))
}

// ---- settings ----

pub(super) async fn get_settings(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProjectSettings>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let settings = api.inner.store.get_project_settings(project.id).await?;
    Ok(Json(settings.into()))
}

pub(super) async fn put_settings(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<ProjectSettingsUpdate>,
) -> Result<Json<ProjectSettings>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    let settings = api
        .inner
        .vault
        .put_project_settings(project.id, body.into())
        .await?;
    Ok(Json(settings.into()))
}

// ---- keys ----

async fn list_keys(api: &Api, owner: KeyOwner) -> Result<Json<KeyList>> {
    let keys = api.inner.store.list_provider_keys(owner).await?;
    Ok(Json(KeyList {
        items: views::records::views(keys),
    }))
}

async fn set_key(
    api: &Api,
    owner: KeyOwner,
    provider: Provider,
    body: KeyValue,
) -> Result<Json<Key>> {
    let value = body.value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid("value", "the key must not be empty"));
    }
    let key = api.inner.vault.put(owner, provider, value).save().await?;
    Ok(Json(key.into()))
}

async fn delete_key(api: &Api, owner: KeyOwner, provider: Provider) -> Result<StatusCode> {
    api.inner.store.delete_provider_key(owner, provider).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_user_keys(
    State(api): State<Api>,
    caller: Caller,
) -> Result<Json<KeyList>> {
    list_keys(&api, KeyOwner::User(caller.0)).await
}

pub(super) async fn set_user_key(
    State(api): State<Api>,
    caller: Caller,
    Path(p): Path<String>,
    Body(body): Body<KeyValue>,
) -> Result<Json<Key>> {
    set_key(&api, KeyOwner::User(caller.0), provider(&p)?, body).await
}

pub(super) async fn delete_user_key(
    State(api): State<Api>,
    caller: Caller,
    Path(p): Path<String>,
) -> Result<StatusCode> {
    delete_key(&api, KeyOwner::User(caller.0), provider(&p)?).await
}

pub(super) async fn list_project_keys(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<KeyList>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    list_keys(&api, KeyOwner::Project(project.id)).await
}

pub(super) async fn set_project_key(
    State(api): State<Api>,
    caller: Caller,
    Path((id, p)): Path<(String, String)>,
    Body(body): Body<KeyValue>,
) -> Result<Json<Key>> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    set_key(&api, KeyOwner::Project(project.id), provider(&p)?, body).await
}

pub(super) async fn delete_project_key(
    State(api): State<Api>,
    caller: Caller,
    Path((id, p)): Path<(String, String)>,
) -> Result<StatusCode> {
    let project = api.owned_project(caller, project_id(&id)?).await?;
    delete_key(&api, KeyOwner::Project(project.id), provider(&p)?).await
}
