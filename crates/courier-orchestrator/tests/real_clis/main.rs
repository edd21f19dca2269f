//! The REAL agent CLIs, at the registry's pinned versions, through Courier's real path:
//! the tool's template built at a real courier-sandboxd (`npm install` from the npm
//! registry, through a host npm cache shared into build sandboxes), a sandbox created from
//! it, the agent's stream recorded, a follow-up, a killed run, and a refused key.
//!
//! The model is `courier-llm-standin`, started **inside** each agent sandbox by a test
//! template layered on the tool template (its start command), listening on
//! `127.0.0.1:8787`; Courier points the CLI at it with its provider endpoints. So the
//! sandboxes need no network; only the template build reaches the npm registry.
//!
//! Slow (npm installs, four CLIs) and dependent on the npm registry, so it runs only with
//! `COURIER_REAL_CLIS=1`: `cargo xtask test-real-clis` (see the README for the cadence).
//! With `COURIER_REAL_CLIS_RECORD=1` it also rewrites the recordings under
//! `crates/courier-tools/tests/fixtures/real/` (named `<tool>-<version>-<scenario>`);
//! otherwise each live stream must parse into the same events as the committed recording
//! of the same version.
//!
//! Security: each sandbox is an attacker's machine. What this checks against it: after a
//! kill no agent process is left to keep writing (the agent may rename itself or start
//! sessions of its own), and a refused key ends the run at once instead of letting the CLI
//! retry with it; the stand-in never records credentials.
//!
//! Project settings reach the real CLI: before the first create the project gets a system
//! prompt, a `CLAUDE.md`, a skill and an env var, each with its own marker; the first
//! turn's recorded request must carry the first three where that CLI puts them (the
//! per-tool table in `project`, printed by each run), the env var must be in the
//! environment of every agent process (read from `/proc` during the slow run) and never
//! in a request, and the skill's body is never sent unasked.
//!
//! Keys that never enter the sandbox ([16]): `<tool>_through_the_gateway` runs each CLI
//! with the orchestrator linked to Courier's gateway, served on this host's outward
//! address (the sandboxd's `egress_allow`), and the stand-in on the host (not inside)
//! behind it, accepting only the real key: a tool call and a streamed answer, the real
//! key nowhere inside, the usage billed once from the gateway's count.
//!
//! The scenario is here; the harness around a real courier-sandboxd and the stand-in is in
//! `harness`, the figures and event shapes the scenario compares in `figures`, the
//! project settings and what each CLI does with them in `project`.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

#[path = "../e2e_support/mod.rs"]
mod e2e_support;
mod figures;
mod harness;
mod project;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_orchestrator::stream::SandboxEvent;
use courier_store::{MessageStatus, SandboxId, SandboxStatus};
use courier_tools::{AgentEvent, StreamParser, ToolId, registry};
use figures::{add, agent_events, answered, assert_billed, session_of, summarize};
use harness::{BAD_KEY, GOOD_KEY, Harness, REAL_KEY, RUN_TIMEOUT, provider, wait_for};
use serde_json::Value;

fn enabled(test: &str) -> bool {
    if std::env::var("COURIER_REAL_CLIS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipping {test}: the real-CLI suite runs with COURIER_REAL_CLIS=1 \
         (`cargo xtask test-real-clis`)"
    );
    false
}

