//! Wire tests for the control plane: exact requests, error mapping and retries.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use courier_e2b::{
    Client, ConnectionConfig, Error, NotFoundKind, Sandbox, SandboxQuery, models::SandboxState,
};
use futures::TryStreamExt;
use serde_json::json;
use support::{API_KEY, Canned, FakeServer, SANDBOX_ID};

fn created() -> serde_json::Value {
    json!({
        "templateID": "rki5dems9wqfm4r03t7g", "alias": "base", "sandboxID": SANDBOX_ID,
        "clientID": "6532622b", "envdVersion": "0.6.13", "envdAccessToken": "tok-secret-9876",
        "trafficAccessToken": null, "domain": null
    })
}

fn detail(id: &str) -> serde_json::Value {
    json!({
        "templateID": "t1", "alias": "base", "sandboxID": id, "clientID": "6532622b",
        "startedAt": "2026-01-02T03:04:05.123456789Z", "endAt": "2026-01-02T03:09:05Z",
        "envdVersion": "0.6.13", "cpuCount": 2, "memoryMB": 1024, "diskSizeMB": 4096,
        "state": "running", "metadata": {"k": "v"}, "unknownField": 1
    })
}

#[tokio::test]
async fn create_posts_the_v2_body_with_the_api_key() {
    let server = FakeServer::start().await;
    server.push(Canned::json(201, created()));
    let sandbox = Sandbox::builder()
        .template("base")
        .timeout(Duration::from_secs(120))
        .metadata("k", "v")
        .env("A", "1")
        .create(&server.client())
        .await
        .unwrap();

    let request = server.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v2/sandboxes");
    assert_eq!(request.header("x-api-key"), Some(API_KEY));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        std::str::from_utf8(&request.body).unwrap(),
        r#"{"templateID":"base","timeout":120,"metadata":{"k":"v"},"envVars":{"A":"1"}}"#
    );
    assert_eq!(sandbox.id(), SANDBOX_ID);
    assert_eq!(sandbox.envd_version(), "0.6.13");
    assert_eq!(
        sandbox
            .record()
            .envd_access_token
            .as_ref()
            .unwrap()
            .expose(),
        "tok-secret-9876"
    );
}

#[tokio::test]
async fn create_without_timeout_omits_it_and_sends_empty_maps() {
    let server = FakeServer::start().await;
    server.push(Canned::json(201, created()));
    Sandbox::builder().create(&server.client()).await.unwrap();
    assert_eq!(
        server.only_request().json(),
        json!({"templateID": "base", "metadata": {}, "envVars": {}})
    );
}

#[tokio::test]
async fn create_is_never_retried() {
    let server = FakeServer::start().await;
    server.push(Canned::json(503, json!({"code": 503, "message": "busy"})));
    server.push(Canned::json(201, created()));
    let err = Sandbox::builder()
        .create(&server.client())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn connect_posts_the_v2_connect_path_with_optional_timeout() {
    let server = FakeServer::start().await;
    server.push(Canned::json(200, created()));
    server.push(Canned::json(201, created()));
    let client = server.client();
    Sandbox::connect(&client, SANDBOX_ID).await.unwrap();
    Sandbox::connect_with_timeout(&client, SANDBOX_ID, Duration::from_millis(1500))
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].path, "/v2/sandboxes/sbx123/connect");
    assert_eq!(requests[0].json(), json!({}));
    assert_eq!(requests[1].json(), json!({"timeout": 2}));
}

