//! Requests that change a sandbox, handled by the replica that follows it.
//!
//! In a cluster ([`ClusterLink`]) one replica follows each live sandbox (its agent's
//! output, its queue of follow-ups, its timeouts). A follow-up, kill, pause, resume,
//! restore, purge or delete that reaches another replica is forwarded to that owner over
//! HTTP with the caller's own headers (the owner checks the token again); a sandbox whose
//! owner died is taken over here first. Forwarded requests carry the cluster's forwarding
//! secret, so a client cannot make a replica skip the forwarding with a header of its own.
//! A project's kill-all sends each of its sandboxes' kills to that sandbox's owner.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use courier_orchestrator::keys::MasterKey;
use courier_store::{Cluster, Owner, ProjectId, SandboxId};

use crate::{Api, ApiError};

/// The header a forwarded request carries: the cluster's forwarding secret.
const FORWARDED: HeaderName = HeaderName::from_static("x-courier-forwarded");
/// How many times a request whose owner does not answer is routed again (the owner may
/// have just died: its sandboxes are then claimable within moments).
const ATTEMPTS: u32 = 20;
/// Pause between those attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What a replica's API needs to route requests to owners.
#[derive(Clone)]
pub struct ClusterLink {
    cluster: Arc<Cluster>,
    secret: HeaderValue,
    client: reqwest::Client,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("replica", &self.cluster.me().id)
            .finish_non_exhaustive()
    }
}

impl ClusterLink {
    /// Routes over `cluster`. Requests forwarded between replicas carry a secret derived
    /// from the master key every replica shares (and never from anything a client sees).
    pub fn new(cluster: Arc<Cluster>, master: &MasterKey) -> crate::Result<ClusterLink> {
        use sha2::Digest as _;
        let mut digest = sha2::Sha256::new();
        digest.update(b"courier replica forwarding\0");
        digest.update(master.to_base64().as_bytes());
        let mut secret = HeaderValue::from_str(&hex::encode(digest.finalize()))
            .map_err(|_| ApiError::invalid("secret", "must be printable ASCII"))?;
        secret.set_sensitive(true);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ApiError::invalid("client", e.to_string()))?;
        Ok(ClusterLink {
            cluster,
            secret,
            client,
        })
    }
}

/// The sandbox a request changes, if it is one of the owner's requests.
fn changed_sandbox(method: &Method, path: &str) -> Option<SandboxId> {
    let rest = path.strip_prefix("/v1/sandboxes/")?;
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let changes = matches!(
        (method, action),
        (&Method::DELETE, "")
            | (
                &Method::POST,
                "kill" | "pause" | "resume" | "restore" | "purge" | "messages"
            )
    );
    if !changes {
        return None;
    }
    id.parse().ok()
}

/// Middleware: hands a sandbox-changing request to its owner replica.
pub(crate) async fn to_owner(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(link) = api.inner.config.cluster.clone() else {
        return next.run(req).await;
    };
    let Some(sandbox) = changed_sandbox(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if req.headers().get(&FORWARDED) == Some(&link.secret) {
        // Sent by another replica that found this one the owner.
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, api.inner.config.body_limit).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::invalid("body", "larger than the request limit").into_response();
        }
    };
    at_owner(&api, &link, sandbox, parts, body, |req| next.run(req)).await
}

/// `POST /v1/projects/{id}/kill-all` in a cluster: each live sandbox of `project` is
/// killed by the replica that follows it (as `POST /v1/sandboxes/{id}/kill` with the
/// caller's own headers, so the owner checks the caller again), never behind its
/// owner's back while that owner streams its agent or runs a follow-up. How many were
/// killed; one that ended meanwhile is not counted.
pub(crate) async fn kill_project(
    api: &Api,
    link: &ClusterLink,
    headers: &HeaderMap,
    project: ProjectId,
) -> crate::Result<usize> {
    let mut killed = 0;
    for sandbox in api.inner.orchestrator.live_sandboxes_of(project).await? {
        let id = sandbox.id;
        let mut request = Request::new(Body::empty());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = format!("/v1/sandboxes/{id}/kill")
            .parse()
            .map_err(|_| ApiError::invalid("id", "not a sandbox id"))?;
        for (name, value) in headers {
            if name != axum::http::header::CONTENT_LENGTH {
                request.headers_mut().append(name, value.clone());
            }
        }
        let (parts, _) = request.into_parts();
        let here = |_| async move {
            match api
                .inner
                .orchestrator
                .kill(id, Some("project's sandboxes killed".into()))
                .await
            {
                Ok(_) => StatusCode::OK.into_response(),
                Err(e) => ApiError::from(e).into_response(),
            }
        };
        let answer = at_owner(api, link, id, parts, Bytes::new(), here).await;
        match answer.status() {
            StatusCode::OK => killed += 1,
            // Ended (or deleted) since it was listed: nothing left to kill.
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => {}
            status => {
                return Err(ApiError::Upstream(format!(
                    "killing sandbox {id} at the replica that follows it answered {status}"
                )));
            }
        }
    }
    Ok(killed)
}

