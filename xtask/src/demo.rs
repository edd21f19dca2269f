//! `cargo xtask demo`: the local stack driven the way a person would, or (not root) a
//! local courier-envd with the SDK quickstart.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, cleanup, is_root, json_field, run, run_step, target_dir};

/// `cargo xtask demo`: the local stack (root), or courier-envd with the SDK quickstart.
pub fn demo() -> Result<()> {
    if !is_root() {
        println!(
            "==> not root: sandboxes need namespaces and cgroups, so this demo drives a local \
             courier-envd with the SDK quickstart instead (run as root for the full stack)"
        );
        return envd_demo();
    }
    run(
        "build",
        cargo().args(["build", "-p", "courier", "-p", "courier-envd-bin"]),
    )?;
    let courier = target_dir().join("debug/courier");
    let data = std::env::temp_dir().join(format!("courier-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let user = Command::new(&courier)
        .args([
            "admin",
            "user",
            "create",
            "--email",
            "demo@example.com",
            "--json",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .context("creating the demo user")?;
    if !user.status.success() {
        bail!(
            "courier admin user create failed: {}",
            String::from_utf8_lossy(&user.stderr)
        );
    }
    let token = json_field(&String::from_utf8_lossy(&user.stdout), "token")
        .context("reading the demo user's token")?;
    let listen = "127.0.0.1:18080";
    println!(
        "\n==> courier serve --data-dir {} --listen {listen}",
        data.display()
    );
    let mut server = Command::new(&courier)
        .args(["serve", "--listen", listen])
        .arg("--data-dir")
        .arg(&data)
        // The demo uses the `shell` tool: no need to build the agents' templates (npm
        // installs) in the background of a one-minute run.
        .env("COURIER_BUILD_TOOL_TEMPLATES", "false")
        .spawn()
        .context("starting courier serve")?;
    let result = demo_session(&courier, listen, &token);
    cleanup(
        "stopping courier serve",
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status(),
    );
    cleanup("waiting for courier serve", server.wait());
    cleanup("removing the demo data", std::fs::remove_dir_all(&data));
    result
}

/// Drives the running server the way a person would: create a sandbox with the `shell`
/// tool (no model key needed), watch its output, send a follow-up, read the log, kill it.
fn demo_session(courier: &Path, listen: &str, token: &str) -> Result<()> {
    let url = format!("http://{listen}");
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(listen).is_ok()
    });
    if !ready {
        bail!("courier serve did not start listening on {listen}");
    }
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(courier);
        cmd.args(["sandbox", "--url", &url])
            .env("COURIER_TOKEN", token);
        cmd.args(args);
        cmd
    };
    run_step(
        "create a sandbox with the shell tool",
        &mut cli(&[
            "create",
            "--tool",
            "shell",
            "--prompt",
            "echo \"hello from sandbox $(hostname), running as $(whoami)\"; ls -a ~; python3 --version",
        ]),
    )?;
    let listed = cli(&["list", "--json"]).output()?;
    let id = json_field(&String::from_utf8_lossy(&listed.stdout), "id")
        .context("finding the demo sandbox in `courier sandbox list --json`")?;
    run_step(
        "send a follow-up",
        &mut cli(&["send", &id, "echo follow-up answered at $(date)"]),
    )?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    run_step("read the log", &mut cli(&["logs", &id]))?;
    run_step(
        "kill it (pushes work, records usage)",
        &mut cli(&["kill", &id]),
    )?;
    run_step("list", &mut cli(&["list"]))?;
    println!("\n==> the dashboard is served by `courier serve` at http://{listen}/#token=<token>");
    Ok(())
}

fn envd_demo() -> Result<()> {
    run(
        "build",
        cargo().args([
            "build",
            "-p",
            "courier-envd-bin",
            "-p",
            "courier-e2b",
            "--examples",
        ]),
    )?;
    let envd = target_dir().join("debug/courier-envd");
    let mut daemon = Command::new(&envd);
    // E2B debug mode sends no token.
    daemon.args(["--listen", "127.0.0.1:49983", "--insecure-no-token"]);
    println!("\n==> starting {daemon:?}");
    let mut child = daemon
        .spawn()
        .with_context(|| format!("starting {}", envd.display()))?;
    let result = run(
        "quickstart against the local envd (E2B debug mode)",
        cargo()
            .args(["run", "-p", "courier-e2b", "--example", "quickstart"])
            .env("E2B_DEBUG", "true"),
    );
    cleanup("stopping courier-envd", child.kill());
    cleanup("waiting for courier-envd", child.wait());
    result
}
