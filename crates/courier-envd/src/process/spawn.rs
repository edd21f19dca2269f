//! Starting a process (pipes or a PTY), and the tasks that pump its output, reap it and
//! enforce its lifetime.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use bytes::BytesMut;
use courier_e2b::proto::process::ProcessConfig;
use nix::sys::signal::Signal;
use tokio::{io::AsyncReadExt as _, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{Attach, EndInfo, Output, Process, Table, login, privileges};
use crate::Error;
use crate::identity::Identity;

/// Read size for output pipes; also the largest data event.
const CHUNK: usize = 32 * 1024;

/// Everything needed to start a process.
pub(crate) struct SpawnSpec {
    pub config: ProcessConfig,
    pub tag: Option<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub identity: Option<Identity>,
    /// `(cols, rows)` for a PTY process.
    pub pty: Option<(u16, u16)>,
    pub stdin: bool,
    /// Process lifetime: SIGKILL when it expires.
    pub lifetime: Option<Duration>,
}

/// Starts a process, registers it and returns it with the first client attached (so the
/// starting client sees every byte).
pub(crate) fn spawn(table: &Arc<Table>, spec: SpawnSpec) -> Result<(Arc<Process>, Attach), Error> {
    let spawn_error = |e: std::io::Error| {
        let what = format!("error starting process '{}'", spec.config.cmd);
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                Error::InvalidArgument(format!("{what}: {e}"))
            }
            _ => Error::Internal(format!("{what}: {e}")),
        }
    };
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let (child, stdin, pty_writer, pty_reader, pipes) = if let Some((cols, rows)) = spec.pty {
        let (pty, pts) =
            pty_process::open().map_err(|e| Error::Internal(format!("opening a PTY: {e}")))?;
        pty.resize(pty_process::Size::new(rows.max(1), cols.max(1)))
            .map_err(|e| Error::Internal(format!("sizing the PTY: {e}")))?;
        if let Some(identity) = &spec.identity {
            // Tools that open the terminal by name (`tty`, `script`, `tmux`) need to own it.
            // The process still runs without it; only those tools would notice.
            if let Err(e) = std::os::unix::fs::fchown(&pts, Some(identity.uid), Some(identity.gid))
            {
                tracing::warn!(uid = identity.uid, error = %e, "could not hand the PTY to the user");
            }
        }
        let mut command = pty_process::Command::new(&spec.config.cmd)
            .args(&spec.config.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd);
        if let Some(identity) = &spec.identity {
            command = privileges::apply_pty(command, identity);
        }
        let child = command.spawn(pts).map_err(|e| match e {
            pty_process::Error::Io(io) => spawn_error(io),
            other => Error::Internal(format!(
                "error starting process '{}': {other}",
                spec.config.cmd
            )),
        })?;
        let (reader, writer) = pty.into_split();
        (child, None, Some(writer), Some(reader), None)
    } else {
        let direct = direct_plan(table, &spec);
        let started = direct.and_then(|direct| {
            let mut command = tokio::process::Command::new(&direct.program);
            command
                .arg0(&direct.argv[0])
                .args(&direct.argv[1..])
                .env_clear()
                .envs(direct.env.iter().map(|(k, v)| (k, v)));
            privileges::apply_umask(&mut command, direct.umask);
            let child = start_piped(command, &spec);
            // A failed exec (a script without `#!`, a file that is not executable after
            // all): bash has its own answer for that, so it gets the command.
            if let Err(e) = &child {
                tracing::debug!(error = %e, program = %direct.program.display(), "direct start failed; using the login shell");
            }
            child.ok()
        });
        let mut child = match started {
            Some(child) => child,
            None => {
                let mut command = tokio::process::Command::new(&spec.config.cmd);
                command
                    .args(&spec.config.args)
                    .env_clear()
                    .envs(spec.env.iter().map(|(k, v)| (k, v)));
                start_piped(command, &spec).map_err(spawn_error)?
            }
        };
        let stdin = child.stdin.take();
        let pipes = (child.stdout.take(), child.stderr.take());
        (child, stdin, None, None, Some(pipes))
    };
    let pid = child.id().unwrap_or(0);
    let process = Arc::new(Process {
        pid,
        tag: spec.tag,
        config: spec.config,
        is_pty: pty_reader.is_some(),
        fanout: Mutex::default(),
        stdin: tokio::sync::Mutex::new(stdin),
        pty: tokio::sync::Mutex::new(pty_writer),
        stopped: AtomicBool::new(false),
        stop: CancellationToken::new(),
        done: CancellationToken::new(),
    });
    let first = process.attach();
    table.insert(process.clone());

    if let Some(reader) = pty_reader {
        readers.push(tokio::spawn(pump(process.clone(), reader, Output::Pty)));
    }
    if let Some((stdout, stderr)) = pipes {
        if let Some(stdout) = stdout {
            readers.push(tokio::spawn(pump(process.clone(), stdout, Output::Stdout)));
        }
        if let Some(stderr) = stderr {
            readers.push(tokio::spawn(pump(process.clone(), stderr, Output::Stderr)));
        }
    }

    let waiter_process = process.clone();
    let waiter_table = table.clone();
    let mut child = child;
    tokio::spawn(async move {
        let status = child.wait().await;
        // Wait for the output to drain, unless a kill asked to stop forwarding.
        let join_all = futures::future::join_all(readers.iter_mut());
        tokio::select! {
            _ = join_all => {}
            () = waiter_process.stop.cancelled() => {}
        }
        for reader in &readers {
            reader.abort();
        }
        let end = match status {
            Ok(status) => EndInfo::from_status(status),
            Err(e) => EndInfo::failed(format!("waiting for the process: {e}")),
        };
        waiter_table.mark_exited(waiter_process.pid);
        waiter_process.finish(end).await;
    });

    if let Some(lifetime) = spec.lifetime {
        let process = process.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(lifetime) => {
                    // It may have ended between the timer and the signal.
                    if let Err(e) = process.signal(Signal::SIGKILL) {
                        tracing::debug!(error = %e, "killing a process at the end of its lifetime");
                    }
                }
                () = process.done.cancelled() => {}
            }
        });
    }
    Ok((process, first))
}

/// How to exec a `/bin/bash -l -c CMD` request without the login shell, when the login's
/// capture for this user, cwd and environment is valid (see [`login`]).
fn direct_plan(table: &Table, spec: &SpawnSpec) -> Option<login::Direct> {
    if spec.stdin {
        return None;
    }
    let words = login::simple_command(&spec.config)?;
    let key = login::Key::new(spec.identity.as_ref(), &spec.cwd, &spec.env);
    let login = table.logins.get(&key)?;
    login.direct(&words, &spec.cwd, spec.identity.as_ref())
}

/// Starts `command` with the spec's cwd, pipes, process group and identity.
fn start_piped(
    mut command: tokio::process::Command,
    spec: &SpawnSpec,
) -> std::io::Result<tokio::process::Child> {
    command
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: signals aimed at the daemon (a Ctrl-C) do not reach it.
        .process_group(0);
    if let Some(identity) = &spec.identity {
        privileges::apply(&mut command, identity);
    }
    command.spawn()
}

async fn pump<R>(process: Arc<Process>, mut reader: R, kind: fn(bytes::Bytes) -> Output)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut buffer = BytesMut::with_capacity(CHUNK);
    loop {
        buffer.reserve(CHUNK);
        match reader.read_buf(&mut buffer).await {
            Ok(0) => return,
            Ok(_) => process.broadcast(kind(buffer.split().freeze())).await,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A PTY master reads EIO once the last slave descriptor closed: end of output.
            Err(_) => return,
        }
    }
}
