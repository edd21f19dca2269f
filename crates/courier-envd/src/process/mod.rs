//! Running processes: the table (by pid and tag), output fan-out to attached clients,
//! signals, stdin and PTY input, and the end status in Go's `ProcessState` form.
//!
//! Output is never dropped while a client is attached: each client has a bounded channel
//! and the reader awaits room in every one of them, so a slow client slows the process
//! (its pipe fills and it blocks) instead of losing bytes. Output produced while no client
//! is attached is discarded, as envd does.

mod login;
pub(crate) mod privileges;
pub(crate) mod service;
mod spawn;

use std::{
    collections::{HashMap, VecDeque},
    os::unix::process::ExitStatusExt as _,
    process::ExitStatus,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use courier_e2b::proto::process::{
    ProcessConfig, ProcessInfo, ProcessSelector, process_selector::Selector,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{io::AsyncWriteExt as _, sync::mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::identity::Identity;
pub(crate) use spawn::{SpawnSpec, spawn};

use crate::Error;

/// Output chunks buffered per attached client before the process is slowed down.
const CLIENT_BUFFER_EVENTS: usize = 64;
/// Exited processes kept so `Connect` can replay their end.
const EXITED_KEPT: usize = 256;

/// One chunk of output.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
}

/// How a process ended, in Go `ProcessState` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndInfo {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    pub error: Option<String>,
}

impl EndInfo {
    pub fn from_status(status: ExitStatus) -> EndInfo {
        if let Some(code) = status.code() {
            let text = format!("exit status {code}");
            return EndInfo {
                exit_code: code,
                exited: true,
                error: (code != 0).then(|| text.clone()),
                status: text,
            };
        }
        let signal = status.signal().unwrap_or(0);
        let mut text = format!("signal: {}", signal_name(signal));
        if status.core_dumped() {
            text.push_str(" (core dumped)");
        }
        EndInfo {
            exit_code: -1,
            exited: false,
            error: Some(text.clone()),
            status: text,
        }
    }

    pub fn failed(message: String) -> EndInfo {
        EndInfo {
            exit_code: -1,
            exited: false,
            status: message.clone(),
            error: Some(message),
        }
    }
}

/// Go's names for signals (`syscall.Signal.String()`).
fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// What an attached client receives.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Data(Output),
    End(EndInfo),
}

/// Attaching to a process: live events, or the end of one that already exited.
pub(crate) enum Attach {
    Live(mpsc::Receiver<Event>),
    Ended(EndInfo),
}

#[derive(Default)]
struct Fanout {
    subscribers: Vec<mpsc::Sender<Event>>,
    end: Option<EndInfo>,
}

/// One started process.
pub(crate) struct Process {
    pub pid: u32,
    pub tag: Option<String>,
    pub config: ProcessConfig,
    pub is_pty: bool,
    fanout: Mutex<Fanout>,
    stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    pty: tokio::sync::Mutex<Option<pty_process::OwnedWritePty>>,
    /// Set by SIGKILL/SIGTERM: stop forwarding output at once (envd does the same).
    stopped: AtomicBool,
    stop: CancellationToken,
    /// Cancelled when the end event has been delivered.
    pub done: CancellationToken,
}

