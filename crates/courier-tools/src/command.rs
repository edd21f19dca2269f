//! Command lines that start, continue and kill each tool.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::PROJECT_DIR;
use crate::registry::{ThinkingEffort, ToolId, resolve_model, spec};
pub use crate::shell::shell_quote;

/// Claude Code's API retries (`CLAUDE_CODE_MAX_RETRIES`): its default of ten takes about
/// 150 s to give up on a rejected key. Courier stops a run at the first authentication
/// error anyway; this bounds the other retry storms (overload, 5xx).
pub const CLAUDE_MAX_RETRIES: &str = "3";

/// A process to run: program, arguments, environment changes, working directory, stdin.
///
/// It is structured so an executor can spawn it without a shell; [`CommandLine::to_shell`]
/// renders the same thing as one POSIX `sh` line with every word safely quoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandLine {
    /// The executable (looked up on `PATH`).
    pub program: String,
    /// The arguments, unquoted.
    pub args: Vec<String>,
    /// Variables to set for the child (on top of the inherited environment).
    pub env: BTreeMap<String, String>,
    /// Variables to remove from the inherited environment (they break the CLI).
    pub env_remove: Vec<String>,
    /// The working directory, when it matters.
    pub cwd: Option<String>,
    /// Whether stdin must be closed (`< /dev/null`). Every agent CLI blocks on an open stdin.
    pub stdin_null: bool,
}

impl CommandLine {
    /// A command with no environment changes, no working directory and inherited stdin.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdin_null: false,
        }
    }

    /// Renders the command as one `sh` line:
    /// `cd DIR && env -u VAR NAME=value program 'arg' … < /dev/null`.
    ///
    /// Every word that is not made only of safe characters is single-quoted, so prompt text
    /// with quotes, newlines, `$`, backticks or globs reaches the program byte for byte.
    ///
    /// ```
    /// use courier_tools::CommandLine;
    ///
    /// let cmd = CommandLine::new("echo", ["it's $HOME"]);
    /// assert_eq!(cmd.to_shell(), r#"echo 'it'\''s $HOME'"#);
    /// ```
    pub fn to_shell(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if !self.env.is_empty() || !self.env_remove.is_empty() {
            words.push("env".to_owned());
            for name in &self.env_remove {
                words.push("-u".to_owned());
                words.push(shell_quote(name));
            }
            for (name, value) in &self.env {
                words.push(shell_quote(&format!("{name}={value}")));
            }
        }
        words.push(shell_quote(&self.program));
        words.extend(self.args.iter().map(|a| shell_quote(a)));
        let mut line = words.join(" ");
        if self.stdin_null {
            line.push_str(" < /dev/null");
        }
        match &self.cwd {
            Some(dir) => format!("cd {} && {line}", shell_quote(dir)),
            None => line,
        }
    }
}

/// For a tool whose stream reports usage only when a turn ends (Codex: `turn.completed`),
/// the command that prints the session's latest running total from the CLI's own session
/// log, to bill a run that was stopped before its end (parse the output with
/// [`parse_stopped_run_usage`]). `None` for tools whose stream reports each model call as
/// it ends, and for a session id that is not a plain id.
///
/// ```
/// use courier_tools::{ToolId, command::stopped_run_usage_command};
/// assert!(stopped_run_usage_command(ToolId::Codex, "01a24dc4-e95b-7da0-ba6a-58d805dfd6c3").is_some());
/// assert!(stopped_run_usage_command(ToolId::Codex, "x'; rm -rf /").is_none());
/// assert!(stopped_run_usage_command(ToolId::Pi, "01a24dc4").is_none());
/// ```
pub fn stopped_run_usage_command(tool: ToolId, session_id: &str) -> Option<CommandLine> {
    let plain = !session_id.is_empty()
        && session_id.len() <= 64
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if tool != ToolId::Codex || !plain {
        return None;
    }
    // Codex writes every model call's `token_count` (the thread's running total) to its
    // rollout file as soon as the call ends.
    let script = r#"d="${CODEX_HOME:-$HOME/.codex}/sessions"; f=$(find "$d" -name "rollout-*-$1.jsonl" 2>/dev/null | head -n 1); [ -n "$f" ] || exit 0; grep '"type":"token_count"' "$f" | tail -n 1"#;
    Some(CommandLine::new(
        "sh",
        ["-c", script, "courier-usage", session_id],
    ))
}

