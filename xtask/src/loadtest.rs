//! `cargo xtask loadtest`: wrk and many SSE clients against a release `courier serve`.

use std::env;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, cleanup, is_root, json_field, run, target_dir};

/// `cargo xtask loadtest`, as root: a release `courier serve` with the embedded
/// courier-sandboxd, a user, a few `shell` sandboxes; wrk against list and get, then 100
/// SSE clients on one busy sandbox (`crates/courier-api/examples/sse_load.rs`); prints a
/// figure table. The token stays out of command lines and output.
pub fn loadtest() -> Result<()> {
    use std::collections::BTreeMap;
    use std::process::Stdio;
    use std::time::Duration;
    if !is_root() {
        println!(
            "==> loadtest skipped: not root. It runs real sandboxes in the embedded \
             courier-sandboxd, which needs root (namespaces, mounts, cgroups)"
        );
        return Ok(());
    }
    let get = |name: &str| env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let sandboxes = get("LOADTEST_SANDBOXES").unwrap_or(5).max(1);
    let clients = get("LOADTEST_SSE_CLIENTS").unwrap_or(100);
    let lines = get("LOADTEST_LINES").unwrap_or(20_000);
    let seconds = get("LOADTEST_WRK_SECONDS").unwrap_or(10);
    run(
        "build",
        cargo().args([
            "build",
            "--release",
            "-p",
            "courier",
            "-p",
            "courier-envd-bin",
        ]),
    )?;
    run(
        "build the SSE load client",
        cargo().args([
            "build",
            "--release",
            "-p",
            "courier-api",
            "--example",
            "sse_load",
        ]),
    )?;
    if Command::new("wrk").arg("-v").output().is_err() {
        run("apt-get update", Command::new("apt-get").arg("update"))?;
        run(
            "install wrk",
            Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "wrk"]),
        )?;
    }
    let release = target_dir().join("release");
    let courier = release.join("courier");
    let data = env::temp_dir().join(format!("courier-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let user = Command::new(&courier)
        .args([
            "admin",
            "user",
            "create",
            "--email",
            "load@example.com",
            "--json",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("DATABASE_URL")
        .output()
        .context("creating the load-test user")?;
    if !user.status.success() {
        bail!(
            "courier admin user create failed: {}",
            String::from_utf8_lossy(&user.stderr)
        );
    }
    let token = json_field(&String::from_utf8_lossy(&user.stdout), "token")
        .context("reading the load-test user's token")?;
    let listen = "127.0.0.1:18090";
    let url = format!("http://{listen}");
    println!(
        "\n==> courier serve --data-dir {} --listen {listen}",
        data.display()
    );
    let log = std::fs::File::create(data.join("serve.log"))?;
    let mut server = Command::new(&courier)
        .args(["serve", "--listen", listen, "--create-rate", "1000"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env_remove("E2B_API_KEY")
        .env_remove("E2B_API_URL")
        .env("COURIER_BUILD_TOOL_TEMPLATES", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting courier serve")?;
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(&courier);
        cmd.args(["sandbox", "--url", &url])
            .args(args)
            .env("COURIER_TOKEN", &token);
        cmd
    };
    let mut ids: Vec<String> = Vec::new();
    let mut figures: Vec<(String, String)> = Vec::new();
    let mut session = || -> Result<()> {
        let ready = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(listen).is_ok()
        });
        if !ready {
            bail!("courier serve did not start listening on {listen}");
        }
        let started = Instant::now();
        for _ in 0..sandboxes {
            let out = cli(&[
                "create",
                "--detach",
                "--tool",
                "shell",
                "--prompt",
                "echo ready",
            ])
            .output()?;
            if !out.status.success() {
                bail!(
                    "courier sandbox create failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
        figures.push((
            format!("create {sandboxes} shell sandboxes (sequential)"),
            format!(
                "{:.0} ms each",
                started.elapsed().as_secs_f64() * 1000.0 / sandboxes as f64
            ),
        ));
        // The token goes to wrk in a script file only root can read, not on its command line.
        let script = data.join("auth.lua");
        std::fs::write(
            &script,
            format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"),
        )?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let targets = [
            (
                "GET /v1/sandboxes?limit=20",
                format!("{url}/v1/sandboxes?limit=20"),
            ),
            (
                "GET /v1/sandboxes/{id}",
                format!("{url}/v1/sandboxes/{}", ids[0]),
            ),
        ];
        for (name, target) in targets {
            println!("\n==> wrk -t2 -c32 -d{seconds}s --latency {name}");
            let out = Command::new("wrk")
                .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
                .arg(&script)
                .arg(&target)
                .output()
                .context("running wrk")?;
            let text = String::from_utf8_lossy(&out.stdout);
            print!("{text}");
            if !out.status.success() {
                bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let after = |label: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
                    .unwrap_or_else(|| "?".into())
            };
            let non_2xx = after("Non-2xx or 3xx responses:");
            figures.push((format!("{name}: requests/s"), after("Requests/sec:")));
            figures.push((
                format!("{name}: latency p50 / p99"),
                format!("{} / {}", after("50%"), after("99%")),
            ));
            figures.push((
                format!("{name}: non-2xx responses"),
                if non_2xx == "?" { "0".into() } else { non_2xx },
            ));
        }
        println!(
            "\n==> {clients} SSE clients on sandbox {} while it prints {lines} lines",
            ids[0]
        );
        let out = Command::new(release.join("examples/sse_load"))
            .args([&url, &ids[0], &clients.to_string(), &lines.to_string()])
            .env("COURIER_TOKEN", &token)
            .stderr(Stdio::inherit())
            .output()
            .context("running the SSE load client")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let sse: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let sse_figure = |k: &str| sse.get(k).copied().unwrap_or("?").to_owned();
        figures.push((
            format!(
                "SSE: {} clients x {} lines",
                sse_figure("clients"),
                sse_figure("lines_per_client")
            ),
            format!(
                "{} s until every client had every line",
                sse_figure("elapsed_s")
            ),
        ));
        figures.push((
            "SSE: events delivered (total)".into(),
            sse_figure("sse_events_total"),
        ));
        figures.push((
            "SSE: events/s delivered (total)".into(),
            sse_figure("events_per_s"),
        ));
        figures.push((
            "SSE: delivery latency p50 / p99 / max".into(),
            format!(
                "{} / {} / {} ms",
                sse_figure("latency_p50_ms"),
                sse_figure("latency_p99_ms"),
                sse_figure("latency_max_ms")
            ),
        ));
        figures.push((
            "SSE: clients with every line, in order".into(),
            format!("{} of {clients}", sse_figure("clients_complete_in_order")),
        ));
        if !out.status.success() {
            bail!("the SSE load test failed ({})", out.status);
        }
        Ok(())
    };
    let result = session();
    for id in &ids {
        cleanup(
            "killing a load-test sandbox",
            cli(&["kill", id]).stdout(Stdio::null()).status(),
        );
    }
    cleanup(
        "stopping courier serve",
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status(),
    );
    cleanup("waiting for courier serve", server.wait());
    if !figures.is_empty() {
        let width = figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!(
            "\n==> load test figures (release build, {} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for (k, v) in &figures {
            println!("  {k:<width$}  {v}");
        }
    }
    if result.is_ok() {
        cleanup(
            "removing the load-test data",
            std::fs::remove_dir_all(&data),
        );
    } else {
        println!(
            "\n==> server log kept in {}",
            data.join("serve.log").display()
        );
    }
    result
}
