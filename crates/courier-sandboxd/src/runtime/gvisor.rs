//! The gVisor isolation: each sandbox gets a kernel of its own, gVisor's Sentry (a Linux
//! kernel in user space), driven through `runsc` as the OCI runtime it is.
//!
//! Everything around the sandbox is the runtime's common machinery: the same layers and
//! per-sandbox disk assembled into the same overlay root (by the helper, in a private
//! mount namespace), the same cgroup (limits, freezer for pause, kill), the same
//! slirp4netns network and egress supervision, the same console cap and lifeline. What
//! differs is the last step: instead of namespaces around the host kernel, the helper
//! writes an OCI bundle whose root is that overlay and runs
//! `runsc run --detach --bundle <bundle> <id>`; envd is the container's init.
//!
//! - **Control channel**: this runsc cannot hand a descriptor to the container, so envd
//!   binds its socket in `/run/courier`, a directory of the runtime bound into the
//!   sandbox (`--host-uds=create` lets gVisor create that one host socket). The sandbox
//!   can replace what is in that directory, so the runtime opens the socket without
//!   following symlinks, checks it is a socket, connects through the descriptor, and
//!   checks the peer is a process of this sandbox's cgroup: a redirected socket reaches
//!   nothing outside the sandbox.
//! - **Network**: without internet `--network=none` (gVisor's own netstack, loopback
//!   only); with internet `--network=host` inside the sandbox's own network namespace, to
//!   which slirp4netns is attached: the Sentry's sockets are host sockets in that
//!   namespace, and the egress policy is enforced on slirp4netns as for every sandbox.
//!   (runsc's `--network=sandbox` cannot be used with the runsc Debian ships: its check
//!   for "not the root namespace" misfires on kernels ≥ 6.x.)
//! - **Defence in depth**: the OCI spec gives the container a user namespace mapping
//!   the sandbox's own host id range (allocated as for namespace sandboxes; the lower
//!   layers are idmapped to match), so runsc's Sentry and gofer run as that range's root
//!   — an unprivileged host uid no other sandbox shares — not as host root (runsc's
//!   default with `--directfs`); both run chrooted under runsc's own seccomp filters with
//!   `no_new_privs`; and the runtime adds [`super::seccomp::Profile::Runsc`] under all of
//!   it. runsc sees the root at `init::GVISOR_ROOT`, a bind in the helper's
//!   private mount namespace: those ids could not walk down the runtime's 0700 data dir.
//! - **Platform**: `systrap` where the installed runsc has it, else `ptrace` (the `kvm`
//!   platform hangs on this machine's PVM `/dev/kvm`).

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::rootfs::{self, SandboxDirs};
use super::{IdRange, SandboxSpec, init};
use crate::error::{Error, Result};

/// How to run runsc.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunscConfig {
    /// The runsc binary.
    pub program: PathBuf,
    /// The platform (`systrap` or `ptrace`).
    pub platform: String,
}

/// Finds runsc in `PATH` or the usual places.
pub fn find_runsc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("runsc"))
        .find(|p| p.is_file())
}

/// Why gVisor cannot be used on this host (see [`probe`]; the caller logs it and falls
/// back to the container isolation unless gVisor was asked for).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No runsc was found.
    #[error("runsc is not installed (Debian: apt-get install runsc)")]
    NotInstalled,
    /// runsc could not be started.
    #[error("{} does not run: {source}", program.display())]
    DoesNotRun {
        /// The runsc program.
        program: PathBuf,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },
    /// runsc offers no platform this runtime knows.
    #[error("{} offers neither the systrap nor the ptrace platform ({listed})", program.display())]
    NoPlatform {
        /// The runsc program.
        program: PathBuf,
        /// What `runsc help platforms` printed.
        listed: String,
    },
    /// The probe's scratch directory could not be created.
    #[error("probe dir {}: {source}", path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why it could not be created.
        #[source]
        source: std::io::Error,
    },
    /// `runsc do true` failed.
    #[error("`runsc do true` failed on platform {platform} ({status}): {stderr}")]
    Failed {
        /// The platform tried.
        platform: String,
        /// How runsc exited.
        status: std::process::ExitStatus,
        /// What runsc wrote to stderr.
        stderr: String,
    },
    /// `runsc do true` took too long (it was killed).
    #[error("`runsc do true` did not finish within 20 s on platform {platform}")]
    TimedOut {
        /// The platform tried.
        platform: String,
    },
    /// Waiting for `runsc do true` failed.
    #[error("wait for runsc: {0}")]
    Wait(#[source] std::io::Error),
}

