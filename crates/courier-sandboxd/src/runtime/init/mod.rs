//! The sandbox helper: the code that runs in the re-executed process and becomes the
//! sandbox (the "namespaces" side of the runtime), or captures a sandbox's disk as a layer.
//!
//! [`Runtime`](super::Runtime) starts the helper executable (by default `/proc/self/exe`,
//! i.e. the program embedding this crate) with the argument [`HELPER_MARKER`], its task
//! as JSON on stdin and these descriptors:
//!
//! | fd | what |
//! |----|------|
//! | 3 | status pipe (lines to the runtime) |
//! | 4 | "go" pipe: the runtime writes one byte once the sandbox's network is started (gVisor: configured) |
//! | 5 | the control socket envd serves on (namespace sandboxes), bound by the runtime |
//! | 6 | the sandbox's lifeline (optional): EOF when the runtime's process is gone, `r` when it may outlive it |
//!
//! Any program that may serve as helper must call [`main_if_requested`] first thing in
//! `main`, before it starts a thread. This crate ships one such program, the
//! `courier-sandbox-init` binary.
//!
//! Process tree of a namespace sandbox (host PIDs on the left):
//!
//! ```text
//! server ── helper "monitor"   joins the cgroups, setsid, private mount namespace,
//!            │                 creates the user namespace, assembles the root
//!            │                 (rootfs::assemble), joins the user namespace and unshares
//!            │                 the others, reports "netns", waits for "go", forks PID 1,
//!            │                 reports its pid; then copies the console (capped), watches
//!            │                 the lifeline and exits with PID 1's status
//!            └─ PID 1 "reaper" new PID ns; /proc, /sys, pivot_root, /dev, /tmp
//!                │             (rootfs::enter_root), hostname, loopback, a fresh
//!                │             keyring; forks the init and reports "ready" once exec
//!                │             succeeded; then reaps orphans and forwards signals
//!                └─ init       e.g. courier-envd: PID 2, capabilities bounded, syscall
//!                              filter installed, control socket on fd 3
//! ```
//!
//! A gVisor sandbox has the same monitor up to the root; it then unshares only a network
//! namespace (for slirp4netns), becomes a child subreaper and runs `runsc run --detach`
//! (its own syscall filter installed), which leaves runsc's sandbox and gofer processes
//! as the monitor's children.
//!
//! Status lines on descriptor 3: `netns <pid>` (the network namespace is ready for
//! slirp4netns), `pid <host pid>` (the sandbox's anchor process), then `ready <pid of the
//! init in the sandbox>` or `error <message>`. A capture reports `done` or `error …`.

mod monitor;
mod pid1;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, setsid};

use super::idmap::{self, IdRange};
use super::rootfs::{self, RootfsPlan};
use super::seccomp::{self, Profile};
use super::step::StepError;
use super::{layer_capture, sys};
use monitor::{Console, watch_children, watch_pid1};
use pid1::reaper;

/// The first argument that turns a program into the sandbox helper.
pub const HELPER_MARKER: &str = "--courier-sandbox-helper";
/// Descriptor on which the helper reports progress.
pub(crate) const STATUS_FD: RawFd = 3;
/// Descriptor on which the runtime says "go" (network started).
pub(crate) const GO_FD: RawFd = 4;
/// Descriptor of the control socket handed to a namespace sandbox's init.
pub(crate) const CONTROL_FD: RawFd = 5;
/// What the runtime writes on a sandbox's lifeline to let it outlive the runtime
/// ([`super::Runtime::outlive_runtime`]).
pub(crate) const LIFELINE_RELEASE: u8 = b'r';
/// Descriptor of the runtime's lifeline.
pub(crate) const LIFELINE_FD: RawFd = 6;
/// Where the helper finds a ready disk's detached mount (see `disk::DiskPool`).
pub(crate) const DISK_FD: RawFd = 7;
/// The descriptor a namespace sandbox's init finds its control socket on (a Unix stream
/// socket the runtime bound but did not `listen()` on).
pub const INIT_CONTROL_FD: RawFd = 3;

/// What the runtime asks of the helper.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum HelperTask {
    /// Become a sandbox.
    Sandbox(Box<SandboxTask>),
    /// Copy a dead sandbox's disk into a layer.
    Capture(layer_capture::CaptureTask),
}