impl Process {
    /// Adds a client; after the end, returns the retained end instead.
    pub fn attach(&self) -> Attach {
        let mut fanout = self.fanout.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(end) = &fanout.end {
            return Attach::Ended(end.clone());
        }
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER_EVENTS);
        fanout.subscribers.push(tx);
        Attach::Live(rx)
    }

    fn subscribers(&self) -> Vec<mpsc::Sender<Event>> {
        self.fanout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subscribers
            .clone()
    }

    /// Delivers a chunk to every attached client, waiting for room (backpressure).
    async fn broadcast(&self, output: Output) {
        let mut gone = Vec::new();
        for subscriber in self.subscribers() {
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            if subscriber.send(Event::Data(output.clone())).await.is_err() {
                gone.push(subscriber);
            }
        }
        if !gone.is_empty() {
            let mut fanout = self.fanout.lock().unwrap_or_else(PoisonError::into_inner);
            fanout
                .subscribers
                .retain(|s| !gone.iter().any(|g| g.same_channel(s)));
        }
    }

    /// Records the end and delivers it to every attached client.
    async fn finish(&self, end: EndInfo) {
        let subscribers = {
            let mut fanout = self.fanout.lock().unwrap_or_else(PoisonError::into_inner);
            fanout.end = Some(end.clone());
            std::mem::take(&mut fanout.subscribers)
        };
        // Release the input side so the PTY and pipe descriptors close with the process.
        self.stdin.lock().await.take();
        self.pty.lock().await.take();
        for subscriber in subscribers {
            // A subscriber that has gone (its stream closed) needs no end event.
            let _ = subscriber.send(Event::End(end.clone())).await;
        }
        self.done.cancel();
    }

    /// Sends a signal to the process itself, as envd does. Not to its group: killing a
    /// login shell's helpers mid-way (e.g. a profile's `pyenv rehash`) would leave their
    /// lock files stale; orphaned helpers finish on their own.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        if self.done.is_cancelled() {
            return Err(Error::NotFound(format!(
                "process with pid {} not found",
                self.pid
            )));
        }
        if matches!(signal, Signal::SIGKILL | Signal::SIGTERM) {
            self.stopped.store(true, Ordering::Relaxed);
            self.stop.cancel();
        }
        let pid = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        kill(pid, signal)
            .map_err(|e| Error::Internal(format!("sending {signal} to process {}: {e}", self.pid)))
    }

    /// Writes to stdin (not for PTY processes).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), Error> {
        if self.is_pty {
            return Err(Error::FailedPrecondition(format!(
                "process {} has a PTY: send pty input instead of stdin",
                self.pid
            )));
        }
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(Error::FailedPrecondition(format!(
                "stdin of process {} is closed or was not enabled",
                self.pid
            )));
        };
        pipe.write_all(data)
            .await
            .map_err(|e| Error::io(format!("writing stdin of process {}", self.pid), &e))?;
        pipe.flush()
            .await
            .map_err(|e| Error::io(format!("writing stdin of process {}", self.pid), &e))
    }

    /// Writes to the PTY (only for PTY processes).
    pub async fn write_pty(&self, data: &[u8]) -> Result<(), Error> {
        let mut pty = self.pty.lock().await;
        let Some(pty) = pty.as_mut() else {
            return Err(Error::FailedPrecondition(format!(
                "process {} has no PTY",
                self.pid
            )));
        };
        pty.write_all(data)
            .await
            .map_err(|e| Error::io(format!("writing PTY of process {}", self.pid), &e))?;
        pty.flush()
            .await
            .map_err(|e| Error::io(format!("writing PTY of process {}", self.pid), &e))
    }

    /// Closes stdin so the process reads end-of-file.
    pub async fn close_stdin(&self) -> Result<(), Error> {
        if self.is_pty {
            return Err(Error::FailedPrecondition(format!(
                "process {} has a PTY; its stdin cannot be closed",
                self.pid
            )));
        }
        self.stdin.lock().await.take();
        Ok(())
    }

    /// Resizes the PTY.
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), Error> {
        let pty = self.pty.lock().await;
        let Some(pty) = pty.as_ref() else {
            return Err(Error::FailedPrecondition(format!(
                "process {} has no PTY",
                self.pid
            )));
        };
        let size = pty_process::Size::new(
            u16::try_from(rows).unwrap_or(u16::MAX),
            u16::try_from(cols).unwrap_or(u16::MAX),
        );
        pty.resize(size)
            .map_err(|e| Error::Internal(format!("resizing PTY of process {}: {e}", self.pid)))
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: Some(self.config.clone()),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }
}

#[derive(Default)]
struct TableInner {
    running: HashMap<u32, Arc<Process>>,
    exited: VecDeque<Arc<Process>>,
}

/// All processes started by this daemon.
#[derive(Default)]
pub(crate) struct Table {
    inner: Mutex<TableInner>,
    /// Login shells' results, for `/bin/bash -l -c` commands that need no shell.
    logins: Arc<login::LoginCache>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, process: Arc<Process>) {
        self.lock().running.insert(process.pid, process);
    }

    fn mark_exited(&self, pid: u32) {
        let mut inner = self.lock();
        if let Some(process) = inner.running.remove(&pid) {
            inner.exited.push_back(process);
            if inner.exited.len() > EXITED_KEPT {
                inner.exited.pop_front();
            }
        }
    }

    /// The process a selector names: running ones first, then recently exited ones.
    pub fn find(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Process>, Error> {
        let inner = self.lock();
        match selector.and_then(|s| s.selector.as_ref()) {
            Some(Selector::Pid(pid)) => inner
                .running
                .get(pid)
                .or_else(|| inner.exited.iter().rev().find(|p| p.pid == *pid))
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("process with pid {pid} not found"))),
            Some(Selector::Tag(tag)) => inner
                .running
                .values()
                .find(|p| p.tag.as_deref() == Some(tag))
                .or_else(|| {
                    inner
                        .exited
                        .iter()
                        .rev()
                        .find(|p| p.tag.as_deref() == Some(tag))
                })
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("process with tag {tag} not found"))),
            None => Err(Error::InvalidArgument(
                "a process selector (pid or tag) is required".to_owned(),
            )),
        }
    }

    /// Like [`Table::find`] but only running processes.
    pub fn find_running(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Process>, Error> {
        let process = self.find(selector)?;
        if process.done.is_cancelled() || !self.lock().running.contains_key(&process.pid) {
            return Err(Error::NotFound(format!(
                "process with pid {} not found",
                process.pid
            )));
        }
        Ok(process)
    }

    /// The running processes, ordered by pid.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<ProcessInfo> = self.lock().running.values().map(|p| p.info()).collect();
        list.sort_by_key(|p| p.pid);
        list
    }
}