/// Checks that `program` runs sandboxes on this host: picks the fastest platform it
/// offers (systrap, else ptrace) and runs `runsc do true` on it, within a few seconds,
/// with its state under `scratch` (created and removed). The error says why gVisor
/// cannot be used (the caller logs it and falls back).
pub fn probe(program: &Path, scratch: &Path) -> std::result::Result<RunscConfig, ProbeError> {
    let platforms = Command::new(program)
        .args(["help", "platforms"])
        .output()
        .map_err(|source| ProbeError::DoesNotRun {
            program: program.to_path_buf(),
            source,
        })?;
    let listed = String::from_utf8_lossy(&platforms.stdout).into_owned()
        + &String::from_utf8_lossy(&platforms.stderr);
    let platform = if listed.lines().any(|l| l.trim() == "systrap") {
        "systrap"
    } else if listed.lines().any(|l| l.trim() == "ptrace") {
        "ptrace"
    } else {
        return Err(ProbeError::NoPlatform {
            program: program.to_path_buf(),
            listed: listed.trim().to_owned(),
        });
    };
    std::fs::create_dir_all(scratch).map_err(|source| ProbeError::Scratch {
        path: scratch.to_path_buf(),
        source,
    })?;
    let result = probe_in(program, platform, scratch);
    if let Err(error) = std::fs::remove_dir_all(scratch) {
        tracing::debug!(%error, dir = %scratch.display(), "removing the runsc probe's dir");
    }
    result
}

fn probe_in(
    program: &Path,
    platform: &str,
    root: &Path,
) -> std::result::Result<RunscConfig, ProbeError> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .arg("--root")
        .arg(root)
        .args([
            &format!("--platform={platform}"),
            "--network=none",
            "--ignore-cgroups",
            "do",
            "/bin/true",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ProbeError::DoesNotRun {
            program: program.to_path_buf(),
            source,
        })?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => {
                let out = child.wait_with_output().map_err(ProbeError::Wait)?;
                return Err(ProbeError::Failed {
                    platform: platform.to_owned(),
                    status,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(None) if started.elapsed() > Duration::from_secs(20) => {
                super::sys::kill_and_reap(&mut child, "runsc probe");
                return Err(ProbeError::TimedOut {
                    platform: platform.to_owned(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(ProbeError::Wait(e)),
        }
    }
    Ok(RunscConfig {
        program: program.to_path_buf(),
        platform: platform.to_owned(),
    })
}

/// The arguments of `runsc run` for a sandbox.
pub(crate) fn run_args(
    config: &RunscConfig,
    state_root: &Path,
    bundle: &Path,
    id: &str,
    internet: bool,
    restore_from: Option<&Path>,
) -> Vec<String> {
    let mut args = vec![
        "--root".into(),
        state_root.display().to_string(),
        format!("--platform={}", config.platform),
        format!("--network={}", if internet { "host" } else { "none" }),
        "--host-uds=create".into(),
        // Writes go to the sandbox's own disk as files (captured as layers), not into a
        // filestore of runsc's own.
        "--overlay2=none".into(),
        // The runtime put every process in the sandbox's cgroup already.
        "--ignore-cgroups".into(),
    ];
    // Operators chasing a gVisor problem: runsc's debug logs per sandbox.
    if let Some(dir) = std::env::var_os("COURIER_RUNSC_DEBUG_LOG") {
        args.push("--debug".into());
        args.push(format!(
            "--debug-log={}/",
            Path::new(&dir).join(id).display()
        ));
    }
    // A restore takes the run's global flags (another network mode fails, see
    // super::checkpoint) and the same bundle layout; the image names the processes.
    match restore_from {
        Some(image) => args.extend([
            "restore".into(),
            "--detach".into(),
            format!("--image-path={}", image.display()),
        ]),
        None => args.extend(["run".into(), "--detach".into()]),
    }
    args.extend([
        "--bundle".into(),
        bundle.display().to_string(),
        id.to_owned(),
    ]);
    args
}

/// What the container runs.
pub(crate) struct Process<'a> {
    pub args: Vec<String>,
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub hostname: &'a str,
    pub netns: Option<&'a Path>,
    /// The sandbox's host ids: runsc runs the Sentry and the gofer in a user namespace
    /// mapping them (the root file system's lower layers are idmapped to match).
    pub ids: Option<super::IdRange>,
}

/// The OCI runtime spec of a sandbox whose root is `rootfs` (already assembled).
pub(crate) fn oci_spec(rootfs: &Path, process: &Process<'_>) -> serde_json::Value {
    let caps: Vec<String> = super::sys::KEPT_CAPS
        .iter()
        .map(|&c| cap_name(c).to_owned())
        .collect();
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
    ];
    namespaces.push(match process.netns {
        Some(path) => serde_json::json!({"type": "network", "path": path}),
        None => serde_json::json!({"type": "network"}),
    });
    let mappings = process.ids.map(|ids| {
        namespaces.push(serde_json::json!({"type": "user"}));
        serde_json::json!([{"containerID": 0, "hostID": ids.base, "size": ids.count}])
    });
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": process.args,
            "env": process.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": process.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1_048_576u64, "soft": 1_048_576u64}],
            // sudo inside must work: setuid stays meaningful (inside gVisor's kernel).
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": process.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "uidMappings": mappings.clone().unwrap_or_default(),
            "gidMappings": mappings.unwrap_or_default(),
            "maskedPaths": ["/proc/kcore", "/proc/sysrq-trigger"],
            "readonlyPaths": ["/proc/sys", "/proc/irq", "/proc/bus"],
        },
    })
}

