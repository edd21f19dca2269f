//! The runtime raises its own soft `RLIMIT_NOFILE` (it holds descriptors per sandbox) but
//! its sandboxes keep the limit it started with. A test binary of its own: the raise is
//! once per process, so no other test may start a runtime first.

use std::path::PathBuf;
use std::process::Stdio;

use courier_sandboxd::runtime::{Runtime, RuntimeConfig, SandboxSpec};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[path = "support/mod.rs"]
mod support;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");

/// Attacker inside a sandbox: the server's raised limit is not the sandbox's to use — its
/// processes, the init and commands run inside alike, get the limit the server started
/// with (raising their soft limit up to the hard one, as on any host, is theirs to do).
#[test]
fn the_runtime_raises_its_descriptor_limit_and_sandboxes_keep_the_original() {
    if !support::root_or_skip("nofile") {
        return;
    }
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard <= 1024 {
        eprintln!("hard RLIMIT_NOFILE is {hard}: nothing to raise");
        return;
    }
    // What a service manager usually gives a daemon.
    setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = courier_sandboxd::base_layer::assemble(&dir.path().join("layers/base")).unwrap();
    let mut config = RuntimeConfig::new(dir.path().join("data"));
    config.helper = PathBuf::from(HELPER);
    let runtime = Runtime::with_config(config).unwrap();
    assert_eq!(
        getrlimit(Resource::RLIMIT_NOFILE).unwrap(),
        (hard, hard),
        "the runtime did not raise its soft limit"
    );

    let spec = SandboxSpec::new(
        format!("nofile{}", std::process::id()),
        vec![base],
        "/bin/sleep",
        &["infinity"],
    );
    let handle = runtime.create(spec).unwrap();
    let result = (|| {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", handle.init_pid))?;
        let init = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let out = runtime
            .command(&handle.id, "/bin/sh")
            .map_err(std::io::Error::other)?
            .args(["-c", "ulimit -n; ulimit -Hn"])
            .stdin(Stdio::null())
            .output()?;
        Ok::<_, std::io::Error>((init, String::from_utf8_lossy(&out.stdout).into_owned()))
    })();
    runtime.kill_all().unwrap();
    let (init, exec) = result.unwrap();
    assert_eq!(init, ["1024", &hard.to_string()], "the sandbox's init");
    assert_eq!(exec, format!("1024\n{hard}\n"), "a command run inside");
}
