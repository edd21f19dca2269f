//! `courier serve`'s data dir is owner-only: created 0700, fixed to 0700 when found open,
//! its database (with `-wal` and `-shm`), master key and other files 0600, each fix
//! logged. What another local user tries: listing the data dir or reading `courier.db`
//! (prompts, agent logs, repository URLs) and the master key that decrypts provider keys.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_courier");

fn courier(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "DATABASE_URL",
        "E2B_API_KEY",
        "E2B_API_URL",
        "COURIER_TOKEN",
        "COURIER_MASTER_KEY",
        "COURIER_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("COURIER_DATA_DIR", data)
        // No sandbox provider: this is about the data dir.
        .env("COURIER_ENVD_BINARY", "/nonexistent/courier-envd")
        .env("COURIER_BUILD_TOOL_TEMPLATES", "false")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether the unprivileged user `nobody` can read `path` (`None`: no way to try here).
fn nobody_reads(path: &Path) -> Option<bool> {
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.ok() != Some(0) {
        return None;
    }
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    Some(out.success())
}

#[test]
fn serve_fixes_an_open_data_dir_and_database_and_logs_what_it_fixed() {
    let parent = tempfile::tempdir().unwrap();
    // The temp dir itself is 0700: open it up, so only the data dir's own modes protect
    // what is inside (as for `./courier-data` in a home directory).
    chmod(parent.path(), 0o755);
    let data = parent.path().join("courier-data");
    // A data dir from before: made by `admin user create`, then opened up (an older
    // `courier`, or a careless copy).
    let out = courier(&data)
        .args(["admin", "user", "create", "--email", "ada@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(mode(&data), 0o700, "admin creates it owner-only too");
    assert_eq!(mode(&data.join("courier.db")), 0o600);
    chmod(&data, 0o755);
    chmod(&data.join("courier.db"), 0o644);
    std::fs::write(data.join("notes.txt"), "operator notes").unwrap();
    chmod(&data.join("notes.txt"), 0o664);
    if let Some(read) = nobody_reads(&data.join("courier.db")) {
        assert!(
            read,
            "the set-up is wrong: the open database should be readable"
        );
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = courier(&data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("courier serve exited: {status}");
        }
        assert!(Instant::now() < deadline, "courier serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let modes: Vec<(String, u32)> = ["", "courier.db", "master.key", "notes.txt"]
        .iter()
        .map(|name| (name.to_string(), mode(&data.join(name))))
        .collect();
    // While serve runs, SQLite's write-ahead log and shared memory exist: new files,
    // owner-only too.
    let wal: Vec<(String, u32)> = ["courier.db-wal", "courier.db-shm"]
        .iter()
        .filter(|name| data.join(name).exists())
        .map(|name| (name.to_string(), mode(&data.join(name))))
        .collect();
    let nobody = nobody_reads(&data.join("courier.db"));
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();

    assert_eq!(
        modes,
        [
            ("".to_owned(), 0o700),
            ("courier.db".to_owned(), 0o600),
            ("master.key".to_owned(), 0o600),
            ("notes.txt".to_owned(), 0o600),
        ],
        "{log}"
    );
    assert!(!wal.is_empty(), "serve runs SQLite in WAL mode");
    for (name, m) in wal {
        assert_eq!(m, 0o600, "{name}");
    }
    if let Some(read) = nobody {
        assert!(!read, "another user read courier.db");
    }
    for fixed in ["courier.db", "notes.txt"] {
        assert!(
            log.lines().any(|l| l.contains("permissions fixed")
                && l.contains(fixed)
                && l.contains("to=0600")),
            "no log line for {fixed}: {log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("permissions fixed") && l.contains("from=0755")),
        "{log}"
    );
}
