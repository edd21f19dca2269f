//! The OpenAPI document is the contract: it is valid OpenAPI 3.1, and every route in its
//! table answers with what the document says (status, media type and JSON schema).

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::contract::{self, assert_matches, component};
use common::{Server, read_events, server_with_webhook};
use courier_api::ApiConfig;
use courier_api::openapi::{Answer, ROUTES, Route};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "whsec-contract-test";

/// The official OpenAPI 3.1 schema (`https://spec.openapis.org/oas/3.1/schema/2022-10-07`),
/// vendored from github.com/OAI/OpenAPI-Specification, file `schemas/v3.1/schema.json` at
/// commit 42f7075cf1854d44c99b6434a0e897538c6a2288 (the last revision with that `$id`).
const OPENAPI_3_1_SCHEMA: &str = include_str!("fixtures/openapi-3.1-schema.json");

#[test]
fn the_document_is_valid_openapi_3_1() {
    let meta: Value = serde_json::from_str(OPENAPI_3_1_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&meta).unwrap();
    let doc = courier_api::openapi::document();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The meta-schema has teeth: a document without `info` is refused.
    assert!(!validator.is_valid(&json!({ "openapi": "3.1.0", "paths": {} })));
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Courier API");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({ "type": "http", "scheme": "bearer" })
    );
}

/// Routes answered, by `(method, path template)`.
#[derive(Default)]
struct Checked(BTreeSet<(&'static str, &'static str)>);

impl Checked {
    fn add(&mut self, route: Option<&'static Route>) {
        let route = route.expect("a route of the table");
        self.0.insert((route.method, route.path));
    }

    /// Calls a route as Alice (or unauthenticated for open routes), expecting `ok`.
    async fn call(&mut self, s: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = s.call(method.clone(), &s.alice, path, body).await;
        let route = contract::route_of(method.as_str(), path).expect("a route of the table");
        assert_eq!(status, route.ok, "{method} {path}: {answer}");
        self.add(Some(route));
        answer
    }
}

