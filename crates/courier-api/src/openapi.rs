//! The route table and the OpenAPI 3.1 document served at `/openapi.json`.
//!
//! The document's schemas are derived from the [views](crate::views) the handlers answer
//! with; its paths come from [`ROUTES`], each naming its body and answer by view type.
//! The crate's tests check that every route in the table is served by the router, that
//! the router serves nothing the table lacks, that the document is valid OpenAPI 3.1 and
//! that every route's answers match their documented schemas.

use std::borrow::Cow;

use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Info, OpenApi as Document};
use utoipa::{OpenApi, ToSchema};

use crate::views;

/// The name of a view's derived schema under `#/components/schemas`.
pub type SchemaName = fn() -> Cow<'static, str>;

/// The schema name of view `T`.
const fn schema<T: ToSchema>() -> Option<SchemaName> {
    Some(T::name)
}

/// What an operation answers with on success.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// No body (204).
    Empty,
    /// A JSON body: the view whose schema is named.
    Json(SchemaName),
    /// Any JSON object (this document).
    AnyJson,
    /// Plain text (metrics).
    Text,
    /// The dashboard page.
    Html,
    /// Server-sent events; each event's `data` is one of the [`views::events`].
    EventStream,
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method, lower case (`get`, `post`, …).
    pub method: &'static str,
    /// Path template with `{param}` segments.
    pub path: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Grouping tag.
    pub tag: &'static str,
    /// Whether a bearer token is required.
    pub auth: bool,
    /// The request body's view, if any.
    pub body: Option<SchemaName>,
    /// Success status.
    pub ok: u16,
    /// The success answer.
    pub response: Answer,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<SchemaName>,
    ok: u16,
    response: Option<SchemaName>,
) -> Route {
    Route {
        method,
        path,
        summary,
        tag,
        auth: true,
        body,
        ok,
        response: match response {
            Some(name) => Answer::Json(name),
            None => Answer::Empty,
        },
    }
}

const fn open(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    response: Answer,
) -> Route {
    Route {
        method,
        path,
        summary,
        tag: "service",
        auth: false,
        body: None,
        ok: 200,
        response,
    }
}

/// The GitHub webhook's path: open (GitHub sends no token), authenticated by the
/// delivery's `X-Hub-Signature-256`.
pub const GITHUB_WEBHOOK_PATH: &str = "/v1/github/webhook";

