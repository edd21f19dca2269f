//! End to end: a tool's template built at a real courier-sandboxd (in-process) through
//! E2B's template build API, then used by a create that names no template.
//!
//! The install step is overridden to install courier-tools' fake CLI (shared into every
//! sandbox, the build sandbox too) instead of the npm package; the orchestrator under
//! test has no fake CLI directory on its `PATH`, so the agent runs only if the template
//! carries it. They need root; without it each test prints why and returns.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::sync::Arc;
use std::time::Duration;

use courier_orchestrator::OrchestratorError;
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::EventHub;
use courier_store::{
    MessageRole, MessageStatus, SandboxStatus, TemplateBuild, TemplateBuildStatus,
};
use courier_tools::ToolId;
use e2e_support::{Backend, FAKE_CLIS_IN_SANDBOX, LONG, REPO_URL, World, eventually};

/// An orchestrator over the world without the fake CLIs on `PATH`, installing `tool`
/// with `install`.
fn orchestrator(world: &World, tool: ToolId, install: String) -> Orchestrator {
    Orchestrator::new(
        world.store.clone(),
        Arc::new(world.client.clone()),
        world.vault(),
        EventHub::default(),
    )
    .with_tool_templates(|t| {
        t.with_install_command(tool, install)
            .with_poll_interval(Duration::from_millis(200))
    })
}

fn request(world: &World, prompt: &str) -> CreateRequest {
    CreateRequest {
        user_id: world.user,
        project_id: world.project,
        tool: Some("claude".into()),
        prompt: prompt.into(),
        repo_url: Some(REPO_URL.into()),
        base_branch: Some("main".into()),
        ..Default::default()
    }
}

/// Waits for the build's follower to record its end (the guard only stops a hung test).
async fn finished(started: courier_orchestrator::templates::StartedBuild) -> TemplateBuild {
    tokio::time::timeout(LONG, started.finished)
        .await
        .expect("the build to finish")
        .expect("the follower task")
        .expect("the follower records the end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claude_template_is_built_from_base_and_a_create_without_template_uses_it() {
    let Some(world) = World::new("claude_template_build", Backend::Sqlite).await else {
        return;
    };
    world.put_anthropic_key().await;
    let orchestrator = orchestrator(
        &world,
        ToolId::Claude,
        format!("install -m 0755 {FAKE_CLIS_IN_SANDBOX}/fake_cli.py /usr/local/bin/claude"),
    );

    // Before the build: the create fails, saying the template is missing and how to fix it.
    let err = orchestrator
        .create(request(&world, "too early"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::TemplateMissing { template, .. } if template == "claude"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("courier templates build claude"),
        "{err}"
    );

    let started = orchestrator
        .tool_templates()
        .build(ToolId::Claude)
        .await
        .expect("build started");
    assert_eq!(started.row.status, TemplateBuildStatus::Building);
    assert_eq!(started.row.template_name, "claude");
    let done = finished(started).await;
    assert_eq!(
        done.status,
        TemplateBuildStatus::Succeeded,
        "{:?}",
        done.error
    );
    // The version the fake CLI reports, read from the build log.
    assert_eq!(done.cli_version, "2.1.197 (Claude Code, fake)");
    assert_eq!(
        world
            .store
            .get_template_build(done.id)
            .await
            .unwrap()
            .status,
        TemplateBuildStatus::Succeeded
    );
    assert!(
        orchestrator
            .tool_templates()
            .missing()
            .await
            .unwrap()
            .iter()
            .all(|m| m.tool != ToolId::Claude),
        "claude's template exists now"
    );

    let sandbox = orchestrator
        .create(request(&world, "add a greeting"))
        .await
        .expect("create without a template_id");
    assert_eq!(sandbox.status, SandboxStatus::Running);
    eventually("the fake agent's answer", LONG, || async {
        let m = world.store.list_messages(sandbox.id, 0, 10).await.unwrap();
        !orchestrator.is_working(sandbox.id)
            && m.len() >= 2
            && m.iter().all(|m| m.status != MessageStatus::Streaming)
    })
    .await;
    let stored = world.store.list_messages(sandbox.id, 0, 10).await.unwrap();
    assert_eq!(stored[1].role, MessageRole::Assistant);
    assert_eq!(stored[1].status, MessageStatus::Completed, "{stored:?}");
    assert!(
        stored[1].content.contains("Done: add a greeting"),
        "{}",
        stored[1].content
    );
    let killed = orchestrator.kill(sandbox.id, None).await.expect("kill");
    assert_eq!(killed.status, SandboxStatus::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_install_records_the_build_as_failed_with_the_providers_reason() {
    let Some(world) = World::new("failing_template_build", Backend::Sqlite).await else {
        return;
    };
    let orchestrator = orchestrator(
        &world,
        ToolId::Codex,
        "echo 'npm ERR! 404 no such package' >&2; exit 7".to_owned(),
    );
    let started = orchestrator
        .tool_templates()
        .build(ToolId::Codex)
        .await
        .expect("build started");
    let done = finished(started).await;
    assert_eq!(done.status, TemplateBuildStatus::Failed);
    let error = done.error.expect("a reason");
    assert!(error.starts_with("step 1: "), "{error}");
    assert!(error.contains('7'), "the exit code is named: {error}");
    assert!(done.finished_at.is_some());
    let rows = world
        .store
        .list_template_builds(Some("codex".into()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TemplateBuildStatus::Failed);
}
