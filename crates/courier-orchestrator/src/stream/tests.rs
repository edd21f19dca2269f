//! The stream's tests: recording runs, publishing, and subscribers joining late.

use std::collections::BTreeMap;
use std::sync::Arc;

use courier_e2b::CommandEvent;
use courier_store::{MessageRole, MessageStatus, SandboxId, Store};
use courier_tools::{AgentEvent, StreamParser, ToolId};

use super::*;
use crate::testing::{Seeded, fixture};

async fn setup() -> (Arc<dyn Store>, EventHub, SandboxId) {
    let seeded = Seeded::new().await;
    (seeded.store, EventHub::default(), seeded.sandbox.id)
}

async fn drain(sub: &mut Subscription) -> Vec<SandboxEvent> {
    let mut out = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_millis(50), sub.next()).await
    {
        out.push(event.unwrap());
    }
    out
}

/// What a subscriber knows of a message after applying its events.
fn rebuild(events: &[SandboxEvent]) -> BTreeMap<i64, (String, MessageStatus)> {
    let mut out = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::Message(m) => {
                out.insert(e.seq, (m.content.clone(), m.status));
            }
            EventKind::Text { text, .. } => out.get_mut(&e.seq).unwrap().0.push_str(text),
            EventKind::Finished { status } => out.get_mut(&e.seq).unwrap().1 = *status,
            EventKind::Agent { .. } => {}
        }
    }
    out
}

#[tokio::test]
async fn every_event_of_one_line_reaches_a_live_subscriber() {
    let (store, hub, sandbox) = setup().await;
    let mut sub = hub.subscribe(store.clone(), sandbox, 0).await.unwrap();
    let mut recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Opencode)
        .await
        .unwrap();
    // One OpenCode line is a tool use and its result.
    recorder
        .feed(br#"{"type":"tool_use","sessionID":"ses_1","part":{"type":"tool","callID":"c1","tool":"write","state":{"status":"completed","input":{},"output":"ok"}}}
"#)
        .await
        .unwrap();
    let kinds: Vec<&str> = drain(&mut sub)
        .await
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Agent {
                event: AgentEvent::ToolUse { .. },
                ..
            } => Some("use"),
            EventKind::Agent {
                event: AgentEvent::ToolResult { .. },
                ..
            } => Some("result"),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(kinds, ["use", "result"]);
}

#[tokio::test]
async fn a_refused_key_ends_the_run_at_once_naming_the_key() {
    let (store, hub, sandbox) = setup().await;
    let recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Claude)
        .await
        .unwrap();
    // The CLI would go on retrying; the stream never ends by itself.
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tx.unbounded_send(Ok(CommandEvent::Stdout(bytes::Bytes::from_static(
        br#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":3,"error_status":401,"error":"authentication_failed","session_id":"s"}
"#,
    ))))
    .unwrap();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), recorder.record(rx))
        .await
        .expect("the recorder stops at the refusal")
        .unwrap();
    assert!(outcome.auth_failed && !outcome.result.success);
    let m = &store.list_messages(sandbox, 0, 10).await.unwrap()[0];
    assert_eq!(m.status, MessageStatus::Error);
    assert!(
        m.content.contains("HTTP 401") && m.content.contains("courier keys set anthropic"),
        "{}",
        m.content
    );
    drop(tx);
}

#[tokio::test]
async fn a_claude_run_becomes_a_completed_message_with_its_raw_log_and_usage() {
    let (store, hub, sandbox) = setup().await;
    let bytes = fixture("claude_success.jsonl");
    let mut recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Claude)
        .await
        .unwrap();
    // Odd read boundaries must not matter.
    for chunk in bytes.chunks(37) {
        recorder.feed(chunk).await.unwrap();
    }
    let outcome = recorder.finish(Some(0)).await.unwrap();
    assert!(outcome.result.success);
    assert!(outcome.session_id.is_some());

    let messages = store.list_messages(sandbox, 0, 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        (m.role, m.status),
        (MessageRole::Assistant, MessageStatus::Completed)
    );
    let expected_text: String = StreamParser::parse_all(ToolId::Claude, &bytes, Some(0))
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::Text { text } => Some(text),
            _ => None,
        })
        .collect();
    assert!(!expected_text.is_empty());
    assert_eq!(m.content, expected_text);
    assert_eq!(m.raw_log.as_bytes(), bytes.as_slice());

    let usage = crate::usage::UsageSummary::for_sandbox(store.as_ref(), sandbox)
        .await
        .unwrap();
    let reported = outcome.result.usage.unwrap();
    assert_eq!(usage.input_tokens, reported.input_tokens as f64);
    assert_eq!(usage.output_tokens, reported.output_tokens as f64);
    assert_eq!(
        usage.cost,
        courier_store::Money::from_usd(outcome.result.cost_usd.unwrap())
    );
}

