//! `/bin/bash -l -c CMD` (what the SDKs send) served without a login shell per command
//! must be indistinguishable from the login shell: each figure is compared with the same
//! command sent as `/usr/bin/bash -l -c CMD` (the same bash, which envd always runs as a
//! login shell). The profile appends to a log, which shows when a login shell ran.
//!
//! Security: the capture of the login environment runs the user's own profile with the
//! user's credentials (like any command), bounded in output and time; what it can make
//! envd do as root is `stat` paths its trace names (at most 256), which reveals nothing
//! back to the sandbox, and read the first 4 bytes of a program the user may execute (to
//! tell ELF and `#!` from scripts bash runs itself), which only picks the path a command
//! takes. A user editing its own profile only changes its own commands,
//! which is what the fingerprint is for (tests below).

// Test code: its helpers unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PROFILE: &str = r#"echo login >> "$HOME/logins"
export FROM_PROFILE="set by .profile"
umask 027
greet() { echo from-function; }
if [ -d "$HOME/.local/bin" ]; then PATH="$HOME/.local/bin:$PATH"; fi
"#;

struct Case {
    envd: TestEnvd,
    home: tempfile::TempDir,
}

impl Case {
    async fn new() -> Case {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".profile"), PROFILE).unwrap();
        // The home must be readable to whoever envd runs commands as.
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Case {
            envd: start().await,
            home,
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn logins(&self) -> usize {
        std::fs::read_to_string(self.home().join("logins"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Runs `script` as `shell -l -c script`; returns (stdout, end event, pid).
    async fn run_with(&self, shell: &str, script: &str, stdin: bool) -> (String, Value, u64) {
        let request = json!({
            "process": {
                "cmd": shell,
                "args": ["-l", "-c", script],
                "envs": {"HOME": self.home().display().to_string()},
                "cwd": self.home().display().to_string(),
            },
            "stdin": stdin,
        });
        let (messages, _) = stream(self.envd.addr, "process.Process/Start", request, &[])
            .await
            .collect()
            .await;
        let pid = messages[0]["event"]["start"]["pid"].as_u64().unwrap();
        let end = messages.last().unwrap()["event"]["end"].clone();
        (stdout_of(&messages), end, pid)
    }

    async fn fast(&self, script: &str) -> (String, Value) {
        let (out, end, _) = self.run_with("/bin/bash", script, false).await;
        (out, end)
    }

    async fn reference(&self, script: &str) -> (String, Value) {
        let (out, end, _) = self.run_with("/usr/bin/bash", script, false).await;
        (out, end)
    }

    /// Runs `script` until a run happens without a login shell (the capture is made in the
    /// background after the first one); panics after 20 s.
    async fn warm_up(&self, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = self.logins();
            self.fast(script).await;
            if self.logins() == before {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the login capture never became usable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn simple_commands_skip_the_login_shell_with_identical_results() {
    let case = Case::new().await;
    case.warm_up("true").await;
    let logins = case.logins();

    // Environment (profile exports, PATH, HOME, SHLVL, PWD, `_`), as a set: std passes
    // the environment sorted where bash keeps its own order.
    let (fast, end) = case.fast("env").await;
    let (reference, _) = case.reference("env").await;
    assert_eq!(end["exited"], true);
    assert!(fast.contains("FROM_PROFILE=set by .profile"), "{fast}");
    assert_eq!(sorted_lines(&fast), sorted_lines(&reference));

    // umask, cwd, credentials, argv[0] as typed.
    for script in [
        "grep Umask /proc/self/status",
        "/bin/pwd",
        "id",
        "cat /proc/self/cmdline",
        "true",
    ] {
        let fast = case.fast(script).await;
        let reference = case.reference(script).await;
        assert_eq!(fast, reference, "{script}");
    }
    let (umask, _) = case.fast("grep Umask /proc/self/status").await;
    assert!(umask.contains("0027"), "{umask}");

    // Exit statuses: a failing program, `false`.
    for script in ["ls /nonexistent-courier", "false"] {
        let fast = case.fast(script).await;
        let reference = case.reference(script).await;
        assert_eq!(fast, reference, "{script}");
        assert_ne!(fast.1["status"], "exit status 0", "{script}");
    }
    // None of the above (but the references) ran a login shell.
    let references = 1 + 5 + 2;
    assert_eq!(case.logins(), logins + references);
}

#[tokio::test]
async fn a_signal_ends_the_program_itself_as_with_the_login_shell() {
    let case = Case::new().await;
    case.warm_up("true").await;
    for shell in ["/bin/bash", "/usr/bin/bash"] {
        let request = json!({
            "process": {
                "cmd": shell,
                "args": ["-l", "-c", "sleep 30"],
                "envs": {"HOME": case.home().display().to_string()},
                "cwd": case.home().display().to_string(),
            },
            "stdin": false,
        });
        let mut frames = stream(case.envd.addr, "process.Process/Start", request, &[]).await;
        let (_, start) = frames.next().await.unwrap();
        let pid = start["event"]["start"]["pid"].as_u64().unwrap();
        // Give the login shell time to exec `sleep` (bash's last-command exec).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "sleep", "{shell}: the pid is the program's");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let (messages, _) = frames.collect().await;
        assert_eq!(
            messages.last().unwrap()["event"]["end"],
            json!({"exitCode": -1, "status": "signal: terminated", "error": "signal: terminated"}),
            "{shell}"
        );
    }
}

#[tokio::test]
async fn profile_changes_and_new_programs_are_seen_by_the_next_command() {
    let case = Case::new().await;
    case.warm_up("printenv LATE").await;
    assert_eq!(case.fast("printenv LATE").await.0, "");

    // A command edits the profile: the next command sees it.
    case.run_with("/bin/bash", "echo export LATE=1 >> .profile", false)
        .await;
    assert_eq!(case.fast("printenv LATE").await.0, "1\n");

    // `pip install --user` creates ~/.local/bin: the profile's PATH entry appears.
    let bin = case.home().join(".local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("hello"), "#!/bin/sh\necho hello from local\n").unwrap();
    std::fs::set_permissions(
        bin.join("hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    case.warm_up("printenv LATE").await;
    assert_eq!(case.fast("hello").await.0, "hello from local\n");

    // A program named like a profile function: the function runs, as in a login shell.
    std::fs::write(bin.join("greet"), "#!/bin/sh\necho from-program\n").unwrap();
    std::fs::set_permissions(
        bin.join("greet"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    case.warm_up("printenv LATE").await;
    assert_eq!(case.fast("greet").await, case.reference("greet").await);
    assert_eq!(case.fast("greet").await.0, "from-function\n");

    // A script without `#!` is run by bash itself (not by exec's `/bin/sh` fallback).
    std::fs::write(
        bin.join("nobang"),
        "[[ -n $BASH_VERSION ]] && echo ran by bash\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("nobang"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    case.warm_up("printenv LATE").await;
    assert_eq!(case.fast("nobang").await, case.reference("nobang").await);
    assert_eq!(case.fast("nobang").await.0, "ran by bash\n");
}

#[tokio::test]
async fn stdin_shell_syntax_and_traps_keep_the_login_shell() {
    let case = Case::new().await;
    case.warm_up("true").await;
    let before = case.logins();
    case.run_with("/bin/bash", "true", true).await;
    case.fast("true; true").await;
    case.fast("echo $HOME").await;
    assert_eq!(case.logins(), before + 3);

    // A profile that sets a trap: bash would not exec the command in its place (the trap
    // runs at the shell's exit), so every command keeps the login shell.
    let profile = format!("{PROFILE}trap 'echo bye' EXIT\n");
    std::fs::write(case.home().join(".profile"), profile).unwrap();
    case.fast("true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = case.logins();
    let (out, _) = case.fast("true").await;
    assert_eq!(out, "bye\n");
    assert_eq!(case.logins(), before + 1);

    // A profile that lowers a resource limit: the command must run under it.
    let profile = format!("{PROFILE}ulimit -S -n 64\n");
    std::fs::write(case.home().join(".profile"), profile).unwrap();
    case.fast("true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = case.logins();
    let script = "grep files /proc/self/limits";
    let fast = case.fast(script).await;
    assert_eq!(fast, case.reference(script).await);
    assert!(fast.0.split_whitespace().any(|w| w == "64"), "{}", fast.0);
    assert_eq!(case.logins(), before + 2);
}

/// A profile that changes directory makes `bash -l -c CMD` run CMD in that directory:
/// every command keeps the login shell, and runs where bash would run it.
#[tokio::test]
async fn a_profile_that_changes_directory_keeps_the_login_shell() {
    let case = Case::new().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let profile = format!("{PROFILE}cd {}\n", elsewhere.path().display());
    std::fs::write(case.home().join(".profile"), profile).unwrap();
    case.fast("true").await;
    case.fast("true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = case.logins();
    let fast = case.fast("/bin/pwd").await;
    assert_eq!(fast, case.reference("/bin/pwd").await);
    assert_eq!(
        fast.0.trim_end(),
        std::fs::canonicalize(elsewhere.path())
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(case.logins(), before + 2, "both ran a login shell");
}

#[tokio::test]
async fn a_one_off_environment_costs_no_background_login() {
    let case = Case::new().await;
    // The same command with a new variable each time (a request id, say): each runs its
    // login shell once, and no capture runs for keys that never come back.
    for i in 0..3 {
        let request = json!({
            "process": {
                "cmd": "/bin/bash",
                "args": ["-l", "-c", "true"],
                "envs": {"HOME": case.home().display().to_string(), "ONE_OFF": i.to_string()},
                "cwd": case.home().display().to_string(),
            },
            "stdin": false,
        });
        stream(case.envd.addr, "process.Process/Start", request, &[])
            .await
            .collect()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(case.logins(), 3);
}
