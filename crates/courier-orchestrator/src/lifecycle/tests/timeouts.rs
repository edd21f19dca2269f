//! The deadline sweep: extensions up to the maximum lifetime, checkpoints, kills.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use courier_store::SandboxStatus;

use super::world::{clock, set, world};
use crate::lifecycle::TimeoutPolicy;

#[tokio::test]
async fn a_working_agent_is_extended_an_idle_one_checkpointed_before_the_kill() {
    let w = world(None, true).await;
    let sandbox = w.orchestrator.create(w.request()).await.unwrap();
    let deadline = w.orchestrator.deadline(sandbox.id).unwrap();
    let near = deadline - chrono::Duration::seconds(30);
    assert!(w.orchestrator.tick_timeouts(near).await.unwrap().is_empty());
    let extended = w.orchestrator.deadline(sandbox.id).unwrap();
    assert_eq!(extended, deadline + chrono::Duration::seconds(600));
    assert_eq!(w.saves(), 0, "no checkpoint while extending");

    w.finish_agent(0).await;
    w.until("idle", |w| !w.orchestrator.is_working(sandbox.id))
        .await;
    let near = extended - chrono::Duration::seconds(30);
    assert!(w.orchestrator.tick_timeouts(near).await.unwrap().is_empty());
    assert_eq!(w.saves(), 1, "checkpointed");
    assert!(w.orchestrator.tick_timeouts(near).await.unwrap().is_empty());
    assert_eq!(w.saves(), 1, "once per deadline");
    assert_eq!(
        w.store.get_sandbox(sandbox.id).await.unwrap().status,
        SandboxStatus::Running
    );
    assert_eq!(
        w.orchestrator.tick_timeouts(extended).await.unwrap(),
        vec![sandbox.id]
    );
    assert_eq!(
        w.store.get_sandbox(sandbox.id).await.unwrap().status,
        SandboxStatus::Killed
    );
}

#[tokio::test]
async fn the_maximum_lifetime_caps_extensions() {
    let w = world(None, true).await;
    let orchestrator = w.orchestrator.clone().with_timeouts(TimeoutPolicy {
        checkpoint_lead: Duration::from_secs(60),
        extension: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(1000),
    });
    let sandbox = orchestrator.create(w.request()).await.unwrap();
    let deadline = orchestrator.deadline(sandbox.id).unwrap();
    orchestrator
        .tick_timeouts(deadline - chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.deadline(sandbox.id).unwrap(),
        sandbox.created_at + chrono::Duration::seconds(1000)
    );
}

#[tokio::test]
async fn the_timeout_sweep_extends_up_to_the_maximum_checkpoints_and_kills_at_the_clocks_time() {
    let w = world(None, true).await;
    let now = Arc::new(Mutex::new(Utc::now()));
    let orchestrator = w
        .orchestrator
        .clone()
        .with_clock(clock(now.clone()))
        .with_timeouts(TimeoutPolicy {
            checkpoint_lead: Duration::from_secs(60),
            extension: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1200),
        });
    let sandbox = orchestrator.create(w.request()).await.unwrap();
    let id = sandbox.id;
    let deadline = orchestrator.deadline(id).unwrap();
    assert_eq!(
        deadline,
        sandbox.created_at + chrono::Duration::seconds(900)
    );
    let secs = chrono::Duration::seconds;

    // Just before the checkpoint lead: nothing to do.
    set(&now, deadline - secs(61));
    assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
    assert_eq!(orchestrator.deadline(id), Some(deadline));

    // Within the lead while the agent works: extended, but only to the maximum
    // lifetime (1200 s, not 900 + 600).
    set(&now, deadline - secs(30));
    assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
    let capped = sandbox.created_at + secs(1200);
    assert_eq!(orchestrator.deadline(id), Some(capped));
    assert_eq!(w.saves(), 0, "no checkpoint while extending");

    // At the maximum, still working: the work is checkpointed instead, once.
    set(&now, capped - secs(30));
    assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
    assert!(orchestrator.check_timeouts().await.unwrap().is_empty());
    assert_eq!(orchestrator.deadline(id), Some(capped));
    assert_eq!(w.saves(), 1, "one checkpoint per deadline");
    assert_eq!(
        w.store.get_sandbox(id).await.unwrap().status,
        SandboxStatus::Running
    );

    // At the deadline: killed, and billed until the clock's time.
    w.agents.lock().unwrap().clear();
    set(&now, capped);
    assert_eq!(orchestrator.check_timeouts().await.unwrap(), vec![id]);
    let killed = w.store.get_sandbox(id).await.unwrap();
    assert_eq!(killed.status, SandboxStatus::Killed);
    assert!(
        killed
            .error_message
            .unwrap()
            .contains("timed out after 1200000 ms")
    );
    assert_eq!(w.compute_seconds(id).await, 1200.0);
}