/// The models the pinned CLI's own catalog lists, read in a sandbox of its template:
/// `None` for a CLI without a catalog command (Claude Code takes any model id).
async fn catalog(h: &Harness, id: SandboxId) -> Option<Vec<String>> {
    let out = match h.tool {
        ToolId::Codex => {
            h.run(id, "CODEX_API_KEY=catalog codex debug models 2>/dev/null")
                .await
        }
        ToolId::Pi => {
            h.run(id, "OPENROUTER_API_KEY=catalog pi --list-models 2>&1")
                .await
        }
        ToolId::Opencode => {
            h.run(
                id,
                "OPENCODE_DISABLE_MODELS_FETCH=1 opencode models openrouter 2>/dev/null",
            )
            .await
        }
        _ => return None,
    };
    assert_eq!(out.exit_code, 0, "{}: catalog: {}", h.tool, out.stderr);
    Some(match h.tool {
        ToolId::Codex => {
            let catalog: Value =
                serde_json::from_str(&out.stdout).expect("codex's catalog is JSON");
            catalog["models"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["slug"].as_str().map(str::to_owned))
                .collect()
        }
        // `provider  model  context …` (on stderr): the registry names them
        // `provider/model`.
        ToolId::Pi => out
            .stdout
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some(format!("{}/{}", words.next()?, words.next()?))
            })
            .collect(),
        _ => out.stdout.lines().map(|l| l.trim().to_owned()).collect(),
    })
}

