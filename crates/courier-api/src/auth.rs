//! Request extractors: the authenticated caller, JSON bodies with structured errors, and
//! the ownership checks every route makes.

use std::sync::atomic::Ordering;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use courier_store::{Project, ProjectId, Sandbox, SandboxId, StoreError, UserId};
use serde::de::DeserializeOwned;

use crate::{Api, ApiError, Result};

/// The caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(pub(crate) UserId);

impl FromRequestParts<Api> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self> {
        let fail = |why| {
            api.inner
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            ApiError::Unauthorized(why)
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(fail("missing bearer token (Authorization: Bearer …)"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| fail("malformed Authorization header: expected `Bearer <token>`"))?;
        match api.inner.tokens.authenticate(token).await? {
            Some(user) => Ok(Caller(user)),
            None => Err(fail("unknown bearer token")),
        }
    }
}

/// A JSON body whose rejections are structured [`ApiError`]s (400, 413, 415 as 400).
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Api> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Api) -> Result<Self> {
        match axum::Json::<T>::from_request(req, api).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_error(rejection, api.inner.config.body_limit)),
        }
    }
}

fn json_error(rejection: JsonRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde names the field in its message (`missing field `prompt``, `memory_mb:
            // invalid type`); keep that text, it never holds secret values.
            ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text()))
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

impl Api {
    /// The project, if the caller owns it: 404 when unknown, 403 when someone else's.
    pub(crate) async fn owned_project(&self, caller: Caller, id: ProjectId) -> Result<Project> {
        let project = self.inner.store.get_project(id).await?;
        if project.user_id != caller.0 {
            return Err(ApiError::Forbidden {
                entity: "project",
                id: id.to_string(),
            });
        }
        Ok(project)
    }

    /// The sandbox, if the caller owns its project: 404 when unknown, 403 otherwise.
    pub(crate) async fn owned_sandbox(&self, caller: Caller, id: SandboxId) -> Result<Sandbox> {
        let sandbox = self.inner.store.get_sandbox(id).await?;
        let owner = match self.inner.store.get_project(sandbox.project_id).await {
            Ok(p) => p.user_id,
            Err(StoreError::NotFound { .. }) => sandbox.user_id,
            Err(e) => return Err(e.into()),
        };
        if owner != caller.0 {
            return Err(ApiError::Forbidden {
                entity: "sandbox",
                id: id.to_string(),
            });
        }
        Ok(sandbox)
    }
}
