//! End to end: the orchestrator against a real courier-sandboxd (in-process), the fake
//! agent CLIs of courier-tools, a bare git repository on the host as the remote, on
//! SQLite and (with `COURIER_TEST_PG_URL`) PostgreSQL.
//!
//! They need root (sandboxes are namespaces, mounts and cgroups); without it each test
//! prints why and returns. Waits are generous polls: the machine may be loaded. Each
//! world kills its sandboxes and stops its servers when dropped, even on failure.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod e2e_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_e2b::models::NewSandbox as ProviderSandbox;
use courier_e2b::{CommandSpec, SandboxApi};
use courier_orchestrator::OrchestratorError;
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::lifecycle::{
    AGENT_RUN_DIR, METADATA_SANDBOX_ID, Orchestrator, TimeoutPolicy,
};
use courier_orchestrator::settings::SettingsUpdate;
use courier_orchestrator::stream::{EventHub, EventKind, SandboxEvent};
use courier_store::{
    Message, MessageRole, MessageStatus, NamedText, NewSandbox, PageRequest, SandboxConfig,
    SandboxDefaults, SandboxFilter, SandboxId, SandboxStatus,
};
use courier_tools::Secret;
use e2e_support::{Backend, Isolation, LONG, REPO_URL, TEMPLATE, World, eventually};

type Events = Arc<Mutex<Vec<SandboxEvent>>>;

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

/// Collects every event of a subscription (replay, then live) in the background.
async fn collect(world: &World, hub: &EventHub, id: SandboxId) -> Events {
    let mut sub = hub.subscribe(world.store.clone(), id, 0).await.unwrap();
    let events = Events::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(event) = sub.next().await {
            sink.lock().unwrap().push(event.unwrap());
        }
    });
    events
}

/// What the events say of each message: content and status.
fn rebuild(events: &[SandboxEvent]) -> BTreeMap<i64, (String, MessageStatus)> {
    let mut out = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::Message(m) => {
                out.insert(e.seq, (m.content.clone(), m.status));
            }
            EventKind::Text { text, .. } => out
                .get_mut(&e.seq)
                .expect("text after its message")
                .0
                .push_str(text),
            EventKind::Finished { status } => out.get_mut(&e.seq).unwrap().1 = *status,
            EventKind::Agent { .. } => {}
        }
    }
    out
}

async fn messages(world: &World, id: SandboxId) -> Vec<Message> {
    world.store.list_messages(id, 0, 200).await.unwrap()
}

async fn wait_idle(orchestrator: &Orchestrator, world: &World, id: SandboxId, n: usize) {
    eventually("the agent's answer", LONG, || async {
        let m = messages(world, id).await;
        !orchestrator.is_working(id)
            && m.len() >= n
            && m.iter().all(|m| m.status != MessageStatus::Streaming)
    })
    .await;
}

/// The events agree with the store: every stored message rebuilt exactly once.
fn assert_events_match(events: &Events, stored: &[Message]) {
    let rebuilt = rebuild(&events.lock().unwrap());
    for m in stored {
        let (content, status) = rebuilt
            .get(&m.seq)
            .unwrap_or_else(|| panic!("no events for message {}", m.seq));
        assert_eq!(content, &m.content, "message {} rebuilt from events", m.seq);
        assert_eq!(status, &m.status, "message {} status", m.seq);
    }
}

async fn create_stream_follow_up_kill(backend: Backend) {
    create_stream_follow_up_kill_on(backend, Isolation::Container).await;
}

/// One agent sandbox under gVisor, end to end (the fake CLI, the bare remote, the push).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_end_to_end_under_gvisor() {
    create_stream_follow_up_kill_on(Backend::Sqlite, Isolation::Gvisor).await;
}

