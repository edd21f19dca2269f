//! [`SandboxApi`]: the slice of the SDK an orchestrator needs, as a mockable trait.

use std::{collections::HashMap, fmt, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};

use crate::{
    BuildRequest, BuildRequested, BuildStatus, Client, CommandEvent, CommandOutput, Error, Recipe,
    Result, Sandbox, SandboxQuery, TemplateInfo,
    envd::DEFAULT_COMMAND_TIMEOUT,
    models::{ListedSandbox, NewSandbox, SandboxRecord},
};

/// A command for [`SandboxApi::run`] and [`SandboxApi::spawn`]: run through `bash -l -c`.
///
/// ```
/// use std::time::Duration;
/// let spec = courier_e2b::CommandSpec::new("make test").cwd("/home/user/project").env("CI", "1").timeout(Duration::ZERO);
/// assert_eq!(spec.cmd, "make test");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The shell command line.
    pub cmd: String,
    /// Working directory.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub envs: HashMap<String, String>,
    /// Unix user.
    pub user: Option<String>,
    /// Process lifetime; [`Duration::ZERO`] = unlimited (default 60 s).
    pub timeout: Duration,
    /// Tag for reconnecting by name.
    pub tag: Option<String>,
    /// Keep stdin open.
    pub stdin: bool,
}

impl CommandSpec {
    /// A command with the defaults.
    pub fn new(cmd: impl Into<String>) -> CommandSpec {
        CommandSpec {
            cmd: cmd.into(),
            cwd: None,
            envs: HashMap::new(),
            user: None,
            timeout: DEFAULT_COMMAND_TIMEOUT,
            tag: None,
            stdin: false,
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Sets the Unix user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the process lifetime.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Keeps stdin open.
    pub fn stdin(mut self, open: bool) -> Self {
        self.stdin = open;
        self
    }
}

/// A background process: its pid and its events, ending with
/// [`CommandEvent::Exit`].
pub struct SpawnedCommand {
    /// The process id.
    pub pid: u32,
    /// Output and exit events.
    pub events: BoxStream<'static, Result<CommandEvent>>,
}

impl fmt::Debug for SpawnedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnedCommand")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// What an orchestrator needs from a sandbox provider, object-safe and mockable
/// (`MockSandboxApi` with the `mocks` feature). [`Client`] implements it.
///
/// Sandboxes are passed as the [`SandboxRecord`] that create/connect returned, so no extra
/// call is needed to reach envd.
///
/// ```no_run
/// # async fn demo() -> courier_e2b::Result<()> {
/// use std::sync::Arc;
/// use courier_e2b::{Client, CommandSpec, SandboxApi, models::NewSandbox};
///
/// let api: Arc<dyn SandboxApi> = Arc::new(Client::from_env()?);
/// let sandbox = api.create(NewSandbox { template_id: "base".into(), ..Default::default() }).await?;
/// let output = api.run(&sandbox, CommandSpec::new("echo hi")).await?;
/// assert_eq!(output.exit_code, 0);
/// api.kill(&sandbox.sandbox_id).await?;
/// # Ok(()) }
/// ```
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SandboxApi: Send + Sync {
    /// Creates a sandbox.
    async fn create(&self, request: NewSandbox) -> Result<SandboxRecord>;
    /// Connects to (resumes) a sandbox, extending its life to at least `timeout`.
    async fn connect(&self, sandbox_id: &str, timeout: Option<Duration>) -> Result<SandboxRecord>;
    /// Kills a sandbox: `false` when it did not exist.
    async fn kill(&self, sandbox_id: &str) -> Result<bool>;
    /// Sets a sandbox to end `timeout` from now.
    async fn set_timeout(&self, sandbox_id: &str, timeout: Duration) -> Result<()>;
    /// Pauses a sandbox: `false` when already paused.
    async fn pause(&self, sandbox_id: &str) -> Result<bool>;
    /// Runs a command to completion and returns its output whatever the exit code.
    async fn run(&self, sandbox: &SandboxRecord, command: CommandSpec) -> Result<CommandOutput>;
    /// Starts a command in the background.
    async fn spawn(&self, sandbox: &SandboxRecord, command: CommandSpec) -> Result<SpawnedCommand>;
    /// Writes to a process's stdin.
    async fn send_stdin(&self, sandbox: &SandboxRecord, pid: u32, data: Bytes) -> Result<()>;
    /// Kills a process: `false` when it did not exist.
    async fn kill_process(&self, sandbox: &SandboxRecord, pid: u32) -> Result<bool>;
    /// Writes a file, creating parent directories.
    async fn write_file(&self, sandbox: &SandboxRecord, path: &str, data: Bytes) -> Result<()>;
    /// Reads a whole file.
    async fn read_file(&self, sandbox: &SandboxRecord, path: &str) -> Result<Bytes>;
    /// Every sandbox of the account, running or paused (all pages). Used to reconcile a
    /// caller's records with the provider (e.g. to find orphans by their metadata).
    ///
    /// The default answers [`Error::InvalidArgument`]: a provider that cannot list.
    async fn list(&self) -> Result<Vec<ListedSandbox>> {
        Err(Error::InvalidArgument {
            message: "this sandbox provider cannot list sandboxes".to_owned(),
        })
    }
    /// Requests a build of template `name` and starts it with `recipe`; the build runs in
    /// the background (follow it with [`SandboxApi::template_build_status`]).
    ///
    /// The default answers [`Error::InvalidArgument`]: a provider that cannot build.
    async fn build_template(&self, name: &str, recipe: Recipe) -> Result<BuildRequested> {
        let _ = (name, recipe);
        Err(Error::InvalidArgument {
            message: "this sandbox provider cannot build templates".to_owned(),
        })
    }
    /// A build's status with its log entries from `logs_offset` on.
    ///
    /// The default answers [`Error::InvalidArgument`]: a provider that cannot build.
    async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        logs_offset: usize,
    ) -> Result<BuildStatus> {
        let _ = (template_id, build_id, logs_offset);
        Err(Error::InvalidArgument {
            message: "this sandbox provider cannot build templates".to_owned(),
        })
    }
    /// Every template the provider has, whatever its build status.
    ///
    /// The default answers [`Error::InvalidArgument`]: a provider that cannot list
    /// templates.
    async fn list_templates(&self) -> Result<Vec<TemplateInfo>> {
        Err(Error::InvalidArgument {
            message: "this sandbox provider cannot list templates".to_owned(),
        })
    }
}

fn command(sandbox: &Sandbox, spec: CommandSpec) -> crate::RunCommand {
    let mut run = sandbox
        .commands()
        .run(spec.cmd)
        .envs(spec.envs)
        .timeout(spec.timeout)
        .stdin(spec.stdin);
    if let Some(cwd) = spec.cwd {
        run = run.cwd(cwd);
    }
    if let Some(user) = spec.user {
        run = run.user(user);
    }
    if let Some(tag) = spec.tag {
        run = run.tag(tag);
    }
    run
}

#[async_trait]
impl SandboxApi for Client {
    async fn create(&self, request: NewSandbox) -> Result<SandboxRecord> {
        self.create_sandbox(&request).await
    }