/// Every operation the server answers.
pub const ROUTES: &[Route] = &[
    open("get", "/", "The dashboard page.", Answer::Html),
    open(
        "get",
        "/healthz",
        "Liveness: the process answers.",
        Answer::Json(<views::Status as ToSchema>::name),
    ),
    open(
        "get",
        "/readyz",
        "Readiness: the store answers and no shutdown is under way.",
        Answer::Json(<views::Status as ToSchema>::name),
    ),
    open(
        "get",
        "/metrics",
        "Prometheus metrics (text format).",
        Answer::Text,
    ),
    open("get", "/openapi.json", "This document.", Answer::AnyJson),
    r(
        "get",
        "/v1/me",
        "The caller.",
        "users",
        None,
        200,
        schema::<views::User>(),
    ),
    r(
        "get",
        "/v1/projects",
        "The caller's projects.",
        "projects",
        None,
        200,
        schema::<views::ProjectList>(),
    ),
    r(
        "post",
        "/v1/projects",
        "Creates a project.",
        "projects",
        schema::<views::NewProject>(),
        201,
        schema::<views::Project>(),
    ),
    r(
        "get",
        "/v1/projects/{id}",
        "A project, with its active-sandbox counter.",
        "projects",
        None,
        200,
        schema::<views::Project>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/settings",
        "The project's settings, env var values masked.",
        "projects",
        None,
        200,
        schema::<views::ProjectSettings>(),
    ),
    r(
        "put",
        "/v1/projects/{id}/settings",
        "Replaces the project's settings (env var values stored encrypted; a null value keeps the stored one).",
        "projects",
        schema::<views::ProjectSettingsUpdate>(),
        200,
        schema::<views::ProjectSettings>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/keys",
        "The project's provider keys, masked.",
        "keys",
        None,
        200,
        schema::<views::KeyList>(),
    ),
    r(
        "put",
        "/v1/projects/{id}/keys/{provider}",
        "Sets the project's key for a provider.",
        "keys",
        schema::<views::KeyValue>(),
        200,
        schema::<views::Key>(),
    ),
    r(
        "delete",
        "/v1/projects/{id}/keys/{provider}",
        "Deletes the project's key for a provider.",
        "keys",
        None,
        204,
        None,
    ),
    r(
        "post",
        "/v1/projects/{id}/kill-all",
        "Kills every live sandbox of the project.",
        "sandboxes",
        None,
        200,
        schema::<views::KillAll>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/usage",
        "The project's usage totals.",
        "usage",
        None,
        200,
        schema::<views::Usage>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/learnings",
        "The project's learnings, oldest first, each with its evidence.",
        "learnings",
        None,
        200,
        schema::<views::LearningList>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/learning-versions",
        "The project's compiled learning versions.",
        "learnings",
        None,
        200,
        schema::<views::LearningVersionList>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/personas",
        "The project's personas, by name.",
        "personas",
        None,
        200,
        schema::<views::PersonaList>(),
    ),
    r(
        "post",
        "/v1/projects/{id}/personas",
        "Creates a persona (tool, model and effort checked; 409 for a name the project already has).",
        "personas",
        schema::<views::PersonaRequest>(),
        201,
        schema::<views::Persona>(),
    ),
    r(
        "get",
        "/v1/personas/{id}",
        "A persona.",
        "personas",
        None,
        200,
        schema::<views::Persona>(),
    ),
    r(
        "put",
        "/v1/personas/{id}",
        "Replaces a persona whole.",
        "personas",
        schema::<views::PersonaRequest>(),
        200,
        schema::<views::Persona>(),
    ),
    r(
        "delete",
        "/v1/personas/{id}",
        "Deletes a persona.",
        "personas",
        None,
        204,
        None,
    ),
    r(
        "get",
        "/v1/projects/{id}/workflow-runs",
        "The project's workflow runs, newest first.",
        "workflows",
        None,
        200,
        schema::<views::WorkflowRunList>(),
    ),
    r(
        "post",
        "/v1/projects/{id}/workflow-runs",
        "Starts a workflow run (designer, checker and optimizer steps; every step's tool, model, template and persona checked first).",
        "workflows",
        schema::<views::NewWorkflowRun>(),
        201,
        schema::<views::WorkflowRun>(),
    ),
    r(
        "get",
        "/v1/workflow-runs/{id}",
        "A workflow run with its steps, sandboxes and summed usage.",
        "workflows",
        None,
        200,
        schema::<views::RunDetail>(),
    ),
    r(
        "post",
        "/v1/workflow-runs/{id}/cancel",
        "Cancels a run: its live sandboxes are killed with their work saved (no pull request).",
        "workflows",
        None,
        200,
        schema::<views::WorkflowRun>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/work-chains",
        "The project's work chains.",
        "workflows",
        None,
        200,
        schema::<views::WorkChainList>(),
    ),
    r(
        "post",
        "/v1/projects/{id}/work-chains",
        "Starts a work chain: one workflow run per issue, one after another on one branch.",
        "workflows",
        schema::<views::NewWorkChain>(),
        201,
        schema::<views::WorkChain>(),
    ),
    r(
        "get",
        "/v1/work-chains/{id}",
        "A work chain with its issues and their runs.",
        "workflows",
        None,
        200,
        schema::<views::ChainDetail>(),
    ),
    r(
        "post",
        "/v1/work-chains/{id}/items",
        "Adds an issue at the end of a chain that has not ended.",
        "workflows",
        schema::<views::NewChainItem>(),
        201,
        schema::<views::ChainItem>(),
    ),
    r(
        "post",
        "/v1/work-chains/{id}/cancel",
        "Cancels a chain: its current run is cancelled, the issues not done too.",
        "workflows",
        None,
        200,
        schema::<views::WorkChain>(),
    ),
    r(
        "get",
        "/v1/projects/{id}/issue-sessions",
        "The project's issue sessions.",
        "issues",
        None,
        200,
        schema::<views::IssueSessionList>(),
    ),
    r(
        "post",
        "/v1/projects/{id}/issue-sessions",
        "Starts an issue session: an agent looks through the project and reports issues as cards.",
        "issues",
        schema::<views::NewIssueSession>(),
        201,
        schema::<views::IssueSession>(),
    ),
    r(
        "get",
        "/v1/issue-sessions/{id}",
        "An issue session with its cards and sandbox.",
        "issues",
        None,
        200,
        schema::<views::IssueSessionDetail>(),
    ),
    r(
        "post",
        "/v1/issue-cards/{id}/start",
        "Starts a sandbox on a card's suggested prompt.",
        "issues",
        schema::<views::StartCard>(),
        201,
        schema::<views::StartedCard>(),
    ),
    r(
        "post",
        "/v1/issue-cards/{id}/chain",
        "Adds a card to a work chain as its next issue.",
        "issues",
        schema::<views::CardToChain>(),
        201,
        schema::<views::ChainItem>(),
    ),
    r(
        "get",
        "/v1/keys",
        "The caller's own provider keys, masked.",
        "keys",
        None,
        200,
        schema::<views::KeyList>(),
    ),
    r(
        "put",
        "/v1/keys/{provider}",
        "Sets the caller's key for a provider.",
        "keys",
        schema::<views::KeyValue>(),
        200,
        schema::<views::Key>(),
    ),
    r(
        "delete",
        "/v1/keys/{provider}",
        "Deletes the caller's key for a provider.",
        "keys",
        None,
        204,
        None,
    ),
    r(
        "get",
        "/v1/sandboxes",
        "Lists sandboxes, newest first (filters: project_id, status, deleted, tool, run_id, issue_session_id; cursor pagination).",
        "sandboxes",
        None,
        200,
        schema::<views::SandboxPage>(),
    ),
    r(
        "post",
        "/v1/sandboxes",
        "Creates a sandbox and starts its agent (rate limited per user).",
        "sandboxes",
        schema::<views::NewSandbox>(),
        201,
        schema::<views::Sandbox>(),
    ),
    r(
        "get",
        "/v1/sandboxes/{id}",
        "A sandbox.",
        "sandboxes",
        None,
        200,
        schema::<views::Sandbox>(),
    ),
    r(
        "delete",
        "/v1/sandboxes/{id}",
        "Soft-deletes a sandbox (hidden, restorable).",
        "sandboxes",
        None,
        204,
        None,
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/kill",
        "Kills a sandbox (saves work, opens a PR when configured).",
        "sandboxes",
        None,
        200,
        schema::<views::Sandbox>(),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/pause",
        "Pauses a running sandbox.",
        "sandboxes",
        None,
        200,
        schema::<views::Sandbox>(),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/resume",
        "Resumes a paused sandbox.",
        "sandboxes",
        None,
        200,
        schema::<views::Sandbox>(),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/restore",
        "Restores a soft-deleted sandbox.",
        "sandboxes",
        None,
        200,
        schema::<views::Sandbox>(),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/purge",
        "Removes a sandbox for good (killing it first if live).",
        "sandboxes",
        None,
        204,
        None,
    ),
    r(
        "get",
        "/v1/sandboxes/{id}/messages",
        "The sandbox's messages in sequence order (after_seq, limit, raw, events: the agent's parsed events).",
        "messages",
        None,
        200,
        schema::<views::MessageList>(),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/messages",
        "Sends a follow-up message to the agent.",
        "messages",
        schema::<views::NewMessage>(),
        201,
        schema::<views::Message>(),
    ),
    Route {
        method: "get",
        path: "/v1/sandboxes/{id}/events",
        summary: "Live events (SSE); resume with Last-Event-ID or ?after=.",
        tag: "messages",
        auth: true,
        body: None,
        ok: 200,
        response: Answer::EventStream,
    },
    r(
        "get",
        "/v1/sandboxes/{id}/usage",
        "The sandbox's usage totals.",
        "usage",
        None,
        200,
        schema::<views::Usage>(),
    ),
    r(
        "get",
        "/v1/usage",
        "The caller's usage per project and in total.",
        "usage",
        None,
        200,
        schema::<views::UsageReport>(),
    ),
    r(
        "get",
        "/v1/template-builds",
        "Template builds, newest first (?tool=).",
        "templates",
        None,
        200,
        schema::<views::TemplateBuildList>(),
    ),
    r(
        "post",
        "/v1/template-builds",
        "Starts a build of a tool's sandbox template at the provider (from `base`, with the CLI installed); 202 with the build, followed to `succeeded` or `failed`. 422 `invalid` naming `tool` (and the allowed tools) for a tool without a template.",
        "templates",
        schema::<views::TemplateBuildRequest>(),
        202,
        schema::<views::TemplateBuild>(),
    ),
    Route {
        method: "post",
        path: GITHUB_WEBHOOK_PATH,
        summary: "GitHub webhook deliveries (`pull_request`, `ping`), verified with the hook's secret: a merged pull request marks its sandboxes `merged`. Answers 503 while no secret is configured.",
        tag: "github",
        auth: false,
        body: schema::<views::GitHubWebhookPayload>(),
        ok: 200,
        response: Answer::Json(<views::WebhookResult as ToSchema>::name),
    },
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Every view, so the document holds each one's derived schema (and those it uses).
#[derive(OpenApi)]
#[openapi(components(schemas(
    views::ErrorBody,
    views::Status,
    views::User,
    views::Project,
    views::ProjectList,
    views::NewProject,
    views::Key,
    views::KeyList,
    views::KeyValue,
    views::ProjectSettings,
    views::ProjectSettingsUpdate,
    views::EnvVar,
    views::NamedFile,
    views::SandboxDefaults,
    views::NewSandbox,
    views::Sandbox,
    views::SandboxPage,
    views::KillAll,
    views::Message,
    views::MessageList,
    views::NewMessage,
    views::Usage,
    views::UsageReport,
    views::Learning,
    views::LearningList,
    views::LearningVersion,
    views::LearningVersionList,
    views::TemplateBuild,
    views::TemplateBuildList,
    views::TemplateBuildRequest,
    views::GitHubWebhookPayload,
    views::WebhookResult,
    views::Persona,
    views::PersonaList,
    views::PersonaRequest,
    views::StepRequest,
    views::WorkflowOptions,
    views::NewWorkflowRun,
    views::StepSpec,
    views::WorkflowSpec,
    views::WorkflowRun,
    views::WorkflowRunList,
    views::WorkflowStep,
    views::RunDetail,
    views::NewChainItem,
    views::NewWorkChain,
    views::WorkChain,
    views::WorkChainList,
    views::ChainItem,
    views::ChainDetail,
    views::NewIssueSession,
    views::IssueSession,
    views::IssueSessionList,
    views::IssueCard,
    views::IssueSessionDetail,
    views::StartCard,
    views::StartedCard,
    views::CardToChain,
    views::MessageEvent,
    views::TextEvent,
    views::AgentEvent,
    views::StreamedEvent,
    views::FinishedEvent,
    views::EndEvent,
    views::ShutdownEvent,
    views::StreamError,
)))]
struct Views;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref(&<views::ErrorBody as ToSchema>::name()) } }
    })
}

