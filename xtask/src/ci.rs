//! `cargo xtask ci` and `cargo xtask test`: the checks a change must pass, and the
//! real-CLI suite.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::envd_static::envd_static;
use crate::{cargo, is_root, postgres, root, run};

/// `cargo xtask ci`, what `.ci/run` executes: fmt, clippy, `modules`, cargo-deny, the static
/// envd build, `test`, then (as root) the real-CLI suite and the cluster harness.
pub fn ci() -> Result<()> {
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
    println!("\n==> modules: import cycles between sibling modules");
    crate::modules::check(&root())?;
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
        test_real_clis(&[])?;
    } else {
        println!("==> real-CLI suite skipped: not root (it runs real sandboxes)");
    }
    cluster_test()
}

/// The cluster acceptance harness ([15]), last: about 3 minutes as root (most of it the
/// sandboxes' 120 s timeout; 4 while a dead replica's sandboxes are never ended, their
/// clients waiting to their deadline); it prints why it skips otherwise.
fn cluster_test() -> Result<()> {
    const BUDGET: std::time::Duration = std::time::Duration::from_secs(210);
    println!(
        "\n==> cluster-test (cargo xtask cluster-test; budget {}s)",
        BUDGET.as_secs()
    );
    let started = Instant::now();
    let result = crate::cluster_test::cluster_test();
    let took = started.elapsed();
    println!(
        "<== cluster-test took {:.0}s of its {}s budget{}",
        took.as_secs_f64(),
        BUDGET.as_secs(),
        if took > BUDGET { " (OVER BUDGET)" } else { "" }
    );
    result
}

/// Environment for the test commands: `std::env::set_var` is `unsafe` in edition 2024 and
/// the workspace forbids `unsafe`, so variables are passed to each child explicitly.
#[derive(Default)]
pub struct TestEnv(Vec<(String, String)>);

impl TestEnv {
    /// Sets `key` for every command this environment is applied to.
    pub fn set(&mut self, key: &str, value: &str) {
        self.0.push((key.to_owned(), value.to_owned()));
    }

    /// Adds the variables to `cmd`.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
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

/// `cargo xtask test`: the whole test suite, with `env` added to each test command; last,
/// the official E2B SDK's own suite (`e2b-suite`).
pub fn test(mut env: TestEnv) -> Result<()> {
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
    // The official SDK's own suite (about 2.5 minutes on two cores), judged against
    // tests/e2b-suite/expectations.toml: a failure not listed there fails the stage.
    println!("\n==> official E2B SDK suite against courier-sandboxd (cargo xtask e2b-suite)");
    crate::e2b_suite::e2b_suite(&[])?;
    drop(cluster);
    Ok(())
}

/// `cargo xtask test-real-clis [--record]`: the real-CLI suite of courier-orchestrator
/// (`tests/real_clis/`), one CLI at a time, then the parser tests over the recordings.
/// The npm cache (`COURIER_NPM_CACHE`, default `~/.cache/courier/npm-cache`, outside the
/// clone so CI runs on one machine share it) is shared into the template builds, so only
/// the first run downloads the CLIs.
pub fn test_real_clis(args: &[String]) -> Result<()> {
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
