//! End to end: each fake CLI, started with the command line this crate builds, in a
//! temporary git repository; its stream goes through the matching parser.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use courier_tools::{
    AgentEvent, CommandLine, PROJECT_DIR, RunRequest, RunResult, StreamParser, ThinkingEffort,
    ToolId, first_run_command, follow_up_command,
};

const AGENTS: [ToolId; 4] = [ToolId::Claude, ToolId::Codex, ToolId::Opencode, ToolId::Pi];

fn fake_cli(tool: ToolId) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fake-clis")
        .join(tool.as_str())
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Sandbox {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    home: PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("project");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    git(&repo, &["init", "-q", "-b", "courier/task"]);
    git(
        &repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
    );
    Sandbox {
        _tmp: tmp,
        repo,
        home,
    }
}

/// Runs `cmd` as the sandbox would, with the project directory mapped to the temp repo and
/// the program resolved to the fake CLI (through python3, so no PATH changes are needed).
fn run(sbx: &Sandbox, tool: ToolId, cmd: &CommandLine) -> (Vec<AgentEvent>, i32, String) {
    let repo = sbx.repo.to_str().unwrap();
    let args: Vec<String> = cmd
        .args
        .iter()
        .map(|a| {
            if a == PROJECT_DIR {
                repo.to_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut child = Command::new("python3");
    child
        .arg(fake_cli(tool))
        .args(&args)
        .current_dir(&sbx.repo)
        .env("HOME", &sbx.home)
        .env("FAKE_CLI_STATE_DIR", sbx.home.join("state"))
        .env("FAKE_CLI_REQUIRE_KEYS", "1")
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("CODEX_API_KEY", "sk-test")
        .env("OPENROUTER_API_KEY", "sk-or-test")
        .env("CLAUDECODE", "1")
        .env("GIT_AUTHOR_NAME", "Fake")
        .env("GIT_AUTHOR_EMAIL", "fake@example.invalid")
        .env("GIT_COMMITTER_NAME", "Fake")
        .env("GIT_COMMITTER_EMAIL", "fake@example.invalid");
    for name in &cmd.env_remove {
        child.env_remove(name);
    }
    child.envs(&cmd.env);
    if cmd.stdin_null {
        child.stdin(Stdio::null());
    }
    let out = child.output().expect("python3 runs");
    let code = out.status.code().unwrap_or(-1);
    let mut parser = StreamParser::new(tool);
    let mut events = parser.feed(&out.stdout);
    events.extend(parser.finish(Some(code)));
    (
        events,
        code,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn result(events: &[AgentEvent]) -> &RunResult {
    events
        .iter()
        .find_map(|e| match e {
            AgentEvent::Result(r) => Some(r),
            _ => None,
        })
        .expect("a result event")
}

fn request(prompt: &str) -> RunRequest {
    RunRequest {
        prompt: prompt.into(),
        model: None,
        thinking_effort: Some(ThinkingEffort::High),
    }
}

fn commits(repo: &Path) -> usize {
    git(repo, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn each_fake_cli_succeeds_edits_and_commits() {
    for tool in AGENTS {
        let sbx = sandbox();
        let (events, code, stderr) = run(
            &sbx,
            tool,
            &first_run_command(tool, &request("Trim the email in login")),
        );
        let r = result(&events);
        assert!(
            r.success,
            "{tool}: {r:?}\nexit {code}\n{stderr}\n{events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, AgentEvent::SessionStarted { .. })),
            "{tool}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, AgentEvent::ToolUse { .. })),
            "{tool}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, AgentEvent::Raw { .. })),
            "{tool}: {events:#?}"
        );
        assert_eq!(commits(&sbx.repo), 2, "{tool}");
        let log = git(&sbx.repo, &["log", "-1", "--format=%s"]);
        assert!(log.starts_with(tool.as_str()), "{tool}: {log}");
    }
}

#[test]
fn each_fake_cli_continues_its_session_on_follow_up() {
    for tool in AGENTS {
        let sbx = sandbox();
        let (events, ..) = run(&sbx, tool, &first_run_command(tool, &request("first task")));
        let session = events
            .iter()
            .find_map(|e| match e {
                AgentEvent::SessionStarted { session_id, .. } => Some(session_id.clone()),
                _ => None,
            })
            .unwrap();
        let (events, code, stderr) = run(
            &sbx,
            tool,
            &follow_up_command(tool, &request("second task")),
        );
        let r = result(&events);
        assert!(r.success, "{tool}: {r:?} exit {code} {stderr}");
        let text = r.text.clone().unwrap_or_default();
        assert!(
            text.contains(&format!("Continuing session {session} (turn 2)")),
            "{tool}: {text}"
        );
        assert_eq!(commits(&sbx.repo), 3, "{tool}");
    }
}

#[test]
fn a_failing_prompt_gives_a_failure_verdict_whatever_the_exit_code() {
    for tool in AGENTS {
        let sbx = sandbox();
        let (events, code, _) = run(
            &sbx,
            tool,
            &first_run_command(tool, &request("please FAIL")),
        );
        let r = result(&events);
        assert!(!r.success, "{tool}: {r:?} (exit {code})");
        assert_eq!(commits(&sbx.repo), 1, "{tool}: no commit on failure");
    }
}

#[test]
fn a_crash_without_a_terminal_event_is_a_failure() {
    for tool in AGENTS {
        let sbx = sandbox();
        let (events, code, _) = run(&sbx, tool, &first_run_command(tool, &request("CRASH now")));
        assert_eq!(code, 137, "{tool}");
        assert!(!result(&events).success, "{tool}");
    }
}

/// The fake CLIs regenerated from the real ones: in replay mode each prints its pinned
/// version's recording verbatim, so the stream parses exactly like the recording, and it
/// writes the file the real CLI's tool call wrote.
#[test]
fn each_fake_cli_replays_the_real_clis_recordings_of_its_pinned_version() {
    let recordings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real");
    for tool in AGENTS {
        let version = courier_tools::registry::spec(tool).package.unwrap().version;
        for (request, scenario, exit) in [
            (
                first_run_command(tool, &request("Create the file")),
                "first",
                0,
            ),
            (
                follow_up_command(tool, &request("Now another")),
                "follow_up",
                0,
            ),
            (
                first_run_command(tool, &request("please FAIL")),
                "unauthorized",
                1,
            ),
        ] {
            let sbx = sandbox();
            let mut cmd = Command::new("python3");
            cmd.arg(fake_cli(tool))
                .args(&request.args)
                .current_dir(&sbx.repo)
                .env("HOME", &sbx.home)
                .env("FAKE_CLI_RECORDINGS", &recordings)
                .env("FAKE_CLI_VERSION", version)
                .stdin(Stdio::null());
            let out = cmd.output().expect("python3 runs");
            assert_eq!(out.status.code(), Some(exit), "{tool} {scenario}");
            let recorded =
                std::fs::read(recordings.join(format!("{tool}-{version}-{scenario}.jsonl")))
                    .unwrap();
            assert_eq!(out.stdout, recorded, "{tool} {scenario}: replayed verbatim");
            assert_eq!(
                StreamParser::parse_all(tool, &out.stdout, Some(exit)),
                StreamParser::parse_all(tool, &recorded, Some(exit)),
            );
            if scenario != "unauthorized" {
                let n = if scenario == "first" { 1 } else { 2 };
                let written = std::fs::read_to_string(sbx.repo.join(format!("standin-{n}.txt")))
                    .unwrap_or_else(|e| panic!("{tool} {scenario}: {e}"));
                assert!(written.starts_with("standin wrote "), "{written}");
            }
        }
        let version_out = Command::new("python3")
            .arg(fake_cli(tool))
            .arg("--version")
            .env("FAKE_CLI_RECORDINGS", &recordings)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&version_out.stdout).contains(version),
            "{tool}: the fake reports the recorded version"
        );
    }
}

#[test]
fn the_fake_claude_streams_numbered_lines_before_its_answer_when_told_to() {
    let sbx = sandbox();
    let (events, code, stderr) = run(
        &sbx,
        ToolId::Claude,
        &first_run_command(ToolId::Claude, &request("Count STREAM 3 0 please")),
    );
    assert!(
        result(&events).success,
        "exit {code}\n{stderr}\n{events:#?}"
    );
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts[..3],
        [
            "stream line 1 of 3\n",
            "stream line 2 of 3\n",
            "stream line 3 of 3\n"
        ],
        "{texts:?}"
    );
    // Then the usual work and answer.
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(commits(&sbx.repo), 2);
}
