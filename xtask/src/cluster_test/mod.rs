//! `cargo xtask cluster-test`: the acceptance harness of [15] (several `courier serve`
//! replicas and several sandbox hosts).
//!
//! As root: one throwaway PostgreSQL; two courier-sandboxd hosts (`host-a`, `host-b`, each
//! with its own data dir, loopback API and proxy ports and API key); three `courier
//! serve` replicas on that PostgreSQL (own data dir and port, `COURIER_REPLICA_URL`, one
//! master key), the hosts as their providers. A user, then [`SANDBOXES`] sandboxes created
//! round-robin through the replicas' HTTP APIs, each running a `shell` task that prints a
//! steady stream of numbered lines; for each, one SSE client on a replica that survives
//! (round-robin over the two survivors, so some clients watch a sandbox another replica
//! owns). While the runs stream, the replica that created a third of them is SIGKILLed;
//! then every run is waited for, and every sandbox's timeout.
//!
//! Checks, each naming the sandbox: every run completes with the exact text its task
//! printed; every client got every event exactly once and in order (see
//! [`check::check_stream`]); each sandbox ends `killed` by its timeout and its provider
//! sandbox was killed exactly once; no host still runs a sandbox at the end. Printed:
//! takeover time (SIGKILL → first event of a sandbox the dead replica created, as its
//! client elsewhere saw it; p50/max), events/s across the replicas, the totals.
//!
//! Providers: the replicas get both hosts as `[[providers]]` tables in a config file
//! (`<work>/courier.toml`); `CLUSTER_TEST_PROVIDERS=env` gives them `host-a` alone through
//! `E2B_*` instead (host-b then runs unused).
//!
//! Tunables: `CLUSTER_TEST_LINES` (lines per run, default 200) and
//! `CLUSTER_TEST_LINE_MS` (pause between lines, default 50).

mod check;
mod http;
mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use self::check::StoredMessage;
use self::http::SseEvent;
use self::procs::{Host, Replica, ReplicaEnv};
use crate::{cargo, is_root, json_field, postgres, run, target_dir};

/// Sandboxes created in a run.
pub const SANDBOXES: usize = 30;
/// `courier serve` replicas.
const REPLICAS: usize = 3;
/// The replica SIGKILLed mid-run (it created sandboxes 0, 3, 6, …).
const VICTIM: usize = 0;
/// Each sandbox's lifetime. The sweep extends (by 10 min) a sandbox whose agent still
/// works within 60 s of its deadline, so the timeout must leave a run, with its create,
/// more than `TIMEOUT_MS - 60 s`: at 90 s a run slowed down by a loaded 2-core machine was
/// extended (measured); at 120 s a run has 60 s.
const TIMEOUT_MS: u64 = 120_000;
/// How long a client waits past its sandbox's deadline for `end`: the sweep runs every
/// 10 s, the kill stops the agent and saves the work (seconds on a loaded machine), a
/// stream sees the final status within 2 s and drains for 2 s more. 25 s was too short
/// on a loaded 2-core machine (measured).
const END_GRACE: Duration = Duration::from_secs(45);
/// The victim is killed once its last sandbox's run stored this many lines (or after
/// [`KILL_WAIT`]).
const KILL_AFTER_LINES: usize = 10;
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Where courier-tools' fake CLIs are shared into every sandbox (read-only).
const FAKE_CLIS_IN_SANDBOX: &str = "/opt/courier-fake-clis";
/// A dummy Anthropic key: the fake `claude` never calls out.
const DUMMY_ANTHROPIC_KEY: &str = "sk-ant-api03-cluster-test-0000";

/// What runs in the sandboxes (`CLUSTER_TEST_AGENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agent {
    /// courier-tools' fake `claude` (the default) with its `STREAM n ms` directive: text
    /// blocks through Claude's stream-json and its parser, then its usual work (an edit,
    /// tool calls) and answer.
    FakeClaude,
    /// The `shell` tool printing the lines itself (no fake CLI, no key).
    Shell,
}

