//! Replicas on one PostgreSQL database (`courier_store::Cluster`): liveness by presence
//! lock, ownership and takeover, singleton jobs, wake-ups. Each test in its own schema.
//!
//! Needs `COURIER_TEST_PG_URL` (`cargo xtask test` starts a throwaway cluster); skips
//! without it, except under CI.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use courier_store::{
    Cluster, NewProject, NewSandbox, NewUser, Owner, PgStore, SandboxConfig, SandboxId,
    SandboxQuota, SandboxStatus, Store,
};

async fn store() -> Option<PgStore> {
    let url = match std::env::var("COURIER_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "COURIER_TEST_PG_URL is not set, but CI must run the cluster tests"
            );
            eprintln!("skipping: COURIER_TEST_PG_URL is not set");
            return None;
        }
    };
    let schema = format!("courier_test_{}", uuid::Uuid::new_v4().simple());
    Some(PgStore::connect_in_schema(&url, &schema).await.unwrap())
}

async fn sandbox(store: &PgStore) -> SandboxId {
    let user = store
        .create_user(NewUser {
            email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
            name: "ada".into(),
        })
        .await
        .unwrap();
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: "engine".into(),
        })
        .await
        .unwrap();
    let sandbox = store
        .create_sandbox_within(
            NewSandbox {
                user_id: user.id,
                project_id: project.id,
                config: SandboxConfig::default(),
                cli_tool: "claude".into(),
                model: None,
                prompt: "hi".into(),
                links: Default::default(),
                repo_url: None,
                branch: None,
            },
            SandboxQuota::default(),
        )
        .await
        .unwrap();
    store
        .transition_sandbox(
            sandbox.id,
            SandboxStatus::Creating,
            SandboxStatus::Running,
            None,
        )
        .await
        .unwrap();
    sandbox.id
}

#[tokio::test]
async fn a_dead_replicas_sandboxes_are_claimed_once_by_one_live_replica() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    let b = Cluster::join(&store, "http://b.invalid").await.unwrap();
    let c = Cluster::join(&store, "http://c.invalid").await.unwrap();
    let live: Vec<String> = a
        .live_replicas()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(live.len(), 3, "{live:?}");
    let mut owned_by_a = Vec::new();
    for _ in 0..6 {
        let id = sandbox(&store).await;
        a.own(id).await.unwrap();
        owned_by_a.push(id);
    }
    // An owner that is alive keeps its sandboxes: nobody can claim them.
    assert!(b.claim_orphans(Duration::ZERO).await.unwrap().is_empty());
    assert!(!b.claim(owned_by_a[0]).await.unwrap());
    assert_eq!(
        b.owner(owned_by_a[0]).await.unwrap(),
        Owner::Replica(a.me().clone())
    );
    assert_eq!(a.owner(owned_by_a[0]).await.unwrap(), Owner::Me);
    // Owning again (a second create path, a retry) keeps the first owner.
    b.own(owned_by_a[0]).await.unwrap();
    assert_eq!(a.owner(owned_by_a[0]).await.unwrap(), Owner::Me);

    // A dies (its session ends): at once, with no heartbeat to wait out, it is not alive,
    // and B and C racing to claim split its sandboxes with none claimed twice.
    a.leave().await;
    assert_eq!(b.owner(owned_by_a[0]).await.unwrap(), Owner::Nobody);
    let (by_b, by_c) = tokio::join!(
        b.claim_orphans(Duration::ZERO),
        c.claim_orphans(Duration::ZERO)
    );
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let mut all: Vec<SandboxId> = by_b.iter().chain(&by_c).copied().collect();
    all.sort();
    let mut expected = owned_by_a.clone();
    expected.sort();
    assert_eq!(all, expected, "b: {by_b:?}, c: {by_c:?}");
    for id in &by_b {
        assert_eq!(b.owner(*id).await.unwrap(), Owner::Me);
        assert_eq!(c.owner(*id).await.unwrap(), Owner::Replica(b.me().clone()));
    }
    assert_eq!(b.owned().await.unwrap().len(), by_b.len());
    // Nothing is left to claim, and ended sandboxes are never claimed.
    assert!(b.claim_orphans(Duration::ZERO).await.unwrap().is_empty());
    b.check_presence().await.unwrap();
}

