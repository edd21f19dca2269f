//! `POST /v1/github/webhook`: real GitHub deliveries, signed as GitHub signs them, mark
//! the matching sandbox's pull request `merged`; anything unsigned, mis-signed or
//! oversized is refused without touching the store, and without a configured secret the
//! route answers 503 naming the setting.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, server, server_with_webhook};
use courier_api::ApiConfig;
use courier_store::{GitInfo, NewSandbox, PrStatus, ProjectId, SandboxConfig, SandboxId, UserId};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "whsec-test-Kq82nVd0pLr5";
const MERGED: &str = "webhook_pull_request_closed_merged.json";
/// The merged pull request's `html_url` in [`MERGED`].
const PR_URL: &str = "https://github.com/acme/engine/pull/201";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/github/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// GitHub's `X-Hub-Signature-256` for `body` under `secret`.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends a delivery as GitHub does (no bearer token); returns status and JSON body.
async fn deliver(s: &Server, event: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = s
        .http
        .post(format!("{}/v1/github/webhook", s.url))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/4f1d7c2")
        .header("x-github-event", event)
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .body(body);
    if let Some(signature) = signature {
        req = req.header("x-hub-signature-256", signature);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    common::contract::check("POST", "/v1/github/webhook", status, &body);
    (status, body)
}

/// A sandbox of Alice's whose pull request (`pr_url`) is open (`created`).
async fn sandbox_with_pr(s: &Server, pr_url: &str) -> SandboxId {
    let user: UserId = s.alice.user_id.parse().unwrap();
    let project: ProjectId = s.alice.project_id.parse().unwrap();
    let sandbox = s
        .store
        .create_sandbox(NewSandbox {
            user_id: user,
            project_id: project,
            config: SandboxConfig::default(),
            cli_tool: "claude".into(),
            model: None,
            prompt: "Fix the login".into(),
            links: Default::default(),
            repo_url: Some("https://github.com/acme/engine.git".into()),
            branch: Some("courier/login".into()),
        })
        .await
        .unwrap();
    let number = pr_url.rsplit('/').next().unwrap().parse().unwrap();
    s.store
        .update_sandbox_git(
            sandbox.id,
            GitInfo {
                repo_url: Some("https://github.com/acme/engine.git".into()),
                branch: Some("courier/login".into()),
                pr_url: Some(pr_url.into()),
                pr_number: Some(number),
                pr_status: Some(PrStatus::Created),
                pr_error: None,
            },
        )
        .await
        .unwrap();
    sandbox.id
}

async fn pr_status(s: &Server, id: SandboxId) -> Option<PrStatus> {
    s.store.get_sandbox(id).await.unwrap().git.pr_status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_merged_pull_request_delivery_marks_its_sandbox_merged() {
    // A 1 KiB API body limit: the ~25 KB delivery passes only under the webhook's own.
    let config = ApiConfig {
        body_limit: 1024,
        ..Default::default()
    };
    let s = server_with_webhook(config, Some(SECRET)).await;
    let ours = sandbox_with_pr(&s, PR_URL).await;
    let other = sandbox_with_pr(&s, "https://github.com/acme/engine/pull/7").await;
    let body = fixture(MERGED);
    assert!(body.len() > 1024);
    let signature = sign(SECRET, &body);

    let (status, answer) = deliver(&s, "pull_request", Some(&signature), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["event"], "pull_request");
    assert_eq!(answer["outcome"], "merged");
    assert_eq!(answer["marked"], serde_json::json!([ours.to_string()]));
    assert_eq!(pr_status(&s, ours).await, Some(PrStatus::Merged));
    assert_eq!(pr_status(&s, other).await, Some(PrStatus::Created));
    // The API shows it too.
    let (_, sandbox) = s.get(&s.alice, &format!("/v1/sandboxes/{ours}")).await;
    assert_eq!(sandbox["git"]["pr_status"], "merged");

    // GitHub redelivers on timeouts: the same delivery again changes nothing.
    let (status, answer) = deliver(&s, "pull_request", Some(&signature), body).await;
    assert_eq!((status, &answer["marked"]), (200, &serde_json::json!([])));
    assert_eq!(pr_status(&s, other).await, Some(PrStatus::Created));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_signature_is_401_and_changes_nothing() {
    let s = server_with_webhook(ApiConfig::default(), Some(SECRET)).await;
    let ours = sandbox_with_pr(&s, PR_URL).await;
    let body = fixture(MERGED);
    let mut tampered = body.clone();
    // Still valid JSON, still "merged": only the signature can tell.
    let at = body.windows(7).position(|w| w == b"\"title\"").unwrap();
    tampered[at + 10] ^= 0x01;
    let cases: Vec<(Option<String>, Vec<u8>, &str)> = vec![
        (None, body.clone(), "missing X-Hub-Signature-256"),
        (
            Some(sign("not-the-secret", &body)),
            body.clone(),
            "does not match",
        ),
        (Some(sign(SECRET, &body)), tampered, "does not match"),
        (
            Some(sign(SECRET, &body).replace("sha256=", "sha1=")),
            body.clone(),
            "sha256=",
        ),
        (Some("sha256=not-hex".into()), body.clone(), "not hex"),
    ];
    for (signature, payload, says) in cases {
        let (status, answer) = deliver(&s, "pull_request", signature.as_deref(), payload).await;
        assert_eq!(status, 401, "{signature:?}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_signature", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{signature:?}: {message}");
        assert!(!answer.to_string().contains(SECRET), "{answer}");
        assert!(
            !answer.to_string().contains(&sign(SECRET, &body)[7..]),
            "the expected signature is not given away: {answer}"
        );
    }
    assert_eq!(pr_status(&s, ours).await, Some(PrStatus::Created));
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("courier_auth_failures_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_ping_is_answered_ok_and_other_events_are_ignored() {
    let s = server_with_webhook(ApiConfig::default(), Some(SECRET)).await;
    let ping = fixture("ping.json");
    let (status, answer) = deliver(&s, "ping", Some(&sign(SECRET, &ping)), ping).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["event"], "ping");
    assert_eq!(answer["outcome"], "ping");
    assert_eq!(answer["marked"], serde_json::json!([]));
    // The secret is held masked: the API's Debug (and so any log of it) never shows it.
    let shown = format!("{:?}", s.api);
    assert!(shown.contains("****") && !shown.contains(SECRET), "{shown}");

    // A signed event Courier does not act on.
    let ours = sandbox_with_pr(&s, PR_URL).await;
    let body = fixture(MERGED);
    let (status, answer) = deliver(&s, "issues", Some(&sign(SECRET, &body)), body).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")));
    assert_eq!(pr_status(&s, ours).await, Some(PrStatus::Created));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_but_unreadable_payload_is_400() {
    let s = server_with_webhook(ApiConfig::default(), Some(SECRET)).await;
    let body = br#"{"action":"closed","pull_request":"#.to_vec();
    let (status, answer) = deliver(&s, "pull_request", Some(&sign(SECRET, &body)), body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_request");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreadable pull_request payload"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_over_the_webhook_body_limit_are_413() {
    let config = ApiConfig {
        webhook_body_limit: 4096,
        ..Default::default()
    };
    let s = server_with_webhook(config, Some(SECRET)).await;
    let body = fixture(MERGED);
    let (status, answer) = deliver(&s, "pull_request", Some(&sign(SECRET, &body)), body).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_route_answers_503_naming_the_setting() {
    let s = server().await;
    let ours = sandbox_with_pr(&s, PR_URL).await;
    let body = fixture(MERGED);
    let (status, answer) = deliver(&s, "pull_request", Some(&sign("", &body)), body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("COURIER_GITHUB_WEBHOOK_SECRET"),
        "{message}"
    );
    assert_eq!(pr_status(&s, ours).await, Some(PrStatus::Created));
}
