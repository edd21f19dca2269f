//! Workflow runs, work chains and issue sessions end to end: the orchestrator against a
//! real courier-sandboxd (in-process), the fake agent CLIs (whose `PASS_AT_COMMITS` and
//! `CARDS` directives script a checker's verdict and a scanner's cards), a bare git
//! repository on the host as the remote and, for pull requests, a GitHub stand-in
//! answering with recorded bodies. On SQLite and (with `COURIER_TEST_PG_URL`) PostgreSQL.
//!
//! What an agent inside a sandbox could do here is what it can do in any sandbox; these
//! tests check what the orchestrator does with what agents answer: a verdict or a card is
//! data parsed into typed fields, never run.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod e2e_support;

use std::sync::Arc;
use std::time::Duration;

use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::pr::{PrConfig, PrPipeline};
use courier_orchestrator::settings::SettingsUpdate;
use courier_orchestrator::stream::EventHub;
use courier_orchestrator::work::{
    ChainDetail, ChainRequest, RunRequest, WorkflowRequest, Workflows,
};
use courier_store::{
    CliOverrides, KeyOwner, NewChainItem, PrMode, PrStatus, Provider, RunStatus, SandboxDefaults,
    SandboxStatus, StepRole, StepSpec, Verdict, WorkChainId, WorkflowRun, WorkflowRunId,
};
use courier_testkit::standin::{Reply, StandIn};
use courier_tools::Secret;
use e2e_support::{Backend, LONG, REPO_URL, TEMPLATE, World, eventually};

