//! Configuration from variables and the envd URL rules (§2.2), without touching the
//! machine's environment.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use courier_e2b::{ConnectionConfigBuilder, Error};

fn from(vars: &[(&str, &str)]) -> courier_e2b::ConnectionConfig {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ConnectionConfigBuilder::from_vars(&vars).build().unwrap()
}

#[test]
fn defaults_use_the_e2b_app_domain() {
    let config = from(&[("E2B_API_KEY", "e2b_abc")]);
    assert_eq!(config.domain(), "e2b.app");
    assert_eq!(config.api_url().as_str(), "https://api.e2b.app/");
    assert_eq!(config.api_key().unwrap().expose(), "e2b_abc");
    assert!(!config.debug());
    assert_eq!(config.request_timeout(), std::time::Duration::from_secs(60));
}

#[test]
fn e2b_domains_use_the_shared_sandbox_host() {
    for domain in [
        "e2b.app",
        "e2b.dev",
        "e2b.pro",
        "e2b-staging.dev",
        "foxtrot-2.e2b.dev",
    ] {
        let config = from(&[("E2B_DOMAIN", domain)]);
        assert_eq!(
            config.envd_url("abc", None).as_str(),
            format!("https://sandbox.{domain}/")
        );
        assert_eq!(
            config.direct_envd_url("abc", None).as_str(),
            format!("https://49983-abc.{domain}/")
        );
    }
}

#[test]
fn other_domains_use_the_per_sandbox_host() {
    let config = from(&[("E2B_DOMAIN", "sandboxes.example.com")]);
    assert_eq!(
        config.api_url().as_str(),
        "https://api.sandboxes.example.com/"
    );
    assert_eq!(
        config.envd_url("abc", None).as_str(),
        "https://49983-abc.sandboxes.example.com/"
    );
    assert_eq!(
        config.host(3000, "abc", None),
        "3000-abc.sandboxes.example.com"
    );
}

#[test]
fn the_domain_returned_by_the_api_wins() {
    let config = from(&[]);
    assert_eq!(
        config.envd_url("abc", Some("other.net")).as_str(),
        "https://49983-abc.other.net/"
    );
    assert_eq!(
        config.envd_url("abc", Some("e2b.dev")).as_str(),
        "https://sandbox.e2b.dev/"
    );
    assert_eq!(
        config.host(80, "abc", Some("other.net")),
        "80-abc.other.net"
    );
}

#[test]
fn the_sandbox_url_override_beats_debug_and_domains() {
    let config = from(&[
        ("E2B_SANDBOX_URL", "http://127.0.0.1:5000"),
        ("E2B_DEBUG", "true"),
    ]);
    assert_eq!(
        config.envd_url("abc", Some("e2b.app")).as_str(),
        "http://127.0.0.1:5000/"
    );
    assert_eq!(
        config.direct_envd_url("abc", None).as_str(),
        "http://127.0.0.1:5000/"
    );
}

#[test]
fn debug_is_exactly_true_case_insensitively() {
    assert!(from(&[("E2B_DEBUG", "TRUE")]).debug());
    assert!(from(&[("E2B_DEBUG", "True")]).debug());
    for value in ["1", "yes", "false", ""] {
        assert!(!from(&[("E2B_DEBUG", value)]).debug(), "{value}");
    }
    let config = from(&[("E2B_DEBUG", "true")]);
    assert_eq!(
        config.envd_url("abc", None).as_str(),
        "http://localhost:49983/"
    );
    assert_eq!(config.api_url().as_str(), "http://localhost:3000/");
    assert_eq!(config.host(8080, "abc", None), "localhost:8080");
}

#[test]
fn the_api_url_override_is_used_as_is() {
    let config = from(&[("E2B_API_URL", "http://host:3000"), ("E2B_DOMAIN", "x.dev")]);
    assert_eq!(config.api_url().as_str(), "http://host:3000/");
}

#[test]
fn bad_urls_and_domains_are_rejected_naming_the_field() {
    let err = ConnectionConfigBuilder::default()
        .api_url("not a url")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref message } if message.contains("api_url")),
        "{err:?}"
    );
    let err = ConnectionConfigBuilder::default()
        .sandbox_url("ftp://x")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref message } if message.contains("sandbox_url")),
        "{err:?}"
    );
    let err = ConnectionConfigBuilder::default()
        .domain("https://e2b.app")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref message } if message.contains("domain")),
        "{err:?}"
    );
}
