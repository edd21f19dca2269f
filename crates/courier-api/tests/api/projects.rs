//! Projects and provider keys: listed, created, guarded, masked.

use reqwest::Method;
use serde_json::json;

use crate::NIL;
use crate::common::server;

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
async fn settings_are_saved_masked_validated_and_guarded() {
    let s = server().await;
    let path = format!("/v1/projects/{}/settings", s.alice.project_id);
    let (status, empty) = s.get(&s.alice, &path).await;
    assert_eq!(status, 200);
    assert_eq!(empty["env_vars"], json!([]));
    assert_eq!(empty["sandbox_defaults"]["tool"], json!(null));

    let secret = "very-secret-token-wxyz";
    let body = json!({
        "repo_url": "https://x:ghp_embedded@github.com/acme/engine.git",
        "env_vars": { "API_TOKEN": secret },
        "system_prompt": "Be brief.",
        "skills": [{ "name": "review", "content": "---\nname: review\ndescription: Reviews diffs\n---\nReview." }],
        "sandbox_defaults": { "tool": "shell", "cpu_count": 4 }
    });
    let (status, saved) = s.call(Method::PUT, &s.alice, &path, Some(body)).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(
        saved["env_vars"],
        json!([{ "name": "API_TOKEN", "masked": "****wxyz" }])
    );
    assert_eq!(saved["repo_url"], "https://github.com/acme/engine.git");
    assert!(!saved.to_string().contains(secret));
    assert!(!saved.to_string().contains("ghp_embedded"));
    let (_, read) = s.get(&s.alice, &path).await;
    assert_eq!(read, saved);
    assert!(!read.to_string().contains(secret));

    // A null value keeps the stored one.
    let keep = json!({ "env_vars": { "API_TOKEN": null } });
    let (status, kept) = s.call(Method::PUT, &s.alice, &path, Some(keep)).await;
    assert_eq!((status, &kept["env_vars"]), (200, &saved["env_vars"]));
    assert_eq!(kept["system_prompt"], json!(null));

    // Validation errors name the field and what is allowed.
    for (bad, field, allowed) in [
        (
            json!({ "env_vars": { "1X": "v" } }),
            "env_vars",
            "A-Za-z0-9_",
        ),
        (
            json!({ "skills": [{ "name": "Bad Name", "content": "x" }] }),
            "skills.name",
            "a-z, 0-9",
        ),
        (
            json!({ "commands": [{ "name": "a b", "content": "x" }] }),
            "commands.name",
            "A-Za-z0-9",
        ),
        (
            json!({ "sandbox_defaults": { "memory_mb": 1 } }),
            "memory_mb",
            "256",
        ),
        (
            json!({ "sandbox_defaults": { "tool": "vim" } }),
            "tool",
            "claude",
        ),
    ] {
        let (status, body) = s.call(Method::PUT, &s.alice, &path, Some(bad)).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(allowed), "{message}");
    }

    // Bob can neither read nor change Alice's settings.
    let (status, _) = s.get(&s.bob, &path).await;
    assert_eq!(status, 403);
    let (status, _) = s.call(Method::PUT, &s.bob, &path, Some(json!({}))).await;
    assert_eq!(status, 403);
}
