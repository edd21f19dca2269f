//! The measurements, per isolation: creates, memory, `run("true")` and the workloads.

use super::report::{Figures, ms, percentiles};
use super::server::{Started, print_server_log_tail, repo_root, start_server, vm_rss_kib};
use super::workloads::Workloads;
use super::*;

pub(crate) async fn kill_all(sandboxes: Vec<Sandbox>) {
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

pub(crate) async fn run_true(
    sandbox: &Sandbox,
    runs: usize,
) -> Result<(Duration, Duration), BoxError> {
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

/// What `run("true")` costs inside the sandbox without any RPC: p50 of starting and
/// waiting for `/bin/bash -l -c true` (what the SDKs send), `/bin/bash -c true` and
/// `/bin/true`, timed by python3 in the sandbox (as `user`, like the SDK's commands).
pub(crate) async fn shell_floor(sandbox: &Sandbox) -> Result<[Duration; 3], Unavailable> {
    let script = r#"import subprocess, time
def p50(argv):
    s = []
    for _ in range(100):
        t = time.perf_counter()
        subprocess.run(argv)
        s.append(time.perf_counter() - t)
    s.sort()
    return s[50]
print(p50(['/bin/bash', '-l', '-c', 'true']), p50(['/bin/bash', '-c', 'true']), p50(['/bin/true']))
"#;
    sandbox
        .files()
        .write("/tmp/shell_floor.py", script.as_bytes().to_vec())
        .await
        .map_err(|e| Unavailable::failed("writing /tmp/shell_floor.py", e))?;
    let out = sandbox
        .commands()
        .run("python3 /tmp/shell_floor.py")
        .timeout(Duration::from_secs(120))
        .await
        .map_err(|e| Unavailable::failed("python3 /tmp/shell_floor.py", e))?;
    let figures: Vec<Duration> = out
        .stdout
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    figures
        .try_into()
        .map_err(|_| Unavailable::failed("python3 /tmp/shell_floor.py", out.stdout))
}

/// The official SDK's run("true") p50/p99 on `sandbox_id`, or why there is none.
pub(crate) fn python_run_true(
    api: &str,
    proxy: &str,
    key: &str,
    sandbox_id: &str,
    runs: usize,
) -> Result<(Duration, Duration), Unavailable> {
    let root = repo_root();
    let venv = Command::new("bash")
        .arg(root.join("tests/python/venv.sh"))
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(Unavailable::io("venv.sh"))?;
    if !venv.status.success() {
        return Err(Unavailable::failed("venv.sh failed", venv.status));
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
        .map_err(Unavailable::io("python"))?;
    if !output.status.success() {
        return Err(Unavailable::failed("bench_envd.py failed", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Unavailable::failed("bench_envd.py output", format!("{e}: {line}")))?;
    let samples = value["run_true_s"]
        .as_array()
        .ok_or_else(|| Unavailable::failed("bench_envd.py output", "no run_true_s"))?
        .iter()
        .filter_map(|v| v.as_f64())
        .map(Duration::from_secs_f64)
        .collect();
    Ok(percentiles(samples))
}

pub(crate) fn bench_isolation(
    server_bin: &Path,
    envd_bin: &Path,
    isolation: &str,
    sizes: &Sizes,
    workloads: &Workloads,
) -> Result<Figures, BoxError> {
    // Cold creates: no sandbox kept warm (the figures compare with earlier versions, and
    // a pool refilling in the background would weigh on every other figure).
    let started = start_server(server_bin, envd_bin, isolation, 0, 1000, isolation)?;
    let server_pid = started.server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut figures = Figures {
        isolation: isolation.to_owned(),
        create: None,
        create_warm: None,
        create_net: None,
        create_net_plain: None,
        idle_mib: None,
        parallel: None,
        kill: None,
        kill_net: None,
        run_true: None,
        run_true_json: None,
        run_true_python: None,
        shell_floor: None,
        stat_20k: None,
        writes_300: None,
        npm: Err(Unavailable::NotRun),
        git_tests: Err(Unavailable::NotRun),
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
        let started = start_server(server_bin, envd_bin, isolation, 1, 1000, "gvisor-warm")?;
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
pub(crate) async fn bench_warm(
    started: &Started,
    n: usize,
) -> Result<(Duration, Duration), BoxError> {
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
pub(crate) async fn bench(
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
    let (p50, p99) = percentiles(latencies);
    figures.create = Some((p50, p99));
    println!("create -> envd ready      p50 {}  p99 {}", ms(p50), ms(p99));

    // The same with outbound network (slirp4netns), alternating with creates without it:
    // on a loaded machine only figures taken side by side tell what the network costs.
    if courier_sandboxd::runtime::network::find_slirp4netns().is_some() {
        let mut networked = Vec::new();
        let mut plain = Vec::new();
        let mut killed = Vec::new();
        for _ in 0..creates.min(30) {
            for internet in [true, false] {
                let start = Instant::now();
                let sandbox = Sandbox::builder()
                    .allow_internet_access(internet)
                    .create(&proto)
                    .await?;
                let took = start.elapsed();
                let start = Instant::now();
                sandbox.kill().await?;
                if internet {
                    networked.push(took);
                    killed.push(start.elapsed());
                } else {
                    plain.push(took);
                }
            }
        }
        figures.create_net = Some(percentiles(networked));
        figures.create_net_plain = Some(percentiles(plain));
        figures.kill_net = Some(percentiles(killed));
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
    figures.shell_floor = match shell_floor(&first).await {
        Ok(floor) => Some(floor),
        Err(why) => {
            println!("(the shell floor inside the sandbox: {why})");
            None
        }
    };
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
    // Kills one after another, as a client waits for each (E2B's `kill()`).
    let mut killed = Vec::new();
    for sandbox in sandboxes {
        let start = Instant::now();
        sandbox.kill().await?;
        killed.push(start.elapsed());
    }
    let (p50, p99) = percentiles(killed);
    figures.kill = Some((p50, p99));
    println!("kill                      p50 {}  p99 {}", ms(p50), ms(p99));
    if !workloads.enabled {
        return Ok(());
    }

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
                Ok(out) => Err(Unavailable::failed(
                    format!("`{command}` exited {}", out.exit_code),
                    out.stderr.lines().last().unwrap_or_default(),
                )),
                Err(e) => Err(Unavailable::failed(format!("`{command}`"), e)),
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
