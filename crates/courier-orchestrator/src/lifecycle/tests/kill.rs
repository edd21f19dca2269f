//! Kill, pause and resume, soft delete, restore and purge, kill all of a project.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use courier_store::SandboxStatus;

use super::world::{clock, set, world};
use crate::OrchestratorError;

#[tokio::test]
async fn kill_stops_the_agent_saves_work_destroys_and_records_compute() {
    let w = world(None, true).await;
    let sandbox = w.orchestrator.create(w.request()).await.unwrap();
    let tx = w.agents.lock().unwrap()[0].clone();
    // The agent dies when killed: its stream ends.
    drop(tx);
    w.agents.lock().unwrap().clear();
    let killed = w.orchestrator.kill(sandbox.id, None).await.unwrap();
    assert_eq!(killed.status, SandboxStatus::Killed);
    assert!(killed.ended_at.is_some());
    assert_eq!(w.active().await, 0);
    let runs = w.runs.lock().unwrap().clone();
    assert!(
        runs.iter()
            .any(|c| *c == courier_tools::stop_agent_command().to_shell()),
        "{runs:?}"
    );
    assert!(!runs.iter().any(|c| c.contains("pkill")), "{runs:?}");
    assert!(
        runs.iter()
            .any(|c| c.contains("git add -A") && c.contains("git push")),
        "{runs:?}"
    );
    let usage = w.store.usage_for_sandbox(sandbox.id).await.unwrap();
    assert!(
        usage
            .iter()
            .any(|u| u.metric == courier_store::UsageMetric::ComputeSeconds)
    );
    assert!(matches!(
        w.orchestrator.kill(sandbox.id, None).await,
        Err(OrchestratorError::InvalidState { .. })
    ));
    assert!(matches!(
        w.orchestrator.send_message(sandbox.id, "hello?").await,
        Err(OrchestratorError::InvalidState { .. })
    ));
}

#[tokio::test]
async fn a_kill_bills_compute_seconds_until_the_clocks_time() {
    let w = world(None, true).await;
    let now = Arc::new(Mutex::new(Utc::now()));
    let orchestrator = w.orchestrator.clone().with_clock(clock(now.clone()));
    let sandbox = orchestrator.create(w.request()).await.unwrap();
    w.agents.lock().unwrap().clear();
    set(
        &now,
        sandbox.created_at + chrono::Duration::milliseconds(90_500),
    );
    orchestrator.kill(sandbox.id, None).await.unwrap();
    assert_eq!(w.compute_seconds(sandbox.id).await, 90.5);
}

#[tokio::test]
async fn pause_and_resume_keep_the_counter_right() {
    let w = world(None, true).await;
    let sandbox = w.orchestrator.create(w.request()).await.unwrap();
    assert_eq!(
        w.orchestrator.pause(sandbox.id).await.unwrap().status,
        SandboxStatus::Paused
    );
    assert_eq!(w.active().await, 0);
    assert_eq!(
        w.orchestrator.resume(sandbox.id).await.unwrap().status,
        SandboxStatus::Running
    );
    assert_eq!(w.active().await, 1);
}

#[tokio::test]
async fn a_resumed_sandbox_gets_its_full_timeout_from_the_clocks_time() {
    let w = world(None, true).await;
    let now = Arc::new(Mutex::new(Utc::now()));
    let orchestrator = w.orchestrator.clone().with_clock(clock(now.clone()));
    let sandbox = orchestrator.create(w.request()).await.unwrap();
    orchestrator.pause(sandbox.id).await.unwrap();
    let resumed_at = sandbox.created_at + chrono::Duration::hours(3);
    set(&now, resumed_at);
    orchestrator.resume(sandbox.id).await.unwrap();
    assert_eq!(
        orchestrator.deadline(sandbox.id),
        Some(resumed_at + chrono::Duration::milliseconds(sandbox.config.timeout_ms))
    );
}

#[tokio::test]
async fn soft_delete_restore_and_purge() {
    let w = world(None, true).await;
    let sandbox = w.orchestrator.create(w.request()).await.unwrap();
    w.orchestrator.soft_delete(sandbox.id).await.unwrap();
    assert_eq!(w.active().await, 0);
    w.orchestrator.restore(sandbox.id).await.unwrap();
    assert_eq!(w.active().await, 1);
    w.agents.lock().unwrap().clear();
    w.orchestrator.purge(sandbox.id).await.unwrap();
    assert_eq!(w.active().await, 0);
    assert!(w.store.get_sandbox(sandbox.id).await.is_err());
}

#[tokio::test]
async fn kill_project_and_timeouts_end_every_live_sandbox() {
    let w = world(None, true).await;
    let a = w.orchestrator.create(w.request()).await.unwrap();
    let b = w.orchestrator.create(w.request()).await.unwrap();
    w.agents.lock().unwrap().clear();
    assert!(
        w.orchestrator
            .tick_timeouts(Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    let late = a.created_at + chrono::Duration::milliseconds(a.config.timeout_ms);
    let expired = w.orchestrator.tick_timeouts(late).await.unwrap();
    assert!(expired.contains(&a.id));
    let a = w.store.get_sandbox(a.id).await.unwrap();
    assert_eq!(a.status, SandboxStatus::Killed);
    assert!(a.error_message.unwrap().contains("timed out"));

    let c = w.orchestrator.create(w.request()).await.unwrap();
    w.agents.lock().unwrap().clear();
    let _ = b;
    let killed = w.orchestrator.kill_project(w.project).await.unwrap();
    assert!(killed >= 1);
    assert_eq!(
        w.store.get_sandbox(c.id).await.unwrap().status,
        SandboxStatus::Killed
    );
    assert_eq!(w.active().await, 0);
}
