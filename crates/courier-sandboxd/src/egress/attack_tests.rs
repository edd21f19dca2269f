//! The filter and the supervisor against an *exploited* slirp4netns: a program run
//! exactly as slirp4netns is ([`super::spawn_supervised`]) that makes the calls an
//! attacker with code execution in slirp4netns would — Unix sockets of the host,
//! io_uring, SCTP, packet sockets, forged credentials, and a process sharing the page
//! that rewrites the destination while the supervisor checks it. Every attack must fail, what the policy
//! allows must keep working, and a stopped supervisor must fail closed.
//!
//! Root only (seccomp listener, `pidfd_getfd`); without root each test prints why and
//! returns, unless `CI` is set: then it fails. Nothing leaves the machine: "allowed" is
//! `127.0.0.2`, opened by the operator's allow list for the test; "internal" is
//! `127.0.0.1`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Cidr, Egress, EgressRules, spawn_supervised};

/// What the "exploited slirp4netns" does; prints one JSON object per phase.
const ATTACKER: &str = r#"
import ctypes, errno, json, mmap, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
port, unix_path = int(sys.argv[1]), sys.argv[2]

def outcome(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def connect(host):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
    finally:
        s.close()

def udp(host):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (host, port))

def sendmsg(host):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"x"], [], 0, (host, port))

def unix():
    socket.socket(socket.AF_UNIX).connect(unix_path)

def unix_dgram():
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", unix_path)

def rights():
    a, b = socket.socketpair()
    r, w = os.pipe()
    socket.send_fds(a, [b"fd"], [r])
    _, fds, _, _ = socket.recv_fds(b, 10, 1)
    assert len(fds) == 1

def credentials():
    a, b = socket.socketpair()
    creds = struct.pack("iII", 1, 0, 0)
    a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])

def io_uring():
    params = ctypes.create_string_buffer(120)
    if libc.syscall(425, 8, params) < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")

out = {
    "connect internal": outcome(lambda: connect("127.0.0.1")),
    "connect allowed": outcome(lambda: connect("127.0.0.2")),
    "connect metadata": outcome(lambda: connect("169.254.169.254")),
    "connect unix": outcome(unix),
    "sendto unix": outcome(unix_dgram),
    "sendto internal": outcome(lambda: udp("127.0.0.1")),
    "sendto allowed": outcome(lambda: udp("127.0.0.2")),
    "sendmsg internal": outcome(lambda: sendmsg("127.0.0.1")),
    "sendmsg allowed": outcome(lambda: sendmsg("127.0.0.2")),
    "pass a descriptor": outcome(rights),
    "forge credentials": outcome(credentials),
    "io_uring": outcome(io_uring),
    "sctp": outcome(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)),
    "packet": outcome(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)),
}

# The race: a forked child (on another CPU) keeps flipping a shared sockaddr between the
# allowed and the internal address while this process connects with it, so the
# destination changes while the supervisor reads and checks it.
shared = mmap.mmap(-1, 16, flags=mmap.MAP_SHARED)
struct.pack_into("=H", shared, 0, socket.AF_INET)
internal = struct.pack("!H4s", port, socket.inet_aton("127.0.0.1"))
allowed = struct.pack("!H4s", port, socket.inet_aton("127.0.0.2"))
shared[2:8] = allowed
flipper = os.fork()
if flipper == 0:
    while True:
        shared[2:8] = internal
        shared[2:8] = allowed
sa = (ctypes.c_char * 16).from_buffer(shared)
# Until both outcomes were seen often enough (a loaded machine may not run the flipper
# for a while), within bounds.
race = {"ok": 0, "ECONNREFUSED": 0}
for _ in range(20000):
    if race["ok"] >= 300 and race["ECONNREFUSED"] >= 300:
        break
    s = socket.socket()
    rc = libc.connect(s.fileno(), sa, 16)
    key = "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    race[key] = race.get(key, 0) + 1
    s.close()
