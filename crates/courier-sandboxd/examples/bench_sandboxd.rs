//! courier-sandboxd through its control plane and proxy, driven by courier-e2b, once per
//! isolation (`container`, and `gvisor` where runsc works), printed side by side: create →
//! envd ready p50/p99 (sequential creates), creates in parallel (wall time), memory per
//! idle sandbox (the metrics endpoint: the sandbox's cgroup, which holds gVisor's Sentry
//! and gofer too), `run("true")` through the proxy (courier-e2b; the official Python SDK
//! for the container isolation), and agent-like workloads: system-call-heavy loops (stat,
//! small file writes), an `npm install` of a CLI from a local npm cache (no network), and
//! `git clone` of a bundle plus a small Python test suite. Needs root; prints a skip line
//! otherwise.
//!
//! ```text
//! cargo build --release -p courier-sandboxd-bin -p courier-envd-bin
//! cargo run --release -p courier-sandboxd --example bench_sandboxd
//! ```
//!
//! Starts `courier-sandboxd serve --kill-on-exit` (next to this example in the target
//! directory, or COURIER_SANDBOXD_BIN / COURIER_ENVD_BIN) on free loopback ports with a
//! throw-away data dir and dev API key, kills every sandbox it creates, then stops the
//! server. BENCH_CREATES (30), BENCH_PARALLEL (20), BENCH_RUNS (200) and BENCH_NPM_PACKAGE
//! (`eslint@9.39.1`: ~100 packages, thousands of small files) change the sizes;
//! BENCH_ISOLATIONS (`container,gvisor`) picks the isolations. BENCH_SERVER_LOG (a
//! `RUST_LOG` filter, e.g. `courier_sandboxd::runtime=debug` for each create's phase times)
//! keeps the server's log as `bench-sandboxd-<isolation>.log` in the current directory.
//! Prints figures only; asserts no timing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_e2b::{Client, ConnectionConfig, Sandbox, codec::Codec};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary next to this example's directory (`target/<profile>/examples/..`), or `var`.
fn binary(var: &str, name: &str) -> Result<PathBuf, BoxError> {
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
struct Server {
    child: Child,
    api_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bench_sandboxd: courier-sandboxd did not stop within 60s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
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

fn vm_rss_kib(pid: u32) -> u64 {
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

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn kill_all(sandboxes: Vec<Sandbox>) {
    let mut set = tokio::task::JoinSet::new();
    for sandbox in sandboxes {
        set.spawn(async move {
            if let Err(e) = sandbox.kill().await {
                eprintln!("bench_sandboxd: kill {}: {e}", sandbox.id());
            }
        });
    }
    while set.join_next().await.is_some() {}
}

async fn run_true(sandbox: &Sandbox, runs: usize) -> Result<(Duration, Duration), BoxError> {
    let commands = sandbox.commands();
    commands.run("true").await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        commands.run("true").await?;
        samples.push(start.elapsed());
    }
    Ok(percentiles(samples))
}

/// The official SDK's run("true") p50/p99 on `sandbox_id`, or why there is none.
fn python_run_true(
    api: &str,
    proxy: &str,
    key: &str,
    sandbox_id: &str,
    runs: usize,
) -> Result<(Duration, Duration), String> {
    let root = repo_root();
    let venv = Command::new("bash")
        .arg(root.join("tests/python/venv.sh"))
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("venv.sh: {e}"))?;
    if !venv.status.success() {
        return Err(format!("venv.sh failed ({})", venv.status));
    }
    let venv = String::from_utf8_lossy(&venv.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let output = Command::new(Path::new(&venv).join("bin/python"))
        .arg(root.join("tests/python/bench_envd.py"))
        .args([
            "--runs",
            &runs.to_string(),
            "--stream-mb",
            "0",
            "--file-mb",
            "0",
        ])
        .args(["--sandbox-id", sandbox_id])
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_ACCESS_TOKEN")
        .env("E2B_API_URL", api)
        .env("E2B_SANDBOX_URL", proxy)
        .env("E2B_API_KEY", key)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("python: {e}"))?;
    if !output.status.success() {
        return Err(format!("bench_envd.py failed ({})", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bench_envd.py output: {e}: {line}"))?;
    let samples = value["run_true_s"]
        .as_array()
        .ok_or("bench_envd.py output lacks run_true_s")?
        .iter()
        .filter_map(|v| v.as_f64())
        .map(Duration::from_secs_f64)
        .collect();
    Ok(percentiles(samples))
}

/// What one isolation measured.
struct Figures {
    isolation: String,
    create: Option<(Duration, Duration)>,
    create_warm: Option<(Duration, Duration)>,
    create_net: Option<(Duration, Duration)>,
    idle_mib: Option<f64>,
    parallel: Option<(usize, usize, Duration, Duration)>,
    run_true: Option<(Duration, Duration)>,
    run_true_json: Option<(Duration, Duration)>,
    run_true_python: Option<(Duration, Duration)>,
    stat_20k: Option<Duration>,
    writes_300: Option<Duration>,
    npm: Result<Duration, String>,
    git_tests: Result<Duration, String>,
}

/// Host-side inputs of the agent-like workloads, made once.
struct Workloads {
    /// A tarball of an npm cache holding the package and its dependencies.
    npm_cache: Result<Vec<u8>, String>,
    npm_package: String,
    /// A git bundle of a small Python project with a unittest suite.
    git_bundle: Result<Vec<u8>, String>,
}

fn prepare_workloads(dir: &Path) -> Workloads {
    let npm_package =
        std::env::var("BENCH_NPM_PACKAGE").unwrap_or_else(|_| "eslint@9.39.1".to_owned());
    let npm_cache = (|| {
        let cache = dir.join("npmcache");
        let project = dir.join("npmproject");
        std::fs::create_dir_all(&project).map_err(|e| e.to_string())?;
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--cache"])
            .arg(&cache)
            .arg("--prefix")
            .arg(&project)
            .arg(&npm_package)
            .output()
            .map_err(|e| format!("npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install {npm_package} (to fill the local cache) failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        tar_dir(dir, "npmcache")
    })();
    let git_bundle = (|| {
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join("tests")).map_err(|e| e.to_string())?;
        for module in 0..40 {
            let mut text = String::from("import os, tempfile, unittest\n\n");
            text.push_str(&format!("class Test{module}(unittest.TestCase):\n"));
            for case in 0..25 {
                text.push_str(&format!(
                    "    def test_{case}(self):\n        with tempfile.NamedTemporaryFile('w') as f:\n            f.write('x' * {n})\n            f.flush()\n            self.assertEqual(os.stat(f.name).st_size, {n})\n        self.assertEqual(sum(range({n})), {sum})\n",
                    n = case * 10 + 1,
                    sum = (0..(case * 10 + 1)).sum::<u64>()
                ));
            }
            std::fs::write(repo.join(format!("tests/test_m{module}.py")), text)
                .map_err(|e| e.to_string())?;
        }
        std::fs::write(repo.join("tests/__init__.py"), "").map_err(|e| e.to_string())?;
        let git = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("git")
                .args([
                    "-c",
                    "user.name=bench",
                    "-c",
                    "user.email=bench@example.invalid",
                ])
                .args(args)
                .current_dir(&repo)
                .output()
                .map_err(|e| format!("git: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "git {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        git(&["init", "-q", "-b", "main"])?;
        git(&["add", "."])?;
        git(&["commit", "-q", "-m", "tests"])?;
        git(&["bundle", "create", "-q", "../repo.bundle", "--all"])?;
        std::fs::read(dir.join("repo.bundle")).map_err(|e| e.to_string())
    })();
    Workloads {
        npm_cache,
        npm_package,
        git_bundle,
    }
}

/// `tar czf` of `dir/name`, in memory.
fn tar_dir(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("tar")
        .args(["czf", "-", "-C"])
        .arg(dir)
        .arg(name)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!("tar: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

fn main() -> Result<(), BoxError> {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "sandboxd bench skipped: courier-sandboxd needs root (namespaces, mounts, cgroups)"
        );
        return Ok(());
    }
    let sizes = Sizes {
        creates: env_usize("BENCH_CREATES", 30),
        parallel: env_usize("BENCH_PARALLEL", 20),
        runs: env_usize("BENCH_RUNS", 200),
    };
    let server_bin = binary("COURIER_SANDBOXD_BIN", "courier-sandboxd")?;
    let envd_bin = binary("COURIER_ENVD_BIN", "courier-envd")?;
    let scratch = tempfile::tempdir()?;
    println!("preparing the agent-like workloads (npm cache, git bundle)...");
    let workloads = prepare_workloads(scratch.path());
    // The preparation dirtied hundreds of MiB (npm cache): written back now, not in the
    // middle of the create figures.
    nix::unistd::sync();
    let wanted = std::env::var("BENCH_ISOLATIONS").unwrap_or_else(|_| "container,gvisor".into());
    let mut all = Vec::new();
    let mut failed = Vec::new();
    for isolation in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if isolation == "gvisor"
            && let Err(why) = courier_sandboxd::runtime::gvisor::find_runsc()
                .ok_or_else(|| "runsc is not installed".to_owned())
                .and_then(|p| {
                    courier_sandboxd::runtime::gvisor::probe(&p, &scratch.path().join("probe"))
                })
        {
            println!("gvisor skipped: {why}");
            continue;
        }
        println!("\n== isolation {isolation} ==");
        match bench_isolation(&server_bin, &envd_bin, isolation, &sizes, &workloads) {
            Ok(figures) => all.push(figures),
            Err(e) => {
                println!("isolation {isolation} failed: {e}");
                failed.push(isolation.to_owned());
            }
        }
    }
    print_table(&all, &sizes, &workloads.npm_package);
    if !failed.is_empty() {
        return Err(format!("the bench failed under: {}", failed.join(", ")).into());
    }
    Ok(())
}

struct Sizes {
    creates: usize,
    parallel: usize,
    runs: usize,
}

/// A running `courier-sandboxd serve` of the bench's, stopped (SIGTERM) when dropped.
struct Started {
    server: Server,
    api: String,
    proxy: String,
    key: String,
    log_path: PathBuf,
    _data: tempfile::TempDir,
}

/// Starts a server of `isolation` keeping `warm` sandboxes per shape (see
/// `--warm-sandboxes`) and waits for its API.
fn start_server(
    server_bin: &Path,
    envd_bin: &Path,
    isolation: &str,
    warm: usize,
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
        // The bench keeps its sequential creates alive to weigh them idle: lift the
        // committed-memory capacity (default: the host's RAM), which it measures nothing of.
        .args(["--max-memory-mb", "16777216", "--max-sandboxes", "1000"])
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

fn print_server_log_tail(log_path: &Path) {
    if let Ok(log) = std::fs::read_to_string(log_path) {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        for line in tail.into_iter().rev() {
            eprintln!("server: {line}");
        }
    }
}

fn bench_isolation(
    server_bin: &Path,
    envd_bin: &Path,
    isolation: &str,
    sizes: &Sizes,
    workloads: &Workloads,
) -> Result<Figures, BoxError> {
    // Cold creates: no sandbox kept warm (the figures compare with earlier versions, and
    // a pool refilling in the background would weigh on every other figure).
    let started = start_server(server_bin, envd_bin, isolation, 0, isolation)?;
    let server_pid = started.server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut figures = Figures {
        isolation: isolation.to_owned(),
        create: None,
        create_warm: None,
        create_net: None,
        idle_mib: None,
        parallel: None,
        run_true: None,
        run_true_json: None,
        run_true_python: None,
        stat_20k: None,
        writes_300: None,
        npm: Err("not run".into()),
        git_tests: Err("not run".into()),
    };
    let result = runtime.block_on(bench(
        &started.api,
        &started.proxy,
        &started.key,
        server_pid,
        sizes,
        workloads,
        isolation == "container",
        &mut figures,
    ));
    let log_path = started.log_path.clone();
    drop(started);
    if result.is_err() {
        print_server_log_tail(&log_path);
    }
    result?;
    // gVisor's start is worth a pool of started sandboxes: creates arriving one a second
    // (time enough for the pool to refill) take one each.
    if isolation == "gvisor" {
        let started = start_server(server_bin, envd_bin, isolation, 1, "gvisor-warm")?;
        let warm = runtime.block_on(bench_warm(&started, sizes.creates.min(20)));
        let log_path = started.log_path.clone();
        drop(started);
        match warm {
            Ok(figure) => {
                println!(
                    "create from the warm pool p50 {}  p99 {}  (one create a second)",
                    ms(figure.0),
                    ms(figure.1)
                );
                figures.create_warm = Some(figure);
            }
            Err(e) => {
                print_server_log_tail(&log_path);
                println!("warm pool figures failed: {e}");
            }
        }
    }
    drop(runtime);
    Ok(figures)
}

/// Creates `n` sandboxes one a second on a server keeping sandboxes warm; p50/p99.
async fn bench_warm(started: &Started, n: usize) -> Result<(Duration, Duration), BoxError> {
    let client = Client::new(
        ConnectionConfig::builder()
            .api_key(started.key.as_str())
            .api_url(&started.api)
            .sandbox_url(&started.proxy)
            .request_timeout(Duration::from_secs(600))
            .build()?,
    )?;
    // The first create of a shape is cold; it has the pool start the next.
    Sandbox::builder().create(&client).await?.kill().await?;
    let mut latencies = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let sandbox = Sandbox::builder().create(&client).await?;
        latencies.push(start.elapsed());
        sandbox.kill().await?;
    }
    Ok(percentiles(latencies))
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    api: &str,
    proxy: &str,
    key: &str,
    server_pid: u32,
    sizes: &Sizes,
    workloads: &Workloads,
    with_python: bool,
    figures: &mut Figures,
) -> Result<(), BoxError> {
    let Sizes {
        creates,
        parallel,
        runs,
    } = *sizes;
    let client = |codec: Codec| -> Result<Client, BoxError> {
        Ok(Client::new(
            ConnectionConfig::builder()
                .api_key(key)
                .api_url(api)
                .sandbox_url(proxy)
                .request_timeout(Duration::from_secs(600))
                .codec(codec)
                .build()?,
        )?)
    };
    let proto = client(Codec::Proto)?;

    // The first create may assemble the base layer and its disk image: not counted.
    let warm = Sandbox::builder().create(&proto).await?;
    warm.kill().await?;

    let rss_before = vm_rss_kib(server_pid);
    let mut sandboxes = Vec::new();
    let mut latencies = Vec::new();
    let mut failure = None;
    for _ in 0..creates {
        let start = Instant::now();
        match Sandbox::builder().create(&proto).await {
            Ok(sandbox) => {
                latencies.push(start.elapsed());
                sandboxes.push(sandbox);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        kill_all(sandboxes).await;
        return Err(e.into());
    }
    figures.create = Some(percentiles(latencies));
    println!(
        "create -> envd ready      p50 {}  p99 {}",
        ms(figures.create.unwrap().0),
        ms(figures.create.unwrap().1)
    );

    // The same with outbound network (slirp4netns attached before the init runs).
    if courier_sandboxd::runtime::network::find_slirp4netns().is_some() {
        let mut networked = Vec::new();
        for _ in 0..creates.min(10) {
            let start = Instant::now();
            let sandbox = Sandbox::builder()
                .allow_internet_access(true)
                .create(&proto)
                .await?;
            networked.push(start.elapsed());
            sandbox.kill().await?;
        }
        figures.create_net = Some(percentiles(networked));
    }

    // Idle memory: let them settle, then one metrics sample each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut used = Vec::new();
    for sandbox in &sandboxes {
        if let Ok(metrics) = sandbox.metrics(None, None).await
            && let Some(last) = metrics.last()
        {
            used.push(last.mem_used);
        }
    }
    let rss_after = vm_rss_kib(server_pid);
    if !used.is_empty() {
        let mean = used.iter().sum::<u64>() as f64 / used.len() as f64;
        figures.idle_mib = Some(mean / 1048576.0);
    }
    println!(
        "server VmRSS              {:.1} MiB with {} sandboxes ({:+.1} KiB per sandbox)",
        rss_after as f64 / 1024.0,
        sandboxes.len(),
        (rss_after as f64 - rss_before as f64) / sandboxes.len().max(1) as f64
    );

    // run("true") through the proxy, on one of them.
    let first = sandboxes.first().ok_or("no sandbox created")?.clone();
    figures.run_true = Some(run_true(&first, runs).await?);
    figures.run_true_json = Some(run_true(&first.with_codec(Codec::Json), runs).await?);
    if with_python {
        let (api_s, proxy_s, key_s, id) = (
            api.to_owned(),
            proxy.to_owned(),
            key.to_owned(),
            first.id().to_owned(),
        );
        match tokio::task::spawn_blocking(move || {
            python_run_true(&api_s, &proxy_s, &key_s, &id, runs)
        })
        .await?
        {
            Ok(p) => figures.run_true_python = Some(p),
            Err(why) => println!("(official Python SDK run(\"true\") skipped: {why})"),
        }
    }
    kill_all(sandboxes).await;

    // Creates in parallel.
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let client = proto.clone();
        set.spawn(async move {
            let start = Instant::now();
            let sandbox = Sandbox::builder().create(&client).await;
            (sandbox, start.elapsed())
        });
    }
    let mut created = Vec::new();
    let mut each = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined? {
            (Ok(sandbox), took) => {
                created.push(sandbox);
                each.push(took);
            }
            (Err(e), _) => errors.push(e.to_string()),
        }
    }
    let wall = start.elapsed();
    let ok = created.len();
    kill_all(created).await;
    let (each_p50, _) = percentiles(each);
    figures.parallel = Some((parallel, ok, wall, each_p50));
    if let Some(first_error) = errors.first() {
        println!(
            "  {} parallel creates failed, first: {first_error}",
            errors.len()
        );
    }

    // Agent-like work in one sandbox, as `user`.
    let sandbox = Sandbox::builder()
        .timeout(Duration::from_secs(1800))
        .create(&proto)
        .await?;
    let timed = |command: String| {
        let sandbox = sandbox.clone();
        async move {
            let start = Instant::now();
            let out = sandbox
                .commands()
                .run(command.clone())
                .timeout(Duration::from_secs(1200))
                .await;
            match out {
                Ok(out) if out.exit_code == 0 => Ok(start.elapsed()),
                Ok(out) => Err(format!(
                    "`{command}` exited {}: {}",
                    out.exit_code,
                    out.stderr.lines().last().unwrap_or_default()
                )),
                Err(e) => Err(format!("`{command}`: {e}")),
            }
        }
    };
    // The loops time themselves: the figure is the system calls, not python's start or the
    // login shell around the command (which `run("true")` above already shows).
    let timed_inside = |script: &str| {
        let sandbox = sandbox.clone();
        let command = format!(
            "python3 -c 'import os, time\nstart = time.perf_counter()\n{script}\nprint(time.perf_counter() - start)'"
        );
        async move {
            let out = sandbox
                .commands()
                .run(command.clone())
                .timeout(Duration::from_secs(600))
                .await
                .ok()?;
            let seconds: f64 = out.stdout.trim().parse().ok()?;
            Some(Duration::from_secs_f64(seconds))
        }
    };
    figures.stat_20k = timed_inside("for _ in range(20000): os.stat(\"/usr/bin/env\")").await;
    figures.writes_300 = timed_inside(
        "os.makedirs(\"/tmp/w\", exist_ok=True)\nfor i in range(300):\n    open(f\"/tmp/w/{i}\", \"w\").write(\"x\" * 100)",
    )
    .await;
    figures.npm = match &workloads.npm_cache {
        Err(why) => Err(why.clone()),
        Ok(tarball) => {
            sandbox
                .files()
                .write("/tmp/npmcache.tgz", tarball.clone())
                .await?;
            timed(format!(
                "tar xzf /tmp/npmcache.tgz -C /tmp && mkdir -p ~/npmproj && cd ~/npmproj && \
                 npm install --offline --no-audit --no-fund --cache /tmp/npmcache {} >/dev/null",
                workloads.npm_package
            ))
            .await
        }
    };
    figures.git_tests = match &workloads.git_bundle {
        Err(why) => Err(why.clone()),
        Ok(bundle) => {
            sandbox
                .files()
                .write("/tmp/repo.bundle", bundle.clone())
                .await?;
            timed(
                "git clone -q /tmp/repo.bundle ~/repo && cd ~/repo && python3 -m unittest discover -q -s tests -t . 2>/dev/null"
                    .to_owned(),
            )
            .await
        }
    };
    sandbox.kill().await?;
    Ok(())
}

fn print_table(all: &[Figures], sizes: &Sizes, npm_package: &str) {
    println!();
    let mut header = format!("{:<44}", "");
    for f in all {
        header.push_str(&format!("{:>24}", f.isolation));
    }
    println!("{header}");
    let row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        let mut line = format!("{label:<44}");
        for f in all {
            line.push_str(&format!("{:>24}", cell(f)));
        }
        println!("{line}");
    };
    let pair = |v: Option<(Duration, Duration)>| {
        v.map_or("n/a".to_owned(), |(a, b)| format!("{} / {}", ms(a), ms(b)))
    };
    let secs = |v: &Result<Duration, String>| match v {
        Ok(d) => format!("{:.2} s", d.as_secs_f64()),
        Err(_) => "n/a".to_owned(),
    };
    // Short workloads: milliseconds with a decimal, or the container's figure reads 0.00 s.
    let short = |v: Option<Duration>| {
        v.map_or("n/a".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    row(
        &format!("create -> envd ready p50 / p99 (n={})", sizes.creates),
        &|f| pair(f.create),
    );
    row("  from the warm pool, one a second p50 / p99", &|f| {
        pair(f.create_warm)
    });
    row("  with internet access p50 / p99", &|f| pair(f.create_net));
    row("memory per idle sandbox (cgroup, mean)", &|f| {
        f.idle_mib.map_or("n/a".into(), |m| format!("{m:.1} MiB"))
    });
    row(
        &format!("{} creates in parallel: wall (ok)", sizes.parallel),
        &|f| {
            f.parallel.map_or("n/a".into(), |(_, ok, wall, _)| {
                format!("{} ({ok})", ms(wall))
            })
        },
    );
    row(
        &format!("run(\"true\") p50 / p99 (n={})", sizes.runs),
        &|f| pair(f.run_true),
    );
    row("  JSON codec p50 / p99", &|f| pair(f.run_true_json));
    row("  official Python SDK p50 / p99", &|f| {
        pair(f.run_true_python)
    });
    row("20 000 stat() calls (python3)", &|f| short(f.stat_20k));
    row("300 small file writes (python3)", &|f| short(f.writes_300));
    row(
        &format!("npm install {npm_package} (offline cache)"),
        &|f| secs(&f.npm),
    );
    row("git clone + 1000 unit tests", &|f| secs(&f.git_tests));
    for f in all {
        if let Err(why) = &f.npm {
            println!("({} npm workload: {why})", f.isolation);
        }
        if let Err(why) = &f.git_tests {
            println!("({} git workload: {why})", f.isolation);
        }
    }
}
