//! Every route of the API, in-process over HTTP: auth failures, ownership, validation,
//! lifecycle, messages, SSE resume, usage, rate limits, metrics and the OpenAPI table.
//! One test binary, a module per concern.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod projects;
mod reports;
mod routes;
mod sandboxes;
mod streams;
mod workflows;

use reqwest::Method;

const NIL: &str = "00000000-0000-0000-0000-000000000000";

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

fn fill(path: &str, project: &str, sandbox: &str) -> String {
    let path = path.replace("{provider}", "anthropic");
    if path.starts_with("/v1/projects/") {
        path.replace("{id}", project)
    } else {
        path.replace("{id}", sandbox)
    }
}
