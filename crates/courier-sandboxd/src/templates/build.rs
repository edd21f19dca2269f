//! Running a template build: a build sandbox from the parent template (created through
//! the control plane like any sandbox), the recipe's steps run one by one through the
//! sandbox's envd (`process.Process/Start`, as the SDKs run commands), each output line
//! logged, then the sandbox's writes captured as the new template's layer
//! ([`crate::runtime::Runtime::capture_layer`]).
//!
//! Steps run as `user` in its home unless a USER or WORKDIR step (or the parent
//! template) says otherwise, like E2B's builder; RUN is `/bin/bash -c <command>`. COPY
//! unpacks the client's upload (see [`crate::api`]) like Docker's COPY, the files owned
//! by the step's user (given, else the current one) and optionally chmod'ed. The
//! first failing step stops the build (status `error`, the reason naming the step and
//! its exit code); nothing of a failed build is kept but its log.
//!
//! `startCmd` and `readyCmd` are tried once at the end of the build (step `finalize`),
//! then at every create of the template's sandboxes: the start command is started in
//! the background as the template's user (envd keeps it after the request ends) and the
//! ready command re-run until it exits 0, for at most [`READY_TIMEOUT`]; a create whose
//! ready command never succeeds fails and its sandbox is removed.
//!
//! Deadlines (see [`crate::limits`]): each step must end within
//! [`ServerLimits::template_step_timeout`](crate::ServerLimits::template_step_timeout),
//! the start and ready commands within the ready timeout, and everything up to the
//! capture of the layer within
//! [`ServerLimits::template_build_timeout`](crate::ServerLimits::template_build_timeout)
//! from the build's start. A step past a deadline fails the build, naming the step and
//! the deadline. The build sandbox never outlives its build: it is killed when the build
//! ends, fails or times out (also if the build's task is dropped or panics), and its own
//! sandbox timeout is the build deadline plus [`BUILD_SANDBOX_GRACE`], so the deadline
//! reaper removes it even if nothing else does. (A build whose *server* is gone is the
//! runtime's business: the server's tasks are gone with it.)

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use super::{BuildReason, BuiltVersion, LogEntry, LogLevel};
use crate::envd_link::{self, ProcessSpec, Stream};
use crate::error::{Error, Result};
use crate::server::{CreateRequest, Sandboxd};

/// Metadata key marking a build sandbox (value `<templateID>/<buildID>`): such sandboxes
/// are left out of the list endpoints and killed at startup, since the build that used
/// them cannot go on.
pub const BUILD_SANDBOX_METADATA: &str = "courier.templateBuild";
/// How long a build sandbox may outlive its build's deadline before the deadline reaper
/// kills it (the build kills it itself well before; this covers a lost build task).
pub const BUILD_SANDBOX_GRACE: Duration = Duration::from_secs(60);
/// How long a template's `readyCmd` may keep failing (at build and at each create).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two runs of a failing `readyCmd`.
const READY_RETRY: Duration = Duration::from_millis(250);
/// Longest log line kept; longer output lines are cut.
const MAX_LINE: usize = 4096;
/// Output lines of the failing step quoted in the failure reason.
const REASON_LINES: usize = 5;

/// One build step: the SDK's type, parsed from the wire by `courier_e2b`'s one parser.
pub use courier_e2b::models::Step;

/// What to build: a parent template and steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The parent template (id or alias; `base` or a built one).
    pub from_template: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Started in the background in every sandbox of the template (`startCmd`); `None`
    /// keeps the parent's.
    pub start_cmd: Option<String>,
    /// Must succeed before a sandbox of the template is handed out (`readyCmd`); `None`
    /// keeps the parent's.
    pub ready_cmd: Option<String>,
}

