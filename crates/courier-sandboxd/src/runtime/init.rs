//! The sandbox helper: the code that runs in the re-executed process and becomes the
//! sandbox (the "namespaces" side of the runtime).
//!
//! [`Runtime::create`](super::Runtime::create) starts the helper executable (by default
//! `/proc/self/exe`, i.e. the program embedding this crate) with the argument
//! [`HELPER_MARKER`], the sandbox's configuration as JSON on stdin and a status pipe as
//! descriptor 3. Any program that may serve as helper must call [`main_if_requested`]
//! first thing in `main`, before it starts a thread. This crate ships one such program,
//! the `courier-sandbox-init` binary.
//!
//! Process tree (host PIDs on the left):
//!
//! ```text
//! server ── helper "monitor"   host PID ns; joins the cgroups, setsid, unshare(mnt, uts,
//!            │                 ipc, net, pid, cgroup), reports the PID of its child, then
//!            │                 waits for it and exits with its status
//!            └─ PID 1 "reaper" new PID ns; builds the root (rootfs::enter_root), hostname,
//!                │             loopback; forks the init and reports "ready" once exec
//!                │             succeeded; then reaps orphans and forwards signals, and
//!                │             exits with the init's status (which ends the sandbox)
//!                └─ init       e.g. courier-envd: PID 2, capabilities bounded
//! ```
//!
//! Status lines on descriptor 3: `pid <host pid of PID 1>`, then `ready <pid of init in
//! the sandbox>` or `error <message>`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, setsid};

use super::rootfs::{self, RootfsPlan};
use super::{network, sys};

/// The first argument that turns a program into the sandbox helper.
pub const HELPER_MARKER: &str = "--courier-sandbox-helper";
/// Descriptor on which the helper reports progress.
pub(crate) const STATUS_FD: i32 = 3;

/// What the runtime sends the helper.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct HelperConfig {
    pub id: String,
    pub cgroup_procs: Vec<PathBuf>,
    pub rootfs: RootfsPlan,
    pub init: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// If this process was started as the sandbox helper, runs it and never returns;
/// otherwise returns at once.
///
/// Call it first thing in `main` of any program used as helper (the server binary when
/// it relies on the default `/proc/self/exe`), before any thread is started: the helper
/// forks, which is only sound in a single-threaded process.
pub fn main_if_requested() {
    if std::env::args_os().nth(1) != Some(OsString::from(HELPER_MARKER)) {
        return;
    }
    // Without the status pipe there is nobody to report to: exit with a distinctive code.
    let Some(status) = sys::take_status_fd(STATUS_FD) else {
        std::process::exit(125);
    };
    std::process::exit(run_helper(File::from(status)));
}

/// The monitor: everything before the PID namespace's first process exists.
fn run_helper(mut status: File) -> i32 {
    // The init must not inherit the status pipe: its closing signals a finished setup.
    let _ = fcntl(&status, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let cfg = match prepare() {
        Ok(cfg) => cfg,
        Err(message) => {
            report(&mut status, &format!("error {message}"));
            return 1;
        }
    };
    match sys::fork_helper() {
        Err(e) => {
            report(&mut status, &format!("error fork PID 1: {e}"));
            1
        }
        Ok(ForkResult::Child) => std::process::exit(reaper(&cfg, status)),
        Ok(ForkResult::Parent { child }) => {
            report(&mut status, &format!("pid {child}"));
            drop(status);
            wait_exit_code(child)
        }
    }
}

/// Reads the configuration, joins the cgroups and unshares the namespaces.
fn prepare() -> Result<HelperConfig, String> {
    // Detach from the server's session: a Ctrl-C aimed at the server must not reach
    // sandboxes, which outlive a server restart.
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| format!("read config: {e}"))?;
    let cfg: HelperConfig =
        serde_json::from_slice(&raw).map_err(|e| format!("parse config: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
    // Joining before unsharing puts every later process in the cgroups (no escape
    // window) and makes them the root of the new cgroup namespace.
    for procs in &cfg.cgroup_procs {
        fs::write(procs, "0").map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| format!("unshare namespaces: {e}"))?;
    Ok(cfg)
}

/// PID 1 of the sandbox: sets the sandbox up, starts the init, then reaps and forwards.
fn reaper(cfg: &HelperConfig, mut status: File) -> i32 {
    if let Err(message) = setup(cfg) {
        report(&mut status, &format!("error {message}"));
        return 1;
    }
    // Signals are taken with sigwait below; block them before the init exists so none
    // is lost. The init unblocks them before exec.
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None);
    let (err_read, err_write) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => {
            report(&mut status, &format!("error exec-status pipe: {e}"));
            return 1;
        }
    };
    match sys::fork_helper() {
        Err(e) => {
            report(&mut status, &format!("error fork init: {e}"));
            1
        }
        Ok(ForkResult::Child) => {
            drop(err_read);
            drop(status);
            let message = exec_init(cfg);
            let _ = File::from(err_write).write_all(message.as_bytes());
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(err_write);
            let mut message = String::new();
            let _ = File::from(err_read).read_to_string(&mut message);
            if !message.is_empty() {
                report(&mut status, &format!("error {message}"));
                return 1;
            }
            report(&mut status, &format!("ready {child}"));
            drop(status);
            reap_until_exit(child)
        }
    }
}

fn setup(cfg: &HelperConfig) -> Result<(), String> {
    umask(Mode::from_bits_truncate(0o022));
    rootfs::enter_root(&cfg.rootfs)?;
    nix::unistd::sethostname(&cfg.rootfs.hostname).map_err(|e| format!("sethostname: {e}"))?;
    network::configure_isolated()
}

/// Replaces the forked child with the init program; returns only on failure.
fn exec_init(cfg: &HelperConfig) -> String {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = setsid();
    if let Err(e) = sys::drop_capabilities() {
        return format!("drop capabilities: {e}");
    }
    let err = Command::new(&cfg.init)
        .args(&cfg.args)
        .env_clear()
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cfg.cwd)
        .exec();
    format!("exec {}: {err}", cfg.init.display())
}

/// PID 1's loop: reap every child (orphans are re-parented to us), forward termination
/// and user signals to the init, and exit with the init's status; the kernel then kills
/// whatever is left in the namespace.
fn reap_until_exit(init: Pid) -> i32 {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(sig);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == init => return code,
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                        return 128 + sig as i32;
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            },
            Ok(sig) => {
                let _ = kill(init, sig);
            }
        }
    }
}

/// Writes one status line with a single `write` (atomic for a pipe, below `PIPE_BUF`):
/// the monitor and PID 1 report concurrently, and `writeln!` on a `File` would
/// interleave their pieces.
fn report(status: &mut File, line: &str) {
    let mut line = line.replace('\n', " ");
    let mut end = line.len().min(4000);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push('\n');
    let _ = status.write_all(line.as_bytes());
}

/// Waits for `child` and turns its end into an exit code (128 + signal when killed).
fn wait_exit_code(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}
