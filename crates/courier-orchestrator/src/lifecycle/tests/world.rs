//! The world the lifecycle's tests share: the seeded store, a key vault, a fake provider
//! whose commands succeed (or fail on a chosen one) and whose agents stream what the test
//! sends them, and an orchestrator over them; plus a clock the test sets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_e2b::models::ListedSandbox;
use courier_e2b::{CommandEvent, ExitStatus, MockSandboxApi, SpawnedCommand};
use courier_store::{
    KeyOwner, PageRequest, ProjectId, Provider, Sandbox, SandboxFilter, SandboxId, SandboxStatus,
    Store, UsageMetric, UserId,
};
use futures::StreamExt;
use futures::channel::mpsc;

use crate::clock::{Clock, MockClock};
use crate::config::CreateRequest;
use crate::keys::KeyVault;
use crate::lifecycle::{METADATA_SANDBOX_ID, Orchestrator};
use crate::stream::EventHub;
use crate::testing::{Seeded, command_output, fixture, sandbox_record};

/// Every command line the provider was asked to run or spawn, in order.
pub type Runs = Arc<Mutex<Vec<String>>>;
/// The senders of every spawned agent's output, in spawn order.
pub type Agents = Arc<Mutex<Vec<mpsc::UnboundedSender<courier_e2b::Result<CommandEvent>>>>>;
/// What the provider lists as its sandboxes.
pub type Listed = Arc<Mutex<Vec<ListedSandbox>>>;

/// The Anthropic key the world's project holds.
pub const ANTHROPIC_KEY: &str = "sk-ant-api03-key-1234";

/// A running provider sandbox `id`, carrying Courier's metadata when `courier_id` is given.
pub fn listed(id: &str, courier_id: Option<SandboxId>) -> ListedSandbox {
    let mut listed: ListedSandbox = serde_json::from_value(serde_json::json!({
        "templateID": "claude", "sandboxID": id, "clientID": "c",
        "startedAt": "2026-01-01T00:00:00Z", "endAt": "2026-01-01T01:00:00Z",
        "envdVersion": "0.6.13", "cpuCount": 2, "memoryMB": 1024, "diskSizeMB": 1024,
        "state": "running"
    }))
    .unwrap();
    if let Some(courier_id) = courier_id {
        listed
            .metadata
            .insert(METADATA_SANDBOX_ID.to_owned(), courier_id.to_string());
    }
    listed
}

/// A provider whose commands succeed (or fail when they contain `fail_on`), recording
/// every command line, and whose agents stream what the test sends them.
fn provider(
    fail_on: Option<&'static str>,
    runs: Runs,
    agents: Agents,
    listed: Listed,
) -> MockSandboxApi {
    let mut api = MockSandboxApi::new();
    api.expect_list()
        .returning(move || Ok(listed.lock().unwrap().clone()));
    api.expect_set_timeout().returning(|_, _| Ok(()));
    api.expect_create().returning(|_| Ok(sandbox_record()));
    api.expect_write_file().returning(|_, _, _| Ok(()));
    let run_log = runs.clone();
    api.expect_run().returning(move |_, spec| {
        run_log.lock().unwrap().push(spec.cmd.clone());
        match fail_on {
            Some(f) if spec.cmd.contains(f) => {
                Ok(command_output(128, "", "fatal: repository not found"))
            }
            _ => Ok(command_output(0, "", "")),
        }
    });
    api.expect_spawn().returning(move |_, spec| {
        runs.lock().unwrap().push(spec.cmd.clone());
        let (tx, rx) = mpsc::unbounded();
        agents.lock().unwrap().push(tx);
        Ok(SpawnedCommand {
            pid: 7,
            events: rx.boxed(),
        })
    });
    api.expect_kill().returning(|_| Ok(true));
    api.expect_pause().returning(|_| Ok(true));
    api.expect_connect().returning(|_, _| Ok(sandbox_record()));
    api
}