/// Checks the recipe against the server's templates, marks the build started and runs it
/// in the background. Errors: unknown build (`NotFound`), build already started
/// (`Conflict`), unknown or unready parent (`UnknownTemplate`).
pub async fn start(
    server: &Sandboxd,
    template_id: &str,
    build_id: &str,
    recipe: Recipe,
) -> Result<()> {
    let templates = server.templates();
    // Fails first when the build does not exist.
    templates.build_view(template_id, build_id, 0)?;
    let parent = templates
        .resolve(&recipe.from_template)
        .ok_or_else(|| Error::UnknownTemplate(recipe.from_template.clone()))?;
    if parent.id == template_id {
        return Err(Error::InvalidSpec {
            field: "fromTemplate",
            reason: "a template cannot be built from itself".to_owned(),
        });
    }
    templates.start_build(template_id, build_id, &parent.id)?;
    let server = server.clone();
    let (template_id, build_id) = (template_id.to_owned(), build_id.to_owned());
    tokio::spawn(async move {
        let build = Build {
            server: &server,
            template_id: &template_id,
            build_id: &build_id,
        };
        build.run(recipe).await;
    });
    Ok(())
}

/// Kills every build sandbox: at start, those a previous run left (their builds were
/// failed when the templates were loaded); at shutdown, those of builds the stopping
/// server can no longer finish (call it after [`Sandboxd::stop`]; the next start records
/// those builds as interrupted). Other sandboxes are left alone.
pub async fn kill_build_sandboxes(server: &Sandboxd) {
    for record in server.list() {
        if record.metadata.contains_key(BUILD_SANDBOX_METADATA) {
            tracing::info!(sandbox = %record.sandbox_id, "killing the sandbox of an interrupted template build");
            let _ = server.kill(&record.sandbox_id).await;
        }
    }
}

struct Build<'a> {
    server: &'a Sandboxd,
    template_id: &'a str,
    build_id: &'a str,
}

/// A step failure: the reason and the step it names.
struct Failure {
    step: String,
    message: String,
}

