//! The route table against the router: open service routes, 401 without a token on
//! every `/v1` route, 403 on another user's records, nothing routed that is not documented.

use courier_api::openapi::ROUTES;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::server;
use crate::{NIL, fill, method};

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
            // A well-formed body: only the ownership check may refuse it.
            let body = if route.path.ends_with("/settings") {
                json!({ "env_vars": { "X": "pwned" } })
            } else if route.path.ends_with("/personas") {
                json!({ "name": "pwned" })
            } else if route.path.ends_with("/workflow-runs") {
                json!({ "prompt": "pwned" })
            } else if route.path.ends_with("/work-chains") {
                json!({ "items": [{ "prompt": "pwned" }] })
            } else if route.path.ends_with("/issue-sessions") {
                json!({ "focus": "pwned" })
            } else {
                json!({ "value": "x" })
            };
            req = req.json(&body);
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
