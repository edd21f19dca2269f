//! Measures the orchestrator's streaming path and its memory per running sandbox, through
//! a real [`Orchestrator`] over a fake provider (no sandboxes) and a real SQLite store.
//!
//! ```text
//! cargo xtask bench orchestrator
//! cargo run --release -p courier-orchestrator --example bench_orchestrator
//! ```
//!
//! 1. Throughput: [`Orchestrator::create`] for several sandboxes at once; each agent run's
//!    stdout is a pipe the bench writes a recorded Claude stream into
//!    (`courier-tools/tests/fixtures/claude_success.jsonl`), then the exit. The orchestrator
//!    parses it, stores the message (SQLite in a temp file) and publishes to one live
//!    [`Subscription`] per sandbox; when a run's message finishes, the bench sends a
//!    follow-up ([`Orchestrator::send_message`]) and the orchestrator starts the next run.
//!    Prints events/s received by the subscribers and the stdout bytes/s they came from.
//! 2. Latency: every assistant text line is stamped with the instant it was written to
//!    the agent's stdout; the subscriber computes stdout write → receive for that event
//!    (parse, store writes and publish included).
//! 3. Memory: [`Orchestrator::create`] for 200 sandboxes whose agents print part of the
//!    stream and then keep running; VmRSS delta / sandboxes.
//!
//! 4. Fan-out: one sandbox whose agent prints BENCH_FANOUT_LINES (20,000) stamped text
//!    lines at BENCH_FANOUT_RATE (20,000) lines/s (about what a shell `printf` loop does in
//!    a sandbox; 0: all at once), BENCH_FANOUT_SUBSCRIBERS (100) subscriptions on it; every
//!    subscriber checks it got every line in order, and stdout write → receive latency is
//!    taken over all of them (the hub's part of the SSE fan-out, without HTTP).
//!
//! Phases 1, 2 and 4 run on SQLite in a temp file, then again on PostgreSQL when
//! COURIER_TEST_PG_URL is set (a fresh schema per run).
//!
//! Prints figures only; asserts no timing. BENCH_STREAMS (8) sets the sandboxes streaming
//! at once, BENCH_RUNS (250) caps the runs per sandbox, BENCH_SECONDS (20) the time they
//! may take, BENCH_SANDBOXES (200) the sandboxes of the memory phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{NewSandbox as ProviderSandbox, SandboxRecord};
use courier_e2b::{
    CommandEvent, CommandOutput, CommandSpec, ExitStatus, SandboxApi, SpawnedCommand,
};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::{EventHub, EventKind, Subscription};
use courier_store::{
    KeyOwner, MessageRole, NewProject, NewUser, PgStore, Project, Provider, SandboxId,
    SandboxStatus, SqliteStore, Store, User,
};
use futures::StreamExt;
use futures::channel::mpsc;
use tokio::sync::mpsc as tokio_mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The write end of an agent run's stdout (and exit) as the orchestrator reads it.
type Pipe = mpsc::UnboundedSender<courier_e2b::Result<CommandEvent>>;

