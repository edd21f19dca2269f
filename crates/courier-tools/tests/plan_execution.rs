//! Executes real setup plans on the local machine, with `/home/user` mapped to a temporary
//! directory and a bare repository on disk as the remote, then runs the fake agent with
//! the plan's environment. Proves the plans are runnable, not just well-formed.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use courier_tools::{
    AgentEvent, HOME_DIR, ProviderKeys, RunRequest, Secret, SetupContext, SetupPlan, SetupStep,
    Skill, StreamParser, ToolId, build_setup_plan, first_run_command,
};

struct World {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    remote: PathBuf,
    path: String,
}

fn sh(cmd: &str, cwd: &Path, env: &BTreeMap<String, String>) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("sh runs")
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let remote = tmp.path().join("remote.git");
    let seed = tmp.path().join("seed");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&seed).unwrap();
    let env = BTreeMap::from([("HOME".to_owned(), home.to_str().unwrap().to_owned())]);
    let script = format!(
        "git init -q -b main && echo hello > README.md && git add README.md && \
         git -c user.name=Seed -c user.email=seed@example.invalid commit -q -m seed && \
         git clone -q --bare . {remote}",
        remote = remote.display()
    );
    let out = sh(&script, &seed, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fake_clis = Path::new(env!("CARGO_MANIFEST_DIR")).join("fake-clis");
    let path = format!(
        "{}:{}",
        fake_clis.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    World {
        _tmp: tmp,
        home,
        remote,
        path,
    }
}

/// Runs the plan as the orchestrator would, with `/home/user` → the temp home. Returns the
/// environment the agent gets.
fn execute(world: &World, plan: &SetupPlan) -> BTreeMap<String, String> {
    let home = world.home.to_str().unwrap();
    let map = |s: &str| s.replace(HOME_DIR, home);
    let mut env = BTreeMap::from([
        ("HOME".to_owned(), home.to_owned()),
        ("PATH".to_owned(), world.path.clone()),
        ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".to_owned()),
    ]);
    for step in &plan.steps {
        match step {
            SetupStep::WriteFile {
                path,
                contents,
                mode,
            } => {
                let path = PathBuf::from(map(path));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, map(contents.expose())).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            SetupStep::Run {
                command,
                cwd,
                env: extra,
            } => {
                let cwd = cwd
                    .as_deref()
                    .map(map)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| world.home.clone());
                let mut all = env.clone();
                all.extend(
                    extra
                        .iter()
                        .map(|(k, v)| (k.clone(), v.expose().to_owned())),
                );
                let out = sh(&map(command), &cwd, &all);
                assert!(
                    out.status.success(),
                    "{command}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            SetupStep::SetEnv { name, value } => {
                env.insert(name.clone(), value.expose().to_owned());
            }
        }
    }
    env
}

fn context(world: &World, tool: ToolId) -> SetupContext {
    SetupContext {
        tool,
        repo_url: Some(world.remote.to_str().unwrap().to_owned()),
        base_branch: Some("main".into()),
        branch_name: "courier/sbx-1".into(),
        github_token: Some(Secret::new("ghp_localtesttoken0000wxyz")),
        env_vars: BTreeMap::from([("APP_MODE".into(), Secret::new("test-mode"))]),
        claude_md: Some("# Project rules\n".into()),
        skills: vec![Skill {
            name: "deploy".into(),
            content: "---\nname: deploy\ndescription: d\n---\n".into(),
        }],
        learnings: Some("- be brief".into()),
        keys: ProviderKeys {
            anthropic_api_key: Some(Secret::new("sk-ant-local-0000")),
            openrouter_api_key: Some(Secret::new("sk-or-local-0000")),
            openai_api_key: Some(Secret::new("sk-openai-local-0000")),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn git(project: &Path, env: &BTreeMap<String, String>, args: &str) -> String {
    let out = sh(&format!("git {args}"), project, env);
    assert!(
        out.status.success(),
        "git {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn every_tools_plan_runs_and_the_agent_commits_on_the_feature_branch() {
    for tool in [ToolId::Claude, ToolId::Codex, ToolId::Opencode, ToolId::Pi] {
        let world = world();
        let plan = build_setup_plan(&context(&world, tool)).unwrap();
        let env = execute(&world, &plan);
        let project = world.home.join("project");
        assert_eq!(
            git(&project, &env, "rev-parse --abbrev-ref HEAD"),
            "courier/sbx-1",
            "{tool}"
        );
        assert_eq!(env["APP_MODE"], "test-mode");
        // Injected files stay out of the agent's commits.
        assert_eq!(git(&project, &env, "status --porcelain"), "", "{tool}");

        let cmd = first_run_command(
            tool,
            &RunRequest {
                prompt: "add a line".into(),
                ..Default::default()
            },
        );
        let project_str = project.to_str().unwrap();
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.replace(courier_tools::PROJECT_DIR, project_str))
            .collect();
        let mut child = Command::new(&cmd.program);
        child
            .args(&args)
            .current_dir(&project)
            .env_clear()
            .envs(&env)
            .envs(&cmd.env)
            .stdin(Stdio::null());
        child.env("FAKE_CLI_REQUIRE_KEYS", "1");
        let out = child.output().expect("fake agent runs");
        let events = StreamParser::parse_all(tool, &out.stdout, out.status.code());
        let ok = events
            .iter()
            .any(|e| matches!(e, AgentEvent::Result(r) if r.success));
        assert!(
            ok,
            "{tool}: {events:#?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(git(&project, &env, "rev-list --count HEAD"), "2", "{tool}");
        assert_eq!(git(&project, &env, "status --porcelain"), "", "{tool}");
    }
}

#[test]
fn token_file_is_private_and_the_helper_answers_only_for_github() {
    let world = world();
    let plan = build_setup_plan(&context(&world, ToolId::Shell)).unwrap();
    let env = execute(&world, &plan);
    let courier = world.home.join(".courier");
    let token = courier.join("github-token");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let helper = courier.join("git-credential-courier");
    assert_eq!(
        std::fs::metadata(&helper).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let configured = git(&world.home, &env, "config --global credential.helper");
    assert!(
        configured.ends_with("git-credential-courier"),
        "{configured}"
    );
    // The helper reads the token from the fixed sandbox path; point it at the temp one.
    let script = std::fs::read_to_string(&helper).unwrap();
    assert!(script.contains(token.to_str().unwrap()));
    let ask = |host: &str| {
        let out = sh(
            &format!(
                "printf 'protocol=https\\nhost={host}\\n\\n' | {} get",
                helper.display()
            ),
            &world.home,
            &env,
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        ask("github.com"),
        "username=x-access-token\npassword=ghp_localtesttoken0000wxyz\n"
    );
    assert_eq!(ask("gitlab.com"), "");
}
