//! `courier persona|workflow|chain|issues` against a live server whose sandboxes run on
//! the host with courier-tools' fake agent CLIs: the fake `claude` scripts a checker's
//! verdict (`PASS_AT_COMMITS n`: pass once the repository has n commits) and a scanner's
//! cards (`CARDS n`). The host sandboxes' directories sit in one git repository, so each
//! fake agent's commit counts.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod live;

use std::process::Output;
use std::time::Duration;

use live::{Live, Sandboxes, courier, stderr, stdout};
use serde_json::Value;

/// The server, its sandboxes in one repository, with a dummy Anthropic key set.
async fn live() -> Live {
    let live = live::live(Sandboxes::InRepository, Duration::from_secs(120)).await;
    // The fake `claude` never calls out; the orchestrator wants a key all the same.
    let out = courier(
        &live,
        &["keys", "set", "anthropic", "sk-ant-api03-dummy-api-0000"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    live
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_waited_for_prints_its_steps_until_the_checker_passes() {
    let live = live().await;
    let out = courier(
        &live,
        &[
            "workflow",
            "run",
            "--prompt",
            "Add a greeting module. PASS_AT_COMMITS 2",
            "--tool",
            "claude",
            "--max-iterations",
            "3",
            "--wait",
        ],
    )
    .await;
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}{}", stderr(&out));
    assert!(
        printed.contains("step 1 designer (iteration 1) started"),
        "{printed}"
    );
    assert!(
        printed.contains("checker (iteration 1) started"),
        "{printed}"
    );
    // The first check sees one commit (the designer's): needs changes, then a pass.
    assert!(printed.contains("verdict needs_changes"), "{printed}");
    assert!(printed.contains("verdict pass"), "{printed}");
    assert!(printed.contains("succeeded"), "{printed}");

    let out = courier(&live, &["workflow", "list", "--json"]).await;
    let list = json(&out);
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][0]["status"], "succeeded");
    let out = courier(&live, &["workflow", "list"]).await;
    assert!(stdout(&out).starts_with("ID"), "{}", stdout(&out));
    let out = courier(&live, &["workflow", "show", &id]).await;
    let shown = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    for expected in [
        "STEP", "ROLE", "VERDICT", "SANDBOX", "designer", "checker", "feedback", "cost",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    // A finished run cannot be cancelled: conflict, 6.
    let out = courier(&live, &["workflow", "cancel", &id]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));

    // A chain of two issues, one pull request each, followed to its end.
    let out = courier(
        &live,
        &[
            "chain",
            "start",
            "--title",
            "Two fixes",
            "--issue",
            "First=Fix the first thing. PASS_AT_COMMITS 0",
            "--issue",
            "Second=Fix the second thing. PASS_AT_COMMITS 0",
            "--pr-mode",
            "per-issue",
            "--tool",
            "claude",
            "--max-iterations",
            "1",
            "--wait",
        ],
    )
    .await;
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}{}", stderr(&out));
    assert!(printed.contains("issue 1 \"First\" started"), "{printed}");
    assert!(printed.contains("issue 2 \"Second\" started"), "{printed}");
    assert!(printed.contains("2 of 2 issue(s) succeeded"), "{printed}");
    let out = courier(&live, &["chain", "list", "--json"]).await;
    let chains = json(&out);
    assert_eq!(chains["items"][0]["pr_mode"], "per_issue");
    let chain = chains["items"][0]["id"].as_str().unwrap().to_owned();
    let out = courier(&live, &["chain", "show", &chain]).await;
    let shown = stdout(&out);
    assert!(
        shown.contains("First") && shown.contains("Second"),
        "{shown}"
    );
    let out = courier(&live, &["chain", "add", &chain, "--prompt", "Too late"]).await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    // Issues from a file; `--json` with `--wait` prints the ended chain.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("issues.json");
    std::fs::write(
        &file,
        r#"[{"title": "Third", "prompt": "Fix a third thing. PASS_AT_COMMITS 0"}]"#,
    )
    .unwrap();
    let out = courier(
        &live,
        &[
            "chain",
            "start",
            "--issues-file",
            file.to_str().unwrap(),
            "--tool",
            "claude",
            "--max-iterations",
            "1",
            "--wait",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let detail = json(&out);
    assert_eq!(detail["chain"]["status"], "succeeded", "{detail}");
    assert_eq!(detail["chain"]["pr_mode"], "single");
    assert_eq!(detail["items"][0]["title"], "Third");
    std::fs::write(&file, r#"{"not": "a list"}"#).unwrap();
    let out = courier(
        &live,
        &["chain", "start", "--issues-file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = courier(&live, &["chain", "start", "--issue", "no equals sign"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_scan_waited_for_shows_its_cards_and_a_card_starts_a_sandbox() {
    let live = live().await;
    let out = courier(
        &live,
        &[
            "issues", "scan", "--focus", "CARDS 2", "--tool", "claude", "--wait",
        ],
    )
    .await;
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}{}", stderr(&out));
    assert!(
        printed.contains("Fake issue 1") && printed.contains("Fake issue 2"),
        "{printed}"
    );

    let out = courier(&live, &["issues", "list", "--json"]).await;
    let sessions = json(&out);
    let session = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    let out = courier(&live, &["issues", "list"]).await;
    assert!(stdout(&out).contains(&session), "{}", stdout(&out));
    let out = courier(&live, &["issues", "show", &session]).await;
    let shown = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let cards: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("POS"))
        .skip(1)
        .collect();
    assert_eq!(cards.len(), 2, "{shown}");
    assert!(
        cards[0].starts_with("1 ") && cards[0].contains("Fix fake issue 1"),
        "{shown}"
    );
    assert!(
        cards[1].starts_with("2 ") && cards[1].contains("medium"),
        "{shown}"
    );

    let out = courier(&live, &["issues", "show", &session, "--json"]).await;
    let detail = json(&out);
    let card = detail["cards"][0]["id"].as_str().unwrap().to_owned();
    let out = courier(&live, &["issues", "start", &card, "--tool", "shell"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("sandbox "), "{}", stdout(&out));
    let out = courier(&live, &["issues", "show", &session]).await;
    assert!(stdout(&out).contains("sandbox "), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_are_managed_and_a_bad_tool_is_invalid_input() {
    let live = live().await;
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.md");
    std::fs::write(&prompt, "Be strict.\n").unwrap();
    let skill = dir.path().join("SKILL.md");
    std::fs::write(
        &skill,
        "---\nname: review\ndescription: Reviews diffs\n---\nReview.\n",
    )
    .unwrap();

    let out = courier(
        &live,
        &["persona", "create", "--name", "x", "--tool", "nope"],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("tool"), "{}", stderr(&out));

    let out = courier(
        &live,
        &[
            "persona",
            "create",
            "--name",
            "reviewer",
            "--tool",
            "claude",
            "--system-prompt",
            prompt.to_str().unwrap(),
            "--skill",
            &format!("review={}", skill.display()),
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let created = json(&out);
    assert_eq!(created["skills"][0]["name"], "review");
    let id = created["id"].as_str().unwrap().to_owned();
    let out = courier(&live, &["persona", "list"]).await;
    assert!(stdout(&out).starts_with("ID") && stdout(&out).contains("reviewer"));
    // An update keeps what it does not mention.
    let out = courier(
        &live,
        &["persona", "update", &id, "--name", "strict reviewer"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = courier(&live, &["persona", "show", &id]).await;
    let shown = stdout(&out);
    assert!(
        shown.contains("strict reviewer")
            && shown.contains("claude")
            && shown.contains("Be strict."),
        "{shown}"
    );
    let out = courier(&live, &["persona", "delete", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = courier(&live, &["persona", "show", &id]).await;
    assert_eq!(out.status.code(), Some(4));

    // The project's checker template and efforts.
    let out = courier(
        &live,
        &[
            "project",
            "settings",
            "set",
            "--checker-template",
            "review-tpl",
            "--effort",
            "claude-sonnet-4-5=high",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = courier(&live, &["project", "settings", "show"]).await;
    let shown = stdout(&out);
    assert!(shown.contains("checker_template review-tpl"), "{shown}");
    assert!(shown.contains("claude-sonnet-4-5=high"), "{shown}");
}

#[test]
fn help_of_each_new_command_mentions_its_flags() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        stdout(&out)
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["persona"],
            &["list", "show", "create", "update", "delete"],
        ),
        (
            &["persona", "create"],
            &[
                "--project",
                "--name",
                "--tool",
                "--model",
                "--effort",
                "--system-prompt",
                "--skill",
            ],
        ),
        (&["persona", "update"], &["--name", "--skill"]),
        (&["workflow"], &["run", "list", "show", "cancel"]),
        (
            &["workflow", "run"],
            &[
                "--prompt",
                "--prompt-file",
                "--title",
                "--steps",
                "--max-iterations",
                "--designer-cli",
                "--checker-cli",
                "--optimizer-cli",
                "--designer-model",
                "--checker-model",
                "--tool",
                "--model",
                "--template",
                "--checker-template",
                "--persona",
                "--instructions",
                "--effort",
                "--memory",
                "--cpus",
                "--timeout",
                "--repo",
                "--base",
                "--branch",
                "--wait",
            ],
        ),
        (&["chain"], &["start", "list", "show", "cancel", "add"]),
        (
            &["chain", "start"],
            &[
                "--issue",
                "--issues-file",
                "--pr-mode",
                "--steps",
                "--persona",
                "--wait",
            ],
        ),
        (&["chain", "add"], &["--title", "--prompt"]),
        (&["issues"], &["scan", "list", "show", "start", "chain"]),
        (
            &["issues", "scan"],
            &["--focus", "--tool", "--model", "--wait"],
        ),
        (&["issues", "start"], &["--tool", "--model"]),
        (
            &["project", "settings", "set"],
            &["--checker-template", "--effort"],
        ),
    ];
    for (command, flags) in cases {
        let text = help(command);
        for flag in *flags {
            assert!(
                text.contains(flag),
                "{command:?} --help lacks {flag}: {text}"
            );
        }
    }
}
