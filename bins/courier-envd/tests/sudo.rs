//! `sudo` through courier-envd: the binary as `--sudo-socket` daemon (root) and, run
//! through a link named `sudo`, as the client of an unprivileged user, the way a gVisor
//! sandbox uses them.
//!
//! The daemon runs in a private mount namespace where `/etc/passwd` and `/etc/group` are
//! the base template's accounts (`user`, uid 1000, in group `sudo`; `other`, uid 1001,
//! not), so the machine's own files are never touched. The attacker is a process of
//! another account inside the sandbox: asking the broker for root (refused, nothing
//! runs), or squatting the socket name to collect what sudo callers send (it gets
//! nothing). These tests need root: they skip with a message otherwise, and fail under
//! CI (`CI` set). The gVisor test also needs runsc, and skips without it.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::{
        linux::net::SocketAddrExt as _,
        unix::{fs::PermissionsExt as _, net::SocketAddr, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const ENVD: &str = env!("CARGO_BIN_EXE_courier-envd");
const USER: u32 = 1000;
const OTHER: u32 = 1001;

/// A daemon with the broker on a unique name, a `sudo` link and a work directory.
struct Fixture {
    dir: tempfile::TempDir,
    name: String,
    daemon: Child,
}

impl Fixture {
    /// `None` (the test skips) when not root; under CI that is a failure.
    fn new(test: &str) -> Option<Fixture> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI must run the sudo tests as root"
            );
            println!("skipped {test}: the sudo broker runs as root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(path("work")).unwrap();
        std::fs::set_permissions(path("work"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(
            path("passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 user:x:{USER}:{USER}::/home/user:/bin/sh\n\
                 other:x:{OTHER}:{OTHER}::/home/other:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        )
        .unwrap();
        std::fs::write(
            path("group"),
            format!(
                "root:x:0:\nsudo:x:27:user\nuser:x:{USER}:\nother:x:{OTHER}:\nnogroup:x:65534:\n"
            ),
        )
        .unwrap();
        std::os::unix::fs::symlink(ENVD, path("sudo")).unwrap();
        let name = format!("courier-sudo-bin-{}-{test}", std::process::id());
        let log = std::fs::File::create(path("envd.log")).unwrap();
        // unshare and sh exec in place: the child is envd itself. envd starts with
        // SIGINT, SIGQUIT and SIGHUP ignored, as a shell's background job would: the
        // commands it runs must not inherit that (Ctrl-C must still stop them).
        let daemon = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"trap '' INT QUIT HUP && mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(path("passwd"))
            .arg(path("group"))
            .arg(ENVD)
            .arg(format!("--sudo-socket={name}"))
            .arg("--socket")
            .arg(path("envd.sock"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut fixture = Fixture { dir, name, daemon };
        fixture.wait_listening();
        Some(fixture)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("envd.log")).unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = SocketAddr::from_abstract_name(self.name.as_bytes()).unwrap();
        while std::os::unix::net::UnixStream::connect_addr(&address).is_err() {
            if let Some(status) = self.daemon.try_wait().unwrap() {
                panic!("courier-envd exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "no broker: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `sudo ARGS` as `uid` (no supplementary groups), in the work directory, with only
    /// `env` (plus PATH and the broker's name) in its environment.
    fn sudo(&self, uid: u32, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(self.path("sudo"));
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env(courier_envd::sudo::SOCKET_NAME_ENV, &self.name)
            .envs(env.iter().copied())
            .current_dir(self.path("work"))
            .uid(uid)
            .gid(uid);
        command
    }

    /// Runs `sudo ARGS` as `uid` to the end with `input` on its stdin.
    fn run(&self, uid: u32, args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
        let mut child = self
            .sudo(uid, args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `sudo sh -c 'echo $$; exec sleep 30'` as `user`: the client and the pid
    /// of the command (which printed it).
    fn start_sleeper(&self) -> (Child, i32) {
        let mut client = self
            .sudo(USER, &["sh", "-c", "echo $$; exec sleep 30"], &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid: {line:?}"));
        // `exec sleep`: wait until the pid is sleep, so a signal meets sleep, not sh.
        wait_for(
            || comm(pid).as_deref() == Some("sleep"),
            "the command to exec sleep",
        );
        (client, pid)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process's command name, `None` once it is gone.
fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// A process's state letter (`S`, `R`, `T`, `Z`, ...), `None` once it is gone.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

#[test]
fn sudo_n_id_u_prints_0_for_a_member_of_group_sudo() {
    let Some(fx) = Fixture::new("member") else {
        return;
    };
    let output = fx.run(USER, &["-n", "id", "-u"], &[], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "0\n");
    let output = fx.run(
        USER,
        &["sh", "-c", "echo $SUDO_USER $SUDO_UID $(id -un)"],
        &[],
        b"",
    );
    assert_eq!(stdout(&output), "user 1000 root\n");
    // No signal ignored, though envd ignores SIGINT, SIGQUIT and SIGHUP.
    let ignored = |status: &str| -> u64 {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    let daemon = std::fs::read_to_string(format!("/proc/{}/status", fx.daemon.id())).unwrap();
    assert_eq!(ignored(&daemon) & 0b111, 0b111, "{daemon}");
    let output = fx.run(USER, &["cat", "/proc/self/status"], &[], b"");
    // Signals 1 to 31 (libc keeps 32 and 33 for itself; real-time ones are left as they are).
    assert_eq!(
        ignored(&stdout(&output)) & 0x7fff_ffff,
        0,
        "{}",
        stdout(&output)
    );
    assert!(
        fx.log()
            .contains("invoker=user target=root program=/usr/bin/id"),
        "{}",
        fx.log()
    );
}

#[test]
fn exit_codes_pass_through() {
    let Some(fx) = Fixture::new("codes") else {
        return;
    };
    let code = |args: &[&str]| fx.run(USER, args, &[], b"").status.code();
    assert_eq!(code(&["sh", "-c", "exit 42"]), Some(42));
    assert_eq!(code(&["sh", "-c", "kill -KILL $$"]), Some(128 + 9));
    assert_eq!(code(&["true"]), Some(0));
    let missing = fx.run(USER, &["no-such-command"], &[], b"");
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("sudo: no-such-command: command not found"));
}

#[test]
fn stdin_stdout_and_stderr_pass_through() {
    let Some(fx) = Fixture::new("stdio") else {
        return;
    };
    let output = fx.run(
        USER,
        &["sh", "-c", "tr a-z A-Z; echo to-stderr >&2"],
        &[],
        b"piped in\n",
    );
    assert!(output.status.success());
    assert_eq!(stdout(&output), "PIPED IN\n");
    assert_eq!(stderr(&output), "to-stderr\n");
    // The command starts where the caller is.
    let output = fx.run(USER, &["pwd"], &[], b"");
    assert_eq!(
        stdout(&output).trim_end(),
        fx.path("work").to_str().unwrap()
    );
}

#[test]
fn minus_u_runs_as_that_user() {
    let Some(fx) = Fixture::new("minus-u") else {
        return;
    };
    let output = fx.run(
        USER,
        &["-u", "nobody", "sh", "-c", "id -un; echo $HOME"],
        &[],
        b"",
    );
    assert_eq!(stdout(&output), "nobody\n/nonexistent\n");
    let output = fx.run(USER, &["-u", "ghost", "true"], &[], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("unknown user ghost"));
}

#[test]
fn the_environment_is_reset_unless_minus_e() {
    let Some(fx) = Fixture::new("env") else {
        return;
    };
    let env = [
        ("API_KEY", "sk-test"),
        ("TERM", "xterm"),
        ("LD_PRELOAD", "/tmp/x.so"),
    ];
    let reset = stdout(&fx.run(USER, &["env"], &env, b""));
    assert!(!reset.contains("API_KEY"), "{reset}");
    assert!(reset.contains("TERM=xterm\n"), "{reset}");
    assert!(reset.contains(&format!("PATH={}\n", courier_envd::sudo::SECURE_PATH)));
    assert!(
        reset.contains("HOME=/root\n") && reset.contains("USER=root\n"),
        "{reset}"
    );
    let kept = stdout(&fx.run(USER, &["-E", "env"], &env, b""));
    assert!(kept.contains("API_KEY=sk-test\n"), "{kept}");
    assert!(!kept.contains("LD_PRELOAD"), "{kept}");
    assert!(kept.contains(&format!("PATH={}\n", courier_envd::sudo::SECURE_PATH)));
    let set = stdout(&fx.run(USER, &["DEBIAN_FRONTEND=noninteractive", "env"], &[], b""));
    assert!(set.contains("DEBIAN_FRONTEND=noninteractive\n"), "{set}");
}

#[test]
fn an_account_outside_group_sudo_is_refused_and_nothing_runs() {
    // Attack: another account of the sandbox runs the sudo client to become root.
    let Some(fx) = Fixture::new("outsider") else {
        return;
    };
    let marker = fx.path("work/marker");
    let script = format!("touch {}", marker.display());
    let output = fx.run(OTHER, &["-n", "sh", "-c", &script], &[], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("other is not in the sudoers file"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "");
    assert!(!marker.exists(), "the outsider's command ran");
    for args in [&["-v"][..], &["-l"]] {
        assert_eq!(
            fx.run(OTHER, args, &[], b"").status.code(),
            Some(1),
            "{args:?}"
        );
    }
    assert!(fx.log().contains("sudo refused"), "{}", fx.log());
}

#[test]
fn sigint_and_sigterm_to_sudo_reach_the_command() {
    let Some(fx) = Fixture::new("signals") else {
        return;
    };
    for (sig, number) in [
        (nix::sys::signal::Signal::SIGINT, 2),
        (nix::sys::signal::Signal::SIGTERM, 15),
    ] {
        let (mut client, pid) = fx.start_sleeper();
        signal(client.id(), sig);
        let status = client.wait().unwrap();
        assert_eq!(status.code(), Some(128 + number), "{sig}");
        wait_for(|| comm(pid).is_none(), "the command to end");
    }
}

#[test]
fn ctrl_z_stops_the_command_and_sudo_and_fg_continues_both() {
    let Some(fx) = Fixture::new("tstp") else {
        return;
    };
    let (mut client, pid) = fx.start_sleeper();
    let client_pid = client.id() as i32;
    signal(client.id(), nix::sys::signal::Signal::SIGTSTP);
    wait_for(|| state(pid) == Some('T'), "the command to stop");
    wait_for(|| state(client_pid) == Some('T'), "sudo to stop");
    signal(client.id(), nix::sys::signal::Signal::SIGCONT);
    wait_for(|| state(pid) == Some('S'), "the command to continue");
    wait_for(|| state(client_pid) != Some('T'), "sudo to continue");
    signal(client.id(), nix::sys::signal::Signal::SIGTERM);
    assert_eq!(client.wait().unwrap().code(), Some(143));
}

#[test]
fn killing_sudo_hangs_up_the_command_and_the_broker_serves_on() {
    let Some(fx) = Fixture::new("clientdies") else {
        return;
    };
    let (mut client, pid) = fx.start_sleeper();
    client.kill().unwrap();
    client.wait().unwrap();
    wait_for(|| comm(pid).is_none(), "the command to be hung up");
    let output = fx.run(USER, &["id", "-u"], &[], b"");
    assert_eq!(stdout(&output), "0\n");
}

#[test]
fn a_process_squatting_the_socket_name_learns_nothing() {
    // Attack: a process of `user` binds the broker's name first (or after envd died) to
    // collect what sudo callers send: command lines, environments with tokens, their
    // terminal. The client checks the credentials on the hello and sends nothing.
    let Some(fx) = Fixture::new("squatter") else {
        return;
    };
    let name = format!("{}-squat", fx.name);
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let squatter = std::thread::spawn(move || {
        rustix::thread::set_thread_groups(&[]).unwrap();
        let (uid, gid) = (
            rustix::thread::Uid::from_raw(USER),
            rustix::thread::Gid::from_raw(USER),
        );
        rustix::thread::set_thread_res_gid(gid, gid, gid).unwrap();
        rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
        let (mut connection, _) = listener.accept().unwrap();
        let hello = br#"{"type":"hello","protocol":1}"#;
        let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(hello);
        // The client may hang up after the first bytes it refuses: a write error is fine.
        let _ = connection.write_all(&frame);
        connection
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut received = Vec::new();
        let _ = connection.read_to_end(&mut received);
        received
    });
    std::thread::sleep(Duration::from_millis(200));
    let output = Command::new(fx.path("sudo"))
        .args(["-E", "sh", "-c", "echo ran"])
        .env(courier_envd::sudo::SOCKET_NAME_ENV, &name)
        .env("API_KEY", "sk-secret")
        .current_dir(fx.path("work"))
        .uid(USER)
        .gid(USER)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("not the privilege broker") && message.contains("uid 1000"),
        "{message}"
    );
    assert_eq!(stdout(&output), "");
    assert_eq!(squatter.join().unwrap(), b"", "the squatter received data");
}

#[test]
fn options_list_validate_and_unknown_ones() {
    let Some(fx) = Fixture::new("options") else {
        return;
    };
    let unknown = fx.run(USER, &["-b", "true"], &[], b"");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("unknown option '-b'"),
        "{}",
        stderr(&unknown)
    );
    assert!(stderr(&unknown).contains("-u USER"));
    assert!(fx.run(USER, &["-v"], &[], b"").status.success());
    assert!(fx.run(USER, &["-k"], &[], b"").status.success());
    let list = fx.run(USER, &["-l"], &[], b"");
    assert!(
        stdout(&list).starts_with("User user may run the following commands on "),
        "{}",
        stdout(&list)
    );
    assert_eq!(
        stdout(&fx.run(USER, &["-l", "id"], &[], b"")),
        "/usr/bin/id\n"
    );
    let login = fx.run(USER, &["-i", "sh", "-c", "echo $0 $HOME"], &[], b"");
    assert_eq!(stdout(&login), "-sh /root\n");
}

#[test]
fn envd_refuses_to_start_when_the_sudo_socket_name_is_taken() {
    // A second envd (or anything) on the name must fail loudly, not serve without sudo.
    let Some(fx) = Fixture::new("taken") else {
        return;
    };
    let output = Command::new(ENVD)
        .arg(format!("--sudo-socket={}", fx.name))
        .arg("--socket")
        .arg(fx.path("second.sock"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("--sudo-socket") && message.contains("in use"),
        "{message}"
    );
}

/// The target: a gVisor sandbox, where the system's setuid `sudo` cannot work and
/// `SO_PEERCRED` names the caller itself. envd runs as root inside `runsc do`, the client
/// as `user` and as `other`.
#[test]
fn sudo_works_inside_gvisor() {
    let Some(fx) = Fixture::new("gvisor") else {
        return;
    };
    let Some(runsc) = ["/usr/bin/runsc", "/usr/local/bin/runsc"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        println!("skipped sudo_works_inside_gvisor: runsc is not installed");
        return;
    };
    let script = fx.path("inside.sh");
    std::fs::write(
        &script,
        format!(
            r#"mount --bind {dir}/passwd /etc/passwd && mount --bind {dir}/group /etc/group || exit 90
export COURIER_SUDO_SOCKET=gvisor-test
{envd} --sudo-socket=gvisor-test --socket /tmp/envd.sock >/tmp/envd.log 2>&1 &
i=0; until setpriv --reuid 1000 --regid 1000 --clear-groups {dir}/sudo -v 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && exit 91; sleep 0.05; done
echo "member: $(setpriv --reuid 1000 --regid 1000 --clear-groups {dir}/sudo -n id -u)"
echo "stdin: $(echo piped | setpriv --reuid 1000 --regid 1000 --clear-groups {dir}/sudo tr a-z A-Z)"
setpriv --reuid 1000 --regid 1000 --clear-groups {dir}/sudo sh -c 'exit 42'; echo "code: $?"
echo "system sudo: $(setpriv --reuid 1000 --regid 1000 --clear-groups /usr/bin/sudo -n id -u 2>/dev/null || echo fails)"
echo "outsider: $(setpriv --reuid 1001 --regid 1001 --clear-groups {dir}/sudo -n id -u 2>&1)"
"#,
            dir = fx.dir.path().display(),
            envd = ENVD,
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(runsc)
        .arg("--root")
        .arg(state.path())
        .args([
            "--platform=systrap",
            "--network=none",
            "--ignore-cgroups",
            "do",
            "--",
            "/bin/sh",
        ])
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&output);
    assert!(output.status.success(), "runsc: {}\n{out}", stderr(&output));
    assert!(out.contains("member: 0\n"), "{out}");
    assert!(out.contains("stdin: PIPED\n"), "{out}");
    assert!(out.contains("code: 42\n"), "{out}");
    // Why this exists: setuid does not work in gVisor.
    assert!(out.contains("system sudo: fails\n"), "{out}");
    assert!(
        out.contains("outsider: sudo: other is not in the sudoers file"),
        "{out}"
    );
}

#[test]
fn a_terminal_keeps_working_through_sudo() {
    // `script` gives the caller a terminal (a pseudo-terminal it is the session of), as
    // the E2B SDK's PTY does: the command sees a terminal on its stdin and stdout, reads
    // from it, and Ctrl-C typed on it stops the command.
    let Some(fx) = Fixture::new("terminal") else {
        return;
    };
    let command = format!(
        "{} sh -c 'test -t 0 && test -t 1 && echo is-a-tty; read x; echo got:$x; echo ready; sleep 30; echo not-interrupted'",
        fx.path("sudo").display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(courier_envd::sudo::SOCKET_NAME_ENV, &fx.name)
        .current_dir(fx.path("work"))
        .uid(USER)
        .gid(USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let output = output.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    let seen = |text: &str| output.lock().unwrap().contains(text);
    wait_for(|| seen("is-a-tty"), "the command to see a terminal");
    stdin.write_all(b"typed\n").unwrap();
    wait_for(|| seen("ready"), "the command to read the line");
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(b"\x03").unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let output = output.lock().unwrap().clone();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Ctrl-C did not stop it: {output}"
    );
    assert!(output.contains("got:typed"), "{output}");
    assert!(!output.contains("not-interrupted"), "{output}");
    assert!(!status.success(), "{output}");
    drop(stdin);
}
