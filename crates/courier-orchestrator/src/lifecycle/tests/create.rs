//! Creating a sandbox: set up and running, or failed early with nothing left behind.

use std::sync::Arc;

use courier_e2b::MockSandboxApi;
use courier_store::{
    KeyOwner, MessageRole, MessageStatus, MockStore, Provider, Sandbox, SandboxQuota, SandboxStatus,
};
use mockall::Sequence;

use super::world::{ANTHROPIC_KEY, world};
use crate::OrchestratorError;
use crate::config::CreateRequest;
use crate::lifecycle::{METADATA_SANDBOX_ID, Orchestrator};
use crate::stream::EventHub;
use crate::testing::{Seeded, sandbox_record};

#[tokio::test]
async fn create_sets_up_the_sandbox_starts_the_agent_and_is_running() {
    let w = world(None, true).await;
    let sandbox = w.orchestrator.create(w.request()).await.unwrap();
    assert_eq!(sandbox.status, SandboxStatus::Running);
    assert_eq!(sandbox.provider_sandbox_id.as_deref(), Some("sbx1"));
    assert_eq!(w.active().await, 1);
    let runs = w.runs.lock().unwrap().clone();
    assert!(runs.iter().any(|c| c.starts_with("git clone")), "{runs:?}");
    let agent = runs.last().unwrap();
    assert!(
        agent.contains("claude") && agent.contains("'fix the login'"),
        "{agent}"
    );
    assert!(
        !runs.iter().any(|c| c.contains(ANTHROPIC_KEY)),
        "no secret on a command line"
    );

    w.finish_agent(0).await;
    w.until("the run to end", |w| !w.orchestrator.is_working(sandbox.id))
        .await;
    let messages = w.store.list_messages(sandbox.id, 0, 10).await.unwrap();
    assert_eq!(messages[0].role, MessageRole::User);
    assert_eq!(messages[1].status, MessageStatus::Completed);
}

#[tokio::test]
async fn a_create_whose_tool_template_is_missing_says_so_and_names_the_fix() {
    let w = world(None, true).await;
    let mut api = MockSandboxApi::new();
    api.expect_create().times(1).returning(|new| {
        Err(courier_e2b::Error::NotFound {
            kind: courier_e2b::NotFoundKind::Sandbox,
            message: format!("template {} not found", new.template_id),
        })
    });
    api.expect_kill().times(0);
    let orchestrator = Orchestrator::new(
        w.store.clone(),
        Arc::new(api),
        w.vault.clone(),
        EventHub::default(),
    );
    let err = orchestrator.create(w.request()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, OrchestratorError::TemplateMissing { template, tool: "claude", .. } if template == "claude"),
        "{err:?}"
    );
    assert!(
        message.contains("courier templates build claude")
            && message.contains("POST /v1/template-builds")
            && message.contains("template_id"),
        "{message}"
    );
    let listed = w.sandboxes(None).await;
    let failed = listed
        .iter()
        .find(|s| s.status == SandboxStatus::Error)
        .expect("the failed create is recorded");
    assert_eq!(failed.error_message.as_deref(), Some(message.as_str()));
}

#[tokio::test]
async fn a_missing_key_fails_before_anything_is_recorded() {
    let w = world(None, false).await;
    let err = w.orchestrator.create(w.request()).await.unwrap_err();
    assert!(matches!(
        err,
        OrchestratorError::MissingProviderKey {
            provider: Provider::Anthropic,
            ..
        }
    ));
    assert!(w.runs.lock().unwrap().is_empty());
    let listed = w.sandboxes(None).await;
    assert_eq!(listed.len(), 1, "only the seeded sandbox");
}

#[tokio::test]
async fn a_failed_setup_step_ends_in_error_with_the_sandbox_destroyed() {
    let w = world(Some("git clone"), true).await;
    let err = w.orchestrator.create(w.request()).await.unwrap_err();
    assert!(matches!(err, OrchestratorError::Setup { .. }), "{err}");
    let listed = w.sandboxes(Some(SandboxStatus::Error)).await;
    let failed = &listed[0];
    assert!(
        failed
            .error_message
            .as_deref()
            .unwrap()
            .contains("repository not found")
    );
    assert_eq!(w.active().await, 0);
    assert!(w.agents.lock().unwrap().is_empty(), "no agent started");
}

