//! `cargo xtask bench`: the benchmark examples, one per measured component, and at the
//! end one table of the figures issue [17] tracks, before and now (`figures`).

mod figures;

use std::process::Command;

use anyhow::{Result, bail};

use crate::ci::TestEnv;
use crate::{cargo, is_root, postgres, run};

/// The benchmarks `cargo xtask bench` knows, in the order they run.
const BENCHES: [&str; 6] = [
    "codec",
    "envd",
    "sandboxd",
    "orchestrator",
    "store",
    "density",
];

/// Benchmarks run only when named: they take minutes (density: 1,000 sandboxes created
/// and killed one after another, ~5–10 minutes on 2 cores).
const ON_REQUEST: [&str; 1] = ["density"];

/// `cargo xtask bench [NAME...]`: runs the named benchmarks (all without names).
pub fn bench(names: &[String]) -> Result<()> {
    if let Some(unknown) = names.iter().find(|n| !BENCHES.contains(&n.as_str())) {
        bail!(
            "unknown bench {unknown:?}: choose from {}",
            BENCHES.join(", ")
        );
    }
    let named = |name: &str| names.iter().any(|n| n == name);
    let wanted = |name: &str| (names.is_empty() && !ON_REQUEST.contains(&name)) || named(name);
    let mut env = TestEnv::default();
    let mut figures = figures::Figures::default();
    // The store and orchestrator benches run on PostgreSQL too.
    let cluster = (wanted("store") || wanted("orchestrator")).then(postgres::Cluster::start);
    match &cluster {
        Some(Ok(cluster)) => env.set("COURIER_TEST_PG_URL", cluster.url()),
        Some(Err(error)) => {
            println!("==> PostgreSQL unavailable, benches run on SQLite only: {error:#}")
        }
        None => {}
    }
    if wanted("codec") {
        figures.run(
            "codec bench",
            env.apply(&mut bench_example("courier-e2b", "bench_codec")),
        )?;
    }
    // courier-e2b (both codecs) and the official Python SDK on one in-process courier-envd.
    if wanted("envd") {
        figures.run(
            "envd bench",
            env.apply(&mut bench_example("courier-envd", "bench_envd")),
        )?;
    }
    if (wanted("sandboxd") || wanted("density")) && is_root() {
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
    }
    if wanted("sandboxd") && is_root() {
        figures.run(
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
        figures.run(
            "orchestrator bench",
            env.apply(&mut bench_example(
                "courier-orchestrator",
                "bench_orchestrator",
            )),
        )?;
    }
    if wanted("store") {
        figures.run(
            "store bench",
            env.apply(&mut bench_example("courier-store", "bench")),
        )?;
    }
    // 1,000 idle sandboxes on one courier-sandboxd: memory, descriptors, latency at scale.
    if wanted("density") && is_root() {
        figures.run(
            "density bench",
            env.apply(&mut bench_example("courier-sandboxd", "bench_density")),
        )?;
    } else if wanted("density") {
        println!(
            "\n==> density bench skipped: courier-sandboxd needs root (namespaces, mounts, cgroups)"
        );
    }
    drop(cluster);
    figures.print();
    Ok(())
}

/// `cargo run --release -p <package> --example <example>`.
fn bench_example(package: &str, example: &str) -> Command {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", package, "--example", example]);
    cmd
}