/// An orchestrator over the seeded store and the fake provider, and what the test reads.
pub struct World {
    pub orchestrator: Orchestrator,
    pub store: Arc<dyn Store>,
    pub user: UserId,
    pub project: ProjectId,
    pub runs: Runs,
    pub agents: Agents,
    pub listed: Listed,
    pub vault: KeyVault,
}

/// A world whose provider fails commands containing `fail_on`; its project holds
/// [`ANTHROPIC_KEY`] when `with_key`.
pub async fn world(fail_on: Option<&'static str>, with_key: bool) -> World {
    let seeded = Seeded::new().await;
    let vault = if with_key {
        let owner = KeyOwner::Project(seeded.project.id);
        seeded
            .vault_with(owner, Provider::Anthropic, ANTHROPIC_KEY)
            .await
    } else {
        seeded.vault()
    };
    let runs = Runs::default();
    let agents = Agents::default();
    let listed = Listed::default();
    let api = provider(fail_on, runs.clone(), agents.clone(), listed.clone());
    World {
        orchestrator: Orchestrator::new(
            seeded.store.clone(),
            Arc::new(api),
            vault.clone(),
            EventHub::default(),
        ),
        store: seeded.store,
        user: seeded.user.id,
        project: seeded.project.id,
        runs,
        agents,
        listed,
        vault,
    }
}

impl World {
    /// A second orchestrator over the same store, vault and provider (a restart).
    pub fn restarted(&self) -> Orchestrator {
        let api = provider(
            None,
            self.runs.clone(),
            self.agents.clone(),
            self.listed.clone(),
        );
        Orchestrator::new(
            self.store.clone(),
            Arc::new(api),
            self.vault.clone(),
            EventHub::default(),
        )
    }

    /// A create request of the seeded user and project, with a repository.
    pub fn request(&self) -> CreateRequest {
        CreateRequest {
            user_id: self.user,
            project_id: self.project,
            prompt: "fix the login".into(),
            repo_url: Some("https://github.com/acme/engine.git".into()),
            ..Default::default()
        }
    }

    /// The project's active-sandbox counter.
    pub async fn active(&self) -> i64 {
        self.store
            .get_project(self.project)
            .await
            .unwrap()
            .active_sandboxes
    }

    /// The project's sandboxes, of `status` when given (the first page).
    pub async fn sandboxes(&self, status: Option<SandboxStatus>) -> Vec<Sandbox> {
        let filter = SandboxFilter {
            project_id: Some(self.project),
            status,
            ..Default::default()
        };
        self.store
            .list_sandboxes(filter, PageRequest::default())
            .await
            .unwrap()
            .items
    }

    /// How many commands pushed work (kill-time saves and checkpoints).
    pub fn saves(&self) -> usize {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.contains("git push"))
            .count()
    }

    /// Streams a recorded Claude run to agent `n` and ends it.
    pub async fn finish_agent(&self, n: usize) {
        let tx = self.agents.lock().unwrap()[n].clone();
        tx.unbounded_send(Ok(CommandEvent::Stdout(
            fixture("claude_success.jsonl").into(),
        )))
        .unwrap();
        tx.unbounded_send(Ok(CommandEvent::Exit(ExitStatus {
            exit_code: 0,
            exited: true,
            status: "exit status 0".into(),
            error: None,
        })))
        .unwrap();
    }

    /// Waits (up to 2 s) until `done` holds.
    pub async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..200 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// The compute seconds billed for a sandbox.
    pub async fn compute_seconds(&self, id: SandboxId) -> f64 {
        self.store
            .usage_for_sandbox(id)
            .await
            .unwrap()
            .iter()
            .filter(|u| u.metric == UsageMetric::ComputeSeconds)
            .map(|u| u.quantity)
            .sum()
    }
}

/// A clock reading whatever the test last [`set`].
pub fn clock(at: Arc<Mutex<DateTime<Utc>>>) -> Arc<dyn Clock> {
    let mut clock = MockClock::new();
    clock.expect_now().returning(move || *at.lock().unwrap());
    Arc::new(clock)
}

/// Moves a [`clock`] to `to`.
pub fn set(at: &Mutex<DateTime<Utc>>, to: DateTime<Utc>) {
    *at.lock().unwrap() = to;
}
