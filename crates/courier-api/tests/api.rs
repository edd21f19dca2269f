//! Every route of the API, in-process over HTTP: auth failures, ownership, validation,
//! lifecycle, messages, SSE resume, usage, rate limits, metrics and the OpenAPI table.

mod common;

use std::time::Duration;

use common::{Sse, read_events, server, server_with, server_with_quota};
use courier_api::ApiConfig;
use courier_api::openapi::ROUTES;
use courier_store::SandboxQuota;
use reqwest::Method;
use serde_json::{Value, json};

const NIL: &str = "00000000-0000-0000-0000-000000000000";

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

fn fill(path: &str, project: &str, sandbox: &str) -> String {
    let path = path.replace("{provider}", "anthropic");
    if path.starts_with("/v1/projects/") {
        path.replace("{id}", project)
    } else {
        path.replace("{id}", sandbox)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_routes_answer_without_a_token() {
    let s = server().await;
    let get = |p: &str| s.http.get(format!("{}{p}", s.url)).send();
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("Courier"));
    let doc: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE courier_http_requests_total counter"));
    assert!(metrics.contains("courier_http_requests_total{class=\"2xx\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_refuses_a_missing_or_unknown_token_with_401() {
    let s = server().await;
    for route in ROUTES.iter().filter(|r| r.auth) {
        let url = format!("{}{}", s.url, fill(route.path, NIL, NIL));
        let none = s
            .http
            .request(method(route.method), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{} {}", route.method, route.path);
        assert!(none.headers().contains_key("www-authenticate"));
        let body: Value = none.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        for bad in ["Bearer courier_0000", "Bearer nonsense", "Basic YTpi"] {
            let res = s
                .http
                .request(method(route.method), &url)
                .header("authorization", bad)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 401, "{bad}: {} {}", route.method, route.path);
        }
    }
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("courier_auth_failures_total 0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_table_matches_the_router() {
    let s = server().await;
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, ROUTES.len());
    for route in ROUTES {
        if route.path.ends_with("/events") {
            continue; // a stream; covered by the SSE tests
        }
        let path = fill(route.path, &s.alice.project_id, NIL);
        let mut req = s.req(method(route.method), &s.alice, &path);
        if route.body.is_some() {
            req = req.json(&json!({}));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{} {} not routed", route.method, route.path);
        assert_ne!(
            body["error"]["code"], "no_route",
            "{} {} not routed",
            route.method, route.path
        );
    }
    // And the router serves nothing undocumented: an unknown path is `no_route`.
    let (status, body) = s.get(&s.alice, "/v1/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "no_route");
    let (status, _) = s.call(Method::PATCH, &s.alice, "/v1/projects", None).await;
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_listed_created_and_guarded() {
    let s = server().await;
    let (status, me) = s.get(&s.alice, "/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], "alice@example.com");
    let (status, created) = s
        .post(&s.alice, "/v1/projects", json!({ "name": "second" }))
        .await;
    assert_eq!(status, 201);
    assert_eq!(created["active_sandboxes"], 0);
    let (_, list) = s.get(&s.alice, "/v1/projects").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-project", "second"]);
    let (status, one) = s
        .get(&s.alice, &format!("/v1/projects/{}", s.alice.project_id))
        .await;
    assert_eq!((status, one["name"].as_str()), (200, Some("alice-project")));
    // Bob sees only his own, and is refused Alice's.
    let (_, bobs) = s.get(&s.bob, "/v1/projects").await;
    assert_eq!(bobs["items"].as_array().unwrap().len(), 1);
    let (status, body) = s
        .get(&s.bob, &format!("/v1/projects/{}", s.alice.project_id))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = s.get(&s.bob, &format!("/v1/projects/{NIL}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.get(&s.bob, "/v1/projects/not-a-uuid").await;
    assert_eq!(status, 404);
    let (status, body) = s
        .post(&s.alice, "/v1/projects", json!({ "name": "  " }))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("name"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_set_listed_masked_and_deleted_at_both_levels() {
    let s = server().await;
    let secret = "sk-ant-api03-very-secret-abcd";
    let (status, key) = s
        .call(
            Method::PUT,
            &s.alice,
            "/v1/keys/anthropic",
            Some(json!({ "value": secret })),
        )
        .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["masked"], "****abcd");
    assert_eq!(key["owner"], "user");
    let project_keys = format!("/v1/projects/{}/keys", s.alice.project_id);
    let (status, key) = s
        .call(
            Method::PUT,
            &s.alice,
            &format!("{project_keys}/github"),
            Some(json!({ "value": "ghp_0123456789wxyz" })),
        )
        .await;
    assert_eq!((status, key["masked"].as_str()), (200, Some("****wxyz")));
    let (_, mine) = s.get(&s.alice, "/v1/keys").await;
    let (_, projects) = s.get(&s.alice, &project_keys).await;
    let all = format!("{mine}{projects}");
    assert!(!all.contains(secret) && !all.contains("ghp_0123"), "{all}");
    assert_eq!(mine["items"][0]["provider"], "anthropic");
    assert_eq!(projects["items"][0]["provider"], "github");
    // Bob can neither read nor write Alice's project keys.
    let (status, _) = s.get(&s.bob, &project_keys).await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            Method::PUT,
            &s.bob,
            &format!("{project_keys}/github"),
            Some(json!({ "value": "x" })),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            Method::DELETE,
            &s.bob,
            &format!("{project_keys}/github"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    // Unknown providers name the field.
    let (status, body) = s
        .call(
            Method::PUT,
            &s.alice,
            "/v1/keys/acme",
            Some(json!({ "value": "x" })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("provider"))
    );
    let (status, body) = s
        .call(
            Method::PUT,
            &s.alice,
            "/v1/keys/openai",
            Some(json!({ "value": "" })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("value"))
    );
    // Delete, then deleting again is a 404.
    let (status, _) = s
        .call(Method::DELETE, &s.alice, "/v1/keys/anthropic", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .call(Method::DELETE, &s.alice, "/v1/keys/anthropic", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(
            Method::DELETE,
            &s.alice,
            &format!("{project_keys}/github"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, mine) = s.get(&s.alice, "/v1/keys").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validation_errors_are_structured_and_name_the_field() {
    let s = server().await;
    let cases = [
        (
            json!({ "tool": "shell", "prompt": "x", "memory_mb": 100 }),
            422,
            "memory_mb",
        ),
        (
            json!({ "tool": "shell", "prompt": "x", "cpu_count": 9 }),
            422,
            "cpu_count",
        ),
        (
            json!({ "tool": "shell", "prompt": "x", "timeout_ms": 1000 }),
            422,
            "timeout_ms",
        ),
        (json!({ "tool": "hammer", "prompt": "x" }), 422, "tool"),
        (
            json!({ "tool": "shell", "prompt": "x", "project_id": "zzz" }),
            422,
            "project_id",
        ),
        (json!({ "tool": "claude", "prompt": "x" }), 422, "keys"),
    ];
    for (body, status, field) in cases {
        let (got, answer) = s.post(&s.alice, "/v1/sandboxes", body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().len() > 5);
    }
    let (status, body) = s
        .post(
            &s.alice,
            "/v1/sandboxes",
            json!({ "tool": "claude", "prompt": "x" }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("missing_provider_key"))
    );
    // Shapes serde refuses: 400 with the field in the message.
    let (status, body) = s
        .post(&s.alice, "/v1/sandboxes", json!({ "tool": "shell" }))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prompt"),
        "{body}"
    );
    let (status, body) = s
        .post(
            &s.alice,
            "/v1/sandboxes",
            json!({ "prompt": "x", "memroy": 1 }),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memroy"),
        "{body}"
    );
    let res = s
        .req(Method::POST, &s.alice, "/v1/sandboxes")
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Someone else's project: 403 before anything is created.
    let (status, _) = s
        .post(
            &s.bob,
            "/v1/sandboxes",
            json!({ "tool": "shell", "prompt": "x", "project_id": s.alice.project_id }),
        )
        .await;
    assert_eq!(status, 403);
    let (_, list) = s.get(&s.alice, "/v1/sandboxes").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_with_413() {
    let s = server_with(ApiConfig {
        body_limit: 1024,
        ..Default::default()
    })
    .await;
    let (status, body) = s
        .post(
            &s.alice,
            "/v1/sandboxes",
            json!({ "tool": "shell", "prompt": "x".repeat(4096) }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_sandbox_runs_its_command_and_streams_the_output() {
    let s = server().await;
    let id = s.shell(&s.alice, "echo hello-from-shell").await;
    let (status, sandbox) = s.get(&s.alice, &format!("/v1/sandboxes/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(sandbox["status"], "running");
    assert_eq!(sandbox["cli_tool"], "shell");
    let res = s
        .req(Method::GET, &s.alice, &format!("/v1/sandboxes/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(res, |e| {
        e.data["seq"] == 2 && (e.event == "finished" || e.data["message"]["status"] == "completed")
    })
    .await;
    let text = transcript(&events);
    assert!(text.contains("hello-from-shell"), "{events:?}");
    let messages = s
        .wait_messages(&s.alice, &id, |m| {
            m.len() == 2 && m[1]["status"] == "completed"
        })
        .await;
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "echo hello-from-shell");
    assert!(
        messages[1]["content"]
            .as_str()
            .unwrap()
            .contains("hello-from-shell")
    );
    assert!(messages[1].get("raw_log").is_none());
    let (_, raw) = s
        .get(
            &s.alice,
            &format!("/v1/sandboxes/{id}/messages?raw=true&after_seq=1"),
        )
        .await;
    assert_eq!(raw["items"].as_array().unwrap().len(), 1);
    assert!(raw["items"][0].get("raw_log").is_some());
    // The project counts it as active.
    let (_, project) = s
        .get(&s.alice, &format!("/v1/projects/{}", s.alice.project_id))
        .await;
    assert_eq!(project["active_sandboxes"], 1);
}

/// What a client would show: messages upserted by seq, text appended.
fn transcript(events: &[Sse]) -> String {
    let mut messages: std::collections::BTreeMap<i64, String> = Default::default();
    for e in events {
        let seq = e.data["seq"].as_i64().unwrap_or(0);
        match e.event.as_str() {
            "message" => {
                messages.insert(
                    seq,
                    e.data["message"]["content"].as_str().unwrap().to_owned(),
                );
            }
            "text" => messages
                .entry(seq)
                .or_default()
                .push_str(e.data["text"].as_str().unwrap()),
            _ => {}
        }
    }
    messages.into_values().collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_last_event_id_without_gaps_or_duplicates() {
    let s = server().await;
    let id = s
        .shell(&s.alice, "for i in 1 2 3; do echo line-$i; sleep 0.2; done")
        .await;
    s.wait_messages(&s.alice, &id, |m| {
        m.len() == 2 && m[1]["status"] == "completed"
    })
    .await;
    let (status, _) = s
        .post(
            &s.alice,
            &format!("/v1/sandboxes/{id}/messages"),
            json!({ "text": "echo second-run" }),
        )
        .await;
    assert_eq!(status, 201);
    let messages = s
        .wait_messages(&s.alice, &id, |m| {
            m.len() == 4 && m[3]["status"] == "completed"
        })
        .await;
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap()
            .contains("second-run")
    );
    // A full read, then a read resumed after each id seen: always exactly the rest.
    let events_url = format!("/v1/sandboxes/{id}/events");
    let full = read_events(
        s.req(Method::GET, &s.alice, &events_url)
            .send()
            .await
            .unwrap(),
        |e| {
            e.data["seq"] == 4
                && (e.event == "finished"
                    || (e.event == "message" && e.data["message"]["status"] == "completed"))
        },
    )
    .await;
    let seqs: Vec<i64> = full
        .iter()
        .map(|e| e.data["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{full:?}");
    for (i, e) in full.iter().enumerate() {
        let last = e.id.clone().unwrap();
        let expected: Vec<i64> = seqs[i + 1..].to_vec();
        if expected.is_empty() {
            continue;
        }
        let res = s
            .req(Method::GET, &s.alice, &events_url)
            .header("last-event-id", &last)
            .send()
            .await
            .unwrap();
        let rest = read_events(res, |e| e.data["seq"] == 4).await;
        let got: Vec<i64> = rest
            .iter()
            .map(|e| e.data["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(got, expected, "after id {last}");
    }
    // ?after= does the same for clients that cannot set headers.
    let res = s
        .req(Method::GET, &s.alice, &format!("{events_url}?after=3"))
        .send()
        .await
        .unwrap();
    let rest = read_events(res, |e| e.data["seq"] == 4).await;
    assert_eq!(rest.len(), 1);
    assert!(
        rest[0].data["message"]["content"]
            .as_str()
            .unwrap()
            .contains("second-run")
    );
    // A bad Last-Event-ID is a structured 422.
    let res = s
        .req(Method::GET, &s.alice, &events_url)
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_message_resumes_with_the_whole_message_once() {
    let s = server().await;
    let id = s
        .shell(&s.alice, "echo first; sleep 1.5; echo second")
        .await;
    let url = format!("/v1/sandboxes/{id}/events");
    // Read until the first line of output, then hang up.
    let partial = read_events(
        s.req(Method::GET, &s.alice, &url).send().await.unwrap(),
        |e| {
            e.event == "text"
                || (e.event == "message"
                    && e.data["message"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .contains("first"))
        },
    )
    .await;
    let last = partial.last().unwrap().id.clone().unwrap();
    assert_eq!(
        last, "1",
        "the assistant message (seq 2) is still open: {partial:?}"
    );
    let rest = read_events(
        s.req(Method::GET, &s.alice, &url)
            .header("last-event-id", &last)
            .send()
            .await
            .unwrap(),
        |e| {
            e.event == "finished"
                || (e.event == "message" && e.data["message"]["status"] == "completed")
        },
    )
    .await;
    let text = transcript(&rest);
    assert!(
        text.contains("first") && text.contains("second"),
        "{rest:?}"
    );
    assert_eq!(text.matches("first").count(), 1, "{rest:?}");
    assert!(rest.iter().all(|e| e.data["seq"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_kill_delete_restore_purge_pause_resume() {
    let s = server().await;
    let id = s.shell(&s.alice, "sleep 30").await;
    let base = format!("/v1/sandboxes/{id}");
    let (status, paused) = s.post(&s.alice, &format!("{base}/pause"), json!({})).await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    let (status, body) = s.post(&s.alice, &format!("{base}/pause"), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, resumed) = s.post(&s.alice, &format!("{base}/resume"), json!({})).await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("running")));
    // An open event stream ends with `end` when the sandbox is killed.
    let stream = s
        .req(Method::GET, &s.alice, &format!("{base}/events"))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_events(stream, |e| e.event == "end"));
    let (status, killed) = s.post(&s.alice, &format!("{base}/kill"), json!({})).await;
    assert_eq!(
        (status, killed["status"].as_str()),
        (200, Some("killed")),
        "{killed}"
    );
    let events = tokio::time::timeout(Duration::from_secs(15), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.last().unwrap().event, "end");
    assert_eq!(events.last().unwrap().data["status"], "killed");
    let (status, _) = s.post(&s.alice, &format!("{base}/kill"), json!({})).await;
    assert_eq!(status, 409);
    let (status, _) = s
        .post(
            &s.alice,
            &format!("{base}/messages"),
            json!({ "text": "hi" }),
        )
        .await;
    assert_eq!(status, 409);
    // Events of a finished sandbox: the stored messages, then `end`.
    let replay = read_events(
        s.req(Method::GET, &s.alice, &format!("{base}/events"))
            .send()
            .await
            .unwrap(),
        |_| false,
    )
    .await;
    assert_eq!(replay.last().unwrap().event, "end");
    assert!(replay.iter().any(|e| e.event == "message"));
    // Soft delete hides it; restore brings it back; purge removes it.
    let (status, _) = s.call(Method::DELETE, &s.alice, &base, None).await;
    assert_eq!(status, 204);
    let (_, list) = s.get(&s.alice, "/v1/sandboxes").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (_, trash) = s.get(&s.alice, "/v1/sandboxes?deleted=only").await;
    assert_eq!(trash["items"][0]["id"], id.as_str());
    let (status, _) = s.call(Method::DELETE, &s.alice, &base, None).await;
    assert_eq!(status, 409);
    let (status, restored) = s
        .post(&s.alice, &format!("{base}/restore"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(restored["deleted_at"].is_null());
    let (status, _) = s.post(&s.alice, &format!("{base}/purge"), json!({})).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&s.alice, &base).await;
    assert_eq!(status, 404);
    // Usage outlives the purge, in the project and user totals.
    let (status, usage) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/usage", s.alice.project_id),
        )
        .await;
    assert_eq!(status, 200);
    assert!(usage["compute_seconds"].as_f64().unwrap() >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_sandbox_is_forbidden_on_every_route() {
    let s = server().await;
    let id = s.shell(&s.alice, "sleep 30").await;
    for route in ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/v1/sandboxes/{id}"))
    {
        let path = fill(route.path, NIL, &id);
        let mut req = s.req(method(route.method), &s.bob, &path);
        if route.body.is_some() {
            req = req.json(&json!({ "text": "pwned" }));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 403, "{} {}", route.method, route.path);
        let unknown = fill(route.path, NIL, NIL);
        let mut req = s.req(method(route.method), &s.bob, &unknown);
        if route.body.is_some() {
            req = req.json(&json!({ "text": "x" }));
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            404,
            "{} {}",
            route.method,
            route.path
        );
    }
    for route in ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/v1/projects/{id}"))
    {
        let path = fill(route.path, &s.alice.project_id, NIL);
        let mut req = s.req(method(route.method), &s.bob, &path);
        if route.body.is_some() {
            req = req.json(&json!({ "value": "x" }));
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            403,
            "{} {}",
            route.method,
            route.path
        );
    }
    // Bob's lists never show Alice's sandbox, even filtered by her project.
    let (_, list) = s.get(&s.bob, "/v1/sandboxes").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (status, _) = s
        .get(
            &s.bob,
            &format!("/v1/sandboxes?project_id={}", s.alice.project_id),
        )
        .await;
    assert_eq!(status, 403);
    // Nothing happened to it.
    let (_, sandbox) = s.get(&s.alice, &format!("/v1/sandboxes/{id}")).await;
    assert_eq!(sandbox["status"], "running");
    s.post(&s.alice, &format!("/v1/sandboxes/{id}/kill"), json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_paginate() {
    let s = server().await;
    let a = s.shell(&s.alice, "echo a").await;
    let b = s.shell(&s.alice, "echo b").await;
    let c = s.shell(&s.alice, "echo c").await;
    s.post(&s.alice, &format!("/v1/sandboxes/{a}/kill"), json!({}))
        .await;
    let (_, running) = s.get(&s.alice, "/v1/sandboxes?status=running").await;
    let ids: Vec<&str> = running["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c.as_str(), b.as_str()]);
    let (_, killed) = s
        .get(
            &s.alice,
            &format!(
                "/v1/sandboxes?status=killed&tool=shell&project_id={}",
                s.alice.project_id
            ),
        )
        .await;
    assert_eq!(killed["items"][0]["id"], a.as_str());
    let (_, none) = s.get(&s.alice, "/v1/sandboxes?tool=claude").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    // Pages of one, newest first, with no repeats.
    let mut seen = Vec::new();
    let mut url = "/v1/sandboxes?limit=1".to_owned();
    loop {
        let (status, page) = s.get(&s.alice, &url).await;
        assert_eq!(status, 200);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("/v1/sandboxes?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [c.clone(), b.clone(), a.clone()]);
    for (query, field) in [
        ("status=sleeping", "status"),
        ("deleted=maybe", "deleted"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=abc", "cursor"),
    ] {
        let (status, body) = s.get(&s.alice, &format!("/v1/sandboxes?{query}")).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{query}"
        );
    }
    // Kill all of the project.
    let (status, body) = s
        .post(
            &s.alice,
            &format!("/v1/projects/{}/kill-all", s.alice.project_id),
            json!({}),
        )
        .await;
    assert_eq!((status, body["killed"].as_u64()), (200, Some(2)));
    let (_, project) = s
        .get(&s.alice, &format!("/v1/projects/{}", s.alice.project_id))
        .await;
    assert_eq!(project["active_sandboxes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_creation_is_rate_limited_per_user_with_retry_after() {
    let s = server_with(ApiConfig {
        create_rate: courier_api::RateLimit {
            burst: 2,
            per_minute: 1,
        },
        ..Default::default()
    })
    .await;
    s.shell(&s.alice, "true").await;
    s.shell(&s.alice, "true").await;
    let res = s
        .req(Method::POST, &s.alice, "/v1/sandboxes")
        .json(&json!({ "tool": "shell", "prompt": "true" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Bob has his own bucket.
    s.shell(&s.bob, "true").await;
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("courier_rate_limited_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("courier_sandboxes_created_total 3\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_quotas_per_user_and_project_answer_429_until_a_sandbox_ends() {
    // What an API-key holder tries: more live sandboxes than the quotas allow, in one
    // project or spread over several, and paused ones kept around. Every create past a
    // quota is 429 `quota_exceeded` naming it; other users are not affected; a killed
    // sandbox frees its place.
    let s = server_with_quota(SandboxQuota {
        per_user: Some(3),
        per_project: Some(2),
    })
    .await;
    let first = s.shell(&s.alice, "sleep 30").await;
    let second = s.shell(&s.alice, "sleep 30").await;
    let (status, paused) = s
        .post(
            &s.alice,
            &format!("/v1/sandboxes/{second}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    let (status, body) = s
        .post(
            &s.alice,
            "/v1/sandboxes",
            json!({ "tool": "shell", "prompt": "true" }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_sandboxes_per_project")
            && message.contains("may have 2 live sandboxes")
            && message.contains("this project has 2"),
        "{message}"
    );
    // A second project: the user's quota still holds.
    let (status, project) = s
        .post(&s.alice, "/v1/projects", json!({ "name": "second" }))
        .await;
    assert_eq!(status, 201, "{project}");
    let other = project["id"].as_str().unwrap();
    let (status, body) = s
        .post(
            &s.alice,
            "/v1/sandboxes",
            json!({ "tool": "shell", "prompt": "sleep 30", "project_id": other }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(
            &s.alice,
            "/v1/sandboxes",
            json!({ "tool": "shell", "prompt": "true", "project_id": other }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("quota_exceeded"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_sandboxes_per_user") && message.contains("you have 3"),
        "{message}"
    );
    // Bob has his own quota.
    s.shell(&s.bob, "true").await;
    // Killing one frees its place.
    let (status, killed) = s
        .post(&s.alice, &format!("/v1/sandboxes/{first}/kill"), json!({}))
        .await;
    assert_eq!(status, 200, "{killed}");
    s.shell(&s.alice, "true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_learnings_versions_and_template_builds_are_readable() {
    let s = server().await;
    let id = s.shell(&s.alice, "echo x").await;
    s.post(&s.alice, &format!("/v1/sandboxes/{id}/kill"), json!({}))
        .await;
    let (status, usage) = s.get(&s.alice, &format!("/v1/sandboxes/{id}/usage")).await;
    assert_eq!(status, 200);
    for field in [
        "compute_seconds",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ] {
        assert!(usage[field].is_number(), "{field}: {usage}");
    }
    let (status, report) = s.get(&s.alice, "/v1/usage").await;
    assert_eq!(status, 200);
    assert_eq!(
        report["projects"][0]["project_id"],
        s.alice.project_id.as_str()
    );
    assert!(report["total"]["compute_seconds"].is_number());
    let project: courier_store::ProjectId = s.alice.project_id.parse().unwrap();
    s.store
        .create_learning(courier_store::NewLearning {
            project_id: project,
            category: courier_store::LearningCategory::ALL[0],
            content: "run tests with nextest".into(),
            evidence: Some("#3: `cargo test` took 9 min, `cargo nextest run` 2".into()),
            source_sandbox_id: None,
        })
        .await
        .unwrap();
    s.store
        .create_learning_version(project, "compiled".into(), true)
        .await
        .unwrap();
    let (status, learnings) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/learnings", s.alice.project_id),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(learnings["items"][0]["content"], "run tests with nextest");
    assert_eq!(
        learnings["items"][0]["evidence"],
        "#3: `cargo test` took 9 min, `cargo nextest run` 2"
    );
    let (status, versions) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/learning-versions", s.alice.project_id),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(versions["items"][0]["active"], true);
    let (status, builds) = s.get(&s.alice, "/v1/template-builds?tool=shell").await;
    assert_eq!(
        (status, builds["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_fails_readiness() {
    let s = server().await;
    let id = s.shell(&s.alice, "sleep 30").await;
    let stream = s
        .req(Method::GET, &s.alice, &format!("/v1/sandboxes/{id}/events"))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_events(stream, |e| e.event == "shutdown"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.api.begin_shutdown();
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.last().unwrap().event, "shutdown");
    let res = s
        .http
        .get(format!("{}/readyz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    s.post(&s.alice, &format!("/v1/sandboxes/{id}/kill"), json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_builds_start_for_tools_with_a_template_and_are_followed_to_their_end() {
    let s = server().await;
    for bad in [json!({"tool": "shell"}), json!({"tool": "nope"})] {
        let (status, body) = s
            .call(
                Method::POST,
                &s.alice,
                "/v1/template-builds",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("tool")),
            "{bad}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("allowed: claude, opencode, codex, pi"),
            "{message}"
        );
    }
    let (status, _) = s
        .call(
            Method::POST,
            &s.alice,
            "/v1/template-builds",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400);

    let (status, build) = s
        .call(
            Method::POST,
            &s.alice,
            "/v1/template-builds",
            Some(json!({"tool": "claude"})),
        )
        .await;
    assert_eq!(status, 202, "{build}");
    assert_eq!(build["tool_id"], "claude");
    assert_eq!(build["template_name"], "claude");
    assert_eq!(build["cli_version"], "2.1.332", "the pinned version");
    assert_eq!(build["status"], "building");
    // The provider (the host stand-in) reports the build ready: the row follows.
    let mut finished = Value::Null;
    for _ in 0..200 {
        let (_, list) = s.get(&s.bob, "/v1/template-builds?tool=claude").await;
        let row = list["items"][0].clone();
        if row["status"] != "building" {
            finished = row;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(finished["id"], build["id"]);
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["error"], Value::Null);
}