impl Agent {
    fn from_env() -> Result<Self> {
        match std::env::var("CLUSTER_TEST_AGENT").as_deref() {
            Err(_) | Ok("" | "claude") => Ok(Self::FakeClaude),
            Ok("shell") => Ok(Self::Shell),
            Ok(other) => bail!("CLUSTER_TEST_AGENT={other:?}: expected claude or shell"),
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Self::FakeClaude => "claude",
            Self::Shell => "shell",
        }
    }
}

/// One sandbox of the run.
struct Planned {
    index: usize,
    /// The replica whose API created it.
    creator: usize,
    /// The replica its SSE client is on.
    watcher: usize,
    prompt: String,
    /// What the run's stored text starts with.
    expected: String,
    /// Whether that is all of it (`shell`; the fake `claude` answers after it).
    exact: bool,
}

/// What happened to one sandbox: its id once created, its client's events.
#[derive(Default)]
struct Observed {
    id: Option<String>,
    create_error: Option<String>,
    events: Vec<(SseEvent, Instant)>,
    client_error: Option<String>,
    /// Its run's message was still streaming just before the SIGKILL.
    mid_run_at_kill: bool,
}

/// `cargo xtask cluster-test`.
pub fn cluster_test() -> Result<()> {
    if !is_root() {
        println!(
            "==> cluster-test skipped: not root. It runs two courier-sandboxd hosts, whose \
             sandboxes need root (namespaces, mounts, cgroups)"
        );
        return Ok(());
    }
    let started = Instant::now();
    let bins = binaries()?;
    let work = std::env::temp_dir().join(format!("courier-cluster-test.{}", std::process::id()));
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    // It holds the hosts' API keys (the providers file) and the servers' data: root's.
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let result = session(&work, &bins);
    println!(
        "\n==> cluster-test: {} in {:.0}s",
        if result.is_ok() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    match &result {
        Ok(()) => crate::cleanup("removing the work dir", std::fs::remove_dir_all(&work)),
        Err(_) => println!("==> logs kept in {}", work.display()),
    }
    result
}

struct Binaries {
    courier: PathBuf,
    sandboxd: PathBuf,
    envd: PathBuf,
}

fn binaries() -> Result<Binaries> {
    run(
        "build courier, courier-sandboxd and courier-envd",
        cargo().args([
            "build",
            "--quiet",
            "-p",
            "courier",
            "--bin",
            "courier",
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
    let debug = target_dir().join("debug");
    Ok(Binaries {
        courier: debug.join("courier"),
        sandboxd: debug.join("courier-sandboxd"),
        envd: debug.join("courier-envd"),
    })
}

fn tunable(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// The plan: creator round-robin over the replicas, watcher round-robin over the
/// survivors, a run printing `lines` numbered lines `pause_ms` apart.
fn plan(agent: Agent, lines: u64, pause_ms: u64) -> Vec<Planned> {
    let survivors: Vec<usize> = (0..REPLICAS).filter(|r| *r != VICTIM).collect();
    (0..SANDBOXES)
        .map(|index| {
            let (prompt, expected) = match agent {
                Agent::FakeClaude => (
                    format!("Sandbox {index} of the cluster test: STREAM {lines} {pause_ms}"),
                    (1..=lines)
                        .map(|i| format!("stream line {i} of {lines}\n"))
                        .collect(),
                ),
                Agent::Shell => (
                    format!(
                        "i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo \"sandbox {index} line $i of {lines}\"; sleep {}; done",
                        pause_ms as f64 / 1000.0
                    ),
                    (1..=lines)
                        .map(|i| format!("sandbox {index} line {i} of {lines}\n"))
                        .collect(),
                ),
            };
            Planned {
                index,
                creator: index % REPLICAS,
                watcher: survivors[index % survivors.len()],
                prompt,
                expected,
                exact: agent == Agent::Shell,
            }
        })
        .collect()
}

fn session(work: &Path, bins: &Binaries) -> Result<()> {
    let agent = Agent::from_env()?;
    let lines = tunable("CLUSTER_TEST_LINES", 200);
    let pause_ms = tunable("CLUSTER_TEST_LINE_MS", 50);
    let pg = postgres::Cluster::start().context("starting PostgreSQL")?;
    println!("<== PostgreSQL at {}", pg.url());
    let fake_clis = crate::root()
        .join("crates/courier-tools/fake-clis")
        .canonicalize()
        .context("courier-tools' fake CLIs")?;
    let share = format!("{}:{FAKE_CLIS_IN_SANDBOX}", fake_clis.display());
    let hosts = [
        Host::start(work, "host-a", &bins.sandboxd, &bins.envd, &share)?,
        Host::start(work, "host-b", &bins.sandboxd, &bins.envd, &share)?,
    ];
    let config = work.join("courier.toml");
    std::fs::write(
        &config,
        hosts
            .iter()
            .map(Host::provider_toml)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let from_file = !std::env::var("CLUSTER_TEST_PROVIDERS").is_ok_and(|v| v == "env");
    let env = ReplicaEnv {
        database_url: pg.url().to_owned(),
        master_key: procs::master_key()?,
        vars: if from_file {
            Vec::new()
        } else {
            println!(
                "==> providers: host-a only, through E2B_* (without CLUSTER_TEST_PROVIDERS=env \
                 both hosts are [[providers]] in {})",
                config.display()
            );
            vec![
                ("E2B_API_KEY".into(), hosts[0].api_key.clone()),
                ("E2B_API_URL".into(), hosts[0].api_url.clone()),
                ("E2B_SANDBOX_URL".into(), hosts[0].sandbox_url.clone()),
            ]
        },
        config: from_file.then(|| config.clone()),
    };
    // One at a time: the first applies the migrations.
    let mut replicas = Vec::new();
    for index in 0..REPLICAS {
        replicas.push(Replica::start(work, index, &bins.courier, &env)?);
    }
    let (token, project) = create_user(&bins.courier, &env, work)?;
    if agent == Agent::FakeClaude {
        http::request(
            "PUT",
            &format!("{}/v1/projects/{project}/keys/anthropic", replicas[1].url),
            &[("Authorization", &bearer(&token))],
            Some(&serde_json::json!({ "value": DUMMY_ANTHROPIC_KEY }).to_string()),
        )?
        .json("PUT the project's Anthropic key")?;
    }
    let plan = plan(agent, lines, pause_ms);
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let observed: Vec<Mutex<Observed>> = plan.iter().map(|_| Mutex::default()).collect();
    println!(
        "\n==> {SANDBOXES} {} sandboxes through {REPLICAS} replicas ({lines} lines each, {pause_ms} ms apart, timeout {} s); SIGKILL replica {VICTIM} mid-run",
        agent.tool(),
        TIMEOUT_MS / 1000
    );
    let first_create = Instant::now();
    let mut killed_at = None;
    std::thread::scope(|scope| {
        let creators: Vec<_> = (0..REPLICAS)
            .map(|replica| {
                let (plan, observed, urls, token, project) =
                    (&plan, &observed, &urls, &token, &project);
                scope.spawn(move || {
                    for planned in plan.iter().filter(|p| p.creator == replica) {
                        let slot = &observed[planned.index];
                        match create(&urls[replica], token, project, agent, &planned.prompt) {
                            Ok(id) => {
                                lock(slot).id = Some(id.clone());
                                let url =
                                    format!("{}/v1/sandboxes/{id}/events", urls[planned.watcher]);
                                scope.spawn(move || follow(&url, token, slot));
                            }
                            Err(e) => lock(slot).create_error = Some(format!("{e:#}")),
                        }
                    }
                })
            })
            .collect();
        let mut creators: Vec<_> = creators.into_iter().map(Some).collect();
        let joined = |handle: Option<std::thread::ScopedJoinHandle<'_, ()>>| {
            if handle.is_some_and(|h| h.join().is_err()) {
                eprintln!("xtask: warning: a creating thread panicked");
            }
        };
        joined(creators[VICTIM].take());
        println!(
            "<== replica {VICTIM} created its sandboxes in {:.1}s",
            first_create.elapsed().as_secs_f64()
        );
        // Mid-run: once the last sandbox the victim created has printed a few lines, as
        // the shared store says (its client may be on a replica that hears nothing of
        // it); the others go on creating on the survivors meanwhile.
        let survivor = &urls[(VICTIM + 1) % REPLICAS];
        let last = plan
            .iter()
            .rev()
            .find(|p| p.creator == VICTIM)
            .and_then(|p| lock(&observed[p.index]).id.clone());
        let waited = Instant::now();
        while waited.elapsed() < KILL_WAIT
            && last.as_deref().is_some_and(|id| {
                stored_messages(survivor, &token, id).map_or(0, |m| {
                    m.iter()
                        .filter(|m| m.role == "assistant")
                        .map(|m| m.content.matches('\n').count())
                        .sum()
                }) < KILL_AFTER_LINES
            })
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        // Which of its runs are still going, as the store says just before.
        for p in plan.iter().filter(|p| p.creator == VICTIM) {
            let id = lock(&observed[p.index]).id.clone();
            if let Some(id) = id {
                let streaming = stored_messages(survivor, &token, &id)
                    .is_ok_and(|m| m.iter().any(|m| m.status == "streaming"));
                lock(&observed[p.index]).mid_run_at_kill = streaming;
            }
        }
        println!(
            "==> SIGKILL replica {VICTIM} (pid {})",
            replicas[VICTIM].pid()
        );
        match replicas[VICTIM].kill() {
            Ok(()) => killed_at = Some(Instant::now()),
            Err(e) => eprintln!("xtask: warning: could not SIGKILL replica {VICTIM}: {e:#}"),
        }
        for creator in creators {
            joined(creator);
        }
        println!(
            "<== created in {:.1}s; waiting for every run and every timeout (clients end at \
             their sandbox's `end`)",
            first_create.elapsed().as_secs_f64()
        );
    });
    let observed: Vec<Observed> = observed
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let reader = &urls[plan
        .iter()
        .find(|p| p.creator != VICTIM)
        .map_or(1, |p| p.creator)];
    let mut failures = Vec::new();
    for (planned, seen) in plan.iter().zip(&observed) {
        let problems = judge(planned, seen, reader, &token, &hosts);
        if !problems.is_empty() {
            failures.push((planned, seen.id.clone(), problems));
        }
    }
    let orphans = orphans(&hosts);
    print_figures(&plan, &observed, killed_at, first_create, &failures);
    // The survivors stop (SIGTERM) when `replicas` drops, before the hosts and PostgreSQL.
    if failures.is_empty() && orphans.is_empty() {
        return Ok(());
    }
    for (planned, id, problems) in &failures {
        println!(
            "\nsandbox {} ({}), created on replica {}{}, watched on replica {}:",
            planned.index,
            id.as_deref().unwrap_or("not created"),
            planned.creator,
            if planned.creator == VICTIM {
                " (SIGKILLed)"
            } else {
                ""
            },
            planned.watcher
        );
        for problem in problems.iter().take(6) {
            println!("  - {problem}");
        }
        if problems.len() > 6 {
            println!("  - … and {} more", problems.len() - 6);
        }
    }
    for orphan in &orphans {
        println!("\norphan: {orphan}");
    }
    bail!(
        "{} of {SANDBOXES} sandboxes failed the checks{}",
        failures.len(),
        if orphans.is_empty() {
            String::new()
        } else {
            format!(", {} sandboxes orphaned at the hosts", orphans.len())
        }
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `courier admin user create` on the replicas' database: (token, project id).
fn create_user(courier: &Path, env: &ReplicaEnv, work: &Path) -> Result<(String, String)> {
    let out = Command::new(courier)
        .args(["admin", "user", "create", "--json", "--email"])
        // Unique: DATABASE_URL may name a server that saw earlier runs.
        .arg(format!("cluster-{}@example.com", procs::random_hex(6)?))
        .arg("--data-dir")
        .arg(work.join("admin"))
        .env("DATABASE_URL", &env.database_url)
        .env("COURIER_MASTER_KEY", &env.master_key)
        .output()
        .context("running courier admin user create")?;
    if !out.status.success() {
        bail!(
            "courier admin user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok((
        json_field(&text, "token").context("no token in courier admin's answer")?,
        json_field(&text, "project_id").context("no project in courier admin's answer")?,
    ))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `POST /v1/sandboxes` on `replica`: the new sandbox's id.
fn create(replica: &str, token: &str, project: &str, agent: Agent, prompt: &str) -> Result<String> {
    let body = serde_json::json!({
        "project_id": project,
        "tool": agent.tool(),
        "prompt": prompt,
        "timeout_ms": TIMEOUT_MS,
        "memory_mb": 256,
        "cpu_count": 1,
        // The hosts have `base` only (no tool templates are built); the fake CLIs come
        // through the shared dir and COURIER_TOOL_PATH.
        "template_id": "base",
    });
    let answer = http::request(
        "POST",
        &format!("{replica}/v1/sandboxes"),
        &[("Authorization", &bearer(token))],
        Some(&body.to_string()),
    )?
    .json(&format!("POST {replica}/v1/sandboxes"))?;
    answer
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the create's answer has no id")
}

/// One SSE client: every event with its arrival time, until `end`.
fn follow(url: &str, token: &str, slot: &Mutex<Observed>) {
    let deadline = Instant::now() + Duration::from_millis(TIMEOUT_MS) + END_GRACE;
    let result = http::sse(
        url,
        &[("Authorization", &bearer(token))],
        deadline,
        |event| {
            let end = event.name == "end";
            lock(slot).events.push((event, Instant::now()));
            !end
        },
    );
    if let Err(e) = result {
        lock(slot).client_error = Some(format!("{e:#}"));
    }
}

/// Every check of one sandbox.
fn judge(
    planned: &Planned,
    seen: &Observed,
    reader: &str,
    token: &str,
    hosts: &[Host],
) -> Vec<String> {
    let Some(id) = &seen.id else {
        return vec![format!(
            "the create failed: {}",
            seen.create_error.as_deref().unwrap_or("?")
        )];
    };
    let mut problems = Vec::new();
    if let Some(e) = &seen.client_error {
        problems.push(format!("its SSE client failed: {e}"));
    }
    let auth = [("Authorization", bearer(token))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sandbox = match http::request("GET", &format!("{reader}/v1/sandboxes/{id}"), &auth, None)
        .and_then(|r| r.json("GET the sandbox"))
    {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{e:#}"));
            return problems;
        }
    };
    let stored = match stored_messages(reader, token, id) {
        Ok(stored) => stored,
        Err(e) => {
            problems.push(format!("{e:#}"));
            return problems;
        }
    };
    problems.extend(check::check_run(&stored, &planned.expected, planned.exact));
    let events: Vec<SseEvent> = seen.events.iter().map(|(e, _)| e.clone()).collect();
    problems.extend(
        check::check_stream(&events, &stored)
            .into_iter()
            .map(|p| format!("SSE: {p}")),
    );
    let logs = match sandbox.get("provider_sandbox_id").and_then(Value::as_str) {
        Some(pid) => provider_logs(hosts, pid),
        None => Vec::new(),
    };
    problems.extend(check::check_ending(&sandbox, &logs));
    problems
}

/// `GET /v1/sandboxes/{id}/messages` on `replica`.
fn stored_messages(replica: &str, token: &str, id: &str) -> Result<Vec<StoredMessage>> {
    let answer = http::request(
        "GET",
        &format!("{replica}/v1/sandboxes/{id}/messages?limit=100"),
        &[("Authorization", &bearer(token))],
        None,
    )?
    .json("GET its messages")?;
    Ok(answer
        .get("items")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(StoredMessage::from_json).collect())
        .unwrap_or_default())
}

/// The provider sandbox's log entries at whichever host has it.
fn provider_logs(hosts: &[Host], pid: &str) -> Vec<Value> {
    // With `[[providers]]` the stored id is `<host name>:<the host's id>`.
    let (named, pid) = match pid.split_once(':') {
        Some((name, inner)) => (Some(name), inner),
        None => (None, pid),
    };
    hosts
        .iter()
        .filter(|h| named.is_none_or(|n| n == h.name))
        .filter_map(|h| h.get(&format!("/v2/sandboxes/{pid}/logs?limit=1000")).ok())
        .filter(|r| r.status == 200)
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter_map(|v| v.get("logs").and_then(Value::as_array).cloned())
        .flatten()
        .collect()
}

/// Sandboxes a host still runs (or keeps paused) after every timeout: orphans.
fn orphans(hosts: &[Host]) -> Vec<String> {
    let mut out = Vec::new();
    for host in hosts {
        match host
            .get("/v2/sandboxes?state=running,paused")
            .and_then(|r| r.json("list"))
        {
            Ok(Value::Array(items)) => {
                for item in items {
                    out.push(format!(
                        "{} still has sandbox {} (Courier sandbox {})",
                        host.name,
                        item.get("sandboxID").and_then(Value::as_str).unwrap_or("?"),
                        item.pointer("/metadata/courier_sandbox_id")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    ));
                }
            }
            Ok(other) => out.push(format!("{}: the list is not an array: {other}", host.name)),
            Err(e) => out.push(format!(
                "{}: could not list its sandboxes: {e:#}",
                host.name
            )),
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_figures(
    plan: &[Planned],
    observed: &[Observed],
    killed_at: Option<Instant>,
    first_create: Instant,
    failures: &[(&Planned, Option<String>, Vec<String>)],
) {
    let live = |e: &SseEvent| matches!(e.name.as_str(), "message" | "text" | "agent" | "finished");
    let total: usize = observed
        .iter()
        .map(|o| o.events.iter().filter(|(e, _)| live(e)).count())
        .sum();
    let text_bytes: usize = observed
        .iter()
        .flat_map(|o| &o.events)
        .filter(|(e, _)| e.name == "text")
        .map(|(e, _)| e.data.len())
        .sum();
    let last_live = observed
        .iter()
        .flat_map(|o| &o.events)
        .filter(|(e, _)| live(e))
        .map(|(_, at)| *at)
        .max();
    let window = last_live.map_or(0.0, |t| t.duration_since(first_create).as_secs_f64());
    // Takeover: a sandbox the victim created whose run was still going at the kill; the
    // first event its client got after the kill.
    let mut takeovers = Vec::new();
    let mut never = 0;
    if let Some(killed) = killed_at {
        for (p, o) in plan.iter().zip(observed) {
            if p.creator != VICTIM || !o.mid_run_at_kill {
                continue;
            }
            match o.events.iter().find(|(e, at)| {
                *at > killed && matches!(e.name.as_str(), "text" | "agent" | "finished" | "message")
            }) {
                Some((_, at)) => takeovers.push(at.duration_since(killed).as_secs_f64() * 1000.0),
                None => never += 1,
            }
        }
    }
    takeovers.sort_by(f64::total_cmp);
    let created = observed.iter().filter(|o| o.id.is_some()).count();
    let clean_clients = observed
        .iter()
        .filter(|o| o.id.is_some() && o.client_error.is_none())
        .count();
    println!("\n==> cluster-test figures");
    let row = |k: &str, v: String| println!("  {k:<44} {v}");
    row("sandboxes created", format!("{created} of {SANDBOXES}"));
    row(
        "sandboxes passing every check",
        format!("{} of {SANDBOXES}", SANDBOXES - failures.len()),
    );
    row(
        "SSE clients ended by `end`",
        format!("{clean_clients} of {created}"),
    );
    row(
        "events delivered (message/text/agent/finished)",
        total.to_string(),
    );
    row("text event bytes (data)", text_bytes.to_string());
    row(
        "events/s across the surviving replicas",
        if window > 0.0 {
            format!("{:.0} ({total} in {window:.1} s)", total as f64 / window)
        } else {
            "-".into()
        },
    );
    row(
        &format!("takeover after SIGKILL of replica {VICTIM} (p50 / max)"),
        if takeovers.is_empty() {
            "-".into()
        } else {
            format!(
                "{:.0} / {:.0} ms over {} sandboxes",
                percentile(&takeovers, 0.5),
                percentile(&takeovers, 1.0),
                takeovers.len()
            )
        },
    );
    row(
        &format!("replica {VICTIM}'s sandboxes mid-run at the kill"),
        (takeovers.len() + never).to_string(),
    );
    row("… of which never heard of again", never.to_string());
}
