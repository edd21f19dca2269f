//! Personas, workflow runs, work chains and issue sessions over HTTP: the fake `claude`
//! on the host stand-in scripts the checker's verdict (`PASS_AT_COMMITS`) and the
//! scanner's cards (`CARDS`); every answer is checked against its documented schema.

use reqwest::Method;
use serde_json::{Value, json};

use crate::NIL;
use crate::common::{Server, server};

fn final_status(status: &Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "failed" | "cancelled"))
}

async fn put(s: &Server, who: &crate::common::Account, path: &str, body: Value) -> (u16, Value) {
    s.call(Method::PUT, who, path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_are_created_listed_replaced_and_deleted_by_their_owner_only() {
    let s = server().await;
    let personas = format!("/v1/projects/{}/personas", s.alice.project_id);
    let (status, created) = s
        .post(
            &s.alice,
            &personas,
            json!({
                "name": "reviewer",
                "tool": "claude",
                "system_prompt": "Be strict.",
                "skills": [{ "name": "review", "content": "---\nname: review\ndescription: Reviews diffs\n---\nReview." }]
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "reviewer");
    assert_eq!(created["tool"], "claude");
    assert_eq!(created["skills"][0]["name"], "review");
    let id = created["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/personas/{id}");

    let (status, list) = s.get(&s.alice, &personas).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, got) = s.get(&s.alice, &one).await;
    assert_eq!((status, &got["id"]), (200, &created["id"]));

    // A second persona of that name: 409.
    let (status, body) = s
        .post(&s.alice, &personas, json!({ "name": "reviewer" }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    // An unknown tool: 422 naming `tool`.
    let (status, body) = s
        .post(
            &s.alice,
            &personas,
            json!({ "name": "other", "tool": "nope" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "tool");
    // Unknown fields are refused.
    let (status, _) = s
        .post(&s.alice, &personas, json!({ "name": "x", "colour": "red" }))
        .await;
    assert_eq!(status, 400);

    let (status, replaced) = put(
        &s,
        &s.alice,
        &one,
        json!({ "name": "strict reviewer", "tool": "codex" }),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["name"], "strict reviewer");
    assert_eq!(replaced["tool"], "codex");
    assert_eq!(replaced["skills"], json!([]));

    // Bob: 403 on Alice's persona and project, 404 on an unknown id.
    let (status, _) = s.get(&s.bob, &one).await;
    assert_eq!(status, 403);
    let (status, _) = put(&s, &s.bob, &one, json!({ "name": "pwned" })).await;
    assert_eq!(status, 403);
    let (status, _) = s.call(Method::DELETE, &s.bob, &one, None).await;
    assert_eq!(status, 403);
    let (status, _) = s.get(&s.bob, &personas).await;
    assert_eq!(status, 403);
    let (status, _) = s.get(&s.alice, &format!("/v1/personas/{NIL}")).await;
    assert_eq!(status, 404);

    let (status, _) = s.call(Method::DELETE, &s.alice, &one, None).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&s.alice, &one).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_passes_its_check_and_lists_its_steps_and_sandboxes() {
    let s = server().await;
    s.anthropic_key(&s.alice).await;
    let runs = format!("/v1/projects/{}/workflow-runs", s.alice.project_id);
    // A bad step shape names `steps`; a bad override names its field.
    let (status, body) = s
        .post(
            &s.alice,
            &runs,
            json!({ "prompt": "x", "steps": [{ "role": "checker" }] }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "steps");
    let (status, body) = s
        .post(
            &s.alice,
            &runs,
            json!({ "prompt": "x", "maxIterations": 99 }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "max_iterations");

    let (status, run) = s
        .post(
            &s.alice,
            &runs,
            json!({
                "prompt": "Add a greeting module. PASS_AT_COMMITS 0",
                "tool": "claude",
                "maxIterations": 2,
                "checkerCliId": "claude"
            }),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["spec"]["max_iterations"], 2);
    assert_eq!(run["spec"]["checker_cli_id"], "claude");
    let id = run["id"].as_str().unwrap().to_owned();
    let detail_path = format!("/v1/workflow-runs/{id}");

    // Another user's run: 403 on every route.
    let (status, _) = s.get(&s.bob, &detail_path).await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(Method::POST, &s.bob, &format!("{detail_path}/cancel"), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = s.get(&s.bob, &runs).await;
    assert_eq!(status, 403);

    let detail = s
        .wait_for(&s.alice, &detail_path, |d| {
            final_status(&d["run"]["status"])
        })
        .await;
    assert_eq!(detail["run"]["status"], "succeeded", "{detail}");
    assert_eq!(detail["run"]["verdict"], "pass");
    let roles: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["designer", "checker"], "{detail}");
    assert_eq!(detail["steps"][1]["verdict"], "pass");
    let sandboxes = detail["sandboxes"].as_array().unwrap();
    assert_eq!(sandboxes.len(), 2, "{detail}");
    assert!(
        sandboxes
            .iter()
            .all(|s| s["links"]["run_id"] == id.as_str())
    );
    assert!(detail["usage"]["cost_usd"].is_number());

    // The sandbox list filters by run.
    let (_, by_run) = s
        .get(
            &s.alice,
            &format!("/v1/sandboxes?run_id={id}&deleted=include"),
        )
        .await;
    assert_eq!(by_run["items"].as_array().unwrap().len(), 2, "{by_run}");
    let (_, list) = s.get(&s.alice, &runs).await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    // A finished run cannot be cancelled.
    let (status, body) = s
        .call(
            Method::POST,
            &s.alice,
            &format!("{detail_path}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_is_started_listed_and_an_issue_session_yields_cards() {
    let s = server().await;
    s.anthropic_key(&s.alice).await;
    let project = format!("/v1/projects/{}", s.alice.project_id);

    let (status, body) = s
        .post(
            &s.alice,
            &format!("{project}/work-chains"),
            json!({ "items": [] }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "items");
    let (status, body) = s
        .post(
            &s.alice,
            &format!("{project}/work-chains"),
            json!({ "items": [{ "prompt": "x" }], "pr_mode": "sometimes" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "pr_mode");

    let (status, chain) = s
        .post(
            &s.alice,
            &format!("{project}/work-chains"),
            json!({
                "title": "Two fixes",
                "items": [
                    { "title": "First", "prompt": "Fix the first thing. PASS_AT_COMMITS 0" },
                    { "prompt": "Fix the second thing. PASS_AT_COMMITS 0" }
                ],
                "pr_mode": "per_issue",
                "workflow": { "tool": "claude", "maxIterations": 1 }
            }),
        )
        .await;
    assert_eq!(status, 201, "{chain}");
    assert_eq!(chain["pr_mode"], "per_issue");
    let chain_id = chain["id"].as_str().unwrap().to_owned();
    let (_, chains) = s.get(&s.alice, &format!("{project}/work-chains")).await;
    assert_eq!(chains["items"][0]["id"], chain_id.as_str());
    let (status, _) = s.get(&s.bob, &format!("/v1/work-chains/{chain_id}")).await;
    assert_eq!(status, 403);
    let detail = s
        .wait_for(&s.alice, &format!("/v1/work-chains/{chain_id}"), |d| {
            final_status(&d["chain"]["status"])
        })
        .await;
    assert_eq!(detail["chain"]["status"], "succeeded", "{detail}");
    assert_eq!(detail["items"].as_array().unwrap().len(), 2);
    assert_eq!(detail["items"][0]["title"], "First");
    assert_eq!(detail["runs"].as_array().unwrap().len(), 2, "{detail}");
    let (status, _) = s
        .call(
            Method::POST,
            &s.alice,
            &format!("/v1/work-chains/{chain_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 409);

    // An issue session whose scanner reports two cards.
    let (status, session) = s
        .post(
            &s.alice,
            &format!("{project}/issue-sessions"),
            json!({ "focus": "the parser CARDS 2", "tool": "claude" }),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .get(&s.bob, &format!("/v1/issue-sessions/{session_id}"))
        .await;
    assert_eq!(status, 403);
    let detail = s
        .wait_for(&s.alice, &format!("/v1/issue-sessions/{session_id}"), |d| {
            final_status(&d["session"]["status"])
        })
        .await;
    assert_eq!(detail["session"]["status"], "succeeded", "{detail}");
    let cards = detail["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2, "{detail}");
    assert!(detail["sandbox"]["id"].is_string());
    let (_, by_session) = s
        .get(
            &s.alice,
            &format!("/v1/sandboxes?issue_session_id={session_id}&deleted=include"),
        )
        .await;
    assert_eq!(
        by_session["items"].as_array().unwrap().len(),
        1,
        "{by_session}"
    );
    let (_, sessions) = s.get(&s.alice, &format!("{project}/issue-sessions")).await;
    assert_eq!(sessions["items"][0]["id"], session_id.as_str());

    // One card started as a sandbox (Bob may not).
    let card = cards[0]["id"].as_str().unwrap();
    let start = format!("/v1/issue-cards/{card}/start");
    let (status, _) = s.post(&s.bob, &start, json!({})).await;
    assert_eq!(status, 403);
    let (status, started) = s.post(&s.alice, &start, json!({ "tool": "shell" })).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["card"]["sandbox_id"], started["sandbox"]["id"]);
    assert_eq!(started["sandbox"]["prompt"], cards[0]["suggested_prompt"]);
    // The other to a chain that has ended: refused.
    let other = cards[1]["id"].as_str().unwrap();
    let (status, body) = s
        .post(
            &s.alice,
            &format!("/v1/issue-cards/{other}/chain"),
            json!({ "chain_id": chain_id }),
        )
        .await;
    assert!(status == 409 || status == 422, "{status} {body}");
}
