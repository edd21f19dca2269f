//! Project automation for the Courier workspace.
//!
//! `cargo xtask ci` is what `.ci/run` executes on a clean clone; every step prints what it
//! runs so a red CI log says which command failed.

mod postgres;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci           fmt check, clippy -D warnings, cargo-deny, static envd build, `test`, then
               (as root) `test-real-clis`
  test         the whole test suite: machine setup (as root), a throwaway PostgreSQL,
               nextest, doctests, and the official-E2B-SDK interop suite
  bench [NAME...]
               print the benchmark figures; NAME picks some of: codec, envd (vs the
               Python SDK), sandboxd, orchestrator, store (default: all)
  demo         run the local stack: courier-envd plus the SDK quickstart against it
  envd-static  build a statically linked courier-envd and check it
  postgres     start a throwaway PostgreSQL cluster and print its URL until Enter
  loadtest     as root: wrk against list/get and 100 SSE clients on one busy sandbox
  test-real-clis [--record]
               as root: the real agent CLIs at their pinned versions (npm) through
               template build, create, stream, follow-up, kill and a refused key, against
               the stand-in LLM; --record rewrites their recordings
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(TestEnv::default()),
        Some("bench") => bench(&args[1..]),
        Some("demo") => demo(),
        Some("envd-static") => envd_static(true).map(|_| ()),
        Some("postgres") => postgres_shell(),
        Some("loadtest") => loadtest(),
        Some("test-real-clis") => test_real_clis(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, cmd: &mut Command) -> Result<()> {
    println!("\n==> {step}: {cmd:?}");
    execute(step, cmd)
}

/// Like [`run`], without printing the command line (it carries a secret).
fn run_step(step: &str, cmd: &mut Command) -> Result<()> {
    println!("\n==> {step}");
    execute(step, cmd)
}

fn execute(step: &str, cmd: &mut Command) -> Result<()> {
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {:?}", cmd.get_program()))?;
    println!(
        "<== {step}: {status} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ci() -> Result<()> {
    run("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    deny()?;
    // CI proves the binary links statically and runs; a dev build shows that at half the
    // compile time of a release build.
    envd_static(false)?;
    let mut env = TestEnv::default();
    // Tests that need a service fail instead of skipping when CI is set.
    env.set("CI", "true");
    test(env)?;
    // About two minutes (npm cache warm or cold): cheap enough to check every change
    // against the real CLIs (see the README).
    if is_root() {
        test_real_clis(&[])
    } else {
        println!("==> real-CLI suite skipped: not root (it runs real sandboxes)");
        Ok(())
    }
}

/// Environment for the test commands: `std::env::set_var` is `unsafe` in edition 2024 and
/// the workspace forbids `unsafe`, so variables are passed to each child explicitly.
#[derive(Default)]
struct TestEnv(Vec<(String, String)>);

impl TestEnv {
    fn set(&mut self, key: &str, value: &str) {
        self.0.push((key.to_owned(), value.to_owned()));
    }

    fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for (key, value) in &self.0 {
            cmd.env(key, value);
        }
        cmd
    }
}

fn deny() -> Result<()> {
    let have = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        run(
            "install cargo-deny",
            cargo().args(["install", "--locked", "cargo-deny@0.20.2"]),
        )?;
    }
    run("fetch", cargo().args(["fetch", "--locked"]))?;
    run(
        "cargo-deny",
        cargo().args(["deny", "--offline", "check", "bans", "licenses", "sources"]),
    )
}

fn setup_machine() -> Result<()> {
    if is_root() {
        run(
            "machine setup",
            Command::new("bash").arg(root().join("scripts/setup-machine.sh")),
        )
    } else {
        println!("==> machine setup skipped: not root (tests that need root skip themselves)");
        Ok(())
    }
}

