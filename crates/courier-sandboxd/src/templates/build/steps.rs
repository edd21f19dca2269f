//! Running a recipe's steps, one process at a time, each output line logged.

use std::collections::BTreeMap;

use super::copy::CopyJob;
use super::output::{LineSplitter, REASON_LINES, exit_message};
use super::{Build, BuildHost, Environment, Failure, Step, StepError, absolute_workdir};
use crate::envd_link::{self, EnvdEndpoint, ProcessSpec};
use crate::templates::LogLevel;

impl<H: BuildHost> Build<'_, H> {
    /// Runs one recipe step.
    pub(super) async fn run_step(
        &self,
        socket: &EnvdEndpoint,
        token: &str,
        number: &str,
        step: &Step,
        env: &mut Environment,
    ) -> Result<(), Failure> {
        let fail = |message: String| Failure {
            step: number.to_owned(),
            message: format!("step {number} ({}) failed: {message}", step.describe()),
        };
        match step {
            Step::Env(pairs) => env.envs.extend(pairs.iter().cloned()),
            Step::User(user) => {
                // Checked now so a typo fails here, not at the next step or at create.
                let args = vec!["-u".to_owned(), "--".to_owned(), user.clone()];
                let (code, tail) = self
                    .exec(socket, token, number, "id", &args, "root", None, &env.envs)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if code != 0 {
                    return Err(fail(format!(
                        "no user {user} in the image ({})",
                        exit_message(code, &tail)
                    )));
                }
                env.user = Some(user.clone());
            }
            Step::Workdir(dir) => {
                // A relative WORKDIR continues from the current one, like Docker's.
                let dir = &absolute_workdir(dir, env);
                // Like Docker's WORKDIR the directory exists afterwards; one it had to
                // create belongs to the user the steps run as, so they can work in it.
                let user = env
                    .user
                    .clone()
                    .unwrap_or_else(|| crate::base_layer::USER.to_owned());
                let args = vec![
                    "-c".to_owned(),
                    r#"[ -d "$1" ] || { mkdir -p -- "$1" && chown -- "$2:" "$1"; }"#.to_owned(),
                    "workdir".to_owned(),
                    dir.clone(),
                    user,
                ];
                let (code, tail) = self
                    .exec(
                        socket,
                        token,
                        number,
                        "/bin/bash",
                        &args,
                        "root",
                        None,
                        &env.envs,
                    )
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if code != 0 {
                    return Err(fail(exit_message(code, &tail)));
                }
                env.workdir = Some(dir.clone());
            }
            Step::Copy {
                src,
                dest,
                user,
                mode,
                files_hash,
            } => {
                let owner = user
                    .clone()
                    .or_else(|| env.user.clone())
                    .unwrap_or_else(|| crate::base_layer::USER.to_owned());
                let copy = CopyJob {
                    archive: self
                        .server
                        .templates()
                        .files_path(self.template_id, files_hash),
                    src: src.clone(),
                    dest: dest.clone(),
                    owner,
                    mode: mode.clone().unwrap_or_default(),
                    workdir: env.workdir.clone(),
                };
                let (code, tail) = copy
                    .run(self, socket, token, number)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if code != 0 {
                    return Err(fail(exit_message(code, &tail)));
                }
            }
            Step::Run { command, user } => {
                let user = user
                    .clone()
                    .or_else(|| env.user.clone())
                    .unwrap_or_else(|| crate::base_layer::USER.to_owned());
                let args = vec!["-c".to_owned(), command.clone()];
                let (code, tail) = self
                    .exec(
                        socket,
                        token,
                        number,
                        "/bin/bash",
                        &args,
                        &user,
                        env.workdir.as_deref(),
                        &env.envs,
                    )
                    .await
                    .map_err(|e| match e {
                        // E2B's wording, which the SDKs' users match on (e.g. an
                        // unknown user: "… command failed: unauthenticated: invalid
                        // username: 'x'").
                        StepError::Envd(crate::envd_link::EnvdError::Rpc(rpc)) => fail(format!(
                            "failed to run command '{command}': command failed: {rpc}"
                        )),
                        other => fail(other.to_string()),
                    })?;
                if code != 0 {
                    return Err(fail(exit_message(code, &tail)));
                }
            }
        }
        Ok(())
    }

    /// Runs one process, logging its output line by line; returns its exit code and its
    /// last output lines.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn exec(
        &self,
        socket: &EnvdEndpoint,
        token: &str,
        step: &str,
        cmd: &str,
        args: &[String],
        user: &str,
        cwd: Option<&str>,
        envs: &BTreeMap<String, String>,
    ) -> Result<(i32, Vec<String>), StepError> {
        let mut lines = LineSplitter::default();
        let mut tail: Vec<String> = Vec::new();
        let mut emit = |line: String| {
            if tail.len() == REASON_LINES {
                tail.remove(0);
            }
            tail.push(line.clone());
            self.log(LogLevel::Info, step, line);
        };
        let spec = ProcessSpec {
            cmd,
            args,
            envs,
            cwd,
            user,
        };
        let code = envd_link::run_process(socket, token, &spec, |stream, bytes| {
            for line in lines.push(stream, bytes) {
                emit(line);
            }
        })
        .await;
        for line in lines.finish() {
            emit(line);
        }
        Ok((code.map_err(StepError::Envd)?, tail))
    }
}
