//! A template's start and ready commands: tried at the end of its build, then run in
//! each of its sandboxes at create.

use std::collections::BTreeMap;
use std::time::Duration;

use super::output::{LineSplitter, REASON_LINES, exit_message};
use crate::envd_link::{self, EnvdEndpoint, ProcessSpec};

/// How long a template's `readyCmd` may keep failing (at build and at each create).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two runs of a failing `readyCmd`.
const READY_RETRY: Duration = Duration::from_millis(250);

/// Why a template's start or ready command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    /// envd could not start the start command.
    #[error("startCmd {cmd:?} could not start: {reason}")]
    StartFailed {
        /// The start command.
        cmd: String,
        /// envd's report.
        reason: String,
    },
    /// The ready command did not exit 0 before the deadline.
    #[error("readyCmd {cmd:?} did not succeed within {}s (last run: {last})", timeout.as_secs())]
    NotReady {
        /// The ready command.
        cmd: String,
        /// How long it was given.
        timeout: Duration,
        /// How its last run ended (exit code and output, or why it could not run).
        last: String,
    },
}

/// Who runs a template's start and ready commands, where, with what environment.
pub(super) struct Launch {
    pub(super) user: String,
    pub(super) workdir: Option<String>,
    pub(super) envs: BTreeMap<String, String>,
}

/// Starts `start_cmd` in the background and runs `ready_cmd` until it exits 0, for at
/// most `timeout`. The error says which command failed and how.
pub(super) async fn start_and_wait(
    socket: &EnvdEndpoint,
    token: &str,
    launch: &Launch,
    start_cmd: Option<&str>,
    ready_cmd: Option<&str>,
    timeout: Duration,
) -> Result<(), ReadyError> {
    if let Some(cmd) = start_cmd {
        let args = ["-c".to_owned(), cmd.to_owned()];
        envd_link::start_process(
            socket,
            token,
            &ProcessSpec {
                cmd: "/bin/bash",
                args: &args,
                envs: &launch.envs,
                cwd: launch.workdir.as_deref(),
                user: &launch.user,
            },
        )
        .await
        .map_err(|e| ReadyError::StartFailed {
            cmd: cmd.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let Some(cmd) = ready_cmd else {
        return Ok(());
    };
    let args = ["-c".to_owned(), cmd.to_owned()];
    let process = ProcessSpec {
        cmd: "/bin/bash",
        args: &args,
        envs: &launch.envs,
        cwd: launch.workdir.as_deref(),
        user: &launch.user,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last;
    loop {
        let mut output = LineSplitter::default();
        let mut lines = Vec::new();
        let run = envd_link::run_process(socket, token, &process, |stream, bytes| {
            lines.extend(output.push(stream, bytes));
        });
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(code)) => {
                lines.extend(output.finish());
                last = exit_message(code, &lines[lines.len().saturating_sub(REASON_LINES)..]);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "still running at the deadline".to_owned(),
        }
        if tokio::time::Instant::now() + READY_RETRY >= deadline {
            return Err(ReadyError::NotReady {
                cmd: cmd.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(READY_RETRY).await;
    }
}

/// Starts template `template`'s start command and waits for its ready command in a new
/// sandbox (its envd, already initialised with the template's environment).
pub(crate) async fn start_template_processes(
    socket: &EnvdEndpoint,
    token: &str,
    template: &crate::templates::Template,
    timeout: Duration,
) -> Result<(), ReadyError> {
    if template.start_cmd.is_none() && template.ready_cmd.is_none() {
        return Ok(());
    }
    let launch = Launch {
        user: template
            .user
            .clone()
            .unwrap_or_else(|| crate::base_layer::USER.to_owned()),
        workdir: template.workdir.clone(),
        // `/init` gave envd the template's and the request's variables already.
        envs: BTreeMap::new(),
    };
    start_and_wait(
        socket,
        token,
        &launch,
        template.start_cmd.as_deref(),
        template.ready_cmd.as_deref(),
        timeout,
    )
    .await
}
