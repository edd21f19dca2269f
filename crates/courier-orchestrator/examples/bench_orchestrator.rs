//! Measures the orchestrator's streaming path and its memory per running sandbox.
//!
//! ```text
//! cargo run --release -p courier-orchestrator --example bench_orchestrator
//! ```
//!
//! 1. Throughput, at the `stream` layer: a recorded Claude stream
//!    (`courier-tools/tests/fixtures/claude_success.jsonl`) is replayed many times through
//!    [`StreamRecorder`] (parse → SQLite store in a temp file → [`EventHub`]) for several
//!    sandboxes at once, each with one live [`Subscription`]: events/s received by the
//!    subscribers, and the stdout bytes/s they came from.
//! 2. Latency: every replay's assistant text line carries the instant it was fed; the
//!    subscriber computes feed → receive for that event (an upper bound on publish →
//!    receive: it includes the parse and the store writes before the publish).
//! 3. Memory: [`Orchestrator::create`] for 200 sandboxes against an in-file provider whose
//!    agents print part of the stream and then keep running; VmRSS delta / 200.
//!
//! Prints figures only; asserts no timing. BENCH_RUNS (250) caps the replays per sandbox,
//! BENCH_SECONDS (20) the time they may take.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{NewSandbox as ProviderSandbox, SandboxRecord};
use courier_e2b::{CommandEvent, CommandOutput, CommandSpec, SandboxApi, SpawnedCommand};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::{EventHub, EventKind, StreamRecorder, Subscription};
use courier_store::{
    KeyOwner, NewProject, NewSandbox, NewUser, Project, Provider, SandboxConfig, SandboxId,
    SandboxStatus, SqliteStore, Store, User,
};
use courier_tools::ToolId;
use futures::StreamExt;
use futures::channel::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sandboxes streaming at once in the throughput phase.
const STREAMS: usize = 8;
/// Sandboxes created in the memory phase.
const SANDBOXES: usize = 200;
/// The text the stamped assistant line carries before the stamp.
const STAMP: &str = "bench-stamp:";

fn fixture() -> Result<Vec<String>, BoxError> {
    let path = format!(
        "{}/../courier-tools/tests/fixtures/claude_success.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// The fixture's lines, with the assistant text line's text replaced by a placeholder
/// stamped at feed time.
fn stamped_template(lines: &[String]) -> Result<Vec<(String, bool)>, BoxError> {
    let mut out = Vec::new();
    let mut stamped = false;
    for line in lines {
        let mut value: serde_json::Value = serde_json::from_str(line)?;
        let mut is_text = false;
        if value["type"] == "assistant"
            && let Some(content) = value["message"]["content"].as_array_mut()
        {
            for part in content {
                if part["type"] == "text" {
                    part["text"] = serde_json::Value::String(format!("{STAMP}@@NANOS@@"));
                    is_text = true;
                }
            }
        }
        stamped |= is_text;
        out.push((serde_json::to_string(&value)?, is_text));
    }
    if !stamped {
        return Err("the fixture has no assistant text line to stamp".into());
    }
    Ok(out)
}

async fn seed_user(store: &dyn Store) -> Result<(User, Project), BoxError> {
    let user = store
        .create_user(NewUser {
            email: "bench@example.com".into(),
            name: "Bench".into(),
        })
        .await?;
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: "bench".into(),
        })
        .await?;
    Ok((user, project))
}

