//! Restart safety: reconcile ends what a restart left inconsistent and re-attaches.

use courier_store::{MessageStatus, SandboxId, SandboxStatus};

use super::world::{listed, world};
use crate::lifecycle::AGENT_RUN_DIR;

#[tokio::test]
async fn reconcile_ends_lost_and_interrupted_kills_orphans_and_reattaches() {
    let w = world(None, true).await;
    // The seeded sandbox was left `creating`.
    let running = w.orchestrator.create(w.request()).await.unwrap();
    let lost = w.orchestrator.create(w.request()).await.unwrap();
    w.store
        .set_provider_sandbox_id(lost.id, "sbx-gone")
        .await
        .unwrap();
    w.orchestrator.detach_all();
    w.agents.lock().unwrap().clear();
    w.listed.lock().unwrap().extend([
        listed("sbx1", Some(running.id)),
        listed("sbx-orphan", Some(SandboxId::new())),
        listed("sbx-foreign", None),
    ]);

    let restarted = w.restarted();
    let report = restarted.reconcile().await.unwrap();
    assert_eq!(report.reattached, vec![running.id]);
    assert_eq!(report.vanished, vec![lost.id]);
    assert_eq!(report.orphans, vec!["sbx-orphan".to_owned()]);
    assert_eq!(report.interrupted.len(), 1);
    let lost = w.store.get_sandbox(lost.id).await.unwrap();
    assert_eq!(lost.status, SandboxStatus::Killed);
    assert!(lost.error_message.unwrap().contains("vanished"));
    let interrupted = w.store.get_sandbox(report.interrupted[0]).await.unwrap();
    assert_eq!(interrupted.status, SandboxStatus::Error);

    // The streaming message is followed again from the run's log file.
    assert!(restarted.is_working(running.id));
    let follow = w.runs.lock().unwrap().last().unwrap().clone();
    assert!(
        follow.contains("tail -n +1 -f") && follow.contains(AGENT_RUN_DIR),
        "{follow}"
    );
    w.finish_agent(0).await;
    w.until("the resumed run to end", |w| {
        !restarted.is_working(running.id) && w.agents.lock().unwrap().len() == 1
    })
    .await;
    let messages = w.store.list_messages(running.id, 0, 10).await.unwrap();
    assert_eq!(messages.len(), 2, "the same message, not a new one");
    assert_eq!(messages[1].status, MessageStatus::Completed);
    assert_eq!(w.active().await, 1);
}
