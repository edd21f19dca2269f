//! Wire tests for the template build API: exact paths, headers and bodies (the official
//! SDK's), status polling with log offsets, error mapping.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use courier_e2b::{BuildRequest, BuildState, Error, NotFoundKind, Recipe, SandboxApi, Step};
use serde_json::json;
use support::{API_KEY, Canned, FakeServer};

fn requested() -> serde_json::Value {
    json!({"templateID": "tpl1", "buildID": "bld1", "public": false,
           "names": ["claude"], "tags": [], "aliases": ["claude"]})
}

fn status(state: &str, messages: &[&str], reason: Option<serde_json::Value>) -> Canned {
    let entries: Vec<_> = messages
        .iter()
        .map(|m| json!({"timestamp": "2026-01-02T03:04:05Z", "level": "info", "message": m, "step": "1"}))
        .collect();
    let mut body = json!({"templateID": "tpl1", "buildID": "bld1", "status": state,
                          "logEntries": entries, "logs": []});
    if let Some(reason) = reason {
        body["reason"] = reason;
    }
    Canned::json(200, body)
}

#[tokio::test]
async fn request_build_posts_the_v3_body_with_the_api_key_and_is_not_retried() {
    let server = FakeServer::start().await;
    server.push(Canned::json(202, requested()));
    let build = server
        .client()
        .templates()
        .request_build(&BuildRequest::new("claude").cpu_count(2).memory_mb(2048))
        .await
        .unwrap();
    assert_eq!(
        (build.template_id.as_str(), build.build_id.as_str()),
        ("tpl1", "bld1")
    );
    let request = server.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v3/templates");
    assert_eq!(request.header("x-api-key"), Some(API_KEY));
    assert_eq!(
        std::str::from_utf8(&request.body).unwrap(),
        r#"{"name":"claude","cpuCount":2,"memoryMB":2048}"#
    );

    let server = FakeServer::start().await;
    server.push(Canned::json(503, json!({"code": 503, "message": "busy"})));
    server.push(Canned::json(202, requested()));
    let err = server
        .client()
        .templates()
        .request_build(&BuildRequest::new("claude"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_empty_name_is_rejected_before_any_request() {
    let server = FakeServer::start().await;
    let err = server
        .client()
        .templates()
        .request_build(&BuildRequest::new(" "))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("name")),
        "{err:?}"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn start_build_sends_the_recipe_as_the_sdk_does() {
    let server = FakeServer::start().await;
    server.push(Canned::status(202));
    let recipe = Recipe::from_template("base")
        .step(Step::run_as(
            "npm install -g @anthropic-ai/claude-code",
            "root",
        ))
        .step(Step::run("claude --version"))
        .step(Step::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "2".into()),
        ]))
        .step(Step::Workdir("/home/user".into()))
        .step(Step::User("user".into()))
        .start_cmd("sleep infinity")
        .ready_cmd("true");
    server
        .client()
        .templates()
        .start_build("tpl1", "bld/1", &recipe)
        .await
        .unwrap();
    let request = server.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v2/templates/tpl1/builds/bld%2F1");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({
            "steps": [
                {"type": "RUN", "args": ["npm install -g @anthropic-ai/claude-code", "root"], "force": false},
                {"type": "RUN", "args": ["claude --version"], "force": false},
                {"type": "ENV", "args": ["A", "1", "B", "2"], "force": false},
                {"type": "WORKDIR", "args": ["/home/user"], "force": false},
                {"type": "USER", "args": ["user"], "force": false}
            ],
            "force": false,
            "fromTemplate": "base",
            "startCmd": "sleep infinity",
            "readyCmd": "true"
        })
    );
}