#[tokio::test]
async fn list_follows_next_token_and_encodes_filters() {
    let server = FakeServer::start().await;
    server.push(
        Canned::json(200, json!([detail("a"), detail("b")])).header("X-Next-Token", "cursor1"),
    );
    server.push(Canned::json(200, json!([detail("c")])).header("X-Next-Token", ""));
    let query = SandboxQuery::new()
        .metadata("a", "b c")
        .metadata("x&y", "1")
        .state(SandboxState::Running)
        .state(SandboxState::Paused)
        .limit(2);
    let listed: Vec<_> = server.client().list(query).try_collect().await.unwrap();

    let ids: Vec<_> = listed.iter().map(|s| s.sandbox_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(listed[0].state, SandboxState::Running);
    assert_eq!(listed[0].metadata["k"], "v");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v2/sandboxes");
    assert_eq!(
        requests[0].query.as_deref(),
        Some("metadata=a%3Db%252520c%26x%252526y%3D1&state=running%2Cpaused&limit=2")
    );
    assert!(
        requests[1]
            .query
            .as_deref()
            .unwrap()
            .ends_with("&nextToken=cursor1")
    );
}

#[tokio::test]
async fn list_without_filters_sends_no_query() {
    let server = FakeServer::start().await;
    server.push(Canned::json(200, json!([])));
    let listed: Vec<_> = server
        .client()
        .list(SandboxQuery::new())
        .try_collect()
        .await
        .unwrap();
    assert!(listed.is_empty());
    assert_eq!(server.only_request().query, None);
}

#[tokio::test]
async fn list_rejects_a_limit_out_of_range_before_any_request() {
    let server = FakeServer::start().await;
    let err = server
        .client()
        .list(SandboxQuery::new().limit(101))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref message } if message.contains("limit")),
        "{err:?}"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn get_info_parses_the_detail() {
    let server = FakeServer::start().await;
    server.push(Canned::json(200, detail(SANDBOX_ID)));
    let info = server.client().get_info(SANDBOX_ID).await.unwrap();
    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/sandboxes/sbx123")
    );
    assert_eq!(info.cpu_count, 2);
    assert_eq!(info.memory_mb, 1024);
    assert_eq!(info.started_at.timestamp_subsec_nanos(), 123_456_789);
}

#[tokio::test]
async fn kill_deletes_and_reports_missing_sandboxes_as_false() {
    let server = FakeServer::start().await;
    server.push(Canned::status(204));
    server.push(Canned::json(
        404,
        json!({"code": 404, "message": "sandbox not found"}),
    ));
    let client = server.client();
    assert!(client.kill(SANDBOX_ID).await.unwrap());
    assert!(!client.kill(SANDBOX_ID).await.unwrap());
    let request = &server.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("DELETE", "/sandboxes/sbx123")
    );
}

#[tokio::test]
async fn set_timeout_pause_refresh_and_metrics_send_the_documented_requests() {
    let server = FakeServer::start().await;
    server.push(Canned::status(204));
    server.push(Canned::status(204));
    server.push(Canned::json(
        409,
        json!({"code": 409, "message": "already paused"}),
    ));
    server.push(Canned::status(204));
    server.push(Canned::json(
        200,
        json!([{"timestamp": "2026-01-01T00:00:00Z", "timestampUnix": 1767225600, "cpuCount": 2,
                "cpuUsedPct": 12.5, "memUsed": 1, "memTotal": 2, "memCache": 3, "diskUsed": 4, "diskTotal": 5}]),
    ));
    let client = server.client();
    client
        .set_timeout(SANDBOX_ID, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(client.pause(SANDBOX_ID).await.unwrap());
    assert!(!client.pause(SANDBOX_ID).await.unwrap());
    client
        .refresh(SANDBOX_ID, Duration::from_secs(30))
        .await
        .unwrap();
    let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let end = chrono::DateTime::from_timestamp(1_700_000_060, 0).unwrap();
    let metrics = client
        .metrics(SANDBOX_ID, Some(start), Some(end))
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests[0].path, "/sandboxes/sbx123/timeout");
    assert_eq!(requests[0].json(), json!({"timeout": 600}));
    assert_eq!(requests[1].path, "/sandboxes/sbx123/pause");
    assert_eq!(requests[1].json(), json!({}));
    assert_eq!(requests[3].path, "/sandboxes/sbx123/refreshes");
    assert_eq!(requests[3].json(), json!({"duration": 30}));
    assert_eq!(requests[4].path, "/sandboxes/sbx123/metrics");
    assert_eq!(
        requests[4].query.as_deref(),
        Some("start=1700000000&end=1700000060")
    );
    assert_eq!(metrics[0].cpu_used_pct, 12.5);
}

