//! The bench's own `courier-sandboxd serve`: its binaries, ports, start, health and memory.

use super::*;

pub(crate) fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary next to this example's directory (`target/<profile>/examples/..`), or `var`.
pub(crate) fn binary(var: &str, name: &str) -> Result<PathBuf, BoxError> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    let path = profile.join(name);
    if !path.is_file() {
        return Err(format!(
            "{} not found: `cargo build --release -p courier-sandboxd-bin -p courier-envd-bin` \
             or set {var}",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// The server process: SIGTERM (it kills every sandbox first) and wait, whatever happens.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) api_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // A server already gone is what the wait below is for anyway.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bench_sandboxd: courier-sandboxd did not stop within 60s; killing it");
        // Last resort; a server that exited meanwhile needs neither.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn health(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    // Without a timeout the probe still works, only without its bound.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 204")
}

pub(crate) fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `courier-sandboxd serve` of the bench's, stopped (SIGTERM) when dropped.
pub(crate) struct Started {
    pub(crate) server: Server,
    pub(crate) api: String,
    pub(crate) proxy: String,
    pub(crate) key: String,
    pub(crate) log_path: PathBuf,
    pub(crate) _data: tempfile::TempDir,
}

/// Starts a server of `isolation` keeping `warm` sandboxes per shape (see
/// `--warm-sandboxes`), admitting `max_sandboxes` at once, and waits for its API.
pub(crate) fn start_server(
    server_bin: &Path,
    envd_bin: &Path,
    isolation: &str,
    warm: usize,
    max_sandboxes: usize,
    log_name: &str,
) -> Result<Started, BoxError> {
    let data = tempfile::tempdir()?;
    let api_port = free_port()?;
    let mut proxy_port = free_port()?;
    while proxy_port == api_port {
        proxy_port = free_port()?;
    }
    let key = format!("e2b_{:040x}", u128::from(std::process::id()) << 64 | 0xbe4c);
    let server_log = std::env::var("BENCH_SERVER_LOG").ok();
    let log_path = match server_log {
        Some(_) => PathBuf::from(format!("bench-sandboxd-{log_name}.log")),
        None => data.path().join("server.log"),
    };
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(server_bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
        .args(["--proxy-addr", &format!("127.0.0.1:{proxy_port}")])
        .args(["--domain", "courier.test"])
        .args(["--isolation", isolation])
        .arg("--envd-binary")
        .arg(envd_bin)
        .arg("--kill-on-exit")
        // The benches keep their creates alive to weigh them idle: lift the committed-memory
        // capacity (default: the host's RAM, against each sandbox's limit, not its use),
        // which they measure nothing of.
        .args(["--max-memory-mb", "16777216"])
        .args(["--max-sandboxes", &max_sandboxes.to_string()])
        .args(["--warm-sandboxes", &warm.to_string()])
        .env("COURIER_SANDBOXD_API_KEY", &key)
        .env("RUST_LOG", server_log.as_deref().unwrap_or("warn"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut server = Server { child, api_port };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !health(server.api_port) {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("courier-sandboxd exited ({status}):\n{log}").into());
        }
        if Instant::now() > deadline {
            return Err("courier-sandboxd did not answer /health within 120s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Started {
        server,
        api: format!("http://127.0.0.1:{api_port}"),
        proxy: format!("http://127.0.0.1:{proxy_port}"),
        key,
        log_path,
        _data: data,
    })
}

pub(crate) fn print_server_log_tail(log_path: &Path) {
    if let Ok(log) = std::fs::read_to_string(log_path) {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        for line in tail.into_iter().rev() {
            eprintln!("server: {line}");
        }
    }
}
