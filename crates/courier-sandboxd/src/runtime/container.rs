//! The container isolation: namespaces around the host kernel, hardened — a user
//! namespace with the sandbox's own host ids, a syscall filter, a minimal capability
//! bounding set (see the module docs of [`super`], [`super::init`] and
//! [`super::seccomp`]).

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::idmap::IdRange;
use super::init::Launch;
use super::rootfs::SandboxDirs;
use super::{Control, DEFAULT_PATH, ExecOptions, Isolator, Running, SandboxSpec, seccomp, sys};
use crate::error::{Error, Result};

/// Namespaces + user namespace + seccomp; the init runs as PID 2 under the runtime's
/// PID 1.
#[derive(Debug, Default)]
pub(crate) struct ContainerIsolator;

impl Isolator for ContainerIsolator {
    fn prepare_control(&self, dirs: &SandboxDirs, _ids: Option<IdRange>) -> Result<Control> {
        Ok(Control {
            fd: Some(bind_control_socket(&dirs.control_socket())?),
            binds: Vec::new(),
        })
    }

    fn launch(&self, spec: &SandboxSpec, _dirs: &SandboxDirs) -> Result<Launch> {
        Ok(Launch::Container {
            init: spec.init.clone(),
            args: spec.args.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/")),
            nested_namespaces: spec.nested_namespaces,
        })
    }

    fn connect_control(&self, dirs: &SandboxDirs) -> Result<std::os::unix::net::UnixStream> {
        // In the runtime's own directory: nothing inside the sandbox can reach or replace it.
        let path = dirs.control_socket();
        std::os::unix::net::UnixStream::connect(&path).map_err(Error::io("connect", &path))
    }

    fn command(
        &self,
        sandbox: &Running<'_>,
        program: &std::ffi::OsStr,
        options: &ExecOptions,
    ) -> Result<Command> {
        let pid = sandbox.init_pid;
        let mut procs = Vec::new();
        for path in sandbox.cgroup.procs_files() {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(Error::io("open", &path))?;
            procs.push(OwnedFd::from(file));
        }
        let open_ns = |ns: &str| -> Result<OwnedFd> {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
            Ok(OwnedFd::from(
                File::open(&path).map_err(Error::io("open", &path))?,
            ))
        };
        let userns = Some(open_ns("user")?);
        let mut namespaces = Vec::new();
        // The mount namespace goes last: entering it changes root and cwd.
        for ns in ["cgroup", "ipc", "uts", "net", "pid", "mnt"] {
            namespaces.push(open_ns(ns)?);
        }
        let cwd = match &options.cwd {
            Some(dir) => Some(
                std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
                    Error::InvalidSpec {
                        field: "cwd",
                        reason: "contains a NUL byte".into(),
                    }
                })?,
            ),
            None => None,
        };
        let mut cmd = Command::new(program);
        cmd.env_clear().env("PATH", DEFAULT_PATH);
        sys::enter_sandbox(
            &mut cmd,
            sys::Entry {
                cgroup_procs: procs,
                userns,
                namespaces,
                cwd,
                user: options.user,
                seccomp: seccomp::compile(seccomp::Profile::Sandbox {
                    nested_namespaces: sandbox.spec.nested_namespaces,
                }),
                nofile: super::sandbox_nofile(),
            },
        );
        Ok(cmd)
    }

    fn host_visible_root(&self) -> bool {
        true
    }
}

/// Creates the control socket of a namespace sandbox: bound at `path` (mode 0600, in a
/// directory the sandbox never sees) but not listening — the init calls `listen()`
/// itself, which makes it the socket's peer for `SO_PEERCRED`.
fn bind_control_socket(path: &Path) -> Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::sys("control socket")(e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| Error::sys("control socket address")(e.into()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| Error::io("bind", path)(e.into()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(Error::io("chmod", path))?;
    Ok(fd)
}