fn cap_name(cap: u32) -> &'static str {
    match cap {
        0 => "CAP_CHOWN",
        1 => "CAP_DAC_OVERRIDE",
        3 => "CAP_FOWNER",
        4 => "CAP_FSETID",
        5 => "CAP_KILL",
        6 => "CAP_SETGID",
        7 => "CAP_SETUID",
        10 => "CAP_NET_BIND_SERVICE",
        _ => "CAP_UNKNOWN",
    }
}

/// A command running `program` inside gVisor sandbox `id` (`runsc exec`).
pub(crate) fn exec_command(
    config: &RunscConfig,
    state_root: &Path,
    id: &str,
    program: &std::ffi::OsStr,
    user: Option<(u32, u32)>,
    cwd: Option<&Path>,
) -> Command {
    let (uid, gid) = user.unwrap_or((0, 0));
    let mut cmd = Command::new(&config.program);
    cmd.arg("--root")
        .arg(state_root)
        .arg(format!("--platform={}", config.platform))
        .args(["exec", "--user", &format!("{uid}:{gid}")]);
    if let Some(cwd) = cwd {
        cmd.arg("--cwd").arg(cwd);
    }
    cmd.arg(id).arg(program);
    cmd.env_clear().env("PATH", super::DEFAULT_PATH);
    cmd
}

/// gVisor: runsc runs the assembled root as an OCI bundle.
#[derive(Debug)]
pub(crate) struct GvisorIsolator {
    runsc: RunscConfig,
}

impl GvisorIsolator {
    pub(crate) fn new(runsc: RunscConfig) -> Self {
        Self { runsc }
    }
}

impl super::Isolator for GvisorIsolator {
    fn prepare_control(
        &self,
        dirs: &SandboxDirs,
        ids: Option<super::IdRange>,
    ) -> Result<super::Control> {
        // This runsc cannot hand a descriptor to the container: envd binds its socket in
        // a runtime directory bound into the sandbox, created by gVisor as the sandbox's
        // root.
        let dir = dirs.control_dir();
        std::fs::create_dir(&dir).map_err(Error::io("create dir", &dir))?;
        if let Some(range) = ids {
            std::os::unix::fs::chown(&dir, Some(range.base), Some(range.base))
                .map_err(Error::io("chown", &dir))?;
        }
        Ok(super::Control {
            fd: None,
            binds: vec![super::BindMount {
                source: dir,
                target: PathBuf::from(super::GVISOR_CONTROL_DIR),
                readonly: false,
                map_user: false,
            }],
        })
    }

    fn launch(&self, spec: &super::SandboxSpec, dirs: &SandboxDirs) -> Result<super::init::Launch> {
        Ok(super::init::Launch::Gvisor {
            runsc: self.runsc.program.clone(),
            args: run_args(
                &self.runsc,
                &dirs.runsc_root(),
                &dirs.bundle(),
                &spec.id,
                spec.allow_internet,
                spec.restore_from.as_deref(),
            ),
        })
    }

    fn before_start(
        &self,
        spec: &super::SandboxSpec,
        dirs: &SandboxDirs,
        hostname: &str,
        netns_pid: i32,
        ids: Option<super::IdRange>,
    ) -> Result<()> {
        write_bundle(dirs, spec, hostname, netns_pid, ids)
    }

    fn connect_control(&self, dirs: &SandboxDirs) -> Result<std::os::unix::net::UnixStream> {
        connect_beneath(&dirs.control_dir(), "envd.sock")
    }

    fn command(
        &self,
        sandbox: &super::Running<'_>,
        program: &std::ffi::OsStr,
        options: &super::ExecOptions,
    ) -> Result<Command> {
        Ok(exec_command(
            &self.runsc,
            &sandbox.dirs.runsc_root(),
            sandbox.id,
            program,
            options.user,
            options.cwd.as_deref(),
        ))
    }

    fn host_visible_root(&self) -> bool {
        // The sandbox's files live in gVisor's kernel.
        false
    }
}