fn operation(route: &Route) -> Value {
    let mut op = Map::new();
    op.insert("summary".into(), json!(route.summary));
    op.insert("tags".into(), json!([route.tag]));
    op.insert(
        "operationId".into(),
        json!(format!(
            "{}{}",
            route.method,
            route
                .path
                .replace(['/', '-', '.'], "_")
                .replace(['{', '}'], "")
        )),
    );
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if route.path == GITHUB_WEBHOOK_PATH {
        for (name, required, description) in [
            (
                "X-GitHub-Event",
                true,
                "The event: `pull_request` and `ping` are read, others ignored.",
            ),
            (
                "X-Hub-Signature-256",
                true,
                "`sha256=` + hex HMAC-SHA256 of the raw body under the hook's secret.",
            ),
            ("X-GitHub-Delivery", false, "The delivery id, logged."),
        ] {
            params.push(json!({
                "name": name, "in": "header", "required": required,
                "description": description, "schema": { "type": "string" }
            }));
        }
    }
    if !params.is_empty() {
        op.insert("parameters".into(), json!(params));
    }
    if let Some(body) = route.body {
        op.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": schema_ref(&body()) } } }),
        );
    }
    let mut responses = Map::new();
    let ok = match route.response {
        Answer::Empty => json!({ "description": "Done." }),
        Answer::Text => {
            json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } })
        }
        Answer::Html => {
            json!({ "description": "OK", "content": { "text/html": { "schema": { "type": "string" } } } })
        }
        Answer::EventStream => json!({
            "description": "Server-sent events: message (MessageEvent), text (TextEvent), agent (AgentEvent), finished (FinishedEvent), end (EndEvent), shutdown (ShutdownEvent), error (StreamError); each event's data is the named schema. The id is the sequence number up to which every message was delivered complete.",
            "content": { "text/event-stream": { "schema": { "type": "string" } } }
        }),
        Answer::AnyJson => {
            json!({ "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } })
        }
        Answer::Json(name) => {
            json!({ "description": "OK", "content": { "application/json": { "schema": schema_ref(&name()) } } })
        }
    };
    responses.insert(route.ok.to_string(), ok);
    if route.auth {
        responses.insert(
            "401".into(),
            error_response("Missing or unknown bearer token."),
        );
        responses.insert(
            "403".into(),
            error_response("The project belongs to another user."),
        );
        responses.insert("404".into(), error_response("Unknown record."));
    }
    if route.body.is_some() {
        responses.insert(
            "400".into(),
            error_response("The body is not the expected JSON."),
        );
        responses.insert("413".into(), error_response("The body is too large."));
        if route.auth {
            responses.insert(
                "422".into(),
                error_response("A field is invalid (named in `field`)."),
            );
        }
    }
    if route.path == GITHUB_WEBHOOK_PATH {
        responses.insert(
            "401".into(),
            error_response(
                "`bad_signature`: X-Hub-Signature-256 is missing or does not match the body.",
            ),
        );
        responses.insert(
            "503".into(),
            error_response("No webhook secret is configured (COURIER_GITHUB_WEBHOOK_SECRET)."),
        );
    }
    if route.method != "get" && route.auth {
        responses.insert(
            "409".into(),
            error_response("Not allowed in the current state."),
        );
    }
    if route.path == "/v1/sandboxes" && route.method == "post" {
        responses.insert(
            "429".into(),
            error_response(
                "`rate_limited`: too many creations, see Retry-After. `quota_exceeded`: the \
                 user or the project has as many live sandboxes as its quota allows. \
                 `provider_at_capacity`: the sandbox provider is full.",
            ),
        );
        responses.insert(
            "502".into(),
            error_response("The sandbox provider or setup failed."),
        );
    }
    if route.auth {
        op.insert("security".into(), json!([{ "bearer": [] }]));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The OpenAPI 3.1 document: the operations of [`ROUTES`] over the views' schemas.
pub fn document() -> Value {
    let mut doc: Document = Views::openapi();
    let mut info = Info::new("Courier API", env!("CARGO_PKG_VERSION"));
    info.description = Some(
        "Run AI coding agents in sandboxes: create them, stream what they do, talk to them, kill them."
            .into(),
    );
    doc.info = info;
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(route.method.to_owned(), operation(route));
        }
    }
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|e| {
        // Built above from derived schemas: nothing in it can fail to serialise.
        tracing::error!(error = %e, "OpenAPI document not serialisable");
        json!({ "openapi": "3.1.0" })
    });
    doc["paths"] = Value::Object(paths);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_path_parameters() {
        let doc = document();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                count += 1;
                for seg in path.split('/').filter(|s| s.starts_with('{')) {
                    let name = seg.trim_matches(['{', '}']);
                    assert!(
                        op["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"] == name),
                        "{method} {path} lacks parameter {name}"
                    );
                }
                for p in op["parameters"].as_array().into_iter().flatten() {
                    assert!(
                        p["in"] == "header"
                            || path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())),
                        "{method} {path}: stray parameter {p}"
                    );
                }
                for r in op["responses"].as_object().unwrap().values() {
                    if let Some(s) = r.pointer("/content/application~1json/schema/$ref") {
                        let name = s.as_str().unwrap().rsplit('/').next().unwrap();
                        assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
                    }
                }
            }
        }
        assert_eq!(count, ROUTES.len());
    }

    #[test]
    fn the_webhook_is_open_signed_and_documented_with_its_answers() {
        let doc = document();
        let op = &doc["paths"][GITHUB_WEBHOOK_PATH]["post"];
        assert!(op.get("security").is_none(), "GitHub sends no bearer token");
        for status in ["200", "400", "401", "413", "503"] {
            assert!(op["responses"].get(status).is_some(), "{status}");
        }
        assert!(op["responses"].get("422").is_none());
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header" && p["required"] == true)
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(headers, ["X-GitHub-Event", "X-Hub-Signature-256"]);
        let learning = &doc["components"]["schemas"]["Learning"]["properties"];
        assert_eq!(learning["evidence"]["type"], json!(["string", "null"]));
    }
}
