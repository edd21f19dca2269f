//! A live server for the CLI tests: the API over an in-memory store, its sandboxes on
//! the host (courier-testkit's `HostSandboxApi`) with courier-tools' fake agent CLIs first
//! on their `PATH`, one user with one project, and the `courier` binary run against it.

#![allow(dead_code)] // each test binary uses its own part

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use courier_api::{Api, ApiConfig, Tokens};
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::EventHub;
use courier_store::{NewProject, NewUser, SqliteStore, Store};
use courier_testkit::host_sandbox::HostSandboxApi;

/// The running server and how to reach it.
pub struct Live {
    pub url: String,
    pub token: String,
    /// How long one `courier` command may take before the test calls it hung.
    limit: Duration,
    /// Keeps the host sandboxes' directory alive.
    sandboxes: Arc<HostSandboxApi>,
}

/// What the server's sandboxes sit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandboxes {
    /// Plain directories.
    Plain,
    /// Directories inside one git repository without commits, so each fake agent's
    /// commit counts (`PASS_AT_COMMITS`).
    InRepository,
}

/// Starts a server; each `courier` command may take up to `limit`.
pub async fn live(sandboxes: Sandboxes, limit: Duration) -> Live {
    let sqlite = SqliteStore::in_memory().await.unwrap();
    let tokens = Tokens::sqlite(sqlite.pool().clone()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let vault = KeyVault::new(MasterKey::generate(), store.clone());
    let host = Arc::new(HostSandboxApi::new());
    if sandboxes == Sandboxes::InRepository {
        let init = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(host.root())
            .status()
            .unwrap();
        assert!(init.success());
    }
    let orchestrator = Orchestrator::new(
        store.clone(),
        host.clone(),
        vault.clone(),
        EventHub::default(),
    )
    .with_tool_path(vec![fake_clis()]);
    // `Api::new` also runs workflows, chains and issue sessions over the orchestrator.
    let api = Api::new(
        store.clone(),
        vault,
        orchestrator,
        tokens.clone(),
        ApiConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api.router()).await.unwrap() });
    let user = store
        .create_user(NewUser {
            email: "cli@example.com".into(),
            name: "cli".into(),
        })
        .await
        .unwrap();
    store
        .create_project(NewProject {
            user_id: user.id,
            name: "default".into(),
        })
        .await
        .unwrap();
    let token = tokens.issue(user.id, "test").await.unwrap().token;
    Live {
        url,
        token,
        limit,
        sandboxes: host,
    }
}

/// courier-tools' fake agent CLIs (`claude`, …), first on the agent commands' `PATH`.
pub fn fake_clis() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/courier-tools/fake-clis")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// Runs the `courier` binary against the server.
pub async fn courier(live: &Live, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .env("COURIER_URL", &live.url)
        .env("COURIER_TOKEN", &live.token)
        .args(args)
        .output();
    tokio::time::timeout(live.limit, out)
        .await
        .expect("courier hung")
        .unwrap()
}

/// A command's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
