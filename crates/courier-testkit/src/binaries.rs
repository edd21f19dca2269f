//! The workspace's sandbox binaries, found in (or built into) the running test's own
//! target dir, so a test never runs a binary of another checkout or profile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// When to run `cargo build` for a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Only when the file is missing: for binaries whose code the test's crate does not
    /// change (courier-envd under the orchestrator's tests).
    IfMissing,
    /// Every time (a no-op when up to date): for binaries built from the crate under test.
    Always,
}

/// `$env` when set, else `<target>/<profile>/<bin>`, built from `package` as `build` says.
///
/// # Panics
/// When the test's own executable has no target dir above it, or the build fails: a test
/// cannot go on without the binary.
pub fn workspace_binary(env: &str, package: &str, bin: &str, build: Build) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let profile_dir = profile_dir();
    let path = profile_dir.join(bin);
    if build == Build::Always || !path.is_file() {
        cargo_build(&profile_dir, &[(package, bin)]);
    }
    path
}

/// The courier-envd binary: `COURIER_ENVD_BIN`, else this target dir's, built if missing.
pub fn envd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "COURIER_ENVD_BIN",
            "courier-envd-bin",
            "courier-envd",
            Build::IfMissing,
        )
    })
    .clone()
}

/// The sandbox init binary: `COURIER_SANDBOX_INIT_BIN`, else this target dir's, built if
/// missing.
pub fn sandbox_init_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "COURIER_SANDBOX_INIT_BIN",
            "courier-sandboxd",
            "courier-sandbox-init",
            Build::IfMissing,
        )
    })
    .clone()
}

/// The courier-sandboxd server: `COURIER_SANDBOXD_BIN`, else this target dir's, (re)built
/// on first use so that it runs the current code.
pub fn sandboxd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "COURIER_SANDBOXD_BIN",
            "courier-sandboxd-bin",
            "courier-sandboxd",
            Build::Always,
        )
    })
    .clone()
}

/// `<target>/<profile>` of the running test (`<target>/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

fn cargo_build(profile_dir: &Path, bins: &[(&str, &str)]) {
    let target_dir = profile_dir.parent().expect("<target> above <profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.arg("build");
    for (package, bin) in bins {
        eprintln!("building {bin} into {}", target_dir.display());
        cmd.args(["-p", package, "--bin", bin]);
    }
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cmd.arg("--release");
    }
    let status = cmd
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {bins:?} failed");
}
