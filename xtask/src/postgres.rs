//! A throwaway PostgreSQL cluster for the store's tests and benchmarks.
//!
//! Tests must run against a real server, but developers and CI should not need one
//! configured: this starts a private cluster in a temp dir (trust auth, `fsync=off`,
//! a free port on 127.0.0.1) and removes it on drop. `DATABASE_URL` or
//! `COURIER_TEST_PG_URL` points at an existing server instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// Where Debian's `postgresql-15` package puts the server binaries.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The database the tests use inside a cluster we start ourselves.
const DB_NAME: &str = "courier_test";
/// OS user that owns the cluster when we run as root (PostgreSQL refuses to run as root).
const PG_OS_USER: &str = "postgres";

/// A throwaway PostgreSQL 15 cluster (or an existing server from DATABASE_URL).
pub struct Cluster {
    url: String,
    /// `Some` only when we started the cluster and so must stop and remove it.
    owned: Option<Owned>,
}

struct Owned {
    dir: PathBuf,
    as_postgres_user: bool,
}

impl Cluster {
    /// If DATABASE_URL or COURIER_TEST_PG_URL is set, use it (no cluster started). Otherwise initdb into a fresh temp dir
    /// with /usr/lib/postgresql/15/bin (as the `postgres` OS user when we are root: chown the dir, run via `runuser -u postgres --`),
    /// listen on 127.0.0.1 on a free port, unix socket dir inside the temp dir, fsync=off, create database `courier_test`, trust auth.
    pub fn start() -> anyhow::Result<Cluster> {
        for var in ["DATABASE_URL", "COURIER_TEST_PG_URL"] {
            if let Ok(url) = std::env::var(var)
                && !url.is_empty()
            {
                return Ok(Cluster { url, owned: None });
            }
        }
        if !Path::new(PG_BIN).join("initdb").exists() {
            bail!(
                "PostgreSQL 15 binaries not found in {PG_BIN}: `apt-get install postgresql` is needed \
                 (or set DATABASE_URL to an existing server)"
            );
        }
        let as_postgres_user = is_root()?;
        let dir = make_temp_dir()?;
        // From here on, dropping `cluster` cleans up whatever was created.
        let mut cluster = Cluster {
            url: String::new(),
            owned: Some(Owned {
                dir: dir.clone(),
                as_postgres_user,
            }),
        };
        if as_postgres_user {
            run(
                Command::new("chown").arg("-R").arg(PG_OS_USER).arg(&dir),
                "chown temp dir",
            )?;
        }
        let data = dir.join("data");
        run(
            pg_command(as_postgres_user, "initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
            "initdb",
        )?;
        let port = free_port()?;
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            dir.display()
        );
        run(
            pg_command(as_postgres_user, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(dir.join("server.log"))
                .args(["-o", &opts, "start"]),
            "pg_ctl start",
        )?;
        wait_ready(as_postgres_user, port)?;
        run(
            pg_command(as_postgres_user, "createdb").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                DB_NAME,
            ]),
            "createdb",
        )?;
        cluster.url = format!("postgres://postgres@127.0.0.1:{port}/{DB_NAME}");
        Ok(cluster)
    }

    /// postgres://... URL for sqlx.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Some(owned) = &self.owned else { return };
        let data = owned.dir.join("data");
        if data.join("postmaster.pid").exists() {
            // Best effort: a failure while dropping can only be reported.
            crate::cleanup(
                "stopping PostgreSQL",
                pg_command(owned.as_postgres_user, "pg_ctl")
                    .arg("-D")
                    .arg(&data)
                    .args(["-w", "-m", "immediate", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status(),
            );
        }
        crate::cleanup(
            "removing the PostgreSQL directory",
            std::fs::remove_dir_all(&owned.dir),
        );
    }
}

/// A command running one of the PostgreSQL binaries, as `postgres` when we are root.
fn pg_command(as_postgres_user: bool, binary: &str) -> Command {
    let path = Path::new(PG_BIN).join(binary);
    if as_postgres_user {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", PG_OS_USER, "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn is_root() -> anyhow::Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn make_temp_dir() -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = std::env::temp_dir().join(format!(
            "courier-pg-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a temp dir for PostgreSQL")
}

/// Asks the kernel for a free port. Another process could take it before the server
/// binds; that is rare enough for a test cluster and shows up as a clear pg_ctl error.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn wait_ready(as_postgres_user: bool, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = pg_command(as_postgres_user, "pg_isready")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("PostgreSQL did not become ready on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cargo xtask postgres`: a cluster for a developer's shell, until Enter.
pub fn shell() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    println!("{}", cluster.url());
    // Enter (or end of input) stops it: dropping the cluster stops the server and removes
    // its directory, which a Ctrl-C would skip.
    println!("(press Enter to stop the cluster)");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    drop(cluster);
    Ok(())
}
