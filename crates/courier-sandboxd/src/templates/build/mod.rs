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
//!
//! The build reaches the control plane only through [`BuildHost`] (what it needs of it:
//! the templates, a build sandbox, its runtime), so this module knows nothing of the
//! server that runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use super::{BuildReason, BuiltVersion, LogEntry, LogLevel};
use crate::envd_link::EnvdEndpoint;
use crate::error::{Error, Result};

mod copy;
mod host;
mod launch;
mod output;
mod steps;
#[cfg(test)]
mod tests;

pub use host::{BuildHost, BuildLimits, BuildSandbox};
pub(crate) use launch::start_template_processes;
use launch::{Launch, start_and_wait};
pub use launch::{READY_TIMEOUT, ReadyError};

/// Metadata key marking a build sandbox (value `<templateID>/<buildID>`): such sandboxes
/// are left out of the list endpoints and killed at startup, since the build that used
/// them cannot go on.
pub const BUILD_SANDBOX_METADATA: &str = "courier.templateBuild";
/// How long a build sandbox may outlive its build's deadline before the deadline reaper
/// kills it (the build kills it itself well before; this covers a lost build task).
pub const BUILD_SANDBOX_GRACE: Duration = Duration::from_secs(60);

/// One build step: the SDK's type, parsed from the wire by `courier_e2b`'s one parser.
pub use courier_e2b::models::Step;

/// What to build: a parent template (or image) and steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The parent template (id or alias; `base` or a built one). Ignored when
    /// `from_image` is set (the pulled image is the parent).
    pub from_template: String,
    /// A container image to pull and build on (`fromImage` other than E2B's base).
    pub from_image: Option<crate::images::ImageRef>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Started in the background in every sandbox of the template (`startCmd`); `None`
    /// keeps the parent's.
    pub start_cmd: Option<String>,
    /// Must succeed before a sandbox of the template is handed out (`readyCmd`); `None`
    /// keeps the parent's.
    pub ready_cmd: Option<String>,
    /// Run every step even when an earlier build of the template had the same parent and
    /// steps (`force`, the SDKs' `skip_cache()`); otherwise that build's layer is reused.
    pub force: bool,
}

impl Recipe {
    /// The build cache's key: the parent's layers (content-addressed images and build
    /// ids), the steps (COPY's by the hash of its files), start and ready commands.
    fn cache_key(&self, parent_layers: &[std::path::PathBuf]) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        for layer in parent_layers {
            hash.update(layer.as_os_str().as_encoded_bytes());
            hash.update([0]);
        }
        hash.update(format!(
            "{:?}\0{:?}\0{:?}",
            self.steps, self.start_cmd, self.ready_cmd
        ));
        hex::encode(hash.finalize())
    }
}

/// Checks the recipe against the server's templates, marks the build started and runs it
/// in the background. Errors: unknown build (`NotFound`), build already started
/// (`Conflict`), unknown or unready parent (`UnknownTemplate`).
pub async fn start<H: BuildHost>(
    server: &H,
    template_id: &str,
    build_id: &str,
    recipe: Recipe,
) -> Result<()> {
    let templates = server.templates();
    // Fails first when the build does not exist.
    templates.build_view(template_id, build_id, 0)?;
    let parent_name = match &recipe.from_image {
        // Pulled in the background, as the build's first part.
        Some(image) => image.to_string(),
        None => {
            // A template builds on what its owner may use: another key's private
            // template is as unknown as a missing one.
            let builder = templates.find(template_id).and_then(|t| t.owner);
            let parent = templates
                .resolve(&recipe.from_template)
                .filter(|p| builder.as_deref().is_none_or(|o| p.visible_to(o)))
                .ok_or_else(|| Error::UnknownTemplate(recipe.from_template.clone()))?;
            if parent.id == template_id {
                return Err(Error::InvalidSpec {
                    field: "fromTemplate",
                    reason: "a template cannot be built from itself".to_owned(),
                });
            }
            parent.id
        }
    };
    templates.start_build(template_id, build_id, &parent_name)?;
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
/// server can no longer finish (call it after `Sandboxd::stop`; the next start records
/// those builds as interrupted). Other sandboxes are left alone.
pub async fn kill_build_sandboxes<H: BuildHost>(server: &H) {
    for record in server.sandboxes() {
        if record.metadata.contains_key(BUILD_SANDBOX_METADATA) {
            tracing::info!(sandbox = %record.sandbox_id, "killing the sandbox of an interrupted template build");
            match server.kill_sandbox(&record.sandbox_id).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(error) => {
                    tracing::warn!(sandbox = %record.sandbox_id, %error, "killing a build sandbox failed");
                }
            }
        }
    }
}

