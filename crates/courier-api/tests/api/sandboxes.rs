//! Sandboxes: create validation, body limits, the lifecycle, lists, rate limits and quotas.

use std::time::Duration;

use courier_api::ApiConfig;
use courier_store::SandboxQuota;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{read_events, server, server_with, server_with_quota};

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