impl Build<'_> {
    fn log(&self, level: LogLevel, step: &str, message: impl Into<String>) {
        self.server.templates().log(
            self.template_id,
            self.build_id,
            LogEntry {
                timestamp: Utc::now(),
                level,
                message: message.into(),
                step: Some(step.to_owned()),
            },
        );
    }

    async fn run(&self, recipe: Recipe) {
        let result = self.run_steps(&recipe).await;
        let templates = self.server.templates();
        let outcome = match result {
            Ok(version) => {
                // Logged before the status flips: a client stops reading the log once it
                // has seen `ready` and drained what was there.
                self.log(LogLevel::Info, "finalize", "Build finished: template ready");
                let finished = templates.finish_build(self.template_id, version);
                if let Err(e) = &finished {
                    self.log(
                        LogLevel::Error,
                        "finalize",
                        format!("Build failed: recording the template failed: {e}"),
                    );
                    // The layer stays: the template record may already name it.
                    let _ = templates.fail_build(
                        self.template_id,
                        self.build_id,
                        BuildReason {
                            message: format!("recording the template failed: {e}"),
                            step: Some("finalize".to_owned()),
                        },
                    );
                }
                finished
            }
            Err(failure) => {
                self.log(
                    LogLevel::Error,
                    &failure.step,
                    format!("Build failed: {}", failure.message),
                );
                templates.fail_build(
                    self.template_id,
                    self.build_id,
                    BuildReason {
                        message: failure.message,
                        step: Some(failure.step),
                    },
                )
            }
        };
        if let Err(e) = outcome {
            tracing::error!(template = self.template_id, build = self.build_id, error = %e, "recording the build's outcome failed");
        }
        // The COPY uploads served this build; keep them only for builds still to come.
        templates.release_uploads(self.template_id);
        // Warm sandboxes of the previous version would never be taken again.
        self.server.drop_stale_warm().await;
        // A new version may have made the previous one's layer unused.
        self.server.collect_layer_garbage().await;
    }

    async fn run_steps(&self, recipe: &Recipe) -> Result<BuiltVersion, Failure> {
        let limits = &self.server.config().limits;
        let deadlines = Deadlines {
            step: limits.template_step_timeout,
            build: limits.template_build_timeout,
            build_end: tokio::time::Instant::now() + limits.template_build_timeout,
        };
        let base_failure = |message: String| Failure {
            step: "base".to_owned(),
            message,
        };
        let parent = self
            .server
            .templates()
            .resolve(&recipe.from_template)
            .ok_or_else(|| base_failure(format!("template {} not found", recipe.from_template)))?;
        let own = self
            .server
            .templates()
            .find(self.template_id)
            .ok_or_else(|| base_failure(format!("template {} was deleted", self.template_id)))?;
        self.log(
            LogLevel::Info,
            "base",
            format!(
                "Building from template {} ({} steps)",
                parent.id,
                recipe.steps.len()
            ),
        );
        let mut metadata = BTreeMap::new();
        metadata.insert(
            BUILD_SANDBOX_METADATA.to_owned(),
            format!("{}/{}", self.template_id, self.build_id),
        );
        // The build sandbox's own deadline backs the build's: if this task is lost, the
        // reaper still kills the sandbox shortly after the build's deadline.
        let sandbox_timeout =
            (deadlines.build + BUILD_SANDBOX_GRACE).min(crate::server::MAX_TIMEOUT);
        // Not cut short by the build deadline: a create dropped half-way could leave a
        // sandbox without a record. It is bounded on its own (envd readiness, the parent's
        // ready command).
        let record = self
            .server
            .create(CreateRequest {
                template: parent.id.clone(),
                timeout: sandbox_timeout,
                metadata,
                memory_mb: Some(own.memory_mb),
                cpu_count: Some(own.cpu_count),
                // Recipes install packages (apt, pip, npm): give the build sandbox
                // outbound access wherever this host can provide it.
                allow_internet: crate::runtime::network::find_slirp4netns().is_some(),
                // A build must not outlive its server: nothing would capture or kill it.
                die_with_server: true,
                ..CreateRequest::default()
            })
            .await
            .map_err(|e| base_failure(format!("could not start the build sandbox: {e}")))?;
        let sandbox = record.sandbox_id.clone();
        // From here on the build sandbox dies with the build, however it ends.
        let _guard = KillOnDrop {
            server: self.server.clone(),
            id: sandbox.clone(),
        };
        self.log(
            LogLevel::Info,
            "base",
            format!("Build sandbox {sandbox} started"),
        );
        let mut env = Environment {
            envs: parent.envs.clone(),
            user: parent.user.clone(),
            workdir: parent.workdir.clone(),
        };
        let start_cmd = recipe.start_cmd.clone().or(parent.start_cmd.clone());
        let ready_cmd = recipe.ready_cmd.clone().or(parent.ready_cmd.clone());
        let mut stepped = self
            .run_in(
                &sandbox,
                &record.envd_access_token,
                recipe,
                &mut env,
                &deadlines,
            )
            .await;
        if stepped.is_ok() && (recipe.start_cmd.is_some() || recipe.ready_cmd.is_some()) {
            // Like E2B, the start and ready commands are tried once at the end of the
            // build, so a template whose sandboxes could never become ready fails here.
            // They have their own (ready) deadline; the build's still applies.
            let checked = self.check_start(
                &sandbox,
                &record.envd_access_token,
                &env,
                start_cmd.as_deref(),
                ready_cmd.as_deref(),
            );
            stepped = match tokio::time::timeout_at(deadlines.build_end, checked).await {
                Ok(checked) => checked,
                Err(_) => Err(Failure {
                    step: "finalize".to_owned(),
                    message: format!(
                        "the start and ready commands were still running at the build's \
                         deadline: {}",
                        deadlines.build_message()
                    ),
                }),
            };
        }
        if let Err(failure) = stepped {
            let _ = self.server.kill(&sandbox).await;
            return Err(failure);
        }
        self.log(
            LogLevel::Info,
            "finalize",
            "Capturing the file system as a new layer",
        );
        let layer = self
            .server
            .templates()
            .layer_dir(self.template_id, self.build_id);
        let runtime_server = self.server.clone();
        let (sid, dest) = (sandbox.clone(), layer.clone());
        let captured = tokio::task::spawn_blocking(move || {
            runtime_server.runtime().capture_layer(&sid, &dest)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        // The control plane's record and socket dir go too (the runtime sandbox is gone
        // already when the capture ran).
        let _ = self.server.kill(&sandbox).await;
        if let Err(e) = captured {
            let _ = std::fs::remove_dir_all(&layer);
            return Err(Failure {
                step: "finalize".to_owned(),
                message: format!("capturing the layer failed: {e}"),
            });
        }
        let mut layers = parent.layers.clone();
        layers.push(layer);
        Ok(BuiltVersion {
            build_id: self.build_id.to_owned(),
            layers,
            envs: env.envs,
            user: env.user,
            workdir: env.workdir,
            start_cmd,
            ready_cmd,
        })
    }

    async fn check_start(
        &self,
        sandbox: &str,
        token: &str,
        env: &Environment,
        start_cmd: Option<&str>,
        ready_cmd: Option<&str>,
    ) -> Result<(), Failure> {
        let fail = |message: String| Failure {
            step: "finalize".to_owned(),
            message,
        };
        let socket = self
            .server
            .entry(sandbox)
            .map(|e| e.envd.clone())
            .ok_or_else(|| fail(format!("build sandbox {sandbox} vanished")))?;
        let launch = Launch {
            user: env
                .user
                .clone()
                .unwrap_or_else(|| crate::base_layer::USER.to_owned()),
            workdir: env.workdir.clone(),
            envs: env.envs.clone(),
        };
        if let Some(cmd) = start_cmd {
            self.log(
                LogLevel::Info,
                "finalize",
                format!("Starting the start command: {cmd}"),
            );
        }
        if let Some(cmd) = ready_cmd {
            self.log(
                LogLevel::Info,
                "finalize",
                format!("Waiting for the ready command: {cmd}"),
            );
        }
        let timeout = self.server.config().template_ready_timeout;
        start_and_wait(&socket, token, &launch, start_cmd, ready_cmd, timeout)
            .await
            .map_err(fail)?;
        self.log(LogLevel::Info, "finalize", "Template is ready");
        Ok(())
    }

    async fn run_in(
        &self,
        sandbox: &str,
        token: &str,
        recipe: &Recipe,
        env: &mut Environment,
        deadlines: &Deadlines,
    ) -> Result<(), Failure> {
        let socket = self
            .server
            .entry(sandbox)
            .map(|e| e.envd.clone())
            .ok_or_else(|| Failure {
                step: "base".to_owned(),
                message: format!("build sandbox {sandbox} vanished"),
            })?;
        let total = recipe.steps.len();
        for (index, step) in recipe.steps.iter().enumerate() {
            let number = (index + 1).to_string();
            self.log(
                LogLevel::Info,
                &number,
                format!("[{number}/{total}] {}", step.describe()),
            );
            // The step's own deadline, or the build's when that comes first. A step cut
            // short keeps running in the sandbox only until the sandbox is killed, which
            // the failed build does next.
            let (deadline, passed) = deadlines.for_step();
            let ran = self.run_step(&socket, token, &number, step, env);
            match tokio::time::timeout_at(deadline, ran).await {
                Ok(ran) => ran?,
                Err(_) => {
                    return Err(Failure {
                        step: number.clone(),
                        message: format!("step {number} ({}) failed: {passed}", step.describe()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs one recipe step.
    async fn run_step(
        &self,
        socket: &envd_link::EnvdEndpoint,
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
                    .map_err(fail)?;
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
                    .map_err(fail)?;
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
                let (code, tail) = copy.run(self, socket, token, number).await.map_err(&fail)?;
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
                    .map_err(fail)?;
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
    async fn exec(
        &self,
        socket: &envd_link::EnvdEndpoint,
        token: &str,
        step: &str,
        cmd: &str,
        args: &[String],
        user: &str,
        cwd: Option<&str>,
        envs: &BTreeMap<String, String>,
    ) -> Result<(i32, Vec<String>), String> {
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
        Ok((code.map_err(|e| e.to_string())?, tail))
    }
}

/// A build's deadlines.
struct Deadlines {
    /// Each step's.
    step: Duration,
    /// The whole build's, from its start.
    build: Duration,
    /// When the build's deadline passes.
    build_end: tokio::time::Instant,
}

impl Deadlines {
    /// When the next step must end, and what to say when it does not: the step's
    /// deadline from now, or the build's when that is sooner.
    fn for_step(&self) -> (tokio::time::Instant, String) {
        let step_end = tokio::time::Instant::now() + self.step;
        if step_end < self.build_end {
            (
                step_end,
                format!(
                    "still running after {} s, the deadline of a build step \
                     (template_step_timeout)",
                    self.step.as_secs()
                ),
            )
        } else {
            (self.build_end, self.build_message())
        }
    }

    fn build_message(&self) -> String {
        format!(
            "the build did not finish within {} s, the deadline of a whole build \
             (template_build_timeout)",
            self.build.as_secs()
        )
    }
}

/// Kills the build sandbox when dropped: whether the build returns, fails, or its task
/// is dropped or panics, no build sandbox outlives its build. (The build kills it itself
/// on every path it controls; this is the net under them, a no-op when it is gone.)
struct KillOnDrop {
    server: Sandboxd,
    id: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.server.entry(&self.id).is_none() {
            return;
        }
        let (server, id) = (self.server.clone(), std::mem::take(&mut self.id));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = server.kill(&id).await {
                        tracing::warn!(sandbox = %id, error = %e, "killing a build sandbox failed");
                    }
                });
            }
            // No runtime left (the server is going away): the deadline reaper of the next
            // start, or `kill_build_sandboxes`, removes it.
            Err(_) => tracing::warn!(sandbox = %id, "a build sandbox is left to the next start"),
        }
    }
}

/// Copies files of an uploaded archive into the build sandbox: the archive is uploaded
/// through envd into the sandbox's `/tmp` (a tmpfs, so not part of the captured layer;
/// never written through the sandbox's paths from the host, where the sandbox's symlinks
/// could redirect it), unpacked by `tar` inside the sandbox into a scratch directory,
/// given its owner and mode there, then copied with `cp -a` to the destination.
struct CopyJob {
    archive: std::path::PathBuf,
    src: String,
    dest: String,
    owner: String,
    mode: String,
    workdir: Option<String>,
}

/// `$1` src glob, `$2` dest, `$3` owner, `$4` mode (may be empty), `$5` workdir, `$6`
/// tar's decompression flag (may be empty), `$7` the uploaded archive (removed).
const COPY_SCRIPT: &str = r#"set -eu
stage=$(mktemp -d /tmp/.courier-copy.XXXXXX)
trap 'rm -rf "$stage" "$7"' EXIT
tar -x $6 --no-same-owner -C "$stage" -f "$7"
src=$1 dest=$2 owner=$3 mode=$4
case "$owner" in *:*) ;; *) owner="$owner:" ;; esac
case "$dest" in /*) ;; *) dest="$5/$dest" ;; esac
cd "$stage"
shopt -s nullglob dotglob
IFS=$'
'
matches=( $src )
unset IFS
if [ ${#matches[@]} -eq 0 ]; then
  echo "COPY: $src matches nothing in the uploaded files" >&2
  exit 1
fi
chown -R -- "$owner" "${matches[@]}"
if [ -n "$mode" ]; then
  find "${matches[@]}" -type f -exec chmod "$mode" {} +
fi
many=0
[ ${#matches[@]} -gt 1 ] && many=1
case "$dest" in */) many=1 ;; esac
[ $many -eq 1 ] && mkdir -p -- "$dest"
for m in "${matches[@]}"; do
  if [ -d "$m" ]; then
    mkdir -p -- "$dest"
    cp -a -- "$m/." "$dest/"
  elif [ -d "$dest" ]; then
    cp -a -- "$m" "$dest/"
  else
    mkdir -p -- "$(dirname -- "$dest")"
    cp -a -- "$m" "$dest"
  fi
done
"#;

impl CopyJob {
    /// Uploads the archive into the sandbox's `/tmp` through envd (as root, with envd's
    /// own file access: nothing on the host follows the sandbox's paths), then unpacks
    /// and copies it there with [`COPY_SCRIPT`] as root.
    async fn run(
        self,
        build: &Build<'_>,
        envd: &envd_link::EnvdEndpoint,
        token: &str,
        step: &str,
    ) -> Result<(i32, Vec<String>), String> {
        use std::io::Read as _;
        let mut magic = [0u8; 2];
        let gzip = std::fs::File::open(&self.archive)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(|e| {
                format!(
                    "the uploaded files are missing ({}): {e}",
                    self.archive.display()
                )
            })?
            == 2
            && magic == [0x1f, 0x8b];
        let workdir = self.workdir.clone().unwrap_or_else(|| {
            let user = self.owner.split(':').next().unwrap_or_default();
            if user == "root" {
                "/root".to_owned()
            } else {
                format!("/home/{user}")
            }
        });
        let inside = format!("/tmp/.courier-copy-{}.tar", crate::state::random_hex(8));
        envd_link::upload(envd, token, &self.archive, &inside, "root")
            .await
            .map_err(|e| format!("upload the files into the sandbox: {e}"))?;
        let args = vec![
            "-c".to_owned(),
            COPY_SCRIPT.to_owned(),
            "copy".to_owned(),
            self.src,
            self.dest,
            self.owner,
            self.mode,
            workdir,
            if gzip { "-z" } else { "" }.to_owned(),
            inside,
        ];
        build
            .exec(
                envd,
                token,
                step,
                "/bin/bash",
                &args,
                "root",
                None,
                &BTreeMap::new(),
            )
            .await
    }
}

/// Who runs a template's start and ready commands, where, with what environment.
struct Launch {
    user: String,
    workdir: Option<String>,
    envs: BTreeMap<String, String>,
}

/// Starts `start_cmd` in the background and runs `ready_cmd` until it exits 0, for at
/// most `timeout`. The error says which command failed and how.
async fn start_and_wait(
    socket: &envd_link::EnvdEndpoint,
    token: &str,
    launch: &Launch,
    start_cmd: Option<&str>,
    ready_cmd: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
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
        .map_err(|e| format!("startCmd {cmd:?} could not start: {e}"))?;
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
            return Err(format!(
                "readyCmd {cmd:?} did not succeed within {}s (last run: {last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(READY_RETRY).await;
    }
}

/// Starts template `template`'s start command and waits for its ready command in a new
/// sandbox (its envd, already initialised with the template's environment).
pub(crate) async fn start_template_processes(
    socket: &envd_link::EnvdEndpoint,
    token: &str,
    template: &super::Template,
    timeout: Duration,
) -> Result<(), String> {
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

fn exit_message(code: i32, tail: &[String]) -> String {
    let mut message = if code < 0 {
        "killed by a signal".to_owned()
    } else {
        format!("exit code {code}")
    };
    if !tail.is_empty() {
        message.push_str(": ");
        message.push_str(&tail.join("\n"));
    }
    message
}

/// `dir` made absolute against the current working directory (default: the current
/// user's home).
fn absolute_workdir(dir: &str, env: &Environment) -> String {
    if dir.starts_with('/') {
        return dir.to_owned();
    }
    let base = env.workdir.clone().unwrap_or_else(|| {
        match env.user.as_deref().unwrap_or(crate::base_layer::USER) {
            "root" => "/root".to_owned(),
            user => format!("/home/{user}"),
        }
    });
    format!("{}/{dir}", base.trim_end_matches('/'))
}

/// What steps carry forward.
struct Environment {
    envs: BTreeMap<String, String>,
    user: Option<String>,
    workdir: Option<String>,
}

/// Cuts output chunks into lines, per stream (chunks may end mid-line).
#[derive(Default)]
struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, stream: Stream, bytes: &[u8]) -> Vec<String> {
        let buffer = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(pos) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            lines.push(clean(&line[..line.len() - 1]));
        }
        // A line with no end in sight is logged in pieces rather than kept forever.
        if buffer.len() > MAX_LINE {
            let line: Vec<u8> = std::mem::take(buffer);
            lines.push(clean(&line));
        }
        lines
    }

    fn finish(&mut self) -> Vec<String> {
        [
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        ]
        .into_iter()
        .filter(|rest| !rest.is_empty())
        .map(|rest| clean(&rest))
        .collect()
    }
}

