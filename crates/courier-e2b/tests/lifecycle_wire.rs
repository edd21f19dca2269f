//! Wire tests for the lifecycle and observation calls: idempotent create, logs, and
//! several sandboxes' metrics (exact requests, answers read).

#![allow(clippy::unwrap_used)]

mod support;

use courier_e2b::{Error, LogsQuery, Sandbox, models::LogLevel};
use serde_json::json;
use support::{Canned, FakeServer, SANDBOX_ID};

fn created() -> serde_json::Value {
    json!({
        "templateID": "t1", "sandboxID": SANDBOX_ID, "clientID": "6532622b",
        "envdVersion": "0.6.13", "envdAccessToken": "tok", "trafficAccessToken": null,
        "domain": null
    })
}

#[tokio::test]
async fn an_idempotent_create_sends_its_key_and_is_retried() {
    let server = FakeServer::start().await;
    server.push(Canned::json(503, json!({"code": 503, "message": "busy"})));
    server.push(Canned::json(201, created()));
    let sandbox = Sandbox::builder()
        .auto_pause(true)
        .auto_resume(true)
        .idempotency_key("job-42")
        .create(&server.client())
        .await
        .unwrap();
    assert_eq!(sandbox.id(), SANDBOX_ID);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "retried once: {requests:#?}");
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("job-42"));
        assert_eq!(
            request.json(),
            json!({"templateID": "base", "metadata": {}, "envVars": {}, "autoPause": true,
                   "autoResume": {"enabled": true}})
        );
    }
}

#[tokio::test]
async fn a_reused_key_with_another_body_surfaces_the_servers_refusal() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        422,
        json!({"code": 422, "message": "the Idempotency-Key header was already used with a different request body"}),
    ));
    let err = Sandbox::builder()
        .idempotency_key("k")
        .create(&server.client())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 422, message, .. } if message.contains("Idempotency-Key")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn logs_send_the_v2_query_and_read_the_entries() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!({"logs": [{"timestamp": "2026-01-01T00:00:00Z", "level": "warn",
                         "message": "disk low", "fields": {"source": "envd"}}]}),
    ));
    let cursor = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
    let logs = server
        .client()
        .logs(
            SANDBOX_ID,
            &LogsQuery::new()
                .cursor(cursor)
                .limit(10)
                .backward()
                .level(LogLevel::Warn)
                .search("disk low"),
        )
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].level, LogLevel::Warn);
    assert_eq!(logs[0].fields["source"], "envd");
    let request = server.only_request();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/v2/sandboxes/sbx123/logs");
    assert_eq!(
        request.query.as_deref(),
        Some("cursor=1700000000123&limit=10&direction=backward&level=warn&search=disk+low")
    );
}

#[tokio::test]
async fn metrics_of_several_sandboxes_are_one_request() {
    let server = FakeServer::start().await;
    let sample = json!({"timestamp": "2026-01-01T00:00:00Z", "timestampUnix": 1_767_225_600,
        "cpuCount": 2, "cpuUsedPct": 1.5, "memUsed": 10, "memTotal": 20, "memCache": 0,
        "diskUsed": 1, "diskTotal": 2});
    server.push(Canned::json(200, json!({"sandboxes": {"a": sample}})));
    let many = server.client().metrics_many(&["a", "b"]).await.unwrap();
    assert_eq!(many.len(), 1);
    assert_eq!(many["a"].mem_total, 20);
    let request = server.only_request();
    assert_eq!(request.path, "/sandboxes/metrics");
    assert_eq!(request.query.as_deref(), Some("sandbox_ids=a%2Cb"));
    // No ids: no request.
    assert!(server.client().metrics_many(&[]).await.unwrap().is_empty());
    assert_eq!(server.requests().len(), 1);
}
