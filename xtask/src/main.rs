//! Project automation for the Courier workspace.
//!
//! `cargo xtask ci` is what `.ci/run` executes on a clean clone; every step prints what it
//! runs so a red CI log says which command failed.

mod bench;
mod ci;
mod cluster_test;
mod demo;
mod e2b_suite;
mod envd_static;
mod loadtest;
mod modules;
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
  ci           fmt check, clippy -D warnings, `modules`, cargo-deny, static envd build,
               `test`, then (as root) `test-real-clis` and `cluster-test`
  test         the whole test suite: machine setup (as root), a throwaway PostgreSQL,
               nextest, doctests, the official-E2B-SDK interop and scenario suites,
               then e2b-suite
  bench [NAME...]
               print the benchmark figures; NAME picks some of: codec, envd (vs the
               Python SDK), sandboxd, orchestrator, store (default: these five), and
               density (only when named: 1,000 idle sandboxes on one courier-sandboxd,
               memory, descriptors, create/kill latency per 100, leftovers; takes
               ~5-10 minutes)
  demo         run the local stack: courier-envd plus the SDK quickstart against it
  e2b-suite [PYTEST ARGS...]
               as root: the official E2B Python SDK's own test suite
               (../shared/e2b-python-sdk) against courier-sandboxd, judged against
               tests/e2b-suite/expectations.toml; a table per test file
  envd-static  build a statically linked courier-envd and check it
  modules      check that no crate has an import cycle between sibling modules
  postgres     start a throwaway PostgreSQL cluster and print its URL until Enter
  loadtest     as root: wrk against list/get and 100 SSE clients on one busy sandbox
  cluster-test as root: one PostgreSQL, two courier-sandboxd hosts, three `courier serve`
               replicas; 30 sandboxes streaming to SSE clients while one replica is
               SIGKILLed; every run, event, timeout and kill checked
  test-real-clis [--record]
               as root: the real agent CLIs at their pinned versions (npm) through
               template build, create, stream, follow-up, kill and a refused key, against
               the stand-in LLM; --record rewrites their recordings
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::ci(),
        Some("test") => ci::test(ci::TestEnv::default()),
        Some("bench") => bench::bench(&args[1..]),
        Some("demo") => demo::demo(),
        Some("e2b-suite") => e2b_suite::e2b_suite(&args[1..]),
        Some("envd-static") => envd_static::envd_static(true).map(|_| ()),
        Some("modules") => modules::check(&root()),
        Some("postgres") => postgres::shell(),
        Some("loadtest") => loadtest::loadtest(),
        Some("cluster-test") => cluster_test::cluster_test(),
        Some("test-real-clis") => ci::test_real_clis(&args[1..]),
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

/// The first `"key":"value"` string in a JSON text (enough for the CLI's own output;
/// xtask stays free of a JSON dependency).
fn json_field(text: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":");
    let rest = text[text.find(&needle)? + needle.len()..].trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// Reports a failed clean-up step without failing the command: what the command itself
/// did is the result its caller needs.
fn cleanup<T>(what: &str, result: std::io::Result<T>) {
    if let Err(e) = result {
        eprintln!("xtask: warning: {what}: {e}");
    }
}
