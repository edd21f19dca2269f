//! Snapshots of every tool's setup plan and command lines.

use std::collections::BTreeMap;

use courier_tools::{
    CommandFile, ProviderKeys, RunRequest, Secret, SetupContext, SetupStep, Skill, ThinkingEffort,
    ToolId, build_setup_plan, first_run_command, follow_up_command,
};

fn full_context(tool: ToolId) -> SetupContext {
    SetupContext {
        tool,
        repo_url: Some("https://github.com/acme/webshop.git".into()),
        base_branch: Some("main".into()),
        branch_name: "courier/sbx-7f3a-trim-login-email".into(),
        github_token: Some(Secret::new("ghp_R4nd0mT0k3nV4lu3Abcd")),
        git_gateway: None,
        env_vars: BTreeMap::from([
            ("DATABASE_URL".into(), Secret::new("postgres://app:pw@db/app_9z9z")),
            ("NODE_ENV".into(), Secret::new("development")),
        ]),
        system_prompt: Some("You are a careful engineer on the webshop team.\nAlways run `npm test`.".into()),
        claude_md: Some("# Webshop\n\nRun `npm test` before committing.\n".into()),
        skills: vec![Skill {
            name: "release-notes".into(),
            content: "---\nname: release-notes\ndescription: Write release notes from git log\n---\nSummarize `git log`.\n"
                .into(),
        }],
        commands: vec![CommandFile { name: "review".into(), content: "Review the diff for $ARGUMENTS.\n".into() }],
        learnings: Some("- Tests need `TZ=UTC`.\n- Prefer `pnpm` over `npm` in this repo.".into()),
        keys: ProviderKeys {
            anthropic_api_key: Some(Secret::new("sk-ant-api03-AAAAAAAAAAAAAAAA1111")),
            anthropic_oauth_token: None,
            openrouter_api_key: Some(Secret::new("sk-or-v1-BBBBBBBBBBBBBBBB2222")),
            openai_api_key: Some(Secret::new("sk-proj-CCCCCCCCCCCCCCCC3333")),
        },
        endpoints: Default::default(),
    }
}

#[test]
fn every_tools_setup_plan() {
    for tool in ToolId::ALL {
        let plan = build_setup_plan(&full_context(tool)).unwrap();
        insta::assert_yaml_snapshot!(format!("plan_{tool}"), plan);
    }
}

#[test]
fn plans_never_show_a_secret() {
    for tool in ToolId::ALL {
        let plan = build_setup_plan(&full_context(tool)).unwrap();
        let shown = format!("{plan:?}\n{}", serde_json::to_string(&plan).unwrap());
        for secret in ["R4nd0m", "AAAAAAAA", "BBBBBBBB", "CCCCCCCC", "app:pw"] {
            assert!(!shown.contains(secret), "{tool}: {secret} shown");
        }
        for step in &plan.steps {
            if let SetupStep::Run { command, .. } = step {
                assert!(
                    !command.contains("ghp_") && !command.contains("sk-"),
                    "{tool}: {command}"
                );
            }
        }
    }
}

#[test]
fn plan_with_no_repo_no_token_and_defaults() {
    let ctx = SetupContext {
        tool: ToolId::Shell,
        branch_name: "courier/demo".into(),
        ..Default::default()
    };
    insta::assert_yaml_snapshot!("plan_shell_minimal", build_setup_plan(&ctx).unwrap());
}

#[test]
fn claude_with_oauth_token_only() {
    let mut ctx = full_context(ToolId::Claude);
    ctx.keys = ProviderKeys {
        anthropic_oauth_token: Some(Secret::new("sk-ant-oat01-DDDDDDDD4444")),
        ..Default::default()
    };
    let plan = build_setup_plan(&ctx).unwrap();
    let env = plan.env();
    assert_eq!(
        env["CLAUDE_CODE_OAUTH_TOKEN"].expose(),
        "sk-ant-oat01-DDDDDDDD4444"
    );
    assert!(!env.contains_key("ANTHROPIC_API_KEY"));
}

#[derive(serde::Serialize)]
struct Commands {
    first_run: courier_tools::CommandLine,
    first_run_shell: String,
    follow_up_shell: String,
}

#[test]
fn every_tools_command_lines() {
    let request = RunRequest {
        prompt: "Trim the email in `login()`; don't break \"$HOME\" handling.\nThen run the tests."
            .into(),
        model: None,
        thinking_effort: Some(ThinkingEffort::High),
    };
    for tool in ToolId::ALL {
        let first = first_run_command(tool, &request);
        let commands = Commands {
            first_run_shell: first.to_shell(),
            first_run: first,
            follow_up_shell: follow_up_command(
                tool,
                &RunRequest {
                    prompt: "Now add a test.".into(),
                    ..request.clone()
                },
            )
            .to_shell(),
        };
        insta::assert_yaml_snapshot!(format!("commands_{tool}"), commands);
    }
}

#[test]
fn effort_none_and_explicit_models() {
    let request = RunRequest {
        prompt: "x".into(),
        model: Some("claude-haiku-4-5".into()),
        thinking_effort: Some(ThinkingEffort::None),
    };
    let claude = first_run_command(ToolId::Claude, &request);
    assert_eq!(
        claude.env.get("MAX_THINKING_TOKENS").map(String::as_str),
        Some("0")
    );
    assert!(!claude.args.contains(&"--effort".to_string()));
    assert!(
        claude
            .args
            .windows(2)
            .any(|w| w == ["--model", "claude-haiku-4-5"])
    );
    let pi = first_run_command(
        ToolId::Pi,
        &RunRequest {
            model: None,
            ..request.clone()
        },
    );
    assert!(pi.args.windows(2).any(|w| w == ["--thinking", "off"]));
    let opencode = first_run_command(
        ToolId::Opencode,
        &RunRequest {
            model: None,
            ..request
        },
    );
    assert!(!opencode.args.contains(&"--variant".to_string()));
}