async fn seed_sandbox(
    store: &dyn Store,
    user: &User,
    project: &Project,
) -> Result<SandboxId, BoxError> {
    Ok(store
        .create_sandbox(NewSandbox {
            user_id: user.id,
            project_id: project.id,
            config: SandboxConfig::default(),
            cli_tool: "claude".into(),
            model: None,
            prompt: "bench".into(),
            links: Default::default(),
            repo_url: None,
            branch: None,
        })
        .await?
        .id)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What one subscriber saw.
struct Received {
    events: u64,
    latencies: Vec<Duration>,
}

async fn subscriber(mut sub: Subscription, base: Instant) -> Received {
    let mut received = Received {
        events: 0,
        latencies: Vec::new(),
    };
    // Ends when the hub closes the sandbox's channel.
    while let Some(event) = sub.next().await {
        let Ok(event) = event else { break };
        received.events += 1;
        if let EventKind::Text { text, .. } = event.kind
            && let Some(nanos) = text.strip_prefix(STAMP).and_then(|n| n.parse::<u64>().ok())
        {
            received
                .latencies
                .push(base.elapsed().saturating_sub(Duration::from_nanos(nanos)));
        }
    }
    received
}

async fn throughput(lines: &[String], runs: usize, budget: Duration) -> Result<(), BoxError> {
    let template = stamped_template(lines)?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db")).await?);
    let (user, project) = seed_user(store.as_ref()).await?;
    let hub = EventHub::default();
    let base = Instant::now();

    let mut sandboxes = Vec::new();
    let mut subscribers = Vec::new();
    for _ in 0..STREAMS {
        let id = seed_sandbox(store.as_ref(), &user, &project).await?;
        let sub = hub.subscribe(store.clone(), id, 0).await?;
        subscribers.push(tokio::spawn(subscriber(sub, base)));
        sandboxes.push(id);
    }

    let sandboxes_ids = sandboxes.clone();
    let start = Instant::now();
    let mut producers = Vec::new();
    for id in sandboxes {
        let store = store.clone();
        let hub = hub.clone();
        let template = template.clone();
        producers.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            let mut done = 0usize;
            while done < runs && start.elapsed() < budget {
                done += 1;
                let mut recorder =
                    StreamRecorder::start(store.clone(), hub.clone(), id, ToolId::Claude).await?;
                for (line, is_text) in &template {
                    let mut line = if *is_text {
                        line.replace("@@NANOS@@", &base.elapsed().as_nanos().to_string())
                    } else {
                        line.clone()
                    };
                    line.push('\n');
                    bytes += line.len() as u64;
                    recorder.feed(line.as_bytes()).await?;
                }
                recorder.finish(Some(0)).await?;
            }
            Ok::<(u64, usize), BoxError>((bytes, done))
        }));
    }
    let (mut bytes, mut total_runs) = (0, 0);
    for producer in producers {
        let (b, done) = producer.await??;
        bytes += b;
        total_runs += done;
    }
    let produced = start.elapsed();
    for id in &sandboxes_ids {
        hub.close(*id);
    }
    let mut events = 0;
    let mut latencies = Vec::new();
    for sub in subscribers {
        let received = tokio::time::timeout(Duration::from_secs(60), sub).await??;
        events += received.events;
        latencies.extend(received.latencies);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "stream layer (StreamRecorder -> SqliteStore in a temp file -> EventHub -> Subscription): \
         {STREAMS} sandboxes replaying claude_success.jsonl ({} lines) up to {runs} times each \
         or for {}s, 1 subscriber per sandbox",
        lines.len(),
        budget.as_secs()
    );
    println!(
        "  agent runs recorded        {total_runs} in {:.2} s ({:.0} runs/s)",
        produced.as_secs_f64(),
        total_runs as f64 / produced.as_secs_f64()
    );
    println!(
        "  events to subscribers      {events} in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  agent stdout consumed      {:.2} MB/s ({:.0} lines/s)",
        bytes as f64 / 1e6 / produced.as_secs_f64(),
        (total_runs * lines.len()) as f64 / produced.as_secs_f64()
    );
    println!(
        "  event latency (stdout line fed -> subscriber receive, incl. parse + store writes, \
         n={}): p50 {}  p99 {}  max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    Ok(())
}

/// A provider whose sandboxes cost nothing: setup commands succeed, agents print the
/// recorded stream without its verdict and then keep running.
struct IdleProvider {
    record: SandboxRecord,
    agent_output: Bytes,
    /// The running agents' streams stay open while their sender lives.
    agents: Mutex<Vec<mpsc::UnboundedSender<courier_e2b::Result<CommandEvent>>>>,
}

fn unsupported(what: &str) -> courier_e2b::Error {
    courier_e2b::Error::InvalidArgument {
        message: format!("the bench provider does not support {what}"),
    }
}