fn clean(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    if text.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_per_stream() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(Stream::Stdout, b"hel").is_empty());
        assert_eq!(splitter.push(Stream::Stderr, b"err\r\n"), ["err"]);
        assert_eq!(splitter.push(Stream::Stdout, b"lo\nwor"), ["hello"]);
        assert_eq!(splitter.finish(), ["wor"]);
        assert!(splitter.finish().is_empty());
    }

    #[test]
    fn endless_lines_are_cut() {
        let mut splitter = LineSplitter::default();
        let lines = splitter.push(Stream::Stdout, &vec![b'x'; MAX_LINE + 10]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].len() <= MAX_LINE + '…'.len_utf8());
    }

    #[test]
    fn relative_workdirs_continue_from_the_current_one() {
        let mut env = Environment {
            envs: BTreeMap::new(),
            user: None,
            workdir: None,
        };
        assert_eq!(absolute_workdir("/srv", &env), "/srv");
        assert_eq!(absolute_workdir("app", &env), "/home/user/app");
        env.user = Some("root".to_owned());
        assert_eq!(absolute_workdir("app", &env), "/root/app");
        env.workdir = Some("/srv/".to_owned());
        assert_eq!(absolute_workdir("app/x", &env), "/srv/app/x");
    }

    #[test]
    fn a_step_gets_its_own_deadline_or_the_builds_when_that_is_sooner() {
        // What a recipe author tries: a step that never ends (`sleep infinity`, a
        // hanging `npm install`), or many steps that each stay under the step deadline.
        let now = tokio::time::Instant::now();
        let roomy = Deadlines {
            step: Duration::from_secs(10),
            build: Duration::from_secs(3600),
            build_end: now + Duration::from_secs(3600),
        };
        let (end, passed) = roomy.for_step();
        assert!(end < roomy.build_end);
        assert!(
            passed.contains("10 s") && passed.contains("template_step_timeout"),
            "{passed}"
        );
        let late = Deadlines {
            step: Duration::from_secs(600),
            build: Duration::from_secs(60),
            build_end: now + Duration::from_secs(5),
        };
        let (end, passed) = late.for_step();
        assert_eq!(end, late.build_end);
        assert!(
            passed.contains("60 s") && passed.contains("template_build_timeout"),
            "{passed}"
        );
    }

    #[test]
    fn failure_messages_name_the_exit_code_and_quote_the_output() {
        assert_eq!(exit_message(3, &["boom".to_owned()]), "exit code 3: boom");
        assert_eq!(exit_message(-1, &[]), "killed by a signal");
    }
}
