//! The sudo broker, driven over its socket by hand-written requests.
//!
//! The attacker in these tests is a process of another account inside the sandbox (a
//! service user, a tool running as `other` or `nobody`) that talks to the broker directly
//! to become root: it is refused and nothing runs, whatever its request claims. A sudo
//! member must get root with its own stdin, stdout and stderr, and nothing else of envd.
//!
//! The broker runs in this process (as root), reading accounts from files of the test;
//! each client runs on a thread of its own that switched its credentials (per-thread
//! `setresuid`), so the kernel attaches that thread's uid to what it sends. These tests
//! need root: they skip with a message otherwise, and fail under CI (`CI` set).

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::{
    io::{Read as _, Write as _},
    mem::MaybeUninit,
    os::{
        fd::{AsFd as _, BorrowedFd, OwnedFd},
        linux::net::SocketAddrExt as _,
        unix::{
            fs::PermissionsExt as _,
            net::{SocketAddr, UnixStream},
        },
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use courier_envd::sudo::Broker;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use serde_json::{Value, json};

const USER: u32 = 1000;
const OTHER: u32 = 1001;
const NOBODY: u32 = 65534;

/// A broker on a unique abstract name, with its own account files.
struct Fixture {
    dir: tempfile::TempDir,
    name: String,
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    /// `None` (the test skips) when not root; under CI that is a failure.
    fn new(test: &str) -> Option<Fixture> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI must run the sudo broker tests as root"
            );
            println!("skipped {test}: the broker starts commands as other users, which needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().display().to_string();
        for (home, uid) in [("user", USER), ("other", OTHER)] {
            let home = dir.path().join(home);
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
        }
        std::fs::write(
            dir.path().join("passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 user:x:{USER}:{USER}::{root}/user:/bin/sh\n\
                 other:x:{OTHER}:{OTHER}::{root}/other:/bin/sh\n\
                 nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            format!(
                "root:x:0:\nsudo:x:27:user\nuser:x:{USER}:\nother:x:{OTHER}:\nnogroup:x:{NOBODY}:\n"
            ),
        )
        .unwrap();
        let name = format!("courier-sudo-test-{}-{test}", std::process::id());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let broker = Broker::bind(&name)
            .unwrap()
            .with_accounts(dir.path().join("passwd"), dir.path().join("group"));
        runtime.spawn(broker.serve());
        Some(Fixture { dir, name, runtime })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Connects and reads the broker's hello (on the calling thread).
    fn connect(&self) -> UnixStream {
        let address = SocketAddr::from_abstract_name(self.name.as_bytes()).unwrap();
        let mut stream = UnixStream::connect_addr(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let hello = read_frame(&mut stream).expect("no hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        stream
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Stop serving; commands still running are the test's problem (none should be).
        let runtime = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        runtime.shutdown_background();
    }
}

/// Runs `work` on a thread whose credentials are `uid`:`gid` without supplementary
/// groups: what it sends carries those credentials.
fn as_uid<T: Send>(uid: u32, gid: u32, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                rustix::thread::set_thread_groups(&[]).unwrap();
                rustix::thread::set_thread_res_gid(
                    rustix::thread::Gid::from_raw(gid),
                    rustix::thread::Gid::from_raw(gid),
                    rustix::thread::Gid::from_raw(gid),
                )
                .unwrap();
                rustix::thread::set_thread_res_uid(
                    rustix::thread::Uid::from_raw(uid),
                    rustix::thread::Uid::from_raw(uid),
                    rustix::thread::Uid::from_raw(uid),
                )
                .unwrap();
                work()
            })
            .join()
            .unwrap()
    })
}

fn frame(message: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap();
    let mut frame = (json.len() as u32).to_be_bytes().to_vec();
    frame.extend(json);
    frame
}

