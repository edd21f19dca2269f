//! The sandbox's network namespace, and outbound access through a user-space network
//! stack.
//!
//! Every sandbox gets a fresh network namespace whose loopback is brought up by the
//! helper: processes inside can talk to each other over `127.0.0.1`. By default that is
//! all — no interface leads out. The host reaches a sandbox's ports through the sandbox's
//! own agent (envd's port tunnel), never through the network namespace.
//!
//! With [`SandboxSpec::allow_internet`](super::SandboxSpec::allow_internet) the runtime
//! attaches [slirp4netns] to the namespace: a user-space TCP/IP stack that owns a `tap0`
//! device inside the sandbox (`10.0.2.100/24`, gateway `10.0.2.2`, DNS `10.0.2.3`) and
//! turns the sandbox's connections into ordinary sockets of an unprivileged process on
//! the host. Why this rather than veth + NAT:
//!
//! - nothing on the host changes: no bridge, no iptables/nftables rules, no
//!   `ip_forward` sysctl — a crash leaves no network state behind, and it works on hosts
//!   without a firewall tool;
//! - `--disable-host-loopback` keeps the sandbox away from the host's `127.0.0.0/8`
//!   services (databases, the control plane when bound to loopback);
//! - `--enable-sandbox --enable-seccomp` confine slirp4netns itself (own mount namespace,
//!   capabilities dropped, syscall filter); it starts in a mount namespace of its own with
//!   private propagation, because its sandbox detaches the old root, which would unmount
//!   host mounts under shared parents (`/run/netns/*`...) through propagation;
//! - every connection and datagram it sends for the sandbox is decided by the sandbox's
//!   egress policy ([`crate::egress`]): a seccomp filter stops `connect`/`sendto`/
//!   `sendmsg` and a supervisor thread in courier-sandboxd performs or refuses them.
//!   Cloud metadata, the host's own addresses, loopback and private ranges are refused
//!   unless the operator allows them; E2B's `allowOut`/`denyOut` apply on top;
//! - the slirp4netns process is moved into the sandbox's cgroup, so its CPU and memory
//!   count against the sandbox, pausing the sandbox freezes its network too, and killing
//!   the sandbox's cgroup kills it — no separate cleanup path to get wrong.
//!
//! The cost is throughput (a user-space stack; hundreds of MB/s, plenty for package
//! installs and LLM APIs), one extra process per networked sandbox (~2 MB) and one
//! supervisor thread in courier-sandboxd.
//!
//! slirp4netns needs a few milliseconds to start and configure `tap0` (more on a loaded
//! machine): a create [`start`]s it as soon as the sandbox's network namespace exists and
//! lets the sandbox's init (the runtime's own agent) start meanwhile; the server waits
//! for the interface ([`Attached::wait_ready`], via `Runtime::wait_network`) beside the
//! agent's readiness, before the create answers.
//!
//! After a server restart a running sandbox's slirp4netns has lost its supervisor (it
//! can open nothing new: fail closed); [`detach_stale`] then [`attach`] give it a new
//! one.
//!
//! [slirp4netns]: https://github.com/rootless-containers/slirp4netns

use std::fs::{self, File};
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::step::StepError;
use crate::egress::SandboxEgress;
use crate::egress::supervisor::Supervisor;
use crate::error::{Error, Result};

/// The program that provides outbound access.
pub const SLIRP4NETNS: &str = "slirp4netns";

/// The nameserver a networked sandbox uses (slirp4netns forwards it to the host's).
pub const SANDBOX_NAMESERVER: &str = "10.0.2.3";

/// Descriptor on which slirp4netns reports that the interface is configured.
const READY_FD: i32 = 3;

/// How long slirp4netns may take to configure the interface.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds slirp4netns in `PATH` (or the usual system directories).
pub fn find_slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(SLIRP4NETNS))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that the requested network mode is available here; returns the slirp4netns
/// program when outbound access was asked for.
pub(crate) fn check_supported(allow_internet: bool) -> Result<Option<PathBuf>> {
    if !allow_internet {
        return Ok(None);
    }
    find_slirp4netns().map(Some).ok_or_else(|| {
        Error::Unsupported(
            "allow_internet: outbound network needs slirp4netns, which is not installed on \
             this host (Debian/Ubuntu: apt-get install slirp4netns); create the sandbox \
             without internet access or install it"
                .into(),
        )
    })
}

