//! The CLI against a live server whose sandboxes run on the host (the `shell` tool's
//! commands, or courier-tools' fake agent CLIs): `sandbox create` streams the output,
//! `send`, `logs` (with tool calls), `logs -f`, `kill`.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod live;

use std::time::Duration;

use live::{Sandboxes, courier, stdout};

/// How long one command may take.
const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_streams_output_then_send_logs_and_kill() {
    let live = live::live(Sandboxes::Plain, LIMIT).await;
    // One line of output per command: the shell tool's parser (courier-tools) emits each
    // line as text without its line break, so lines of one run are joined in the stored
    // message.
    let out = courier(
        &live,
        &[
            "sandbox",
            "create",
            "--tool",
            "shell",
            "--prompt",
            "echo hi-there",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "> echo hi-there\nhi-there\n");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = err
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {err}"))
        .to_owned();
    assert!(err.contains("is still running"), "{err}");

    let out = courier(&live, &["sandbox", "send", &id, "echo again"]).await;
    assert_eq!(stdout(&out), "sent (message 3)\n");
    // Wait for the follow-up's answer, then read the whole transcript.
    let mut transcript = String::new();
    for _ in 0..100 {
        transcript = stdout(&courier(&live, &["sandbox", "logs", &id]).await);
        // The prompt's own line ends in "again" too: wait for the answer's.
        if transcript.ends_with("again\nagain\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        transcript,
        "> echo hi-there\nhi-there\n> echo again\nagain\n"
    );

    let out = courier(&live, &["sandbox", "list"]).await;
    assert!(stdout(&out).contains(&id) && stdout(&out).contains("running"));
    let out = courier(&live, &["sandbox", "kill", &id]).await;
    assert_eq!(stdout(&out), format!("{id} killed\n"));
    // `logs -f` of an ended sandbox prints everything once and returns.
    let out = courier(&live, &["sandbox", "logs", "-f", &id]).await;
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "> echo hi-there\nhi-there\n> echo again\nagain\n"
    );
    let out = courier(&live, &["sandbox", "logs", "-f", "--json", &id]).await;
    let last = stdout(&out).lines().last().unwrap().to_owned();
    assert!(last.contains("\"event\":\"end\""), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_template_starts_from_it_and_a_bad_name_names_the_field() {
    let live = live::live(Sandboxes::Plain, LIMIT).await;
    let out = courier(
        &live,
        &[
            "sandbox",
            "create",
            "--tool",
            "shell",
            "--prompt",
            "echo templated",
            "--template",
            "team-shell:v2",
            "--detach",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sandbox: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sandbox["config"]["template_id"], "team-shell:v2");
    let id = sandbox["id"].as_str().unwrap();
    let out = courier(&live, &["sandbox", "get", id, "--json"]).await;
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["config"]["template_id"], "team-shell:v2");

    let out = courier(
        &live,
        &[
            "sandbox",
            "create",
            "--tool",
            "shell",
            "--prompt",
            "echo no",
            "--template",
            "Bad Template",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("template_id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_tool_calls_results_and_errors_and_follow_returns_once_answered() {
    let live = live::live(Sandboxes::Plain, LIMIT).await;
    let out = courier(
        &live,
        &["keys", "set", "anthropic", "sk-ant-api03-test-0000"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = courier(
        &live,
        &[
            "sandbox",
            "create",
            "--tool",
            "claude",
            "--prompt",
            "fix the login",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed = stdout(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = err.split_whitespace().nth(1).unwrap().to_owned();
    // Each tool call and its result on a line of its own, then the answer and the end.
    let expected_calls = [
        "> fix the login",
        "▸ Edit ",
        "  ↳ The file ",
        "▸ Bash git commit -am 'claude: turn 1'",
        "  ↳ [",
        "✓ done: 3 turns, 1.2 s, $0.0123",
    ];
    let in_order = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        let mut at = 0;
        for want in expected_calls {
            match lines[at..].iter().position(|l| l.starts_with(want)) {
                Some(i) => at += i + 1,
                None => return false,
            }
        }
        true
    };
    assert!(in_order(&streamed), "{streamed}");

    // The stored transcript reads the same: the tool calls come from the raw log.
    let logged = stdout(&courier(&live, &["sandbox", "logs", &id]).await);
    assert!(in_order(&logged), "{logged}");
    assert_eq!(logged.matches("▸ ").count(), 2, "{logged}");

    // `logs -f` on an idle sandbox prints the transcript and returns.
    let out = courier(&live, &["sandbox", "logs", "-f", &id]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out), logged);

    // A follow-up that takes a while: `logs -f` returns once its answer is complete, and
    // a failed run says why.
    courier(&live, &["sandbox", "send", &id, "SLEEP 1"]).await;
    let out = courier(&live, &["sandbox", "logs", "-f", &id]).await;
    let followed = stdout(&out);
    assert!(followed.starts_with(&logged), "{followed}");
    assert!(followed.contains("> SLEEP 1"), "{followed}");
    assert_eq!(followed.matches("✓ done").count(), 2, "{followed}");
    courier(&live, &["sandbox", "send", &id, "FAIL"]).await;
    let out = courier(&live, &["sandbox", "logs", "-f", &id]).await;
    let failed = stdout(&out);
    assert!(
        failed
            .trim_end()
            .ends_with("! run failed: API Error: 500 simulated failure (FAIL in prompt)"),
        "{failed}"
    );
    let out = courier(&live, &["sandbox", "get", &id]).await;
    assert!(stdout(&out).contains("running"), "{}", stdout(&out));
}