/// A route answering something other than JSON: its status and content type.
async fn check_media(s: &Server, checked: &mut Checked, path: &str) {
    let res = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
    let route = contract::route_of("GET", path);
    let expected = match route.map(|r| r.response) {
        Some(Answer::Html) => "text/html",
        Some(Answer::Text) => "text/plain",
        Some(Answer::AnyJson) => "application/json",
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(res.status(), 200, "{path}");
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with(expected), "{path}: {content_type}");
    checked.add(route);
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_its_documented_schema() {
    let s = server_with_webhook(ApiConfig::default(), Some(SECRET)).await;
    let mut checked = Checked::default();
    let project = format!("/v1/projects/{}", s.alice.project_id);

    for path in ["/", "/metrics", "/openapi.json"] {
        check_media(&s, &mut checked, path).await;
    }
    for path in ["/healthz", "/readyz"] {
        let res = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        checked.add(contract::check("GET", path, status, &body));
    }

    checked.call(&s, Method::GET, "/v1/me", None).await;
    checked.call(&s, Method::GET, "/v1/projects", None).await;
    let created = checked
        .call(
            &s,
            Method::POST,
            "/v1/projects",
            Some(json!({ "name": "second" })),
        )
        .await;
    assert_eq!(created["name"], "second");
    checked.call(&s, Method::GET, &project, None).await;
    for keys in ["/v1/keys".to_owned(), format!("{project}/keys")] {
        let value = json!({ "value": "sk-test-0123abcd" });
        checked
            .call(&s, Method::PUT, &format!("{keys}/anthropic"), Some(value))
            .await;
        checked.call(&s, Method::GET, &keys, None).await;
        checked
            .call(&s, Method::DELETE, &format!("{keys}/anthropic"), None)
            .await;
    }

    let settings = format!("{project}/settings");
    let full = json!({
        "repo_url": "https://github.com/acme/engine.git",
        "base_branch": "main",
        "env_vars": { "DEPLOY_TOKEN": "tok-contract-9876" },
        "system_prompt": "Be brief.",
        "claude_md": "# Rules",
        "skills": [{ "name": "review", "content": "---\nname: review\ndescription: Reviews diffs\n---\nReview." }],
        "commands": [{ "name": "deploy", "content": "Deploy it." }],
        "sandbox_defaults": { "tool": "shell", "memory_mb": 2048 }
    });
    let put = checked.call(&s, Method::PUT, &settings, Some(full)).await;
    assert_eq!(put["env_vars"][0]["masked"], "****9876");
    let got = checked.call(&s, Method::GET, &settings, None).await;
    assert_eq!(got, put);
    // Cleared again, so the sandbox below starts from the product defaults.
    checked
        .call(&s, Method::PUT, &settings, Some(json!({})))
        .await;

    let sandbox = checked
        .call(
            &s,
            Method::POST,
            "/v1/sandboxes",
            Some(json!({ "tool": "shell", "prompt": "echo contract" })),
        )
        .await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    let sandbox_path = format!("/v1/sandboxes/{id}");
    s.wait_messages(&s.alice, &id, |items| {
        items.iter().any(|m| m["status"] == "completed")
    })
    .await;
    checked.call(&s, Method::GET, "/v1/sandboxes", None).await;
    let got = checked.call(&s, Method::GET, &sandbox_path, None).await;
    assert!(got["working"].is_boolean(), "{got}");
    checked
        .call(
            &s,
            Method::GET,
            &format!("{sandbox_path}/messages?raw=true"),
            None,
        )
        .await;
    // The agent's events, parsed by the server from the raw log, in the stream's shape.
    s.wait_messages(&s.alice, &id, |items| {
        items
            .iter()
            .any(|m| m["role"] == "assistant" && m["status"] == "completed")
    })
    .await;
    let replayed = checked
        .call(
            &s,
            Method::GET,
            &format!("{sandbox_path}/messages?events=true"),
            None,
        )
        .await;
    let answer = &replayed["items"][1];
    assert_eq!(answer["role"], "assistant", "{replayed}");
    assert_eq!(answer["events"][0]["event"], "text", "{replayed}");
    assert_eq!(
        answer["events"][0]["data"]["text"], answer["content"],
        "{replayed}"
    );
    assert!(replayed["items"][0].get("events").is_none(), "{replayed}");
    checked
        .call(
            &s,
            Method::POST,
            &format!("{sandbox_path}/messages"),
            Some(json!({ "text": "echo again" })),
        )
        .await;
    checked
        .call(&s, Method::POST, &format!("{sandbox_path}/pause"), None)
        .await;
    checked
        .call(&s, Method::POST, &format!("{sandbox_path}/resume"), None)
        .await;
    checked
        .call(&s, Method::GET, &format!("{sandbox_path}/usage"), None)
        .await;
    checked
        .call(&s, Method::POST, &format!("{sandbox_path}/kill"), None)
        .await;

    // The events of a final sandbox: every `data` matches its event's schema.
    let events_path = format!("{sandbox_path}/events");
    let res = s
        .req(Method::GET, &s.alice, &events_path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let events = read_events(res, |e| e.event == "end").await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));
    assert!(
        events
            .iter()
            .any(|e| e.event == "message" && e.data["message"]["events"].is_array()),
        "a snapshot of the agent's message carries its events"
    );
    for event in &events {
        let schema = match event.event.as_str() {
            "message" => "MessageEvent",
            "text" => "TextEvent",
            "agent" => "AgentEvent",
            "finished" => "FinishedEvent",
            "end" => "EndEvent",
            "shutdown" => "ShutdownEvent",
            "error" => "StreamError",
            other => panic!("undocumented event {other}"),
        };
        assert_matches(&component(schema), &event.data, &event.event);
    }
    checked.add(contract::route_of("GET", &events_path));

    checked.call(&s, Method::DELETE, &sandbox_path, None).await;
    checked
        .call(&s, Method::POST, &format!("{sandbox_path}/restore"), None)
        .await;
    checked
        .call(&s, Method::POST, &format!("{sandbox_path}/purge"), None)
        .await;
    checked
        .call(&s, Method::POST, &format!("{project}/kill-all"), None)
        .await;

    checked
        .call(&s, Method::GET, &format!("{project}/usage"), None)
        .await;
    checked.call(&s, Method::GET, "/v1/usage", None).await;
    let project_id: courier_store::ProjectId = s.alice.project_id.parse().unwrap();
    s.store
        .create_learning(courier_store::NewLearning {
            project_id,
            category: courier_store::LearningCategory::ALL[0],
            content: "run tests with nextest".into(),
            evidence: None,
            source_sandbox_id: None,
        })
        .await
        .unwrap();
    s.store
        .create_learning_version(project_id, "compiled".into(), true)
        .await
        .unwrap();
    let learnings = checked
        .call(&s, Method::GET, &format!("{project}/learnings"), None)
        .await;
    assert_eq!(learnings["items"][0]["evidence"], Value::Null);
    checked
        .call(
            &s,
            Method::GET,
            &format!("{project}/learning-versions"),
            None,
        )
        .await;
    checked
        .call(
            &s,
            Method::POST,
            "/v1/template-builds",
            Some(json!({ "tool": "claude" })),
        )
        .await;
    checked
        .call(&s, Method::GET, "/v1/template-builds", None)
        .await;

    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let res = s
        .http
        .post(format!("{}/v1/github/webhook", s.url))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-hub-signature-256", sign(ping))
        .body(ping.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    checked.add(contract::check("POST", "/v1/github/webhook", status, &body));

    // Personas, workflow runs, work chains and issue sessions (the fake `claude`).
    s.anthropic_key(&s.alice).await;
    let personas = format!("{project}/personas");
    let persona = checked
        .call(
            &s,
            Method::POST,
            &personas,
            Some(json!({ "name": "reviewer", "tool": "claude", "system_prompt": "Be strict." })),
        )
        .await;
    let persona_path = format!("/v1/personas/{}", persona["id"].as_str().unwrap());
    checked.call(&s, Method::GET, &personas, None).await;
    checked.call(&s, Method::GET, &persona_path, None).await;
    checked
        .call(
            &s,
            Method::PUT,
            &persona_path,
            Some(json!({ "name": "strict reviewer", "tool": "claude" })),
        )
        .await;
    let runs = format!("{project}/workflow-runs");
    let run = checked
        .call(
            &s,
            Method::POST,
            &runs,
            Some(json!({
                "prompt": "Add a module. SLEEP 30",
                "tool": "claude",
                "steps": [
                    { "role": "designer", "persona_id": persona["id"] },
                    { "role": "checker", "instructions": "Check the tests." }
                ],
                "maxIterations": 2
            })),
        )
        .await;
    let run_path = format!("/v1/workflow-runs/{}", run["id"].as_str().unwrap());
    checked.call(&s, Method::GET, &runs, None).await;
    // Its designer step started (a step row, a sandbox), then it is cancelled mid-way.
    s.wait_for(&s.alice, &run_path, |d| {
        d["steps"].as_array().is_some_and(|v| !v.is_empty())
            && d["sandboxes"].as_array().is_some_and(|v| !v.is_empty())
    })
    .await;
    checked.call(&s, Method::GET, &run_path, None).await;
    let cancelled = checked
        .call(&s, Method::POST, &format!("{run_path}/cancel"), None)
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    checked.call(&s, Method::DELETE, &persona_path, None).await;

    let chains = format!("{project}/work-chains");
    let chain = checked
        .call(
            &s,
            Method::POST,
            &chains,
            Some(json!({
                "title": "Slow chain",
                "items": [{ "title": "Slow", "prompt": "Take your time. SLEEP 30" }],
                "workflow": { "tool": "claude", "max_iterations": 1 }
            })),
        )
        .await;
    let chain_path = format!("/v1/work-chains/{}", chain["id"].as_str().unwrap());
    checked.call(&s, Method::GET, &chains, None).await;
    checked
        .call(
            &s,
            Method::POST,
            &format!("{chain_path}/items"),
            Some(json!({ "prompt": "Then this. PASS_AT_COMMITS 0" })),
        )
        .await;
    let sessions = format!("{project}/issue-sessions");
    let session = checked
        .call(
            &s,
            Method::POST,
            &sessions,
            Some(json!({ "focus": "CARDS 2", "tool": "claude" })),
        )
        .await;
    let session_path = format!("/v1/issue-sessions/{}", session["id"].as_str().unwrap());
    checked.call(&s, Method::GET, &sessions, None).await;
    s.wait_for(&s.alice, &session_path, |d| {
        d["cards"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    let detail = checked.call(&s, Method::GET, &session_path, None).await;
    let card = |i: usize| detail["cards"][i]["id"].as_str().unwrap().to_owned();
    checked
        .call(
            &s,
            Method::POST,
            &format!("/v1/issue-cards/{}/start", card(0)),
            Some(json!({ "tool": "shell" })),
        )
        .await;
    checked
        .call(
            &s,
            Method::POST,
            &format!("/v1/issue-cards/{}/chain", card(1)),
            Some(json!({ "chain_id": chain["id"] })),
        )
        .await;
    let chain_detail = checked.call(&s, Method::GET, &chain_path, None).await;
    assert_eq!(chain_detail["items"].as_array().unwrap().len(), 3);
    let cancelled = checked
        .call(&s, Method::POST, &format!("{chain_path}/cancel"), None)
        .await;
    assert_eq!(cancelled["status"], "cancelled");

    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|r| !checked.0.contains(&(r.method, r.path)))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        missing.is_empty(),
        "routes whose answer no test checked against the document: {missing:?}"
    );
}

#[test]
fn an_answer_that_breaks_its_schema_is_caught() {
    let wrong = [
        ("Sandbox", json!({ "id": 5 })),
        ("KeyList", json!({ "items": [{ "provider": "nope" }] })),
        ("ErrorBody", json!({ "error": { "code": "invalid" } })),
        ("EndEvent", json!({ "status": "sleeping" })),
        ("StreamedEvent", json!({ "event": "finished", "data": {} })),
    ];
    for (schema, body) in wrong {
        let caught = std::panic::catch_unwind(|| assert_matches(&component(schema), &body, schema));
        assert!(caught.is_err(), "{schema} accepted {body}");
    }
    assert_matches(
        &component("EndEvent"),
        &json!({ "status": null }),
        "an end without status",
    );
}