impl From<layer_capture::CaptureTask> for HelperTask {
    fn from(task: layer_capture::CaptureTask) -> Self {
        HelperTask::Capture(task)
    }
}

/// How the sandbox runs once its root is assembled.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Launch {
    /// Namespaces + user namespace + seccomp, running `init` as PID 2.
    Container {
        init: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        nested_namespaces: bool,
    },
    /// `runsc` with these arguments (after the program name).
    Gvisor { runsc: PathBuf, args: Vec<String> },
}

/// A sandbox to become.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SandboxTask {
    pub id: String,
    pub cgroup_procs: Vec<PathBuf>,
    /// cgroup files written with `"<major>:<minor> <value>"` for the disk's loop device.
    pub blkio: Vec<(PathBuf, String)>,
    pub rootfs: RootfsPlan,
    /// The sandbox's host ids (namespace sandboxes).
    pub ids: Option<IdRange>,
    pub launch: Launch,
    /// Bytes of console output kept; the rest is dropped (one marker line says so).
    pub console_cap: u64,
    /// The `RLIMIT_NOFILE` (soft, hard) the sandbox runs with, when the runtime raised
    /// its own (see `runtime::raise_nofile_limit`).
    #[serde(default)]
    pub nofile: Option<(u64, u64)>,
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
    // A helper is host root and may wait a while before its task comes: it keeps nothing
    // its parent happened to leave open beyond what it was handed (channel, console
    // placeholders, status pipe).
    sys::close_unowned_from(STATUS_FD + 1);
    // Without the status pipe there is nobody to report to: exit with a distinctive code.
    let Some(status) = sys::take_inherited_fd(STATUS_FD) else {
        std::process::exit(125);
    };
    let mut status = File::from(status);
    // Nothing started later may inherit the status pipe: its closing signals a finished
    // setup. F_SETFD on a descriptor we own cannot fail, and there is no one to tell yet.
    let _ = fcntl(&status, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let task = match read_task() {
        Ok(task) => task,
        Err(message) => {
            report(&mut status, &format!("error {message}"));
            std::process::exit(1);
        }
    };
    let code = match task {
        HelperTask::Sandbox(task) => run_sandbox(*task, status),
        HelperTask::Capture(task) => match layer_capture::run(&task) {
            Ok(()) => {
                report(&mut status, "done");
                0
            }
            Err(message) => {
                report(&mut status, &format!("error {message}"));
                1
            }
        },
    };
    std::process::exit(code);
}

/// Waits for the task on stdin (a socket: see [`super::handover`]), installs the
/// descriptors that come with it, and puts `/dev/null` on stdin.
fn read_task() -> Result<HelperTask, StepError> {
    let channel = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(StepError::os("task channel"))?;
    let raw = super::handover::receive_task(channel)?;
    let null = File::open("/dev/null").map_err(StepError::os("open /dev/null"))?;
    nix::unistd::dup2_stdin(&null).map_err(StepError::os("stdin"))?;
    serde_json::from_slice(&raw).map_err(StepError::os("parse task"))
}

/// Descriptors the runtime passes beyond the status pipe.
struct Inherited {
    go: Option<OwnedFd>,
    control: Option<OwnedFd>,
    lifeline: Option<OwnedFd>,
    disk: Option<OwnedFd>,
}

impl Inherited {
    fn take() -> Self {
        let cloexec = |fd: OwnedFd| {
            // F_SETFD on a descriptor we own cannot fail.
            let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            fd
        };
        Self {
            go: sys::take_inherited_fd(GO_FD).map(cloexec),
            control: sys::take_inherited_fd(CONTROL_FD).map(cloexec),
            lifeline: sys::take_inherited_fd(LIFELINE_FD).map(cloexec),
            disk: sys::take_inherited_fd(DISK_FD).map(cloexec),
        }
    }
}

/// The monitor: everything before the sandbox's first process exists, then watching it.
fn run_sandbox(task: SandboxTask, status: File) -> i32 {
    let inherited = Inherited::take();
    // Handed on (and closed) once the sandbox runs: the runtime reads the pipe to EOF.
    let mut status = Some(status);
    match prepare(&task, inherited, &mut status) {
        Ok(code) => code,
        Err(message) => {
            if let Some(status) = status.as_mut() {
                report(status, &format!("error {message}"));
            }
            1
        }
    }
}