/// Runs a request about `sandbox` where it belongs: `here` on this replica when it
/// follows the sandbox (or nobody does, once orphans are taken over), else forwarded to
/// the owner replica and its answer relayed.
async fn at_owner<F, Fut>(
    api: &Api,
    link: &ClusterLink,
    sandbox: SandboxId,
    parts: Parts,
    body: Bytes,
    here: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    for _ in 0..ATTEMPTS {
        let owner = match link.cluster.owner(sandbox).await {
            Ok(owner) => owner,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let owner = match owner {
            Owner::Me => {
                return here(Request::from_parts(parts, Body::from(body))).await;
            }
            Owner::Nobody => {
                // Its replica died: take it (and any other orphan) over here, then act.
                if let Err(e) = api.inner.orchestrator.take_over().await {
                    tracing::warn!(sandbox = %sandbox, error = %e, "could not take sandboxes over");
                }
                match link.cluster.owner(sandbox).await {
                    // A sandbox nobody follows (ended, or not claimable yet) is the store's
                    // alone: any replica answers for it.
                    Ok(Owner::Me | Owner::Nobody) => {
                        return here(Request::from_parts(parts, Body::from(body))).await;
                    }
                    Ok(Owner::Replica(replica)) => replica,
                    Err(e) => return ApiError::from(e).into_response(),
                }
            }
            Owner::Replica(replica) => replica,
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let mut forward = link
            .client
            .request(parts.method.clone(), format!("{}{path}", owner.url))
            .body(body.clone());
        for (name, value) in &parts.headers {
            if name != axum::http::header::HOST && name != FORWARDED {
                forward = forward.header(name, value);
            }
        }
        forward = forward.header(&FORWARDED, link.secret.clone());
        match forward.send().await {
            Ok(answer) => return relay(answer).await,
            Err(e) => {
                tracing::info!(sandbox = %sandbox, owner = %owner.id, error = %e, "owner replica unreachable; routing again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the replica following this sandbox does not answer; try again",
    )
        .into_response()
}

/// The owner's answer, as this replica's.
async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let headers = answer.headers().clone();
    match answer.bytes().await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != axum::http::header::TRANSFER_ENCODING
                    && name != axum::http::header::CONNECTION
                    && name != axum::http::header::CONTENT_LENGTH
                {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the owner replica's answer was cut off: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_of_a_sandbox_go_to_its_owner() {
        let id = SandboxId::new();
        for (method, path, routed) in [
            (Method::POST, format!("/v1/sandboxes/{id}/messages"), true),
            (Method::POST, format!("/v1/sandboxes/{id}/kill"), true),
            (Method::POST, format!("/v1/sandboxes/{id}/pause"), true),
            (Method::POST, format!("/v1/sandboxes/{id}/resume"), true),
            (Method::DELETE, format!("/v1/sandboxes/{id}"), true),
            (Method::GET, format!("/v1/sandboxes/{id}/messages"), false),
            (Method::GET, format!("/v1/sandboxes/{id}/events"), false),
            (Method::GET, format!("/v1/sandboxes/{id}"), false),
            (Method::POST, "/v1/sandboxes".to_owned(), false),
            (
                Method::POST,
                "/v1/sandboxes/not-an-id/kill".to_owned(),
                false,
            ),
        ] {
            assert_eq!(
                changed_sandbox(&method, &path),
                routed.then_some(id),
                "{method} {path}"
            );
        }
    }
}
