//! The route table and the OpenAPI 3.1 document served at `/openapi.json`.
//!
//! The document is built from [`ROUTES`]; the crate's tests check that every route in the
//! table is served by the router and that the router serves nothing the table lacks.

use serde_json::{Map, Value, json};

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
    /// Name of the request body schema, if any.
    pub body: Option<&'static str>,
    /// Success status.
    pub ok: u16,
    /// Name of the success response schema (`None`: no body; `text`: plain text; `sse`:
    /// an event stream; `html`: the dashboard).
    pub response: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<&'static str>,
    ok: u16,
    response: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        summary,
        tag,
        auth: true,
        body,
        ok,
        response,
    }
}

const fn open(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    response: &'static str,
) -> Route {
    Route {
        method,
        path,
        summary,
        tag: "service",
        auth: false,
        body: None,
        ok: 200,
        response: Some(response),
    }
}

/// The GitHub webhook's path: open (GitHub sends no token), authenticated by the
/// delivery's `X-Hub-Signature-256`.
pub const GITHUB_WEBHOOK_PATH: &str = "/v1/github/webhook";

/// Every operation the server answers.
pub const ROUTES: &[Route] = &[
    open("get", "/", "The dashboard page.", "html"),
    open(
        "get",
        "/healthz",
        "Liveness: the process answers.",
        "Status",
    ),
    open(
        "get",
        "/readyz",
        "Readiness: the store answers and no shutdown is under way.",
        "Status",
    ),
    open(
        "get",
        "/metrics",
        "Prometheus metrics (text format).",
        "text",
    ),
    open("get", "/openapi.json", "This document.", "Object"),
    r(
        "get",
        "/v1/me",
        "The caller.",
        "users",
        None,
        200,
        Some("User"),
    ),
    r(
        "get",
        "/v1/projects",
        "The caller's projects.",
        "projects",
        None,
        200,
        Some("ProjectList"),
    ),
    r(
        "post",
        "/v1/projects",
        "Creates a project.",
        "projects",
        Some("NewProject"),
        201,
        Some("Project"),
    ),
    r(
        "get",
        "/v1/projects/{id}",
        "A project, with its active-sandbox counter.",
        "projects",
        None,
        200,
        Some("Project"),
    ),
    r(
        "get",
        "/v1/projects/{id}/keys",
        "The project's provider keys, masked.",
        "keys",
        None,
        200,
        Some("KeyList"),
    ),
    r(
        "put",
        "/v1/projects/{id}/keys/{provider}",
        "Sets the project's key for a provider.",
        "keys",
        Some("KeyValue"),
        200,
        Some("Key"),
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
        Some("KillAll"),
    ),
    r(
        "get",
        "/v1/projects/{id}/usage",
        "The project's usage totals.",
        "usage",
        None,
        200,
        Some("Usage"),
    ),
    r(
        "get",
        "/v1/projects/{id}/learnings",
        "The project's learnings, oldest first, each with its evidence.",
        "learnings",
        None,
        200,
        Some("LearningList"),
    ),
    r(
        "get",
        "/v1/projects/{id}/learning-versions",
        "The project's compiled learning versions.",
        "learnings",
        None,
        200,
        Some("ItemList"),
    ),
    r(
        "get",
        "/v1/keys",
        "The caller's own provider keys, masked.",
        "keys",
        None,
        200,
        Some("KeyList"),
    ),
    r(
        "put",
        "/v1/keys/{provider}",
        "Sets the caller's key for a provider.",
        "keys",
        Some("KeyValue"),
        200,
        Some("Key"),
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
        "Lists sandboxes, newest first (filters: project_id, status, deleted, tool; cursor pagination).",
        "sandboxes",
        None,
        200,
        Some("SandboxPage"),
    ),
    r(
        "post",
        "/v1/sandboxes",
        "Creates a sandbox and starts its agent (rate limited per user).",
        "sandboxes",
        Some("NewSandbox"),
        201,
        Some("Sandbox"),
    ),
    r(
        "get",
        "/v1/sandboxes/{id}",
        "A sandbox.",
        "sandboxes",
        None,
        200,
        Some("Sandbox"),
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
        Some("Sandbox"),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/pause",
        "Pauses a running sandbox.",
        "sandboxes",
        None,
        200,
        Some("Sandbox"),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/resume",
        "Resumes a paused sandbox.",
        "sandboxes",
        None,
        200,
        Some("Sandbox"),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/restore",
        "Restores a soft-deleted sandbox.",
        "sandboxes",
        None,
        200,
        Some("Sandbox"),
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
        "The sandbox's messages in sequence order (after_seq, limit, raw).",
        "messages",
        None,
        200,
        Some("MessageList"),
    ),
    r(
        "post",
        "/v1/sandboxes/{id}/messages",
        "Sends a follow-up message to the agent.",
        "messages",
        Some("NewMessage"),
        201,
        Some("Message"),
    ),
    r(
        "get",
        "/v1/sandboxes/{id}/events",
        "Live events (SSE); resume with Last-Event-ID or ?after=.",
        "messages",
        None,
        200,
        Some("sse"),
    ),
    r(
        "get",
        "/v1/sandboxes/{id}/usage",
        "The sandbox's usage totals.",
        "usage",
        None,
        200,
        Some("Usage"),
    ),
    r(
        "get",
        "/v1/usage",
        "The caller's usage per project and in total.",
        "usage",
        None,
        200,
        Some("UsageReport"),
    ),
    r(
        "get",
        "/v1/template-builds",
        "Template builds, newest first (?tool=).",
        "templates",
        None,
        200,
        Some("ItemList"),
    ),
    r(
        "post",
        "/v1/template-builds",
        "Starts a build of a tool's sandbox template at the provider (from `base`, with the CLI installed); 202 with the build, followed to `succeeded` or `failed`. 422 `invalid` naming `tool` (and the allowed tools) for a tool without a template.",
        "templates",
        Some("TemplateBuildRequest"),
        202,
        Some("TemplateBuild"),
    ),
    Route {
        method: "post",
        path: GITHUB_WEBHOOK_PATH,
        summary: "GitHub webhook deliveries (`pull_request`, `ping`), verified with the hook's secret: a merged pull request marks its sandboxes `merged`. Answers 503 while no secret is configured.",
        tag: "github",
        auth: false,
        body: Some("GitHubWebhookPayload"),
        ok: 200,
        response: Some("WebhookResult"),
    },
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn schemas() -> Value {
    let any = json!({ "type": "object", "additionalProperties": true });
    let nullable_string = json!({ "type": ["string", "null"] });
    let nullable_int = json!({ "type": ["integer", "null"] });
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "examples": ["invalid", "unauthorized", "bad_signature", "forbidden", "not_found", "rate_limited", "quota_exceeded", "unavailable"] },
                    "message": { "type": "string" },
                    "field": { "type": "string", "description": "The offending field, for `invalid` and `missing_provider_key`." }
                }
            }}
        },
        "Status": { "type": "object", "properties": { "status": { "type": "string" } } },
        "Object": any,
        "User": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "email": { "type": "string" }, "name": { "type": "string" },
                "created_at": { "type": "string", "format": "date-time" }
            }
        },
        "Project": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "user_id": { "type": "string", "format": "uuid" },
                "name": { "type": "string" },
                "active_sandboxes": { "type": "integer" },
                "created_at": { "type": "string", "format": "date-time" },
                "updated_at": { "type": "string", "format": "date-time" }
            }
        },
        "ProjectList": { "type": "object", "properties": { "items": { "type": "array", "items": schema_ref("Project") } } },
        "NewProject": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } },
        "Key": {
            "type": "object",
            "properties": {
                "provider": { "type": "string", "enum": ["anthropic", "openrouter", "openai", "github", "e2b"] },
                "owner": { "type": "string", "enum": ["user", "project"] },
                "owner_id": { "type": "string", "format": "uuid" },
                "masked": { "type": "string", "examples": ["****abcd"] },
                "created_at": { "type": "string", "format": "date-time" },
                "updated_at": { "type": "string", "format": "date-time" }
            }
        },
        "KeyList": { "type": "object", "properties": { "items": { "type": "array", "items": schema_ref("Key") } } },
        "KeyValue": { "type": "object", "required": ["value"], "properties": { "value": { "type": "string", "writeOnly": true } } },
        "NewSandbox": {
            "type": "object",
            "required": ["prompt"],
            "additionalProperties": false,
            "properties": {
                "project_id": { "type": "string", "format": "uuid", "description": "Default: the caller's first project." },
                "tool": { "type": "string", "enum": ["claude", "opencode", "codex", "pi", "shell"] },
                "model": nullable_string,
                "prompt": { "type": "string" },
                "memory_mb": { "type": "integer", "minimum": 256, "maximum": 8192, "default": 1024 },
                "cpu_count": { "type": "integer", "minimum": 1, "maximum": 8, "default": 2 },
                "timeout_ms": { "type": "integer", "minimum": 60000, "maximum": 14400000, "default": 900000 },
                "template_id": nullable_string,
                "thinking_effort": nullable_string,
                "repo_url": nullable_string,
                "base_branch": nullable_string,
                "branch": nullable_string
            }
        },
        "Sandbox": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "project_id": { "type": "string", "format": "uuid" },
                "user_id": { "type": "string", "format": "uuid" },
                "status": { "type": "string", "enum": ["creating", "running", "paused", "killed", "error"] },
                "error_message": nullable_string,
                "cli_tool": { "type": "string" },
                "model": nullable_string,
                "prompt": { "type": "string" },
                "config": any,
                "git": any,
                "learning_status": { "type": "string" },
                "created_at": { "type": "string", "format": "date-time" },
                "started_at": nullable_string,
                "ended_at": nullable_string,
                "deleted_at": nullable_string
            }
        },
        "SandboxPage": {
            "type": "object",
            "properties": {
                "items": { "type": "array", "items": schema_ref("Sandbox") },
                "next_cursor": nullable_string
            }
        },
        "KillAll": { "type": "object", "properties": { "killed": { "type": "integer" } } },
        "Message": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "sandbox_id": { "type": "string", "format": "uuid" },
                "seq": { "type": "integer" },
                "role": { "type": "string", "enum": ["user", "assistant"] },
                "content": { "type": "string" },
                "status": { "type": "string", "enum": ["streaming", "completed", "error"] },
                "raw_log": { "type": "string", "description": "Only with ?raw=true." },
                "created_at": { "type": "string", "format": "date-time" }
            }
        },
        "MessageList": { "type": "object", "properties": { "items": { "type": "array", "items": schema_ref("Message") } } },
        "NewMessage": { "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } },
        "Usage": {
            "type": "object",
            "properties": {
                "compute_seconds": { "type": "number" },
                "input_tokens": { "type": "number" },
                "output_tokens": { "type": "number" },
                "cache_read_tokens": { "type": "number" },
                "cache_write_tokens": { "type": "number" },
                "cost_usd": { "type": "number" }
            }
        },
        "UsageReport": {
            "type": "object",
            "properties": {
                "projects": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "project_id": { "type": "string", "format": "uuid" },
                        "name": { "type": "string" },
                        "active_sandboxes": nullable_int,
                        "usage": schema_ref("Usage")
                    }
                }},
                "total": schema_ref("Usage")
            }
        },
        "Learning": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "project_id": { "type": "string", "format": "uuid" },
                "category": { "type": "string", "enum": ["pattern", "preference", "gotcha", "architecture"] },
                "content": { "type": "string", "description": "The claim: one piece of advice." },
                "evidence": {
                    "type": ["string", "null"],
                    "description": "What in the source sandbox's transcript shows it: a short quote or a pointer such as `#12` (a message number). Null when none was given."
                },
                "source_sandbox_id": { "type": ["string", "null"], "format": "uuid" },
                "created_at": { "type": "string", "format": "date-time" }
            }
        },
        "LearningList": { "type": "object", "properties": { "items": { "type": "array", "items": schema_ref("Learning") } } },
        "GitHubWebhookPayload": {
            "type": "object",
            "additionalProperties": true,
            "description": "GitHub's delivery as sent; Courier reads `action`, `pull_request.html_url`, `pull_request.number`, `pull_request.merged` and `repository.owner.login`/`repository.name`. The signature covers the raw bytes.",
            "properties": {
                "action": { "type": "string", "examples": ["closed"] },
                "number": { "type": "integer" },
                "pull_request": { "type": "object", "additionalProperties": true, "properties": {
                    "html_url": { "type": "string" },
                    "number": { "type": "integer" },
                    "merged": { "type": ["boolean", "null"] }
                }},
                "repository": { "type": "object", "additionalProperties": true }
            }
        },
        "WebhookResult": {
            "type": "object",
            "properties": {
                "event": { "type": ["string", "null"], "description": "The X-GitHub-Event header." },
                "outcome": { "type": "string", "enum": ["ping", "merged", "ignored"] },
                "marked": { "type": "array", "items": { "type": "string", "format": "uuid" }, "description": "Sandboxes whose PR status became `merged`." }
            }
        },
        "TemplateBuildRequest": {
            "type": "object",
            "required": ["tool"],
            "properties": {
                "tool": { "type": "string", "enum": ["claude", "opencode", "codex", "pi"] }
            }
        },
        "TemplateBuild": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "tool_id": { "type": "string" },
                "template_name": { "type": "string" },
                "cli_version": { "type": "string" },
                "status": { "type": "string", "enum": ["pending", "building", "succeeded", "failed"] },
                "error": nullable_string,
                "created_at": { "type": "string", "format": "date-time" },
                "updated_at": { "type": "string", "format": "date-time" },
                "finished_at": nullable_string
            }
        },
        "ItemList": { "type": "object", "properties": { "items": { "type": "array", "items": any } } }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref("Error") } }
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
            json!({ "required": true, "content": { "application/json": { "schema": schema_ref(body) } } }),
        );
    }
    let mut responses = Map::new();
    let ok = match route.response {
        None => json!({ "description": "Done." }),
        Some("text") => {
            json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } })
        }
        Some("html") => {
            json!({ "description": "OK", "content": { "text/html": { "schema": { "type": "string" } } } })
        }
        Some("sse") => json!({
            "description": "Server-sent events: message, text, agent, finished, end, shutdown. The id is the sequence number up to which every message was delivered complete.",
            "content": { "text/event-stream": { "schema": { "type": "string" } } }
        }),
        Some(name) => {
            json!({ "description": "OK", "content": { "application/json": { "schema": schema_ref(name) } } })
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

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(route.method.to_owned(), operation(route));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Courier API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run AI coding agents in sandboxes: create them, stream what they do, talk to them, kill them."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
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
