//! `POST /v1/github/webhook`: GitHub's deliveries, authenticated by their signature.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use courier_orchestrator::pr::{WebhookEvent, handle_webhook, verify_signature};

use crate::views::{WebhookOutcome, WebhookResult};
use crate::{Api, ApiError, Result};

/// The setting that turns the webhook on, named in the 503 answer.
const WEBHOOK_SECRET_SETTING: &str = "COURIER_GITHUB_WEBHOOK_SECRET";

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies the delivery's signature over the raw body, reads it, and marks the
/// sandboxes of a merged pull request `merged`.
pub(super) async fn github_webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookResult>> {
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
        WebhookEvent::Ping => WebhookOutcome::Ping,
        WebhookEvent::PullRequestMerged { .. } => WebhookOutcome::Merged,
        WebhookEvent::Ignored { .. } => WebhookOutcome::Ignored,
    };
    tracing::info!(
        delivery = header_str(&headers, "x-github-delivery").unwrap_or("-"),
        event = event_name.unwrap_or("-"),
        outcome = outcome.as_str(),
        marked = marked.len(),
        "GitHub webhook delivery"
    );
    Ok(Json(WebhookResult {
        event: event_name.map(str::to_owned),
        outcome,
        marked,
    }))
}