/// Connects to the socket `name` in `dir` without following any symlink: the socket is
/// opened `O_PATH` beneath `dir`, must be a socket, and is connected through its
/// descriptor.
fn connect_beneath(dir: &Path, name: &str) -> Result<std::os::unix::net::UnixStream> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", dir)(e.into()))?;
    let path = dir.join(name);
    let sock = rustix::fs::openat2(
        &dir_fd,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| Error::io("open", &path)(e.into()))?;
    let stat = rustix::fs::fstat(&sock).map_err(|e| Error::io("stat", &path)(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(Error::Envd {
            id: path.display().to_string(),
            message: "the control socket was replaced by something that is not a socket".into(),
        });
    }
    let via = rootfs::fd_path(sock.as_fd());
    std::os::unix::net::UnixStream::connect(&via).map_err(Error::io("connect", &path))
}

/// Writes a gVisor sandbox's OCI bundle: its root is the assembled overlay, its network
/// namespace the helper's.
fn write_bundle(
    dirs: &SandboxDirs,
    spec: &SandboxSpec,
    hostname: &str,
    netns_pid: i32,
    ids: Option<IdRange>,
) -> Result<()> {
    let bundle = dirs.bundle();
    fs::create_dir_all(&bundle).map_err(Error::io("create dir", &bundle))?;
    let env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut args = vec![spec.init.display().to_string()];
    args.extend(spec.args.iter().cloned());
    let netns = PathBuf::from(format!("/proc/{netns_pid}/ns/net"));
    let config = oci_spec(
        Path::new(init::GVISOR_ROOT),
        &Process {
            args,
            env: &env,
            cwd: spec.cwd.as_deref().unwrap_or(Path::new("/")),
            hostname,
            netns: Some(&netns),
            ids,
        },
    );
    let path = bundle.join("config.json");
    fs::write(&path, serde_json::to_vec_pretty(&config).expect("json"))
        .map_err(Error::io("write", &path))
}

/// The error for a gVisor sandbox asked of a runtime without runsc.
pub(crate) fn missing_runsc() -> Error {
    Error::Unsupported(
        "isolation: gvisor needs runsc (Debian: apt-get install runsc), which this \
         server did not find working; use isolation \"container\" or install it"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_runs_envd_as_root_with_the_bounded_capabilities() {
        let env = vec![("PATH".to_owned(), "/bin".to_owned())];
        let spec = oci_spec(
            Path::new("/data/sandboxes/a/rootfs"),
            &Process {
                args: vec!["/usr/local/bin/courier-envd".into()],
                env: &env,
                cwd: Path::new("/"),
                hostname: "a",
                netns: Some(Path::new("/proc/42/ns/net")),
                ids: Some(super::super::IdRange {
                    base: 1 << 30,
                    count: 65_536,
                }),
            },
        );
        assert_eq!(spec["root"]["path"], "/data/sandboxes/a/rootfs");
        assert_eq!(spec["process"]["env"][0], "PATH=/bin");
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SETUID"));
        assert!(
            !caps
                .iter()
                .any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_NET_RAW")
        );
        assert!(!caps.iter().any(|c| c == "CAP_UNKNOWN"));
        let net = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/proc/42/ns/net");
        // runsc's own processes run as the sandbox's host ids, not host root.
        assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 1u64 << 30);
        assert!(
            spec["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "user")
        );
    }

    #[test]
    fn run_args_pick_the_network_mode() {
        let config = RunscConfig {
            program: "/usr/bin/runsc".into(),
            platform: "ptrace".into(),
        };
        let args = run_args(&config, Path::new("/s"), Path::new("/b"), "x", false, None);
        assert!(args.contains(&"--network=none".to_owned()));
        assert!(args.contains(&"--host-uds=create".to_owned()));
        assert!(args.contains(&"run".to_owned()));
        assert_eq!(args.last().unwrap(), "x");
        let args = run_args(&config, Path::new("/s"), Path::new("/b"), "x", true, None);
        assert!(args.contains(&"--network=host".to_owned()));
    }

    #[test]
    fn a_restore_keeps_the_runs_flags_and_names_the_image() {
        let config = RunscConfig {
            program: "/usr/bin/runsc".into(),
            platform: "systrap".into(),
        };
        let image = Path::new("/data/snapshots/memory/m1");
        let args = run_args(
            &config,
            Path::new("/s"),
            Path::new("/b"),
            "x",
            false,
            Some(image),
        );
        let run = run_args(&config, Path::new("/s"), Path::new("/b"), "x", false, None);
        let command = args.iter().position(|a| a == "restore").unwrap();
        assert_eq!(args[..command], run[..command], "the same global flags");
        assert!(!args.contains(&"run".to_owned()));
        assert!(args.contains(&"--image-path=/data/snapshots/memory/m1".to_owned()));
        assert_eq!(args[args.len() - 3..], ["--bundle", "/b", "x"]);
    }
}
