//! What the control-plane, template and egress tests share.
#![allow(dead_code)] // each test crate uses part of it

use std::path::PathBuf;

use courier_sandboxd::runtime::Isolation;

/// The isolation the suites run under: `COURIER_TEST_ISOLATION` (`container` or
/// `gvisor`), default `container`. CI runs the suites once each way.
pub fn isolation() -> Isolation {
    match std::env::var("COURIER_TEST_ISOLATION") {
        Ok(value) if !value.is_empty() => value
            .parse()
            .unwrap_or_else(|e| panic!("COURIER_TEST_ISOLATION: {e}")),
        _ => Isolation::Container,
    }
}
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Whether `test` can run: sandboxes need root (namespaces, mounts, cgroups). Without
/// root the test is skipped, except under CI (`CI` set), where a skip would hide that the
/// suite never ran, so it fails instead.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (namespaces, mounts, cgroups) and CI must run it"
    );
    eprintln!("skipping {test}: sandboxes need root (namespaces, mounts, cgroups)");
    false
}

/// Completes once `stop` says so (or its sender is gone).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// One control-plane call with the dev API key: status and JSON body (`Null` when empty).
pub async fn call_api(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http
        .request(method, format!("{api}{path}"))
        .header("X-API-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    };
    (status, value)
}

/// The courier-envd binary: `COURIER_ENVD_BIN`, else the one in this target dir, built
/// on first use (`cargo nextest -p courier-sandboxd` does not build other packages).
pub fn envd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "COURIER_ENVD_BIN",
            "courier-envd-bin",
            "courier-envd",
            false,
        )
    })
    .clone()
}

/// The courier-sandboxd server binary: `COURIER_SANDBOXD_BIN`, else the one in this
/// target dir, (re)built on first use so that it runs this crate's current code.
pub fn sandboxd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "COURIER_SANDBOXD_BIN",
            "courier-sandboxd-bin",
            "courier-sandboxd",
            true,
        )
    })
    .clone()
}

/// `$env` when set, else `<target>/<profile>/<bin>`, built from `package` when missing
/// (or always, which cargo makes a no-op when it is up to date).
fn workspace_binary(env: &str, package: &str, bin: &str, always_build: bool) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/<test>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let path = profile_dir.join(bin);
    if always_build || !path.is_file() {
        let target_dir = profile_dir.parent().expect("target dir");
        eprintln!("building {bin} into {}", target_dir.display());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin, "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {bin} failed");
    }
    path
}

/// Whether gVisor can run here (runsc installed); CI must have it.
pub fn gvisor_or_skip(test: &str) -> bool {
    if courier_sandboxd::runtime::gvisor::find_runsc().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs runsc and CI must run it"
    );
    eprintln!("skipping {test}: runsc is not installed");
    false
}

/// The first warm sandbox of `server` whose id is not in `not`, within a minute.
pub async fn next_warm(server: &courier_sandboxd::Sandboxd, not: &[&str]) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(id) = server
            .warm_sandboxes()
            .into_iter()
            .find(|id| !not.contains(&id.as_str()))
        {
            return id;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no warm sandbox started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
