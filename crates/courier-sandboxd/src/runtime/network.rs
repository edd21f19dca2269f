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
//!   capabilities dropped, syscall filter);
//! - the slirp4netns process is moved into the sandbox's cgroup, so its CPU and memory
//!   count against the sandbox, pausing the sandbox freezes its network too, and killing
//!   the sandbox's cgroup kills it — no separate cleanup path to get wrong.
//!
//! The cost is throughput (a user-space stack; hundreds of MB/s, plenty for package
//! installs and LLM APIs) and one extra process per networked sandbox (~2 MB). The host's
//! other addresses (e.g. its LAN address) are reachable like any outside host: put
//! sandboxd's listeners on loopback, or firewall them, when sandboxes must not reach them.
//!
//! [slirp4netns]: https://github.com/rootless-containers/slirp4netns

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Starts slirp4netns for the network namespace of `init_pid`, moves it into the
/// sandbox's cgroup (`cgroup_procs`), and waits until `tap0` is configured. Its output
/// goes to `log`. The returned child is killed with the sandbox's cgroup.
pub(crate) fn attach(
    program: &Path,
    init_pid: i32,
    cgroup_procs: &[PathBuf],
    log: &Path,
) -> Result<Child> {
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
    let mut child = cmd.spawn().map_err(Error::sys(format!(
        "spawn {} (outbound network)",
        program.display()
    )))?;
    drop(cmd);

    let fail = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        let output = fs::read_to_string(log).unwrap_or_default();
        Err(Error::Sys {
            op: "start slirp4netns (outbound network)".into(),
            source: std::io::Error::other(format!("{why}; its output: {}", output.trim())),
        })
    };
    // Into the sandbox's cgroup before it carries any traffic: its resources are the
    // sandbox's, and the cgroup's kill takes it along.
    for procs in cgroup_procs {
        if let Err(e) = fs::write(procs, child.id().to_string()) {
            return fail(&mut child, format!("join cgroup {}: {e}", procs.display()));
        }
    }
    match wait_ready(ready_read, READY_TIMEOUT) {
        Ok(()) => Ok(child),
        Err(why) => fail(&mut child, why),
    }
}

/// Waits for slirp4netns to write to its ready descriptor.
fn wait_ready(pipe: OwnedFd, timeout: Duration) -> std::result::Result<(), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + timeout;
    let mut file = File::from(pipe);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not configured within {timeout:?}"));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut buf = [0u8; 8];
        return match file.read(&mut buf) {
            Ok(0) => Err("exited before the interface was configured".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read ready pipe: {e}")),
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
}
