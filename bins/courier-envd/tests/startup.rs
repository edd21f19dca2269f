//! The courier-envd binary's ways to start: an inherited socket (`--listen-fd`), and TCP
//! only with a token unless `--insecure-no-token`.
//!
//! Requests are written by hand (HTTP/1.1, `Connection: close`): only the status matters.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::{
    os::{fd::AsRawFd as _, unix::net::UnixStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, listen, socket_with, sockopt,
};

const ENVD: &str = env!("CARGO_BIN_EXE_courier-envd");

/// A running daemon, killed when dropped (also when the test fails).
struct Daemon {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Daemon {
    fn spawn(args: &[&str]) -> Daemon {
        let log = tempfile::NamedTempFile::new().unwrap();
        // Logs go to stdout, errors to stderr: both into one file, appending.
        let output = || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(log.path())
                .unwrap()
        };
        let child = Command::new(ENVD)
            .args(args)
            .env_remove("COURIER_ENVD_ACCESS_TOKEN")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test if the daemon exited.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("courier-envd exited ({status}): {}", self.log());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request, the status code of the answer.
fn status_of(mut stream: impl std::io::Read + std::io::Write, request: &str) -> u16 {
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: envd\r\n{headers}Connection: close\r\n\r\n")
}

/// Connects to `path`, retrying while the daemon is not listening yet.
fn connect_unix(daemon: &mut Daemon, path: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return stream,
            Err(e) if Instant::now() < deadline => {
                daemon.assert_alive();
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!(
                "connecting to {}: {e}; log: {}",
                path.display(),
                daemon.log()
            ),
        }
    }
}

fn connect_tcp(daemon: &mut Daemon, port: u16) -> std::net::TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return stream,
            Err(e) if Instant::now() < deadline => {
                daemon.assert_alive();
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connecting to port {port}: {e}; log: {}", daemon.log()),
        }
    }
}

/// A bound Unix stream socket that a spawned child inherits (no close-on-exec), as the
/// control plane makes it.
fn bound_socket(path: &Path) -> std::os::fd::OwnedFd {
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    fd
}

/// The `flags:` of a descriptor of `pid`, from /proc (octal, as the kernel prints it).
fn fd_flags(pid: u32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap()
}

const O_CLOEXEC: u32 = 0o2_000_000;

#[test]
fn listen_fd_serves_on_the_handed_over_socket_and_listens_itself() {
    // The control plane binds the socket where the sandbox cannot reach and does not
    // listen: only then does SO_PEERCRED on a connection name envd's process (the one that
    // called listen), so something the sandbox put in envd's place would be told apart.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envd.sock");
    let fd = bound_socket(&path);
    let number = fd.as_raw_fd();
    let mut daemon = Daemon::spawn(&["--listen-fd", &number.to_string()]);
    drop(fd);
    let stream = connect_unix(&mut daemon, &path);
    let peer = sockopt::socket_peercred(&stream).unwrap();
    assert_eq!(peer.pid.as_raw_nonzero().get() as u32, daemon.pid());
    // No token is needed to start (the control plane sets one with /init) ...
    assert_eq!(status_of(stream, &get("/health", "")), 204);
    // ... and once it is set, the socket needs it like TCP does.
    let body = r#"{"accessToken":"handed-over"}"#;
    let init = format!(
        "POST /init HTTP/1.1\r\nHost: envd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(status_of(connect_unix(&mut daemon, &path), &init), 204);
    assert_eq!(
        status_of(connect_unix(&mut daemon, &path), &get("/envs", "")),
        401
    );
    assert_eq!(
        status_of(
            connect_unix(&mut daemon, &path),
            &get("/envs", "X-Access-Token: handed-over\r\n")
        ),
        200
    );
    // Attack: a process envd starts (any command the sandbox runs) inherits the control
    // socket and answers the control plane itself. envd marked it close-on-exec.
    assert_eq!(fd_flags(daemon.pid(), number) & O_CLOEXEC, O_CLOEXEC);
    daemon.assert_alive();
}

#[test]
fn listen_fd_accepts_an_already_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envd.sock");
    let fd = bound_socket(&path);
    listen(&fd, 8).unwrap();
    let number = fd.as_raw_fd();
    let mut daemon = Daemon::spawn(&["--listen-fd", &number.to_string()]);
    drop(fd);
    let stream = connect_unix(&mut daemon, &path);
    assert_eq!(status_of(stream, &get("/health", "")), 204);
}

#[test]
fn listen_fd_refuses_what_is_not_a_bound_unix_stream_socket() {
    // A wrong number must not make envd serve on something else (stdin, a file, a socket
    // with a random abstract name any process in the namespace could reach).
    let cases: Vec<(String, &str, Option<std::os::fd::OwnedFd>)> = vec![
        ("1".to_owned(), "must be 3 or more", None),
        ("987".to_owned(), "not an open descriptor", None),
        {
            let file = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            (file.as_raw_fd().to_string(), "is not a socket", Some(file))
        },
        {
            let unbound = socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::empty(),
                None,
            )
            .unwrap();
            (
                unbound.as_raw_fd().to_string(),
                "is not bound",
                Some(unbound),
            )
        },
        {
            let datagram = socket_with(
                AddressFamily::UNIX,
                SocketType::DGRAM,
                SocketFlags::empty(),
                None,
            )
            .unwrap();
            (
                datagram.as_raw_fd().to_string(),
                "is not a stream socket",
                Some(datagram),
            )
        },
    ];
    for (number, expected, _keep_open) in &cases {
        let mut daemon = Daemon::spawn(&["--listen-fd", number]);
        let status = daemon.child.wait().unwrap();
        assert!(!status.success(), "--listen-fd {number} started");
        let log = daemon.log();
        assert!(log.contains("--listen-fd"), "{log}");
        assert!(log.contains(expected), "--listen-fd {number}: {log}");
    }
}

#[test]
fn tcp_refuses_to_start_without_a_token() {
    // Attack: anyone who reaches a token-less envd runs commands as root in the sandbox,
    // and the first POST /init caller chooses the token.
    let mut daemon = Daemon::spawn(&["--listen", "127.0.0.1:0"]);
    let status = daemon.child.wait().unwrap();
    assert!(!status.success());
    let log = daemon.log();
    assert!(log.contains("--access-token"), "{log}");
    assert!(log.contains("--insecure-no-token"), "{log}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_with_a_token_requires_it() {
    let port = free_port();
    let mut daemon = Daemon::spawn(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--access-token",
        "tcp-token",
    ]);
    assert_eq!(
        status_of(connect_tcp(&mut daemon, port), &get("/envs", "")),
        401
    );
    assert_eq!(
        status_of(
            connect_tcp(&mut daemon, port),
            &get("/envs", "X-Access-Token: tcp-token\r\n")
        ),
        200
    );
}

#[test]
fn tcp_with_insecure_no_token_serves_and_warns_loudly() {
    // The E2B SDK's debug mode has no token to send: allowed only when asked for by name.
    let port = free_port();
    let mut daemon = Daemon::spawn(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--insecure-no-token",
    ]);
    assert_eq!(
        status_of(connect_tcp(&mut daemon, port), &get("/envs", "")),
        200
    );
    let log = daemon.log();
    assert!(log.contains("WITHOUT AN ACCESS TOKEN"), "{log}");
}