    async fn connect(&self, sandbox_id: &str, timeout: Option<Duration>) -> Result<SandboxRecord> {
        self.connect_sandbox(sandbox_id, timeout).await
    }

    async fn kill(&self, sandbox_id: &str) -> Result<bool> {
        Client::kill(self, sandbox_id).await
    }

    async fn set_timeout(&self, sandbox_id: &str, timeout: Duration) -> Result<()> {
        Client::set_timeout(self, sandbox_id, timeout).await
    }

    async fn pause(&self, sandbox_id: &str) -> Result<bool> {
        Client::pause(self, sandbox_id).await
    }

    async fn run(&self, sandbox: &SandboxRecord, spec: CommandSpec) -> Result<CommandOutput> {
        let sandbox = Sandbox::from_record(self, sandbox.clone());
        command(&sandbox, spec).spawn().await?.wait_output().await
    }

    async fn spawn(&self, sandbox: &SandboxRecord, spec: CommandSpec) -> Result<SpawnedCommand> {
        let sandbox = Sandbox::from_record(self, sandbox.clone());
        let handle = command(&sandbox, spec).spawn().await?;
        Ok(SpawnedCommand {
            pid: handle.pid(),
            events: handle.boxed(),
        })
    }

    async fn send_stdin(&self, sandbox: &SandboxRecord, pid: u32, data: Bytes) -> Result<()> {
        Sandbox::from_record(self, sandbox.clone())
            .commands()
            .send_stdin(pid, data)
            .await
    }

    async fn kill_process(&self, sandbox: &SandboxRecord, pid: u32) -> Result<bool> {
        Sandbox::from_record(self, sandbox.clone())
            .commands()
            .kill(pid)
            .await
    }

    async fn write_file(&self, sandbox: &SandboxRecord, path: &str, data: Bytes) -> Result<()> {
        Sandbox::from_record(self, sandbox.clone())
            .files()
            .write(path, data)
            .await
            .map(drop)
    }

    async fn read_file(&self, sandbox: &SandboxRecord, path: &str) -> Result<Bytes> {
        Sandbox::from_record(self, sandbox.clone())
            .files()
            .read(path)
            .await
    }

    async fn list(&self) -> Result<Vec<ListedSandbox>> {
        use futures::TryStreamExt as _;
        Client::list(self, SandboxQuery::new()).try_collect().await
    }

    async fn build_template(&self, name: &str, recipe: Recipe) -> Result<BuildRequested> {
        let templates = self.templates();
        let build = templates.request_build(&BuildRequest::new(name)).await?;
        templates
            .start_build(&build.template_id, &build.build_id, &recipe)
            .await?;
        Ok(build)
    }

    async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        logs_offset: usize,
    ) -> Result<BuildStatus> {
        self.templates()
            .build_status(template_id, build_id, logs_offset)
            .await
    }

    async fn list_templates(&self) -> Result<Vec<TemplateInfo>> {
        self.templates().list().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_mock_stands_in_for_the_real_client() {
        let mut mock = MockSandboxApi::new();
        mock.expect_kill()
            .withf(|id| id == "abc")
            .returning(|_| Ok(true));
        let api: Box<dyn SandboxApi> = Box::new(mock);
        assert!(api.kill("abc").await.unwrap());
    }

    #[tokio::test]
    async fn template_builds_are_mockable() {
        let mut mock = MockSandboxApi::new();
        mock.expect_template_build_status()
            .withf(|t, b, offset| t == "t1" && b == "b1" && *offset == 3)
            .returning(|t, b, _| {
                Ok(BuildStatus {
                    template_id: t.to_owned(),
                    build_id: b.to_owned(),
                    status: crate::BuildState::Ready,
                    log_entries: Vec::new(),
                    reason: None,
                })
            });
        let api: Box<dyn SandboxApi> = Box::new(mock);
        let status = api.template_build_status("t1", "b1", 3).await.unwrap();
        assert_eq!(status.status, crate::BuildState::Ready);
    }

    #[tokio::test]
    async fn list_is_mockable() {
        let mut mock = MockSandboxApi::new();
        mock.expect_list().returning(|| Ok(Vec::new()));
        let api: Box<dyn SandboxApi> = Box::new(mock);
        assert!(api.list().await.unwrap().is_empty());
    }
}