#[tokio::test]
async fn ownerless_sandboxes_are_claimed_only_after_the_grace_period() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    let id = sandbox(&store).await;
    // Just recorded by a replica that has not owned it yet: left alone.
    assert!(
        a.claim_orphans(Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.claim_orphans(Duration::ZERO).await.unwrap(), vec![id]);
    // An ended sandbox is nobody's business.
    store
        .transition_sandbox(id, SandboxStatus::Running, SandboxStatus::Killed, None)
        .await
        .unwrap();
    assert!(a.owned().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_singleton_job_runs_on_one_replica_and_moves_when_it_dies() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    let b = Cluster::join(&store, "http://b.invalid").await.unwrap();
    assert!(a.lead("merge-poller").await.unwrap());
    assert!(
        a.lead("merge-poller").await.unwrap(),
        "the leader stays leader"
    );
    assert!(!b.lead("merge-poller").await.unwrap());
    assert!(b.lead("workflows").await.unwrap(), "jobs are independent");
    a.leave().await;
    assert!(b.lead("merge-poller").await.unwrap());
}

/// Each process start adds a replica row: a joining replica removes the rows of dead
/// ones, and their sandboxes are still claimed (by the dangling-owner rule).
#[tokio::test]
async fn a_joining_replica_removes_dead_replicas_rows() {
    let Some(store) = store().await else { return };
    let id = sandbox(&store).await;
    let dead = Cluster::join(&store, "http://dead.invalid").await.unwrap();
    dead.own(id).await.unwrap();
    let alive = Cluster::join(&store, "http://alive.invalid").await.unwrap();
    dead.leave().await;
    let rows = || async {
        sqlx::query_scalar::<_, String>("SELECT url FROM courier_replicas ORDER BY url")
            .fetch_all(store.pool())
            .await
            .unwrap()
    };
    assert_eq!(
        rows().await,
        ["http://alive.invalid", "http://dead.invalid"]
    );
    let joining = Cluster::join(&store, "http://joining.invalid")
        .await
        .unwrap();
    assert_eq!(
        rows().await,
        ["http://alive.invalid", "http://joining.invalid"],
        "the dead replica's row is gone, the live ones stay"
    );
    let live: Vec<String> = joining
        .live_replicas()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.url)
        .collect();
    assert_eq!(live, ["http://alive.invalid", "http://joining.invalid"]);
    assert_eq!(alive.claim_orphans(Duration::ZERO).await.unwrap(), [id]);
    assert_eq!(
        joining.owner(id).await.unwrap(),
        Owner::Replica(alive.me().clone())
    );
}

/// Work (runs, chains, issue sessions) is driven by one replica: a claim gets only what
/// no live replica drives, racing claims of new work split it, and a dead replica's
/// work goes to the next claimer.
#[tokio::test]
async fn work_is_claimed_by_one_replica_and_taken_over_when_it_dies() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    let b = Cluster::join(&store, "http://b.invalid").await.unwrap();
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<HashSet<_>>();
    assert_eq!(
        a.claim_work(&names(&["run:1", "chain:2"])).await.unwrap(),
        set(&["run:1", "chain:2"])
    );
    assert_eq!(
        b.claim_work(&names(&["run:1", "chain:2", "session:3"]))
            .await
            .unwrap(),
        set(&["session:3"]),
        "what A drives stays A's"
    );
    assert_eq!(
        a.claim_work(&names(&["run:1", "session:3"])).await.unwrap(),
        set(&["run:1"]),
        "a claim answers what is still the caller's"
    );
    // Both replicas claim the same new work at once: exactly one gets each piece.
    let fresh: Vec<String> = (0..50).map(|i| format!("run:new-{i}")).collect();
    let (at_a, at_b) = tokio::join!(a.claim_work(&fresh), b.claim_work(&fresh));
    let (at_a, at_b) = (at_a.unwrap(), at_b.unwrap());
    assert_eq!(at_a.len() + at_b.len(), fresh.len(), "{at_a:?} {at_b:?}");
    assert!(at_a.is_disjoint(&at_b));
    a.leave().await;
    assert_eq!(
        b.claim_work(&names(&["run:1", "chain:2"])).await.unwrap(),
        set(&["run:1", "chain:2"]),
        "a dead replica's work is taken over"
    );
    assert!(b.claim_work(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn wakeups_reach_every_replica() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    let b = Cluster::join(&store, "http://b.invalid").await.unwrap();
    let mut at_b = b.wakeups().await.unwrap();
    let ids: Vec<SandboxId> = (0..450).map(|_| SandboxId::new()).collect();
    a.notify(&ids).await.unwrap();
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let batch = tokio::time::timeout(Duration::from_secs(10), at_b.next())
            .await
            .expect("wake-ups arrive")
            .unwrap()
            .expect("the store is open");
        got.extend(batch);
    }
    assert_eq!(got, ids, "in order, each once");
}

#[tokio::test]
async fn a_replica_that_left_leads_nothing_and_knows_it_is_out() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    assert!(a.lead("workflows").await.unwrap());
    a.check_presence().await.unwrap();
    a.leave().await;
    assert!(a.check_presence().await.is_err());
    assert!(!a.lead("workflows").await.unwrap());
    assert!(!a.lead("merge-poller").await.unwrap());
}

#[tokio::test]
async fn wakeups_end_when_the_store_closes() {
    let Some(store) = store().await else { return };
    let a = Cluster::join(&store, "http://a.invalid").await.unwrap();
    let mut wakeups = a.wakeups().await.unwrap();
    let closing = tokio::spawn(async move { wakeups.next().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .expect("the listener does not keep the store from closing");
    let next = tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("the listener ends")
        .unwrap()
        .unwrap();
    assert_eq!(next, None);
}
