//! `/llm/{provider}/…`: the provider's API with the run token swapped for the real key.
//!
//! Only toward the provider's configured upstream (the path is appended to it; no URL the
//! sandbox chooses is ever connected to), answers streamed through as they arrive, usage
//! read off them on the way ([`crate::usage`]), and a run whose budget is spent refused
//! before anything is sent.

use std::pin::Pin;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::usage::{Api, TokenUsage, UsageTap};
use crate::{Gateway, Provider, ProviderCredential, Refusal};

/// The largest request body forwarded (a long conversation with images stays well
/// under it).
const MAX_REQUEST: usize = 64 << 20;

/// The beta flag Anthropic requires with OAuth access tokens.
const ANTHROPIC_OAUTH_BETA: &str = "oauth-2025-04-20";

/// A refusal in the provider's own error shape, so the CLI shows its message.
fn refuse(provider: Option<Provider>, refusal: &Refusal) -> Response {
    let message = format!("courier gateway: {refusal}");
    let body = match provider {
        Some(Provider::Anthropic) => {
            let kind = match refusal.status() {
                StatusCode::UNAUTHORIZED => "authentication_error",
                StatusCode::FORBIDDEN => "permission_error",
                StatusCode::BAD_REQUEST => "invalid_request_error",
                _ => "api_error",
            };
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
        _ => {
            let code = match refusal {
                Refusal::BudgetSpent { .. } => "budget_spent",
                Refusal::NoToken | Refusal::NoProof | Refusal::RunEnded { .. } => "invalid_api_key",
                _ => "courier_gateway",
            };
            json!({ "error": { "message": message, "type": code, "code": code } })
        }
    };
    (refusal.status(), axum::Json(body)).into_response()
}

pub(crate) async fn forward(
    State(gateway): State<Gateway>,
    Path((provider, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(provider) = Provider::parse(&provider) else {
        let refusal = Refusal::BadRequest(format!(
            "unknown provider {provider:?}; the gateway serves anthropic, openai and openrouter"
        ));
        return refuse(None, &refusal);
    };
    match forward_to(&gateway, provider, &rest, request).await {
        Ok(response) => response,
        Err(refusal) => {
            tracing::info!(provider = provider.as_str(), reason = %refusal, "gateway refused an LLM request");
            refuse(Some(provider), &refusal)
        }
    }
}

async fn forward_to(
    gateway: &Gateway,
    provider: Provider,
    rest: &str,
    request: Request,
) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    if parts.headers.contains_key(http::header::UPGRADE) {
        // Codex tries a WebSocket first and falls back to HTTP on 426; usage is only
        // read off HTTP answers.
        return Ok((
            StatusCode::UPGRADE_REQUIRED,
            "the gateway serves plain HTTP only",
        )
            .into_response());
    }
    let caller = gateway.caller(&parts.headers).await?;
    if let Some(budget) = caller.grant.budget.filter(|b| b.spent()) {
        return Err(Refusal::BudgetSpent {
            used: budget.used,
            budget: budget.limit,
        });
    }
    let credential = caller
        .grant
        .credential(provider)
        .cloned()
        .ok_or(Refusal::NoKey {
            provider: provider.as_str(),
        })?;
    let path = format!("/{}", rest.trim_start_matches('/'));
    let api = Api::of_path(&path);
    let upstream = &gateway.inner.upstreams;
    let root = match provider {
        Provider::Anthropic => &upstream.anthropic,
        Provider::OpenAi => &upstream.openai,
        Provider::OpenRouter => &upstream.openrouter,
    };
    let mut url = format!("{}{path}", root.trim_end_matches('/'));
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut body = axum::body::to_bytes(body, MAX_REQUEST)
        .await
        .map_err(|e| Refusal::BadRequest(format!("reading the request body: {e}")))?;
    if api == Some(Api::Chat) {
        body = with_stream_usage(body);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &parts.headers {
        if crate::headers::forwardable(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    set_credential(&mut headers, provider, &credential)?;
    let answer = gateway
        .inner
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            Refusal::Upstream(format!("{} API: {}", provider.as_str(), e.without_url()))
        })?;

    let status = answer.status();
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if crate::headers::answer_header(name) {
            response = response.header(name, value);
        }
    }
    let content_type = answer
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let tap = api
        .filter(|_| status.is_success())
        .map(|api| UsageTap::new(api, &content_type));
    let tapped = Tapped {
        inner: Box::pin(answer.bytes_stream()),
        tap,
        report: Some(Report {
            grants: gateway.inner.grants.clone(),
            run: caller.run,
            provider,
        }),
    };
    response
        .body(Body::from_stream(tapped.into_stream()))
        .map_err(|e| Refusal::Internal(e.to_string()))
}

/// Asks a streamed chat completion to end with its usage (OpenRouter and OpenAI send it
/// only when asked). Bodies that are not a JSON object pass unchanged.
fn with_stream_usage(body: Bytes) -> Bytes {
    let Ok(mut request) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return body;
    }
    let Some(object) = request.as_object_mut() else {
        return body;
    };
    let options = object.entry("stream_options").or_insert_with(|| json!({}));
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".into(), Value::Bool(true));
    }
    serde_json::to_vec(&request)
        .map(Bytes::from)
        .unwrap_or(body)
}