#[async_trait]
impl SandboxApi for IdleProvider {
    async fn create(&self, _: ProviderSandbox) -> courier_e2b::Result<SandboxRecord> {
        Ok(self.record.clone())
    }
    async fn connect(&self, _: &str, _: Option<Duration>) -> courier_e2b::Result<SandboxRecord> {
        Ok(self.record.clone())
    }
    async fn kill(&self, _: &str) -> courier_e2b::Result<bool> {
        Ok(true)
    }
    async fn set_timeout(&self, _: &str, _: Duration) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn pause(&self, _: &str) -> courier_e2b::Result<bool> {
        Err(unsupported("pause"))
    }
    async fn run(&self, _: &SandboxRecord, _: CommandSpec) -> courier_e2b::Result<CommandOutput> {
        Ok(CommandOutput {
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            error: None,
        })
    }
    async fn spawn(
        &self,
        _: &SandboxRecord,
        _: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        let (tx, rx) = mpsc::unbounded();
        let _ = tx.unbounded_send(Ok(CommandEvent::Stdout(self.agent_output.clone())));
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Ok(SpawnedCommand {
            pid: 7,
            events: rx.boxed(),
        })
    }
    async fn send_stdin(&self, _: &SandboxRecord, _: u32, _: Bytes) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn kill_process(&self, _: &SandboxRecord, _: u32) -> courier_e2b::Result<bool> {
        Ok(true)
    }
    async fn write_file(&self, _: &SandboxRecord, _: &str, _: Bytes) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn read_file(&self, _: &SandboxRecord, _: &str) -> courier_e2b::Result<Bytes> {
        Err(unsupported("read_file"))
    }
}

async fn memory(lines: &[String]) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db")).await?);
    let (user, project) = seed_user(store.as_ref()).await?;
    let vault = KeyVault::new(MasterKey::generate(), store.clone());
    vault
        .put(
            KeyOwner::Project(project.id),
            Provider::Anthropic,
            "sk-ant-api03-bench-0000",
        )
        .save()
        .await?;
    // Everything but the verdict: the agent is still working.
    let agent_output = lines[..lines.len() - 1].join("\n") + "\n";
    let record: SandboxRecord = serde_json::from_value(serde_json::json!({
        "templateID": "base", "sandboxID": "bench", "clientID": "x", "envdVersion": "0.6.13",
    }))?;
    let api = Arc::new(IdleProvider {
        record,
        agent_output: Bytes::from(agent_output),
        agents: Mutex::default(),
    });
    let orchestrator = Orchestrator::new(store.clone(), api.clone(), vault, EventHub::default());

    // One sandbox first so lazily built state (pool connections, parsers) is not counted.
    let request = || CreateRequest {
        user_id: user.id,
        project_id: project.id,
        prompt: "fix the login".into(),
        ..Default::default()
    };
    let warm = orchestrator.create(request()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = vm_rss_kib();
    let start = Instant::now();
    let mut ids = vec![warm.id];
    for _ in 0..SANDBOXES - 1 {
        ids.push(orchestrator.create(request()).await?.id);
    }
    let created = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib();
    let mut running = 0;
    let mut working = 0;
    for id in &ids {
        if store.get_sandbox(*id).await?.status == SandboxStatus::Running {
            running += 1;
        }
        if orchestrator.is_working(*id) {
            working += 1;
        }
    }
    println!(
        "orchestrator: {SANDBOXES} sandboxes through Orchestrator::create with an in-file \
         provider (agents printed {} lines, still running), SqliteStore in a temp file",
        lines.len() - 1
    );
    println!(
        "  creates                    {} in {:.2} s ({:.2} ms each); {running} running, \
         {working} with a working agent",
        SANDBOXES - 1,
        created.as_secs_f64(),
        created.as_secs_f64() * 1e3 / (SANDBOXES - 1) as f64
    );
    println!(
        "  process VmRSS              {:.1} MiB before, {:.1} MiB after",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!(
        "  memory per running sandbox {:.1} KiB (VmRSS delta / {})",
        after.saturating_sub(before) as f64 / (SANDBOXES - 1) as f64,
        SANDBOXES - 1
    );
    // End every agent's stream, as a provider kill would, then kill the sandboxes.
    api.agents.lock().unwrap_or_else(|e| e.into_inner()).clear();
    for id in ids {
        orchestrator.kill(id, None).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let budget = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    let lines = fixture()?;
    throughput(&lines, runs, budget).await?;
    memory(&lines).await?;
    Ok(())
}
