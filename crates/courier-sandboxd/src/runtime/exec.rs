//! Reaching into a running sandbox: its files, its control socket, and commands run
//! inside it.

use std::path::PathBuf;
use std::process::Command;

use super::Runtime;
use super::isolator::Running;
use super::registry::process_alive;
use super::spec::{ExecOptions, SANDBOX_USER};
use crate::error::{Error, Result};

impl Runtime {
    /// The sandbox's root file system as seen from the host (`/proc/<pid>/root`), for
    /// reading files from outside. Valid while a namespace sandbox runs; gVisor's root
    /// is the Sentry's, not reachable this way.
    pub fn root_path(&self, id: &str) -> Result<PathBuf> {
        self.with_entry(id, |e| {
            let pid = e.state.handle.init_pid;
            if !self.isolator(e.state.spec.isolation)?.host_visible_root() {
                return Err(Error::Unsupported(format!(
                    "root_path: a {} sandbox's files are not the host's to read",
                    e.state.spec.isolation
                )));
            }
            if !process_alive(pid, e.state.init_start_time) {
                return Err(Error::NotRunning(id.to_string()));
            }
            Ok(PathBuf::from(format!("/proc/{pid}/root")))
        })
    }

    /// Connects to the control socket of sandbox `id` (see
    /// [`SandboxSpec::control_socket`](super::SandboxSpec::control_socket)) and checks that the process answering belongs to
    /// the sandbox.
    ///
    /// A namespace sandbox's socket lives where only the runtime can reach it. A gVisor
    /// sandbox's lives in a directory the sandbox can write: it is opened without
    /// following symlinks, must be a socket, and is connected through its descriptor, so
    /// a sandbox that swaps it for a link to a host socket (Docker's, say) reaches
    /// nothing; at most it answers itself.
    pub fn connect_control(&self, id: &str) -> Result<std::os::unix::net::UnixStream> {
        let (isolation, cgroup) = self.with_entry(id, |e| {
            if !e.state.spec.control_socket {
                return Err(Error::Unsupported(format!(
                    "sandbox {id} was created without a control socket"
                )));
            }
            Ok((e.state.spec.isolation, e.cgroup.clone()))
        })?;
        let stream = self.isolator(isolation)?.connect_control(&self.dirs(id))?;
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| Error::sys("read the control socket's peer")(e.into()))?;
        if !cgroup.contains(peer.pid()) {
            return Err(Error::Envd {
                id: id.to_owned(),
                message: format!(
                    "the control socket is served by process {} (uid {}), which is not part of the sandbox: refusing it",
                    peer.pid(),
                    peer.uid()
                ),
            });
        }
        Ok(stream)
    }

    /// A [`Command`] for `program` that runs *inside* the sandbox as root in `/`; see
    /// [`command_with`](Self::command_with).
    pub fn command(&self, id: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        self.command_with(id, program, &ExecOptions::default())
    }

    /// A [`Command`] for `program` that runs *inside* the sandbox: in its cgroups, user
    /// namespace and all its other namespaces, with the sandbox's root, capability bounds,
    /// syscall filter and a fresh keyring (a gVisor sandbox: through `runsc exec`), an
    /// empty environment except `PATH` (and `HOME` for a user), in `options.cwd` as
    /// `options.user`. The caller adds arguments, stdio and environment, then spawns it
    /// as usual; it must not use `Command::uid`, `gid`, `groups` or `current_dir` (they act
    /// before the sandbox is entered). The sandbox must be running and not frozen (a
    /// frozen sandbox would freeze the spawn itself).
    pub fn command_with(
        &self,
        id: &str,
        program: impl AsRef<std::ffi::OsStr>,
        options: &ExecOptions,
    ) -> Result<Command> {
        let (pid, cgroup, spec) = self.with_entry(id, |e| {
            if !process_alive(e.state.handle.init_pid, e.state.init_start_time) {
                return Err(Error::NotRunning(id.to_string()));
            }
            if e.cgroup.is_frozen() {
                return Err(Error::NotRunning(format!("{id} (frozen)")));
            }
            Ok((
                e.state.handle.init_pid,
                e.cgroup.clone(),
                e.state.spec.clone(),
            ))
        })?;
        let mut cmd = self.isolator(spec.isolation)?.command(
            &Running {
                id,
                init_pid: pid,
                cgroup: &cgroup,
                spec: &spec,
                dirs: &self.dirs(id),
            },
            program.as_ref(),
            options,
        )?;
        if let Some(user) = options.user {
            cmd.env(
                "HOME",
                if user.0 == 0 {
                    "/root".to_string()
                } else {
                    format!("/home/{SANDBOX_USER}")
                },
            );
        }
        Ok(cmd)
    }
}
