//! Several sandbox providers: a `ProviderSet` over two real courier-sandboxd hosts
//! (in-process, each with its own data dir and ports), reached through courier-e2b like
//! any E2B endpoint. Placement by load, capacity and label; every call routed to the
//! sandbox's host; list across hosts; reconcile after a restart re-attaching agents on
//! both hosts.
//!
//! They need root (sandboxes are namespaces, mounts and cgroups); without it each test
//! prints why and returns. Each world kills its sandboxes and stops its servers when
//! dropped, even on failure.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use courier_e2b::models::NewSandbox as ProviderSandbox;
use courier_e2b::{Client, CommandSpec, ConnectionConfig, Error, SandboxApi};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::providers::{METADATA_PLACEMENT_LABEL, ProviderSet, ProviderSpec};
use courier_orchestrator::stream::EventHub;
use courier_store::{MessageStatus, SandboxId, SandboxStatus};
use e2e_support::{Backend, Host, LONG, REPO_URL, TEMPLATE, World, eventually};

/// Two hosts: the world's (`h1`) and another (`h2`), each with the capacity given.
async fn two_hosts(test: &str) -> Option<(World, Host)> {
    let world = World::new(test, Backend::Sqlite).await?;
    let host = world.another_host().await;
    Some((world, host))
}

fn providers(world: &World, host: &Host, capacity: Option<u32>) -> ProviderSet {
    let spec = |name: &str, client: &Client, label: &str| ProviderSpec {
        name: name.into(),
        api: Arc::new(client.clone()),
        capacity,
        labels: vec![label.into(), "any".into()],
    };
    ProviderSet::new(vec![
        spec("h1", &world.client, "one"),
        spec("h2", &host.client, "two"),
    ])
    .unwrap()
}

fn sandbox(label: Option<&str>) -> ProviderSandbox {
    let mut metadata = HashMap::new();
    if let Some(label) = label {
        metadata.insert(METADATA_PLACEMENT_LABEL.to_owned(), label.to_owned());
    }
    ProviderSandbox {
        template_id: TEMPLATE.into(),
        timeout: Some(300),
        metadata,
        ..Default::default()
    }
}

