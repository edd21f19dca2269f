use super::*;

fn ctx(tool: ToolId) -> SetupContext {
    SetupContext {
        tool,
        repo_url: Some("https://github.com/acme/app.git".into()),
        branch_name: "courier/fix-login".into(),
        github_token: Some(Secret::new("ghp_supersecrettoken9876")),
        keys: ProviderKeys {
            anthropic_api_key: Some(Secret::new("sk-ant-api03-xxxxxxxx1111")),
            openrouter_api_key: Some(Secret::new("sk-or-v1-yyyyyyyy2222")),
            openai_api_key: Some(Secret::new("sk-proj-zzzzzzzz3333")),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn github_token_never_appears_in_a_command_or_debug_output() {
    for tool in ToolId::ALL {
        let plan = build_setup_plan(&ctx(tool)).unwrap();
        let debug = format!("{plan:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        for step in &plan.steps {
            if let SetupStep::Run { command, .. } = step {
                assert!(
                    !command.contains("ghp_") && !command.contains("sk-"),
                    "{command}"
                );
            }
        }
        let token_file = plan.steps.iter().find_map(|s| match s {
            SetupStep::WriteFile {
                path,
                mode,
                contents,
            } if path == GITHUB_TOKEN_PATH => Some((*mode, contents)),
            _ => None,
        });
        let (mode, contents) = token_file.unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(contents.expose(), "ghp_supersecrettoken9876");
    }
}

#[test]
fn no_credential_helper_without_a_token() {
    let mut c = ctx(ToolId::Claude);
    c.github_token = None;
    let plan = build_setup_plan(&c).unwrap();
    assert!(!format!("{plan:?}").contains("credential"));
}

#[test]
fn credential_helper_comes_before_clone_and_branch_after() {
    let plan = build_setup_plan(&ctx(ToolId::Claude)).unwrap();
    let pos = |needle: &str| {
        plan.steps
            .iter()
            .position(|s| matches!(s, SetupStep::Run { command, .. } if command.contains(needle)))
            .unwrap()
    };
    assert!(pos("credential.helper") < pos("git clone"));
    assert!(pos("git clone") < pos("checkout"));
}

#[test]
fn missing_keys_are_reported_with_what_would_do() {
    let mut c = ctx(ToolId::Claude);
    c.keys = ProviderKeys::default();
    let err = build_setup_plan(&c).unwrap_err().to_string();
    assert_eq!(
        err,
        "tool claude needs an Anthropic API key or an Anthropic OAuth token, but none was provided"
    );
    c.keys.anthropic_oauth_token = Some(Secret::new("sk-ant-oat01-abcdefgh"));
    let plan = build_setup_plan(&c).unwrap();
    assert!(plan.env().contains_key("CLAUDE_CODE_OAUTH_TOKEN"));
    c.tool = ToolId::Shell;
    c.keys = ProviderKeys::default();
    assert!(build_setup_plan(&c).is_ok());
}

#[test]
fn bad_names_are_rejected_with_the_field() {
    let mut c = ctx(ToolId::Claude);
    c.branch_name = "-x; rm -rf /".into();
    assert!(matches!(
        build_setup_plan(&c),
        Err(ToolsError::InvalidName {
            field: "branch_name",
            ..
        })
    ));
    let mut c = ctx(ToolId::Claude);
    c.skills.push(Skill {
        name: "../etc".into(),
        content: String::new(),
    });
    assert!(matches!(
        build_setup_plan(&c),
        Err(ToolsError::InvalidName {
            field: "skills.name",
            ..
        })
    ));
    let mut c = ctx(ToolId::Claude);
    c.env_vars.insert("1BAD".into(), Secret::new("v"));
    assert!(matches!(
        build_setup_plan(&c),
        Err(ToolsError::InvalidName {
            field: "env_vars",
            ..
        })
    ));
}

#[test]
fn endpoints_reach_each_clis_own_setting() {
    let mut c = ctx(ToolId::Claude);
    c.endpoints = ProviderEndpoints {
        anthropic: Some("http://127.0.0.1:8787".into()),
        openai: Some("http://127.0.0.1:8787/v1".into()),
        openrouter: Some("http://127.0.0.1:8787/api/v1".into()),
    };
    let plan = build_setup_plan(&c).unwrap();
    assert_eq!(
        plan.env()["ANTHROPIC_BASE_URL"].expose(),
        "http://127.0.0.1:8787"
    );
    let file = |tool, suffix: &str| {
        let mut c = c.clone();
        c.tool = tool;
        build_setup_plan(&c)
            .unwrap()
            .steps
            .into_iter()
            .find_map(|s| match s {
                SetupStep::WriteFile { path, contents, .. } if path.ends_with(suffix) => {
                    Some(contents.expose().to_owned())
                }
                _ => None,
            })
            .unwrap()
    };
    assert!(
        file(ToolId::Codex, "config.toml")
            .contains("openai_base_url = \"http://127.0.0.1:8787/v1\"\n")
    );
    assert!(
        file(ToolId::Opencode, "opencode.json")
            .contains("\"baseURL\": \"http://127.0.0.1:8787/api/v1\"")
    );
    assert!(
        file(ToolId::Pi, "models.json").contains("\"baseUrl\": \"http://127.0.0.1:8787/api/v1\"")
    );
}

#[test]
fn an_endpoint_that_could_break_out_of_a_config_file_is_refused() {
    // An operator typo or a hostile value must not inject TOML keys into Codex's
    // config (e.g. a second line turning the sandbox policy off).
    for url in [
        "http://x\"\nsandbox_mode = \"read-only",
        "ftp://x",
        "http://",
        "http://a b",
        "http://a\\b",
    ] {
        let mut c = ctx(ToolId::Codex);
        c.endpoints.openai = Some(url.into());
        assert!(
            matches!(
                build_setup_plan(&c),
                Err(ToolsError::InvalidName {
                    field: "endpoints.openai",
                    ..
                })
            ),
            "{url}"
        );
    }
}

#[test]
fn without_a_repo_an_empty_one_is_created() {
    let mut c = ctx(ToolId::Shell);
    c.repo_url = None;
    let plan = build_setup_plan(&c).unwrap();
    assert!(format!("{plan:?}").contains("git init -q /home/user/project"));
}

#[test]
fn skill_files_need_closed_front_matter_naming_the_skill_with_a_description() {
    use crate::{validate_command_content, validate_skill_content};
    let ok = "---\r\nname: review\r\ndescription: \"Reviews diffs\"\r\nallowed-tools:\r\n  - Read\r\n---\r\nRead it.\r\n";
    assert!(validate_skill_content("review", ok).is_ok());
    for (content, expected) in [
        ("---\nname: review\ndescription: x\n", "never closed"),
        (
            "---\nname: other\ndescription: x\n---\nRead it.",
            "must be \"review\"",
        ),
        ("---\ndescription: x\n---\nRead it.", "no `name`"),
        ("---\nname: review\n---\nRead it.", "description"),
        (
            "---\nname: review\ndescription: x\n---\n  \n",
            "no instructions",
        ),
        ("---\nname review\n---\nx", "not `key: value`"),
    ] {
        let err = validate_skill_content("review", content)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid skills.content \"review\""),
            "{err}"
        );
        assert!(err.contains(expected), "{content:?}: {err}");
    }
    let long = format!(
        "---\nname: review\ndescription: {}\n---\nx",
        "d".repeat(1025)
    );
    assert!(validate_skill_content("review", &long).is_err());
    let huge = "x".repeat(crate::plan::MAX_FILE_BYTES + 1);
    assert!(validate_command_content("ship", &huge).is_err());
    assert!(
        validate_command_content(
            "ship",
            "---\ndescription: Ship\nmodel: claude-haiku-4-5\n---\nShip $1"
        )
        .is_ok()
    );
    assert!(validate_command_content("ship", "---\ndescription: Ship\n---\n").is_err());
}

/// Where each tool's plan writes the project's `CLAUDE.md`, skills and system prompt:
/// where the pinned real CLI reads them (measured by courier-orchestrator's real-CLI
/// suite). OpenCode and Codex read `CLAUDE.md` (when the repository has no `AGENTS.md`),
/// OpenCode lists `.claude/skills/`, Codex `~/.codex/skills/` and Pi
/// `~/.pi/agent/skills/`, so their plans write them there.
#[test]
fn project_files_go_where_each_cli_reads_them() {
    let with_files = |tool: ToolId| {
        let mut c = ctx(tool);
        c.claude_md = Some("# Notes\n".into());
        c.skills = vec![Skill {
            name: "review".into(),
            content: "---\nname: review\ndescription: Reviews\n---\nReview.\n".into(),
        }];
        build_setup_plan(&c).unwrap()
    };
    let written = |tool: ToolId| -> Vec<String> {
        with_files(tool)
            .steps
            .into_iter()
            .filter_map(|s| match s {
                SetupStep::WriteFile { path, .. } => Some(path),
                _ => None,
            })
            .filter(|p| !p.starts_with("/home/user/.courier/"))
            .collect()
    };
    let md = "/home/user/project/CLAUDE.md";
    let skill = "/home/user/project/.claude/skills/review/SKILL.md";
    for (tool, expected) in [
        (
            ToolId::Claude,
            vec![md, skill, "/home/user/.claude/CLAUDE.md"],
        ),
        (
            ToolId::Opencode,
            vec![md, skill, "/home/user/.config/opencode/opencode.json"],
        ),
        (
            ToolId::Codex,
            vec![
                md,
                "/home/user/.codex/skills/review/SKILL.md",
                "/home/user/.codex/config.toml",
                "/home/user/.codex/AGENTS.md",
            ],
        ),
        (
            ToolId::Pi,
            vec![
                md,
                "/home/user/.pi/agent/skills/review/SKILL.md",
                "/home/user/.pi/agent/APPEND_SYSTEM.md",
            ],
        ),
        (ToolId::Shell, vec![]),
    ] {
        assert_eq!(written(tool), expected, "{tool}");
    }
    // Injected files stay out of the agent's commits.
    for (tool, excluded) in [
        (
            ToolId::Opencode,
            vec!["/CLAUDE.md", "/.claude/skills/review/"],
        ),
        (ToolId::Codex, vec!["/CLAUDE.md"]),
    ] {
        let exclude = with_files(tool)
            .steps
            .into_iter()
            .find_map(|s| match s {
                SetupStep::Run { command, .. } if command.contains(".git/info/exclude") => {
                    Some(command)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{tool}: no exclude step"));
        for path in excluded {
            assert!(exclude.contains(path), "{tool}: {path} in {exclude}");
        }
    }
}

#[test]
fn a_git_gateway_replaces_the_token_and_routes_github_through_it() {
    let mut c = ctx(ToolId::Claude);
    c.git_gateway = Some(GitGateway {
        url: "http://10.0.0.5:8090/".into(),
        token: Secret::new("crt_run.tag"),
    });
    let plan = build_setup_plan(&c).unwrap();
    let debug = format!("{plan:?}");
    // The real token goes nowhere, not even into a file: the gateway holds it.
    assert!(
        !debug.contains("credential") && !debug.contains(GITHUB_TOKEN_PATH),
        "{debug}"
    );
    let (mode, config) = plan
        .steps
        .iter()
        .find_map(|s| match s {
            SetupStep::WriteFile {
                path,
                mode,
                contents,
            } if path == GATEWAY_GITCONFIG_PATH => Some((*mode, contents.expose().to_owned())),
            _ => None,
        })
        .unwrap();
    assert_eq!(mode, 0o600);
    assert_eq!(
        config,
        "[url \"http://10.0.0.5:8090/git/\"]\n\tinsteadOf = https://github.com/\n\
         [http \"http://10.0.0.5:8090/\"]\n\textraHeader = x-courier-run-token: crt_run.tag\n"
    );
    let pos = |needle: &str| {
        plan.steps
            .iter()
            .position(|s| matches!(s, SetupStep::Run { command, .. } if command.contains(needle)))
            .unwrap()
    };
    assert!(pos("include.path") < pos("git clone"));
    // A URL that could end the config value is refused by name.
    c.git_gateway = Some(GitGateway {
        url: "http://x\"]\n[core]".into(),
        token: Secret::new("t"),
    });
    assert!(
        build_setup_plan(&c)
            .unwrap_err()
            .to_string()
            .contains("git_gateway.url")
    );
}
