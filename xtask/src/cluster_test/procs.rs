//! The cluster's processes: courier-sandboxd hosts and `courier serve` replicas, each
//! with its own data dir, loopback ports and log file under the run's work dir. Dropping
//! one stops it (SIGTERM, then SIGKILL after a grace period): a failed run leaves no
//! server or sandbox behind.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::http;
use crate::cleanup;

/// A free loopback port (another process could take it before ours binds: rare, and a
/// clear bind error then).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` random bytes from the kernel, hex-encoded.
pub fn random_hex(n: usize) -> Result<String> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = vec![0_u8; n];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A fresh master key for the replicas: the base64 of 32 random bytes.
pub fn master_key() -> Result<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = random_bytes(32)?;
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    Ok(out)
}

/// A child process stopped on drop (SIGTERM, up to `grace`, then SIGKILL).
struct Guard {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

impl Guard {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits for `ready` up to `within`, failing with the log's tail if the process
    /// exits first or never gets ready.
    fn wait_ready(&mut self, within: Duration, ready: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + within;
        while !ready() {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited before it was ready ({status}); last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {}s; last lines of {}:\n{}",
                    self.name,
                    within.as_secs(),
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        cleanup(
            &format!("stopping {}", self.name),
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status(),
        );
        let deadline = Instant::now() + self.grace;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.running() {
            eprintln!(
                "xtask: warning: {} did not stop within {}s; killing it",
                self.name,
                self.grace.as_secs()
            );
            cleanup(&format!("killing {}", self.name), self.child.kill());
        }
        cleanup(&format!("waiting for {}", self.name), self.child.wait());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: String, mut cmd: Command, log: PathBuf, grace: Duration) -> Result<Guard> {
    let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    Ok(Guard {
        name,
        child,
        log,
        grace,
    })
}

/// A courier-sandboxd host: `courier-sandboxd serve --kill-on-exit` on two loopback
/// ports with its own data dir and API key.
pub struct Host {
    /// `host-a`, `host-b`, …
    pub name: String,
    /// Its control plane (`E2B_API_URL`).
    pub api_url: String,
    /// Its sandbox proxy (`E2B_SANDBOX_URL`).
    pub sandbox_url: String,
    /// Its API key (the server's dev key).
    pub api_key: String,
    guard: Guard,
}

impl Host {
    /// Starts host `name` under `work` and waits for its `/health`.
    /// `share` is `--share HOST_DIR:SANDBOX_DIR` (read-only in every sandbox).
    pub fn start(work: &Path, name: &str, server: &Path, envd: &Path, share: &str) -> Result<Self> {
        let (api_port, proxy_port) = (free_port()?, free_port()?);
        let api_key = format!("e2b_{}", random_hex(20)?);
        let data = work.join(name);
        fs::create_dir_all(&data)?;
        let mut cmd = Command::new(server);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data.join("data"))
            .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
            .args(["--proxy-addr", &format!("127.0.0.1:{proxy_port}")])
            .arg("--envd-binary")
            .arg(envd)
            // Container sandboxes start in ~10 ms; the harness measures the cluster, not
            // gVisor's start-up.
            .args(["--isolation", "container", "--kill-on-exit"])
            .args(["--warm-sandboxes", "0", "--max-sandboxes", "64"])
            // Committed memory is what sandboxes may use, not what they use: 30 sandboxes
            // of the default 1024 MiB pass a small host's MemTotal (measured: 429 at 23).
            .args(["--max-memory-mb", "65536"])
            .args(["--share", share])
            .env("COURIER_SANDBOXD_API_KEY", &api_key)
            .env("RUST_LOG", "info");
        let guard = spawn(
            format!("courier-sandboxd {name}"),
            cmd,
            data.join("sandboxd.log"),
            Duration::from_secs(60),
        )?;
        let mut host = Self {
            name: name.to_owned(),
            api_url: format!("http://127.0.0.1:{api_port}"),
            sandbox_url: format!("http://127.0.0.1:{proxy_port}"),
            api_key,
            guard,
        };
        let health = format!("{}/health", host.api_url);
        host.guard.wait_ready(Duration::from_secs(120), || {
            http::request("GET", &health, &[], None).is_ok_and(|r| r.status == 204)
        })?;
        println!(
            "<== {name}: courier-sandboxd at {} (proxy {}), log {}",
            host.api_url,
            host.sandbox_url,
            host.guard.log.display()
        );
        Ok(host)
    }

    /// `GET path` on the control plane with the host's key.
    pub fn get(&self, path: &str) -> Result<http::Response> {
        http::request(
            "GET",
            &format!("{}{path}", self.api_url),
            &[("X-API-Key", &self.api_key)],
            None,
        )
    }

    /// The `[[providers]]` table of this host in serve's config file.
    pub fn provider_toml(&self) -> String {
        format!(
            "[[providers]]\nname = \"{}\"\napi_url = \"{}\"\nsandbox_url = \"{}\"\napi_key = \"{}\"\ncapacity = 20\n",
            self.name, self.api_url, self.sandbox_url, self.api_key
        )
    }
}

/// What every replica shares.
pub struct ReplicaEnv {
    /// The replicas' PostgreSQL (`DATABASE_URL`).
    pub database_url: String,
    /// `COURIER_MASTER_KEY`.
    pub master_key: String,
    /// Extra environment (the provider's `E2B_*` while serve reads no providers file).
    pub vars: Vec<(String, String)>,
    /// serve's config file (`[[providers]]`), when it is used.
    pub config: Option<PathBuf>,
}

/// A `courier serve` replica on a loopback port, with its own data dir.
pub struct Replica {
    /// `http://127.0.0.1:PORT` (also its `COURIER_REPLICA_URL`).
    pub url: String,
    guard: Guard,
}

impl Replica {
    /// Starts replica `index` and waits for its `/healthz`.
    pub fn start(work: &Path, index: usize, courier: &Path, env: &ReplicaEnv) -> Result<Self> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let data = work.join(format!("replica-{index}"));
        fs::create_dir_all(&data)?;
        let mut cmd = Command::new(courier);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--create-rate", "1000"]);
        if let Some(config) = &env.config {
            cmd.arg("--config").arg(config);
        }
        // Nothing of the caller's environment chooses the store, the provider or keys.
        for (key, _) in std::env::vars() {
            if key.starts_with("E2B_") || key.starts_with("COURIER_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        cmd.env("DATABASE_URL", &env.database_url)
            .env("COURIER_MASTER_KEY", &env.master_key)
            .env("COURIER_REPLICA_URL", &url)
            // The sandboxes print and exit: no network, no gateway, no CLI templates.
            .env("COURIER_GATEWAY", "off")
            .env("COURIER_SANDBOX_INTERNET", "false")
            .env("COURIER_BUILD_TOOL_TEMPLATES", "false")
            .env("COURIER_PR_POLL_INTERVAL", "0")
            // courier-tools' fake CLIs, shared into every sandbox by the hosts.
            .env("COURIER_TOOL_PATH", super::FAKE_CLIS_IN_SANDBOX)
            // 30 live sandboxes for one user and project: past the default quotas.
            .env("COURIER_MAX_SANDBOXES_PER_USER", "0")
            .env("COURIER_MAX_SANDBOXES_PER_PROJECT", "0")
            .env("RUST_LOG", "info");
        for (key, value) in &env.vars {
            cmd.env(key, value);
        }
        let guard = spawn(
            format!("courier serve replica {index}"),
            cmd,
            data.join("serve.log"),
            Duration::from_secs(30),
        )?;
        let mut replica = Self { url, guard };
        let health = format!("{}/healthz", replica.url);
        replica.guard.wait_ready(Duration::from_secs(120), || {
            http::request("GET", &health, &[], None).is_ok_and(|r| r.status == 200)
        })?;
        println!(
            "<== replica {index}: courier serve at {}, log {}",
            replica.url,
            replica.guard.log.display()
        );
        Ok(replica)
    }

    /// Its process id (to SIGKILL it).
    pub fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    /// SIGKILL, as a crash would: no shutdown events, no clean-up.
    pub fn kill(&mut self) -> Result<()> {
        self.guard.child.kill().context("SIGKILL")?;
        self.guard.child.wait()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_are_the_base64_of_32_bytes() {
        let key = master_key().unwrap();
        // 32 bytes: 10 full groups of 3 and one of 2 → 44 characters, one '='.
        assert_eq!(key.len(), 44);
        assert!(key.ends_with('=') && !key.ends_with("=="));
        assert_ne!(key, master_key().unwrap());
    }
}
