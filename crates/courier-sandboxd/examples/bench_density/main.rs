//! Density: how many idle sandboxes one courier-sandboxd holds, what each costs, and
//! whether they all go away cleanly (`cargo xtask bench density`; not part of the
//! default `cargo xtask bench`: 1,000 creates and kills take minutes).
//!
//! Starts `courier-sandboxd serve --kill-on-exit` (as bench_sandboxd does: binaries next
//! to this example or COURIER_SANDBOXD_BIN / COURIER_ENVD_BIN), then creates idle
//! sandboxes one after another (each waits for envd, as the SDK's create does) and
//! prints, per 100, create latency p50/p99; at the end memory (sandboxd's RSS, the
//! sandboxes' cgroups, the host's used memory, each per sandbox), sandboxd's descriptors
//! and threads, tasks in the sandboxes, slirp4netns processes, inotify watches; then
//! kills them one after another (kill latency p50/p99 per 100) and checks that nothing is
//! left: no process, cgroup, mount, loop device or directory of any of them, and
//! sandboxd's descriptors and threads back where they were.
//!
//! Environment: BENCH_DENSITY_COUNT (1000); BENCH_ISOLATION (default: the one `courier
//! serve` picks — gvisor where runsc works, else container); BENCH_DENSITY_INTERNET (1:
//! every sandbox gets outbound access, i.e. its own slirp4netns; 0: none);
//! BENCH_DENSITY_RESERVE_MB (3072): creates stop, and the figure says how many fit,
//! when the host's available memory falls under this reserve (the machine is shared: the
//! bench must not push others into the OOM killer); BENCH_DENSITY_STOP_SECS (20): creates
//! also stop when one took longer (the machine is saturated: idle gVisor sandboxes each
//! keep a few percent of a core busy). Needs root; prints a skip line otherwise. Prints
//! figures only (the leftover check fails the run).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_e2b::{Client, ConnectionConfig, Sandbox};

mod host;
// The sandboxd bench's server start, shared; some of its helpers serve only that bench.
#[allow(dead_code)]
#[path = "../bench_sandboxd/server.rs"]
mod server;

use host::{Leftovers, Snapshot};
use server::{binary, print_server_log_tail, start_server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "density bench skipped: courier-sandboxd needs root (namespaces, mounts, cgroups)"
        );
        return Ok(());
    }
    let count = env_usize("BENCH_DENSITY_COUNT", 1000);
    let internet = env_usize("BENCH_DENSITY_INTERNET", 1) != 0;
    let reserve_mib = env_usize("BENCH_DENSITY_RESERVE_MB", 3072) as u64;
    let stop_after = Duration::from_secs(env_usize("BENCH_DENSITY_STOP_SECS", 20) as u64);
    let server_bin = binary("COURIER_SANDBOXD_BIN", "courier-sandboxd")?;
    let envd_bin = binary("COURIER_ENVD_BIN", "courier-envd")?;
    let isolation = match std::env::var("BENCH_ISOLATION") {
        Ok(chosen) => chosen,
        Err(_) => serve_default_isolation()?,
    };
    if internet && courier_sandboxd::runtime::network::find_slirp4netns().is_none() {
        return Err("BENCH_DENSITY_INTERNET=1 needs slirp4netns (or set it to 0)".into());
    }
    println!(
        "density: {count} idle {isolation} sandboxes{}, sequential creates then kills; \
         load average {}",
        if internet {
            " with internet (slirp4netns)"
        } else {
            " without internet"
        },
        host::load_average()
    );
    host::print_limits();
    // One more than the count: the warm-up create is killed before, but the bench's own
    // figure must never be the capacity's 429.
    let started = start_server(
        &server_bin,
        &envd_bin,
        &isolation,
        0,
        count + 1,
        &format!("density-{isolation}"),
    )?;
    let server_pid = started.server.child.id();
    let nofile = std::fs::read_to_string(format!("/proc/{server_pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default();
    println!("sandboxd RLIMIT_NOFILE soft / hard: {nofile}");
    let data_dir = started._data.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(
        &started,
        server_pid,
        &data_dir,
        count,
        internet,
        reserve_mib,
        stop_after,
    ));
    let log_path = started.log_path.clone();
    if result.is_err() {
        print_server_log_tail(&log_path);
    }
    drop(started);
    result
}

/// What `courier serve` would pick: gVisor where runsc works, else container.
fn serve_default_isolation() -> Result<String, BoxError> {
    let scratch = tempfile::tempdir()?;
    let works = courier_sandboxd::runtime::gvisor::find_runsc()
        .ok_or(courier_sandboxd::runtime::gvisor::ProbeError::NotInstalled)
        .and_then(|p| courier_sandboxd::runtime::gvisor::probe(&p, &scratch.path().join("probe")));
    Ok(match works {
        Ok(_) => "gvisor".into(),
        Err(why) => {
            println!("(gVisor unavailable here, so `courier serve` uses container: {why})");
            "container".into()
        }
    })
}

