//! Personas, workflow runs and steps, work chains, issue sessions.

use super::seed::*;
use crate::*;

fn skill(name: &str) -> NamedText {
    NamedText {
        name: name.into(),
        content: format!("---\nname: {name}\n---\n"),
    }
}

fn new_persona(project: &Project, name: &str) -> NewPersona {
    NewPersona {
        project_id: project.id,
        name: name.into(),
        tool: Some("claude".into()),
        model: Some("opus".into()),
        thinking_effort: Some("high".into()),
        system_prompt: Some("You review.".into()),
        skills: vec![skill("review")],
    }
}

fn spec() -> WorkflowSpec {
    WorkflowSpec {
        tool: Some("claude".into()),
        model: Some("sonnet".into()),
        steps: vec![
            StepSpec::default(),
            StepSpec {
                role: StepRole::Checker,
                persona_id: Some(PersonaId::from_uuid(uuid::Uuid::from_u128(7))),
                instructions: Some("Be strict.".into()),
            },
        ],
        max_iterations: 3,
        config: SandboxConfig::default(),
    }
}

fn new_run(project: &Project, chain_id: Option<WorkChainId>) -> NewWorkflowRun {
    NewWorkflowRun {
        user_id: project.user_id,
        project_id: project.id,
        chain_id,
        title: "Fix the bug".into(),
        prompt: "fix the bug".into(),
        spec: spec(),
        repo_url: Some("https://example.invalid/repo.git".into()),
        base_branch: Some("main".into()),
        branch: Some("courier/fix".into()),
    }
}

fn item(title: &str) -> NewChainItem {
    NewChainItem {
        title: title.into(),
        prompt: format!("do {title}"),
        card_id: None,
    }
}

fn new_chain(project: &Project, items: Vec<NewChainItem>) -> NewWorkChain {
    NewWorkChain {
        user_id: project.user_id,
        project_id: project.id,
        title: "Cleanup".into(),
        spec: spec(),
        repo_url: None,
        base_branch: Some("main".into()),
        branch: "courier/cleanup".into(),
        pr_mode: PrMode::PerIssue,
        items,
    }
}

fn card(title: &str, severity: Severity) -> NewIssueCard {
    NewIssueCard {
        title: title.into(),
        description: format!("{title} is wrong"),
        severity,
        suggested_prompt: format!("fix {title}"),
    }
}

fn state(status: RunStatus) -> RunState {
    RunState {
        status,
        iteration: 0,
        designer_sandbox_id: None,
        verdict: None,
        branch: Some("courier/fix".into()),
        error: None,
    }
}

