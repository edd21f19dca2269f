//! `courier serve --config`: a real server configured from a TOML file, the precedence
//! flag > `COURIER_*` variable > file > default, and the errors for unknown keys and bad
//! values.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_courier");

/// `courier` with none of the variables these tests are about inherited.
fn courier() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "DATABASE_URL",
        "E2B_API_KEY",
        "E2B_API_URL",
        "E2B_SANDBOX_URL",
        "E2B_DOMAIN",
        "COURIER_TOKEN",
        "COURIER_MASTER_KEY",
        "COURIER_CONFIG",
        "COURIER_DATA_DIR",
        "COURIER_LISTEN",
        "COURIER_BODY_LIMIT",
        "COURIER_CREATE_RATE",
        "COURIER_GITHUB_WEBHOOK_SECRET",
    ] {
        cmd.env_remove(var);
    }
    // No sandbox provider: the embedded courier-sandboxd stays off.
    cmd.env("COURIER_ENVD_BINARY", "/nonexistent/courier-envd")
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

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `cmd` (a `courier serve …`) and waits until `port` answers.
    fn start(mut cmd: Command, port: u16) -> Server {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("courier serve exited: {status}: {}", server.stop());
            }
            assert!(
                Instant::now() < deadline,
                "courier serve did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Stops the server and returns its log.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; the status code.
fn status(port: u16, method: &str, path: &str, token: &str, body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

/// A GitHub webhook delivery (no bearer token), signed with `secret` when given; the
/// status code.
fn deliver(port: u16, event: &str, secret: Option<&str>, body: &str) -> u16 {
    use hmac::Mac as _;
    let signature = secret.map(|secret| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!(
            "X-Hub-Signature-256: sha256={}\r\n",
            hex::encode(mac.finalize().into_bytes())
        )
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/github/webhook HTTP/1.1\r\nHost: localhost\r\nX-GitHub-Event: {event}\r\n\
         {}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        signature.unwrap_or_default(),
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

fn create_user(extra: &[&str], envs: &[(&str, &Path)]) -> String {
    let mut cmd = courier();
    cmd.args([
        "admin",
        "user",
        "create",
        "--email",
        "cfg@example.com",
        "--json",
    ])
    .args(extra);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    created["token"].as_str().unwrap().to_owned()
}

#[test]
fn serve_reads_its_settings_from_a_config_file_and_never_logs_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("courier.toml");
    std::fs::write(
        &file,
        format!(
            "# courier serve settings\n\
             data_dir = \"state\"            # relative to this file\n\
             listen = \"127.0.0.1:{port}\"\n\
             body_limit = 64\n\
             create_rate = 2\n\
             master_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
             e2b_api_key = \"e2b_topsecretvalue0123\"\n\
             e2b_api_url = \"http://127.0.0.1:9\"\n\
             e2b_sandbox_url = \"http://127.0.0.1:9\"\n\
             github_webhook_secret = \"whsec-fromthefile-5521\"\n"
        ),
    )
    .unwrap();
    // `admin user create` reads the same file, so the user lands in the file's data dir.
    let token = create_user(&["--config", file.to_str().unwrap()], &[]);
    let mut cmd = courier();
    cmd.args(["serve", "--config", file.to_str().unwrap()]);
    let mut server = Server::start(cmd, port);
    assert!(dir.path().join("state/courier.db").is_file());
    // The master key came from the file: none was written to the data dir.
    assert!(!dir.path().join("state/master.key").exists());
    assert_eq!(status(port, "GET", "/v1/me", &token, ""), 200);
    // body_limit = 64 from the file.
    let big = format!("{{\"prompt\":\"{}\"}}", "x".repeat(200));
    assert_eq!(status(port, "POST", "/v1/sandboxes", &token, &big), 413);
    // The webhook checks deliveries against the file's secret.
    let ping = r#"{"zen":"Design for failure.","hook_id":1}"#;
    assert_eq!(
        deliver(port, "ping", Some("whsec-fromthefile-5521"), ping),
        200
    );
    assert_eq!(deliver(port, "ping", Some("another-secret"), ping), 401);
    assert_eq!(deliver(port, "ping", None, ping), 401);
    let log = server.stop();
    assert!(log.contains("config file read"), "{log}");
    assert!(log.contains("E2B-compatible endpoint"), "{log}");
    assert!(log.contains("GitHub webhook on"), "{log}");
    for secret in ["topsecretvalue", "AAAAAAAAAAAAAAAA", "fromthefile"] {
        assert!(!log.contains(secret), "secret in the log: {log}");
    }
}

/// Several providers from `[[providers]]`: each logged by name and URL at start, its key
/// (inline or from the variable `api_key_env` names) never; beside `E2B_*`, refused.
#[test]
fn serve_logs_each_provider_by_name_and_url_never_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("courier.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             data_dir = \"state\"\n\
             [[providers]]\n\
             name = \"host-1\"\n\
             api_url = \"http://127.0.0.1:9\"\n\
             sandbox_url = \"http://127.0.0.1:10\"\n\
             api_key = \"e2b_inlinesecret4417\"\n\
             capacity = 3\n\
             labels = [\"big\"]\n\
             [[providers]]\n\
             name = \"host-2\"\n\
             api_url = \"http://127.0.0.1:11\"\n\
             api_key_env = \"HOST2_KEY\"\n"
        ),
    )
    .unwrap();
    let mut cmd = courier();
    cmd.args(["serve", "--config", file.to_str().unwrap()])
        .env("HOST2_KEY", "e2b_envsecret9921");
    let mut server = Server::start(cmd, port);
    let log = server.stop();
    for (name, url) in [
        ("host-1", "http://127.0.0.1:9"),
        ("host-2", "http://127.0.0.1:11"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("sandbox provider") && l.contains(name) && l.contains(url)),
            "{name} not logged: {log}"
        );
    }
    for secret in ["inlinesecret", "envsecret"] {
        assert!(!log.contains(secret), "a provider key in the log: {log}");
    }

    // Beside E2B_API_KEY: which would a sandbox go to? Refused, naming both.
    let out = courier()
        .args(["serve", "--config", file.to_str().unwrap()])
        .env("HOST2_KEY", "e2b_envsecret9921")
        .env("E2B_API_KEY", "e2b_cloudsecret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`providers`") && err.contains("E2B_API_KEY"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn flags_beat_env_which_beats_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    // The default file: courier.toml in the data dir, found without --config.
    std::fs::write(
        data.join("courier.toml"),
        format!("listen = \"127.0.0.1:{file_port}\"\nbody_limit = 64\n"),
    )
    .unwrap();
    let token = create_user(&[], &[("COURIER_DATA_DIR", &data)]);
    let big = format!("{{\"prompt\":\"{}\"}}", "x".repeat(200));

    // File over defaults; no webhook secret anywhere: the route is there but off.
    let mut cmd = courier();
    cmd.env("COURIER_DATA_DIR", &data).arg("serve");
    let mut s = Server::start(cmd, file_port);
    assert_eq!(status(s.port, "POST", "/v1/sandboxes", &token, &big), 413);
    assert_eq!(deliver(s.port, "ping", Some("any"), "{}"), 503);
    s.stop();

    // Env over the file.
    std::fs::write(
        data.join("courier.toml"),
        format!(
            "listen = \"127.0.0.1:{file_port}\"\nbody_limit = 64\n\
             github_webhook_secret = \"whsec-file\"\n"
        ),
    )
    .unwrap();
    let mut cmd = courier();
    cmd.env("COURIER_DATA_DIR", &data)
        .env("COURIER_LISTEN", format!("127.0.0.1:{env_port}"))
        .env("COURIER_BODY_LIMIT", "100000")
        .env("COURIER_GITHUB_WEBHOOK_SECRET", "whsec-env")
        .arg("serve");
    let mut s = Server::start(cmd, env_port);
    // Under the env's body limit the request is read (and refused for other reasons).
    assert_ne!(status(s.port, "POST", "/v1/sandboxes", &token, &big), 413);
    assert_eq!(deliver(s.port, "ping", Some("whsec-env"), "{}"), 200);
    assert_eq!(deliver(s.port, "ping", Some("whsec-file"), "{}"), 401);
    s.stop();

    // Flags over env; COURIER_CONFIG names the file.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, format!("listen = \"127.0.0.1:{file_port}\"\n")).unwrap();
    let mut cmd = courier();
    cmd.env("COURIER_DATA_DIR", &data)
        .env("COURIER_CONFIG", &other)
        .env("COURIER_LISTEN", format!("127.0.0.1:{env_port}"))
        .args(["serve", "--listen", &format!("127.0.0.1:{flag_port}")])
        .args(["--body-limit", "64"]);
    let mut s = Server::start(cmd, flag_port);
    assert_eq!(status(s.port, "POST", "/v1/sandboxes", &token, &big), 413);
    let log = s.stop();
    assert!(log.contains("other.toml"), "{log}");
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("courier.toml");
    let serve = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = courier()
            .args(["serve", "--config", file.to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve("listen = \"127.0.0.1:0\"\nbodylimit = 5\n");
    assert!(err.contains("unknown key `bodylimit`"), "{err}");
    assert!(
        err.contains("allowed keys: data_dir, listen, body_limit, create_rate, database_url"),
        "{err}"
    );
    let err = serve("listen = \"localhost\"\n");
    assert!(
        err.contains("`listen`") && err.contains("HOST:PORT"),
        "{err}"
    );
    let err = serve("create_rate = 0\n");
    assert!(
        err.contains("`create_rate`") && err.contains("positive integer"),
        "{err}"
    );
    let err = serve("database_url = \"mysql://root:hunter2@db/courier\"\n");
    assert!(
        err.contains("`database_url`") && err.contains("postgres://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let err = serve("max_sandboxes_per_user = \"lots\"\n");
    assert!(
        err.contains("`max_sandboxes_per_user`") && err.contains("0 for no limit"),
        "{err}"
    );
    // The environment variables of the quotas and deadlines are checked the same way.
    for (var, value, expected) in [
        ("COURIER_MAX_SANDBOXES_PER_PROJECT", "-3", "0 for no limit"),
        ("COURIER_TEMPLATE_BUILD_TIMEOUT", "0", "at most 86400"),
        (
            "COURIER_TEMPLATE_STEP_TIMEOUT",
            "1h",
            "positive whole number",
        ),
    ] {
        let out = courier()
            .env(var, value)
            .args([
                "serve",
                "--data-dir",
                dir.path().join("data").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains(expected), "{err}");
    }
    let out = courier()
        .args(["serve", "--config", "/nonexistent/courier.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/courier.toml"));
}

/// SQLite is one replica's: a second `serve` on the same data dir would run every sweep
/// twice and follow every agent twice, so it is refused, naming the way to run several.
#[test]
fn a_second_serve_on_the_same_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("courier.toml");
    // A provider that answers nothing keeps the embedded sandbox server out of the test.
    std::fs::write(
        &file,
        "data_dir = \"state\"\n\
         [[providers]]\n\
         name = \"host-1\"\n\
         api_url = \"http://127.0.0.1:9\"\n\
         api_key = \"e2b_k\"\n",
    )
    .unwrap();
    let serve = |port: u16| {
        let mut cmd = courier();
        cmd.args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        cmd
    };
    let mut first = Server::start(serve(port), port);
    let out = serve(free_port()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SQLite serves one replica") && err.contains("DATABASE_URL"),
        "{err}"
    );
    first.stop();
    // Its lock goes with the process: the next start is fine.
    let mut again = Server::start(serve(port), port);
    again.stop();
}
