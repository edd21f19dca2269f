//! A started process: [`CommandHandle`], the stream of its events and its controls.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{
    CommandEvent, CommandOutput, Commands, ExitStatus, OutputCallback, ProcessRef, Signal,
    missing_event, send_input, send_signal,
};
use crate::{
    Error, NotFoundKind, Result,
    envd::{
        rpc::{CallOptions, Envd, RpcStream},
        utf8::Utf8Decoder,
    },
    proto::process::{self as pb, ProcessEvent, process_event::Event, process_input::Input},
};

pub(crate) async fn start(
    envd: &Envd,
    request: &pb::StartRequest,
    options: &CallOptions,
    pty: bool,
    callbacks: Option<Callbacks>,
) -> Result<CommandHandle> {
    let stream = envd
        .server_stream::<_, pb::StartResponse>(
            "/process.Process/Start",
            request,
            options,
            NotFoundKind::Process,
        )
        .await?;
    let events = stream
        .map(|r| r.and_then(|m| m.event.ok_or_else(missing_event)))
        .boxed();
    CommandHandle::start(envd.clone(), events, pty, callbacks).await
}

/// The output callbacks of a [`super::RunCommand`], handed decoded text as it arrives.
pub(crate) struct Callbacks {
    pub(super) on_stdout: Option<OutputCallback>,
    pub(super) on_stderr: Option<OutputCallback>,
}

/// A started process: its pid, its events (it is a [`Stream`] of [`CommandEvent`]s), and
/// controls. Dropping the handle detaches; the process keeps running until its timeout.
///
/// ```no_run
/// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
/// let handle = sandbox.commands().run("cat").stdin(true).spawn().await?;
/// handle.send_stdin("hello\n").await?;
/// handle.close_stdin().await?;
/// let output = handle.wait().await?;
/// assert_eq!(output.stdout, "hello\n");
/// # Ok(()) }
/// ```
pub struct CommandHandle {
    pid: u32,
    envd: Envd,
    pty: bool,
    events: RpcStream<ProcessEvent>,
    callbacks: Option<Callbacks>,
    state: HandleState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandleState {
    Running,
    Exited,
    Done,
}

impl fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandle")
            .field("pid", &self.pid)
            .field("pty", &self.pty)
            .finish_non_exhaustive()
    }
}

