//! courier-sandboxd through its control plane and proxy, driven by courier-e2b: create →
//! envd ready p50/p99 (sequential creates), creates in parallel (wall time), memory per idle
//! sandbox (the metrics endpoint: the sandbox's cgroup), and `run("true")` through the
//! proxy, courier-e2b vs the official Python SDK side by side. Needs root; prints a skip
//! line otherwise.
//!
//! ```text
//! cargo build --release -p courier-sandboxd-bin -p courier-envd-bin
//! cargo run --release -p courier-sandboxd --example bench_sandboxd
//! ```
//!
//! Starts `courier-sandboxd serve --kill-on-exit` (next to this example in the target
//! directory, or COURIER_SANDBOXD_BIN / COURIER_ENVD_BIN) on free loopback ports with a
//! throw-away data dir and dev API key, kills every sandbox it creates, then stops the
//! server. BENCH_CREATES (30), BENCH_PARALLEL (50) and BENCH_RUNS (200) change the sizes.
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

fn main() -> Result<(), BoxError> {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "sandboxd bench skipped: courier-sandboxd needs root (namespaces, mounts, cgroups)"
        );
        return Ok(());
    }
    let creates = env_usize("BENCH_CREATES", 30);
    let parallel = env_usize("BENCH_PARALLEL", 50);
    let runs = env_usize("BENCH_RUNS", 200);
    let server_bin = binary("COURIER_SANDBOXD_BIN", "courier-sandboxd")?;
    let envd_bin = binary("COURIER_ENVD_BIN", "courier-envd")?;
    let data = tempfile::tempdir()?;
    let api_port = free_port()?;
    let mut proxy_port = free_port()?;
    while proxy_port == api_port {
        proxy_port = free_port()?;
    }
    let key = format!("e2b_{:040x}", u128::from(std::process::id()) << 64 | 0xbe4c);
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&server_bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
        .args(["--proxy-addr", &format!("127.0.0.1:{proxy_port}")])
        .args(["--domain", "courier.test"])
        .arg("--envd-binary")
        .arg(&envd_bin)
        .arg("--kill-on-exit")
        .env("COURIER_SANDBOXD_API_KEY", &key)
        .env("RUST_LOG", "warn")
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
    let server_pid = server.child.id();
    let api = format!("http://127.0.0.1:{api_port}");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(bench(
        &api, &proxy, &key, server_pid, creates, parallel, runs,
    ));
    drop(runtime);
    drop(server);
    if result.is_err()
        && let Ok(log) = std::fs::read_to_string(&log_path)
    {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        for line in tail.into_iter().rev() {
            eprintln!("server: {line}");
        }
    }
    result
}

async fn bench(
    api: &str,
    proxy: &str,
    key: &str,
    server_pid: u32,
    creates: usize,
    parallel: usize,
    runs: usize,
) -> Result<(), BoxError> {
    let client = |codec: Codec| -> Result<Client, BoxError> {
        Ok(Client::new(
            ConnectionConfig::builder()
                .api_key(key)
                .api_url(api)
                .sandbox_url(proxy)
                .request_timeout(Duration::from_secs(120))
                .codec(codec)
                .build()?,
        )?)
    };
    let proto = client(Codec::Proto)?;
    println!(
        "courier-sandboxd on {api} (proxy {proxy}), template base, driven by courier-e2b; \
         {creates} sequential creates, {parallel} parallel, run(\"true\") x{runs}"
    );

    // The first create may assemble the base layer: not counted.
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
    let (p50, p99) = percentiles(latencies);
    println!(
        "create -> envd ready      p50 {}  p99 {}  (n={creates}, one after another; create \
         returns once envd answers /health)",
        ms(p50),
        ms(p99)
    );

    // The same with outbound network (slirp4netns attached and moved into the cgroup).
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
        let n = networked.len();
        let (p50, p99) = percentiles(networked);
        println!(
            "  with internet access    p50 {}  p99 {}  (n={n}; slirp4netns configured before \
             create returns)",
            ms(p50),
            ms(p99)
        );
    } else {
        println!("  with internet access    skipped: slirp4netns is not installed");
    }

    // Idle memory: let them settle, then one metrics sample each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut used = Vec::new();
    let mut cache = Vec::new();
    for sandbox in &sandboxes {
        if let Ok(metrics) = sandbox.metrics(None, None).await
            && let Some(last) = metrics.last()
        {
            used.push(last.mem_used);
            cache.push(last.mem_cache);
        }
    }
    let rss_after = vm_rss_kib(server_pid);
    if used.is_empty() {
        println!("memory per idle sandbox   n/a (the metrics endpoint returned no sample)");
    } else {
        used.sort_unstable();
        let mean = used.iter().sum::<u64>() as f64 / used.len() as f64;
        let mean_cache = cache.iter().sum::<u64>() as f64 / cache.len() as f64;
        println!(
            "memory per idle sandbox   {:.2} MiB mean, {:.2} MiB median (cgroup mem_used from \
             GET /sandboxes/{{id}}/metrics, n={}; page cache {:.2} MiB mean)",
            mean / 1048576.0,
            used[used.len() / 2] as f64 / 1048576.0,
            used.len(),
            mean_cache / 1048576.0
        );
    }
    println!(
        "server VmRSS              {:.1} MiB with {} sandboxes ({:+.1} KiB per sandbox)",
        rss_after as f64 / 1024.0,
        sandboxes.len(),
        (rss_after as f64 - rss_before as f64) / sandboxes.len().max(1) as f64
    );

    // run("true") through the proxy, on one of them.
    let first = sandboxes.first().ok_or("no sandbox created")?.clone();
    let (rs_p50, rs_p99) = run_true(&first, runs).await?;
    let json_sandbox = first.with_codec(Codec::Json);
    let (js_p50, js_p99) = run_true(&json_sandbox, runs).await?;
    let (api_s, proxy_s, key_s, id) = (
        api.to_owned(),
        proxy.to_owned(),
        key.to_owned(),
        first.id().to_owned(),
    );
    let python =
        tokio::task::spawn_blocking(move || python_run_true(&api_s, &proxy_s, &key_s, &id, runs))
            .await?;
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
    let (each_p50, each_p99) = percentiles(each);
    println!(
        "{parallel} creates in parallel  wall {}  ({ok} ok; per create p50 {}  p99 {})",
        ms(wall),
        ms(each_p50),
        ms(each_p99)
    );
    if let Some(first_error) = errors.first() {
        println!("  {} failed, first: {first_error}", errors.len());
    }

    println!();
    println!(
        "{:<22} {:>16} {:>16} {:>18} {:>14}",
        "run(\"true\") via proxy", "e2b-rs Proto", "e2b-rs JSON", "official Python", "Proto/Python"
    );
    let (py50, py99, r50, r99) = match &python {
        Ok((p50, p99)) => (
            ms(*p50),
            ms(*p99),
            format!("{:.1}x", p50.as_secs_f64() / rs_p50.as_secs_f64()),
            format!("{:.1}x", p99.as_secs_f64() / rs_p99.as_secs_f64()),
        ),
        Err(_) => ("n/a".into(), "n/a".into(), "-".into(), "-".into()),
    };
    println!(
        "{:<22} {:>16} {:>16} {:>18} {:>14}",
        "p50",
        ms(rs_p50),
        ms(js_p50),
        py50,
        r50
    );
    println!(
        "{:<22} {:>16} {:>16} {:>18} {:>14}",
        "p99",
        ms(rs_p99),
        ms(js_p99),
        py99,
        r99
    );
    if let Err(why) = &python {
        println!("(official Python SDK column skipped: {why})");
    }
    Ok(())
}