async fn error_for(status: u16, body: serde_json::Value) -> Error {
    let server = FakeServer::start().await;
    server.push(Canned::json(status, body));
    let client = Client::new(server.config().max_retries(0).build().unwrap()).unwrap();
    client.get_info(SANDBOX_ID).await.unwrap_err()
}

#[tokio::test]
async fn every_control_plane_error_body_maps_to_its_variant() {
    let err = error_for(401, json!({"code": 401, "message": "Invalid API key"})).await;
    assert!(
        matches!(err, Error::Authentication { ref message } if message == "Invalid API key"),
        "{err:?}"
    );
    let err = error_for(
        404,
        json!({"code": 404, "message": "sandbox \"x\" not found"}),
    )
    .await;
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: NotFoundKind::Sandbox,
                ..
            }
        ),
        "{err:?}"
    );
    let err = error_for(400, json!({"code": 400, "message": "bad timeout"})).await;
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let err = error_for(429, json!({"code": 429, "message": "slow down"})).await;
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    let err = error_for(
        502,
        json!({"sandboxId": "x", "message": "The sandbox was not found", "code": 502}),
    )
    .await;
    assert!(matches!(err, Error::SandboxGone { .. }), "{err:?}");
    let err = error_for(500, json!({"code": 500, "message": "boom", "error_code": "sandbox_snapshot_guest_agent_unresponsive"})).await;
    assert!(
        matches!(err, Error::Api { status: 500, code: Some(ref c), ref message } if c == "sandbox_snapshot_guest_agent_unresponsive" && message == "boom"),
        "{err:?}"
    );
    let server = FakeServer::start().await;
    server.push(Canned::status(500).body("plain text failure"));
    let err = server.client().get_info(SANDBOX_ID).await.unwrap_err();
    assert!(
        matches!(err, Error::Api { status: 500, ref message, .. } if message == "plain text failure"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_429_is_retried_once_then_succeeds() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        429,
        json!({"code": 429, "message": "slow down"}),
    ));
    server.push(Canned::json(200, detail(SANDBOX_ID)));
    server.client().get_info(SANDBOX_ID).await.unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn should_retry_false_is_never_retried() {
    let server = FakeServer::start().await;
    server.push(
        Canned::json(503, json!({"code": 503, "message": "busy"})).header("Should-Retry", "false"),
    );
    server.push(Canned::json(200, detail(SANDBOX_ID)));
    let err = server.client().get_info(SANDBOX_ID).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn should_retry_true_retries_any_status() {
    let server = FakeServer::start().await;
    server.push(
        Canned::json(500, json!({"code": 500, "message": "flaky"})).header("Should-Retry", "true"),
    );
    server.push(Canned::status(204));
    server
        .client()
        .set_timeout(SANDBOX_ID, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_500_without_should_retry_is_not_retried() {
    let server = FakeServer::start().await;
    server.push(Canned::json(500, json!({"code": 500, "message": "boom"})));
    assert!(server.client().get_info(SANDBOX_ID).await.is_err());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = FakeServer::start().await;
    server.push(
        Canned::json(503, json!({"code": 503, "message": "busy"})).header("Retry-After", "1"),
    );
    server.push(Canned::json(200, detail(SANDBOX_ID)));
    let started = Instant::now();
    server.client().get_info(SANDBOX_ID).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retries_stop_after_the_configured_count() {
    let server = FakeServer::start().await;
    for _ in 0..5 {
        server.push(Canned::json(
            502,
            json!({"code": 502, "message": "bad gateway"}),
        ));
    }
    let client = Client::new(server.config().max_retries(2).build().unwrap()).unwrap();
    let err = client.get_info(SANDBOX_ID).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 502, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn retries_stay_within_the_request_timeout() {
    let server = FakeServer::start().await;
    server.push(
        Canned::json(503, json!({"code": 503, "message": "busy"})).header("Retry-After", "30"),
    );
    let client = Client::new(
        server
            .config()
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = client.get_info(SANDBOX_ID).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_missing_api_key_fails_before_any_request() {
    let server = FakeServer::start().await;
    let config = ConnectionConfig::builder()
        .api_url(&server.url)
        .build()
        .unwrap();
    let err = Client::new(config)
        .unwrap()
        .get_info("x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_api_key_never_shows_in_debug_output_or_errors() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        401,
        json!({"code": 401, "message": "Invalid API key"}),
    ));
    let client = server.client();
    let err = client.get_info("x").await.unwrap_err();
    for text in [
        format!("{client:?}"),
        format!("{:?}", client.config()),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(!text.contains(API_KEY), "{text}");
        assert!(!text.contains("0123456789abcdef01234567"), "{text}");
    }
    assert!(format!("{client:?}").contains("****4567"));
}

#[tokio::test]
async fn debug_mode_creates_and_kills_without_calling_the_api() {
    let server = FakeServer::start().await;
    let client = Client::new(
        ConnectionConfig::builder()
            .debug(true)
            .api_url(&server.url)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sandbox = Sandbox::builder().create(&client).await.unwrap();
    assert_eq!(sandbox.id(), "debug_sandbox_id");
    assert_eq!(sandbox.envd_url().as_str(), "http://localhost:49983/");
    assert_eq!(sandbox.get_host(8080), "localhost:8080");
    assert!(sandbox.kill().await.unwrap());
    sandbox.set_timeout(Duration::from_secs(1)).await.unwrap();
    assert!(sandbox.metrics(None, None).await.unwrap().is_empty());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn update_network_puts_the_rules_with_their_values_and_get_info_reads_them_back() {
    use courier_e2b::models::{NetworkRule, NetworkUpdate};
    let server = FakeServer::start().await;
    server.push(Canned::status(204));
    let mut info = detail(SANDBOX_ID);
    info["network"] = json!({
        "allowOut": ["10.0.0.7"], "maskRequestHost": "${PORT}-app.example.com",
        "rules": {"10.0.0.7": [{"transform": {"headers": {"X-Proof": "p-0123456789"}}}, {}]}
    });
    server.push(Canned::json(200, info));
    let client = server.client();
    let update = NetworkUpdate {
        allow_out: Some(vec!["10.0.0.7".into()]),
        rules: Some(
            [(
                "10.0.0.7".to_owned(),
                vec![NetworkRule::set_headers([("X-Proof", "p-0123456789")])],
            )]
            .into(),
        ),
        ..Default::default()
    };
    // Debug (what a log line would show) never carries a value.
    assert!(!format!("{update:?}").contains("p-0123456789"));
    client.update_network(SANDBOX_ID, &update).await.unwrap();
    let network = client.get_info(SANDBOX_ID).await.unwrap().network.unwrap();

    let requests = server.requests();
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].path, format!("/sandboxes/{SANDBOX_ID}/network"));
    assert_eq!(
        std::str::from_utf8(&requests[0].body).unwrap(),
        r#"{"allowOut":["10.0.0.7"],"rules":{"10.0.0.7":[{"transform":{"headers":{"X-Proof":"p-0123456789"}}}]}}"#
    );
    assert_eq!(
        network.mask_request_host.as_deref(),
        Some("${PORT}-app.example.com")
    );
    let rules = &network.rules.unwrap()["10.0.0.7"];
    assert_eq!(
        rules[0].transform.as_ref().unwrap().headers["X-Proof"].expose(),
        "p-0123456789"
    );
    assert_eq!(rules[1].transform, None, "a rule without a transform");
}