#[tokio::test]
async fn start_build_maps_error_bodies() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        400,
        json!({"code": 400, "message": "fromImageRegistry is not supported"}),
    ));
    server.push(Canned::json(
        404,
        json!({"code": 404, "message": "build bld1 not found"}),
    ));
    let templates = server.client().templates();
    let recipe = Recipe::from_template("base");
    let err = templates
        .start_build("tpl1", "bld1", &recipe)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message == "fromImageRegistry is not supported"),
        "{err:?}"
    );
    let err = templates
        .start_build("tpl1", "bld1", &recipe)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: NotFoundKind::Template, message } if message == "build bld1 not found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn wait_follows_logs_from_their_offset_and_names_the_failed_step() {
    let server = FakeServer::start().await;
    server.push(status("building", &["one", "two"], None));
    server.push(status(
        "error",
        &["three"],
        Some(json!({"message": "command exited with code 1", "step": "2"})),
    ));
    server.push(status("error", &[], None));
    let mut seen = Vec::new();
    let err = server
        .client()
        .templates()
        .wait_every("tpl1", "bld1", Duration::ZERO, |e| {
            seen.push(e.message.clone())
        })
        .await
        .unwrap_err();
    assert_eq!(seen, ["one", "two", "three"]);
    match &err {
        Error::BuildFailed {
            template_id,
            build_id,
            step,
            message,
        } => {
            assert_eq!((template_id.as_str(), build_id.as_str()), ("tpl1", "bld1"));
            assert_eq!(step.as_deref(), Some("2"));
            assert_eq!(message, "command exited with code 1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "template build tpl1/bld1 failed at step 2: command exited with code 1"
    );
    let requests = server.requests();
    let paths: Vec<_> = requests
        .iter()
        .map(|r| {
            format!(
                "{} {}?{}",
                r.method,
                r.path,
                r.query.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "GET /templates/tpl1/builds/bld1/status?logsOffset=0",
            "GET /templates/tpl1/builds/bld1/status?logsOffset=2",
            "GET /templates/tpl1/builds/bld1/status?logsOffset=3",
        ]
    );
}

#[tokio::test]
async fn wait_returns_once_ready() {
    let server = FakeServer::start().await;
    server.push(status("waiting", &[], None));
    server.push(status("ready", &[], None));
    server
        .client()
        .templates()
        .wait_every("tpl1", "bld1", Duration::ZERO, |_| {})
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn list_and_delete_templates() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!([{"templateID": "base", "buildID": "b0", "aliases": ["base"], "names": ["base"],
                "cpuCount": 2, "memoryMB": 1024, "diskSizeMB": 4096, "public": true,
                "createdAt": "2026-01-02T03:04:05Z", "updatedAt": "2026-01-02T03:04:05Z",
                "createdBy": null, "lastSpawnedAt": null, "spawnCount": 0, "buildCount": 1,
                "envdVersion": "0.6.13", "buildStatus": "ready"},
               {"templateID": "tpl1", "buildID": "bld1", "aliases": ["claude"], "names": ["claude"],
                "cpuCount": 2, "memoryMB": 1024, "public": false, "buildStatus": "building"}]),
    ));
    server.push(Canned::status(204));
    server.push(Canned::json(
        404,
        json!({"code": 404, "message": "template x not found"}),
    ));
    let templates = server.client().templates();
    let listed = templates.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[1].is_named("claude"));
    assert_eq!(listed[1].build_status, BuildState::Building);
    assert!(templates.delete("tpl1").await.unwrap());
    assert!(!templates.delete("x").await.unwrap());
    let requests = server.requests();
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("GET", "/templates")
    );
    assert_eq!(
        (requests[1].method.as_str(), requests[1].path.as_str()),
        ("DELETE", "/templates/tpl1")
    );
}

#[tokio::test]
async fn the_sandbox_api_requests_then_starts_a_build() {
    let server = FakeServer::start().await;
    server.push(Canned::json(202, requested()));
    server.push(Canned::status(202));
    let client = server.client();
    let api: &dyn SandboxApi = &client;
    let build = api
        .build_template(
            "claude",
            Recipe::from_template("base").step(Step::run_as("true", "root")),
        )
        .await
        .unwrap();
    assert_eq!(build.build_id, "bld1");
    let requests = server.requests();
    assert_eq!(requests[0].path, "/v3/templates");
    assert_eq!(requests[0].json(), json!({"name": "claude"}));
    assert_eq!(requests[1].path, "/v2/templates/tpl1/builds/bld1");
    assert_eq!(requests[1].json()["fromTemplate"], "base");
}
