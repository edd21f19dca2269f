//! Interactive terminals: a login shell on a PTY, with input, resize and kill.

use std::{collections::HashMap, fmt, future::IntoFuture, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;

pub use super::commands::PtySize;
use super::{
    commands::{self, CommandHandle, ProcessRef, Signal},
    rpc::{CallOptions, Envd},
};
use crate::{
    Error, Result,
    proto::process::{self as pb, ProcessConfig, process_input::Input},
};

/// Terminals in a sandbox. Get one from [`Sandbox::pty`](crate::Sandbox::pty).
///
/// ```no_run
/// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
/// use courier_e2b::PtySize;
/// let terminal = sandbox.pty().create(PtySize::new(80, 24)).await?;
/// terminal.send_stdin("ls\n").await?;
/// terminal.resize(PtySize::new(120, 40)).await?;
/// terminal.kill().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PtyApi {
    pub(crate) envd: Envd,
}

impl fmt::Debug for PtyApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PtyApi")
            .field("sandbox_id", &self.envd.sandbox_id)
            .finish()
    }
}

impl PtyApi {
    /// A login shell (`/bin/bash -i -l`) on a terminal of this size, with
    /// `TERM=xterm-256color` and a UTF-8 locale. `.await` it for a [`CommandHandle`] whose
    /// events are [`CommandEvent::Pty`](crate::CommandEvent::Pty) chunks.
    pub fn create(&self, size: PtySize) -> CreatePty {
        CreatePty {
            envd: self.envd.clone(),
            size,
            user: None,
            cwd: None,
            envs: HashMap::new(),
            timeout: Duration::ZERO,
        }
    }

    /// Attaches to a running terminal process.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let terminal = sandbox.pty().connect(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, pid: u32) -> Result<CommandHandle> {
        let mut handle = commands::Commands {
            envd: self.envd.clone(),
        }
        .connect(pid)
        .await?;
        handle.set_pty();
        Ok(handle)
    }

    /// Types into a terminal.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.pty().send_input(42, "exit\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_input(&self, pid: u32, data: impl Into<Bytes>) -> Result<()> {
        commands::send_input(
            &self.envd,
            ProcessRef::Pid(pid),
            Input::Pty(data.into().to_vec()),
        )
        .await
    }

    /// Resizes a terminal.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.pty().resize(42, courier_e2b::PtySize::new(100, 30)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn resize(&self, pid: u32, size: PtySize) -> Result<()> {
        commands::resize(&self.envd, pid, size).await
    }

    /// Kills a terminal's process: `false` when it was already gone.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.pty().kill(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self, pid: u32) -> Result<bool> {
        match commands::send_signal(&self.envd, ProcessRef::Pid(pid), Signal::Kill).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A terminal being configured; `.await` starts it.
#[must_use = "a terminal does nothing until awaited"]
pub struct CreatePty {
    envd: Envd,
    size: PtySize,
    user: Option<String>,
    cwd: Option<String>,
    envs: HashMap<String, String>,
    timeout: Duration,
}

impl fmt::Debug for CreatePty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatePty")
            .field("size", &self.size)
            .field("user", &self.user)
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CreatePty {
    /// Runs the shell as this user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The shell's working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable (overriding the terminal defaults).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// The terminal's lifetime (default unlimited, [`Duration::ZERO`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl IntoFuture for CreatePty {
    type Output = Result<CommandHandle>;
    type IntoFuture = BoxFuture<'static, Result<CommandHandle>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut envs: HashMap<String, String> = [
                ("TERM", "xterm-256color"),
                ("LANG", "C.UTF-8"),
                ("LC_ALL", "C.UTF-8"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            envs.extend(self.envs);
            let request = pb::StartRequest {
                process: Some(ProcessConfig {
                    cmd: "/bin/bash".to_owned(),
                    args: vec!["-i".to_owned(), "-l".to_owned()],
                    envs,
                    cwd: self.cwd,
                }),
                pty: Some(self.size.into()),
                tag: None,
                stdin: None,
            };
            let options = CallOptions {
                user: self.user,
                timeout: Some(self.timeout),
            };
            commands::start(&self.envd, &request, &options, true, None).await
        })
    }
}
