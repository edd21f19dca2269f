//! Processes: run a command to completion, spawn one in the background, reconnect to it,
//! list, feed stdin and signal (`process.Process`).

use std::{collections::HashMap, fmt, future::IntoFuture, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};

mod handle;
mod pty_size;

pub use handle::CommandHandle;
pub(crate) use handle::{Callbacks, start};
pub use pty_size::PtySize;
pub(crate) use pty_size::resize;

use super::rpc::{CallOptions, Envd};
use crate::{
    Error, NotFoundKind, Result,
    proto::process::{
        self as pb, ProcessConfig, ProcessInput, ProcessSelector, process_input::Input,
        process_selector::Selector,
    },
};

/// The default process lifetime of [`Commands::run`] (60 s, as the official SDKs).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Which process: by pid or by the tag it was started with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
///
/// ```
/// use courier_e2b::ProcessRef;
/// assert_eq!(ProcessRef::from(42), ProcessRef::Pid(42));
/// assert_eq!(ProcessRef::from("server"), ProcessRef::Tag("server".into()));
/// ```
pub enum ProcessRef {
    /// The process id.
    Pid(u32),
    /// The tag given at start.
    Tag(String),
}

impl From<u32> for ProcessRef {
    fn from(pid: u32) -> ProcessRef {
        ProcessRef::Pid(pid)
    }
}

impl From<&str> for ProcessRef {
    fn from(tag: &str) -> ProcessRef {
        ProcessRef::Tag(tag.to_owned())
    }
}

impl From<String> for ProcessRef {
    fn from(tag: String) -> ProcessRef {
        ProcessRef::Tag(tag)
    }
}

pub(crate) fn selector(process: impl Into<ProcessRef>) -> ProcessSelector {
    let selector = match process.into() {
        ProcessRef::Pid(pid) => Selector::Pid(pid),
        ProcessRef::Tag(tag) => Selector::Tag(tag),
    };
    ProcessSelector {
        selector: Some(selector),
    }
}

/// A signal [`Commands::send_signal`] can deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGTERM (15).
    Term,
    /// SIGKILL (9).
    Kill,
}

impl From<Signal> for pb::Signal {
    fn from(signal: Signal) -> pb::Signal {
        match signal {
            Signal::Term => pb::Signal::Sigterm,
            Signal::Kill => pb::Signal::Sigkill,
        }
    }
}

/// One thing a running command did.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// ```no_run
/// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
/// use futures::StreamExt;
/// use courier_e2b::CommandEvent;
/// let mut handle = sandbox.commands().spawn("ls").await?;
/// while let Some(event) = handle.next().await {
///     match event? {
///         CommandEvent::Stdout(b) | CommandEvent::Pty(b) => print!("{}", String::from_utf8_lossy(&b)),
///         CommandEvent::Stderr(b) => eprint!("{}", String::from_utf8_lossy(&b)),
///         CommandEvent::Exit(exit) => println!("exit {}", exit.exit_code),
///     }
/// }
/// # Ok(()) }
/// ```
pub enum CommandEvent {
    /// Bytes written to stdout.
    Stdout(Bytes),
    /// Bytes written to stderr.
    Stderr(Bytes),
    /// Bytes written to the terminal (PTY processes).
    Pty(Bytes),
    /// The process ended; always the last event.
    Exit(ExitStatus),
}

/// How a process ended (Go's `ProcessState` as envd reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code; -1 when killed by a signal.
    pub exit_code: i32,
    /// Whether it exited (rather than being killed by a signal).
    pub exited: bool,
    /// `exit status 3`, `signal: killed`.
    pub status: String,
    /// envd's error text, present when the exit was not clean.
    pub error: Option<String>,
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Everything written to stdout (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// The exit code (0 here unless from [`CommandHandle::wait_output`]).
    pub exit_code: i32,
    /// envd's error text, if any.
    pub error: Option<String>,
}

/// A process as [`Commands::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id.
    pub pid: u32,
    /// The tag given at start.
    pub tag: Option<String>,
    /// The executable.
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables it was started with.
    pub envs: HashMap<String, String>,
    /// Its working directory, if given.
    pub cwd: Option<String>,
}

type OutputCallback = Box<dyn FnMut(&str) + Send>;

/// Runs and manages processes in a sandbox. Get one from
/// [`Sandbox::commands`](crate::Sandbox::commands).
///
/// ```no_run
/// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
/// let output = sandbox.commands().run("echo hi").await?;
/// assert_eq!(output.stdout, "hi\n");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Commands {
    pub(crate) envd: Envd,
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commands")
            .field("sandbox_id", &self.envd.sandbox_id)
            .finish()
    }
}