#[tokio::test]
async fn a_whole_run_in_one_read_keeps_each_events_own_positions_and_stops_at_the_verdict() {
    let (store, hub, sandbox) = setup().await;
    let mut sub = hub.subscribe(store.clone(), sandbox, 0).await.unwrap();
    let mut bytes = fixture("claude_success.jsonl");
    bytes.extend_from_slice(b"{\"type\":\"assistant\",\"after\":\"the verdict\"}\n");
    let mut recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Claude)
        .await
        .unwrap();
    recorder.feed(&bytes).await.unwrap();
    let outcome = recorder.finish(Some(0)).await.unwrap();
    assert!(outcome.result.success);

    let m = &store.list_messages(sandbox, 0, 10).await.unwrap()[0];
    // The line printed after the verdict is not part of the run.
    assert_eq!(
        m.raw_log.as_bytes(),
        fixture("claude_success.jsonl").as_slice()
    );
    let events = drain(&mut sub).await;
    let (mut text, mut last_raw_end, mut agent_events) = (String::new(), 0, 0);
    for e in events.iter().filter(|e| e.seq == m.seq) {
        match &e.kind {
            EventKind::Text {
                text: t,
                content_end,
            } => {
                text.push_str(t);
                assert_eq!(*content_end, text.len(), "content_end of {t:?}");
                assert_eq!(&m.content[..*content_end], text);
            }
            EventKind::Agent { raw_end, .. } => {
                agent_events += 1;
                // Each event points at the end of its own line, not of the batch.
                assert!(*raw_end >= last_raw_end && *raw_end <= m.raw_log.len());
                assert_eq!(&m.raw_log[*raw_end - 1..*raw_end], "\n");
                last_raw_end = *raw_end;
            }
            _ => {}
        }
    }
    assert_eq!(text, m.content);
    assert!(agent_events > 1);
    let first_agent_end = events.iter().find_map(|e| match &e.kind {
        EventKind::Agent { raw_end, .. } => Some(*raw_end),
        _ => None,
    });
    assert!(
        first_agent_end.unwrap() < m.raw_log.len(),
        "per-line, not per-batch ends"
    );
}

