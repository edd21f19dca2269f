//! The crate's one error type and its mapping to HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use courier_orchestrator::OrchestratorError;
use courier_store::StoreError;

use crate::views::{ErrorBody, ErrorDetail};

/// Everything an API request can fail with; each variant is one HTTP status and one
/// machine-readable `code` in the JSON body `{"error": {"code", "message", "field"?}}`.
///
/// Messages never contain secrets: provider keys and tokens are not echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one that is not known (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A GitHub webhook delivery whose `X-Hub-Signature-256` is missing or does not match
    /// its body under the configured secret (401 `bad_signature`). The message says which;
    /// it never holds the secret or the expected signature.
    #[error("{0}")]
    BadSignature(String),
    /// The record exists but belongs to another user (403 `forbidden`).
    #[error("{entity} {id} belongs to another user")]
    Forbidden {
        /// What was asked for, e.g. `sandbox`.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The record does not exist (404 `not_found`).
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked up.
        entity: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// No route matches the path (404 `no_route`).
    #[error("no route for {0}")]
    NoRoute(String),
    /// A request field is missing or out of range (422 `invalid`), naming the field.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field, e.g. `memory_mb`.
        field: String,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// The tool needs a provider key that neither the project nor the user has (422
    /// `missing_provider_key`, field `keys`).
    #[error("{0}")]
    MissingProviderKey(String),
    /// The body is not the expected JSON (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the configured limit (413 `payload_too_large`).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The operation contradicts the current state (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// Too many sandbox creations (429 `rate_limited`, with `Retry-After`).
    #[error("too many sandboxes created: retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until one more creation is allowed.
        retry_after_secs: u64,
    },
    /// The user or the project has as many live sandboxes as its quota allows (429
    /// `quota_exceeded`); the message names the quota, its value and the count.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The sandbox provider is full (429 `provider_at_capacity`): its server-wide
    /// capacity is reached; the message is the provider's (naming its limit).
    #[error("the sandbox provider is at capacity: {0}")]
    ProviderAtCapacity(String),
    /// The sandbox provider or a setup step failed (502 `upstream`).
    #[error("{0}")]
    Upstream(String),
    /// The server is not ready or is shutting down (503 `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500 `internal`); the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

/// Shorthand for results of API operations.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } | ApiError::MissingProviderKey(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. }
            | ApiError::QuotaExceeded(_)
            | ApiError::ProviderAtCapacity(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::NoRoute(_) => "no_route",
            ApiError::Invalid { .. } => "invalid",
            ApiError::MissingProviderKey(_) => "missing_provider_key",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExceeded(_) => "quota_exceeded",
            ApiError::ProviderAtCapacity(_) => "provider_at_capacity",
            ApiError::Upstream(_) => "upstream",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// An `invalid` error naming its field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } => Some(field),
            ApiError::MissingProviderKey(_) => Some("keys"),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field: self.field().map(str::to_owned),
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"courier\""),
            );
        }
        response
    }
}

/// What a caller over its sandbox quota is told: the quota (and the setting that sets
/// it), its value, the count, and the way out.
fn quota_message(scope: courier_store::QuotaScope, limit: u32, in_use: i64) -> String {
    let (whose, setting, have) = match scope {
        courier_store::QuotaScope::User => ("a user", "max_sandboxes_per_user", "you have"),
        courier_store::QuotaScope::Project => {
            ("a project", "max_sandboxes_per_project", "this project has")
        }
    };
    format!(
        "sandbox quota reached: {whose} may have {limit} live sandboxes (creating, running \
         or paused) at once ({setting}) and {have} {in_use}; kill one to start another"
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, id } => ApiError::NotFound { entity, id },
            StoreError::InvalidTransition { .. }
            | StoreError::InvalidRunTransition { .. }
            | StoreError::Conflict(_) => ApiError::Conflict(e.to_string()),
            StoreError::InvalidInput { field, message } => ApiError::invalid(field, message),
            StoreError::QuotaExceeded {
                scope,
                limit,
                in_use,
            } => ApiError::QuotaExceeded(quota_message(scope, limit, in_use)),
            StoreError::Database(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::InvalidConfig { field, message } => {
                ApiError::invalid(field, message)
            }
            OrchestratorError::MissingProviderKey { .. } => {
                ApiError::MissingProviderKey(e.to_string())
            }
            OrchestratorError::InvalidState { .. } | OrchestratorError::AgentGone { .. } => {
                ApiError::Conflict(e.to_string())
            }
            OrchestratorError::TemplateMissing { .. } => {
                ApiError::invalid("template_id", e.to_string())
            }
            OrchestratorError::Store(s) => s.into(),
            OrchestratorError::Provider(courier_e2b::Error::RateLimited { message, .. }) => {
                ApiError::ProviderAtCapacity(message)
            }
            OrchestratorError::Tools(t) => match t {
                courier_tools::ToolsError::InvalidValue { field, .. }
                | courier_tools::ToolsError::InvalidName { field, .. }
                | courier_tools::ToolsError::InvalidFile { field, .. } => {
                    ApiError::invalid(field, t.to_string())
                }
                courier_tools::ToolsError::MissingProviderKey { .. } => {
                    ApiError::MissingProviderKey(t.to_string())
                }
            },
            OrchestratorError::Setup { .. }
            | OrchestratorError::Provider(_)
            | OrchestratorError::Git { .. }
            | OrchestratorError::GitHub { .. }
            | OrchestratorError::LlmApi { .. }
            | OrchestratorError::LlmTimeout { .. }
            | OrchestratorError::LlmMalformed(_)
            | OrchestratorError::Http(_) => ApiError::Upstream(e.to_string()),
            OrchestratorError::RemoteUrl { .. } => ApiError::invalid("repo_url", e.to_string()),
            OrchestratorError::Webhook(_) => ApiError::BadRequest(e.to_string()),
            OrchestratorError::MasterKey(_)
            | OrchestratorError::KeyDecryption { .. }
            | OrchestratorError::Io(_) => ApiError::Internal(e.to_string()),
            #[allow(unreachable_patterns)]
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_capacity_refusals_are_429_naming_the_limit() {
        let quota: ApiError = StoreError::QuotaExceeded {
            scope: courier_store::QuotaScope::User,
            limit: 20,
            in_use: 20,
        }
        .into();
        assert_eq!(quota.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(quota.code(), "quota_exceeded");
        let message = quota.to_string();
        assert!(
            message.contains("max_sandboxes_per_user") && message.contains("20"),
            "{message}"
        );
        // A courier-sandboxd at capacity answers 429: the caller is told so, not 502.
        let full: ApiError = OrchestratorError::Provider(courier_e2b::Error::RateLimited {
            message: "server at capacity: the sandbox limit (max_sandboxes) is 2".into(),
            retry_after: None,
        })
        .into();
        assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(full.code(), "provider_at_capacity");
        assert!(full.to_string().contains("max_sandboxes"), "{full}");
    }
}
