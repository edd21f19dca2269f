//! The orchestrator wires both pipelines in: create gives the sandbox the project's active
//! learnings, kill hands the branch to the PR pipeline and queues learning extraction.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_e2b::{CommandEvent, CommandOutput, MockSandboxApi, SpawnedCommand};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::learnings::{LearningPipeline, LearningsConfig, LlmConfig};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::pr::{PrConfig, PrPipeline};
use courier_orchestrator::stream::EventHub;
use courier_store::{KeyOwner, LearningStatus, PrStatus, Provider, SandboxStatus};
use courier_tools::Secret;
use futures::StreamExt;
use futures::channel::mpsc;
use support::{Reply, StandIn, fixture, record, seeded};

type Agents = Arc<Mutex<Vec<mpsc::UnboundedSender<courier_e2b::Result<CommandEvent>>>>>;

fn ok(stdout: &str) -> CommandOutput {
    CommandOutput {
        stdout: stdout.into(),
        stderr: String::new(),
        exit_code: 0,
        error: None,
    }
}

#[tokio::test]
async fn create_injects_active_learnings_and_kill_opens_the_pr_and_queues_extraction() {
    let (store, project, seeded_sandbox) = seeded("seed").await;
    store
        .create_learning_version(
            project.id,
            "# Project learnings\n\n- [gotcha] Use the staging database for tests.\n".into(),
            true,
        )
        .await
        .unwrap();
    let vault = KeyVault::new(MasterKey::generate(), store.clone());
    vault
        .put(
            KeyOwner::Project(project.id),
            Provider::Anthropic,
            "sk-ant-api03-key-1234",
        )
        .save()
        .await
        .unwrap();

    let written: Arc<Mutex<Vec<String>>> = Arc::default();
    let agents = Agents::default();
    let mut api = MockSandboxApi::new();
    api.expect_create().returning(|_| Ok(record()));
    let files = written.clone();
    api.expect_write_file().returning(move |_, _, data| {
        files
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&data).into_owned());
        Ok(())
    });
    api.expect_run().returning(|_, spec| {
        // The sandbox's project is on its default branch: no PR is needed.
        if spec.cmd.contains("printf 'remote=") {
            Ok(ok(
                "remote=https://github.com/acme/engine.git\nbranch=main\nbase=origin/main\n",
            ))
        } else {
            Ok(ok(""))
        }
    });
    let spawned = agents.clone();
    api.expect_spawn().returning(move |_, _| {
        let (tx, rx) = mpsc::unbounded();
        spawned.lock().unwrap().push(tx);
        Ok(SpawnedCommand {
            pid: 7,
            events: rx.boxed(),
        })
    });
    api.expect_kill().returning(|_| Ok(true));
    api.expect_connect().returning(|_, _| Ok(record()));
    let api = Arc::new(api);

    let llm =
        StandIn::start(|_| Reply::json(200, fixture("anthropic/messages_learnings.json"))).await;
    let mut llm_config = LlmConfig::new(Secret::new("sk-ant-api03-extractor-0000"));
    llm_config.base_url = llm.url.clone();
    let orchestrator = Orchestrator::new(store.clone(), api.clone(), vault, EventHub::default())
        .with_pull_requests(PrPipeline::new(store.clone(), api, PrConfig::default()))
        .with_learnings(
            LearningPipeline::new(store.clone(), LearningsConfig::new(llm_config)).unwrap(),
        );

    let sandbox = orchestrator
        .create(CreateRequest {
            user_id: seeded_sandbox.user_id,
            project_id: project.id,
            prompt: "fix the login".into(),
            repo_url: Some("https://github.com/acme/engine.git".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        written
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.contains("Use the staging database for tests.")),
        "the active learnings reach the new sandbox"
    );

    agents.lock().unwrap().clear(); // the agent's stream ends when it is killed
    let killed = orchestrator.kill(sandbox.id, None).await.unwrap();
    assert_eq!(killed.status, SandboxStatus::Killed);
    let after = store.get_sandbox(sandbox.id).await.unwrap();
    assert_eq!(after.git.pr_status, Some(PrStatus::Skipped));

    let mut status = after.learning_status;
    for _ in 0..200 {
        status = store.get_sandbox(sandbox.id).await.unwrap().learning_status;
        if status == LearningStatus::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, LearningStatus::Completed);
    assert_eq!(llm.requests().len(), 1);
    let versions = store.list_learning_versions(project.id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[1].active);
}