/// Sandboxes streaming at once in the throughput phase, by default.
const STREAMS: usize = 8;
/// Sandboxes created in the memory phase, by default.
const SANDBOXES: usize = 200;
/// The text the stamped assistant lines carry before the stamp.
const STAMP: &str = "bench-stamp:";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture() -> Result<Vec<String>, BoxError> {
    let path = format!(
        "{}/../courier-tools/tests/fixtures/claude_success.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// The fixture's lines, with each assistant text part replaced by a placeholder stamped
/// at write time.
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

/// A store in a temp file with a user, a project and the project's Anthropic key, and an
/// orchestrator over it and `api`.
struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    user: User,
    project: Project,
    orchestrator: Orchestrator,
}

/// Which store a phase runs on.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SqliteStore in a temp file",
            Backend::Postgres => "PgStore (COURIER_TEST_PG_URL, fresh schema)",
        }
    }

    /// Its part of the `figure` keys `cargo xtask bench` collects.
    fn key(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A `figure KEY = N` line for `cargo xtask bench`'s table of issue [17]'s figures.
fn figure(key: &str, value: f64) {
    println!("figure {key} = {value:.3}");
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn setup(api: Arc<dyn SandboxApi>, backend: Backend) -> Result<Setup, BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = match backend {
        Backend::Sqlite => Arc::new(SqliteStore::open(dir.path().join("bench.db")).await?),
        Backend::Postgres => {
            let url = std::env::var("COURIER_TEST_PG_URL")?;
            let schema = format!(
                "bench_{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos()
            );
            Arc::new(PgStore::connect_in_schema(&url, &schema).await?)
        }
    };
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
    let vault = KeyVault::new(MasterKey::generate(), store.clone());
    vault
        .put(
            KeyOwner::Project(project.id),
            Provider::Anthropic,
            "sk-ant-api03-bench-0000",
        )
        .save()
        .await?;
    let orchestrator = Orchestrator::new(store.clone(), api, vault, EventHub::default());
    Ok(Setup {
        _dir: dir,
        store,
        user,
        project,
        orchestrator,
    })
}

impl Setup {
    fn request(&self) -> CreateRequest {
        CreateRequest {
            user_id: self.user.id,
            project_id: self.project.id,
            prompt: "fix the login".into(),
            ..Default::default()
        }
    }
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

fn exit(code: i32) -> CommandEvent {
    CommandEvent::Exit(ExitStatus {
        exit_code: code,
        exited: true,
        status: format!("exit status {code}"),
        error: None,
    })
}

/// What the fake provider's agents do.
enum Agents {
    /// Each run's stdout pipe is handed to the bench (per provider sandbox, in order),
    /// which writes the agent's output into it.
    Driven(Mutex<HashMap<String, PipeQueue>>),
    /// Each run prints `output` and keeps running while its pipe is held here.
    Idle {
        output: Bytes,
        running: Mutex<Vec<Pipe>>,
    },
}

/// The pipes of one provider sandbox's runs, and the receiving end until the bench takes
/// it.
struct PipeQueue {
    tx: tokio_mpsc::UnboundedSender<Pipe>,
    rx: Option<tokio_mpsc::UnboundedReceiver<Pipe>>,
}

impl PipeQueue {
    fn new() -> Self {
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        PipeQueue { tx, rx: Some(rx) }
    }
}

/// A provider whose sandboxes cost nothing: setup commands succeed at once, and agent runs
/// are what [`Agents`] says.
struct FakeProvider {
    next: AtomicUsize,
    agents: Agents,
}

impl FakeProvider {
    fn new(agents: Agents) -> Self {
        FakeProvider {
            next: AtomicUsize::new(0),
            agents,
        }
    }

    /// The pipes of the runs of provider sandbox `id`, in the order they start.
    fn runs_of(&self, id: &str) -> Option<tokio_mpsc::UnboundedReceiver<Pipe>> {
        let Agents::Driven(queues) = &self.agents else {
            return None;
        };
        let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(id.to_owned())
            .or_insert_with(PipeQueue::new)
            .rx
            .take()
    }

    /// Ends every idle agent's stream, as a provider kill would.
    fn end_idle_agents(&self) {
        if let Agents::Idle { running, .. } = &self.agents {
            running.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

fn unsupported(what: &str) -> courier_e2b::Error {
    courier_e2b::Error::InvalidArgument {
        message: format!("the bench provider does not support {what}"),
    }
}

#[async_trait]
impl SandboxApi for FakeProvider {
    async fn create(&self, request: ProviderSandbox) -> courier_e2b::Result<SandboxRecord> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        serde_json::from_value(serde_json::json!({
            "templateID": request.template_id, "sandboxID": format!("bench-{n}"),
            "clientID": "x", "envdVersion": "0.6.13",
        }))
        .map_err(|e| unsupported(&format!("a record: {e}")))
    }
    async fn connect(&self, _: &str, _: Option<Duration>) -> courier_e2b::Result<SandboxRecord> {
        Err(unsupported("connect"))
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
        record: &SandboxRecord,
        _: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        let (tx, rx) = mpsc::unbounded();
        match &self.agents {
            Agents::Driven(queues) => {
                let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
                let queue = queues
                    .entry(record.sandbox_id.clone())
                    .or_insert_with(PipeQueue::new);
                // The bench gone means the run is never written to: end it at once.
                if let Err(tokio_mpsc::error::SendError(tx)) = queue.tx.send(tx) {
                    let _ = tx.unbounded_send(Ok(exit(0)));
                }
            }
            Agents::Idle { output, running } => {
                let _ = tx.unbounded_send(Ok(CommandEvent::Stdout(output.clone())));
                running.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
            }
        }
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

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    events: u64,
    latencies: Vec<Duration>,
}

/// Counts a sandbox's events until its channel closes; tells the driver when an assistant
/// message (a run) finished.
async fn subscriber(
    mut sub: Subscription,
    base: Instant,
    finished: tokio_mpsc::UnboundedSender<()>,
) -> Received {
    let mut received = Received::default();
    let mut assistant_seqs = std::collections::HashSet::new();
    while let Some(event) = sub.next().await {
        let Ok(event) = event else { break };
        received.events += 1;
        match event.kind {
            EventKind::Message(m) if m.role == MessageRole::Assistant => {
                assistant_seqs.insert(event.seq);
            }
            EventKind::Text { text, .. } => {
                if let Some(nanos) = text.strip_prefix(STAMP).and_then(|n| n.parse::<u64>().ok()) {
                    received
                        .latencies
                        .push(base.elapsed().saturating_sub(Duration::from_nanos(nanos)));
                }
            }
            EventKind::Finished { .. } if assistant_seqs.contains(&event.seq) => {
                let _ = finished.send(());
            }
            _ => {}
        }
    }
    received
}

/// What one sandbox's driver did.
struct Driven {
    runs: usize,
    bytes: u64,
}

/// Writes the stamped stream into each run of one sandbox and asks for the next run when
/// the previous one's message finished.
#[allow(clippy::too_many_arguments)]
async fn drive(
    orchestrator: Orchestrator,
    id: SandboxId,
    mut pipes: tokio_mpsc::UnboundedReceiver<Pipe>,
    mut finished: tokio_mpsc::UnboundedReceiver<()>,
    template: Arc<Vec<(String, bool)>>,
    base: Instant,
    start: Instant,
    runs: usize,
    budget: Duration,
) -> Result<Driven, BoxError> {
    let mut driven = Driven { runs: 0, bytes: 0 };
    loop {
        let pipe = pipes
            .recv()
            .await
            .ok_or("the provider stopped starting runs")?;
        for (line, is_text) in template.iter() {
            let mut line = if *is_text {
                line.replace("@@NANOS@@", &base.elapsed().as_nanos().to_string())
            } else {
                line.clone()
            };
            line.push('\n');
            driven.bytes += line.len() as u64;
            pipe.unbounded_send(Ok(CommandEvent::Stdout(Bytes::from(line))))?;
        }
        pipe.unbounded_send(Ok(exit(0)))?;
        finished
            .recv()
            .await
            .ok_or("the subscription ended before the run finished")?;
        driven.runs += 1;
        if driven.runs >= runs || start.elapsed() >= budget {
            return Ok(driven);
        }
        orchestrator.send_message(id, "go on").await?;
    }
}

async fn throughput(
    lines: &[String],
    streams: usize,
    runs: usize,
    budget: Duration,
    backend: Backend,
) -> Result<(), BoxError> {
    let template = Arc::new(stamped_template(lines)?);
    let provider = Arc::new(FakeProvider::new(Agents::Driven(Mutex::default())));
    let s = setup(provider.clone(), backend).await?;
    let hub = s.orchestrator.hub().clone();
    let base = Instant::now();

    // Every sandbox is created (its first run started, nothing written yet) and
    // subscribed to before the clock starts.
    let mut sandboxes = Vec::new();
    for _ in 0..streams {
        let sandbox = s.orchestrator.create(s.request()).await?;
        let provider_id = sandbox
            .provider_sandbox_id
            .clone()
            .ok_or("created without a provider sandbox")?;
        let pipes = provider.runs_of(&provider_id).ok_or("no run was started")?;
        let sub = hub.subscribe(s.store.clone(), sandbox.id, 0).await?;
        let (finished_tx, finished_rx) = tokio_mpsc::unbounded_channel();
        let subscriber = tokio::spawn(subscriber(sub, base, finished_tx));
        sandboxes.push((sandbox.id, pipes, finished_rx, subscriber));
    }

    let start = Instant::now();
    let mut drivers = Vec::new();
    let mut subscribers = Vec::new();
    let mut ids = Vec::new();
    for (id, pipes, finished, subscriber) in sandboxes {
        drivers.push(tokio::spawn(drive(
            s.orchestrator.clone(),
            id,
            pipes,
            finished,
            template.clone(),
            base,
            start,
            runs,
            budget,
        )));
        subscribers.push(subscriber);
        ids.push(id);
    }
    let (mut bytes, mut total_runs) = (0, 0);
    for driver in drivers {
        let driven = driver.await??;
        bytes += driven.bytes;
        total_runs += driven.runs;
    }
    // Every run's message has finished and reached its subscriber.
    let elapsed = start.elapsed();
    for id in &ids {
        s.orchestrator.kill(*id, None).await?;
    }
    let mut events = 0;
    let mut latencies = Vec::new();
    for sub in subscribers {
        let received = tokio::time::timeout(Duration::from_secs(60), sub).await??;
        events += received.events;
        latencies.extend(received.latencies);
    }
    latencies.sort();
    println!(
        "orchestrator streaming (fake provider's agent stdout -> Orchestrator -> parse -> \
         {} -> EventHub -> Subscription): {streams} sandboxes, each running \
         claude_success.jsonl ({} lines) up to {runs} times (first run + follow-ups) or for \
         {}s, 1 subscriber per sandbox",
        backend.name(),
        lines.len(),
        budget.as_secs()
    );
    println!(
        "  agent runs                 {total_runs} in {:.2} s ({:.0} runs/s)",
        elapsed.as_secs_f64(),
        total_runs as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  events to subscribers      {events} = {:.0} events/s (stored messages, text, agent \
         events, finishes, follow-up user messages)",
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  agent stdout consumed      {:.2} MB/s ({:.0} lines/s)",
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        (total_runs * lines.len()) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  event latency (stdout line written -> subscriber receive, n={}): p50 {}  p99 {}  \
         max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let key = backend.key();
    figure(
        &format!("orchestrator.{key}.events_per_s"),
        events as f64 / elapsed.as_secs_f64(),
    );
    figure(
        &format!("orchestrator.{key}.p99_ms"),
        millis(percentile(&latencies, 0.99)),
    );
    Ok(())
}

async fn memory(lines: &[String], sandboxes: usize) -> Result<(), BoxError> {
    // Everything but the verdict: the agent is still working.
    let output = lines[..lines.len() - 1].join("\n") + "\n";
    let provider = Arc::new(FakeProvider::new(Agents::Idle {
        output: Bytes::from(output),
        running: Mutex::default(),
    }));
    let s = setup(provider.clone(), Backend::Sqlite).await?;

    // One sandbox first so lazily built state (pool connections, parsers) is not counted.
    let warm = s.orchestrator.create(s.request()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = vm_rss_kib();
    let start = Instant::now();
    let mut ids = vec![warm.id];
    for _ in 0..sandboxes.saturating_sub(1) {
        ids.push(s.orchestrator.create(s.request()).await?.id);
    }
    let created = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib();
    let mut running = 0;
    let mut working = 0;
    for id in &ids {
        if s.store.get_sandbox(*id).await?.status == SandboxStatus::Running {
            running += 1;
        }
        if s.orchestrator.is_working(*id) {
            working += 1;
        }
    }
    let counted = sandboxes.saturating_sub(1).max(1);
    println!(
        "orchestrator memory: {sandboxes} sandboxes through Orchestrator::create with a fake \
         provider (agents printed {} lines, still running), SqliteStore in a temp file",
        lines.len() - 1
    );
    println!(
        "  creates                    {counted} in {:.2} s ({:.2} ms each); {running} running, \
         {working} with a working agent",
        created.as_secs_f64(),
        created.as_secs_f64() * 1e3 / counted as f64
    );
    println!(
        "  process VmRSS              {:.1} MiB before, {:.1} MiB after",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!(
        "  memory per running sandbox {:.1} KiB (VmRSS delta / {counted})",
        after.saturating_sub(before) as f64 / counted as f64,
    );
    provider.end_idle_agents();
    for id in ids {
        s.orchestrator.kill(id, None).await?;
    }
    Ok(())
}

/// A stamped assistant text line of the Claude stream.
fn text_line(n: usize, base: Instant) -> String {
    let value = serde_json::json!({
        "type": "assistant",
        "message": {"id": format!("m{n}"), "content": [{"type": "text", "text": format!(
            "{STAMP}{}", base.elapsed().as_nanos())}]},
    });
    format!("{value}\n")
}

/// The write instants stamped in `text` (one per line; a resync joins several).
fn stamps(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(STAMP).skip(1).filter_map(|piece| {
        let digits = piece.bytes().take_while(u8::is_ascii_digit).count();
        piece[..digits].parse().ok()
    })
}

/// What one fan-out subscriber saw: latencies, and whether every line came once, in order.
async fn fanout_subscriber(
    mut sub: Subscription,
    base: Instant,
    lines: usize,
) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::with_capacity(lines);
    let mut content_end = 0;
    let mut next_line = 0u64;
    while latencies.len() < lines {
        let text = match sub.next().await {
            Some(Ok(event)) => match event.kind {
                EventKind::Text {
                    text,
                    content_end: end,
                } => {
                    if end != content_end + text.len() {
                        return Err(format!(
                            "text at {end} after {content_end}: a gap or repeat"
                        ));
                    }
                    content_end = end;
                    text
                }
                EventKind::Message(m) if m.role == MessageRole::Assistant => {
                    content_end = m.content.len();
                    m.content
                }
                _ => continue,
            },
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("ended after {} of {lines} lines", latencies.len())),
        };
        let now = base.elapsed();
        for stamp in stamps(&text) {
            // Stamps grow line by line: a smaller one is a line out of order.
            if stamp < next_line {
                return Err(format!("line stamped {stamp} after {next_line}"));
            }
            next_line = stamp;
            latencies.push(now.saturating_sub(Duration::from_nanos(stamp)));
        }
    }
    Ok(latencies)
}

async fn fanout(
    lines: usize,
    rate: usize,
    subscribers: usize,
    backend: Backend,
) -> Result<(), BoxError> {
    let provider = Arc::new(FakeProvider::new(Agents::Driven(Mutex::default())));
    let s = setup(provider.clone(), backend).await?;
    let hub = s.orchestrator.hub().clone();
    let sandbox = s.orchestrator.create(s.request()).await?;
    let provider_id = sandbox
        .provider_sandbox_id
        .clone()
        .ok_or("created without a provider sandbox")?;
    let mut pipes = provider.runs_of(&provider_id).ok_or("no run was started")?;
    let pipe = pipes.recv().await.ok_or("no run")?;
    let base = Instant::now();
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let sub = hub.subscribe(s.store.clone(), sandbox.id, 0).await?;
        subs.push(tokio::spawn(fanout_subscriber(sub, base, lines)));
    }
    let start = Instant::now();
    // Every millisecond, the lines due by then (one read's worth each).
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0;
    while n < lines {
        tick.tick().await;
        let due = if rate == 0 {
            lines
        } else {
            ((start.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(lines)
        };
        if due > n {
            let chunk: String = (n..due).map(|i| text_line(i, base)).collect();
            pipe.unbounded_send(Ok(CommandEvent::Stdout(Bytes::from(chunk))))?;
            n = due;
        }
    }
    let written = start.elapsed();
    let mut latencies = Vec::new();
    let mut complete = 0;
    let mut failures = Vec::new();
    for sub in subs {
        match tokio::time::timeout(Duration::from_secs(120), sub).await?? {
            Ok(l) => {
                complete += 1;
                latencies.extend(l);
            }
            Err(e) => failures.push(e),
        }
    }
    let delivered = start.elapsed();
    pipe.unbounded_send(Ok(exit(0)))?;
    s.orchestrator.kill(sandbox.id, None).await?;
    latencies.sort();
    println!(
        "orchestrator fan-out ({}): 1 sandbox printing {lines} text lines at {rate} lines/s, \
         {subscribers} subscriptions",
        backend.name()
    );
    println!(
        "  lines written in {:.2} s; all delivered after {:.2} s; {complete}/{subscribers} \
         subscribers got every line once, in order",
        written.as_secs_f64(),
        delivered.as_secs_f64()
    );
    for failure in failures.iter().take(3) {
        println!("  FAILED: {failure}");
    }
    println!(
        "  delivery latency (stdout line written -> subscriber receive, n={}): p50 {}  p99 {}  \
         max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let key = match backend {
        Backend::Sqlite => "orchestrator.fanout.p99_ms".to_owned(),
        other => format!("orchestrator.{}.fanout_p99_ms", other.key()),
    };
    figure(&key, millis(percentile(&latencies, 0.99)));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let streams = env_or("BENCH_STREAMS", STREAMS).max(1);
    let runs = env_or("BENCH_RUNS", 250usize).max(1);
    let budget = Duration::from_secs(env_or("BENCH_SECONDS", 20));
    let sandboxes = env_or("BENCH_SANDBOXES", SANDBOXES).max(1);
    let fanout_lines = env_or("BENCH_FANOUT_LINES", 20_000usize).max(1);
    let fanout_subscribers = env_or("BENCH_FANOUT_SUBSCRIBERS", 100usize).max(1);
    let fanout_rate = env_or("BENCH_FANOUT_RATE", 20_000usize);
    let lines = fixture()?;
    let mut backends = vec![Backend::Sqlite];
    if std::env::var_os("COURIER_TEST_PG_URL").is_some() {
        backends.push(Backend::Postgres);
    } else {
        println!("(COURIER_TEST_PG_URL unset: PostgreSQL phases skipped)");
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for backend in backends {
        if only.is_empty() || only == "throughput" {
            throughput(&lines, streams, runs, budget, backend).await?;
        }
        if only.is_empty() || only == "fanout" {
            fanout(fanout_lines, fanout_rate, fanout_subscribers, backend).await?;
        }
    }
    if only.is_empty() || only == "memory" {
        memory(&lines, sandboxes).await?;
    }
    Ok(())
}