#[tokio::test]
async fn a_failed_run_finishes_its_message_as_error() {
    let (store, hub, sandbox) = setup().await;
    for (tool, name) in [
        (ToolId::Claude, "claude_api_error.jsonl"),
        (ToolId::Codex, "codex_failed.jsonl"),
        (ToolId::Opencode, "opencode_error.jsonl"),
        (ToolId::Pi, "pi_model_error.jsonl"),
    ] {
        let mut recorder = StreamRecorder::start(store.clone(), hub.clone(), sandbox, tool)
            .await
            .unwrap();
        recorder.feed(&fixture(name)).await.unwrap();
        let outcome = recorder.finish(Some(1)).await.unwrap();
        assert!(!outcome.result.success, "{name}");
        assert_eq!(outcome.message.status, MessageStatus::Error, "{name}");
        assert!(
            !outcome.message.content.is_empty(),
            "{name}: the error is shown"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_short_still_ends_in_a_verdict() {
    let (store, hub, sandbox) = setup().await;
    let bytes = fixture("claude_success.jsonl");
    let half = &bytes[..bytes.len() / 2];
    let mut recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Claude)
        .await
        .unwrap();
    recorder.feed(half).await.unwrap();
    let outcome = recorder.finish(None).await.unwrap();
    assert!(!outcome.result.success);
    assert_eq!(outcome.message.status, MessageStatus::Error);
}

#[tokio::test]
async fn the_shell_tool_records_output_and_no_token_usage() {
    let (store, hub, sandbox) = setup().await;
    let mut recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Shell)
        .await
        .unwrap();
    recorder.feed(&fixture("shell_output.txt")).await.unwrap();
    let outcome = recorder.finish(Some(0)).await.unwrap();
    assert_eq!(outcome.message.status, MessageStatus::Completed);
    assert!(store.usage_for_sandbox(sandbox).await.unwrap().is_empty());
}

#[tokio::test]
async fn live_subscribers_see_every_event_with_the_message_seq() {
    let (store, hub, sandbox) = setup().await;
    let mut sub = hub.subscribe(store.clone(), sandbox, 0).await.unwrap();
    record_user_message(store.as_ref(), &hub, sandbox, "fix the login")
        .await
        .unwrap();
    let mut recorder = StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
        .await
        .unwrap();
    recorder
        .feed(&fixture("claude_success.jsonl"))
        .await
        .unwrap();
    recorder.finish(Some(0)).await.unwrap();

    let events = drain(&mut sub).await;
    assert_eq!(events[0].seq, 1);
    assert!(matches!(&events[0].kind, EventKind::Message(m) if m.role == MessageRole::User));
    assert!(events[1..].iter().all(|e| e.seq == 2));
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Agent {
            event: AgentEvent::ToolUse { .. },
            ..
        }
    )));
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::Finished {
            status: MessageStatus::Completed
        }
    ));
    let stored = store.list_messages(sandbox, 0, 10).await.unwrap();
    let rebuilt = rebuild(&events);
    for m in stored {
        assert_eq!(rebuilt[&m.seq], (m.content, m.status));
    }
}

#[tokio::test]
async fn a_late_subscriber_replays_from_the_store_without_gaps_or_duplicates() {
    let (store, hub, sandbox) = setup().await;
    record_user_message(store.as_ref(), &hub, sandbox, "first")
        .await
        .unwrap();
    let bytes = fixture("claude_success.jsonl");
    let mut recorder = StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
        .await
        .unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    let split = lines.len() / 2;
    // Join at every point of the stream: each subscriber ends up with the same messages.
    let mut subs = Vec::new();
    subs.push(hub.subscribe(store.clone(), sandbox, 0).await.unwrap());
    for line in &lines[..split] {
        recorder.feed(line).await.unwrap();
        subs.push(hub.subscribe(store.clone(), sandbox, 0).await.unwrap());
    }
    for line in &lines[split..] {
        recorder.feed(line).await.unwrap();
    }
    recorder.finish(Some(0)).await.unwrap();
    let late = hub.subscribe(store.clone(), sandbox, 0).await.unwrap();
    subs.push(late);

    let stored: BTreeMap<_, _> = store
        .list_messages(sandbox, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, (m.content, m.status)))
        .collect();
    for (i, mut sub) in subs.into_iter().enumerate() {
        let events = drain(&mut sub).await;
        assert_eq!(rebuild(&events), stored, "subscriber {i}");
        let mut tool_uses: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Agent {
                    event: AgentEvent::ToolUse { id, .. },
                    ..
                } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let count = tool_uses.len();
        tool_uses.dedup();
        assert_eq!(
            tool_uses.len(),
            count,
            "subscriber {i} saw a tool use twice"
        );
        if i == 0 {
            assert!(count > 0, "the first subscriber saw every tool use live");
        }
    }
}

