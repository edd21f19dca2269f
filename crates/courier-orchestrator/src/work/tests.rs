use chrono::Utc;
use courier_store::{
    ProjectId, RunState, RunStatus, SandboxConfig, Severity, StepRole, StepSpec, UserId, Verdict,
    WorkflowRun, WorkflowRunId, WorkflowSpec, WorkflowStep, WorkflowStepId,
};

use super::*;

fn spec(roles: &[StepRole], max: u32) -> WorkflowSpec {
    WorkflowSpec {
        tool: None,
        model: None,
        steps: roles
            .iter()
            .map(|r| StepSpec {
                role: *r,
                ..Default::default()
            })
            .collect(),
        max_iterations: max,
        config: SandboxConfig::default(),
    }
}

fn run(spec: WorkflowSpec) -> WorkflowRun {
    WorkflowRun {
        id: WorkflowRunId::new(),
        user_id: UserId::new(),
        project_id: ProjectId::new(),
        chain_id: None,
        title: "t".into(),
        prompt: "Add a login page".into(),
        spec,
        repo_url: None,
        base_branch: None,
        state: RunState {
            status: RunStatus::Running,
            iteration: 0,
            designer_sandbox_id: None,
            verdict: None,
            branch: Some("courier/run-x".into()),
            error: None,
        },
        created_at: Utc::now(),
        updated_at: Utc::now(),
        finished_at: None,
    }
}

fn step(
    role: StepRole,
    iteration: i64,
    status: RunStatus,
    verdict: Option<Verdict>,
) -> WorkflowStep {
    WorkflowStep {
        id: WorkflowStepId::new(),
        run_id: WorkflowRunId::new(),
        seq: 0,
        role,
        iteration,
        sandbox_id: None,
        status,
        verdict,
        feedback: Some("add tests".into()),
        output: None,
        error: Some("boom".into()),
        started_at: Utc::now(),
        finished_at: None,
    }
}

use RunStatus::{Failed, Running, Succeeded};
use StepRole::{Checker, Designer, Optimizer};

#[test]
fn a_run_goes_designer_checker_designer_checker_then_optimizer() {
    let r = run(spec(&[Designer, Checker, Optimizer], 3));
    let mut steps = vec![];
    assert_eq!(next_action(&r, &steps), NextAction::Start(Designer, 1));
    steps.push(step(Designer, 1, Running, None));
    assert_eq!(next_action(&r, &steps), NextAction::Continue(steps[0].id));
    steps[0].status = Succeeded;
    assert_eq!(next_action(&r, &steps), NextAction::Start(Checker, 1));
    steps.push(step(Checker, 1, Succeeded, Some(Verdict::NeedsChanges)));
    assert_eq!(next_action(&r, &steps), NextAction::Start(Designer, 2));
    steps.push(step(Designer, 2, Succeeded, None));
    assert_eq!(next_action(&r, &steps), NextAction::Start(Checker, 2));
    steps.push(step(Checker, 2, Succeeded, Some(Verdict::Pass)));
    assert_eq!(next_action(&r, &steps), NextAction::Start(Optimizer, 2));
    steps.push(step(Optimizer, 2, Succeeded, None));
    assert_eq!(next_action(&r, &steps), NextAction::End(Succeeded, None));
}

#[test]
fn the_last_iteration_needing_changes_fails_the_run_and_a_failed_step_ends_it() {
    let r = run(spec(&[Designer, Checker], 2));
    let steps = vec![
        step(Designer, 1, Succeeded, None),
        step(Checker, 1, Succeeded, Some(Verdict::NeedsChanges)),
        step(Designer, 2, Succeeded, None),
        step(Checker, 2, Succeeded, Some(Verdict::NeedsChanges)),
    ];
    let NextAction::End(Failed, Some(why)) = next_action(&r, &steps) else {
        panic!("expected the run to fail");
    };
    assert!(
        why.contains("after 2 iterations") && why.contains("add tests"),
        "{why}"
    );
    let steps = vec![step(Designer, 1, Failed, None)];
    let NextAction::End(Failed, Some(why)) = next_action(&r, &steps) else {
        panic!("expected the run to fail");
    };
    assert!(why.contains("designer step failed: boom"), "{why}");
    // A designer alone ends the run when it succeeds.
    let alone = run(spec(&[Designer], 1));
    assert_eq!(
        next_action(&alone, &[step(Designer, 1, Succeeded, None)]),
        NextAction::End(Succeeded, None)
    );
}