async fn create_stream_follow_up_kill_on(backend: Backend, isolation: Isolation) {
    let Some(world) =
        World::with_isolation("create_stream_follow_up_kill", backend, isolation).await
    else {
        return;
    };
    world.put_anthropic_key().await;
    let hub = EventHub::default();
    let orchestrator = world.orchestrator(hub.clone());

    let sandbox = orchestrator
        .create(request(&world, "add a greeting"))
        .await
        .expect("create");
    assert_eq!(sandbox.status, SandboxStatus::Running);
    let provider_id = sandbox.provider_sandbox_id.clone().unwrap();
    assert!(world.provider_has(&provider_id));
    let events = collect(&world, &hub, sandbox.id).await;
    wait_idle(&orchestrator, &world, sandbox.id, 2).await;

    let stored = messages(&world, sandbox.id).await;
    assert_eq!(stored[0].role, MessageRole::User);
    assert_eq!(stored[1].role, MessageRole::Assistant);
    assert_eq!(stored[1].status, MessageStatus::Completed, "{stored:?}");
    assert!(
        stored[1].content.contains("Done: add a greeting"),
        "{}",
        stored[1].content
    );
    assert!(!stored[1].raw_log.is_empty());

    // Follow-up: the continue flag keeps the session.
    orchestrator
        .send_message(sandbox.id, "now add tests")
        .await
        .expect("follow-up");
    wait_idle(&orchestrator, &world, sandbox.id, 4).await;
    let stored = messages(&world, sandbox.id).await;
    assert_eq!(stored[2].content, "now add tests");
    assert_eq!(stored[3].status, MessageStatus::Completed);
    assert!(
        stored[3].content.contains("Continuing session") && stored[3].content.contains("turn 2"),
        "{}",
        stored[3].content
    );
    eventually("every event", LONG, || async {
        rebuild(&events.lock().unwrap()).len() >= 4
    })
    .await;
    assert_events_match(&events, &stored);

    // Kill: the work is pushed to the bare repository, the sandbox is gone.
    let branch = world
        .store
        .get_sandbox(sandbox.id)
        .await
        .unwrap()
        .git
        .branch
        .unwrap();
    let killed = orchestrator.kill(sandbox.id, None).await.expect("kill");
    assert_eq!(killed.status, SandboxStatus::Killed);
    let log = world.remote_log(&branch);
    assert!(
        log.iter()
            .filter(|s| s.contains("fake claude") || s.contains("claude"))
            .count()
            >= 2,
        "both turns' commits pushed to {branch}: {log:?}"
    );
    assert!(log.iter().any(|s| s == "initial commit"), "{log:?}");
    assert!(!world.provider_has(&provider_id));
    let project = world.store.get_project(world.project).await.unwrap();
    assert_eq!(project.active_sandboxes, 0);
}

async fn timeout_checkpoints_first(backend: Backend) {
    let Some(world) = World::new("timeout_checkpoints_first", backend).await else {
        return;
    };
    world.put_anthropic_key().await;
    let policy = TimeoutPolicy {
        checkpoint_lead: Duration::from_secs(50),
        extension: Duration::from_secs(120),
        max_lifetime: Duration::from_secs(4 * 3600),
    };
    let orchestrator = world
        .orchestrator(EventHub::default())
        .with_timeouts(policy);
    let mut req = request(&world, "SLEEP 8 and add a greeting");
    req.timeout_ms = Some(60_000);
    let sandbox = orchestrator.create(req).await.expect("create");
    let provider_id = sandbox.provider_sandbox_id.clone().unwrap();
    let first_deadline = orchestrator.deadline(sandbox.id).unwrap();
    assert_eq!(
        first_deadline,
        sandbox.created_at + chrono::Duration::milliseconds(60_000)
    );

    // Within the lead while the agent works: the deadline moves, at the provider too.
    assert!(orchestrator.is_working(sandbox.id));
    let near = first_deadline - chrono::Duration::seconds(30);
    assert!(orchestrator.tick_timeouts(near).await.unwrap().is_empty());
    let extended = orchestrator.deadline(sandbox.id).unwrap();
    assert_eq!(extended, first_deadline + chrono::Duration::seconds(120));
    let at_provider = world.server.get(&provider_id).unwrap().end_at;
    assert!(
        at_provider > chrono::Utc::now() + chrono::Duration::seconds(100),
        "provider deadline extended: {at_provider}"
    );

    // Idle near the (extended) deadline: checkpointed, the sandbox still alive.
    wait_idle(&orchestrator, &world, sandbox.id, 2).await;
    let branch = world
        .store
        .get_sandbox(sandbox.id)
        .await
        .unwrap()
        .git
        .branch
        .unwrap();
    assert!(world.remote_log(&branch).is_empty(), "nothing pushed yet");
    let near = extended - chrono::Duration::seconds(30);
    assert!(orchestrator.tick_timeouts(near).await.unwrap().is_empty());
    let log = world.remote_log(&branch);
    assert!(
        log.iter().any(|s| s.contains("claude")),
        "checkpoint pushed the agent's commit: {log:?}"
    );
    assert!(
        world.provider_has(&provider_id),
        "checkpoint before the end"
    );
    assert_eq!(
        world.store.get_sandbox(sandbox.id).await.unwrap().status,
        SandboxStatus::Running
    );

    // At the deadline: killed, with the reason.
    let expired = orchestrator.tick_timeouts(extended).await.unwrap();
    assert_eq!(expired, vec![sandbox.id]);
    let ended = world.store.get_sandbox(sandbox.id).await.unwrap();
    assert_eq!(ended.status, SandboxStatus::Killed);
    assert!(ended.error_message.unwrap().contains("timed out"));
    assert!(!world.provider_has(&provider_id));
}