/// The session's running total in the output of [`stopped_run_usage_command`]; `None`
/// when it holds none.
pub fn parse_stopped_run_usage(tool: ToolId, output: &str) -> Option<crate::Usage> {
    if tool != ToolId::Codex {
        return None;
    }
    let line = output.lines().rev().find(|l| !l.trim().is_empty())?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let total = value.pointer("/payload/info/total_token_usage")?;
    let n = |k: &str| {
        total
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let cached = n("cached_input_tokens");
    Some(crate::Usage {
        input_tokens: n("input_tokens").saturating_sub(cached),
        output_tokens: n("output_tokens"),
        cache_read_tokens: cached,
        cache_write_tokens: n("cache_write_input_tokens"),
        cost_usd: None,
    })
}

/// What to run: the prompt and the per-run choices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunRequest {
    /// The message for the agent (for `shell`, the shell script to run).
    pub prompt: String,
    /// The model; `None` (or blank) uses the tool's default.
    pub model: Option<String>,
    /// The thinking effort; `None` leaves the tool's default.
    pub thinking_effort: Option<ThinkingEffort>,
}

/// Variables removed from every Claude child: an inherited `CLAUDECODE` makes it refuse to
/// start ("cannot be launched inside another Claude Code session").
const CLAUDE_ENV_REMOVE: &[&str] = &["CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT"];

/// A stray `OPENAI_BASE_URL` has broken Codex sessions; Codex gets exactly the auth we give it.
const CODEX_ENV_REMOVE: &[&str] = &["OPENAI_BASE_URL"];

/// The `$0` of a shell task, so its kill pattern can find it.
const SHELL_TASK_NAME: &str = "courier-shell-task";

/// A prompt starting with `-` would be read as a flag; a leading space keeps it a prompt
/// without changing what the model reads in any meaningful way.
fn prompt_arg(prompt: &str) -> String {
    if prompt.starts_with('-') {
        format!(" {prompt}")
    } else {
        prompt.to_owned()
    }
}

/// A session title from a prompt: its first non-blank line, at most 60 characters.
fn session_title(prompt: &str) -> String {
    let line = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("Courier task");
    let title: String = line.chars().take(60).collect();
    // A title starting with `-` would be read as a flag.
    title.trim_start_matches('-').trim().to_owned()
}

/// The command that starts `tool` on a fresh task.
///
/// Every agent gets: its machine-readable stream flag, the model (requested or default),
/// the thinking effort mapped to its own flag, its permission-skip flag, the project
/// directory as working directory, a closed stdin, and an environment cleaned of variables
/// that break it.
///
/// ```
/// use courier_tools::{RunRequest, ToolId, first_run_command};
///
/// let cmd = first_run_command(ToolId::Claude, &RunRequest { prompt: "fix it".into(), ..Default::default() });
/// assert_eq!(cmd.program, "claude");
/// assert!(cmd.args.contains(&"--dangerously-skip-permissions".to_string()));
/// ```
pub fn first_run_command(tool: ToolId, request: &RunRequest) -> CommandLine {
    build(tool, request, false)
}

/// The command that sends a follow-up message to `tool`, continuing its last session in
/// the project directory (Claude, OpenCode and Pi `--continue`; Codex `exec resume --last`).
/// The `shell` tool has no session, so its follow-up is a fresh run.
pub fn follow_up_command(tool: ToolId, request: &RunRequest) -> CommandLine {
    build(tool, request, true)
}

/// The directory in the sandbox holding the current agent run's files: its output copy
/// (`out.log`), its wrapper shell's pid (`pid`), the agent's session id (`sid`) and, once
/// it ended, its exit code (`exit`).
pub const AGENT_RUN_DIR: &str = "/tmp/courier-agent";