#[tokio::test]
async fn a_provider_failure_during_setup_ends_in_error_with_the_sandbox_destroyed() {
    // Keys come from a real vault; the orchestrator's own store is a mock that
    // expects each write in order.
    let keys = Seeded::new().await;
    let vault = keys
        .vault_with(
            KeyOwner::Project(keys.project.id),
            Provider::Anthropic,
            ANTHROPIC_KEY,
        )
        .await;
    let creating = keys.sandbox.clone();
    let id = creating.id;
    let errored = Sandbox {
        status: SandboxStatus::Error,
        ..creating.clone()
    };

    let mut seq = Sequence::new();
    let mut store = MockStore::new();
    let mut api = MockSandboxApi::new();
    store
        .expect_get_project_settings()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Default::default()));
    store
        .expect_create_sandbox_within()
        .withf(|new, quota| {
            new.prompt == "fix the login"
                && new.cli_tool == "claude"
                && *quota == SandboxQuota::default()
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(creating.clone()));
    store
        .expect_active_learning_version()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(None));
    store
        .expect_update_sandbox_git()
        .withf(move |s, git| {
            *s == id
                && git
                    .branch
                    .as_deref()
                    .is_some_and(|b| b.starts_with("courier/"))
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    api.expect_create()
        .withf(move |new| {
            new.metadata.get(METADATA_SANDBOX_ID) == Some(&id.to_string())
                // Asked for explicitly: providers differ in their default.
                && new.allow_internet_access == Some(true)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(sandbox_record()));
    store
        .expect_set_provider_sandbox_id()
        .withf(move |s, pid| *s == id && pid == "sbx1")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    // The first setup step, whichever kind it is, hits a provider that stopped
    // answering.
    let gone = || courier_e2b::Error::Timeout {
        message: "envd did not answer".into(),
    };
    api.expect_write_file()
        .times(0..=1)
        .returning(move |_, _, _| Err(gone()));
    api.expect_run()
        .times(0..=1)
        .returning(move |_, _| Err(gone()));
    api.expect_spawn().times(0);
    api.expect_kill()
        .withf(|pid| pid == "sbx1")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(true));
    store
        .expect_transition_sandbox()
        .withf(move |s, from, to, message| {
            *s == id
                && *from == SandboxStatus::Creating
                && *to == SandboxStatus::Error
                && message.as_deref().is_some_and(|m| {
                    m.contains("setup step 1") && m.contains("envd did not answer")
                })
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _, _| Ok(errored.clone()));

    let orchestrator =
        Orchestrator::new(Arc::new(store), Arc::new(api), vault, EventHub::default());
    let err = orchestrator
        .create(CreateRequest {
            user_id: keys.user.id,
            project_id: keys.project.id,
            prompt: "fix the login".into(),
            repo_url: Some("https://github.com/acme/engine.git".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::Setup { step: 1, message } if message.contains("envd did not answer")),
        "{err}"
    );
    assert!(!orchestrator.is_working(id));
    // Dropping the mocks checks every `times`.
    drop(orchestrator);
}

#[tokio::test]
async fn two_sandboxes_created_in_a_row_get_different_default_branches() {
    let w = world(None, true).await;
    let first = w.orchestrator.create(w.request()).await.unwrap();
    let second = w.orchestrator.create(w.request()).await.unwrap();
    let branch = |s: Sandbox| s.git.branch.expect("a default branch is recorded");
    let first_branch = branch(w.store.get_sandbox(first.id).await.unwrap());
    let second_branch = branch(w.store.get_sandbox(second.id).await.unwrap());
    assert_ne!(first_branch, second_branch);
    assert_eq!(first_branch, format!("courier/{}", first.id));
    assert_eq!(second_branch, format!("courier/{}", second.id));
}

#[tokio::test]
async fn a_create_takes_the_project_settings_as_defaults_and_injects_them() {
    let w = world(None, true).await;
    let update = crate::settings::SettingsUpdate {
        repo_url: Some("https://github.com/acme/default.git".into()),
        base_branch: Some("develop".into()),
        env_vars: [(
            "DEPLOY_TOKEN".to_owned(),
            Some(courier_tools::Secret::new("tok-12345")),
        )]
        .into(),
        sandbox_defaults: courier_store::SandboxDefaults {
            memory_mb: Some(2048),
            cpu_count: Some(4),
            ..Default::default()
        },
        ..Default::default()
    };
    w.vault
        .put_project_settings(w.project, update)
        .await
        .unwrap();

    // The request's own values win; what it leaves unset comes from the settings.
    let request = CreateRequest {
        repo_url: None,
        memory_mb: Some(512),
        ..w.request()
    };
    let sandbox = w.orchestrator.create(request).await.unwrap();
    assert_eq!(sandbox.config.memory_mb, 512);
    assert_eq!(sandbox.config.cpu_count, 4);
    let runs = w.runs.lock().unwrap().clone();
    assert!(
        runs.iter().any(|c| c.starts_with("git clone --branch develop ")
            && c.contains("acme/default.git")),
        "{runs:?}"
    );
    let env = w.orchestrator.lock().get(&sandbox.id).unwrap().env.clone();
    assert_eq!(
        env.get("DEPLOY_TOKEN").map(String::as_str),
        Some("tok-12345")
    );
}