/// Waits until the sandbox's last assistant message has stored at least one raw line
/// (the agent's session start), so a restart falls in the middle of the run.
async fn wait_started(world: &World, id: SandboxId, seq: i64) {
    eventually("the run to start", LONG, || async {
        messages(world, id)
            .await
            .iter()
            .any(|m| m.seq == seq && m.raw_log.contains('\n'))
    })
    .await;
}

async fn restart_reconciles_and_resumes(backend: Backend) {
    let Some(world) = World::new("restart_reconciles_and_resumes", backend).await else {
        return;
    };
    world.put_anthropic_key().await;
    let first = world.orchestrator(EventHub::default());
    let sandbox = first
        .create(request(&world, "SLEEP 12 then add a greeting"))
        .await
        .expect("create");
    let provider_id = sandbox.provider_sandbox_id.clone().unwrap();
    wait_started(&world, sandbox.id, 2).await;

    // Things a crash leaves: a sandbox the store runs but the provider lost, and a
    // provider sandbox with Courier's metadata the store does not know.
    let vanished = world
        .store
        .create_sandbox(NewSandbox {
            user_id: world.user,
            project_id: world.project,
            config: SandboxConfig::default(),
            cli_tool: "claude".into(),
            model: None,
            prompt: "lost".into(),
            links: Default::default(),
            repo_url: None,
            branch: None,
        })
        .await
        .unwrap();
    world
        .store
        .set_provider_sandbox_id(vanished.id, "gone-at-the-provider")
        .await
        .unwrap();
    world
        .store
        .transition_sandbox(
            vanished.id,
            SandboxStatus::Creating,
            SandboxStatus::Running,
            None,
        )
        .await
        .unwrap();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(METADATA_SANDBOX_ID.to_owned(), SandboxId::new().to_string());
    let orphan = world
        .client
        .create(ProviderSandbox {
            template_id: TEMPLATE.into(),
            timeout: Some(600),
            metadata,
            ..Default::default()
        })
        .await
        .unwrap();

    // The crash: the first orchestrator stops following; the agent keeps running.
    first.detach_all();
    drop(first);

    let hub = EventHub::default();
    let second = world.orchestrator(hub.clone());
    let report = second.reconcile().await.expect("reconcile");
    assert_eq!(report.vanished, vec![vanished.id]);
    assert_eq!(report.orphans, vec![orphan.sandbox_id.clone()]);
    assert_eq!(report.reattached, vec![sandbox.id]);
    assert!(!world.provider_has(&orphan.sandbox_id));
    let lost = world.store.get_sandbox(vanished.id).await.unwrap();
    assert_eq!(lost.status, SandboxStatus::Killed);
    assert!(lost.error_message.unwrap().contains("vanished"));

    // Streaming resumes live: a late subscriber sees the message whole, once.
    let events = collect(&world, &hub, sandbox.id).await;
    assert!(second.is_working(sandbox.id));
    wait_idle(&second, &world, sandbox.id, 2).await;
    let stored = messages(&world, sandbox.id).await;
    assert_eq!(stored[1].status, MessageStatus::Completed, "{stored:?}");
    assert!(stored[1].content.contains("Done:"), "{}", stored[1].content);
    eventually("the finished event", LONG, || async {
        rebuild(&events.lock().unwrap())
            .get(&2)
            .is_some_and(|m| m.1 == MessageStatus::Completed)
    })
    .await;
    assert_events_match(&events, &stored);
    let record = world.client.connect(&provider_id, None).await.unwrap();
    let out_log = format!("{AGENT_RUN_DIR}/out.log");
    let output = world.client.read_file(&record, &out_log).await.unwrap();
    assert_eq!(
        stored[1].raw_log.as_bytes(),
        &output[..],
        "the raw log is the agent's stdout: nothing lost, nothing twice"
    );

    // Again, but the agent finishes while no orchestrator follows: its output is read
    // from the run's log file on re-attach.
    second
        .send_message(sandbox.id, "SLEEP 5 then add tests")
        .await
        .unwrap();
    wait_started(&world, sandbox.id, 4).await;
    second.detach_all();
    drop(second);
    eventually("the agent to finish unobserved", LONG, || async {
        let exit = format!("{AGENT_RUN_DIR}/exit");
        world.client.read_file(&record, &exit).await.is_ok()
    })
    .await;
    let third = world.orchestrator(EventHub::default());
    let report = third.reconcile().await.expect("reconcile");
    assert_eq!(report.reattached, vec![sandbox.id]);
    wait_idle(&third, &world, sandbox.id, 4).await;
    let stored = messages(&world, sandbox.id).await;
    assert_eq!(stored[3].status, MessageStatus::Completed, "{stored:?}");
    assert!(
        stored[3].content.contains("Continuing session"),
        "{}",
        stored[3].content
    );
    let output = world.client.read_file(&record, &out_log).await.unwrap();
    assert_eq!(stored[3].raw_log.as_bytes(), &output[..]);

    third.kill(sandbox.id, None).await.unwrap();
    assert!(!world.provider_has(&provider_id));
}