struct Build<'a, H> {
    server: &'a H,
    template_id: &'a str,
    build_id: &'a str,
}

/// Why running a step's process failed (its exit code is no failure of this kind).
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// envd could not run it (the report of [`crate::envd_link`]).
    #[error("{0}")]
    Envd(crate::envd_link::EnvdError),
    /// A COPY step's upload is not in the data dir.
    #[error("the uploaded files are missing ({}): {source}", path.display())]
    MissingUpload {
        /// Where it should be.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A COPY step's upload could not be put into the sandbox.
    #[error("upload the files into the sandbox: {0}")]
    Upload(crate::envd_link::EnvdError),
}

/// A step failure: the reason and the step it names.
struct Failure {
    step: String,
    message: String,
}

impl<H: BuildHost> Build<'_, H> {
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
                    if let Err(error) = templates.fail_build(
                        self.template_id,
                        self.build_id,
                        BuildReason {
                            message: format!("recording the template failed: {e}"),
                            step: Some("finalize".to_owned()),
                        },
                    ) {
                        tracing::warn!(template = self.template_id, build = self.build_id, %error, "recording the build's failure failed");
                    }
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
        self.server.build_ended().await;
    }

    async fn run_steps(&self, recipe: &Recipe) -> Result<BuiltVersion, Failure> {
        let limits = self.server.build_limits();
        let deadlines = Deadlines {
            step: limits.step,
            build: limits.build,
            build_end: tokio::time::Instant::now() + limits.build,
        };
        let base_failure = |message: String| Failure {
            step: "base".to_owned(),
            message,
        };
        let parent_name = match &recipe.from_image {
            Some(image) => {
                let pulled = self
                    .server
                    .templates()
                    .images()
                    .pull(image, |line| self.log(LogLevel::Info, "base", line));
                match tokio::time::timeout_at(deadlines.build_end, pulled).await {
                    Ok(Ok(id)) => id,
                    Ok(Err(e)) => return Err(base_failure(e.to_string())),
                    Err(_) => {
                        return Err(base_failure(format!(
                            "pulling {image} was still running at the build's deadline: {}",
                            deadlines.build_message()
                        )));
                    }
                }
            }
            None => recipe.from_template.clone(),
        };
        let parent = self
            .server
            .templates()
            .resolve(&parent_name)
            .ok_or_else(|| base_failure(format!("template {parent_name} not found")))?;
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
        let start_cmd = recipe.start_cmd.clone().or(parent.start_cmd.clone());
        let ready_cmd = recipe.ready_cmd.clone().or(parent.ready_cmd.clone());
        let key = recipe.cache_key(&parent.layers);
        if !recipe.force
            && let Some(cached) = self
                .server
                .templates()
                .cached_version(self.template_id, &key)
        {
            self.log(
                LogLevel::Info,
                "base",
                format!(
                    "Reusing the layer of build {} (same parent and steps; skip the cache \
                     to run them again)",
                    cached.build_id
                ),
            );
            return Ok(BuiltVersion {
                build_id: self.build_id.to_owned(),
                ..cached
            });
        }
        let mut metadata = BTreeMap::new();
        metadata.insert(
            BUILD_SANDBOX_METADATA.to_owned(),
            format!("{}/{}", self.template_id, self.build_id),
        );
        // The build sandbox's own deadline backs the build's: if this task is lost, the
        // reaper still kills the sandbox shortly after the build's deadline.
        // (The host caps it at its longest timeout.)
        let sandbox_timeout = deadlines.build + BUILD_SANDBOX_GRACE;
        // Not cut short by the build deadline: a create dropped half-way could leave a
        // sandbox without a record. It is bounded on its own (envd readiness, the parent's
        // ready command).
        let record = self
            .server
            .create_build_sandbox(BuildSandbox {
                template: parent.id.clone(),
                timeout: sandbox_timeout,
                metadata,
                memory_mb: own.memory_mb,
                cpu_count: own.cpu_count,
                // Recipes install packages (apt, pip, npm): give the build sandbox
                // outbound access wherever this host can provide it.
                allow_internet: crate::runtime::network::find_slirp4netns().is_some(),
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
        let mut stepped = self
            .run_in(
                &sandbox,
                record.envd_access_token.expose(),
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
                record.envd_access_token.expose(),
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
            self.kill_build_sandbox(&sandbox).await;
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
        let runtime = self.server.shared_runtime();
        let (sid, dest) = (sandbox.clone(), layer.clone());
        let captured = tokio::task::spawn_blocking(move || runtime.capture_layer(&sid, &dest))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        // The control plane's record and socket dir go too (the runtime sandbox is gone
        // already when the capture ran).
        self.kill_build_sandbox(&sandbox).await;
        if let Err(e) = captured {
            crate::cleanup::remove_dir(&layer);
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
            recipe_key: Some(key),
        })
    }

    /// The envd of build sandbox `sandbox`, while it is known.
    fn envd(&self, sandbox: &str) -> Option<EnvdEndpoint> {
        self.server
            .has_sandbox(sandbox)
            .then(|| EnvdEndpoint::new(self.server.shared_runtime(), sandbox))
    }

    /// Kills the build sandbox (the build is over); one already gone is fine.
    async fn kill_build_sandbox(&self, sandbox: &str) {
        match self.server.kill_sandbox(sandbox).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(error) => tracing::warn!(sandbox, %error, "killing a build sandbox failed"),
        }
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
            .envd(sandbox)
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
        let timeout = self.server.build_limits().ready;
        start_and_wait(&socket, token, &launch, start_cmd, ready_cmd, timeout)
            .await
            .map_err(|e| fail(e.to_string()))?;
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
        let socket = self.envd(sandbox).ok_or_else(|| Failure {
            step: "base".to_owned(),
            message: format!("build sandbox {sandbox} vanished"),
        })?;
        if recipe.from_image.is_some() {
            self.provision(&socket, token, env).await?;
            // The steps (and the template's sandboxes) run as `user` unless told, in its
            // home unless the image names a working directory (envd's own default would
            // be root's: the build sandbox started as root).
            env.user = None;
            if env.workdir.is_none() {
                env.workdir = Some(format!("/home/{}", crate::base_layer::USER));
            }
        }
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
}

/// What an image needs to be a template base, run as root in the build sandbox before
/// the steps (inside it, so nothing on the host writes through the image's paths): the
/// user `user` the steps and sandboxes run as by default, with a home, as E2B's builder
/// provisions it. Images without `useradd` get the lines written directly.
const PROVISION_SCRIPT: &str = r#"set -e
if ! grep -q '^user:' /etc/passwd 2>/dev/null; then
  shell=/bin/sh
  [ -x /bin/bash ] && shell=/bin/bash
  if command -v useradd >/dev/null 2>&1; then
    useradd --create-home --uid 1000 --user-group --shell "$shell" user 2>/dev/null \
      || useradd --create-home --user-group --shell "$shell" user
  else
    echo "user:x:1000:1000::/home/user:$shell" >> /etc/passwd
    grep -q '^user:' /etc/group 2>/dev/null || echo 'user:x:1000:' >> /etc/group
    mkdir -p /home/user
    chown 1000:1000 /home/user
  fi
fi
"#;

impl<H: BuildHost> Build<'_, H> {
    /// Runs [`PROVISION_SCRIPT`] (step `base`).
    async fn provision(
        &self,
        socket: &EnvdEndpoint,
        token: &str,
        env: &Environment,
    ) -> Result<(), Failure> {
        self.log(
            LogLevel::Info,
            "base",
            "Provisioning user `user` in the image",
        );
        let args = vec!["-c".to_owned(), PROVISION_SCRIPT.to_owned()];
        let (code, tail) = self
            .exec(
                socket,
                token,
                "base",
                "/bin/sh",
                &args,
                "root",
                Some("/"),
                &env.envs,
            )
            .await
            .map_err(|e| Failure {
                step: "base".to_owned(),
                message: format!("provisioning the image failed: {e}"),
            })?;
        if code != 0 {
            return Err(Failure {
                step: "base".to_owned(),
                message: format!(
                    "provisioning the image failed: {}",
                    output::exit_message(code, &tail)
                ),
            });
        }
        Ok(())
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
struct KillOnDrop<H: BuildHost> {
    server: H,
    id: String,
}

impl<H: BuildHost> Drop for KillOnDrop<H> {
    fn drop(&mut self) {
        if !self.server.has_sandbox(&self.id) {
            return;
        }
        let (server, id) = (self.server.clone(), std::mem::take(&mut self.id));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = server.kill_sandbox(&id).await {
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