fn test(mut env: TestEnv) -> Result<()> {
    setup_machine()?;
    let cluster = postgres::Cluster::start().context("starting PostgreSQL for the store tests")?;
    env.set("COURIER_TEST_PG_URL", cluster.url());
    run(
        "nextest",
        env.apply(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--profile",
            "ci",
            "--no-fail-fast",
        ])),
    )?;
    run(
        "doctests",
        env.apply(cargo().args(["test", "--workspace", "--all-features", "--doc"])),
    )?;
    run(
        "python interop (official E2B SDK)",
        env.apply(
            Command::new("bash")
                .arg(root().join("tests/python/run.sh"))
                .current_dir(root()),
        ),
    )?;
    // The sandbox suites once more with every sandbox under gVisor (the first pass ran
    // them under the container isolation).
    run(
        "sandboxd suites under gVisor",
        env.apply(cargo().args([
            "nextest",
            "run",
            "-p",
            "courier-sandboxd",
            "--test",
            "isolation",
            "--test",
            "control_plane",
            "--test",
            "templates",
            "--test",
            "limits",
            "--test",
            "egress",
            "--profile",
            "ci",
            "--no-fail-fast",
        ]))
        .env("COURIER_TEST_ISOLATION", "gvisor"),
    )?;
    for isolation in ["container", "gvisor"] {
        run(
            &format!(
                "python scenarios against courier-sandboxd, isolation {isolation} (official E2B SDK)"
            ),
            env.apply(
                Command::new("bash")
                    .arg(root().join("tests/python/run_sandboxd.sh"))
                    .current_dir(root()),
            )
            .env("COURIER_SANDBOXD_ISOLATION", isolation)
            .env("COURIER_TEST_ISOLATION", isolation),
        )?;
    }
    drop(cluster);
    Ok(())
}