/// slirp4netns serving one sandbox, and the supervisor enforcing its egress policy (see
/// [`crate::egress`]). Killed with the sandbox's cgroup; [`kill`](Self::kill) and
/// [`wait`](Self::wait) also stop the supervisor. Dropping it stops the supervisor only,
/// after which slirp4netns can open no new connection (fail closed).
pub struct Attached {
    child: Child,
    supervisor: Supervisor,
    /// The read end of slirp4netns's ready descriptor until [`wait_ready`](Self::wait_ready)
    /// has seen it write (see [`start`]).
    ready: Option<OwnedFd>,
    log: PathBuf,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Attached {
    /// slirp4netns's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until slirp4netns has configured `tap0` (at once when that was seen
    /// before). On failure slirp4netns is killed and reaped and the error carries its
    /// output.
    pub fn wait_ready(&mut self) -> Result<()> {
        let Some(pending) = self.take_pending() else {
            return Ok(());
        };
        let waited = pending.wait();
        if waited.is_err() {
            super::sys::kill_and_reap(&mut self.child, "slirp4netns that failed to start");
            self.supervisor.stop();
        }
        waited
    }

    /// What is left to wait for until `tap0` is configured, if anything: taken out, so
    /// that the wait holds no lock on whatever keeps this `Attached`.
    pub(crate) fn take_pending(&mut self) -> Option<Pending> {
        Some(Pending {
            ready: self.ready.take()?,
            log: self.log.clone(),
        })
    }

    /// Sends SIGKILL to slirp4netns and stops the supervisor.
    pub fn kill(&mut self) -> std::io::Result<()> {
        let killed = self.child.kill();
        self.supervisor.stop();
        killed
    }

    /// Waits for slirp4netns to exit (e.g. after the sandbox's cgroup was killed) and
    /// stops the supervisor.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait();
        self.supervisor.stop();
        status
    }
}

/// [`start`]s slirp4netns for the network namespace of `init_pid` and waits until `tap0`
/// is configured ([`Attached::wait_ready`]).
pub fn attach(
    program: &Path,
    init_pid: i32,
    cgroup_procs: &[PathBuf],
    log: &Path,
    egress: &SandboxEgress,
) -> Result<Attached> {
    let mut attached = start(program, init_pid, cgroup_procs, log, egress)?;
    attached.wait_ready()?;
    Ok(attached)
}

/// Starts slirp4netns for the network namespace of `init_pid` under the egress policy
/// `egress` and moves it into the sandbox's cgroup (`cgroup_procs`); returns without
/// waiting for `tap0` to be configured, so that a create can go on meanwhile and call
/// [`Attached::wait_ready`] last. Its output goes to `log`.
///
/// slirp4netns runs with a seccomp filter whose listener only the returned
/// [`Attached`]'s supervisor holds: every connection it makes for the sandbox is decided
/// by `egress` (see [`crate::egress`]). Works for a sandbox that is already running
/// too, e.g. after a server restart: first [`detach_stale`] the slirp4netns the previous
/// server started (its supervisor died with that server, so it can open nothing new).
pub fn start(
    program: &Path,
    init_pid: i32,
    cgroup_procs: &[PathBuf],
    log: &Path,
    egress: &SandboxEgress,
) -> Result<Attached> {
    // Read now: DNS to these resolvers is what slirp4netns forwards the sandbox's
    // 10.0.2.3 to, and is allowed even when they are internal.
    let resolvers = host_resolvers(Path::new("/etc/resolv.conf"));
    let out = File::create(log).map_err(Error::io("create", log))?;
    let err = out.try_clone().map_err(Error::io("dup", log))?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("slirp4netns ready pipe")(e.into()))?;
    let mut cmd = Command::new(program);
    cmd.args([
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        &format!("--ready-fd={READY_FD}"),
        &init_pid.to_string(),
        "tap0",
    ])
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(err)
    .env_clear()
    .current_dir("/");
    super::sys::pass_fd_as(&mut cmd, ready_write, READY_FD);
    let (child, supervisor) =
        crate::egress::spawn_supervised(cmd, egress, resolvers).map_err(|e| {
            let output = fs::read_to_string(log).unwrap_or_default();
            Error::Sys {
                op: format!("start {} (outbound network)", program.display()),
                source: std::io::Error::new(
                    e.kind(),
                    format!("{e}; its output: {}", output.trim()),
                ),
            }
        })?;

    let fail = |child: &mut Child, why: String| {
        super::sys::kill_and_reap(child, "slirp4netns that failed to start");
        let output = fs::read_to_string(log).unwrap_or_default();
        Err(Error::Sys {
            op: "start slirp4netns (outbound network)".into(),
            source: std::io::Error::other(format!("{why}; its output: {}", output.trim())),
        })
    };
    let mut attached = Attached {
        child,
        supervisor,
        ready: Some(ready_read),
        log: log.to_path_buf(),
    };
    // Into the sandbox's cgroup before it carries any traffic: its resources are the
    // sandbox's, and the cgroup's kill takes it along.
    for procs in cgroup_procs {
        if let Err(e) = fs::write(procs, attached.child.id().to_string()) {
            return fail(
                &mut attached.child,
                format!("join cgroup {}: {e}", procs.display()),
            );
        }
    }
    Ok(attached)
}

