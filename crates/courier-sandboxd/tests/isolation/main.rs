//! Isolation and lifecycle tests against real sandboxes.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. Every sandbox is killed by the fixture's `Drop`, even when a test fails.
//! Timing checks use generous margins: the machine may be loaded.

// Test code may unwrap (clippy.toml's allow-unwrap-in-tests covers only `#[test]`
// functions, not the helpers of an integration test binary).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use courier_sandboxd::Error;
use courier_sandboxd::runtime::{
    BindMount, ExecOptions, Isolation, Limits, RecoverPolicy, Runtime, RuntimeConfig, SandboxSpec,
    SandboxStatus,
};

mod confinement;
mod lifecycle;
mod network;
mod resources;
#[path = "../support/mod.rs"]
mod support;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");

pub(crate) struct Fixture {
    pub(crate) runtime: Runtime,
    pub(crate) config: RuntimeConfig,
    pub(crate) base: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) isolation: Isolation,
}

impl Fixture {
    /// A runtime on a fresh data dir with a fresh base layer, or `None` when not root.
    pub(crate) fn new(test: &str) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let base = courier_sandboxd::base_layer::assemble(&dir.path().join("layers/base"))
            .expect("base layer");
        let mut config = RuntimeConfig::new(dir.path().join("data"));
        config.helper = PathBuf::from(HELPER);
        let isolation = support::isolation();
        if isolation == Isolation::Gvisor {
            let runsc = courier_sandboxd::runtime::gvisor::find_runsc().expect("runsc installed");
            config.runsc = Some(
                courier_sandboxd::runtime::gvisor::probe(&runsc, &dir.path().join("probe"))
                    .expect("runsc works"),
            );
        }
        let runtime = Runtime::with_config(config.clone()).expect("runtime");
        Some(Self {
            runtime,
            config,
            base,
            dir,
            isolation,
        })
    }

    pub(crate) fn gvisor(&self) -> bool {
        self.isolation == Isolation::Gvisor
    }

    /// The init's pid inside: 2 under the runtime's own PID 1, 1 under gVisor.
    pub(crate) fn init_pid(&self) -> u32 {
        if self.gvisor() { 1 } else { 2 }
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A spec with a unique id (cgroups are host-global) running `init args`.
    pub(crate) fn spec(&self, init: &str, args: &[&str]) -> SandboxSpec {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut spec = SandboxSpec::new(id, vec![self.base.clone()], init, args);
        spec.isolation = self.isolation;
        spec
    }

    pub(crate) fn sleeper(&self) -> SandboxSpec {
        self.spec("/bin/sleep", &["infinity"])
    }

    /// A sleeper with the host file `source` bound read-only at `target`.
    pub(crate) fn with_file(&self, source: &Path, target: &str) -> SandboxSpec {
        let mut spec = self.sleeper();
        spec.binds.push(BindMount {
            source: source.to_path_buf(),
            target: target.into(),
            readonly: true,
            map_user: false,
        });
        spec
    }

    /// Runs `sh -c script` inside sandbox `id` and returns its output.
    pub(crate) fn sh(&self, id: &str, script: &str) -> Output {
        self.runtime
            .command(id, "/bin/sh")
            .expect("command")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("run in sandbox")
    }

    pub(crate) fn sh_ok(&self, id: &str, script: &str) -> String {
        let out = self.sh(id, script);
        assert!(
            out.status.success(),
            "`{script}` failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = self.runtime.kill_all() {
            eprintln!("fixture cleanup in {}: {e}", self.dir.path().display());
        }
        // Also whatever other runtimes on this data dir left behind (e.g. a test that
        // failed between a simulated crash and its recovery).
        match self.runtime.recover(RecoverPolicy::KillAll) {
            Ok(report) if !report.failed.is_empty() => {
                eprintln!("fixture cleanup failed: {:?}", report.failed)
            }
            Ok(_) => {}
            Err(e) => eprintln!("fixture cleanup in {}: {e}", self.dir.path().display()),
        }
    }
}

/// Whether the data of the sparse file `image` contains `needle` (only the allocated
/// ranges are read).
pub(crate) fn image_contains(image: &Path, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsFd;
    let mut file = fs::File::open(image).expect("open image");
    let len = file.metadata().unwrap().len() as i64;
    let mut pos = 0i64;
    while pos < len {
        let Ok(start) = nix::unistd::lseek(file.as_fd(), pos, nix::unistd::Whence::SeekData) else {
            break;
        };
        let end = nix::unistd::lseek(file.as_fd(), start, nix::unistd::Whence::SeekHole).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start as u64)).unwrap();
        file.read_exact(&mut buf).unwrap();
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        pos = end;
    }
    false
}

pub(crate) fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// Every mount line of every process on the host that mentions `path`.
pub(crate) fn mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(info) = fs::read_to_string(entry.path().join("mountinfo")) {
            found.extend(
                info.lines()
                    .filter(|l| l.contains(&needle))
                    .map(|l| format!("{:?}: {l}", entry.path())),
            );
        }
    }
    found
}