/// `cargo xtask test-real-clis [--record]`: the real-CLI suite of courier-orchestrator
/// (`tests/real_clis/`), one CLI at a time, then the parser tests over the recordings.
/// The npm cache (`COURIER_NPM_CACHE`, default `~/.cache/courier/npm-cache`, outside the
/// clone so CI runs on one machine share it) is shared into the template builds, so only
/// the first run downloads the CLIs.
fn test_real_clis(args: &[String]) -> Result<()> {
    let record = match args {
        [] => false,
        [flag] if flag == "--record" => true,
        other => bail!("test-real-clis takes only --record, not {other:?}"),
    };
    if !is_root() {
        bail!("test-real-clis needs root: it runs real sandboxes (namespaces, mounts, cgroups)");
    }
    setup_machine()?;
    let started = Instant::now();
    let mut env = TestEnv::default();
    env.set("COURIER_REAL_CLIS", "1");
    if record {
        env.set("COURIER_REAL_CLIS_RECORD", "1");
    }
    run(
        "real agent CLIs",
        env.apply(cargo().args([
            "test",
            "-p",
            "courier-orchestrator",
            "--test",
            "real_clis",
            "--",
            "--test-threads",
            "1",
            "--nocapture",
        ])),
    )?;
    let mut parsers = cargo();
    parsers.args(["test", "-p", "courier-tools", "--test", "parsers"]);
    if record {
        // New recordings change the snapshots: write them as `.snap.new` for review.
        parsers
            .env("INSTA_UPDATE", "new")
            .env("INSTA_FORCE_PASS", "1");
    }
    run("parsers over the recordings", &mut parsers)?;
    if record {
        println!("==> recordings rewritten: review the parser snapshots with `cargo insta review`");
    }
    println!(
        "==> real-CLI suite passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The benchmarks `cargo xtask bench` knows, in the order they run.
const BENCHES: [&str; 5] = ["codec", "envd", "sandboxd", "orchestrator", "store"];

fn bench(names: &[String]) -> Result<()> {
    if let Some(unknown) = names.iter().find(|n| !BENCHES.contains(&n.as_str())) {
        bail!(
            "unknown bench {unknown:?}: choose from {}",
            BENCHES.join(", ")
        );
    }
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    let mut env = TestEnv::default();
    // Only the store bench uses PostgreSQL.
    let cluster = wanted("store").then(postgres::Cluster::start);
    match &cluster {
        Some(Ok(cluster)) => env.set("COURIER_TEST_PG_URL", cluster.url()),
        Some(Err(error)) => {
            println!("==> PostgreSQL unavailable, store bench runs on SQLite only: {error:#}")
        }
        None => {}
    }
    if wanted("codec") {
        run(
            "codec bench",
            env.apply(&mut bench_example("courier-e2b", "bench_codec")),
        )?;
    }
    // courier-e2b (both codecs) and the official Python SDK on one in-process courier-envd.
    if wanted("envd") {
        run(
            "envd bench",
            env.apply(&mut bench_example("courier-envd", "bench_envd")),
        )?;
    }
    if wanted("sandboxd") && is_root() {
        run(
            "sandboxd bench: build",
            cargo().args([
                "build",
                "--release",
                "-p",
                "courier-sandboxd-bin",
                "--bin",
                "courier-sandboxd",
                "-p",
                "courier-envd-bin",
                "--bin",
                "courier-envd",
            ]),
        )?;
        run(
            "sandboxd bench",
            env.apply(&mut bench_example("courier-sandboxd", "bench_sandboxd")),
        )?;
    } else if wanted("sandboxd") {
        println!(
            "\n==> sandboxd bench skipped: courier-sandboxd needs root (namespaces, mounts, cgroups)"
        );
    }
    // A real Orchestrator over a fake provider: no sandboxes, no root.
    if wanted("orchestrator") {
        run(
            "orchestrator bench",
            env.apply(&mut bench_example(
                "courier-orchestrator",
                "bench_orchestrator",
            )),
        )?;
    }
    if wanted("store") {
        run(
            "store bench",
            env.apply(&mut bench_example("courier-store", "bench")),
        )?;
    }
    drop(cluster);
    Ok(())
}

/// `cargo run --release -p <package> --example <example>`.
fn bench_example(package: &str, example: &str) -> Command {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", package, "--example", example]);
    cmd
}

fn demo() -> Result<()> {
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
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
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

/// The first `"key":"value"` string in a JSON text (enough for the CLI's own output;
/// xtask stays free of a JSON dependency).
fn json_field(text: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":");
    let rest = text[text.find(&needle)? + needle.len()..].trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
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
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn envd_static(release: bool) -> Result<PathBuf> {
    let dir = root().join("target/static");
    let profile = if release { "release" } else { "dev" };
    run(
        "static courier-envd",
        cargo()
            .args([
                "build",
                "--profile",
                profile,
                "-p",
                "courier-envd-bin",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
            ])
            .arg(&dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let binary = dir
        .join("x86_64-unknown-linux-gnu")
        .join(if release { "release" } else { "debug" })
        .join("courier-envd");
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    if has_interpreter(&bytes) {
        bail!(
            "{} has a PT_INTERP segment: it is dynamically linked",
            binary.display()
        );
    }
    let out = Command::new(&binary).arg("--version").output()?;
    if !out.status.success() {
        bail!("{} --version failed", binary.display());
    }
    println!(
        "==> {} is static ({} bytes): {}",
        binary.display(),
        bytes.len(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(binary)
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let read = |offset: usize, len: usize| -> u64 {
        elf.get(offset..offset + len).map_or(0, |b| {
            b.iter()
                .rev()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
        })
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return false;
    }
    let phoff = read(0x20, 8) as usize;
    let phentsize = read(0x36, 2) as usize;
    let phnum = read(0x38, 2) as usize;
    (0..phnum).any(|i| read(phoff + i * phentsize, 4) == 3)
}

fn postgres_shell() -> Result<()> {
    let cluster = postgres::Cluster::start()?;
    println!("{}", cluster.url());
    // Enter (or end of input) stops it: dropping the cluster stops the server and removes
    // its directory, which a Ctrl-C would skip.
    println!("(press Enter to stop the cluster)");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    drop(cluster);
    Ok(())
}

/// `cargo xtask loadtest`, as root: a release `courier serve` with the embedded
/// courier-sandboxd, a user, a few `shell` sandboxes; wrk against list and get, then 100
/// SSE clients on one busy sandbox (`crates/courier-api/examples/sse_load.rs`); prints a
/// figure table. The token stays out of command lines and output.
fn loadtest() -> Result<()> {
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
        let _ = cli(&["kill", id]).stdout(Stdio::null()).status();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
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
        let _ = std::fs::remove_dir_all(&data);
    } else {
        println!(
            "\n==> server log kept in {}",
            data.join("serve.log").display()
        );
    }
    result
}