/// A started slirp4netns's ready descriptor (see [`Attached::take_pending`]).
#[derive(Debug)]
pub(crate) struct Pending {
    ready: OwnedFd,
    log: PathBuf,
}

impl Pending {
    /// Waits (at most [`READY_TIMEOUT`]) until slirp4netns reports `tap0` configured. On
    /// failure the error carries its output; killing it is the caller's (with its
    /// sandbox).
    pub(crate) fn wait(self) -> Result<()> {
        wait_ready(self.ready, READY_TIMEOUT).map_err(|why| {
            let output = fs::read_to_string(&self.log).unwrap_or_default();
            Error::Sys {
                op: "start slirp4netns (outbound network)".into(),
                source: std::io::Error::other(format!("{why}; its output: {}", output.trim())),
            }
        })
    }
}

/// The nameservers of a `resolv.conf` (the resolvers slirp4netns forwards DNS to).
fn host_resolvers(path: &Path) -> Vec<IpAddr> {
    let text = fs::read_to_string(path).unwrap_or_default();
    parse_resolvers(&text)
}

fn parse_resolvers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // An IPv6 resolver may carry a zone (`fe80::1%eth0`).
        .filter_map(|addr| addr.split('%').next()?.parse().ok())
        .collect()
}

/// Kills the slirp4netns processes serving the network namespace of `init_pid` that a
/// previous server started (their supervisor is gone, so they can open no new
/// connection), and waits until they are gone. Returns their PIDs.
///
/// Found by scanning `/proc`: a process whose executable is slirp4netns and whose
/// arguments are the ones [`attach`] passes for `init_pid`. Call it before
/// [`attach`]ing again to a running sandbox; the sandbox's existing connections end
/// with the old process.
pub fn detach_stale(init_pid: i32) -> Result<Vec<i32>> {
    let Some(program) = find_slirp4netns() else {
        return Ok(Vec::new());
    };
    let identity = |path: &Path| {
        fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
    };
    let wanted = identity(&program);
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    let entries = fs::read_dir("/proc").map_err(Error::io("read dir", "/proc"))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let target = init_pid.to_string();
        let ours = args.len() >= 3
            && args[args.len() - 1] == b"tap0"
            && args[args.len() - 2] == target.as_bytes()
            && args.iter().any(|a| a.starts_with(b"--ready-fd="));
        if !ours || identity(&entry.path().join("exe")) != wanted || wanted.is_none() {
            continue;
        }
        // A pidfd: the kill and the wait are for this process even if the PID is reused.
        let Ok(pidfd) = crate::egress::pidfd_open(pid) else {
            continue;
        };
        if crate::egress::pidfd_kill(&pidfd).is_ok() {
            crate::egress::pidfd_wait_exit(&pidfd, Duration::from_secs(5));
            killed.push(pid);
        }
    }
    Ok(killed)
}

/// Waits for slirp4netns to write to its ready descriptor.
fn wait_ready(pipe: OwnedFd, timeout: Duration) -> Result<(), StepError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + timeout;
    let mut file = File::from(pipe);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StepError::refused(format!(
                "not configured within {timeout:?}"
            )));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(StepError::os("poll")(e)),
        }
        let mut buf = [0u8; 8];
        return match file.read(&mut buf) {
            Ok(0) => Err(StepError::refused(
                "exited before the interface was configured",
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(StepError::os("read ready pipe")(e)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_internet_needs_nothing() {
        assert_eq!(check_supported(false).unwrap(), None);
    }

    #[test]
    fn internet_without_slirp4netns_names_the_field_and_the_fix() {
        if find_slirp4netns().is_some() {
            eprintln!("slirp4netns is installed: the missing-program error is not reachable");
            return;
        }
        let err = check_supported(true).unwrap_err().to_string();
        assert!(err.contains("allow_internet"), "{err}");
        assert!(err.contains("apt-get install slirp4netns"), "{err}");
    }

    #[test]
    fn resolvers_are_the_nameserver_lines() {
        let text = "# comment\nnameserver 10.255.255.53\nsearch x\nnameserver fe80::1%eth0\n\
                    nameserver bogus\noptions ndots:1\n";
        assert_eq!(
            parse_resolvers(text),
            vec![
                "10.255.255.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