impl CommandHandle {
    pub(super) async fn start(
        envd: Envd,
        mut events: RpcStream<ProcessEvent>,
        pty: bool,
        callbacks: Option<Callbacks>,
    ) -> Result<CommandHandle> {
        let pid = loop {
            match events.next().await {
                Some(Ok(ProcessEvent {
                    event: Some(Event::Start(start)),
                })) => break start.pid,
                Some(Ok(ProcessEvent {
                    event: Some(Event::Keepalive(_)),
                })) => {}
                Some(Ok(other)) => {
                    return Err(Error::protocol(format!(
                        "expected a start event first, got {other:?}"
                    )));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::protocol(
                        "process stream ended before the start event",
                    ));
                }
            }
        };
        Ok(CommandHandle {
            pid,
            envd,
            pty,
            events,
            callbacks,
            state: HandleState::Running,
        })
    }

    pub(crate) fn set_pty(&mut self) {
        self.pty = true;
    }

    /// The process id.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().spawn("sleep 60").await?;
    /// println!("started pid {}", handle.pid());
    /// # Ok(()) }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the end, collecting output: [`Error::CommandExited`] when the exit code is
    /// not 0.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().spawn("make").await?;
    /// match handle.wait().await {
    ///     Ok(output) => print!("{}", output.stdout),
    ///     Err(courier_e2b::Error::CommandExited { stderr, exit_code, .. }) => eprintln!("{exit_code}: {stderr}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(self) -> Result<CommandOutput> {
        let output = self.wait_output().await?;
        if output.exit_code != 0 {
            return Err(Error::CommandExited {
                stdout: output.stdout,
                stderr: output.stderr,
                exit_code: output.exit_code,
                error: output.error,
            });
        }
        Ok(output)
    }

    /// Waits for the end, collecting output, whatever the exit code.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let output = sandbox.commands().spawn("test -f /x").await?.wait_output().await?;
    /// let exists = output.exit_code == 0;
    /// # Ok(()) }
    /// ```
    pub async fn wait_output(mut self) -> Result<CommandOutput> {
        let mut callbacks = self.callbacks.take().unwrap_or(Callbacks {
            on_stdout: None,
            on_stderr: None,
        });
        let (mut out, mut err) = (Utf8Decoder::default(), Utf8Decoder::default());
        let (mut stdout, mut stderr) = (String::new(), String::new());
        while let Some(event) = self.next().await {
            match event? {
                CommandEvent::Stdout(bytes) | CommandEvent::Pty(bytes) => {
                    let text = out.decode(&bytes);
                    if let Some(callback) = &mut callbacks.on_stdout {
                        callback(&text);
                    }
                    stdout.push_str(&text);
                }
                CommandEvent::Stderr(bytes) => {
                    let text = err.decode(&bytes);
                    if let Some(callback) = &mut callbacks.on_stderr {
                        callback(&text);
                    }
                    stderr.push_str(&text);
                }
                CommandEvent::Exit(exit) => {
                    stdout.push_str(&out.finish());
                    stderr.push_str(&err.finish());
                    return Ok(CommandOutput {
                        stdout,
                        stderr,
                        exit_code: exit.exit_code,
                        error: exit.error,
                    });
                }
            }
        }
        Err(Error::protocol("command ended without an end event"))
    }

    /// Kills the process (SIGKILL): `false` when it was already gone.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().spawn("sleep 60").await?;
    /// handle.kill().await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self) -> Result<bool> {
        match send_signal(&self.envd, ProcessRef::Pid(self.pid), Signal::Kill).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes to the process's stdin (for a PTY: to the terminal).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().run("cat").stdin(true).spawn().await?;
    /// handle.send_stdin("line\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_stdin(&self, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        let data = data.to_vec();
        let input = if self.pty {
            Input::Pty(data)
        } else {
            Input::Stdin(data)
        };
        send_input(&self.envd, ProcessRef::Pid(self.pid), input).await
    }

    /// Closes stdin (EOF). Not for PTYs.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let handle = sandbox.commands().run("wc -l").stdin(true).spawn().await?;
    /// handle.send_stdin("a\nb\n").await?;
    /// handle.close_stdin().await?;
    /// assert_eq!(handle.wait().await?.stdout.trim(), "2");
    /// # Ok(()) }
    /// ```
    pub async fn close_stdin(&self) -> Result<()> {
        Commands {
            envd: self.envd.clone(),
        }
        .close_stdin(self.pid)
        .await
    }

    /// Resizes the terminal of a PTY process.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let terminal = sandbox.pty().create(courier_e2b::PtySize::new(80, 24)).await?;
    /// terminal.resize(courier_e2b::PtySize::new(132, 43)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn resize(&self, size: super::PtySize) -> Result<()> {
        super::resize(&self.envd, self.pid, size).await
    }
}

impl Stream for CommandHandle {
    type Item = Result<CommandEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.state {
                HandleState::Done => return Poll::Ready(None),
                HandleState::Exited => {
                    // Drain the trailer so a failing end-of-stream still surfaces.
                    return match self.events.as_mut().poll_next(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(Err(e))) => {
                            self.state = HandleState::Done;
                            Poll::Ready(Some(Err(e)))
                        }
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(None) => {
                            self.state = HandleState::Done;
                            Poll::Ready(None)
                        }
                    };
                }
                HandleState::Running => {}
            }
            let event = match self.events.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.state = HandleState::Done;
                    return Poll::Ready(Some(Err(Error::protocol(
                        "command ended without an end event",
                    ))));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.state = HandleState::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(event))) => event,
            };
            match event.event {
                Some(Event::Data(data)) => {
                    use pb::process_event::data_event::Output;
                    match data.output {
                        Some(Output::Stdout(bytes)) => {
                            return Poll::Ready(Some(Ok(CommandEvent::Stdout(bytes.into()))));
                        }
                        Some(Output::Stderr(bytes)) => {
                            return Poll::Ready(Some(Ok(CommandEvent::Stderr(bytes.into()))));
                        }
                        Some(Output::Pty(bytes)) => {
                            return Poll::Ready(Some(Ok(CommandEvent::Pty(bytes.into()))));
                        }
                        None => {}
                    }
                }
                Some(Event::End(end)) => {
                    self.state = HandleState::Exited;
                    return Poll::Ready(Some(Ok(CommandEvent::Exit(ExitStatus {
                        exit_code: end.exit_code,
                        exited: end.exited,
                        status: end.status,
                        error: end.error,
                    }))));
                }
                Some(Event::Keepalive(_)) | None => {}
                Some(Event::Start(_)) => {
                    self.state = HandleState::Done;
                    return Poll::Ready(Some(Err(Error::protocol(
                        "second start event in a process stream",
                    ))));
                }
            }
        }
    }
}
