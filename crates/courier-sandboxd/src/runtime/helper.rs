//! The helper processes the runtime hands its tasks to, started ahead of time, and the
//! status they report back.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::init::{HELPER_MARKER, HelperTask, STATUS_FD};
use super::{BACKGROUND_START_DELAY, Runtime, handover, sys};
use crate::error::{Error, Result};

impl Runtime {
    /// Hands `task` to a helper (the one started ahead of time when it waits, else a new
    /// one), with its console on stdout and stderr and `extra` descriptors at their
    /// numbers; returns the helper and its status pipe. Starts the next helper behind.
    pub(super) fn spawn_helper(
        &self,
        console: &Path,
        task: &HelperTask,
        extra: Vec<(OwnedFd, i32)>,
    ) -> Result<(Child, StatusReader)> {
        let json = serde_json::to_vec(task).map_err(|e| Error::State {
            path: console.to_path_buf(),
            reason: format!("encode helper task: {e}"),
        })?;
        let console_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(console)
            .map_err(Error::io("create", console))?;
        let console2 = console_file
            .try_clone()
            .map_err(Error::io("dup", console))?;
        let waiting = self.helpers.take();
        let helper = match waiting {
            Some(helper) => helper,
            None => {
                tracing::debug!("no helper waiting: starting one for this task");
                WaitingHelper::start(&self.config.helper)?
            }
        };
        self.helpers.start_next(&self.config.helper);
        let mut fds = vec![
            (OwnedFd::from(console_file), 1),
            (OwnedFd::from(console2), 2),
        ];
        fds.extend(extra);
        let WaitingHelper {
            mut child,
            channel,
            status,
        } = helper;
        if let Err(e) = handover::send_task(channel, &json, &fds) {
            sys::kill_and_reap(&mut child, "a helper that did not take its task");
            return Err(Error::sys("hand the task to the helper")(e));
        }
        Ok((child, StatusReader::new(status)))
    }

    /// Runs a helper task that needs no sandbox (a capture) and returns its report.
    pub(super) fn run_helper_task(&self, task: impl Into<HelperTask>) -> Result<String> {
        let scratch = self.config.data_dir.join("helper.log");
        let (mut child, mut status) = self.spawn_helper(&scratch, &task.into(), Vec::new())?;
        let mut report = String::new();
        let read = status.read_to_end(Instant::now() + Duration::from_secs(3600), &mut report);
        if let Err(error) = child.wait() {
            tracing::warn!(%error, "reaping a helper");
        }
        read.map_err(Error::sys("read the helper's report"))?;
        Ok(report)
    }

    pub(super) fn helper_failure(&self, report: &str, console: &Path) -> String {
        let console = fs::read_to_string(console).unwrap_or_default();
        let console = console.trim();
        let tail = &console[console.len().saturating_sub(2000)..];
        format!(
            "helper {} ended without reporting (is `main_if_requested` called first in its main?): {report:?} {tail}",
            self.config.helper.display()
        )
    }
}

/// A helper process started ahead of its task: it waits on `channel` (its stdin) for the
/// task and descriptors (see [`handover`]), holding nothing of any sandbox.
struct WaitingHelper {
    child: Child,
    channel: std::os::unix::net::UnixStream,
    /// The read end of its status pipe.
    status: OwnedFd,
}

impl WaitingHelper {
    fn start(program: &Path) -> Result<Self> {
        let (channel, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::sys("helper task channel")(e))?;
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys("status pipe")(e.into()))?;
        let mut cmd = Command::new(program);
        cmd.arg(HELPER_MARKER)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_clear()
            .current_dir("/");
        sys::pass_fds(&mut cmd, vec![(status_write, STATUS_FD)]);
        let child = cmd
            .spawn()
            .map_err(Error::sys(format!("spawn helper {}", program.display())))?;
        Ok(Self {
            child,
            channel,
            status: status_read,
        })
    }

    /// Ends a helper that never got a task: its channel closes and it exits.
    fn dismiss(self) {
        let Self {
            mut child, channel, ..
        } = self;
        drop(channel);
        if let Err(error) = child.wait() {
            tracing::debug!(%error, "reaping a dismissed helper");
        }
    }
}

