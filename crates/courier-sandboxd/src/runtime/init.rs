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
//! | 4 | "go" pipe: the runtime writes one byte once the sandbox's network is attached |
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

/// The first argument that turns a program into the sandbox helper.
pub const HELPER_MARKER: &str = "--courier-sandbox-helper";
/// Descriptor on which the helper reports progress.
pub(crate) const STATUS_FD: RawFd = 3;
/// Descriptor on which the runtime says "go" (network attached).
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

/// PID 1 of a namespace sandbox: sets the sandbox up, starts the init, then reaps and
/// forwards.
fn reaper(task: &SandboxTask, mut status: File, console: OwnedFd, control: Option<OwnedFd>) -> i32 {
    let Launch::Container {
        init,
        args,
        env,
        cwd,
        nested_namespaces,
    } = &task.launch
    else {
        return 1;
    };
    // Our own output goes to the console too; without it PID 1 still runs, its
    // messages lost (and there is nowhere else to say so).
    let _ = nix::unistd::dup2_stdout(&console);
    let _ = nix::unistd::dup2_stderr(&console);
    drop(console);
    if let Err(message) = setup_pid1(&task.rootfs) {
        report(&mut status, &format!("error {message}"));
        return 1;
    }
    mark(&mut status, "pid1_root");
    let filter = seccomp::compile(Profile::Sandbox {
        nested_namespaces: *nested_namespaces,
    });
    mark(&mut status, "seccomp");
    // Signals are taken with sigwait below; block them before the init exists so none
    // is lost. The init unblocks them before exec. Blocking valid signals cannot fail.
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
            let message = exec_init(init, args, env, cwd, &filter, control);
            // After fork, before exec failed: if PID 1 cannot read the message it still
            // sees the init gone and reports the failure without its reason.
            let _ = File::from(err_write).write_all(message.as_bytes());
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(err_write);
            drop(control);
            let mut message = String::new();
            // An unreadable pipe reads as "exec succeeded"; the init's exit then ends the
            // sandbox as any init's would.
            let _ = File::from(err_read).read_to_string(&mut message);
            if !message.is_empty() {
                report(&mut status, &format!("error {message}"));
                return 1;
            }
            mark(&mut status, "exec");
            report(&mut status, &format!("ready {child}"));
            // Closing the status pipe tells the runtime the setup is over.
            drop(status);
            // PID 1 needs nothing privileged any more: bound it like the sandbox. Best
            // effort: the init already runs bounded, and PID 1 (the runtime's own small
            // reaper) reports to nobody any more.
            let _ = sys::drop_capabilities();
            let _ = sys::install_seccomp(&filter);
            reap_until_exit(child)
        }
    }
}

fn setup_pid1(plan: &RootfsPlan) -> Result<(), StepError> {
    // The sandbox dies with its monitor (which dies with the sandbox's cgroup).
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(StepError::os("set parent death signal"))?;
    // Nothing inside may read this process's memory or descriptors through /proc.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(StepError::os("make PID 1 non-dumpable"))?;
    rootfs::enter_root()?;
    nix::unistd::sethostname(&plan.hostname).map_err(StepError::os("sethostname"))?;
    sys::loopback_up().map_err(StepError::os("bring up lo"))?;
    // A fresh session keyring: nothing of the server's is reachable.
    sys::join_new_session_keyring().map_err(StepError::os("new session keyring"))
}

/// Replaces the forked child with the init program; returns only on failure.
fn exec_init(
    init: &PathBuf,
    args: &[String],
    env: &[(String, String)],
    cwd: &PathBuf,
    filter: &sys::BpfProgram,
    control: Option<OwnedFd>,
) -> String {
    // Between fork and exec: nothing to log to. Unblocking signals cannot fail, and
    // setsid fails only for a process group leader, which a fresh child is not.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = setsid();
    if let Some(control) = control {
        // The copy at INIT_CONTROL_FD is inherited; the original closes at exec.
        if let Err(e) = sys::dup_onto(control.as_fd(), INIT_CONTROL_FD) {
            return format!("pass the control socket: {e}");
        }
    }
    if let Err(e) = sys::drop_capabilities() {
        return format!("drop capabilities: {e}");
    }
    if let Err(e) = sys::install_seccomp(filter) {
        return format!("install the syscall filter: {e}");
    }
    let err = Command::new(init)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .exec();
    format!("exec {}: {err}", init.display())
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
                // Fails only once the init is gone, which the next wait reports.
                let _ = kill(init, sig);
            }
        }
    }
}

/// The sandbox's console: output copied to the helper's stdout (the console log) up to a
/// cap; the rest is counted and dropped, so a sandbox cannot fill the host's disk through
/// its output. The last bytes are kept in memory for error messages.
struct Console {
    written: u64,
    cap: u64,
    dropped: u64,
    tail: Vec<u8>,
}

impl Console {
    fn new(cap: u64) -> Self {
        Self {
            written: 0,
            cap,
            dropped: 0,
            tail: Vec::new(),
        }
    }

    /// Copies what `pipe` has now; with `until_eof`, until every writer closed it.
    /// Returns false once the pipe is at EOF.
    fn pump(&mut self, pipe: &OwnedFd, until_eof: bool) -> bool {
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

    fn tail(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }
}

/// The monitor of a namespace sandbox: copies the console, kills PID 1 when the lifeline
/// breaks, and returns PID 1's status once it exits.
fn watch_pid1(pid1: Pid, console_read: OwnedFd, lifeline: Option<OwnedFd>, cap: u64) -> i32 {
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
fn watch_children(
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