/// The whole scenario for one tool (see the module docs).
async fn real_cli(tool: ToolId) {
    if !enabled(&format!("real_{tool}")) {
        return;
    }
    let Some(h) = Harness::new(tool).await else {
        return;
    };
    let suite = Instant::now();
    let template = h.templates().await;
    let (_, api) = provider(tool);
    h.put_key(GOOD_KEY).await;
    h.vault()
        .put_project_settings(h.world.project, project::update())
        .await
        .expect("project settings");

    // 1. A first run: the file is written, the events stream, usage is the stand-in's.
    let file = |n: u32| format!("{}/standin-{n}.txt", courier_tools::PROJECT_DIR);
    let sandbox = h
        .create(
            &template,
            &format!("Create the file [[write:{}]] please.", file(1)),
        )
        .await;
    assert_eq!(sandbox.status, SandboxStatus::Running);
    let mut sub = h
        .hub
        .subscribe(h.world.store.clone(), sandbox.id, 0)
        .await
        .unwrap();
    let events: Arc<Mutex<Vec<SandboxEvent>>> = Arc::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = sub.next().await {
            sink.lock().unwrap().push(e);
        }
    });
    h.idle(sandbox.id, 2).await;
    let messages = h.messages(sandbox.id).await;
    assert_eq!(
        messages[1].status,
        MessageStatus::Completed,
        "{tool}: {}\n{}",
        messages[1].content,
        messages[1].raw_log
    );
    assert!(
        messages[1]
            .content
            .contains(courier_llm_standin::FINAL_TEXT),
        "{}",
        messages[1].content
    );
    let written = h.run(sandbox.id, &format!("cat {}", file(1))).await;
    assert_eq!(
        written.stdout,
        format!("{}{}\n", courier_llm_standin::WRITTEN_PREFIX, file(1)),
        "{tool}: the agent wrote the file"
    );
    // After the run: OpenCode's first start migrates its database, and a second opencode
    // process at the same time makes the agent fail.
    if let Some(models) = catalog(&h, sandbox.id).await {
        for m in registry::spec(tool).models {
            assert!(
                models.iter().any(|c| c == m.id),
                "{tool} {}: the registry's model {} is not in the CLI's catalog",
                h.version,
                m.id
            );
        }
    }
    // The subscription began after the create returned, so the run's first events may
    // have been replayed inside the stored message: the stored stream is the reference,
    // and the live events must show the run streaming.
    let first = StreamParser::parse_all(tool, messages[1].raw_log.as_bytes(), Some(0));
    let live = agent_events(&events.lock().unwrap(), messages[1].seq);
    assert!(
        live.iter().any(|e| matches!(e, AgentEvent::Result(_))),
        "{tool}: the run's events streamed to the subscriber: {live:?}"
    );
    let session = session_of(&first).unwrap_or_else(|| panic!("{tool}: no session id: {first:?}"));
    for (what, found) in [
        ("tool use", first.iter().any(|e| matches!(e, AgentEvent::ToolUse { .. }))),
        (
            "tool result",
            first
                .iter()
                .any(|e| matches!(e, AgentEvent::ToolResult { is_error: false, .. })),
        ),
        ("usage", first.iter().any(|e| matches!(e, AgentEvent::Usage(_)))),
        (
            "final text",
            first.iter().any(
                |e| matches!(e, AgentEvent::Text { text } if text.contains(courier_llm_standin::FINAL_TEXT)),
            ),
        ),
    ] {
        assert!(found, "{tool}: no {what} event in {first:?}");
    }
    let requests = h.requests(sandbox.id).await;
    assert!(
        requests.iter().all(|r| !r.to_string().contains(GOOD_KEY)),
        "the stand-in never records a key"
    );
    project::check_reach(&h, &requests);
    let run1 = answered(&requests);
    assert_eq!(
        run1,
        add(
            courier_llm_standin::figures(api, &tool_call()),
            courier_llm_standin::figures(api, &courier_llm_standin::Turn::Answer { slow: false })
        ),
        "{tool}: one tool call and one answer, no side request Courier could not bill"
    );
    assert_billed(tool, "the first run", &h.usage(sandbox.id).await, &[run1]);
    h.stream_matches_recording("first", &messages[1].raw_log, 0);
    let seen = requests.len();

    // 2. A follow-up resumes the same session.
    h.orchestrator
        .send_message(
            sandbox.id,
            &format!("Now also create [[write:{}]].", file(2)),
        )
        .await
        .unwrap();
    h.idle(sandbox.id, 4).await;
    let messages = h.messages(sandbox.id).await;
    assert_eq!(
        messages[3].status,
        MessageStatus::Completed,
        "{}",
        messages[3].raw_log
    );
    let written = h.run(sandbox.id, &format!("cat {}", file(2))).await;
    assert!(written.stdout.contains(&file(2)), "{tool}: second file");
    let second = agent_events(&events.lock().unwrap(), messages[3].seq);
    assert!(
        second
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolUse { .. }))
            && second.iter().any(|e| matches!(e, AgentEvent::Usage(_))),
        "{tool}: the follow-up streamed live: {second:?}"
    );
    assert_eq!(
        session_of(&second).as_deref(),
        Some(session.as_str()),
        "{tool}: the follow-up continues the session"
    );
    let requests = h.requests(sandbox.id).await;
    let run2 = answered(&requests[seen..]);
    assert_billed(
        tool,
        "the follow-up",
        &h.usage(sandbox.id).await,
        &[run1, run2],
    );
    h.stream_matches_recording("follow_up", &messages[3].raw_log, 0);
    let seen = requests.len();

    // 3. A run killed while the model is slow: billed for what was answered, and no agent
    //    process survives the kill. While it runs, the project's env var is in the
    //    agent's environment.
    h.orchestrator
        .send_message(
            sandbox.id,
            &format!("Create [[write:{}]] [[slow]] then stop.", file(3)),
        )
        .await
        .unwrap();
    wait_for("the slow answer to be asked for", RUN_TIMEOUT, || async {
        h.requests(sandbox.id).await[seen..]
            .iter()
            .any(|r| r.pointer("/answer/turn").and_then(Value::as_str) == Some("answer"))
    })
    .await;
    let requests = h.requests(sandbox.id).await;
    let run3 = answered(
        &requests[seen..]
            .iter()
            .filter(|r| r.pointer("/answer/turn").and_then(Value::as_str) != Some("answer"))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut sent: Vec<Value> = requests.iter().map(summarize).collect();
    let sid = h.run(sandbox.id, "cat /tmp/courier-agent/sid").await.stdout;
    project::assert_env_in_agent(&h, sandbox.id, &sid).await;
    // Before the kill: the recording goes with the sandbox.
    project::assert_nothing_leaked(tool, &h.requests(sandbox.id).await);
    let killed = h.orchestrator.kill(sandbox.id, None).await.unwrap();
    assert_eq!(killed.status, SandboxStatus::Killed);
    let ps = h.api.before_destroy.lock().unwrap().join("\n");
    let agent_names = ["claude", "codex", "opencode", "pi", "node"];
    for line in ps.lines() {
        let mut words = line.split_whitespace();
        let (_, session, comm) = (words.next(), words.next(), words.next());
        assert!(
            !agent_names.contains(&comm.unwrap_or_default()) && session != Some(sid.trim()),
            "{tool}: an agent process survived the kill: {line}\n{ps}"
        );
    }
    let messages = h.messages(sandbox.id).await;
    let last = messages.last().unwrap();
    assert_eq!(
        last.status,
        MessageStatus::Error,
        "the killed run ends in error"
    );
    assert_billed(
        tool,
        "the killed run",
        &h.usage(sandbox.id).await,
        &[run1, run2, run3],
    );
    h.stream_matches_recording("killed", &last.raw_log, 143);

    // 4. A refused key: the message ends in error within 30 s, naming the key to fix.
    h.put_key(BAD_KEY).await;
    let started = Instant::now();
    let refused = h
        .create(&template, &format!("Create [[write:{}]].", file(4)))
        .await;
    h.idle(refused.id, 2).await;
    let took = started.elapsed();
    let messages = h.messages(refused.id).await;
    assert_eq!(
        messages[1].status,
        MessageStatus::Error,
        "{}",
        messages[1].raw_log
    );
    let provider_name = provider(tool).0.to_string();
    assert!(
        messages[1]
            .content
            .contains(&format!("courier keys set {provider_name}")),
        "{tool}: the message names the key: {}",
        messages[1].content
    );
    assert!(
        took < Duration::from_secs(30),
        "{tool}: a refused key took {took:?} to surface"
    );
    assert!(
        !messages[1].content.contains(BAD_KEY),
        "the refused key is never shown"
    );
    h.stream_matches_recording("unauthorized", &messages[1].raw_log, 1);
    let refused_requests = h.requests(refused.id).await;
    assert!(
        refused_requests
            .iter()
            .all(|r| !r.to_string().contains(BAD_KEY)),
        "the stand-in never records a key"
    );
    sent.extend(refused_requests.iter().map(summarize));
    project::assert_nothing_leaked(tool, &refused_requests);
    if std::env::var("COURIER_REAL_CLIS_RECORD").as_deref() == Ok("1") {
        let path = h.fixture_path("requests").with_extension("json");
        std::fs::write(&path, serde_json::to_string_pretty(&sent).unwrap() + "\n").unwrap();
        eprintln!("recorded {}", path.display());
    }
    h.orchestrator.kill(refused.id, None).await.unwrap();
    eprintln!(
        "{tool} {}: real-CLI scenario passed in {:.0}s",
        h.version,
        suite.elapsed().as_secs_f64()
    );
}