#[test]
fn steps_must_start_with_a_designer_and_keep_the_role_order() {
    let specs = |roles: &[StepRole]| {
        roles
            .iter()
            .map(|r| StepSpec {
                role: *r,
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    assert!(validate_steps(&specs(&[Designer, Checker, Optimizer])).is_ok());
    assert!(validate_steps(&specs(&[Designer, Optimizer])).is_ok());
    for bad in [
        &[][..],
        &[Checker][..],
        &[Designer, Designer][..],
        &[Designer, Optimizer, Checker][..],
    ] {
        let err = validate_steps(&specs(bad)).unwrap_err().to_string();
        assert!(err.contains("steps"), "{err}");
    }
}

#[test]
fn requests_default_to_designer_and_checker_and_refuse_out_of_range_iterations() {
    let settings = courier_store::ProjectSettings::default();
    let spec = WorkflowRequest::default().to_spec(&settings).unwrap();
    let roles: Vec<_> = spec.steps.iter().map(|s| s.role).collect();
    assert_eq!(roles, [Designer, Checker]);
    assert_eq!(spec.max_iterations, DEFAULT_MAX_ITERATIONS);
    assert_eq!((spec.config.memory_mb, spec.config.cpu_count), (1024, 2));
    let err = WorkflowRequest {
        max_iterations: Some(0),
        ..Default::default()
    }
    .to_spec(&settings)
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "invalid max_iterations: 0 is out of range: allowed 1–10"
    );
}

#[test]
fn a_step_takes_its_override_then_its_persona_then_the_workflow() {
    let mut spec = spec(&[Designer, Checker], 3);
    spec.tool = Some("claude".into());
    spec.model = Some("claude-sonnet-4-6".into());
    spec.config.cli_overrides.checker = Some("codex".into());
    spec.config.checker_template_id = Some("checker-tpl".into());
    spec.config.template_id = Some("main-tpl".into());
    spec.config
        .thinking_effort
        .insert("claude-opus-4-6".into(), "high".into());
    let r = run(spec.clone());
    let target = StepTarget {
        user_id: r.user_id,
        project_id: r.project_id,
        spec: &spec,
        run: Some(&r),
    };
    let designer = step_request(&target, Designer, None, "p".into());
    assert_eq!(designer.tool.as_deref(), Some("claude"));
    assert_eq!(designer.model.as_deref(), Some("claude-sonnet-4-6"));
    assert_eq!(designer.template_id.as_deref(), Some("main-tpl"));
    assert_eq!(designer.links.run_id, Some(r.id.to_string()));
    assert_eq!(designer.branch.as_deref(), Some("courier/run-x"));
    let checker = step_request(&target, Checker, None, "p".into());
    assert_eq!(checker.tool.as_deref(), Some("codex"));
    assert_eq!(
        checker.model, None,
        "the workflow's Claude model is not Codex's"
    );
    assert_eq!(checker.template_id.as_deref(), Some("checker-tpl"));
    let persona = courier_store::Persona {
        id: courier_store::PersonaId::new(),
        project_id: r.project_id,
        name: "architect".into(),
        tool: Some("claude".into()),
        model: Some("claude-opus-4-6".into()),
        thinking_effort: None,
        system_prompt: Some("Think in modules.".into()),
        skills: vec![],
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    let designer = step_request(&target, Designer, Some(&persona), "p".into());
    assert_eq!(designer.model.as_deref(), Some("claude-opus-4-6"));
    assert_eq!(designer.thinking_effort.as_deref(), Some("high"));
    assert_eq!(
        designer.profile.system_prompt.as_deref(),
        Some("Think in modules.")
    );
}

#[test]
fn verdicts_are_read_from_the_last_json_line_and_prose_is_no_verdict() {
    let text = "I ran the tests.\n{\"verdict\": \"pass\", \"feedback\": \"\"}\n";
    assert_eq!(parse_verdict(text), Some((Verdict::Pass, String::new())));
    let text = "Earlier: {\"verdict\": \"pass\"} but then\n```json\n{\n \"verdict\": \"needs_changes\",\n \"feedback\": \"Handle {braces} \\\"quoted\\\"\"\n}\n```";
    assert_eq!(
        parse_verdict(text),
        Some((Verdict::NeedsChanges, "Handle {braces} \"quoted\"".into()))
    );
    assert_eq!(parse_verdict("{\"verdict\": \"maybe\"}"), None);
    assert_eq!(parse_verdict("Looks fine to me."), None);
}

#[test]
fn cards_are_read_leniently_but_need_a_list_of_titled_objects() {
    let text = "Scan done.\n```json\n[{\"title\": \"  XSS in comments \", \"description\": \"unescaped\", \"severity\": \"HIGH\", \"suggested_prompt\": \"Escape comments\"},\n {\"title\": \"No tests\", \"severity\": \"whatever\"},\n {\"title\": \"\"}]\n```";
    let cards = parse_cards(text).unwrap();
    assert_eq!(cards.len(), 2);
    assert_eq!(cards[0].title, "XSS in comments");
    assert_eq!(cards[0].severity, Severity::High);
    assert_eq!(cards[1].severity, Severity::Medium);
    assert_eq!(cards[1].suggested_prompt, "No tests");
    assert_eq!(parse_cards("Nothing found: []").unwrap(), vec![]);
    assert!(parse_cards("numbers [1, 2, 3]").is_err());
    let many: Vec<_> = (0..80)
        .map(|i| serde_json::json!({"title": format!("t{i}")}))
        .collect();
    assert_eq!(
        parse_cards(&serde_json::to_string(&many).unwrap())
            .unwrap()
            .len(),
        MAX_CARDS
    );
}

#[test]
fn every_prompt_names_its_iteration_so_a_restart_can_tell_it_was_sent() {
    let r = run(spec(&[Designer, Checker], 3));
    assert_ne!(
        prompts::designer_again(&r, 2, "x"),
        prompts::designer_again(&r, 3, "x")
    );
    let checker = prompts::checker(&r, 1, "summary", None);
    assert!(checker.contains(VERDICT_FORMAT) && checker.contains("Add a login page"));
}