async fn bad_requests_fail_before_anything_is_created(backend: Backend) {
    let Some(world) = World::new("bad_requests_fail_before_anything_is_created", backend).await
    else {
        return;
    };
    let orchestrator = world.orchestrator(EventHub::default());
    let count = || async {
        world
            .store
            .list_sandboxes(SandboxFilter::default(), PageRequest::default())
            .await
            .unwrap()
            .items
            .len()
    };

    let err = orchestrator
        .create(request(&world, "add a greeting"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OrchestratorError::MissingProviderKey { .. }),
        "{err}"
    );
    assert!(
        err.to_string().to_lowercase().contains("anthropic"),
        "{err}"
    );

    world.put_anthropic_key().await;
    for (field, req) in [
        ("memory_mb", {
            let mut r = request(&world, "x");
            r.memory_mb = Some(100);
            r
        }),
        ("cpu_count", {
            let mut r = request(&world, "x");
            r.cpu_count = Some(9);
            r
        }),
        ("timeout_ms", {
            let mut r = request(&world, "x");
            r.timeout_ms = Some(14_400_001);
            r
        }),
    ] {
        let err = orchestrator.create(req).await.unwrap_err();
        match &err {
            OrchestratorError::InvalidConfig { field: f, .. } => assert_eq!(*f, field, "{err}"),
            other => panic!("expected an invalid {field}, got {other}"),
        }
    }
    assert_eq!(count().await, 0, "nothing recorded");
    assert!(
        world.server.list().is_empty(),
        "nothing created at the provider"
    );
}