/// Wraps an agent's shell line so its processes can be found again without matching
/// command lines: the line runs in a **new session** (`setsid`) whose id is written to
/// `AGENT_RUN_DIR/sid` before the agent starts. Every process the agent starts stays in
/// that session unless it makes its own, and those are found as descendants
/// ([`stop_agent_command`]). Matching names failed: Pi renames itself `pi`
/// (`process.title`), so no `pkill -f` pattern finds it.
///
/// ```
/// use courier_tools::command::tracked;
/// assert_eq!(
///     tracked("claude -p hi"),
///     "setsid sh -c 'echo $$ > /tmp/courier-agent/sid && exec sh -c \"$1\"' courier-agent 'claude -p hi'"
/// );
/// ```
pub fn tracked(line: &str) -> String {
    tracked_in(AGENT_RUN_DIR, line)
}

/// [`tracked`] with the session id written to `dir/sid`.
pub fn tracked_in(dir: &str, line: &str) -> String {
    format!(
        "setsid sh -c 'echo $$ > {}/sid && exec sh -c \"$1\"' courier-agent {}",
        shell_quote(dir),
        shell_quote(line)
    )
}

/// The script that stops the tracked agent (see [`tracked`]) and everything it started:
/// every process of its session plus their descendants (children that made sessions of
/// their own), SIGTERM first, SIGKILL to what is left after 3 s. Exits 0 once none is
/// left (or no agent ever ran), 1 naming the pids that survived.
///
/// It runs as its own envd process, outside the agent's session, so it never signals
/// itself; it matches no command lines, so a CLI that renames itself is still found. The
/// agent can write the `sid` file: a session id that is not a number, or that is the
/// session of PID 1 (envd) or of the script itself, is ignored, so a forged file cannot
/// turn the stop against the sandbox's daemon.
pub fn stop_agent_command() -> CommandLine {
    stop_agent_in(AGENT_RUN_DIR)
}

/// [`stop_agent_command`] reading `dir/sid`.
pub fn stop_agent_in(dir: &str) -> CommandLine {
    let script = STOP_AGENT_SCRIPT.replace("@SID_FILE@", &shell_quote(&format!("{dir}/sid")));
    CommandLine::new("sh", ["-c".to_owned(), script])
}

/// See [`stop_agent_command`]. `members` prints the session's processes and their
/// descendants; the set is kept across scans because a killed parent's children are
/// reparented and lose their lineage.
const STOP_AGENT_SCRIPT: &str = r#"s=$(cat @SID_FILE@ 2>/dev/null) || exit 0
case "$s" in ''|*[!0-9]*) exit 0 ;; esac
mine=$(ps -o sid= -p $$ | tr -d ' '); init=$(ps -o sid= -p 1 | tr -d ' ')
[ "$s" != "$mine" ] && [ "$s" != "$init" ] && [ "$s" != 1 ] || exit 0
members() {
  ps -eo pid=,ppid=,sid= | awk -v s="$s" -v known="$all" -v me=$$ '
    BEGIN { n = split(known, k, " "); for (i = 1; i <= n; i++) keep[k[i]] = 1 }
    { pid[NR] = $1; ppid[NR] = $2; if ($3 == s) keep[$1] = 1 }
    END {
      do { changed = 0
        for (i = 1; i <= NR; i++) if (!(pid[i] in keep) && (ppid[i] in keep)) { keep[pid[i]] = 1; changed = 1 }
      } while (changed)
      for (i = 1; i <= NR; i++) if ((pid[i] in keep) && pid[i] != 1 && pid[i] != me) print pid[i]
    }' | tr '\n' ' '
}
all=; all=$(members); [ -n "$all" ] || exit 0
kill -TERM $all 2>/dev/null
i=0
while [ $i -lt 30 ]; do
  sleep 0.1; left=$(members); [ -n "$left" ] || exit 0; all="$all $left"; i=$((i + 1))
done
kill -KILL $all 2>/dev/null; sleep 0.3; left=$(members)
[ -z "$left" ] || { echo "agent processes still running: $left" >&2; exit 1; }
"#;

