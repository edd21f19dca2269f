//! The agent's process tracking, against real processes: a tracked "agent" that renames
//! itself (as Pi does), starts children, and one child that escapes into a session of its
//! own, is stopped whole by the stop script, which matches no command line.
//!
//! What an attacker (the agent, root in its sandbox) could try: rename itself so no
//! pattern finds it, start its own session to leave the group, or rewrite the `sid` file
//! to point the stop at the sandbox daemon's session. Each test asserts that fails.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_tools::command::{stop_agent_in, tracked_in};

/// Pids whose command line contains `token`.
fn pids_with(token: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(token) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `line` tracked, the way the orchestrator does: through `bash -c` with its
/// output piped (the run's `tee`).
fn start(dir: &Path, line: &str) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{{ {} ; }} | cat",
            tracked_in(dir.to_str().unwrap(), line)
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("bash runs")
}

fn stop(dir: &Path) -> std::process::Output {
    let cmd = stop_agent_in(dir.to_str().unwrap());
    Command::new(&cmd.program)
        .args(&cmd.args)
        .output()
        .expect("sh runs")
}

#[test]
fn a_renamed_agent_its_children_and_an_escaped_session_are_all_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    // The sleeps' argument; the line spells it with an empty quote inside, so only the
    // agent's processes (not the wrappers whose command line holds the line) match it.
    let token = format!("30{}.5", std::process::id());
    let spelled = format!("30{}''.5", std::process::id());
    let out = tmp.path().join("writes");
    // The agent: a child in its session, a child that starts its own session, a writer
    // loop, then it renames itself `pi` like the real Pi does.
    let line = format!(
        "sleep {spelled} & setsid sleep {spelled} & \
         (while :; do echo x >> {out}; sleep 0.05; done) & \
         exec bash -c \"exec -a pi sleep {spelled}\"",
        out = out.display()
    );
    let mut shell = start(tmp.path(), &line);
    wait_until("the agent and its children", || {
        pids_with(&token).len() >= 3 && out.exists()
    });

    let stopped = stop(tmp.path());
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_eq!(
        pids_with(&token),
        Vec::<u32>::new(),
        "every agent process is gone"
    );
    let size = std::fs::metadata(&out).unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        size,
        "nothing writes after the stop"
    );
    shell.wait().unwrap();
}

#[test]
fn without_a_tracked_agent_the_stop_does_nothing_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(stop(tmp.path()).status.success());
    std::fs::write(tmp.path().join("sid"), "not a number; rm -rf /\n").unwrap();
    assert!(stop(tmp.path()).status.success());
}

#[test]
fn a_forged_sid_naming_the_stoppers_own_session_kills_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let token = format!("31{}.5", std::process::id());
    // A bystander in this test's session: what envd and its other processes are to the
    // stop script in a sandbox.
    let mut bystander = Command::new("sleep").arg(&token).spawn().unwrap();
    let own_sid = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Field 6 of /proc/self/stat is the session id (after the parenthesised comm).
    let after_comm = &own_sid[own_sid.rfind(')').unwrap() + 2..];
    let sid = after_comm.split_whitespace().nth(3).unwrap();
    std::fs::write(tmp.path().join("sid"), format!("{sid}\n")).unwrap();

    let stopped = stop(tmp.path());
    assert!(stopped.status.success());
    assert_eq!(
        pids_with(&token),
        vec![bystander.id()],
        "the bystander lives"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}