/// The host and inner id of a set's sandbox id.
fn split(id: &str) -> (&str, &str) {
    id.split_once(':').unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_spread_by_load_within_capacity_and_by_label() {
    let Some((world, host)) =
        two_hosts("creates_spread_by_load_within_capacity_and_by_label").await
    else {
        return;
    };
    let set = providers(&world, &host, Some(1));
    // Measured, not asserted: what counting (one list per host, concurrently) adds to
    // a create, against a create whose counts are cached.
    let started = std::time::Instant::now();
    let first = set.create(sandbox(None)).await.unwrap();
    let cold = started.elapsed();
    let started = std::time::Instant::now();
    let second = set.create(sandbox(None)).await.unwrap();
    let warm = started.elapsed();
    let started = std::time::Instant::now();
    set.list().await.unwrap();
    eprintln!(
        "create with counts listed: {cold:?}; with counts cached: {warm:?}; list over both hosts: {:?}",
        started.elapsed()
    );
    // Both empty: the first configured; then the less loaded one.
    assert_eq!(split(&first.sandbox_id).0, "h1");
    assert_eq!(split(&second.sandbox_id).0, "h2");
    assert_eq!(world.server.list().len(), 1);
    assert_eq!(host.sandbox_ids(), [split(&second.sandbox_id).1]);
    // Capacity 1 + 1: the third create is the provider-at-capacity refusal (429).
    match set.create(sandbox(None)).await {
        Err(Error::RateLimited { message, .. }) => {
            assert!(
                message.contains("h1 1/1") && message.contains("h2 1/1"),
                "{message}"
            )
        }
        other => panic!("expected the capacity error, got {other:?}"),
    }
    assert_eq!(world.server.list().len() + host.sandbox_ids().len(), 2);
    assert!(set.kill(&first.sandbox_id).await.unwrap());
    assert!(set.kill(&second.sandbox_id).await.unwrap());

    // Labels: `two` lands on h2 although h1 is first and as empty; `one` on h1.
    let unlimited = providers(&world, &host, None);
    let on_two = unlimited.create(sandbox(Some("two"))).await.unwrap();
    assert_eq!(split(&on_two.sandbox_id).0, "h2");
    let on_one = unlimited.create(sandbox(Some("one"))).await.unwrap();
    assert_eq!(split(&on_one.sandbox_id).0, "h1");
    // A label no host carries is refused before anything is created.
    assert!(matches!(
        unlimited.create(sandbox(Some("gpu"))).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(world.server.list().len() + host.sandbox_ids().len(), 2);
    unlimited.kill(&on_two.sandbox_id).await.unwrap();
    unlimited.kill(&on_one.sandbox_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_reaches_the_sandboxs_own_host_and_forged_ids_stop_at_the_named_one() {
    let Some((world, host)) = two_hosts("every_call_reaches_the_sandboxs_own_host").await else {
        return;
    };
    let set = providers(&world, &host, None);
    let on_one = set.create(sandbox(Some("one"))).await.unwrap();
    let on_two = set.create(sandbox(Some("two"))).await.unwrap();
    let (_, inner_two) = split(&on_two.sandbox_id);

    // A command run through the set on h2's sandbox runs in that sandbox on h2: the file
    // it writes is read back from h2 directly, under h2's own id.
    let out = set
        .run(
            &on_two,
            CommandSpec::new("echo routed > /tmp/marker && cat /tmp/marker"),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "routed");
    let direct = host.client.connect(inner_two, None).await.unwrap();
    let marker = host.client.read_file(&direct, "/tmp/marker").await.unwrap();
    assert_eq!(&marker[..], b"routed\n");
    set.write_file(&on_two, "/tmp/written", "via the set".into())
        .await
        .unwrap();
    assert_eq!(
        &host
            .client
            .read_file(&direct, "/tmp/written")
            .await
            .unwrap()[..],
        b"via the set"
    );
    assert!(set.read_file(&on_one, "/tmp/written").await.is_err());
    set.set_timeout(&on_two.sandbox_id, Duration::from_secs(200))
        .await
        .unwrap();
    let reconnected = set.connect(&on_two.sandbox_id, None).await.unwrap();
    assert_eq!(reconnected.sandbox_id, on_two.sandbox_id);

    // Attacker: an API caller naming another host's sandbox under this host's name
    // (`h1:<h2's inner id>`), hoping to reach or kill it through h1. h1 does not know
    // the id; nothing reaches h2, whose sandbox keeps running untouched.
    let forged = format!("h1:{inner_two}");
    assert!(matches!(
        set.connect(&forged, None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!set.kill(&forged).await.unwrap(), "h1 has no such sandbox");
    let mut forged_record = on_two.clone();
    forged_record.sandbox_id = forged.clone();
    assert!(
        set.run(&forged_record, CommandSpec::new("touch /tmp/forged"))
            .await
            .is_err()
    );
    assert!(
        host.sandbox_ids().contains(&inner_two.to_owned()),
        "h2's sandbox survived the forged kill"
    );
    assert!(
        host.client.read_file(&direct, "/tmp/forged").await.is_err(),
        "the forged command never ran on h2"
    );
    // An id naming no configured host reaches none.
    assert!(matches!(
        set.kill(&format!("h3:{inner_two}")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        set.kill(inner_two).await,
        Err(Error::NotFound { .. })
    ));

    // One list over both hosts, ids prefixed.
    let mut ids: Vec<String> = set
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();
    ids.sort();
    let mut expected = vec![on_one.sandbox_id.clone(), on_two.sandbox_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // A host that cannot be reached makes the whole list fail, so that a reconcile
    // never takes its sandboxes for vanished.
    let unreachable = Client::new(
        ConnectionConfig::builder()
            .api_key("e2b_unreachable")
            .api_url("http://127.0.0.1:1")
            .max_retries(0)
            .build()
            .unwrap(),
    )
    .unwrap();
    let with_a_dead_host = ProviderSet::new(vec![
        ProviderSpec::new("h1", Arc::new(world.client.clone())),
        ProviderSpec::new("dead", Arc::new(unreachable)),
    ])
    .unwrap();
    assert!(with_a_dead_host.list().await.is_err());
    // …and creates go to the live host.
    let placed = with_a_dead_host.create(sandbox(None)).await.unwrap();
    assert_eq!(split(&placed.sandbox_id).0, "h1");

    set.kill(&on_one.sandbox_id).await.unwrap();
    set.kill(&on_two.sandbox_id).await.unwrap();
    with_a_dead_host.kill(&placed.sandbox_id).await.unwrap();
    assert!(host.sandbox_ids().is_empty());
}

fn request(world: &World, prompt: &str) -> CreateRequest {
    CreateRequest {
        user_id: world.user,
        project_id: world.project,
        tool: Some("claude".into()),
        prompt: prompt.into(),
        template_id: Some(TEMPLATE.into()),
        repo_url: Some(REPO_URL.into()),
        base_branch: Some("main".into()),
        ..Default::default()
    }
}

async fn wait_started(world: &World, id: SandboxId) {
    eventually("the run to start", LONG, || async {
        world
            .store
            .list_messages(id, 0, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.seq == 2 && m.raw_log.contains('\n'))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reattaches_agents_on_both_hosts_after_a_restart() {
    let Some((world, host)) = two_hosts("reconcile_reattaches_agents_on_both_hosts").await else {
        return;
    };
    world.put_anthropic_key().await;
    let first = world.orchestrator_over(
        Arc::new(providers(&world, &host, None)),
        EventHub::default(),
    );
    let a = first
        .create(request(&world, "SLEEP 8 then add a greeting"))
        .await
        .expect("create");
    let b = first
        .create(request(&world, "SLEEP 8 then add a farewell"))
        .await
        .expect("create");
    let hosts: Vec<&str> = [&a, &b]
        .iter()
        .map(|s| split(s.provider_sandbox_id.as_deref().unwrap()).0)
        .collect();
    assert_eq!(hosts, ["h1", "h2"], "spread over both hosts");
    wait_started(&world, a.id).await;
    wait_started(&world, b.id).await;

    // The crash: nothing follows the agents; they keep running on their hosts. The next
    // process builds its set afresh from the same configuration.
    first.detach_all();
    drop(first);
    let second = world.orchestrator_over(
        Arc::new(providers(&world, &host, None)),
        EventHub::default(),
    );
    let mut report = second.reconcile().await.expect("reconcile");
    report.reattached.sort();
    let mut both = vec![a.id, b.id];
    both.sort();
    assert_eq!(report.reattached, both);
    assert!(
        report.vanished.is_empty() && report.orphans.is_empty(),
        "{report:?}"
    );
    for id in [a.id, b.id] {
        eventually("the agent's answer", LONG, || async {
            let messages = world.store.list_messages(id, 0, 10).await.unwrap();
            !second.is_working(id)
                && messages.len() >= 2
                && messages[1].status == MessageStatus::Completed
        })
        .await;
    }
    for sandbox in [&a, &b] {
        let killed = second.kill(sandbox.id, None).await.unwrap();
        assert_eq!(killed.status, SandboxStatus::Killed);
    }
    assert!(world.server.list().is_empty() && host.sandbox_ids().is_empty());
}
