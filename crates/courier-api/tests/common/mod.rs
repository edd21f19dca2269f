//! Test harness: an in-process server on 127.0.0.1:0 over in-memory SQLite, with a
//! sandbox provider that runs agent commands on the host in a temp dir.

#![allow(dead_code)]

pub mod contract;

use std::sync::Arc;
use std::time::Duration;

use courier_api::{Api, ApiConfig, GitHubWebhook, Tokens};
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::pr::{PrConfig, PrPipeline};
use courier_orchestrator::stream::EventHub;
use courier_store::{NewProject, NewUser, SandboxQuota, SqliteStore, Store};
use courier_testkit::host_sandbox::HostSandboxApi;
use courier_tools::Secret;
use futures::StreamExt;
use serde_json::Value;

/// A user with a token and a project.
#[derive(Clone)]
pub struct Account {
    pub token: String,
    pub user_id: String,
    pub project_id: String,
}

pub struct Server {
    pub url: String,
    pub api: Api,
    pub store: Arc<dyn Store>,
    pub tokens: Tokens,
    pub http: reqwest::Client,
    pub alice: Account,
    pub bob: Account,
    /// The orchestrator's event hub (to record an agent's stream as the orchestrator does).
    pub hub: EventHub,
}

pub async fn server() -> Server {
    server_with(ApiConfig::default()).await
}

pub async fn server_with(config: ApiConfig) -> Server {
    server_with_webhook(config, None).await
}

/// A server whose agents are courier-tools' fake CLIs (`claude`, …), found first on the
/// agent commands' `PATH` (every server's are).
pub async fn server_with_fake_clis() -> Server {
    server().await
}

/// A server whose orchestrator enforces `quota` of live sandboxes per user and project.
pub async fn server_with_quota(quota: SandboxQuota) -> Server {
    server_built(ApiConfig::default(), None, quota).await
}

/// A server whose GitHub webhook checks deliveries against `webhook_secret` and records
/// merges in the server's store (`None`: the webhook is off).
pub async fn server_with_webhook(config: ApiConfig, webhook_secret: Option<&str>) -> Server {
    server_built(config, webhook_secret, SandboxQuota::default()).await
}

async fn server_built(
    config: ApiConfig,
    webhook_secret: Option<&str>,
    quota: SandboxQuota,
) -> Server {
    // The fake agent CLIs (courier-tools) first on every command's PATH: `claude` and the
    // others answer as scripted by their prompt (PASS_AT_COMMITS, CARDS, SLEEP).
    build(config, webhook_secret, quota, vec![fake_clis()]).await
}

async fn build(
    mut config: ApiConfig,
    webhook_secret: Option<&str>,
    quota: SandboxQuota,
    tool_path: Vec<String>,
) -> Server {
    let sqlite = SqliteStore::in_memory().await.unwrap();
    let tokens = Tokens::sqlite(sqlite.pool().clone()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let vault = KeyVault::new(MasterKey::generate(), store.clone());
    let sandboxes: Arc<dyn courier_e2b::SandboxApi> = Arc::new(HostSandboxApi::new());
    if let Some(secret) = webhook_secret {
        config.github_webhook = Some(GitHubWebhook {
            secret: Secret::new(secret),
            pipeline: PrPipeline::new(store.clone(), sandboxes.clone(), PrConfig::default()),
        });
    }
    let hub = EventHub::default();
    let orchestrator = Orchestrator::new(store.clone(), sandboxes, vault.clone(), hub.clone())
        .with_sandbox_quota(quota)
        .with_tool_path(tool_path);
    let api = Api::new(store.clone(), vault, orchestrator, tokens.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let alice = account(store.as_ref(), &tokens, "alice").await;
    let bob = account(store.as_ref(), &tokens, "bob").await;
    Server {
        url,
        api,
        store,
        tokens,
        http: reqwest::Client::new(),
        alice,
        bob,
        hub,
    }
}

/// The fake agent CLIs' directory.
pub fn fake_clis() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../courier-tools/fake-clis")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// A dummy Anthropic key: the fake `claude` never calls out.
pub const DUMMY_ANTHROPIC_KEY: &str = "sk-ant-api03-dummy-api-0000";

async fn account(store: &dyn Store, tokens: &Tokens, name: &str) -> Account {
    let user = store
        .create_user(NewUser {
            email: format!("{name}@example.com"),
            name: name.into(),
        })
        .await
        .unwrap();
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: format!("{name}-project"),
        })
        .await
        .unwrap();
    let issued = tokens.issue(user.id, "test").await.unwrap();
    Account {
        token: issued.token,
        user_id: user.id.to_string(),
        project_id: project.id.to_string(),
    }
}

impl Server {
    pub fn req(
        &self,
        method: reqwest::Method,
        who: &Account,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&who.token)
    }

    /// Sends and returns (status, JSON body or Null), after checking the answer against
    /// the route's documented schema.
    pub async fn call(
        &self,
        method: reqwest::Method,
        who: &Account,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.req(method.clone(), who, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        contract::check(method.as_str(), path, status, &body);
        (status, body)
    }

    /// Gives `who`'s project a (dummy) Anthropic key, so `claude` (the fake) can run.
    pub async fn anthropic_key(&self, who: &Account) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                who,
                &format!("/v1/projects/{}/keys/anthropic", who.project_id),
                Some(serde_json::json!({ "value": DUMMY_ANTHROPIC_KEY })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Polls `GET path` until `done` says so (60 s at most); the last answer.
    pub async fn wait_for(
        &self,
        who: &Account,
        path: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..600 {
            let (status, body) = self.get(who, path).await;
            assert_eq!(status, 200, "{path}: {body}");
            if done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} never got there: {last}");
    }

    pub async fn get(&self, who: &Account, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, who, path, None).await
    }

    pub async fn post(&self, who: &Account, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, who, path, Some(body))
            .await
    }

    /// Creates a shell sandbox running `command` and returns its id.
    pub async fn shell(&self, who: &Account, command: &str) -> String {
        let (status, body) = self
            .post(
                who,
                "/v1/sandboxes",
                serde_json::json!({ "tool": "shell", "prompt": command }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the sandbox's messages satisfy `done`.
    pub async fn wait_messages(
        &self,
        who: &Account,
        id: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        for _ in 0..200 {
            let (_, body) = self.get(who, &format!("/v1/sandboxes/{id}/messages")).await;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if done(&items) {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("messages of {id} never got there");
    }
}

/// One parsed server-sent event.
#[derive(Debug, Clone, Default)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// Reads SSE events from a response until `stop` says so or the stream ends.
pub async fn read_events(res: reqwest::Response, stop: impl Fn(&Sse) -> bool) -> Vec<Sse> {
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("SSE stream stalled");
        let Some(chunk) = chunk else { return out };
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = Sse::default();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    ev.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    ev.id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if ev.event.is_empty() {
                continue; // keep-alive comment
            }
            ev.data = serde_json::from_str(&data).unwrap_or(Value::Null);
            let stop_now = stop(&ev);
            out.push(ev);
            if stop_now {
                return out;
            }
        }
    }
}
