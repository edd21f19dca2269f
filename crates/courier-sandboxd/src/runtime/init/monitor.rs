//! The monitor's watch once the sandbox runs: the console copied (capped), the lifeline
//! watched, PID 1 (or runsc's processes) waited for.

use super::*;

/// The sandbox's console: output copied to the helper's stdout (the console log) up to a
/// cap; the rest is counted and dropped, so a sandbox cannot fill the host's disk through
/// its output. The last bytes are kept in memory for error messages.
pub(super) struct Console {
    written: u64,
    cap: u64,
    dropped: u64,
    tail: Vec<u8>,
}

impl Console {
    pub(super) fn new(cap: u64) -> Self {
        Self {
            written: 0,
            cap,
            dropped: 0,
            tail: Vec::new(),
        }
    }

    /// Copies what `pipe` has now; with `until_eof`, until every writer closed it.
    /// Returns false once the pipe is at EOF.
    pub(super) fn pump(&mut self, pipe: &OwnedFd, until_eof: bool) -> bool {
        // F_SETFL on a descriptor we own cannot fail.
        let _ = fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        let mut buf = [0u8; 16 * 1024];
        loop {
            match nix::unistd::read(pipe, &mut buf) {
                Ok(0) => return false,
                Ok(n) => self.take(&buf[..n]),
                Err(nix::errno::Errno::EAGAIN) if !until_eof => return true,
                Err(nix::errno::Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
                    // A failed poll only makes this loop read again sooner.
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 4096 {
            let cut = self.tail.len() - 4096;
            self.tail.drain(..cut);
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let keep = bytes.len().min(room);
        if keep > 0 {
            // The console is where errors would go: a failed write has no other outlet.
            let _ = std::io::stdout().write_all(&bytes[..keep]);
            self.written += keep as u64;
        }
        if keep < bytes.len() {
            if self.dropped == 0 {
                // As above: the console is the only outlet.
                let _ = writeln!(
                    std::io::stdout(),
                    "\n[courier-sandboxd: console log limit of {} bytes reached; further output is dropped]",
                    self.cap
                );
            }
            self.dropped += (bytes.len() - keep) as u64;
        }
    }

    pub(super) fn tail(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }
}

/// The monitor of a namespace sandbox: copies the console, kills PID 1 when the lifeline
/// breaks, and returns PID 1's status once it exits.
pub(super) fn watch_pid1(
    pid1: Pid,
    console_read: OwnedFd,
    lifeline: Option<OwnedFd>,
    cap: u64,
) -> i32 {
    let mut console = Console::new(cap);
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid1.as_raw()).expect("PID 1 has a pid"),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    let mut console_open = true;
    let mut lifeline = lifeline;
    loop {
        let mut fds = Vec::new();
        if let Some(fd) = &pidfd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        if console_open {
            fds.push(PollFd::new(console_read.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = &lifeline {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if pidfd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(200u16)
        };
        // A failed poll only makes this loop look again sooner.
        let _ = poll(&mut fds, timeout);
        drop(fds);
        if console_open {
            console_open = console.pump(&console_read, false);
        }
        if lifeline_broke(&mut lifeline) {
            // The runtime that asked for this sandbox to die with it is gone. Fails only
            // if PID 1 is already gone, which the wait below sees.
            let _ = kill(pid1, Signal::SIGKILL);
        }
        match waitpid(pid1, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                console.pump(&console_read, false);
                return code;
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                console.pump(&console_read, false);
                return 128 + sig as i32;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
}

/// The monitor of a gVisor sandbox: runsc's processes are its children (it is their
/// subreaper); it returns once none is left.
pub(super) fn watch_children(
    console_read: OwnedFd,
    lifeline: Option<OwnedFd>,
    mut console: Console,
    cgroup_procs: &[PathBuf],
) -> i32 {
    let mut console_open = true;
    let mut lifeline = lifeline;
    loop {
        let mut fds = Vec::new();
        if console_open {
            fds.push(PollFd::new(console_read.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = &lifeline {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        // A failed poll only makes this loop look again sooner.
        let _ = poll(&mut fds, PollTimeout::from(200u16));
        drop(fds);
        if console_open {
            console_open = console.pump(&console_read, false);
        }
        if lifeline_broke(&mut lifeline) {
            // The runtime is gone: kill every other process of the sandbox's cgroup (runsc
            // and its sandbox, gofer and stubs); this monitor exits once they are reaped.
            kill_cgroup_but_self(cgroup_procs);
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 0,
            }
        }
    }
}

/// SIGKILLs every process listed in the sandbox's `cgroup.procs` files except this one.
fn kill_cgroup_but_self(cgroup_procs: &[PathBuf]) {
    let me = std::process::id() as i32;
    for file in cgroup_procs {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if pid != me {
                // A process that already exited needs no kill.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// What the lifeline says.
#[derive(Debug, PartialEq, Eq)]
enum Lifeline {
    /// Nothing yet: the runtime lives.
    Holds,
    /// EOF: every writer, i.e. the runtime's process, is gone.
    Broken,
    /// The runtime wrote [`LIFELINE_RELEASE`]: the sandbox outlives it from now on.
    Released,
}

/// Whether the lifeline just broke (the sandbox must die now). A broken or released
/// lifeline is dropped: the monitor stops watching it.
fn lifeline_broke(lifeline: &mut Option<OwnedFd>) -> bool {
    let state = match lifeline {
        Some(fd) => lifeline_state(fd),
        None => return false,
    };
    if state != Lifeline::Holds {
        *lifeline = None;
    }
    state == Lifeline::Broken
}

fn lifeline_state(fd: &OwnedFd) -> Lifeline {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => {}
        _ => return Lifeline::Holds,
    }
    let mut byte = [0u8; 1];
    match nix::unistd::read(fd, &mut byte) {
        Ok(1) if byte[0] == LIFELINE_RELEASE => Lifeline::Released,
        Ok(0) => Lifeline::Broken,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => Lifeline::Holds,
        // Anything else on it is no message of the runtime's: treat it as gone.
        _ => Lifeline::Broken,
    }
}