/// The project's defaults: the fake Claude on the test template, the bare repository.
async fn setup(world: &World, extra_env: &[(&str, &str)], repo_url: &str) {
    world.put_anthropic_key().await;
    world
        .vault()
        .put(
            KeyOwner::Project(world.project),
            Provider::OpenAi,
            "sk-proj-dummy-e2e-0000",
        )
        .save()
        .await
        .unwrap();
    let update = SettingsUpdate {
        repo_url: Some(repo_url.into()),
        base_branch: Some("main".into()),
        env_vars: extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some(Secret::new(*v))))
            .collect(),
        sandbox_defaults: SandboxDefaults {
            tool: Some("claude".into()),
            template_id: Some(TEMPLATE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    world
        .vault()
        .put_project_settings(world.project, update)
        .await
        .unwrap();
}

async fn finished_run(world: &World, id: WorkflowRunId) -> WorkflowRun {
    eventually("the workflow run to end", LONG * 2, || async {
        world
            .store
            .get_workflow_run(id)
            .await
            .unwrap()
            .state
            .status
            .is_final()
    })
    .await;
    world.store.get_workflow_run(id).await.unwrap()
}

/// What most scenarios need: a world with the project set up ([`setup`]), an
/// orchestrator and workflows over it.
async fn plain_world(test: &str, backend: Backend) -> Option<(World, Orchestrator, Workflows)> {
    let world = World::new(test, backend).await?;
    setup(&world, &[], REPO_URL).await;
    let orchestrator = world.orchestrator(EventHub::default());
    let workflows = Workflows::new(orchestrator.clone());
    Some((world, orchestrator, workflows))
}

/// Starts a run of `prompt` in the world's project.
async fn start(
    world: &World,
    workflows: &Workflows,
    prompt: &str,
    workflow: WorkflowRequest,
) -> WorkflowRun {
    workflows
        .start_run(RunRequest {
            user_id: world.user,
            project_id: world.project,
            prompt: prompt.into(),
            workflow,
            ..Default::default()
        })
        .await
        .expect("start run")
}

/// The process dies (nothing more from its orchestrator and workflows) and a new one
/// starts over the same store and provider: it reconciles, then resumes.
async fn restart(
    world: &World,
    workflows: Workflows,
    orchestrator: Orchestrator,
) -> (Workflows, courier_orchestrator::work::ResumeReport) {
    workflows.detach_all();
    orchestrator.detach_all();
    drop(workflows);
    drop(orchestrator);
    let second = world.orchestrator(EventHub::default());
    second.reconcile().await.expect("reconcile");
    let resumed = Workflows::new(second);
    let report = resumed.resume().await.expect("resume");
    (resumed, report)
}

fn steps(roles: &[StepRole]) -> Option<Vec<StepSpec>> {
    Some(
        roles
            .iter()
            .map(|role| StepSpec {
                role: *role,
                ..Default::default()
            })
            .collect(),
    )
}

/// Designer (fake Claude) → checker (fake Codex, by `checkerCliId`): the first check
/// sees 2 commits and asks for changes, the designer's sandbox gets the feedback as a
/// follow-up and commits again, the second check passes. Every sandbox is linked by
/// `run_id` and ends; the run's cost is the sum of its sandboxes'.
async fn designer_checker_iterates_twice(backend: Backend) {
    let Some((world, orchestrator, workflows)) =
        plain_world("designer_checker_iterates_twice", backend).await
    else {
        return;
    };
    let run = start(
        &world,
        &workflows,
        "Add a greeting module. PASS_AT_COMMITS 3",
        WorkflowRequest {
            max_iterations: Some(3),
            cli_overrides: CliOverrides {
                checker: Some("codex".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    assert_eq!(run.state.status, RunStatus::Pending);
    let run = finished_run(&world, run.id).await;
    assert_eq!(run.state.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.state.verdict, Some(Verdict::Pass));
    assert_eq!(run.state.iteration, 2);

    let detail = workflows.run_detail(run.id).await.unwrap();
    let shape: Vec<_> = detail
        .steps
        .iter()
        .map(|s| (s.role, s.iteration, s.verdict))
        .collect();
    assert_eq!(
        shape,
        [
            (StepRole::Designer, 1, None),
            (StepRole::Checker, 1, Some(Verdict::NeedsChanges)),
            (StepRole::Designer, 2, None),
            (StepRole::Checker, 2, Some(Verdict::Pass)),
        ]
    );
    assert!(
        detail.steps[1]
            .feedback
            .as_deref()
            .unwrap()
            .contains("Only 2 commits"),
        "{:?}",
        detail.steps[1].feedback
    );
    // The designer's sandbox is reused; each check has its own, on Codex.
    assert_eq!(detail.steps[0].sandbox_id, detail.steps[2].sandbox_id);
    assert_ne!(detail.steps[1].sandbox_id, detail.steps[3].sandbox_id);
    assert_eq!(run.state.designer_sandbox_id, detail.steps[0].sandbox_id);
    assert_eq!(detail.sandboxes.len(), 3, "{:?}", detail.sandboxes);
    for sandbox in &detail.sandboxes {
        assert_eq!(sandbox.links.run_id, Some(run.id.to_string()));
        assert_eq!(sandbox.status, SandboxStatus::Killed, "{sandbox:?}");
        let expected_tool = if Some(sandbox.id) == run.state.designer_sandbox_id {
            "claude"
        } else {
            "codex"
        };
        assert_eq!(sandbox.cli_tool, expected_tool);
    }
    // Both designer turns reached the run's branch; the checkers' own commits did not.
    let branch = run.state.branch.clone().unwrap();
    let log = world.remote_log(&branch);
    let turns: Vec<_> = log.iter().filter(|s| s.starts_with("claude:")).collect();
    assert_eq!(turns.len(), 2, "{log:?}");
    assert!(!log.iter().any(|s| s.starts_with("codex:")), "{log:?}");
    // The pull request step ran on the designer's sandbox: a file remote is skipped.
    let designer = world
        .store
        .get_sandbox(run.state.designer_sandbox_id.unwrap())
        .await
        .unwrap();
    assert_eq!(designer.git.pr_status, None, "no pipeline configured");
    // Costs summed over the three sandboxes.
    let mut sum = 0;
    for sandbox in &detail.sandboxes {
        let usage = courier_orchestrator::usage::UsageSummary::for_sandbox(
            world.store.as_ref(),
            sandbox.id,
        )
        .await
        .unwrap();
        sum += usage.cost.micros();
    }
    assert!(sum > 0, "the fakes report token usage");
    assert_eq!(detail.usage.cost.micros(), sum);
    drop(orchestrator);
}

/// A workflow whose checker never passes ends `failed` after its last iteration, with
/// the feedback as the reason and no pull request; a misspelt override is refused before
/// anything is recorded.
async fn a_run_that_never_passes_fails_with_the_reason(backend: Backend) {
    let Some((world, _, workflows)) = plain_world("a_run_that_never_passes", backend).await else {
        return;
    };
    let bad = workflows
        .start_run(RunRequest {
            user_id: world.user,
            project_id: world.project,
            prompt: "x".into(),
            workflow: WorkflowRequest {
                cli_overrides: CliOverrides {
                    checker: Some("gemini".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("tool") && bad.contains("checker step"),
        "{bad}"
    );
    assert!(
        world
            .store
            .list_workflow_runs(world.project, None)
            .await
            .unwrap()
            .is_empty()
    );

    let run = start(
        &world,
        &workflows,
        "Refactor everything. PASS_AT_COMMITS 99",
        WorkflowRequest {
            max_iterations: Some(1),
            ..Default::default()
        },
    )
    .await;
    let run = finished_run(&world, run.id).await;
    assert_eq!(run.state.status, RunStatus::Failed);
    assert_eq!(run.state.verdict, Some(Verdict::NeedsChanges));
    let error = run.state.error.unwrap();
    assert!(
        error.contains("after 1 iterations") && error.contains("need 99"),
        "{error}"
    );
    // The designer's work is still on the branch.
    assert!(
        !world
            .remote_log(run.state.branch.as_deref().unwrap())
            .is_empty()
    );
}

/// The server dies while the designer works: a new process (new orchestrator, hub and
/// workflows over the same store and provider) reconciles, resumes the run at its step,
/// and the run ends `succeeded` with one designer sandbox, never two.
async fn a_restart_mid_workflow_resumes_it(backend: Backend) {
    let Some((world, first, workflows)) =
        plain_world("a_restart_mid_workflow_resumes_it", backend).await
    else {
        return;
    };
    let run = start(
        &world,
        &workflows,
        "Add a footer. SLEEP 4 PASS_AT_COMMITS 2",
        WorkflowRequest::default(),
    )
    .await;
    eventually("the designer's sandbox", LONG, || async {
        let steps = world.store.list_workflow_steps(run.id).await.unwrap();
        steps.first().is_some_and(|s| s.sandbox_id.is_some())
    })
    .await;
    let (resumed, report) = restart(&world, workflows, first).await;
    assert_eq!(report.runs, 1);
    let run = finished_run(&world, run.id).await;
    assert_eq!(run.state.status, RunStatus::Succeeded, "{run:?}");
    let detail = resumed.run_detail(run.id).await.unwrap();
    let roles: Vec<_> = detail.steps.iter().map(|s| s.role).collect();
    assert_eq!(roles, [StepRole::Designer, StepRole::Checker]);
    assert_eq!(detail.sandboxes.len(), 2, "one designer, one checker");
}

/// Two replicas of a cluster: the run started on A is A's alone (B's periodic resume
/// does not drive it a second time); when A dies mid-run, B's next resume takes it over
/// and the run ends `succeeded` with one designer sandbox, never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_workflow_run_is_taken_over_by_another() {
    let Some(world) = World::new("a_dead_replicas_run", Backend::Postgres).await else {
        return;
    };
    let Some(pg_a) = world.pg_store().await else {
        return;
    };
    setup(&world, &[], REPO_URL).await;
    let pg_b = world.pg_store().await.unwrap();
    let cluster_a = Arc::new(
        courier_store::Cluster::join(&pg_a, "http://a.invalid")
            .await
            .unwrap(),
    );
    let cluster_b = Arc::new(
        courier_store::Cluster::join(&pg_b, "http://b.invalid")
            .await
            .unwrap(),
    );
    let first = world
        .orchestrator(EventHub::default())
        .with_cluster(cluster_a.clone());
    let second = world
        .orchestrator(EventHub::default())
        .with_cluster(cluster_b);
    let (at_a, at_b) = (
        Workflows::new(first.clone()),
        Workflows::new(second.clone()),
    );
    let run = start(
        &world,
        &at_a,
        "Add a footer. SLEEP 4 PASS_AT_COMMITS 2",
        WorkflowRequest::default(),
    )
    .await;
    assert_eq!(
        at_b.resume().await.unwrap(),
        Default::default(),
        "A drives its run: B must not drive it too"
    );
    eventually("the designer's sandbox", LONG, || async {
        let steps = world.store.list_workflow_steps(run.id).await.unwrap();
        steps.first().is_some_and(|s| s.sandbox_id.is_some())
    })
    .await;
    // A dies: it drives and follows nothing more, and its membership ends.
    at_a.detach_all();
    first.detach_all();
    cluster_a.leave().await;
    second.take_over().await.expect("take the sandboxes over");
    let report = at_b.resume().await.expect("take the work over");
    assert_eq!(report.runs, 1);
    assert_eq!(
        at_b.resume().await.unwrap(),
        Default::default(),
        "driven once"
    );
    let run = finished_run(&world, run.id).await;
    assert_eq!(run.state.status, RunStatus::Succeeded, "{run:?}");
    let detail = at_b.run_detail(run.id).await.unwrap();
    let roles: Vec<_> = detail.steps.iter().map(|s| s.role).collect();
    assert_eq!(roles, [StepRole::Designer, StepRole::Checker]);
    assert_eq!(detail.sandboxes.len(), 2, "one designer, one checker");
}

/// A two-issue chain with one pull request: both issues' runs work on the chain's
/// branch (two commits accumulate), and the last one opens the one pull request on the
/// GitHub stand-in. The sandbox reaches the bare repository through a `github.com` URL
/// rewritten by the project's env vars (git's `insteadOf`), so the remote is GitHub's.
async fn a_two_issue_chain_ends_in_one_pull_request(backend: Backend) {
    let Some(world) = World::new("a_two_issue_chain", backend).await else {
        return;
    };
    let (github, workflows) = github_world(&world).await;
    let chain = workflows
        .start_chain(ChainRequest {
            user_id: world.user,
            project_id: world.project,
            items: vec![
                issue("Issue one", "Add the parser"),
                issue("Issue two", "Add the printer"),
            ],
            workflow: WorkflowRequest {
                steps: steps(&[StepRole::Designer]),
                ..Default::default()
            },
            pr_mode: Some(PrMode::Single),
            ..Default::default()
        })
        .await
        .expect("start chain");
    eventually("the chain to end", LONG * 3, || async {
        world
            .store
            .get_work_chain(chain.id)
            .await
            .unwrap()
            .status
            .is_final()
    })
    .await;
    let detail = workflows.chain_detail(chain.id).await.unwrap();
    assert_eq!(detail.chain.status, RunStatus::Succeeded, "{detail:?}");
    assert!(
        detail
            .items
            .iter()
            .all(|i| i.status == RunStatus::Succeeded)
    );
    assert_eq!(detail.runs.len(), 2);
    for run in &detail.runs {
        assert_eq!(run.state.branch.as_deref(), Some(chain.branch.as_str()));
        assert_eq!(run.chain_id, Some(chain.id));
    }
    let log = world.remote_log(&chain.branch);
    assert_eq!(
        log.iter().filter(|s| s.starts_with("claude:")).count(),
        2,
        "{log:?}"
    );
    assert!(log.iter().any(|s| s.contains("Add the parser")), "{log:?}");
    assert!(log.iter().any(|s| s.contains("Add the printer")), "{log:?}");
    let pulls: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(pulls.len(), 1, "one pull request for the chain");
    let body = pulls[0].json();
    assert_eq!(body["head"], chain.branch.as_str());
    assert_eq!(body["base"], "main");
    let last = world
        .store
        .get_sandbox(detail.runs[1].state.designer_sandbox_id.unwrap())
        .await
        .unwrap();
    assert_eq!(last.git.pr_status, Some(PrStatus::Created));
    let first = world
        .store
        .get_sandbox(detail.runs[0].state.designer_sandbox_id.unwrap())
        .await
        .unwrap();
    assert_eq!(first.git.pr_status, None, "the first issue opened none");
}

/// The designer's sandbox ends between iterations (a timeout, or a person killing it):
/// its work was pushed after its turn, so the next iteration starts a new designer
/// sandbox on the branch with the task and the feedback, and the run still passes.
/// Killing a workflow's sandbox by hand opens no pull request of its own.
async fn a_designer_sandbox_lost_between_iterations_is_replaced(backend: Backend) {
    let Some((world, orchestrator, workflows)) =
        plain_world("a_designer_sandbox_lost", backend).await
    else {
        return;
    };
    let run = start(
        &world,
        &workflows,
        "Add a clock. SLEEP 2 PASS_AT_COMMITS 3",
        WorkflowRequest::default(),
    )
    .await;
    eventually("the first check to start", LONG, || async {
        let steps = world.store.list_workflow_steps(run.id).await.unwrap();
        steps.len() == 2 && steps[1].sandbox_id.is_some()
    })
    .await;
    let steps = world.store.list_workflow_steps(run.id).await.unwrap();
    let first_designer = steps[0].sandbox_id.unwrap();
    let killed = orchestrator.kill(first_designer, None).await.unwrap();
    assert_eq!(
        killed.git.pr_status, None,
        "a workflow's sandbox opens no PR alone"
    );
    let run = finished_run(&world, run.id).await;
    assert_eq!(run.state.status, RunStatus::Succeeded, "{run:?}");
    let detail = workflows.run_detail(run.id).await.unwrap();
    let designers: Vec<_> = detail
        .steps
        .iter()
        .filter(|s| s.role == StepRole::Designer)
        .map(|s| s.sandbox_id.unwrap())
        .collect();
    assert_eq!(designers.len(), 2);
    assert_ne!(designers[0], designers[1], "a new designer sandbox");
    assert_eq!(run.state.designer_sandbox_id, Some(designers[1]));
    let second = world.store.get_sandbox(designers[1]).await.unwrap();
    assert!(
        second.prompt.contains("asks for changes"),
        "{}",
        second.prompt
    );
    assert_eq!(detail.sandboxes.len(), 4);
}

/// A restart while a chain's first issue and an issue scan are both working: the new
/// process resumes the chain at its issue (its run included) and the scan, and both end
/// as if nothing happened.
async fn a_restart_resumes_chains_and_issue_sessions(backend: Backend) {
    let Some((world, first, workflows)) =
        plain_world("a_restart_resumes_chains_and_sessions", backend).await
    else {
        return;
    };
    let chain = workflows
        .start_chain(ChainRequest {
            user_id: world.user,
            project_id: world.project,
            items: vec![
                issue("One", "Add the lexer SLEEP 3"),
                issue("Two", "Add the parser"),
            ],
            workflow: WorkflowRequest {
                steps: steps(&[StepRole::Designer]),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    let session = workflows
        .start_issue_session(
            world.user,
            world.project,
            Some("SLEEP 3 CARDS 1".into()),
            None,
            None,
        )
        .await
        .unwrap();
    eventually("the chain's first designer", LONG, || async {
        let runs = world
            .store
            .list_workflow_runs(world.project, Some(chain.id))
            .await
            .unwrap();
        runs.first()
            .is_some_and(|r| r.state.designer_sandbox_id.is_some())
    })
    .await;
    let (resumed, report) = restart(&world, workflows, first).await;
    assert_eq!((report.runs, report.chains, report.sessions), (0, 1, 1));
    let detail = chain_end(&world, &resumed, chain.id).await;
    assert_eq!(detail.chain.status, RunStatus::Succeeded, "{detail:?}");
    assert_eq!(
        detail.runs.len(),
        2,
        "the first issue's run was resumed, not redone"
    );
    eventually("the scan to end", LONG, || async {
        world
            .store
            .get_issue_session(session.id)
            .await
            .unwrap()
            .status
            .is_final()
    })
    .await;
    let scan = resumed.issue_session_detail(session.id).await.unwrap();
    assert_eq!(scan.session.status, RunStatus::Succeeded, "{scan:?}");
    assert_eq!(scan.cards.len(), 1);
}

/// A GitHub stand-in that opens every pull request asked for, and a project whose
/// sandboxes reach the bare repository through a `github.com` URL (git's `insteadOf`
/// in the project's env vars), with a GitHub key and the pull request pipeline on.
async fn github_world(world: &World) -> (StandIn, Workflows) {
    let github = StandIn::start(|r| {
        if r.method == "POST" && r.path == "/repos/acme/project/pulls" {
            Reply::json(
                201,
                std::fs::read_to_string(format!(
                    "{}/tests/fixtures/github/create_pull_201.json",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
        } else {
            Reply::json(404, r#"{"message":"Not Found"}"#)
        }
    })
    .await;
    setup(
        world,
        &[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "url.file:///srv/git/.insteadOf"),
            ("GIT_CONFIG_VALUE_0", "https://github.com/acme/"),
        ],
        "https://github.com/acme/project.git",
    )
    .await;
    world
        .vault()
        .put(
            KeyOwner::Project(world.project),
            Provider::GitHub,
            "ghp_e2edummy000000000000000000000000abcd",
        )
        .save()
        .await
        .unwrap();
    let pipeline = PrPipeline::new(
        world.store.clone(),
        Arc::new(world.client.clone()),
        PrConfig {
            api_base: github.url.clone(),
            project_dir: "/home/user/project".into(),
            push_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        },
    )
    .with_key_vault(world.vault());
    let orchestrator: Orchestrator = world
        .orchestrator(EventHub::default())
        .with_pull_requests(pipeline);
    (github, Workflows::new(orchestrator))
}

fn issue(title: &str, prompt: &str) -> NewChainItem {
    NewChainItem {
        title: title.into(),
        prompt: prompt.into(),
        card_id: None,
    }
}

async fn chain_end(world: &World, workflows: &Workflows, chain: WorkChainId) -> ChainDetail {
    eventually("the chain to end", LONG * 3, || async {
        world
            .store
            .get_work_chain(chain)
            .await
            .unwrap()
            .status
            .is_final()
    })
    .await;
    workflows.chain_detail(chain).await.unwrap()
}

/// Designer → checker → optimizer: the designer's sandbox ends before the optimizer's
/// starts (one writer per branch), the optimizer commits on the same branch and its
/// sandbox opens the run's one pull request.
async fn an_optimizer_step_ends_the_run_with_the_pull_request(backend: Backend) {
    let Some(world) = World::new("an_optimizer_step", backend).await else {
        return;
    };
    let (github, workflows) = github_world(&world).await;
    let run = start(
        &world,
        &workflows,
        "Add the cache. PASS_AT_COMMITS 2",
        WorkflowRequest {
            steps: steps(&[StepRole::Designer, StepRole::Checker, StepRole::Optimizer]),
            ..Default::default()
        },
    )
    .await;
    let run = finished_run(&world, run.id).await;
    assert_eq!(run.state.status, RunStatus::Succeeded, "{run:?}");
    let detail = workflows.run_detail(run.id).await.unwrap();
    let roles: Vec<_> = detail.steps.iter().map(|s| s.role).collect();
    assert_eq!(
        roles,
        [StepRole::Designer, StepRole::Checker, StepRole::Optimizer]
    );
    let sandbox = |i: usize| detail.steps[i].sandbox_id.unwrap();
    let designer = world.store.get_sandbox(sandbox(0)).await.unwrap();
    let optimizer = world.store.get_sandbox(sandbox(2)).await.unwrap();
    assert!(designer.ended_at.unwrap() <= optimizer.created_at);
    assert_eq!(designer.git.pr_status, None);
    assert_eq!(optimizer.git.pr_status, Some(PrStatus::Created));
    let branch = run.state.branch.clone().unwrap();
    let log = world.remote_log(&branch);
    assert_eq!(
        log.iter().filter(|s| s.starts_with("claude:")).count(),
        2,
        "the designer's and the optimizer's commits: {log:?}"
    );
    let pulls: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].json()["head"], branch.as_str());
}

/// One pull request per issue: each issue's branch starts from the previous issue's
/// and its pull request targets it (stacked), the first one the base branch.
async fn a_per_issue_chain_stacks_its_pull_requests(backend: Backend) {
    let Some(world) = World::new("a_per_issue_chain", backend).await else {
        return;
    };
    let (github, workflows) = github_world(&world).await;
    let chain = workflows
        .start_chain(ChainRequest {
            user_id: world.user,
            project_id: world.project,
            items: vec![
                issue("One", "Add the lexer"),
                issue("Two", "Add the parser"),
            ],
            workflow: WorkflowRequest {
                steps: steps(&[StepRole::Designer]),
                ..Default::default()
            },
            pr_mode: Some(PrMode::PerIssue),
            branch: Some("feature/compiler".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let detail = chain_end(&world, &workflows, chain.id).await;
    assert_eq!(detail.chain.status, RunStatus::Succeeded, "{detail:?}");
    let (first, second) = ("feature/compiler-1", "feature/compiler-2");
    assert_eq!(detail.runs[0].state.branch.as_deref(), Some(first));
    assert_eq!(detail.runs[1].state.branch.as_deref(), Some(second));
    // The second branch holds both issues' commits; the first only its own.
    let log = world.remote_log(second);
    assert!(log.iter().any(|s| s.contains("Add the lexer")), "{log:?}");
    assert!(log.iter().any(|s| s.contains("Add the parser")), "{log:?}");
    assert!(
        !world
            .remote_log(first)
            .iter()
            .any(|s| s.contains("Add the parser"))
    );
    let pulls: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            let body = r.json();
            (
                body["head"].as_str().unwrap().to_owned(),
                body["base"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pulls,
        [
            (first.to_owned(), "main".to_owned()),
            (second.to_owned(), first.to_owned())
        ]
    );
}

/// A run that fails stops its chain with the reason; the issues after it are cancelled
/// and no pull request is opened.
async fn a_failed_issue_stops_the_chain_with_the_reason(backend: Backend) {
    let Some(world) = World::new("a_failed_issue_stops_the_chain", backend).await else {
        return;
    };
    let (github, workflows) = github_world(&world).await;
    let chain = workflows
        .start_chain(ChainRequest {
            user_id: world.user,
            project_id: world.project,
            items: vec![
                issue("Breaks", "Migrate the database FAIL"),
                issue("Never runs", "Add the printer"),
            ],
            workflow: WorkflowRequest {
                steps: steps(&[StepRole::Designer]),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    let detail = chain_end(&world, &workflows, chain.id).await;
    assert_eq!(detail.chain.status, RunStatus::Failed);
    let error = detail.chain.error.clone().unwrap();
    assert!(
        error.contains("issue 1 (Breaks) failed") && error.contains("designer"),
        "{error}"
    );
    let statuses: Vec<_> = detail.items.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [RunStatus::Failed, RunStatus::Cancelled]);
    assert_eq!(detail.runs.len(), 1, "the second issue never started");
    assert!(github.requests().iter().all(|r| r.method != "POST"));
}

/// An issue session: its sandbox (linked by `issue_session_id`) answers with cards,
/// which are parsed and stored; a card starts a sandbox on its suggested prompt.
async fn an_issue_session_yields_parsed_cards(backend: Backend) {
    let Some((world, orchestrator, workflows)) =
        plain_world("an_issue_session_yields_cards", backend).await
    else {
        return;
    };
    let session = workflows
        .start_issue_session(
            world.user,
            world.project,
            Some("security CARDS 3".into()),
            None,
            None,
        )
        .await
        .expect("start session");
    let sandbox_id = session.sandbox_id.expect("its sandbox");
    let sandbox = world.store.get_sandbox(sandbox_id).await.unwrap();
    assert_eq!(sandbox.links.issue_session_id, Some(session.id.to_string()));
    eventually("the session to end", LONG, || async {
        world
            .store
            .get_issue_session(session.id)
            .await
            .unwrap()
            .status
            .is_final()
    })
    .await;
    let detail = workflows.issue_session_detail(session.id).await.unwrap();
    assert_eq!(detail.session.status, RunStatus::Succeeded, "{detail:?}");
    let titles: Vec<_> = detail.cards.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["Fake issue 1", "Fake issue 2", "Fake issue 3"]);
    assert_eq!(detail.cards[2].severity, courier_store::Severity::High);
    assert_eq!(
        detail.sandbox.as_ref().unwrap().status,
        SandboxStatus::Killed
    );
    let (card, started) = workflows
        .start_card(detail.cards[0].id, world.user, None, None)
        .await
        .expect("start card");
    assert_eq!(card.sandbox_id, Some(started.id));
    assert_eq!(started.prompt, "Fix fake issue 1");
    orchestrator.kill(started.id, None).await.unwrap();

    // The second card joins a new chain, which is then cancelled mid-run.
    let chain = workflows
        .start_chain(ChainRequest {
            user_id: world.user,
            project_id: world.project,
            items: vec![NewChainItem {
                title: String::new(),
                prompt: "Slow work SLEEP 30".into(),
                card_id: None,
            }],
            workflow: WorkflowRequest {
                steps: steps(&[StepRole::Designer]),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    let item = workflows
        .add_card_to_chain(detail.cards[1].id, chain.id)
        .await
        .unwrap();
    assert_eq!((item.position, item.title.as_str()), (2, "Fake issue 2"));
    assert_eq!(item.card_id, Some(detail.cards[1].id));
    let card = world
        .store
        .get_issue_card(detail.cards[1].id)
        .await
        .unwrap();
    assert_eq!(card.chain_id, Some(chain.id));
    eventually("the chain's first run to have a sandbox", LONG, || async {
        let runs = world
            .store
            .list_workflow_runs(world.project, Some(chain.id))
            .await
            .unwrap();
        runs.first()
            .is_some_and(|r| r.state.designer_sandbox_id.is_some())
    })
    .await;
    let cancelled = workflows.cancel_chain(chain.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let detail = workflows.chain_detail(chain.id).await.unwrap();
    assert!(
        detail
            .items
            .iter()
            .all(|i| i.status == RunStatus::Cancelled),
        "{:?}",
        detail.items
    );
    assert_eq!(detail.runs[0].state.status, RunStatus::Cancelled);
    let designer = world
        .store
        .get_sandbox(detail.runs[0].state.designer_sandbox_id.unwrap())
        .await
        .unwrap();
    assert_eq!(
        designer.status,
        SandboxStatus::Killed,
        "cancel ends the sandbox"
    );
    let again = workflows
        .cancel_chain(chain.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("already cancelled"), "{again}");
}

on_both_backends!(
    designer_checker_iterates_twice,
    a_run_that_never_passes_fails_with_the_reason,
    a_restart_mid_workflow_resumes_it,
    a_restart_resumes_chains_and_issue_sessions,
    a_designer_sandbox_lost_between_iterations_is_replaced,
    a_two_issue_chain_ends_in_one_pull_request,
    a_per_issue_chain_stacks_its_pull_requests,
    an_optimizer_step_ends_the_run_with_the_pull_request,
    a_failed_issue_stops_the_chain_with_the_reason,
    an_issue_session_yields_parsed_cards,
);