async fn run(
    started: &server::Started,
    server_pid: u32,
    data_dir: &Path,
    count: usize,
    internet: bool,
    reserve_mib: u64,
    stop_after: Duration,
) -> Result<(), BoxError> {
    let client = Client::new(
        ConnectionConfig::builder()
            .api_key(started.key.as_str())
            .api_url(&started.api)
            .sandbox_url(&started.proxy)
            .request_timeout(Duration::from_secs(600))
            .build()?,
    )?;
    let builder = || {
        Sandbox::builder()
            .timeout(Duration::from_secs(3600))
            .allow_internet_access(internet)
    };
    // The first create may assemble the base layer and its golden disk: not counted.
    builder().create(&client).await?.kill().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = Snapshot::take(server_pid, &[]);

    let mut sandboxes = Vec::with_capacity(count);
    let mut latencies = Vec::with_capacity(count);
    let mut stopped = None;
    let began = Instant::now();
    println!("\ncreates        p50        p99        max   host available");
    while sandboxes.len() < count {
        let available = host::mem_available_mib();
        if available < reserve_mib {
            stopped = Some(format!(
                "stopped at {}: the host's available memory ({available} MiB) reached the \
                 reserve ({reserve_mib} MiB)",
                sandboxes.len()
            ));
            break;
        }
        let start = Instant::now();
        match builder().create(&client).await {
            Ok(sandbox) => {
                let took = start.elapsed();
                latencies.push(took);
                sandboxes.push(sandbox);
                if took > stop_after {
                    stopped = Some(format!(
                        "stopped at {}: a create took {:.1} s (over {} s: the machine is \
                         saturated)",
                        sandboxes.len(),
                        took.as_secs_f64(),
                        stop_after.as_secs()
                    ));
                    print_block("  ", sandboxes.len(), &latencies, Some(available));
                    break;
                }
            }
            Err(e) => {
                stopped = Some(format!("create {} failed: {e}", sandboxes.len() + 1));
                break;
            }
        }
        if sandboxes.len() % 100 == 0 || sandboxes.len() == count {
            print_block("  ", sandboxes.len(), &latencies, Some(available));
        }
    }
    let create_wall = began.elapsed();
    let created = sandboxes.len();
    if let Some(why) = &stopped {
        println!("{why}");
    }
    // Idle: let envd and the pools settle before weighing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ids: Vec<String> = sandboxes.iter().map(|s| s.id().to_owned()).collect();
    if let Some(id) = ids.first() {
        Leftovers::places_hold(data_dir, id)
            .map_err(|why| format!("the leftover check would look in the wrong place: {why}"))?;
    }
    let after = Snapshot::take(server_pid, &ids);
    // They are alive, not just counted: the first, a middle and the last one answer.
    let mut alive = 0;
    for index in [0, created / 2, created.saturating_sub(1)] {
        if let Some(sandbox) = sandboxes.get(index)
            && let Ok(out) = sandbox.commands().run("true").await
            && out.exit_code == 0
        {
            alive += 1;
        }
    }
    println!(
        "\n{created} sandboxes created in {:.1} s; run(\"true\") answered in {alive} of 3 probed",
        create_wall.as_secs_f64()
    );
    // Read by `cargo xtask bench` into its table of [17]'s figures.
    println!("figure density.sandboxes = {created}");
    host::print_usage(&before, &after, created);
    // What idle sandboxes cost in CPU: their cgroups' time over 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = Snapshot::take(server_pid, &ids);
    let cores = later.cpu_ns.saturating_sub(after.cpu_ns) as f64 / 5e9;
    println!(
        "CPU of the idle sandboxes       {cores:.2} cores ({:.2}% of a core each)",
        cores * 100.0 / created.max(1) as f64
    );

    let began = Instant::now();
    let mut kills = Vec::with_capacity(created);
    let mut kill_errors = Vec::new();
    println!("\nkills          p50        p99        max");
    let total = sandboxes.len();
    for (n, sandbox) in sandboxes.into_iter().enumerate() {
        let start = Instant::now();
        match sandbox.kill().await {
            Ok(_) => kills.push(start.elapsed()),
            Err(e) => kill_errors.push(format!("{}: {e}", sandbox.id())),
        }
        if (n + 1) % 100 == 0 || n + 1 == total {
            print_block("  ", n + 1, &kills, None);
        }
    }
    println!(
        "{} sandboxes killed in {:.1} s",
        kills.len(),
        began.elapsed().as_secs_f64()
    );
    // Kill answers before every last piece is gone only in its documented way (cleanup
    // behind the answer); give it that time before looking.
    let leftovers = Leftovers::wait_for_none(server_pid, data_dir, &ids, &before);
    println!("\nleft after killing all: {leftovers}");
    if let Some(first) = kill_errors.first() {
        return Err(format!("{} kills failed, first: {first}", kill_errors.len()).into());
    }
    if !leftovers.is_empty() {
        return Err("sandboxes left something behind (see above)".into());
    }
    if created == 0 {
        return Err(stopped
            .unwrap_or_else(|| "no sandbox created".into())
            .into());
    }
    Ok(())
}

/// One line of the per-100 table: p50, p99 and max over the last 100 samples.
fn print_block(indent: &str, n: usize, samples: &[Duration], available_mib: Option<u64>) {
    let from = samples.len().saturating_sub(100).min(samples.len());
    let mut block = samples[from..].to_vec();
    block.sort();
    if block.is_empty() {
        return;
    }
    let at = |p: f64| block[((block.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let available = available_mib.map_or(String::new(), |m| format!("{m:>8} MiB"));
    println!(
        "{indent}{n:>5} {:>10} {:>10} {:>10} {available}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
}
