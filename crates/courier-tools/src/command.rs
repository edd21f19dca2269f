//! Command lines that start, continue and kill each tool.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::PROJECT_DIR;
use crate::registry::{ThinkingEffort, ToolId, resolve_model, spec};

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

/// Quotes one word for POSIX `sh`: returned as is when made only of `A-Za-z0-9_@%+=:,./-`
/// (and not empty), otherwise wrapped in single quotes with each `'` written as `'\''`.
///
/// ```
/// use courier_tools::shell_quote;
///
/// assert_eq!(shell_quote("--model"), "--model");
/// assert_eq!(shell_quote(""), "''");
/// assert_eq!(shell_quote("a b"), "'a b'");
/// ```
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
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

/// The command that stops `tool` at once: `pkill -9 -f PATTERN`, where the pattern's
/// bracket keeps `pkill` from matching itself (e.g. `pkill -9 -f '[c]laude'`).
pub fn kill_command(tool: ToolId) -> CommandLine {
    CommandLine::new("pkill", ["-9", "-f", spec(tool).kill_pattern])
}

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
            // `$0` names the task so `kill_command` can find it.
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
            "cd /home/user/project && env -u CLAUDECODE -u CLAUDE_CODE_ENTRYPOINT IS_SANDBOX=1 claude -p hi \
             --output-format stream-json --verbose --model claude-opus-4-6 --effort high \
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
    fn kill_patterns_do_not_match_pkill_itself() {
        assert_eq!(
            kill_command(ToolId::Claude).to_shell(),
            "pkill -9 -f '[c]laude'"
        );
        assert_eq!(
            kill_command(ToolId::Pi).to_shell(),
            "pkill -9 -f '[p]i --mode json'"
        );
    }

    #[test]
    fn quoting_handles_quotes_newlines_and_dollars() {
        assert_eq!(shell_quote("a'b\n$c"), "'a'\\''b\n$c'");
    }
}
