//! Memory checkpoints of gVisor sandboxes (`runsc checkpoint`) and sandboxes restored
//! from them (`runsc restore`, see [`SandboxSpec::restore_from`](super::SandboxSpec)).
//!
//! What runsc 20240729 can save decides what is served (measured, with the exact errors,
//! in `MEMSNAP-FINDINGS.md` at the workspace root):
//!
//! - only sandboxes on gVisor's own netstack (`--network=none`): "checkpoint not supported
//!   when using hostinet" for the internet sandboxes' `--network=host`;
//! - only while envd's control socket, a host Unix socket, is neither bound nor connected:
//!   envd lets go of it on `SIGUSR2` and binds it again on `SIGUSR1`
//!   (`courier_envd::checkpoint`), the source after its checkpoint and every restored
//!   sandbox alike.
//!
//! A checkpoint is taken with the sandbox paused inside gVisor (`runsc pause`), and its
//! disk is captured in that same pause, so the memory image and the files it refers to are
//! of one instant. A restored sandbox stands on those files (its layers) at the same paths,
//! through its own disk and control directory; its envd still holds the source's access
//! token until the control plane replaces it with `/init`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::gvisor::RunscConfig;
use super::{Isolation, Runtime};
use crate::error::{Error, Result};

/// The file envd writes beside its socket once it let go of it (`courier_envd::checkpoint`).
const QUIESCED_FILE: &str = "envd.quiesced";

/// How long envd may take to let go of its socket (it waits up to 2 s for connections).
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long envd may take to bind its socket again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a checkpoint took, phase by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckpointTimes {
    /// envd letting go of its socket.
    pub quiesce: Duration,
    /// `runsc checkpoint` (the sandbox paused).
    pub checkpoint: Duration,
    /// The caller's capture of the disk (the sandbox still paused).
    pub capture: Duration,
    /// Resuming the sandbox and envd binding its socket again.
    pub resume: Duration,
}

impl Runtime {
    /// Why sandbox `id`'s memory cannot be checkpointed, or `None` when it can: a gVisor
    /// sandbox without internet that has a control socket.
    pub fn checkpoint_refusal(&self, id: &str) -> Result<Option<String>> {
        self.with_entry(id, |e| {
            let spec = &e.state.spec;
            Ok(if spec.isolation != Isolation::Gvisor {
                Some(format!(
                    "memory snapshots need gVisor isolation; sandbox {id} runs in a {}",
                    spec.isolation
                ))
            } else if spec.allow_internet {
                Some(format!(
                    "sandbox {id} has internet access, and runsc cannot checkpoint a sandbox \
                     on the host's network stack"
                ))
            } else if !spec.control_socket {
                Some(format!("sandbox {id} has no control socket"))
            } else {
                None
            })
        })
    }

    /// Checkpoints running gVisor sandbox `id`'s memory into the directory `image`
    /// (created, mode 0700; it holds the sandbox's memory: secrets included) and runs
    /// `capture` in the same pause (the caller's copy of the disk), then resumes the
    /// sandbox. The sandbox keeps running whatever happens; on error `image` may be
    /// left half-written for the caller to remove. Refused (`Unsupported`) where
    /// [`checkpoint_refusal`](Self::checkpoint_refusal) says so.
    pub fn checkpoint(
        &self,
        id: &str,
        image: &Path,
        capture: impl FnOnce() -> Result<()>,
    ) -> Result<CheckpointTimes> {
        if let Some(reason) = self.checkpoint_refusal(id)? {
            return Err(Error::Unsupported(reason));
        }
        let runsc = self
            .runsc()
            .cloned()
            .ok_or_else(super::gvisor::missing_runsc)?;
        let dirs = self.dirs(id);
        let state_root = dirs.runsc_root();
        let control = dirs.control_dir();
        create_private_dir(image)?;
        let mut times = CheckpointTimes::default();

        let clock = Instant::now();
        quiesce(&runsc, &state_root, id, &control)?;
        times.quiesce = clock.elapsed();
        // From here on the sandbox must be resumed and envd told to bind again, whatever
        // fails.
        let saved = (|| {
            runsc_ok(&runsc, &state_root, id, &["pause"])?;
            let clock = Instant::now();
            let mut args = vec![
                "checkpoint".to_owned(),
                "--leave-running".to_owned(),
                format!("--image-path={}", image.display()),
            ];
            args.push(id.to_owned());
            let checkpointed = run_runsc(&runsc, &state_root, id, &args);
            times.checkpoint = clock.elapsed();
            checkpointed?;
            let clock = Instant::now();
            let captured = capture();
            times.capture = clock.elapsed();
            captured
        })();
        let clock = Instant::now();
        let resumed =
            runsc_ok(&runsc, &state_root, id, &["resume"]).and_then(|()| self.rebind_control(id));
        times.resume = clock.elapsed();
        saved?;
        resumed?;
        Ok(times)
    }