fn build(tool: ToolId, request: &RunRequest, follow_up: bool) -> CommandLine {
    let model = resolve_model(tool, request.model.as_deref());
    let prompt = prompt_arg(&request.prompt);
    let mut args: Vec<String> = Vec::new();
    let mut env = BTreeMap::new();
    let mut env_remove: Vec<String> = Vec::new();
    let program = spec(tool).binary.to_owned();
    match tool {
        ToolId::Claude => {
            args.extend([
                "-p".into(),
                prompt,
                "--output-format".into(),
                "stream-json".into(),
                "--verbose".into(),
                // Each message's final output token count comes only with its
                // `message_delta`; without it a killed run bills one token per message.
                "--include-partial-messages".into(),
            ]);
            if let Some(m) = model {
                args.extend(["--model".into(), m]);
            }
            match request.thinking_effort {
                Some(ThinkingEffort::None) => {
                    env.insert("MAX_THINKING_TOKENS".to_owned(), "0".to_owned());
                }
                Some(e) => args.extend(["--effort".into(), e.as_str().into()]),
                None => {}
            }
            args.push("--dangerously-skip-permissions".into());
            if follow_up {
                args.push("--continue".into());
            }
            // Sandboxes run as root; bypass mode refuses root unless told it is a sandbox.
            env.insert("IS_SANDBOX".to_owned(), "1".to_owned());
            env.insert(
                "CLAUDE_CODE_MAX_RETRIES".to_owned(),
                CLAUDE_MAX_RETRIES.to_owned(),
            );
            env_remove.extend(CLAUDE_ENV_REMOVE.iter().map(|s| (*s).to_owned()));
        }
        ToolId::Codex => {
            args.extend(["exec".into(), "--json".into()]);
            if let Some(m) = model {
                args.extend(["-m".into(), m]);
            }
            if let Some(e) = request.thinking_effort {
                args.extend([
                    "-c".into(),
                    format!("model_reasoning_effort=\"{}\"", e.as_str()),
                ]);
            }
            // The sandbox is the isolation; Codex's own Landlock/bwrap sandbox often fails in one.
            args.extend([
                "--dangerously-bypass-approvals-and-sandbox".into(),
                "--skip-git-repo-check".into(),
                "-C".into(),
                PROJECT_DIR.into(),
            ]);
            if follow_up {
                args.extend(["resume".into(), "--last".into()]);
            }
            args.push(prompt);
            env_remove.extend(CODEX_ENV_REMOVE.iter().map(|s| (*s).to_owned()));
        }
        ToolId::Opencode => {
            args.extend(["run".into(), "--format".into(), "json".into()]);
            if let Some(m) = model {
                args.extend(["-m".into(), m]);
            }
            match request.thinking_effort {
                Some(ThinkingEffort::None) | None => {}
                Some(e) => args.extend(["--variant".into(), e.as_str().into()]),
            }
            args.extend([
                "--thinking".into(),
                "--auto".into(),
                "--dir".into(),
                PROJECT_DIR.into(),
            ]);
            if follow_up {
                args.push("--continue".into());
            } else {
                // A titled session needs no title request: OpenCode sends that one to a
                // second model and never reports its tokens, so it could not be billed.
                args.extend(["--title".into(), session_title(&request.prompt)]);
            }
            args.push(prompt);
            env.insert("OPENCODE_DISABLE_AUTOUPDATE".to_owned(), "1".to_owned());
        }
        ToolId::Pi => {
            args.extend(["--mode".into(), "json".into()]);
            if let Some(m) = model {
                args.extend(["--model".into(), m]);
            }
            if let Some(e) = request.thinking_effort {
                let level = if e == ThinkingEffort::None {
                    "off"
                } else {
                    e.as_str()
                };
                args.extend(["--thinking".into(), level.into()]);
            }
            args.extend(["--offline".into(), "--no-extensions".into()]);
            if follow_up {
                args.push("--continue".into());
            }
            args.push(prompt);
            env.insert("PI_OFFLINE".to_owned(), "1".to_owned());
            env.insert("PI_TELEMETRY".to_owned(), "0".to_owned());
        }
        ToolId::Shell => {
            // `$0` names the task in process listings.
            args.extend(["-c".into(), request.prompt.clone(), SHELL_TASK_NAME.into()]);
        }
    }
    CommandLine {
        program,
        args,
        env,
        env_remove,
        cwd: Some(PROJECT_DIR.to_owned()),
        stdin_null: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str) -> RunRequest {
        RunRequest {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    #[test]
    fn claude_first_run_has_stream_json_verbose_effort_and_clean_env() {
        let cmd = first_run_command(
            ToolId::Claude,
            &RunRequest {
                prompt: "hi".into(),
                model: None,
                thinking_effort: Some(ThinkingEffort::High),
            },
        );
        assert_eq!(
            cmd.to_shell(),
            "cd /home/user/project && env -u CLAUDECODE -u CLAUDE_CODE_ENTRYPOINT CLAUDE_CODE_MAX_RETRIES=3 IS_SANDBOX=1 claude -p hi \
             --output-format stream-json --verbose --include-partial-messages --model claude-opus-4-6 --effort high \
             --dangerously-skip-permissions < /dev/null"
        );
    }

    #[test]
    fn follow_ups_use_each_tools_continue_flag() {
        assert!(
            follow_up_command(ToolId::Claude, &req("x"))
                .args
                .contains(&"--continue".into())
        );
        assert!(
            follow_up_command(ToolId::Opencode, &req("x"))
                .args
                .contains(&"--continue".into())
        );
        assert!(
            follow_up_command(ToolId::Pi, &req("x"))
                .args
                .contains(&"--continue".into())
        );
        let codex = follow_up_command(ToolId::Codex, &req("x")).args;
        let at = codex.iter().position(|a| a == "resume").unwrap();
        assert_eq!(&codex[at..], ["resume", "--last", "x"]);
        assert!(
            !first_run_command(ToolId::Claude, &req("x"))
                .args
                .contains(&"--continue".into())
        );
    }

    #[test]
    fn codex_effort_is_a_toml_config_override() {
        let cmd = first_run_command(
            ToolId::Codex,
            &RunRequest {
                prompt: "x".into(),
                model: Some("gpt-5.5".into()),
                thinking_effort: Some(ThinkingEffort::Low),
            },
        );
        assert!(
            cmd.to_shell()
                .contains("-m gpt-5.5 -c 'model_reasoning_effort=\"low\"'"),
            "{}",
            cmd.to_shell()
        );
    }

    #[test]
    fn prompts_that_look_like_flags_stay_prompts() {
        let cmd = first_run_command(ToolId::Pi, &req("--help me"));
        assert_eq!(cmd.args.last().unwrap(), " --help me");
    }

    #[test]
    fn opencode_first_runs_are_titled_and_follow_ups_are_not() {
        let first = first_run_command(ToolId::Opencode, &req("\n  --fix the login page\nmore"));
        let at = first.args.iter().position(|a| a == "--title").unwrap();
        assert_eq!(first.args[at + 1], "fix the login page");
        assert!(
            !follow_up_command(ToolId::Opencode, &req("x"))
                .args
                .contains(&"--title".into())
        );
    }

    #[test]
    fn a_codex_rollout_token_count_is_the_sessions_total() {
        let line = r#"{"timestamp":"t","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":5100,"cached_input_tokens":1200,"cache_write_input_tokens":0,"output_tokens":105,"reasoning_output_tokens":0,"total_tokens":5205}}}}"#;
        let usage = parse_stopped_run_usage(ToolId::Codex, &format!("{line}\n")).unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_read_tokens,
                usage.output_tokens
            ),
            (3900, 1200, 105)
        );
        assert_eq!(parse_stopped_run_usage(ToolId::Codex, ""), None);
        assert_eq!(parse_stopped_run_usage(ToolId::Claude, line), None);
    }

    #[test]
    fn the_stop_script_matches_no_command_line() {
        let stop = stop_agent_command().to_shell();
        assert!(!stop.contains("pkill") && stop.contains("/tmp/courier-agent/sid"));
    }

    #[test]
    fn quoting_handles_quotes_newlines_and_dollars() {
        assert_eq!(shell_quote("a'b\n$c"), "'a'\\''b\n$c'");
    }
}