/// Personas are created, listed by name, replaced whole and deleted; names are unique
/// per project only.
pub async fn personas_round_trip_with_unique_names(store: &dyn Store) {
    let p = project(store).await;
    let zed = store.create_persona(new_persona(&p, "zed")).await.unwrap();
    assert_eq!(zed.name, "zed");
    assert_eq!(zed.skills, vec![skill("review")]);
    assert_eq!(zed.created_at, zed.updated_at);
    assert_eq!(store.get_persona(zed.id).await.unwrap(), zed);
    let alpha = store
        .create_persona(new_persona(&p, "alpha"))
        .await
        .unwrap();

    expect_conflict(store.create_persona(new_persona(&p, "zed")).await);
    let mut dup_skills = new_persona(&p, "dup");
    dup_skills.skills.push(skill("review"));
    expect_invalid(store.create_persona(dup_skills).await, "skills");
    expect_not_found(
        store
            .create_persona(NewPersona {
                project_id: ProjectId::new(),
                ..new_persona(&p, "orphan")
            })
            .await,
        "project",
    );
    // Another project may use the same name.
    let other = project(store).await;
    store
        .create_persona(new_persona(&other, "zed"))
        .await
        .unwrap();

    let names = |list: Vec<Persona>| list.into_iter().map(|x| x.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_personas(p.id).await.unwrap()),
        ["alpha", "zed"]
    );

    // An update replaces all but id, project and creation time.
    let replaced = store
        .update_persona(
            zed.id,
            NewPersona {
                project_id: other.id,
                name: "beta".into(),
                tool: None,
                model: None,
                thinking_effort: None,
                system_prompt: None,
                skills: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(replaced.id, zed.id);
    assert_eq!(replaced.project_id, p.id);
    assert_eq!(replaced.created_at, zed.created_at);
    assert!(replaced.updated_at >= zed.updated_at);
    assert_eq!((replaced.tool.as_deref(), replaced.skills.len()), (None, 0));
    assert_eq!(store.get_persona(zed.id).await.unwrap(), replaced);
    expect_conflict(store.update_persona(zed.id, new_persona(&p, "alpha")).await);
    expect_not_found(
        store
            .update_persona(PersonaId::new(), new_persona(&p, "x"))
            .await,
        "persona",
    );

    store.delete_persona(alpha.id).await.unwrap();
    expect_not_found(store.get_persona(alpha.id).await, "persona");
    expect_not_found(store.delete_persona(alpha.id).await, "persona");
    assert_eq!(names(store.list_personas(p.id).await.unwrap()), ["beta"]);
}

/// Runs start pending; their state changes by compare-and-set only: a stale `from` is a
/// conflict, a final `from` an invalid transition, and a final status stamps
/// `finished_at`.
pub async fn workflow_runs_change_state_by_compare_and_set(store: &dyn Store) {
    let p = project(store).await;
    let run = store.create_workflow_run(new_run(&p, None)).await.unwrap();
    assert_eq!(run.state, state(RunStatus::Pending));
    assert_eq!(run.spec, spec());
    assert_eq!(run.finished_at, None);
    assert_eq!(store.get_workflow_run(run.id).await.unwrap(), run);
    expect_not_found(
        store.get_workflow_run(WorkflowRunId::new()).await,
        "workflow run",
    );
    expect_not_found(
        store
            .create_workflow_run(NewWorkflowRun {
                project_id: ProjectId::new(),
                ..new_run(&p, None)
            })
            .await,
        "project",
    );

    let designer = sandbox(store, &p).await;
    let running = RunState {
        status: RunStatus::Running,
        iteration: 1,
        designer_sandbox_id: Some(designer.id),
        verdict: Some(Verdict::NeedsChanges),
        branch: Some("courier/other".into()),
        error: None,
    };
    let updated = store
        .update_workflow_run(run.id, RunStatus::Pending, running.clone())
        .await
        .unwrap();
    assert_eq!(updated.state, running);
    assert_eq!(updated.finished_at, None);
    assert!(updated.updated_at >= run.updated_at);
    assert_eq!(updated.created_at, run.created_at);

    // Stale `from`: nothing changes.
    expect_conflict(
        store
            .update_workflow_run(run.id, RunStatus::Pending, state(RunStatus::Failed))
            .await,
    );
    // Same status, new state (the next iteration).
    let next = RunState {
        iteration: 2,
        ..running.clone()
    };
    store
        .update_workflow_run(run.id, RunStatus::Running, next.clone())
        .await
        .unwrap();
    let done = RunState {
        status: RunStatus::Succeeded,
        verdict: Some(Verdict::Pass),
        ..next
    };
    let finished = store
        .update_workflow_run(run.id, RunStatus::Running, done.clone())
        .await
        .unwrap();
    assert_eq!(finished.state, done);
    assert!(finished.finished_at.is_some());
    assert_eq!(store.get_workflow_run(run.id).await.unwrap(), finished);

    // Final stays final, whatever the caller believes.
    for from in [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ] {
        let err = store
            .update_workflow_run(run.id, from, state(RunStatus::Running))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidRunTransition { from: f, to: RunStatus::Running, .. } if f == from),
            "{err:?}"
        );
    }
    expect_conflict(
        store
            .update_workflow_run(run.id, RunStatus::Running, state(RunStatus::Cancelled))
            .await,
    );
    expect_not_found(
        store
            .update_workflow_run(
                WorkflowRunId::new(),
                RunStatus::Pending,
                state(RunStatus::Running),
            )
            .await,
        "workflow run",
    );
    assert_eq!(store.get_workflow_run(run.id).await.unwrap(), finished);
}