os.kill(flipper, 9)
os.waitpid(flipper, 0)
out["race"] = race
print(json.dumps(out), flush=True)

sys.stdin.readline()  # the test stops the supervisor meanwhile
print(json.dumps({"connect allowed": outcome(lambda: connect("127.0.0.2"))}), flush=True)
"#;

/// Counts what arrives on a TCP listener and a UDP socket bound to `ip:port`.
fn counting(ip: &str, port: u16) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let tcp = TcpListener::bind((ip, port)).expect("bind tcp");
    let udp = UdpSocket::bind((ip, port)).expect("bind udp");
    let (conns, datagrams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let c = conns.clone();
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            drop(conn);
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let d = datagrams.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while udp.recv_from(&mut buf).is_ok() {
            d.fetch_add(1, Ordering::SeqCst);
        }
    });
    (conns, datagrams)
}

#[test]
fn an_exploited_slirp4netns_reaches_nothing_it_is_denied_and_fails_closed() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the egress supervisor test needs root (CI is set)"
        );
        eprintln!("skipping: the egress filter and supervisor need root");
        return;
    }
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("python3 for the simulated exploit");
    // One port, free on both addresses.
    let port = TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (internal_conns, internal_datagrams) = counting("127.0.0.1", port);
    let (allowed_conns, allowed_datagrams) = counting("127.0.0.2", port);
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("host.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    unix.set_nonblocking(true).unwrap();

    let egress = Egress::new(vec!["127.0.0.2/32".parse::<Cidr>().unwrap().into()])
        .sandbox("exploit", EgressRules::default());
    let mut cmd = Command::new(python);
    cmd.args(["-c", ATTACKER, &port.to_string()])
        .arg(&unix_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (mut child, mut supervisor) = spawn_supervised(cmd, &egress, Vec::new()).expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("phase one").unwrap()).unwrap();

    let expect = |what: &str, outcome: &str| {
        assert_eq!(first[what], outcome, "{what}: {first}");
    };
    expect("connect internal", "ECONNREFUSED");
    expect("connect allowed", "ok");
    expect("connect metadata", "ECONNREFUSED");
    expect("connect unix", "EACCES");
    expect("sendto unix", "EACCES");
    expect("sendto internal", "EACCES");
    expect("sendto allowed", "ok");
    expect("sendmsg internal", "EACCES");
    expect("sendmsg allowed", "ok");
    expect("pass a descriptor", "ok");
    expect("forge credentials", "EINVAL");
    expect("io_uring", "ENOSYS");
    expect("sctp", "EPROTONOSUPPORT");
    expect("packet", "EAFNOSUPPORT");
    let race = &first["race"];
    // Both outcomes occur: the flips really race the checks.
    assert!(
        race["ok"].as_u64().unwrap_or(0) >= 100
            && race["ECONNREFUSED"].as_u64().unwrap_or(0) >= 100,
        "the race did not race: {race}"
    );

    // Give the counters a moment, then: nothing ever reached the internal address (the
    // race included), nor the host's Unix socket.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(internal_conns.load(Ordering::SeqCst), 0, "race: {race}");
    assert_eq!(internal_datagrams.load(Ordering::SeqCst), 0);
    assert!(allowed_conns.load(Ordering::SeqCst) >= 2);
    assert_eq!(allowed_datagrams.load(Ordering::SeqCst), 2);
    assert!(
        unix.accept().is_err(),
        "a Unix socket of the host was reached"
    );

    // The supervisor goes away: the next connect fails instead of going out unchecked.
    supervisor.stop();
    stdin.write_all(b"go\n").unwrap();
    let second: serde_json::Value =
        serde_json::from_str(&lines.next().expect("phase two").unwrap()).unwrap();
    assert_eq!(second["connect allowed"], "ENOSYS", "{second}");
    // Cleanup after the checks: a child already gone needs neither.
    let _ = child.kill();
    let _ = child.wait();
}
