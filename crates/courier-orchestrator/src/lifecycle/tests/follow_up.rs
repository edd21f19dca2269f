//! Follow-up messages: queued while the agent works, delivered in order.

use courier_store::MessageRole;

use super::world::world;

#[tokio::test]
async fn follow_ups_are_queued_while_the_agent_works_and_delivered_in_order() {
    let w = world(None, true).await;
    let sandbox = w.orchestrator.create(w.request()).await.unwrap();
    w.orchestrator
        .send_message(sandbox.id, "also add tests")
        .await
        .unwrap();
    w.orchestrator
        .send_message(sandbox.id, "and docs")
        .await
        .unwrap();
    assert_eq!(w.agents.lock().unwrap().len(), 1, "queued while working");

    w.finish_agent(0).await;
    w.until("the first follow-up", |w| {
        w.agents.lock().unwrap().len() == 2
    })
    .await;
    let second = w.runs.lock().unwrap().last().unwrap().clone();
    assert!(
        second.contains("--continue") && second.contains("'also add tests'"),
        "{second}"
    );
    w.finish_agent(1).await;
    w.until("the second follow-up", |w| {
        w.agents.lock().unwrap().len() == 3
    })
    .await;
    assert!(
        w.runs
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .contains("'and docs'")
    );
    w.finish_agent(2).await;
    w.until("idle", |w| !w.orchestrator.is_working(sandbox.id))
        .await;

    // Idle: the next message starts a run at once.
    w.orchestrator
        .send_message(sandbox.id, "one more")
        .await
        .unwrap();
    assert_eq!(w.agents.lock().unwrap().len(), 4);
    let roles: Vec<_> = w
        .store
        .list_messages(sandbox.id, 0, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.role == MessageRole::User)
        .map(|m| m.content)
        .collect();
    assert_eq!(
        roles,
        ["fix the login", "also add tests", "and docs", "one more"]
    );
}