fn set_credential(
    headers: &mut reqwest::header::HeaderMap,
    provider: Provider,
    credential: &ProviderCredential,
) -> Result<(), Refusal> {
    let value = |text: String| {
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            Refusal::Internal(format!(
                "the {} key is not a valid header value",
                provider.as_str()
            ))
        })?;
        value.set_sensitive(true);
        Ok::<_, Refusal>(value)
    };
    match (provider, credential) {
        (Provider::Anthropic, ProviderCredential::ApiKey(key)) => {
            headers.insert("x-api-key", value(key.expose().to_owned())?);
        }
        (Provider::Anthropic, ProviderCredential::OAuth(token)) => {
            headers.insert(
                http::header::AUTHORIZATION,
                value(format!("Bearer {}", token.expose()))?,
            );
            let beta = headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if !beta.split(',').any(|b| b.trim() == ANTHROPIC_OAUTH_BETA) {
                let joined = if beta.is_empty() {
                    ANTHROPIC_OAUTH_BETA.to_owned()
                } else {
                    format!("{beta},{ANTHROPIC_OAUTH_BETA}")
                };
                headers.insert(
                    "anthropic-beta",
                    HeaderValue::from_str(&joined).map_err(|_| {
                        Refusal::BadRequest("anthropic-beta is not a header value".into())
                    })?,
                );
            }
        }
        (_, ProviderCredential::ApiKey(key) | ProviderCredential::OAuth(key)) => {
            headers.insert(
                http::header::AUTHORIZATION,
                value(format!("Bearer {}", key.expose()))?,
            );
        }
    }
    Ok(())
}

/// Where an answer's usage goes.
struct Report {
    grants: std::sync::Arc<dyn crate::Grants>,
    run: String,
    provider: Provider,
}

impl Report {
    fn send(self, usage: Option<TokenUsage>) -> Option<impl std::future::Future<Output = ()>> {
        let usage = usage.filter(|u| u.total() > 0)?;
        Some(async move {
            self.grants
                .record_usage(&self.run, self.provider, usage)
                .await
        })
    }
}

/// An answer's body passed through while its usage is read.
///
/// The usage is recorded before the body's end reaches the client, so the run's next
/// request already sees it (a budget is enforced exactly, not one answer late). A client
/// that hangs up mid-answer was still billed for what the provider sent: the usage read
/// so far is recorded in the background.
struct Tapped {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    tap: Option<UsageTap>,
    report: Option<Report>,
}

impl Tapped {
    fn finish(&mut self) -> Option<impl std::future::Future<Output = ()> + use<>> {
        let usage = self.tap.take().and_then(UsageTap::finish);
        self.report.take()?.send(usage)
    }

    fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut tapped = state?;
            match tapped.inner.as_mut().next().await {
                Some(Ok(bytes)) => {
                    if let Some(tap) = &mut tapped.tap {
                        tap.feed(&bytes);
                    }
                    Some((Ok(bytes), Some(tapped)))
                }
                Some(Err(e)) => {
                    if let Some(record) = tapped.finish() {
                        record_surely(record).await;
                    }
                    Some((Err(std::io::Error::other(e.without_url())), None))
                }
                None => {
                    if let Some(record) = tapped.finish() {
                        record_surely(record).await;
                    }
                    None
                }
            }
        })
    }
}

/// Records an answer's usage in a task of its own, awaited: the answer's end waits for
/// it (the run's next request sees it), but a client that hangs up in the meantime drops
/// only the wait, not the recording. Codex stops reading at `response.completed` and
/// closes the connection before the body's end, which dropped an inline recording and
/// left its run unbilled.
async fn record_surely(record: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let _ = runtime.spawn(record).await;
        }
        Err(_) => record.await,
    }
}

impl Drop for Tapped {
    fn drop(&mut self) {
        if let Some(record) = self.finish()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grant, Grants};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Grants whose billing takes a while (a loaded database), recording what it bills.
    #[derive(Default)]
    struct SlowBilling(Mutex<Vec<(String, TokenUsage)>>);

    #[async_trait::async_trait]
    impl Grants for SlowBilling {
        async fn grant(&self, run: &str) -> Result<Grant, Refusal> {
            Err(Refusal::RunEnded { run: run.into() })
        }
        async fn record_usage(&self, run: &str, _: Provider, usage: TokenUsage) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.0.lock().unwrap().push((run.to_owned(), usage));
        }
    }

    #[tokio::test]
    async fn a_client_hanging_up_at_the_answers_end_is_still_billed() {
        // What Codex does: it reads up to `response.completed` and closes the connection
        // while the gateway is recording the usage. A run that could stop its billing
        // that way would spend without limit; the recording must outlive the hang-up.
        let billing = Arc::new(SlowBilling::default());
        let completed = concat!(
            "data: {\"type\":\"response.completed\",\"response\":{\"usage\":",
            "{\"input_tokens\":1500,\"output_tokens\":25,",
            "\"input_tokens_details\":{\"cached_tokens\":600}}}}\n\n"
        );
        let chunks: Vec<reqwest::Result<Bytes>> =
            vec![Ok(Bytes::from_static(completed.as_bytes()))];
        let tapped = Tapped {
            inner: Box::pin(futures::stream::iter(chunks)),
            tap: Some(UsageTap::new(Api::Responses, "text/event-stream")),
            report: Some(Report {
                grants: billing.clone(),
                run: "run-1".into(),
                provider: Provider::OpenAi,
            }),
        };
        let mut body = Box::pin(tapped.into_stream());
        assert!(body.next().await.is_some(), "the answer's bytes pass");
        // The end is being waited for (the recording under way) when the client leaves.
        let end = tokio::time::timeout(Duration::from_millis(50), body.next()).await;
        assert!(end.is_err(), "the end waits for the recording");
        drop(body);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let billed = billing.0.lock().unwrap().clone();
        assert_eq!(
            billed,
            vec![(
                "run-1".to_owned(),
                TokenUsage {
                    input: 900,
                    output: 25,
                    cache_read: 600,
                    cache_write: 0
                }
            )],
            "billed once, after the hang-up"
        );
    }

    #[test]
    fn streamed_chat_requests_ask_for_usage_and_others_pass_unchanged() {
        let asked = with_stream_usage(Bytes::from_static(br#"{"stream":true,"model":"m"}"#));
        let asked: Value = serde_json::from_slice(&asked).unwrap();
        assert_eq!(asked["stream_options"]["include_usage"], true);
        assert_eq!(asked["model"], "m");
        for body in [&br#"{"stream":false}"#[..], b"not json", b"[1]"] {
            assert_eq!(with_stream_usage(Bytes::copy_from_slice(body)), body);
        }
    }
}