fn read_frame(stream: &mut UnixStream) -> Option<Value> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(serde_json::from_slice(&payload).unwrap())
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`).
fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    (&*stream).write_all(&bytes[sent..]).unwrap();
}

/// The caller's side of one command: pipes for its stdio and a directory.
struct Stdio {
    stdin: Option<OwnedFd>,
    stdout: (OwnedFd, Option<OwnedFd>),
    stderr: (OwnedFd, Option<OwnedFd>),
    stdin_writer: Option<OwnedFd>,
    cwd: OwnedFd,
}

impl Stdio {
    fn new(input: &[u8], cwd: &Path) -> Stdio {
        // Close-on-exec, as everything envd opens: tests run in parallel, and a command
        // of one test must not inherit another test's pipes.
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (stdin_r, stdin_w) = pipe();
        let mut writer = std::fs::File::from(stdin_w);
        writer.write_all(input).unwrap();
        drop(writer);
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let cwd = rustix::fs::open(
            cwd,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        Stdio {
            stdin: Some(stdin_r),
            stdout: (out_r, Some(out_w)),
            stderr: (err_r, Some(err_w)),
            stdin_writer: None,
            cwd,
        }
    }

    fn fds(&self) -> [BorrowedFd<'_>; 4] {
        [
            self.stdin.as_ref().unwrap().as_fd(),
            self.stdout.1.as_ref().unwrap().as_fd(),
            self.stderr.1.as_ref().unwrap().as_fd(),
            self.cwd.as_fd(),
        ]
    }

    /// Drops the caller's write ends (as the client exiting would), then reads all output.
    fn output(mut self) -> (String, String) {
        self.stdout.1 = None;
        self.stderr.1 = None;
        self.stdin = None;
        self.stdin_writer = None;
        let read = |fd: OwnedFd| {
            let mut text = String::new();
            std::fs::File::from(fd).read_to_string(&mut text).unwrap();
            text
        };
        (read(self.stdout.0), read(self.stderr.0))
    }
}

/// Sends a run request as `uid` with `stdio`'s descriptors; returns the connection.
fn run_as(fixture: &Fixture, uid: u32, request: &Value, stdio: &Stdio) -> UnixStream {
    let mut request = request.clone();
    request["type"] = json!("run");
    as_uid(uid, uid, || {
        let stream = fixture.connect();
        send_with_fds(&stream, &frame(&request), &stdio.fds());
        stream
    })
}

/// Runs to the end: the replies, stdout, stderr.
fn run_to_end(
    fixture: &Fixture,
    uid: u32,
    request: Value,
    input: &[u8],
) -> (Vec<Value>, String, String) {
    let stdio = Stdio::new(input, fixture.dir.path());
    let mut stream = run_as(fixture, uid, &request, &stdio);
    let mut replies = Vec::new();
    while let Some(reply) = read_frame(&mut stream) {
        let last = reply["type"] != "started";
        replies.push(reply);
        if last {
            break;
        }
    }
    let (out, err) = stdio.output();
    (replies, out, err)
}

fn exit_code(replies: &[Value]) -> i64 {
    let last = replies.last().expect("no reply");
    assert_eq!(last["type"], "exited", "{replies:?}");
    last["code"].as_i64().unwrap()
}

fn refusal(replies: &[Value]) -> String {
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["type"], "refused", "{replies:?}");
    replies[0]["message"].as_str().unwrap().to_owned()
}

fn env_of(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_member_of_group_sudo_runs_commands_as_root_with_its_own_descriptors() {
    let Some(fixture) = Fixture::new("member") else {
        return;
    };
    let request = json!({ "command": ["sh", "-c", "id -u; cat; echo oops >&2; exit 3"] });
    let (replies, out, err) = run_to_end(&fixture, USER, request, b"piped in\n");
    assert_eq!(replies[0]["type"], "started", "{replies:?}");
    assert_eq!(exit_code(&replies), 3);
    assert_eq!(out, "0\npiped in\n");
    assert_eq!(err, "oops\n");
}

#[test]
fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    let Some(fixture) = Fixture::new("killed") else {
        return;
    };
    let (replies, _, _) = run_to_end(
        &fixture,
        USER,
        json!({ "command": ["sh", "-c", "kill -TERM $$"] }),
        b"",
    );
    assert_eq!(exit_code(&replies), 128 + 15);
}

#[test]
fn signals_sent_by_the_client_reach_the_commands_process_group() {
    let Some(fixture) = Fixture::new("signals") else {
        return;
    };
    // The shell's child `sleep` must get it too, as with a terminal's Ctrl-C.
    let stdio = Stdio::new(b"", fixture.dir.path());
    let request = json!({ "command": ["sh", "-c", "sleep 30; echo not interrupted"] });
    let mut stream = run_as(&fixture, USER, &request, &stdio);
    let started = read_frame(&mut stream).unwrap();
    let group = started["pid"].as_u64().expect("no pid") as i32;
    // Once `sleep` runs (a signal during the shell's fork would be the shell's race, not
    // ours), the signal must reach it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !group_commands(group).contains(&"sleep".to_owned()) {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    stream
        .write_all(&frame(&json!({ "type": "signal", "signal": 2 })))
        .unwrap();
    let exited = read_frame(&mut stream).unwrap();
    assert_eq!(exited, json!({ "type": "exited", "code": 130 }));
    assert_eq!(stdio.output().0, "");
}

#[test]
fn commands_run_as_the_target_user_with_its_groups() {
    let Some(fixture) = Fixture::new("target") else {
        return;
    };
    let (replies, out, _) = run_to_end(
        &fixture,
        USER,
        json!({ "user": "nobody", "command": ["id", "-u"] }),
        b"",
    );
    assert_eq!(exit_code(&replies), 0);
    assert_eq!(out, format!("{NOBODY}\n"));
    let (_, out, _) = run_to_end(
        &fixture,
        USER,
        json!({ "user": "#1001", "command": ["id", "-G"] }),
        b"",
    );
    assert_eq!(out, format!("{OTHER}\n"));
    // Root's own supplementary groups, not envd's.
    let (_, out, _) = run_to_end(&fixture, 0, json!({ "command": ["id", "-G"] }), b"");
    assert_eq!(out, "0\n");
}

#[test]
fn the_environment_is_reset_unless_preserved() {
    let Some(fixture) = Fixture::new("env") else {
        return;
    };
    let caller_env = json!([
        ["API_KEY", "sk-test"],
        ["TERM", "xterm-256color"],
        ["PATH", "/tmp/evil:/usr/bin"],
        ["LD_PRELOAD", "/tmp/evil.so"],
        ["HOME", "/home/user"]
    ]);
    let (_, out, _) = run_to_end(
        &fixture,
        USER,
        json!({ "command": ["env"], "env": caller_env }),
        b"",
    );
    let env = env_of(&out);
    assert!(!env.contains_key("API_KEY"), "{out}");
    assert!(!env.contains_key("LD_PRELOAD"), "{out}");
    assert_eq!(env["TERM"], "xterm-256color");
    assert_eq!(env["PATH"], courier_envd::sudo::SECURE_PATH);
    assert_eq!(env["HOME"], "/root");
    assert_eq!(env["USER"], "root");
    assert_eq!(env["SUDO_USER"], "user");
    assert_eq!(env["SUDO_UID"], USER.to_string());
    assert_eq!(env["SUDO_COMMAND"], "/usr/bin/env");
    let (_, out, _) = run_to_end(
        &fixture,
        USER,
        json!({ "command": ["env"], "env": caller_env, "preserve_env": "all" }),
        b"",
    );
    let env = env_of(&out);
    assert_eq!(env["API_KEY"], "sk-test");
    assert_eq!(env["HOME"], "/home/user");
    assert_eq!(env["PATH"], courier_envd::sudo::SECURE_PATH);
    assert!(!env.contains_key("LD_PRELOAD"), "{out}");
}

#[test]
fn accounts_outside_group_sudo_are_refused_and_nothing_runs() {
    // Attack: another account of the sandbox asks the broker for root directly.
    let Some(fixture) = Fixture::new("outsider") else {
        return;
    };
    let marker = fixture.path("marker");
    let request = json!({ "command": ["sh", "-c", format!("touch {}", marker.display())] });
    for (uid, expected) in [
        (OTHER, "other is not in the sudoers file"),
        (NOBODY, "nobody is not in the sudoers file"),
        (4242, "you do not exist in the passwd database"),
    ] {
        let (replies, out, err) = run_to_end(&fixture, uid, request.clone(), b"");
        let message = refusal(&replies);
        assert!(message.contains(expected), "uid {uid}: {message}");
        // Nothing ran, and the broker kept none of the caller's descriptors (the pipes
        // reached end-of-file as soon as the test dropped its write ends).
        assert_eq!((out.as_str(), err.as_str()), ("", ""));
        assert!(!marker.exists(), "uid {uid} ran a command");
    }
}

#[test]
fn an_outsider_is_refused_at_its_first_bytes() {
    // Attack: many connections each announcing a request of megabytes, to make envd (the
    // sandbox's init) hold them all in memory. The broker judges the writer of the first
    // bytes and answers before the rest arrives.
    let Some(fixture) = Fixture::new("firstbytes") else {
        return;
    };
    let reply = as_uid(OTHER, OTHER, || {
        let mut stream = fixture.connect();
        let mut start = (3u32 << 20).to_be_bytes().to_vec();
        start.extend_from_slice(br#"{"type":"run","command":["true"],"env":[["PAD",""#);
        stream.write_all(&start).unwrap();
        read_frame(&mut stream).unwrap()
    });
    assert_eq!(reply["type"], "refused", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("other is not in the sudoers file")
    );
}

#[test]
fn a_request_claiming_another_identity_is_judged_by_the_kernels_credentials() {
    // Attack: the request says it comes from root (fields the protocol does not have,
    // sudo's own variables in the environment and on the command line).
    let Some(fixture) = Fixture::new("lying") else {
        return;
    };
    let marker = fixture.path("lied");
    let lie = json!({
        "uid": 0, "gid": 0, "pid": 1, "invoker": "root", "user": "root",
        "command": ["sh", "-c", format!("touch {}", marker.display())],
        "env": [["SUDO_UID", "0"], ["SUDO_USER", "root"], ["USER", "root"]],
        "assignments": [["SUDO_UID", "0"]],
    });
    let (replies, _, _) = run_to_end(&fixture, OTHER, lie, b"");
    assert!(refusal(&replies).contains("other is not in the sudoers file"));
    assert!(!marker.exists());
    // A member's lie does not change who the command says asked for it.
    let lie = json!({
        "uid": 0,
        "command": ["env"],
        "env": [["SUDO_UID", "0"], ["SUDO_USER", "root"]],
        "assignments": [["SUDO_UID", "0"], ["SUDO_USER", "root"]],
    });
    let (_, out, _) = run_to_end(&fixture, USER, lie, b"");
    let env = env_of(&out);
    assert_eq!(
        (env["SUDO_USER"].as_str(), env["SUDO_UID"].as_str()),
        ("user", "1000")
    );
    // The kernel refuses credentials a process does not have: what the broker relies on.
    let claim_root = as_uid(OTHER, OTHER, || {
        let stream = fixture.connect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmCredentials(rustix::net::UCred {
            pid: rustix::process::getpid(),
            uid: rustix::process::Uid::ROOT,
            gid: rustix::process::Gid::ROOT,
        }));
        sendmsg(
            &stream,
            &[std::io::IoSlice::new(b"x")],
            &mut control,
            SendFlags::empty(),
        )
    });
    assert_eq!(claim_root.unwrap_err(), rustix::io::Errno::PERM);
}

#[test]
fn a_request_written_by_two_processes_is_refused() {
    let Some(fixture) = Fixture::new("twowriters") else {
        return;
    };
    let marker = fixture.path("pieced");
    let stdio = Stdio::new(b"", fixture.dir.path());
    let request = frame(&json!({
        "type": "run",
        "command": ["sh", "-c", format!("touch {}", marker.display())],
    }));
    let (head, tail) = request.split_at(10);
    // Each way round: `first` connects, passes descriptors and writes the start, `second`
    // (holding the same connection) the rest.
    // - Attack: a sudo member starts a request; an outsider it handed the connection to
    //   finishes it with a command of its choosing. Refused: two writers.
    // - Attack: an outsider starts and gets a member's process to write the rest.
    //   Refused at the outsider's first bytes.
    for (first, second, expected) in [
        (USER, OTHER, "two processes"),
        (OTHER, USER, "other is not in the sudoers file"),
    ] {
        let mut stream = as_uid(first, first, || {
            let stream = fixture.connect();
            send_with_fds(&stream, head, &stdio.fds());
            stream
        });
        let clone = stream.try_clone().unwrap();
        // The broker may have hung up already: a failed write is part of the refusal.
        as_uid(second, second, move || {
            let _ = (&clone).write_all(tail);
        });
        let reply = read_frame(&mut stream).unwrap();
        assert_eq!(reply["type"], "refused", "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(expected), "{first} then {second}: {reply}");
        assert!(!marker.exists());
    }
}

#[test]
fn the_broker_keeps_serving_after_a_client_dies_mid_command() {
    let Some(fixture) = Fixture::new("clientdies") else {
        return;
    };
    let stdio = Stdio::new(b"", fixture.dir.path());
    let mut stream = run_as(
        &fixture,
        USER,
        &json!({ "command": ["sleep", "30"] }),
        &stdio,
    );
    let started = read_frame(&mut stream).unwrap();
    let pid = started["pid"].as_u64().expect("no pid");
    // The client dies: its connection closes. The command is hung up (SIGHUP) like on a
    // terminal that went away, and collected.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the command outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (replies, out, _) = run_to_end(&fixture, USER, json!({ "command": ["id", "-u"] }), b"");
    assert_eq!(exit_code(&replies), 0);
    assert_eq!(out, "0\n");
}

#[test]
fn commands_inherit_nothing_of_envd_but_their_three_descriptors() {
    // Attack: a command run through sudo (or any other) finds the broker's listener,
    // another caller's terminal or a directory descriptor among its open files.
    let Some(fixture) = Fixture::new("fds") else {
        return;
    };
    // Another caller's command is running meanwhile, its descriptors held by envd.
    let other_stdio = Stdio::new(b"", fixture.dir.path());
    let mut other = run_as(
        &fixture,
        USER,
        &json!({ "command": ["sleep", "30"] }),
        &other_stdio,
    );
    assert_eq!(read_frame(&mut other).unwrap()["type"], "started");
    // `ls` lists the shell's descriptors from a process of its own, writing straight to
    // stdout (a pipe would add the shell's pipe ends); `; true` keeps the shell from
    // exec'ing it in its own place.
    let (replies, out, _) = run_to_end(
        &fixture,
        USER,
        json!({ "command": ["sh", "-c", "ls -l /proc/$$/fd; true"] }),
        b"",
    );
    assert_eq!(exit_code(&replies), 0);
    let mut open: Vec<i32> = out
        .lines()
        .filter_map(|line| line.split_once(" -> ")?.0.rsplit(' ').next()?.parse().ok())
        .collect();
    open.sort_unstable();
    // What this test process itself leaves open to every child (the test harness's own
    // inheritable descriptors) is not envd's doing.
    let inherited_by_any_child = inheritable_fds();
    let extra: Vec<&i32> = open
        .iter()
        .filter(|fd| **fd > 2 && !inherited_by_any_child.contains(fd))
        .collect();
    assert!(extra.is_empty(), "the command inherited {extra:?}: {out}");
    assert_eq!(&open[..3], &[0, 1, 2], "{out}");
    other
        .write_all(&frame(&json!({ "type": "signal", "signal": 9 })))
        .unwrap();
    assert_eq!(read_frame(&mut other).unwrap()["code"], 137);
}

#[test]
fn commands_start_in_the_callers_directory_and_login_shells_in_the_home() {
    let Some(fixture) = Fixture::new("cwd") else {
        return;
    };
    let (_, out, _) = run_to_end(&fixture, USER, json!({ "command": ["pwd"] }), b"");
    assert_eq!(out.trim_end(), fixture.dir.path().to_str().unwrap());
    let (replies, out, _) = run_to_end(
        &fixture,
        USER,
        json!({ "shell": "login", "user": "other", "command": ["pwd"] }),
        b"",
    );
    assert_eq!(exit_code(&replies), 0);
    assert_eq!(out.trim_end(), fixture.path("other").to_str().unwrap());
}

#[test]
fn malformed_requests_are_refused() {
    let Some(fixture) = Fixture::new("malformed") else {
        return;
    };
    let stdio = Stdio::new(b"", fixture.dir.path());
    let reply_to = |bytes: Vec<u8>, fds: &[BorrowedFd<'_>]| -> Value {
        let mut stream = as_uid(USER, USER, || {
            let stream = fixture.connect();
            send_with_fds(&stream, &bytes, fds);
            stream
        });
        read_frame(&mut stream).unwrap()
    };
    let cases: Vec<(Vec<u8>, Vec<BorrowedFd<'_>>, &str)> = vec![
        (frame(&json!({ "type": "launch" })), vec![], "bad request"),
        (b"\x00\x00\x00\x02{x".to_vec(), vec![], "bad request"),
        (
            frame(&json!({ "type": "run", "command": ["true"] })),
            vec![],
            "4 descriptors",
        ),
        (
            frame(&json!({ "type": "run", "command": ["true"] })),
            [stdio.fds().to_vec(), vec![stdio.cwd.as_fd()]].concat(),
            "more than 4",
        ),
        // A length the broker must not allocate.
        (
            u32::MAX.to_be_bytes().to_vec(),
            vec![],
            "larger than the limit",
        ),
        (
            frame(&json!({ "type": "run", "user": "ghost", "command": ["true"] })),
            stdio.fds().to_vec(),
            "unknown user ghost",
        ),
        (
            frame(&json!({ "type": "run", "command": ["no-such-command"] })),
            stdio.fds().to_vec(),
            "no-such-command: command not found",
        ),
    ];
    for (bytes, fds, expected) in cases {
        let reply = reply_to(bytes, &fds);
        assert_eq!(reply["type"], "refused", "{expected}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(expected),
            "{expected}: {reply}"
        );
    }
}

#[test]
fn list_and_validate_answer_members_and_refuse_others() {
    let Some(fixture) = Fixture::new("list") else {
        return;
    };
    let ask = |uid: u32, request: Value| -> Value {
        as_uid(uid, uid, || {
            let mut stream = fixture.connect();
            stream.write_all(&frame(&request)).unwrap();
            read_frame(&mut stream).unwrap()
        })
    };
    assert_eq!(
        ask(USER, json!({ "type": "validate" })),
        json!({ "type": "output", "text": "", "code": 0 })
    );
    let listing = ask(USER, json!({ "type": "list" }));
    assert!(
        listing["text"]
            .as_str()
            .unwrap()
            .starts_with("User user may run"),
        "{listing}"
    );
    assert_eq!(
        ask(USER, json!({ "type": "list", "command": ["id"] }))["text"],
        "/usr/bin/id\n"
    );
    assert_eq!(ask(OTHER, json!({ "type": "validate" }))["type"], "refused");
    assert_eq!(ask(OTHER, json!({ "type": "list" }))["type"], "refused");
}

/// Descriptors of this process that are not close-on-exec (numbers above 2).
fn inheritable_fds() -> Vec<i32> {
    const O_CLOEXEC: u32 = 0o2_000_000;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
        .filter(|fd| {
            let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
                return false;
            };
            info.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .is_some_and(|flags| flags & O_CLOEXEC == 0)
        })
        .collect()
}

/// The command names of the processes in process group `group`.
fn group_commands(group: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.ok()?.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split at the last ')'.
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let pgrp: i32 = tail.split_whitespace().nth(2)?.parse().ok()?;
            (pgrp == group).then_some(comm)
        })
        .collect()
}