/// Runs list newest first, by project and optionally chain; unfinished runs (pending or
/// running) list oldest first across projects.
pub async fn workflow_runs_list_by_project_chain_and_unfinished(store: &dyn Store) {
    let p = project(store).await;
    let other = project(store).await;
    let chain = store
        .create_work_chain(new_chain(&p, vec![item("a")]))
        .await
        .unwrap();
    let a = store.create_workflow_run(new_run(&p, None)).await.unwrap();
    let b = store
        .create_workflow_run(new_run(&p, Some(chain.id)))
        .await
        .unwrap();
    let c = store
        .create_workflow_run(new_run(&other, None))
        .await
        .unwrap();
    let d = store.create_workflow_run(new_run(&p, None)).await.unwrap();
    assert_eq!(b.chain_id, Some(chain.id));

    let ids = |runs: Vec<WorkflowRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_workflow_runs(p.id, None).await.unwrap()),
        [d.id, b.id, a.id]
    );
    assert_eq!(
        ids(store
            .list_workflow_runs(p.id, Some(chain.id))
            .await
            .unwrap()),
        [b.id]
    );
    assert_eq!(
        ids(store.list_workflow_runs(other.id, None).await.unwrap()),
        [c.id]
    );

    store
        .update_workflow_run(a.id, RunStatus::Pending, state(RunStatus::Running))
        .await
        .unwrap();
    store
        .update_workflow_run(c.id, RunStatus::Pending, state(RunStatus::Cancelled))
        .await
        .unwrap();
    assert_eq!(
        ids(store.list_unfinished_workflow_runs().await.unwrap()),
        [a.id, b.id, d.id]
    );
}

/// Steps are numbered 1, 2, 3 in their run (also when added concurrently), start
/// running, and finish exactly once.
pub async fn workflow_steps_are_numbered_and_finish_once(store: &dyn Store) {
    let p = project(store).await;
    let run = store.create_workflow_run(new_run(&p, None)).await.unwrap();
    let step = |role, iteration| NewWorkflowStep {
        run_id: run.id,
        role,
        iteration,
    };
    let first = store
        .add_workflow_step(step(StepRole::Designer, 1))
        .await
        .unwrap();
    assert_eq!(
        (first.seq, first.status, first.role),
        (1, RunStatus::Running, StepRole::Designer)
    );
    assert_eq!((first.sandbox_id, first.finished_at), (None, None));
    let (second, third) = futures::join!(
        store.add_workflow_step(step(StepRole::Checker, 1)),
        store.add_workflow_step(step(StepRole::Optimizer, 1)),
    );
    let mut seqs = vec![second.unwrap().seq, third.unwrap().seq];
    seqs.sort();
    assert_eq!(seqs, [2, 3]);
    expect_not_found(
        store
            .add_workflow_step(NewWorkflowStep {
                run_id: WorkflowRunId::new(),
                role: StepRole::Designer,
                iteration: 1,
            })
            .await,
        "workflow run",
    );

    let s = sandbox(store, &p).await;
    let with_sandbox = store
        .set_workflow_step_sandbox(first.id, s.id)
        .await
        .unwrap();
    assert_eq!(with_sandbox.sandbox_id, Some(s.id));
    expect_not_found(
        store
            .set_workflow_step_sandbox(WorkflowStepId::new(), s.id)
            .await,
        "workflow step",
    );

    let outcome = StepOutcome {
        status: RunStatus::Succeeded,
        verdict: Some(Verdict::NeedsChanges),
        feedback: Some("add a test".into()),
        output: Some("diff".into()),
        error: None,
    };
    let still_running = StepOutcome {
        status: RunStatus::Running,
        ..outcome.clone()
    };
    expect_invalid(
        store.finish_workflow_step(first.id, still_running).await,
        "status",
    );
    let done = store
        .finish_workflow_step(first.id, outcome.clone())
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.verdict, Some(Verdict::NeedsChanges));
    assert_eq!(done.feedback.as_deref(), Some("add a test"));
    assert_eq!(done.output.as_deref(), Some("diff"));
    assert_eq!(done.sandbox_id, Some(s.id));
    assert!(done.finished_at.is_some());
    expect_conflict(store.finish_workflow_step(first.id, outcome.clone()).await);
    expect_not_found(
        store
            .finish_workflow_step(WorkflowStepId::new(), outcome)
            .await,
        "workflow step",
    );

    let steps = store.list_workflow_steps(run.id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(steps[0], done);
}