/// Helpers kept waiting: two, so that creates arriving back to back (faster than one
/// helper is started after the create before it) still find one.
const WAITING_HELPERS: usize = 2;

/// Where the next [`WaitingHelper`]s wait.
#[derive(Default)]
pub(super) struct HelperSlot {
    waiting: Mutex<std::collections::VecDeque<WaitingHelper>>,
    starting: std::sync::atomic::AtomicBool,
}

impl HelperSlot {
    /// A waiting helper that is still alive, if there is one.
    fn take(&self) -> Option<WaitingHelper> {
        loop {
            let mut helper = crate::lock::lock(&self.waiting).pop_front()?;
            match helper.child.try_wait() {
                Ok(None) => return Some(helper),
                _ => helper.dismiss(),
            }
        }
    }

    /// Tops the waiting helpers up on a thread of its own, unless that is under way.
    fn start_next(self: &Arc<Self>, program: &Path) {
        use std::sync::atomic::Ordering;
        if self.starting.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = Arc::downgrade(self);
        let program = program.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("courier-helper-start".into())
            .spawn(move || {
                std::thread::sleep(BACKGROUND_START_DELAY);
                loop {
                    let Some(strong) = slot.upgrade() else {
                        return;
                    };
                    if crate::lock::lock(&strong.waiting).len() >= WAITING_HELPERS {
                        strong.starting.store(false, Ordering::Release);
                        return;
                    }
                    // Not holding the slot while the helper starts: the runtime may end
                    // meanwhile, and its end must not wait for this thread.
                    drop(strong);
                    let started = WaitingHelper::start(&program);
                    let Some(strong) = slot.upgrade() else {
                        if let Ok(helper) = started {
                            helper.dismiss();
                        }
                        return;
                    };
                    match started {
                        Ok(helper) => strong
                            .waiting
                            .lock()
                            .expect("helper slot lock")
                            .push_back(helper),
                        Err(error) => {
                            tracing::debug!(%error, "starting the next helper");
                            strong.starting.store(false, Ordering::Release);
                            return;
                        }
                    }
                }
            });
        if spawned.is_err() {
            self.starting.store(false, Ordering::Release);
        }
    }
}

impl Drop for HelperSlot {
    fn drop(&mut self) {
        if let Ok(waiting) = self.waiting.get_mut() {
            for helper in waiting.drain(..) {
                helper.dismiss();
            }
        }
    }
}

/// Reads the helper's status pipe line by line, with deadlines (a helper stuck in the
/// kernel must not hang `create` forever).
pub(super) struct StatusReader {
    file: File,
    buf: Vec<u8>,
    eof: bool,
}

impl StatusReader {
    fn new(pipe: OwnedFd) -> Self {
        Self {
            file: File::from(pipe),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Reads until a line starting with `prefix` arrives (returning the number after it)
    /// or the pipe ends (`None`). Every line read is appended to `report`.
    pub(super) fn until(
        &mut self,
        deadline: Instant,
        report: &mut String,
        prefix: &str,
    ) -> std::io::Result<Option<i32>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                report.push_str(&line);
                if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                    return Ok(rest.trim().parse().ok());
                }
                if line.starts_with("error ") {
                    return Ok(None);
                }
            }
            if self.eof || !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Reads everything up to EOF into `report`.
    pub(super) fn read_to_end(
        &mut self,
        deadline: Instant,
        report: &mut String,
    ) -> std::io::Result<()> {
        while !self.eof && self.fill(deadline)? {}
        report.push_str(&String::from_utf8_lossy(&self.buf));
        self.buf.clear();
        Ok(())
    }

    /// One read; false at EOF.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no report from the helper in time",
                ));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            let mut chunk = [0u8; 512];
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            return Ok(true);
        }
    }
}

/// The helper's `time <phase> <µs>` lines of `report`, as `phase=µs` pairs.
pub(super) fn helper_times(report: &str) -> String {
    report
        .lines()
        .filter_map(|line| line.strip_prefix("time "))
        .map(|rest| rest.replacen(' ', "=", 1))
        .collect::<Vec<_>>()
        .join(" ")
}
