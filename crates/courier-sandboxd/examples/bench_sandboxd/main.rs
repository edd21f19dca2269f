//! courier-sandboxd through its control plane and proxy, driven by courier-e2b, once per
//! isolation (`container`, and `gvisor` where runsc works), printed side by side: create →
//! envd ready p50/p99 (sequential creates), creates in parallel (wall time), memory per
//! idle sandbox (the metrics endpoint: the sandbox's cgroup, which holds gVisor's Sentry
//! and gofer too), `run("true")` through the proxy (courier-e2b; the official Python SDK
//! for the container isolation), kills (the SDK's call, one after another, with and
//! without internet access), and agent-like workloads: system-call-heavy loops (stat,
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
//! BENCH_ISOLATIONS (`container,gvisor`) picks the isolations; BENCH_WORKLOADS=0 keeps to
//! the latency figures (create, kill, `run("true")`). BENCH_SERVER_LOG (a
//! `RUST_LOG` filter, e.g. `courier_sandboxd::runtime=debug` for each create's phase times)
//! keeps the server's log as `bench-sandboxd-<isolation>.log` in the current directory.
//! Prints figures only; asserts no timing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_e2b::{Client, ConnectionConfig, Sandbox, codec::Codec};

mod measure;
mod report;
mod server;
mod workloads;

use measure::bench_isolation;
use report::print_table;
use server::binary;
use workloads::{Workloads, prepare_workloads};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a workload or a figure could not be had (printed in its place).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Unavailable {
    /// A program could not be started, or a file not written or read.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// A program ran and failed, or its output was not what the bench reads.
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
    /// The figure was not measured.
    #[error("not run")]
    NotRun,
}

impl Unavailable {
    /// The I/O error of `what` (for `map_err`).
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Unavailable {
        let what = what.into();
        move |source| Unavailable::Io {
            what,
            source: std::sync::Arc::new(source),
        }
    }

    /// `what` failed with `detail`.
    pub(crate) fn failed(what: impl Into<String>, detail: impl std::fmt::Display) -> Unavailable {
        Unavailable::Failed {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn main() -> Result<(), BoxError> {
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
    let workloads = if std::env::var("BENCH_WORKLOADS").as_deref() == Ok("0") {
        Workloads::skipped()
    } else {
        println!("preparing the agent-like workloads (npm cache, git bundle)...");
        prepare_workloads(scratch.path())
    };
    // The preparation dirtied hundreds of MiB (npm cache): written back now, not in the
    // middle of the create figures.
    nix::unistd::sync();
    let wanted = std::env::var("BENCH_ISOLATIONS").unwrap_or_else(|_| "container,gvisor".into());
    let mut all = Vec::new();
    let mut failed = Vec::new();
    for isolation in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if isolation == "gvisor"
            && let Err(why) = courier_sandboxd::runtime::gvisor::find_runsc()
                .ok_or(courier_sandboxd::runtime::gvisor::ProbeError::NotInstalled)
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
    report::print_figure_lines(&all);
    if !failed.is_empty() {
        return Err(format!("the bench failed under: {}", failed.join(", ")).into());
    }
    Ok(())
}

pub(crate) struct Sizes {
    pub(crate) creates: usize,
    pub(crate) parallel: usize,
    pub(crate) runs: usize,
}
