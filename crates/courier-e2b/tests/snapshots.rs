//! Wire tests for snapshots, forks and pause options: exact paths, queries and bodies
//! (the official SDK's), pagination, per-fork results, error mapping and no retries.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use courier_e2b::{Error, PauseOptions, Sandbox, SnapshotQuery, models::SnapshotInfo};
use serde_json::json;
use support::{ACCESS_TOKEN, API_KEY, Canned, FakeServer, SANDBOX_ID};

fn info(id: &str, names: &[&str]) -> serde_json::Value {
    json!({"snapshotID": id, "names": names})
}

#[tokio::test]
async fn create_snapshot_posts_the_name_once_and_is_not_retried() {
    let server = FakeServer::start().await;
    server.push(Canned::json(201, info("snap_1", &["ready"])));
    let sandbox = server.sandbox(courier_e2b::codec::Codec::Json);
    let snapshot = sandbox.create_snapshot_named("ready").await.unwrap();
    assert_eq!(
        snapshot,
        SnapshotInfo {
            snapshot_id: "snap_1".into(),
            names: vec!["ready".into()]
        }
    );
    let request = server.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/sandboxes/{SANDBOX_ID}/snapshots"));
    assert_eq!(request.header("x-api-key"), Some(API_KEY));
    assert_eq!(request.json(), json!({"name": "ready"}));

    // Without a name the body is `{}`; a 503 is not retried (a retry could take two).
    let server = FakeServer::start().await;
    server.push(Canned::json(503, json!({"code": 503, "message": "busy"})));
    let err = server
        .sandbox(courier_e2b::codec::Codec::Json)
        .create_snapshot()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    let request = server.only_request();
    assert_eq!(request.json(), json!({}));
    // Another key's or an unknown sandbox: not found.
    let server = FakeServer::start().await;
    server.push(Canned::json(404, json!({"code": 404, "message": "no"})));
    let err = server
        .client()
        .create_snapshot("x", None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn list_snapshots_sends_the_filters_and_follows_the_next_token() {
    let server = FakeServer::start().await;
    server.push(Canned::json(200, json!([info("snap_2", &[])])).header("X-Next-Token", "snap_2"));
    server.push(Canned::json(200, json!([info("snap_1", &["ready"])])));
    let all = Sandbox::list_snapshots(
        &server.client(),
        SnapshotQuery::new().sandbox("sbx 1").name("ready").limit(1),
    )
    .await
    .unwrap();
    assert_eq!(
        all.iter()
            .map(|s| s.snapshot_id.as_str())
            .collect::<Vec<_>>(),
        ["snap_2", "snap_1"]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/snapshots");
    assert_eq!(
        requests[0].query.as_deref(),
        Some("sandboxID=sbx+1&name=ready&limit=1")
    );
    assert_eq!(
        requests[1].query.as_deref(),
        Some("sandboxID=sbx+1&name=ready&limit=1&nextToken=snap_2")
    );
}

#[tokio::test]
async fn delete_snapshot_is_the_template_delete_and_false_when_missing() {
    let server = FakeServer::start().await;
    server.push(Canned::status(204));
    server.push(Canned::json(404, json!({"code": 404, "message": "no"})));
    let client = server.client();
    assert!(
        Sandbox::delete_snapshot(&client, "team/snap:default")
            .await
            .unwrap()
    );
    assert!(!client.delete_snapshot("snap_1").await.unwrap());
    let requests = server.requests();
    assert_eq!(requests[0].method, "DELETE");
    // The id is one path segment, whatever it holds.
    assert_eq!(requests[0].path, "/templates/team%2Fsnap%3Adefault");
    assert_eq!(requests[1].path, "/templates/snap_1");
}

#[tokio::test]
async fn fork_posts_count_and_timeout_and_maps_each_result() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        201,
        json!([
            {"sandbox": {"templateID": "base", "sandboxID": "fork1", "clientID": "6532622b",
                         "envdVersion": "0.6.13", "envdAccessToken": ACCESS_TOKEN}},
            {"error": {"code": 429, "message": "the server is at capacity"}},
        ]),
    ));
    let sandbox = server.sandbox(courier_e2b::codec::Codec::Json);
    let results = sandbox
        .fork(2, Some(std::time::Duration::from_millis(60_500)))
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap().id(), "fork1");
    assert!(
        matches!(&results[1], Err(Error::RateLimited { message, .. }) if message.contains("capacity")),
        "{:?}",
        results[1]
    );
    let request = server.only_request();
    assert_eq!(request.path, format!("/sandboxes/{SANDBOX_ID}/fork"));
    assert_eq!(request.json(), json!({"timeout": 61, "count": 2}));

    // Count 0 is refused before any request; a failed fork request is not retried.
    let server = FakeServer::start().await;
    let sandbox = server.sandbox(courier_e2b::codec::Codec::Json);
    let err = sandbox.fork(0, None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(server.requests().is_empty());
    server.push(Canned::json(500, json!({"code": 500, "message": "boom"})));
    sandbox.fork(1, None).await.unwrap_err();
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn pause_with_sends_memory_false_only_for_a_filesystem_only_pause() {
    let server = FakeServer::start().await;
    server.push(Canned::status(204));
    server.push(Canned::status(204));
    server.push(Canned::json(
        409,
        json!({"code": 409, "message": "already paused"}),
    ));
    let sandbox = server.sandbox(courier_e2b::codec::Codec::Json);
    assert!(
        sandbox
            .pause_with(PauseOptions::filesystem_only())
            .await
            .unwrap()
    );
    assert!(sandbox.pause_with(PauseOptions::default()).await.unwrap());
    assert!(
        !sandbox
            .pause_with(PauseOptions::filesystem_only())
            .await
            .unwrap()
    );
    let requests = server.requests();
    assert_eq!(requests[0].path, format!("/sandboxes/{SANDBOX_ID}/pause"));
    assert_eq!(requests[0].json(), json!({"memory": false}));
    assert_eq!(requests[1].json(), json!({}));
}

#[tokio::test]
async fn a_snapshot_is_a_template_and_auto_pause_memory_is_sent() {
    let body = Sandbox::builder()
        .template("snap_1")
        .auto_pause(true)
        .auto_pause_memory(false)
        .to_request();
    let sent = serde_json::to_value(&body).unwrap();
    assert_eq!(sent["templateID"], "snap_1");
    assert_eq!(sent["autoPause"], true);
    assert_eq!(sent["autoPauseMemory"], false);
    // Not sent unless set: the server's default (memory kept) applies.
    let plain = serde_json::to_value(Sandbox::builder().to_request()).unwrap();
    assert!(plain.get("autoPauseMemory").is_none(), "{plain}");
}
