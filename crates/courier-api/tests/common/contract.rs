//! The API's answers against its own OpenAPI document: every JSON body a test receives is
//! validated against the schema the document gives for its route and status.

use std::sync::LazyLock;

use courier_api::openapi::{ROUTES, Route};
use serde_json::{Value, json};

/// The generated document, built once per test binary.
static DOCUMENT: LazyLock<Value> = LazyLock::new(courier_api::openapi::document);

/// The table's route that serves `method` on `path` (a query string is ignored).
pub fn route_of(method: &str, path: &str) -> Option<&'static Route> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES.iter().find(|r| {
        let template: Vec<&str> = r.path.split('/').collect();
        r.method.eq_ignore_ascii_case(method)
            && template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
    })
}

/// `schema` as a validator whose `#/components/...` references resolve in the document.
fn validator(schema: &Value) -> jsonschema::Validator {
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": DOCUMENT["components"],
    });
    if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
        root.extend(schema.clone());
    }
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// Panics unless `body` matches `schema` (a schema of the document).
pub fn assert_matches(schema: &Value, body: &Value, what: &str) {
    let errors: Vec<String> = validator(schema)
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match its documented schema {schema}:\n{}\nbody: {body}",
        errors.join("\n")
    );
}

/// The schema of a named component.
pub fn component(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Checks one answer: a documented status's JSON body against its schema; any other
/// error status's body against the error schema. Returns the route, when the table has
/// one for `method` and `path`.
pub fn check(method: &str, path: &str, status: u16, body: &Value) -> Option<&'static Route> {
    let route = route_of(method, path)?;
    let what = format!("{method} {path} -> {status}");
    let documented = &DOCUMENT["paths"][route.path][route.method.to_lowercase()]["responses"]
        [status.to_string()];
    match documented.pointer("/content/application~1json/schema") {
        Some(schema) => assert_matches(schema, body, &what),
        None if documented.is_object() => {
            assert!(
                body.is_null(),
                "{what}: documented without a body, got {body}"
            )
        }
        None if status >= 400 => assert_matches(&component("ErrorBody"), body, &what),
        None => panic!("{what}: status not documented"),
    }
    Some(route)
}