    /// Tells the envd of gVisor sandbox `id` to bind its control socket again (after a
    /// checkpoint, or in a sandbox restored from one) and waits until it is there.
    pub fn rebind_control(&self, id: &str) -> Result<()> {
        let runsc = self
            .runsc()
            .cloned()
            .ok_or_else(super::gvisor::missing_runsc)?;
        let dirs = self.dirs(id);
        runsc_ok(&runsc, &dirs.runsc_root(), id, &["kill", id, "USR1"])?;
        let socket = dirs.control_dir().join("envd.sock");
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            // The file appears at bind(), before listen(): a connection refused right
            // then is retried by the caller's health check.
            if fs::symlink_metadata(&socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Envd {
                    id: id.to_owned(),
                    message: format!(
                        "envd did not bind its control socket again within {}s",
                        REBIND_TIMEOUT.as_secs()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Asks envd to let go of its control socket (`SIGUSR2`) and waits for its report.
fn quiesce(runsc: &RunscConfig, state_root: &Path, id: &str, control: &Path) -> Result<()> {
    let report = control.join(QUIESCED_FILE);
    // A report the sandbox planted (the directory is writable inside) is removed first;
    // unlink does not follow a symlink.
    match fs::remove_file(&report) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("remove", &report)(e));
        }
        _ => {}
    }
    runsc_ok(runsc, state_root, id, &["kill", id, "USR2"])?;
    let deadline = Instant::now() + QUIESCE_TIMEOUT;
    let text = loop {
        if let Some(text) = read_report(control)? {
            break text;
        }
        if Instant::now() >= deadline {
            let _ = runsc_ok(runsc, state_root, id, &["kill", id, "USR1"]);
            return Err(Error::Checkpoint {
                id: id.to_owned(),
                message: format!(
                    "envd did not let go of its control socket within {}s",
                    QUIESCE_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // What a process of the sandbox could have written is only believed as far as
    // "checkpoint now": a false "ok" makes runsc's checkpoint fail, and the sandbox runs
    // on.
    if text.trim() != "ok" {
        let _ = runsc_ok(runsc, state_root, id, &["kill", id, "USR1"]);
        return Err(Error::Checkpoint {
            id: id.to_owned(),
            message: format!(
                "envd could not close every connection of its control socket ({}); a \
                 checkpoint would fail",
                text.trim().chars().take(64).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// envd's report in `control`, if there is one yet: a regular file read without
/// following symlinks (the sandbox can write that directory), at most 64 bytes.
fn read_report(control: &Path) -> Result<Option<String>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::io::Read as _;
    let dir = rustix::fs::open(
        control,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", control)(e.into()))?;
    let file = match rustix::fs::openat2(
        &dir,
        QUIESCED_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(file) => file,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Error::io("open", control.join(QUIESCED_FILE))(e.into())),
    };
    let stat = rustix::fs::fstat(&file).map_err(|e| Error::io("stat", control)(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(Some("not a regular file".to_owned()));
    }
    let mut text = String::new();
    fs::File::from(file)
        .take(64)
        .read_to_string(&mut text)
        .map_err(Error::io("read", control.join(QUIESCED_FILE)))?;
    Ok(Some(text))
}

/// Creates `dir` (and its parents) with mode 0700: nobody but root reads an image.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("create dir", dir))
}

/// `runsc --root <state_root> <args…>` naming sandbox `id` last unless `args` do.
fn runsc_ok(runsc: &RunscConfig, state_root: &Path, id: &str, args: &[&str]) -> Result<()> {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if !args.iter().any(|a| a == id) {
        args.push(id.to_owned());
    }
    run_runsc(runsc, state_root, id, &args)
}

fn run_runsc(runsc: &RunscConfig, state_root: &Path, id: &str, args: &[String]) -> Result<()> {
    let output = Command::new(&runsc.program)
        .arg("--root")
        .arg(state_root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .env_clear()
        .env("PATH", super::DEFAULT_PATH)
        .output()
        .map_err(Error::sys(format!("run {}", runsc.program.display())))?;
    if output.status.success() {
        return Ok(());
    }
    // runsc's errors on a failed save end in a Go stack trace: its first line says why.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or("").trim();
    Err(Error::Checkpoint {
        id: id.to_owned(),
        message: format!(
            "runsc {} failed ({}): {}",
            args.first().map_or("", String::as_str),
            output.status,
            first.chars().take(400).collect::<String>()
        ),
    })
}
