//! Measures the sandbox runtime: create → init running latency (p50/p99 over 50
//! sandboxes, created one after another), 50 creates in parallel, and memory per idle
//! sandbox (cgroup memory usage). Needs root.
//!
//! ```text
//! cargo run --release -p courier-sandboxd --example bench_runtime [-- /bin/sleep]
//! ```
//!
//! This program is its own sandbox helper: it calls `main_if_requested` first, so the
//! runtime's default helper (`/proc/self/exe`) works.

use std::time::{Duration, Instant};

use courier_sandboxd::runtime::{Limits, Runtime, SandboxSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    courier_sandboxd::runtime::init::main_if_requested();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench_runtime needs root (namespaces, mounts, cgroups)");
        std::process::exit(1);
    }
    // BENCH_COUNT overrides the number of sandboxes (default 50).
    let count: usize = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let init = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/bin/sleep".into());
    let dir = tempfile::tempdir()?;
    let base = courier_sandboxd::base_layer::assemble(&dir.path().join("layers/base"))?;
    let runtime = Runtime::new(dir.path().join("data"))?;
    let spec = |n: usize| {
        let mut spec = SandboxSpec::new(
            format!("bench{}-{n}", std::process::id()),
            vec![base.clone()],
            &init,
            &["infinity"],
        );
        spec.limits = Limits {
            memory_mb: 256,
            cpu_count: 1.0,
            pids: 64,
        };
        spec
    };

    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let mut latencies = Vec::new();
        for n in 0..count {
            let start = Instant::now();
            runtime.create(spec(n))?;
            latencies.push(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
        let memory: Vec<u64> = runtime
            .list()
            .iter()
            .map(|h| runtime.stats(&h.id).map(|s| s.memory_bytes).unwrap_or(0))
            .collect();
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "create → init running, sequential ({count}): p50 {:?}  p99 {:?}",
            pct(0.50),
            pct(0.99)
        );
        let mean = memory.iter().sum::<u64>() as f64 / memory.len() as f64;
        println!(
            "memory per idle sandbox (cgroup usage, init = {init}): mean {:.2} MiB",
            mean / 1048576.0
        );

        let start = Instant::now();
        runtime.kill_all()?;
        println!("kill {count} sequentially: {:?}", start.elapsed());

        let start = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (count..2 * count)
                .map(|n| {
                    let runtime = &runtime;
                    let spec = spec(n);
                    scope.spawn(move || runtime.create(spec).map(|_| ()))
                })
                .collect();
            for h in handles {
                if let Err(e) = h.join().expect("thread") {
                    eprintln!("parallel create failed: {e}");
                }
            }
        });
        println!("{count} creates in parallel: {:?} total", start.elapsed());
        Ok(())
    })();
    runtime.kill_all()?;
    result
}
