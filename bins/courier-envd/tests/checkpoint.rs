//! `--socket` serving lets go of its socket for a gVisor checkpoint (`SIGUSR2`) and binds
//! it again (`SIGUSR1`): see `courier_envd::checkpoint`. runsc cannot save a bound or
//! connected host socket, so after `SIGUSR2` nothing of it may stay open, idle
//! keep-alive connections and requests in flight included.
//!
//! Requests are written by hand (HTTP/1.1): only statuses and closes matter.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const ENVD: &str = env!("CARGO_BIN_EXE_courier-envd");
const TOKEN: &str = "checkpoint-test-token";

/// A running daemon, killed when dropped (also when the test fails).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).unwrap();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status of one request on a new connection (`Connection: close`).
fn status(socket: &Path, path: &str, token: Option<&str>) -> u16 {
    let mut stream = UnixStream::connect(socket).unwrap();
    let auth = token.map_or(String::new(), |t| format!("X-Access-Token: {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Whether the daemon closed `stream` (end of file or reset) within a few seconds.
fn closed(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // What was answered before the close (the keep-alive request's answer).
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn sigusr2_lets_go_of_every_connection_and_sigusr1_binds_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("envd.sock");
    let report = dir.path().join(courier_envd::checkpoint::QUIESCED_FILE);
    let envd = Daemon(
        Command::new(ENVD)
            .arg("--socket")
            .arg(&socket)
            .args(["--access-token", TOKEN])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the socket", || UnixStream::connect(&socket).is_ok());
    assert_eq!(status(&socket, "/health", None), 204);

    // An idle kept-alive connection, and a request in flight (an upload whose body has
    // not all arrived: its handler is waiting on it).
    let mut idle = UnixStream::connect(&socket).unwrap();
    write!(idle, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 204");
    let mut in_flight = UnixStream::connect(&socket).unwrap();
    write!(
        in_flight,
        "POST /files?path=/tmp/never HTTP/1.1\r\nHost: localhost\r\nX-Access-Token: {TOKEN}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\npartial"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    envd.signal(Signal::SIGUSR2);
    wait_for("the quiesce report", || report.exists());
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "ok\n");
    // Nothing left for runsc to trip over: no socket file, both connections closed.
    assert!(!socket.exists(), "the socket file is still there");
    assert!(UnixStream::connect(&socket).is_err());
    assert!(closed(&mut idle), "the idle connection stayed open");
    assert!(closed(&mut in_flight), "the request in flight stayed open");

    // Attacker: a process of the sandbox (root there) sends the signals too. Another
    // SIGUSR2 while let go of changes nothing; SIGUSR1 brings envd back with its token
    // still required.
    envd.signal(Signal::SIGUSR2);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!socket.exists());
    envd.signal(Signal::SIGUSR1);
    wait_for("the socket again", || UnixStream::connect(&socket).is_ok());
    assert!(!report.exists(), "the report outlived the rebind");
    assert_eq!(status(&socket, "/health", None), 204);
    assert_eq!(status(&socket, "/envs", None), 401);
    assert_eq!(status(&socket, "/envs", Some(TOKEN)), 200);

    // And again: every cycle works alike.
    envd.signal(Signal::SIGUSR2);
    wait_for("the second quiesce report", || report.exists());
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "ok\n");
    envd.signal(Signal::SIGUSR1);
    wait_for("the socket a third time", || {
        UnixStream::connect(&socket).is_ok()
    });
    assert_eq!(status(&socket, "/envs", Some(TOKEN)), 200);
}