/// A project's settings reach its sandboxes: a create naming only the prompt gets the
/// project's tool, template, repository and base branch; the fake Claude's sandbox holds
/// the project's `CLAUDE.md`, skill, command and system prompt; a shell agent sees the
/// project's env var.
async fn project_settings_reach_the_sandbox_and_the_agent(backend: Backend) {
    let Some(world) = World::new("project_settings_reach_the_sandbox", backend).await else {
        return;
    };
    world.put_anthropic_key().await;
    let update = SettingsUpdate {
        repo_url: Some(REPO_URL.into()),
        base_branch: Some("main".into()),
        env_vars: [("DEPLOY_TOKEN".to_owned(), Some(Secret::new("tok-e2e-5678")))].into(),
        system_prompt: Some("Project rule: answer in French.".into()),
        claude_md: Some("# Engine\nUse tabs.\n".into()),
        skills: vec![NamedText {
            name: "review".into(),
            content: "---\nname: review\ndescription: Reviews a diff\n---\nReview it.\n".into(),
        }],
        commands: vec![NamedText {
            name: "ship".into(),
            content: "Ship it.\n".into(),
        }],
        sandbox_defaults: SandboxDefaults {
            tool: Some("claude".into()),
            template_id: Some(TEMPLATE.into()),
            ..Default::default()
        },
    };
    world
        .vault()
        .put_project_settings(world.project, update)
        .await
        .expect("settings");
    let orchestrator = world.orchestrator(EventHub::default());
    let only_prompt = |prompt: &str| CreateRequest {
        user_id: world.user,
        project_id: world.project,
        prompt: prompt.into(),
        ..Default::default()
    };

    let sandbox = orchestrator
        .create(only_prompt("add a greeting"))
        .await
        .expect("create");
    assert_eq!(sandbox.cli_tool, "claude");
    wait_idle(&orchestrator, &world, sandbox.id, 2).await;
    let stored = messages(&world, sandbox.id).await;
    assert_eq!(stored[1].status, MessageStatus::Completed, "{stored:?}");
    assert!(stored[1].content.contains("Done: add a greeting"));
    let provider_id = sandbox.provider_sandbox_id.clone().unwrap();
    let record = world.client.connect(&provider_id, None).await.unwrap();
    let out = world
        .client
        .run(
            &record,
            CommandSpec::new(
                "cd /home/user/project && git log --format=%s -1 main && cat CLAUDE.md \
                 .claude/skills/review/SKILL.md .claude/commands/ship.md /home/user/.claude/CLAUDE.md",
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    for expected in [
        "initial commit",
        "Use tabs.",
        "description: Reviews a diff",
        "Ship it.",
        "Project rule: answer in French.",
    ] {
        assert!(out.stdout.contains(expected), "{expected}: {}", out.stdout);
    }
    orchestrator.kill(sandbox.id, None).await.expect("kill");

    // The request's tool wins; the agent's process has the project's env var.
    let shell = orchestrator
        .create(CreateRequest {
            tool: Some("shell".into()),
            ..only_prompt(
                "test \"$DEPLOY_TOKEN\" = tok-e2e-5678 && echo env-ok; cat /home/user/.courier/system-prompt.md",
            )
        })
        .await
        .expect("create shell");
    assert_eq!(shell.cli_tool, "shell");
    wait_idle(&orchestrator, &world, shell.id, 2).await;
    let stored = messages(&world, shell.id).await;
    assert!(
        stored[1].content.contains("env-ok"),
        "{}",
        stored[1].content
    );
    assert!(
        stored[1]
            .content
            .contains("Project rule: answer in French."),
        "{}",
        stored[1].content
    );
    orchestrator.kill(shell.id, None).await.expect("kill");
}

on_both_backends!(
    create_stream_follow_up_kill,
    timeout_checkpoints_first,
    restart_reconciles_and_resumes,
    bad_requests_fail_before_anything_is_created,
    project_settings_reach_the_sandbox_and_the_agent,
);