/// A chain and its items are stored together (or not at all); items append at the
/// next position until the chain is final, and record their progress.
pub async fn work_chains_store_items_together(store: &dyn Store) {
    let p = project(store).await;
    expect_invalid(
        store.create_work_chain(new_chain(&p, vec![])).await,
        "items",
    );
    // A missing card fails the whole chain: no chain is left behind.
    let bad = NewChainItem {
        card_id: Some(IssueCardId::new()),
        ..item("b")
    };
    expect_not_found(
        store
            .create_work_chain(new_chain(&p, vec![item("a"), bad]))
            .await,
        "issue card",
    );
    assert!(store.list_work_chains(p.id).await.unwrap().is_empty());

    let chain = store
        .create_work_chain(new_chain(&p, vec![item("a"), item("b")]))
        .await
        .unwrap();
    assert_eq!(
        (chain.status, chain.pr_mode),
        (RunStatus::Pending, PrMode::PerIssue)
    );
    assert_eq!(chain.spec, spec());
    assert_eq!(chain.branch, "courier/cleanup");
    assert_eq!(store.get_work_chain(chain.id).await.unwrap(), chain);
    expect_not_found(store.get_work_chain(WorkChainId::new()).await, "work chain");
    let items = store.list_chain_items(chain.id).await.unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| (i.position, i.title.as_str(), i.status))
            .collect::<Vec<_>>(),
        [(1, "a", RunStatus::Pending), (2, "b", RunStatus::Pending)]
    );
    assert_eq!(items[0].prompt, "do a");

    let third = store.append_chain_item(chain.id, item("c")).await.unwrap();
    assert_eq!(
        (third.position, third.status, third.run_id),
        (3, RunStatus::Pending, None)
    );
    expect_not_found(
        store.append_chain_item(WorkChainId::new(), item("x")).await,
        "work chain",
    );

    // Item progress: a run is recorded, and None keeps it.
    let run = store
        .create_workflow_run(new_run(&p, Some(chain.id)))
        .await
        .unwrap();
    let started = store
        .update_chain_item(chain.id, 1, Some(run.id), RunStatus::Running, None)
        .await
        .unwrap();
    assert_eq!(
        (started.run_id, started.status),
        (Some(run.id), RunStatus::Running)
    );
    let failed = store
        .update_chain_item(chain.id, 1, None, RunStatus::Failed, Some("boom".into()))
        .await
        .unwrap();
    assert_eq!(failed.run_id, Some(run.id));
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (RunStatus::Failed, Some("boom"))
    );
    expect_not_found(
        store
            .update_chain_item(chain.id, 9, None, RunStatus::Running, None)
            .await,
        "chain item",
    );
    assert_eq!(store.list_chain_items(chain.id).await.unwrap()[0], failed);

    // The chain's status by compare-and-set.
    let running = store
        .update_work_chain(chain.id, RunStatus::Pending, RunStatus::Running, None)
        .await
        .unwrap();
    assert_eq!(
        (running.status, running.finished_at),
        (RunStatus::Running, None)
    );
    expect_conflict(
        store
            .update_work_chain(chain.id, RunStatus::Pending, RunStatus::Running, None)
            .await,
    );
    store.append_chain_item(chain.id, item("d")).await.unwrap();
    let failed = store
        .update_work_chain(
            chain.id,
            RunStatus::Running,
            RunStatus::Failed,
            Some("item 1 failed".into()),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("item 1 failed"));
    assert!(failed.finished_at.is_some());
    let err = store
        .update_work_chain(chain.id, RunStatus::Failed, RunStatus::Running, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidRunTransition { .. }),
        "{err:?}"
    );

    // Appending to a final chain is refused and adds nothing.
    expect_conflict(store.append_chain_item(chain.id, item("e")).await);
    assert_eq!(store.list_chain_items(chain.id).await.unwrap().len(), 4);
}