/// [16] The real CLI through Courier's gateway: the sandbox holds only its run's token,
/// the gateway (on this host) swaps it for the real key toward the stand-in (on this host
/// too, accepting only the real key), the answer streams through, and the usage billed is
/// what the stand-in reported, counted once at the gateway.
///
/// Security: the sandbox is an attacker's machine with internet access. What an agent
/// steered by a prompt injection could try: read the real key from any process's
/// environment, any file, or `git credential fill`; find the run's proof (which makes its
/// token usable) in a file. Each is searched for here and must not be found; the token
/// it does hold is refused from outside the sandbox (no proof).
async fn real_cli_through_gateway(tool: ToolId) {
    if !enabled(&format!("{tool}_through_the_gateway")) {
        return;
    }
    let Some(h) = Harness::through_gateway(tool).await else {
        return;
    };
    let suite = Instant::now();
    let gateway = h.gateway.as_ref().expect("a harness through the gateway");
    let template = h.tool_template().await;
    let (_, api) = provider(tool);
    h.put_key(REAL_KEY).await;

    let file = format!("{}/through-gateway.txt", courier_tools::PROJECT_DIR);
    let sandbox = h
        .create(
            &template,
            &format!("Create the file [[write:{file}]] please."),
        )
        .await;
    assert_eq!(sandbox.status, SandboxStatus::Running);
    assert!(
        sandbox.config.keys_via_gateway,
        "{tool}: runs through the gateway"
    );
    let mut sub = h
        .hub
        .subscribe(h.world.store.clone(), sandbox.id, 0)
        .await
        .unwrap();
    let events: Arc<Mutex<Vec<SandboxEvent>>> = Arc::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = sub.next().await {
            sink.lock().unwrap().push(e);
        }
    });
    h.idle(sandbox.id, 2).await;
    let messages = h.messages(sandbox.id).await;
    assert_eq!(
        messages[1].status,
        MessageStatus::Completed,
        "{tool} through the gateway: {}\n{}\nhost stand-in saw: {:?}",
        messages[1].content,
        messages[1].raw_log,
        gateway.requests().iter().map(summarize).collect::<Vec<_>>()
    );
    assert!(
        messages[1]
            .content
            .contains(courier_llm_standin::FINAL_TEXT),
        "{}",
        messages[1].content
    );
    let written = h.run(sandbox.id, &format!("cat {file}")).await;
    assert_eq!(
        written.stdout,
        format!("{}{file}\n", courier_llm_standin::WRITTEN_PREFIX),
        "{tool}: the agent wrote the file through the gateway"
    );

    // Streaming intact: the run's events reached the subscriber as it ran, and the stored
    // stream parses into the tool call, its result, the usage and the final text, as
    // the committed recording of this version (made against the stand-in directly) does.
    let live = agent_events(&events.lock().unwrap(), messages[1].seq);
    assert!(
        live.iter().any(|e| matches!(e, AgentEvent::Result(_))),
        "{tool}: the run's events streamed to the subscriber: {live:?}"
    );
    let parsed = StreamParser::parse_all(tool, messages[1].raw_log.as_bytes(), Some(0));
    for (what, found) in [
        ("tool use", parsed.iter().any(|e| matches!(e, AgentEvent::ToolUse { .. }))),
        (
            "tool result",
            parsed
                .iter()
                .any(|e| matches!(e, AgentEvent::ToolResult { is_error: false, .. })),
        ),
        ("usage", parsed.iter().any(|e| matches!(e, AgentEvent::Usage(_)))),
        (
            "final text",
            parsed.iter().any(
                |e| matches!(e, AgentEvent::Text { text } if text.contains(courier_llm_standin::FINAL_TEXT)),
            ),
        ),
    ] {
        assert!(found, "{tool}: no {what} event in {parsed:?}");
    }
    // No error on the way (a refused WebSocket attempt retried, a dropped stream).
    let errors: Vec<&str> = parsed
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Error { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{tool}: errors in the stream through the gateway: {errors:?}"
    );
    if std::env::var("COURIER_REAL_CLIS_RECORD").as_deref() != Ok("1") {
        h.stream_matches_recording("first", &messages[1].raw_log, 0);
    }

    // The host stand-in answered the tool call and the answer (it refuses any key but the
    // real one), and what was billed is exactly that, once: counted at the gateway, the
    // CLI's own figures not billed again.
    let requests = gateway.requests();
    assert!(
        requests.iter().all(|r| !r.to_string().contains(REAL_KEY)),
        "the stand-in never records a key"
    );
    // Nor does the provider see what only means something here: the run's token and
    // proof stop at the gateway.
    let credentials = gateway.minter.mint(&sandbox.id.to_string());
    for r in &requests {
        let text = r.to_string();
        assert!(
            !text.contains(credentials.token.expose())
                && !text.contains(credentials.proof.expose()),
            "{tool}: the run's token or proof reached the provider: {}",
            summarize(r)
        );
    }
    let figures = answered(&requests);
    eprintln!(
        "{tool} {} through the gateway: {} request(s) at the host stand-in: {:?}; figures {figures:?}",
        h.version,
        requests.len(),
        requests
            .iter()
            .map(|r| format!(
                "{} {}",
                r["method"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        figures,
        add(
            courier_llm_standin::figures(api, &tool_call()),
            courier_llm_standin::figures(api, &courier_llm_standin::Turn::Answer { slow: false })
        ),
        "{tool}: one tool call and one answer through the gateway"
    );
    // The gateway records an answer's usage before its end reaches the CLI; the wait is
    // for a loaded machine. A shortfall is reported by the comparison below.
    let expected = figures.input + figures.output + figures.cache_read + figures.cache_write;
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(20) {
        let u = h.usage(sandbox.id).await;
        let billed = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens;
        if billed as u64 >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let per_answer: Vec<_> = requests
        .iter()
        .filter(|r| r.pointer("/answer/figures").is_some())
        .map(|r| answered(std::slice::from_ref(r)))
        .collect();
    assert_billed(
        tool,
        "the run through the gateway",
        &h.usage(sandbox.id).await,
        &per_answer,
    );

    // The real key is nowhere inside: no process's environment, no file, nothing from
    // git's credential machinery; nor is the run's proof in any file.
    let proof = gateway.minter.mint(&sandbox.id.to_string()).proof;
    let hunt = format!(
        "for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e; done | grep -c -e '{REAL_KEY}'; \
         grep -rIl -e '{REAL_KEY}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | head; \
         printf 'protocol=https\\nhost=github.com\\n\\n' | su -s /bin/sh user -c 'cd {dir} && GIT_TERMINAL_PROMPT=0 git credential fill' 2>&1; \
         echo proof:; grep -rIl -e '{}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | head",
        proof.expose(),
        dir = courier_tools::PROJECT_DIR,
    );
    let found = h.run_as_root(sandbox.id, &hunt).await;
    assert!(
        !found.contains(REAL_KEY),
        "{tool}: the real key is inside: {found}"
    );
    assert_eq!(
        found.lines().next(),
        Some("0"),
        "{tool}: a process's environment holds the real key: {found}"
    );
    let after_proof = found.split("proof:").nth(1).unwrap_or("");
    assert!(
        after_proof.trim().is_empty(),
        "{tool}: the proof is in a file inside: {after_proof}"
    );
    // What the CLI held is its run token: refused from here (no proof).
    let token = gateway.minter.mint(&sandbox.id.to_string()).token;
    let (root, path) = match tool {
        ToolId::Claude => ("anthropic", "v1/messages"),
        ToolId::Codex => ("openai", "v1/responses"),
        _ => ("openrouter", "api/v1/chat/completions"),
    };
    let status = reqwest::Client::new()
        .post(format!("{}/llm/{root}/{path}", gateway.url))
        .bearer_auth(token.expose())
        .json(&serde_json::json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status.as_u16(),
        401,
        "{tool}: the run token alone is refused"
    );
    h.orchestrator.kill(sandbox.id, None).await.unwrap();
    eprintln!(
        "{tool} {}: through-the-gateway scenario passed in {:.0}s",
        h.version,
        suite.elapsed().as_secs_f64()
    );
}

/// A tool-call turn (its figures do not depend on the call).
fn tool_call() -> courier_llm_standin::Turn {
    courier_llm_standin::Turn::ToolCall {
        path: String::new(),
        call: courier_llm_standin::ToolCall {
            name: String::new(),
            input: courier_llm_standin::CallInput::Text(String::new()),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_for_real() {
    real_cli(ToolId::Claude).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_for_real() {
    real_cli(ToolId::Codex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_for_real() {
    real_cli(ToolId::Opencode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_for_real() {
    real_cli(ToolId::Pi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_through_the_gateway() {
    real_cli_through_gateway(ToolId::Claude).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_through_the_gateway() {
    real_cli_through_gateway(ToolId::Codex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_through_the_gateway() {
    real_cli_through_gateway(ToolId::Opencode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_through_the_gateway() {
    real_cli_through_gateway(ToolId::Pi).await;
}