impl Commands {
    /// A command run through `bash -l -c`. `.await` it to run to completion, or call
    /// [`RunCommand::spawn`] for a background handle.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use std::time::Duration;
    /// let output = sandbox
    ///     .commands()
    ///     .run("cargo test")
    ///     .cwd("/home/user/project")
    ///     .env("RUST_LOG", "debug")
    ///     .timeout(Duration::from_secs(600))
    ///     .on_stdout(|chunk| print!("{chunk}"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn run(&self, cmd: impl Into<String>) -> RunCommand {
        RunCommand {
            envd: self.envd.clone(),
            cmd: cmd.into(),
            cwd: None,
            envs: HashMap::new(),
            user: None,
            timeout: DEFAULT_COMMAND_TIMEOUT,
            tag: None,
            stdin: false,
            on_stdout: None,
            on_stderr: None,
        }
    }

    /// Starts a command in the background with the default options; same as
    /// `run(cmd).spawn()`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().spawn("sleep 5").await?;
    /// handle.kill().await?;
    /// # Ok(()) }
    /// ```
    pub async fn spawn(&self, cmd: impl Into<String>) -> Result<CommandHandle> {
        self.run(cmd).spawn().await
    }

    /// Attaches to a running process by pid or tag; output produced while detached is lost.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().connect(42).await?;
    /// let output = handle.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, process: impl Into<ProcessRef>) -> Result<CommandHandle> {
        let request = pb::ConnectRequest {
            process: Some(selector(process)),
        };
        let stream = self
            .envd
            .server_stream::<_, pb::ConnectResponse>(
                "/process.Process/Connect",
                &request,
                &CallOptions::default(),
                NotFoundKind::Process,
            )
            .await?;
        let events = stream
            .map(|r| r.and_then(|m| m.event.ok_or_else(missing_event)))
            .boxed();
        CommandHandle::start(self.envd.clone(), events, false, None).await
    }

    /// The running processes.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// for process in sandbox.commands().list().await? {
    ///     println!("{} {} {:?}", process.pid, process.cmd, process.args);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<ProcessInfo>> {
        let response: pb::ListResponse = self
            .envd
            .unary(
                "/process.Process/List",
                &pb::ListRequest {},
                &CallOptions::default(),
                NotFoundKind::Process,
            )
            .await?;
        Ok(response
            .processes
            .into_iter()
            .map(|p| {
                let config = p.config.unwrap_or_default();
                ProcessInfo {
                    pid: p.pid,
                    tag: p.tag,
                    cmd: config.cmd,
                    args: config.args,
                    envs: config.envs,
                    cwd: config.cwd,
                }
            })
            .collect())
    }

    /// Writes to a process's stdin (it must have been started with
    /// [`RunCommand::stdin`]).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.commands().send_stdin(42, "hello\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_stdin(
        &self,
        process: impl Into<ProcessRef>,
        data: impl Into<Bytes>,
    ) -> Result<()> {
        send_input(
            &self.envd,
            process.into(),
            Input::Stdin(data.into().to_vec()),
        )
        .await
    }

    /// Streams `input` to a process's stdin over one `process.Process/StreamInput` call
    /// (it must have been started with [`RunCommand::stdin`]): each chunk is written as
    /// it comes, in order, and the call returns once `input` ends and envd has taken
    /// every chunk. Stdin stays open; close it with [`Commands::close_stdin`].
    ///
    /// Cheaper than one [`Commands::send_stdin`] call per chunk for a steady flow
    /// (e.g. piping a file or a terminal session into a command).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().run("wc -l").stdin(true).spawn().await?;
    /// let lines = futures::stream::iter([bytes::Bytes::from("one\n"), bytes::Bytes::from("two\n")]);
    /// sandbox.commands().stream_input(handle.pid(), lines).await?;
    /// sandbox.commands().close_stdin(handle.pid()).await?;
    /// assert_eq!(handle.wait().await?.stdout.trim(), "2");
    /// # Ok(()) }
    /// ```
    pub async fn stream_input<S>(&self, process: impl Into<ProcessRef>, input: S) -> Result<()>
    where
        S: futures::Stream<Item = Bytes> + Send + 'static,
    {
        use pb::stream_input_request::{DataEvent, Event, StartEvent};
        let start = pb::StreamInputRequest {
            event: Some(Event::Start(StartEvent {
                process: Some(selector(process)),
            })),
        };
        let data = input.map(|chunk| pb::StreamInputRequest {
            event: Some(Event::Data(DataEvent {
                input: Some(ProcessInput {
                    input: Some(Input::Stdin(chunk.to_vec())),
                }),
            })),
        });
        let messages = futures::stream::iter([start]).chain(data);
        let options = CallOptions {
            user: None,
            timeout: Some(Duration::ZERO),
        };
        let _: pb::StreamInputResponse = self
            .envd
            .client_stream(
                "/process.Process/StreamInput",
                messages,
                &options,
                NotFoundKind::Process,
            )
            .await?;
        Ok(())
    }

    /// Closes a process's stdin (EOF), envd ≥ 0.5.2.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.commands().close_stdin(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_stdin(&self, process: impl Into<ProcessRef>) -> Result<()> {
        let request = pb::CloseStdinRequest {
            process: Some(selector(process)),
        };
        let _: pb::CloseStdinResponse = self
            .envd
            .unary(
                "/process.Process/CloseStdin",
                &request,
                &CallOptions::default(),
                NotFoundKind::Process,
            )
            .await?;
        Ok(())
    }

    /// Sends a signal to a process.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::Signal;
    /// sandbox.commands().send_signal(42, Signal::Term).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_signal(&self, process: impl Into<ProcessRef>, signal: Signal) -> Result<()> {
        send_signal(&self.envd, process.into(), signal).await
    }

    /// Kills a process with SIGKILL: `false` when it did not exist.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let killed = sandbox.commands().kill(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self, process: impl Into<ProcessRef>) -> Result<bool> {
        match send_signal(&self.envd, process.into(), Signal::Kill).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