/// Chains list newest first per project; unfinished ones oldest first.
pub async fn work_chains_list_by_project_and_unfinished(store: &dyn Store) {
    let p = project(store).await;
    let other = project(store).await;
    let a = store
        .create_work_chain(new_chain(&p, vec![item("a")]))
        .await
        .unwrap();
    let b = store
        .create_work_chain(new_chain(&other, vec![item("b")]))
        .await
        .unwrap();
    let c = store
        .create_work_chain(new_chain(&p, vec![item("c")]))
        .await
        .unwrap();
    let ids = |chains: Vec<WorkChain>| chains.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_work_chains(p.id).await.unwrap()),
        [c.id, a.id]
    );
    store
        .update_work_chain(a.id, RunStatus::Pending, RunStatus::Cancelled, None)
        .await
        .unwrap();
    store
        .update_work_chain(c.id, RunStatus::Pending, RunStatus::Running, None)
        .await
        .unwrap();
    assert_eq!(
        ids(store.list_unfinished_work_chains().await.unwrap()),
        [b.id, c.id]
    );
}

/// A session finishes once, storing its cards in the same transaction; cards record
/// what they became.
pub async fn issue_sessions_finish_once_with_their_cards(store: &dyn Store) {
    let p = project(store).await;
    let new = NewIssueSession {
        user_id: p.user_id,
        project_id: p.id,
        focus: Some("auth".into()),
    };
    let session = store.create_issue_session(new.clone()).await.unwrap();
    assert_eq!(
        (session.status, session.finished_at),
        (RunStatus::Running, None)
    );
    assert_eq!(session.focus.as_deref(), Some("auth"));
    assert_eq!(store.get_issue_session(session.id).await.unwrap(), session);
    expect_not_found(
        store.get_issue_session(IssueSessionId::new()).await,
        "issue session",
    );
    let other = store.create_issue_session(new.clone()).await.unwrap();
    let third = store.create_issue_session(new).await.unwrap();

    let s = sandbox(store, &p).await;
    let with_sandbox = store
        .set_issue_session_sandbox(session.id, s.id)
        .await
        .unwrap();
    assert_eq!(with_sandbox.sandbox_id, Some(s.id));
    expect_not_found(
        store
            .set_issue_session_sandbox(IssueSessionId::new(), s.id)
            .await,
        "issue session",
    );

    expect_invalid(
        store
            .finish_issue_session(session.id, RunStatus::Running, None, vec![])
            .await,
        "status",
    );
    let (finished, cards) = store
        .finish_issue_session(
            session.id,
            RunStatus::Succeeded,
            None,
            vec![card("sql", Severity::Critical), card("typo", Severity::Low)],
        )
        .await
        .unwrap();
    assert_eq!(finished.status, RunStatus::Succeeded);
    assert!(finished.finished_at.is_some());
    assert_eq!(finished.sandbox_id, Some(s.id));
    assert_eq!(
        cards
            .iter()
            .map(|c| (c.position, c.title.as_str(), c.severity))
            .collect::<Vec<_>>(),
        [(1, "sql", Severity::Critical), (2, "typo", Severity::Low)]
    );
    assert!(
        cards
            .iter()
            .all(|c| c.session_id == session.id && c.project_id == p.id)
    );
    assert_eq!(cards[0].suggested_prompt, "fix sql");
    assert_eq!(store.list_issue_cards(session.id).await.unwrap(), cards);

    // Finishing again is a conflict and stores no cards.
    expect_conflict(
        store
            .finish_issue_session(
                session.id,
                RunStatus::Failed,
                None,
                vec![card("x", Severity::High)],
            )
            .await,
    );
    assert_eq!(store.list_issue_cards(session.id).await.unwrap(), cards);
    assert_eq!(store.get_issue_session(session.id).await.unwrap(), finished);
    expect_not_found(
        store
            .finish_issue_session(IssueSessionId::new(), RunStatus::Failed, None, vec![])
            .await,
        "issue session",
    );
    let (failed, none) = store
        .finish_issue_session(other.id, RunStatus::Failed, Some("no repo".into()), vec![])
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (RunStatus::Failed, Some("no repo"))
    );
    assert!(none.is_empty());

    // Cards record what they became: Some overwrites, None keeps.
    let c = &cards[0];
    assert_eq!(store.get_issue_card(c.id).await.unwrap(), *c);
    expect_not_found(store.get_issue_card(IssueCardId::new()).await, "issue card");
    let linked = store.link_issue_card(c.id, Some(s.id), None).await.unwrap();
    assert_eq!((linked.sandbox_id, linked.chain_id), (Some(s.id), None));
    let chain = store
        .create_work_chain(new_chain(
            &p,
            vec![NewChainItem {
                card_id: Some(c.id),
                ..item("sql")
            }],
        ))
        .await
        .unwrap();
    assert_eq!(
        store.list_chain_items(chain.id).await.unwrap()[0].card_id,
        Some(c.id)
    );
    let linked = store
        .link_issue_card(c.id, None, Some(chain.id))
        .await
        .unwrap();
    assert_eq!(
        (linked.sandbox_id, linked.chain_id),
        (Some(s.id), Some(chain.id))
    );
    assert_eq!(store.get_issue_card(c.id).await.unwrap(), linked);
    expect_not_found(
        store.link_issue_card(IssueCardId::new(), None, None).await,
        "issue card",
    );

    // Lists: newest first per project; unfinished ones oldest first.
    let ids = |list: Vec<IssueSession>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_issue_sessions(p.id).await.unwrap()),
        [third.id, other.id, session.id]
    );
    assert_eq!(
        ids(store.list_unfinished_issue_sessions().await.unwrap()),
        [third.id]
    );
}

