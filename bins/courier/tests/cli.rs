//! The real `courier` binary: `admin user create`, `serve`, the client commands with their
//! tables, JSON and exit codes, and graceful shutdown on SIGTERM.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_courier");

fn courier(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("DATABASE_URL")
        .env_remove("E2B_API_KEY")
        .env_remove("E2B_API_URL")
        .env_remove("COURIER_TOKEN")
        .env_remove("COURIER_MASTER_KEY")
        .env("COURIER_DATA_DIR", data)
        .env("RUST_LOG", "info");
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Served {
    child: Child,
    url: String,
    token: String,
    project: String,
    data: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn run(&self, args: &[&str]) -> Output {
        courier(self.data.path())
            .env("COURIER_URL", &self.url)
            .env("COURIER_TOKEN", &self.token)
            .args(args)
            .output()
            .unwrap()
    }
}

/// A served `courier` without a sandbox provider: the embedded courier-sandboxd is kept
/// off by pointing it at a courier-envd that does not exist.
fn serve() -> Served {
    serve_with(false)
}

fn serve_with(embedded_sandboxd: bool) -> Served {
    let data = tempfile::tempdir().unwrap();
    let out = courier(data.path())
        .args([
            "admin",
            "user",
            "create",
            "--email",
            "ada@example.com",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("courier_"));
    let port = free_port();
    let mut serve = courier(data.path());
    // Tests build no tool templates at start (npm installs of every CLI); the template
    // commands are tested on their own.
    serve.env("COURIER_BUILD_TOOL_TEMPLATES", "false");
    if !embedded_sandboxd {
        serve.env("COURIER_ENVD_BINARY", "/nonexistent/courier-envd");
    }
    let child = serve
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "courier serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Served {
        child,
        url,
        token,
        project: created["project_id"].as_str().unwrap().to_owned(),
        data,
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_and_client_commands_with_tables_json_and_exit_codes() {
    let s = serve();
    // Keys: set from stdin and as an argument, listed masked; the secret never printed.
    let mut set = courier(s.data.path())
        .env("COURIER_URL", &s.url)
        .env("COURIER_TOKEN", &s.token)
        .args(["keys", "set", "anthropic"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    set.stdin
        .take()
        .unwrap()
        .write_all(b"sk-ant-api03-secret-9876\n")
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out), "anthropic key set: ****9876\n");
    let out = s.run(&[
        "keys",
        "set",
        "github",
        "ghp_abcdefgh1234",
        "--project",
        &s.project,
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let out = s.run(&["keys", "list"]);
    let listing = text(&out);
    assert!(listing.starts_with("PROVIDER"), "{listing}");
    assert!(
        listing.contains("****9876") && !listing.contains("secret"),
        "{listing}"
    );
    let out = s.run(&["keys", "list", "--project", &s.project, "--json"]);
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys["items"][0]["masked"], "****1234");
    // Lists and usage.
    let out = s.run(&["sandbox", "list"]);
    assert!(out.status.success());
    assert!(text(&out).starts_with("ID"));
    let out = s.run(&["sandbox", "list", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let out = s.run(&["usage"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("default")
            && text(&out).contains("TOTAL")
            && text(&out).contains("VCPU S")
            && text(&out).contains("GIB S"),
        "{}",
        text(&out)
    );
    // Exit codes: validation 5, not found 4, auth 3, provider failure 1.
    let out = s.run(&[
        "sandbox", "create", "--tool", "shell", "--prompt", "echo hi", "--memory", "100",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", err(&out));
    assert!(err(&out).contains("memory_mb"), "{}", err(&out));
    let out = s.run(&["sandbox", "get", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(out.status.code(), Some(4));
    let out = courier(s.data.path())
        .env("COURIER_URL", &s.url)
        .env("COURIER_TOKEN", "courier_wrong")
        .args(["sandbox", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = courier(s.data.path())
        .env("COURIER_URL", &s.url)
        .args(["usage"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(err(&out).contains("COURIER_TOKEN"));
    // No provider configured yet: the create fails saying what to set.
    let out = s.run(&[
        "sandbox", "create", "--tool", "shell", "--prompt", "echo hi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("E2B_API_KEY"), "{}", err(&out));
    let out = s.run(&["sandbox", "list", "--status", "error", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let out = s.run(&["sandbox", "get", &id]);
    assert!(text(&out).contains("status    error"), "{}", text(&out));
    let out = s.run(&["sandbox", "kill", &id]);
    assert_eq!(out.status.code(), Some(6));
    let out = s.run(&["sandbox", "delete", &id]);
    assert!(out.status.success());
    let out = s.run(&["sandbox", "restore", &id]);
    assert!(out.status.success(), "{}", err(&out));
    let out = s.run(&["sandbox", "logs", &id]);
    assert!(out.status.success());
    let out = s.run(&["sandbox", "logs", "-f", &id]);
    assert!(out.status.success(), "{}", err(&out));
    let out = s.run(&["sandbox", "delete", "--purge", &id]);
    assert!(out.status.success());
    // Unreachable server: 8.
    let out = courier(s.data.path())
        .env("COURIER_URL", format!("http://127.0.0.1:{}", free_port()))
        .env("COURIER_TOKEN", &s.token)
        .args(["sandbox", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
}

#[test]
fn templates_build_and_list_report_what_the_provider_did() {
    let s = serve();
    // A tool without a template: invalid input, naming the tools that have one.
    let out = s.run(&["templates", "build", "shell"]);
    assert_eq!(out.status.code(), Some(5), "{}", err(&out));
    assert!(
        err(&out).contains("allowed: claude, opencode, codex, pi"),
        "{}",
        err(&out)
    );
    // No sandbox provider here: the build is recorded as failed with the reason.
    let out = s.run(&["templates", "build", "claude"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out), err(&out));
    assert!(
        err(&out).contains("cannot build templates"),
        "{}",
        err(&out)
    );
    let out = s.run(&["templates", "list"]);
    assert!(out.status.success(), "{}", err(&out));
    let table = text(&out);
    assert!(
        table.starts_with("ID") && table.contains("claude") && table.contains("failed"),
        "{table}"
    );
    let out = s.run(&["templates", "list", "--tool", "claude", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"][0]["tool_id"], "claude");
    assert_eq!(list["items"][0]["status"], "failed");
    assert!(
        list["items"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot build templates")
    );
    let out = s.run(&["templates", "list", "--tool", "a&b"]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn serve_stops_gracefully_on_sigterm_and_keeps_its_data() {
    let mut s = serve();
    let out = s.run(&["keys", "set", "openai", "sk-openai-0000zzzz"]);
    assert!(out.status.success());
    let pid = s.child.id();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let log: Vec<String> = BufReader::new(s.child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let log = log.join("\n");
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    assert!(!log.contains("sk-openai"), "{log}");
    // Same data dir, same master key: the key is still there and readable.
    let port = free_port();
    s.url = format!("http://127.0.0.1:{port}");
    s.child = courier(s.data.path())
        .env("COURIER_ENVD_BINARY", "/nonexistent/courier-envd")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = s.run(&["keys", "list", "--json"]);
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys["items"][0]["masked"], "****zzzz");
}

#[test]
fn serve_as_root_runs_sandboxes_in_the_embedded_sandboxd() {
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.ok() != Some(0) {
        println!("skipping: the embedded courier-sandboxd needs root");
        return;
    }
    let envd = std::path::Path::new(BIN).with_file_name("courier-envd");
    if !envd.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "courier-envd-bin"])
            .status()
            .unwrap();
        assert!(status.success(), "building courier-envd");
    }
    let s = serve_with(true);
    let out = s.run(&[
        "sandbox",
        "create",
        "--tool",
        "shell",
        "--prompt",
        "echo embedded-$((6*7)) on $(hostname) as $(whoami)",
    ]);
    assert!(out.status.success(), "{}{}", text(&out), err(&out));
    assert!(text(&out).contains("embedded-42 on "), "{}", text(&out));
    assert!(text(&out).contains(" as user"), "{}", text(&out));
    // Another local user must not read the database (prompts, logs, repository URLs),
    // the master key or the sandbox server's state: all owner-only, also after the
    // embedded sandbox server set its own umask.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |name: &str| {
        std::fs::metadata(s.data.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("courier.db"), 0o600);
    assert_eq!(mode("master.key"), 0o600);
    assert_eq!(mode("sandboxd"), 0o700);
    for wal in ["courier.db-wal", "courier.db-shm"] {
        if s.data.path().join(wal).exists() {
            assert_eq!(mode(wal), 0o600, "{wal}");
        }
    }
    let out = s.run(&["sandbox", "list", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(page["items"][0]["status"], "running");
    let out = s.run(&["sandbox", "kill", &id]);
    assert!(out.status.success(), "{}", err(&out));
    let out = s.run(&["sandbox", "get", &id, "--json"]);
    let sandbox: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sandbox["status"], "killed");
}

#[test]
fn project_settings_set_from_flags_and_files_then_shown_masked() {
    let s = serve();
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.md");
    std::fs::write(&prompt, "Answer in French.\nBe brief.\n").unwrap();
    let skill = dir.path().join("SKILL.md");
    std::fs::write(
        &skill,
        "---\nname: review\ndescription: Reviews diffs\n---\nReview.\n",
    )
    .unwrap();
    let secret = "tok-very-secret-9876";
    let env = format!("DEPLOY_TOKEN={secret}");
    let out = s.run(&[
        "project",
        "settings",
        "set",
        "--env",
        &env,
        "--system-prompt",
        prompt.to_str().unwrap(),
        "--skill",
        &format!("review={}", skill.display()),
        "--default-tool",
        "shell",
        "--default-timeout",
        "600",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let shown = text(&out);
    assert!(shown.contains("DEPLOY_TOKEN=****9876"), "{shown}");
    assert!(shown.contains("2 lines"), "{shown}");
    assert!(shown.contains("review"), "{shown}");
    assert!(shown.contains("timeout_s     600"), "{shown}");
    assert!(!shown.contains(secret));

    // A second set keeps what it does not mention, the env var's value included.
    let out = s.run(&[
        "project",
        "settings",
        "set",
        "--project",
        &s.project,
        "--base-branch",
        "develop",
        "--unset-env",
        "NOPE",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let out = s.run(&["project", "settings", "show", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["base_branch"], "develop");
    assert_eq!(json["env_vars"][0]["masked"], "****9876");
    assert_eq!(json["skills"][0]["name"], "review");
    assert_eq!(json["sandbox_defaults"]["timeout_ms"], 600_000);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));

    // Invalid input: exit 5 naming the field and what is allowed; bad usage: exit 2.
    let out = s.run(&[
        "project",
        "settings",
        "set",
        "--skill",
        "Bad Name=/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", err(&out));
    assert!(err(&out).contains("skills.name"), "{}", err(&out));
    let out = s.run(&["project", "settings", "set", "--env", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    let out = s.run(&["project", "settings", "set", "--default-memory", "1"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(err(&out).contains("memory_mb"), "{}", err(&out));
}

#[test]
fn admin_rates_start_at_e2bs_compute_prices_and_are_set_from_now_on() {
    let data = tempfile::tempdir().unwrap();
    let rates = |args: &[&str]| {
        courier(data.path())
            .args(["admin", "rates"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = rates(&["list"]);
    assert!(out.status.success(), "{}", err(&out));
    let listed = text(&out);
    assert!(listed.starts_with("SERVICE"), "{listed}");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["e2b", "cpu_seconds", "0.000014", "1970-01-01T00:00:00Z"],
            vec![
                "e2b",
                "memory_gib_seconds",
                "0.0000045",
                "1970-01-01T00:00:00Z"
            ],
        ],
        "{listed}"
    );

    let out = rates(&["set", "e2b", "cpu_seconds", "0.00002", "--json"]);
    assert!(out.status.success(), "{}", err(&out));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu: Vec<f64> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["metric"] == "cpu_seconds")
        .map(|r| r["usd_per_unit"].as_f64().unwrap())
        .collect();
    // The default stays for the usage before; the new rate applies from now on.
    assert_eq!(cpu, vec![0.000_014, 0.000_02]);
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");

    let out = rates(&["set", "e2b", "gpu_seconds", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("cpu_seconds"), "{}", err(&out));
}