pub(crate) async fn send_input(envd: &Envd, process: ProcessRef, input: Input) -> Result<()> {
    let request = pb::SendInputRequest {
        process: Some(selector(process)),
        input: Some(ProcessInput { input: Some(input) }),
    };
    let _: pb::SendInputResponse = envd
        .unary(
            "/process.Process/SendInput",
            &request,
            &CallOptions::default(),
            NotFoundKind::Process,
        )
        .await?;
    Ok(())
}

pub(crate) async fn send_signal(envd: &Envd, process: ProcessRef, signal: Signal) -> Result<()> {
    let request = pb::SendSignalRequest {
        process: Some(selector(process)),
        signal: pb::Signal::from(signal) as i32,
    };
    let _: pb::SendSignalResponse = envd
        .unary(
            "/process.Process/SendSignal",
            &request,
            &CallOptions::default(),
            NotFoundKind::Process,
        )
        .await?;
    Ok(())
}

fn missing_event() -> Error {
    Error::protocol("process stream message without an event")
}

/// A command being configured; `.await` runs it to completion, [`RunCommand::spawn`]
/// starts it in the background.
///
/// Awaiting fails with [`Error::CommandExited`] when the exit code is not 0.
#[must_use = "a command does nothing until awaited or spawned"]
pub struct RunCommand {
    envd: Envd,
    cmd: String,
    cwd: Option<String>,
    envs: HashMap<String, String>,
    user: Option<String>,
    timeout: Duration,
    tag: Option<String>,
    stdin: bool,
    on_stdout: Option<OutputCallback>,
    on_stderr: Option<OutputCallback>,
}

impl fmt::Debug for RunCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunCommand")
            .field("cmd", &self.cmd)
            .field("cwd", &self.cwd)
            .field("envs", &self.envs.keys().collect::<Vec<_>>())
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl RunCommand {
    /// The working directory (relative paths resolve against the user's home).
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable for this process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Adds environment variables for this process.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        envs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.envs
            .extend(envs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs as this Unix user (default: the sandbox's default user).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The process lifetime (`Connect-Timeout-Ms`; default 60 s): envd kills the process
    /// when it expires, and the client stops waiting. [`Duration::ZERO`] = unlimited.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Tags the process so [`Commands::connect`] can find it by name.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Keeps stdin open for [`CommandHandle::send_stdin`] (default: `/dev/null`).
    pub fn stdin(mut self, open: bool) -> Self {
        self.stdin = open;
        self
    }

    /// Called with each stdout chunk (decoded as UTF-8 incrementally).
    pub fn on_stdout(mut self, callback: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(callback));
        self
    }

    /// Called with each stderr chunk.
    pub fn on_stderr(mut self, callback: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(callback));
        self
    }

    /// Starts the process and returns once envd reports its pid.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use futures::StreamExt;
    /// use courier_e2b::CommandEvent;
    /// let mut handle = sandbox.commands().run("for i in 1 2 3; do echo $i; done").spawn().await?;
    /// while let Some(event) = handle.next().await {
    ///     if let CommandEvent::Stdout(bytes) = event? {
    ///         print!("{}", String::from_utf8_lossy(&bytes));
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn spawn(self) -> Result<CommandHandle> {
        let request = pb::StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/bash".to_owned(),
                args: vec!["-l".to_owned(), "-c".to_owned(), self.cmd],
                envs: self.envs,
                cwd: self.cwd,
            }),
            pty: None,
            tag: self.tag,
            stdin: Some(self.stdin),
        };
        let options = CallOptions {
            user: self.user,
            timeout: Some(self.timeout),
        };
        let callbacks = Callbacks {
            on_stdout: self.on_stdout,
            on_stderr: self.on_stderr,
        };
        start(&self.envd, &request, &options, false, Some(callbacks)).await
    }
}

impl IntoFuture for RunCommand {
    type Output = Result<CommandOutput>;
    type IntoFuture = BoxFuture<'static, Result<CommandOutput>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.spawn().await?.wait().await })
    }
}
