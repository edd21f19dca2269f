//! Template updates (`PATCH /templates/{id}`, `PATCH /v2/templates/{id}`) and who may
//! see and manage a template when the server has more than one API key: a template is
//! its builder's; `public` opens it to every key for use, never for management.

use courier_e2b::{Error, TemplateUpdate};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fixture::*;
use crate::support;

/// A call with another API key than the fixture's.
async fn call_as(
    fx: &Fixture,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let run = fx.run();
    support::call_api(&run.http, &run.api, key, method, path, body).await
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

// Attacker: another tenant of the server (API key B) who learnt or guessed the id or
// name of key A's private template. They try to list it, read its builds and tags, start
// sandboxes on its layers (its files may hold A's secrets), make it public, delete it and
// take its name over with a rebuild: every one must fail exactly as for an unknown
// template (404), or as a taken name (409), and A's template must be unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_updates_a_template_and_public_opens_it_to_other_keys() {
    let Some(mut fx) = Fixture::new("template_updates").await else {
        return;
    };
    const NAME: &str = "courier-it-public";
    let (template_id, _) = fx.build_version(NAME, "one").await;
    // Key B: a key of the same server, created while it runs (found on a miss).
    let other = courier_sandboxd::keys::create_key(&fx.data_dir()).expect("second key");

    // Private (the default): key B sees nothing of it.
    let (_, list) = call_as(&fx, &other, Method::GET, "/templates", None).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["templateID"] != template_id.as_str()),
        "another key lists a private template: {list}"
    );
    let (_, list) = call_as(&fx, &other, Method::GET, "/v2/templates", None).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["templateID"] != template_id.as_str()),
        "{list}"
    );
    for (method, path, body) in [
        (Method::GET, format!("/templates/{template_id}"), None),
        (Method::GET, format!("/templates/aliases/{NAME}"), None),
        (Method::GET, format!("/templates/{template_id}/tags"), None),
        (
            Method::PATCH,
            format!("/templates/{template_id}"),
            Some(json!({"public": true})),
        ),
        (
            Method::PATCH,
            format!("/v2/templates/{NAME}"),
            Some(json!({"public": true})),
        ),
        (Method::DELETE, format!("/templates/{template_id}"), None),
        (
            Method::POST,
            "/templates/tags".to_owned(),
            Some(json!({"target": NAME, "tags": ["mine"]})),
        ),
        (
            Method::POST,
            "/sandboxes".to_owned(),
            Some(json!({"templateID": NAME})),
        ),
        (
            Method::POST,
            "/sandboxes".to_owned(),
            Some(json!({"templateID": template_id})),
        ),
    ] {
        let (status, body) = call_as(&fx, &other, method.clone(), &path, body).await;
        assert_eq!(status, 404, "key B: {method} {path}: {body}");
    }
    let (status, body) = call_as(
        &fx,
        &other,
        Method::POST,
        "/v3/templates",
        Some(json!({"name": NAME})),
    )
    .await;
    assert_eq!(status, 409, "key B rebuilds A's template: {body}");
    assert!(message(&body).contains("another API key"), "{body}");

    // The owner's update: unknown fields are refused by name, base is not anyone's to
    // change, an unknown template is 404.
    let (status, body) = fx
        .call(
            Method::PATCH,
            &format!("/v2/templates/{template_id}"),
            Some(json!({"color": 1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("color"), "{body}");
    let (status, body) = fx
        .call(
            Method::PATCH,
            "/v2/templates/base",
            Some(json!({"public": false})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = fx
        .call(
            Method::PATCH,
            "/templates/no-such-template",
            Some(json!({"public": true})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, info) = fx
        .call(Method::GET, &format!("/templates/{template_id}"), None)
        .await;
    assert_eq!(info["public"], false, "nothing changed yet: {info}");

    // The owner makes it public through the SDK (v2): its names come back.
    let updated = fx
        .run()
        .client
        .templates()
        .update(NAME, &TemplateUpdate { public: Some(true) })
        .await
        .expect("update");
    assert_eq!(updated.names, [NAME]);
    // Key B may now see it and start sandboxes from it...
    let (_, list) = call_as(&fx, &other, Method::GET, "/templates", None).await;
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap_or_else(|| panic!("a public template is listed for every key: {list}"))
        .clone();
    assert_eq!(item["public"], true, "{item}");
    let (status, body) = call_as(
        &fx,
        &other,
        Method::GET,
        &format!("/templates/aliases/{NAME}"),
        None,
    )
    .await;
    assert_eq!((status, &body["public"]), (200, &json!(true)), "{body}");
    let (status, created) = call_as(
        &fx,
        &other,
        Method::POST,
        "/sandboxes",
        Some(json!({"templateID": NAME})),
    )
    .await;
    assert_eq!(
        status, 201,
        "key B creates from a public template: {created}"
    );
    let sandbox = created["sandboxID"].as_str().unwrap().to_owned();
    let (status, _) = call_as(
        &fx,
        &other,
        Method::DELETE,
        &format!("/sandboxes/{sandbox}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    // ...but not manage it: updating, deleting, tagging or rebuilding stays the owner's.
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/templates/{template_id}"),
            Some(json!({"public": false})),
        ),
        (Method::DELETE, format!("/templates/{template_id}"), None),
        (
            Method::POST,
            "/templates/tags".to_owned(),
            Some(json!({"target": NAME, "tags": ["mine"]})),
        ),
    ] {
        let (status, body) = call_as(&fx, &other, method.clone(), &path, body).await;
        assert_eq!(status, 404, "key B: {method} {path}: {body}");
    }

    // Survives a restart; the deprecated v1 route turns it private again (200, no body).
    fx.stop().await;
    fx.start().await;
    let (_, info) = fx
        .call(Method::GET, &format!("/templates/{template_id}"), None)
        .await;
    assert_eq!(info["public"], true, "kept across a restart: {info}");
    let (status, body) = fx
        .call(
            Method::PATCH,
            &format!("/templates/{NAME}"),
            Some(json!({"public": false})),
        )
        .await;
    assert_eq!((status, body), (200, Value::Null));
    let (status, _) = call_as(
        &fx,
        &other,
        Method::GET,
        &format!("/templates/{template_id}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "private again");
    // Through the SDK, another key's template is a template not found.
    let b_client = courier_e2b::Client::new(
        courier_e2b::ConnectionConfig::builder()
            .api_key(other.as_str())
            .api_url(fx.run().api.clone())
            .build()
            .expect("config"),
    )
    .expect("client");
    let err = b_client
        .templates()
        .update(NAME, &TemplateUpdate { public: Some(true) })
        .await
        .expect_err("not B's");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}
