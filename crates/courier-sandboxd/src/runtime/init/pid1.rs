//! PID 1 of a namespace sandbox: its root entered, the init started, orphans reaped and
//! signals forwarded.

use super::*;

/// PID 1 of a namespace sandbox: sets the sandbox up, starts the init, then reaps and
/// forwards.
pub(super) fn reaper(
    task: &SandboxTask,
    mut status: File,
    console: OwnedFd,
    control: Option<OwnedFd>,
) -> i32 {
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