/// Sandboxes list by the workflow run and the issue session they belong to.
pub async fn sandboxes_filter_by_run_and_issue_session(store: &dyn Store) {
    let p = project(store).await;
    let linked = |run: Option<&str>, session: Option<&str>| {
        let mut new = new_sandbox(&p, "claude");
        new.links = SandboxLinks {
            run_id: run.map(Into::into),
            issue_session_id: session.map(Into::into),
            background_task_id: None,
        };
        store.create_sandbox(new)
    };
    let a = linked(Some("run-1"), None).await.unwrap();
    let b = linked(Some("run-1"), Some("session-1")).await.unwrap();
    let c = linked(Some("run-2"), None).await.unwrap();
    let d = linked(None, Some("session-1")).await.unwrap();
    linked(None, None).await.unwrap();

    let ids = |page: Page<Sandbox>| page.items.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let list = |filter: SandboxFilter| store.list_sandboxes(filter, PageRequest::first(50));
    let by_run = |run: &str| SandboxFilter {
        run_id: Some(run.into()),
        ..Default::default()
    };
    assert_eq!(ids(list(by_run("run-1")).await.unwrap()), [b.id, a.id]);
    assert_eq!(ids(list(by_run("run-2")).await.unwrap()), [c.id]);
    assert!(list(by_run("run-3")).await.unwrap().items.is_empty());
    let by_session = SandboxFilter {
        issue_session_id: Some("session-1".into()),
        ..Default::default()
    };
    assert_eq!(ids(list(by_session.clone()).await.unwrap()), [d.id, b.id]);
    let both = SandboxFilter {
        run_id: Some("run-1".into()),
        ..by_session
    };
    assert_eq!(ids(list(both).await.unwrap()), [b.id]);
    assert_eq!(list(SandboxFilter::default()).await.unwrap().items.len(), 5);
}
