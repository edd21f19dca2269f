//! Usage, learnings, learning versions and template builds.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_learnings_versions_and_template_builds_are_readable() {
    let s = server().await;
    let id = s.shell(&s.alice, "echo x").await;
    // While the sandbox lives, its compute seconds count up (they are recorded at its end).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, live) = s.get(&s.alice, &format!("/v1/sandboxes/{id}/usage")).await;
    assert_eq!(status, 200);
    let live_seconds = live["compute_seconds"].as_f64().unwrap();
    assert!(live_seconds >= 1.0, "{live}");
    s.post(&s.alice, &format!("/v1/sandboxes/{id}/kill"), json!({}))
        .await;
    let (status, usage) = s.get(&s.alice, &format!("/v1/sandboxes/{id}/usage")).await;
    assert_eq!(status, 200);
    for field in [
        "compute_seconds",
        "cpu_seconds",
        "memory_gib_seconds",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ] {
        assert!(usage[field].is_number(), "{field}: {usage}");
    }
    // The record written at the kill replaces the live figure, not added to it.
    let ended_seconds = usage["compute_seconds"].as_f64().unwrap();
    assert!(
        ended_seconds >= live_seconds && ended_seconds < live_seconds + 30.0,
        "{live} then {usage}"
    );
    let (status, report) = s.get(&s.alice, "/v1/usage").await;
    assert_eq!(status, 200);
    assert_eq!(
        report["projects"][0]["project_id"],
        s.alice.project_id.as_str()
    );
    assert!(report["total"]["compute_seconds"].is_number());
    // Compute is also counted per vCPU and per GiB of RAM allocated, the figures E2B
    // bills by.
    let (cpu, memory) = (
        usage["cpu_seconds"].as_f64().unwrap(),
        usage["memory_gib_seconds"].as_f64().unwrap(),
    );
    assert!(cpu > 0.0 && memory > 0.0, "{usage}");
    assert_eq!(
        report["total"]["cpu_seconds"].as_f64(),
        Some(cpu),
        "{report}"
    );
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