#[tokio::test]
async fn a_subscriber_resuming_after_a_seq_gets_only_later_messages() {
    let (store, hub, sandbox) = setup().await;
    record_user_message(store.as_ref(), &hub, sandbox, "one")
        .await
        .unwrap();
    record_user_message(store.as_ref(), &hub, sandbox, "two")
        .await
        .unwrap();
    let mut sub = hub.subscribe(store.clone(), sandbox, 1).await.unwrap();
    record_user_message(store.as_ref(), &hub, sandbox, "three")
        .await
        .unwrap();
    let seqs: Vec<i64> = drain(&mut sub).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_resyncs_its_text_from_the_store() {
    let (store, _, sandbox) = setup().await;
    let hub = EventHub::new(2);
    let mut sub = hub.subscribe(store.clone(), sandbox, 0).await.unwrap();
    let mut recorder = StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
        .await
        .unwrap();
    recorder
        .feed(&fixture("claude_success.jsonl"))
        .await
        .unwrap();
    recorder.finish(Some(0)).await.unwrap();
    let events = drain(&mut sub).await;
    let stored: BTreeMap<_, _> = store
        .list_messages(sandbox, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, (m.content, m.status)))
        .collect();
    assert_eq!(rebuild(&events), stored);
}

#[tokio::test]
async fn a_process_event_stream_is_recorded_until_its_exit() {
    let (store, hub, sandbox) = setup().await;
    let bytes = fixture("codex_success.jsonl");
    let events = vec![
        Ok(CommandEvent::Stderr(bytes::Bytes::from_static(
            b"stderr-noise-7f3a\n",
        ))),
        Ok(CommandEvent::Stdout(bytes::Bytes::from(bytes.clone()))),
        Ok(CommandEvent::Exit(courier_e2b::ExitStatus {
            exit_code: 0,
            exited: true,
            status: "exit status 0".into(),
            error: None,
        })),
    ];
    let recorder = StreamRecorder::start(store.clone(), hub, sandbox, ToolId::Codex)
        .await
        .unwrap();
    let outcome = recorder
        .record(futures::stream::iter(events))
        .await
        .unwrap();
    assert!(outcome.result.success);
    assert!(!outcome.message.raw_log.contains("stderr-noise-7f3a"));
}

/// One Claude text line.
fn text_line(text: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"type": "assistant", "message": {"id": "m", "content": [
            {"type": "text", "text": text}]}})
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_while_batches_wait_for_the_store_miss_and_repeat_nothing() {
    let (store, hub, sandbox) = setup().await;
    let mut recorder = StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
        .await
        .unwrap();
    // Events are published as soon as a batch is queued; a subscriber joining between two
    // feeds replays what the writer has stored, which must by then include every batch
    // already published.
    let mut subs = Vec::new();
    for n in 0..400 {
        recorder
            .feed(text_line(&format!("<{n}>")).as_bytes())
            .await
            .unwrap();
        if n % 40 == 0 {
            subs.push(hub.subscribe(store.clone(), sandbox, 0).await.unwrap());
        }
    }
    recorder.finish(Some(0)).await.unwrap();
    let stored: BTreeMap<_, _> = store
        .list_messages(sandbox, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, (m.content, m.status)))
        .collect();
    let expected: String = (0..400).map(|n| format!("<{n}>")).collect();
    assert_eq!(stored.values().next().unwrap().0, expected);
    for (i, mut sub) in subs.into_iter().enumerate() {
        assert_eq!(rebuild(&drain(&mut sub).await), stored, "subscriber {i}");
    }
}

#[tokio::test]
async fn output_the_store_refuses_after_it_was_published_fails_the_run() {
    let (store, hub, sandbox) = setup().await;
    let mut recorder = StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
        .await
        .unwrap();
    let id = recorder.message().id;
    recorder.feed(text_line("kept").as_bytes()).await.unwrap();
    hub.settle().await;
    // Something else finished the message (a kill): the next batch is published but the
    // store refuses it, and the run learns it at its next feed rather than silently.
    store
        .finish_message(id, MessageStatus::Error)
        .await
        .unwrap();
    recorder
        .feed(text_line("refused").as_bytes())
        .await
        .unwrap();
    hub.settle().await;
    let err = recorder
        .feed(text_line("after").as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, crate::OrchestratorError::OutputWrite { message_id, .. } if *message_id == id),
        "{err}"
    );
    assert_eq!(
        store.list_messages(sandbox, 0, 10).await.unwrap()[0].content,
        "kept"
    );
}