/// When the helper's setup began (inherited by PID 1, which marks its own phases).
static BEGAN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Reports a phase time for the runtime's debug log (`time <phase> <µs since the helper
/// began>`): what a create spends where, measured without a tracer's overhead.
fn mark(status: &mut File, phase: &str) {
    if let Some(began) = BEGAN.get() {
        report(
            status,
            &format!("time {phase} {}", began.elapsed().as_micros()),
        );
    }
}

fn prepare(
    task: &SandboxTask,
    inherited: Inherited,
    status_slot: &mut Option<File>,
) -> Result<i32, StepError> {
    let status = status_slot
        .as_mut()
        .ok_or_else(|| StepError::refused("no status pipe"))?;
    // Set once per helper; a second set (there is none) would keep the first time.
    let _ = BEGAN.set(std::time::Instant::now());
    // Detach from the server's session: a Ctrl-C aimed at the server must not reach
    // sandboxes, which outlive a server restart.
    setsid().map_err(StepError::os("setsid"))?;
    if let Some((soft, hard)) = task.nofile {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
            .map_err(StepError::os("restore RLIMIT_NOFILE"))?;
    }
    umask(Mode::from_bits_truncate(0o022));
    // Joining before anything else puts every later process in the cgroups (no escape
    // window) and makes them the root of the sandbox's cgroup namespace.
    for procs in &task.cgroup_procs {
        fs::write(procs, "0").map_err(StepError::os(format!("join cgroup {}", procs.display())))?;
    }
    mark(status, "cgroups");
    unshare(CloneFlags::CLONE_NEWNS).map_err(StepError::os("unshare mount namespace"))?;
    let userns = match task.ids {
        Some(range) => Some(idmap::create_userns(range)?),
        None => None,
    };
    mark(status, "userns");
    let assembled = rootfs::assemble(
        &task.rootfs,
        task.ids.zip(userns.as_ref().map(|ns| ns.as_fd())),
        inherited.disk,
        &mut |phase| mark(status, phase),
    )?;
    mark(status, "root");
    for (file, value) in &task.blkio {
        // Throttles apply to the sandbox's own disk device (loop major 7).
        let line = format!("7:{} {value}", assembled.disk_minor);
        fs::write(file, &line)
            .map_err(StepError::os(format!("write {line} to {}", file.display())))?;
    }
    // The namespaces unshared below inherit this working directory: PID 1 of a namespace
    // sandbox starts from it (see rootfs::enter_root).
    nix::unistd::chdir(&task.rootfs.dirs.rootfs())
        .map_err(StepError::os("enter the sandbox root"))?;
    let (console_read, console_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(StepError::os("console pipe"))?;
    match &task.launch {
        Launch::Container { .. } => {
            let userns = userns
                .ok_or_else(|| StepError::refused("a namespace sandbox needs its id range"))?;
            setns(&userns, CloneFlags::CLONE_NEWUSER)
                .map_err(StepError::os("join the user namespace"))?;
            drop(userns);
            // Root of the new namespace (the sandbox's host id, not host root).
            nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                .map_err(StepError::os("setresgid in the user namespace"))?;
            nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                .map_err(StepError::os("setresuid in the user namespace"))?;
            unshare(
                CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWUTS
                    | CloneFlags::CLONE_NEWIPC
                    | CloneFlags::CLONE_NEWNET
                    | CloneFlags::CLONE_NEWPID
                    | CloneFlags::CLONE_NEWCGROUP,
            )
            .map_err(StepError::os("unshare namespaces"))?;
            mark(status, "namespaces");
            wait_for_go(status, inherited.go)?;
            mark(status, "go");
            match sys::fork_helper().map_err(StepError::os("fork PID 1"))? {
                ForkResult::Child => {
                    drop(console_read);
                    drop(inherited.lifeline);
                    let status = status_slot.take().expect("status pipe");
                    std::process::exit(reaper(task, status, console_write, inherited.control))
                }
                ForkResult::Parent { child } => {
                    report(status, &format!("pid {child}"));
                    *status_slot = None;
                    drop(console_write);
                    drop(inherited.control);
                    Ok(watch_pid1(
                        child,
                        console_read,
                        inherited.lifeline,
                        task.console_cap,
                    ))
                }
            }
        }
        Launch::Gvisor { runsc, args } => {
            expose_root_for_runsc(&task.rootfs.dirs.rootfs())?;
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(StepError::os("unshare network namespace"))?;
            mark(status, "namespaces");
            wait_for_go(status, inherited.go)?;
            rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
                .map_err(StepError::os("become a child subreaper"))?;
            let mut cmd = Command::new(runsc);
            cmd.args(args)
                .stdin(std::process::Stdio::null())
                .stdout(File::from(
                    console_write
                        .try_clone()
                        .map_err(StepError::os("dup console"))?,
                ))
                .stderr(File::from(console_write))
                .env_clear()
                .env("PATH", super::DEFAULT_PATH)
                .current_dir("/");
            sys::seccomp_before_exec(&mut cmd, seccomp::compile(Profile::Runsc));
            let mut run = cmd
                .spawn()
                .map_err(StepError::os(format!("start {}", runsc.display())))?;
            report(status, &format!("pid {}", std::process::id()));
            let mut console = Console::new(task.console_cap);
            // `runsc run --detach` exits once the container's init runs: wake on its exit
            // (a pidfd), not on a timer, since every millisecond here is one of create's.
            let exited = rustix::process::Pid::from_raw(run.id() as i32).and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
            let started = loop {
                let mut fds = vec![PollFd::new(console_read.as_fd(), PollFlags::POLLIN)];
                if let Some(fd) = &exited {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
                // A failed or interrupted poll only makes this loop look again sooner.
                let _ = poll(&mut fds, PollTimeout::from(50u16));
                drop(fds);
                console.pump(&console_read, false);
                if let Ok(Some(code)) = run.try_wait() {
                    break code;
                }
            };
            if !started.success() {
                console.pump(&console_read, false);
                return Err(StepError::refused(format!(
                    "runsc run failed ({started}): {}",
                    console.tail().trim()
                )));
            }
            report(status, "ready 1");
            *status_slot = None;
            Ok(watch_children(
                console_read,
                inherited.lifeline,
                console,
                &task.cgroup_procs,
            ))
        }
    }
}

/// Where runsc finds a gVisor sandbox's root, in the helper's private mount namespace.
pub(crate) const GVISOR_ROOT: &str = "/run/courier-sandbox";

/// Makes the assembled root reachable at [`GVISOR_ROOT`] for runsc's gofer and Sentry,
/// which run as the sandbox's host ids and so cannot walk down the runtime's 0700 data
/// dir: a fresh tmpfs over `/run` (in this private mount namespace only) holding a bind
/// of the root.
fn expose_root_for_runsc(root: &std::path::Path) -> Result<(), StepError> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )
    .map_err(StepError::os("mount a private /run"))?;
    fs::create_dir(GVISOR_ROOT).map_err(StepError::os(format!("create {GVISOR_ROOT}")))?;
    mount(
        Some(root),
        GVISOR_ROOT,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(StepError::os(format!("bind the root at {GVISOR_ROOT}")))
}

/// Reports the network namespace and waits for the runtime's go (it attaches the
/// sandbox's network in between). EOF means the runtime gave up.
fn wait_for_go(status: &mut File, go: Option<OwnedFd>) -> Result<(), StepError> {
    report(status, &format!("netns {}", std::process::id()));
    let Some(go) = go else { return Ok(()) };
    let mut byte = [0u8; 1];
    match File::from(go).read(&mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err(StepError::refused(
            "the runtime went away before the network was attached",
        )),
        Err(e) => Err(StepError::os("read go")(e)),
    }
}

/// Writes one status line with a single `write` (atomic for a pipe, below `PIPE_BUF`):
/// the monitor and PID 1 report concurrently, and `writeln!` on a `File` would
/// interleave their pieces.
pub(crate) fn report(status: &mut File, line: &str) {
    let mut line = line.replace('\n', " ");
    let mut end = line.len().min(4000);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push('\n');
    // The status pipe is the only way to the runtime: if it is gone, so is the runtime
    // that would read this line (its create has given up on the helper).
    let _ = status.write_all(line.as_bytes());
}
