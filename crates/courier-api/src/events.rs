//! `GET /v1/sandboxes/{id}/events`: a sandbox's events as server-sent events.
//!
//! Event names: `message` (a whole message: upsert it by `seq`), `text` (assistant text
//! appended to message `seq`), `agent` (any other agent event), `finished` (message `seq`
//! ended), `end` (the sandbox is final: no more events) and `shutdown` (the server is
//! stopping: reconnect).
//!
//! The SSE `id:` is a sequence number `n` meaning "every message up to `n` was delivered
//! complete". Reconnecting with `Last-Event-ID: n` (browsers do it by themselves) replays
//! every message after `n` as a `message` snapshot, then live events: nothing is missed,
//! and a message that was cut off mid-stream comes back whole as one snapshot that
//! replaces the partial copy rather than repeating its pieces.
//!
//! A snapshot of an agent's message carries its events so far (`Message.events`), parsed
//! here from its raw log by its tool's parser in the `text`/`agent` shape of the live
//! stream: a client renders a replayed message exactly as one it watched live.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use courier_orchestrator::stream::{EventKind, SandboxEvent, line_events};
use courier_store::{MessageRole, MessageStatus, SandboxId};
use courier_tools::{AgentEvent as ToolEvent, StreamParser, ToolId};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::views::{
    AgentEvent, EndEvent, FinishedEvent, Message, MessageEvent, ShutdownEvent, StreamError,
    StreamedEvent, TextEvent,
};
use crate::{Api, ApiError, Result};

/// How often an open stream checks whether its sandbox has ended.
const STATUS_POLL: Duration = Duration::from_secs(2);
/// How long a stream waits for the last events once its sandbox has ended.
const DRAIN: Duration = Duration::from_secs(2);

/// Query of the events route: `after` for clients that cannot set `Last-Event-ID`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
}

/// The resume point delivered so far: every message up to it is complete.
#[derive(Debug)]
struct Watermark {
    max_seen: i64,
    open: BTreeSet<i64>,
}

impl Watermark {
    fn observe(&mut self, seq: i64, complete: bool) -> i64 {
        self.max_seen = self.max_seen.max(seq);
        if complete {
            self.open.remove(&seq);
        } else {
            self.open.insert(seq);
        }
        self.open.first().map(|s| s - 1).unwrap_or(self.max_seen)
    }
}

/// The `agent` view of one agent event.
fn agent_view(
    seq: i64,
    message_id: courier_store::MessageId,
    event: &ToolEvent,
    raw_end: usize,
) -> AgentEvent {
    AgentEvent {
        seq,
        message_id,
        event: serde_json::to_value(event).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "agent event not serialisable; sent as null");
            serde_json::Value::Null
        }),
        raw_end,
    }
}

/// A stored agent message's events as the live stream sent them: its raw log parsed by
/// `tool`'s parser, each event with the content or raw-log end of its line. Content the
/// raw log does not hold (a failed run's reason, stored after its last line) follows as
/// one more `text`; a content that does not start with the log's text (a cut log) comes
/// first, whole, and the log's other events after it.
pub(crate) fn replayed(m: &courier_store::Message, tool: Option<ToolId>) -> Vec<StreamedEvent> {
    let (seq, message_id) = (m.seq, m.id);
    let text = |text: String, content_end: usize| {
        StreamedEvent::Text(TextEvent {
            seq,
            message_id,
            text,
            content_end,
        })
    };
    let mut parsed = Vec::new();
    if let Some(tool) = tool {
        // Whole lines only: `finish` would invent an end for a run still going.
        let mut parser = StreamParser::new(tool);
        let mut raw_end = 0;
        for line in m.raw_log.split_inclusive('\n') {
            raw_end += line.len();
            let line = line.strip_suffix('\n').unwrap_or(line);
            parsed.extend(
                line_events(&mut parser, line)
                    .into_iter()
                    .map(|e| (e, raw_end)),
            );
        }
    }
    let logged: String = parsed
        .iter()
        .filter_map(|(e, _)| match e {
            ToolEvent::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let interleave = m.content.starts_with(&logged);
    let mut out = Vec::with_capacity(parsed.len() + 1);
    let mut content_end = 0;
    if !interleave && !m.content.is_empty() {
        content_end = m.content.len();
        out.push(text(m.content.clone(), content_end));
    }
    for (event, raw_end) in parsed {
        match event {
            ToolEvent::Text { text: t } if interleave => {
                content_end += t.len();
                out.push(text(t, content_end));
            }
            ToolEvent::Text { .. } => {}
            other => out.push(StreamedEvent::Agent(agent_view(
                seq, message_id, &other, raw_end,
            ))),
        }
    }
    if let Some(rest) = m.content.get(content_end..).filter(|r| !r.is_empty()) {
        out.push(text(rest.to_owned(), m.content.len()));
    }
    out
}

/// The view of a stored message with its events (an agent's) replayed.
pub(crate) fn with_events(m: courier_store::Message, tool: Option<ToolId>) -> Message {
    let events = (m.role != MessageRole::User).then(|| replayed(&m, tool));
    Message { events, ..m.into() }
}

/// An event's name, its `data` and whether it completes its message; `tool` parses a
/// snapshot's raw log.
fn event_data(event: &SandboxEvent, tool: Option<ToolId>) -> (&'static str, String, bool) {
    let seq = event.seq;
    let message_id = event.message_id;
    match &event.kind {
        EventKind::Message(m) => (
            "message",
            data(&MessageEvent {
                seq,
                message: with_events(m.clone(), tool),
            }),
            m.status != MessageStatus::Streaming,
        ),
        EventKind::Text { text, content_end } => (
            "text",
            data(&TextEvent {
                seq,
                message_id,
                text: text.clone(),
                content_end: *content_end,
            }),
            false,
        ),
        EventKind::Agent { event, raw_end } => (
            "agent",
            data(&agent_view(seq, message_id, event, *raw_end)),
            false,
        ),
        EventKind::Finished { status } => (
            "finished",
            data(&FinishedEvent {
                seq,
                message_id,
                status: *status,
            }),
            true,
        ),
    }
}

/// An event's `data` line: the view as JSON.
fn data(view: &impl Serialize) -> String {
    serde_json::to_string(view).unwrap_or_else(|e| {
        // Views are plain structs of strings, numbers and maps with string keys.
        tracing::warn!(error = %e, "event view not serialisable");
        "null".to_owned()
    })
}

type Tx = mpsc::Sender<std::result::Result<Event, Infallible>>;

struct Feed {
    api: Api,
    tx: Tx,
    mark: Watermark,
    /// The sandbox's tool, whose parser reads snapshots' raw logs.
    tool: Option<ToolId>,
}

impl Feed {
    /// Sends one event; `false` once the client is gone.
    async fn send(&mut self, event: &SandboxEvent) -> bool {
        let (name, data, complete) = event_data(event, self.tool);
        let id = self.mark.observe(event.seq, complete);
        let sse = Event::default().event(name).id(id.to_string()).data(data);
        self.api
            .inner
            .metrics
            .sse_events
            .fetch_add(1, Ordering::Relaxed);
        self.tx.send(Ok(sse)).await.is_ok()
    }

    async fn control(&self, name: &str, view: &impl Serialize) {
        let event = Event::default().event(name).data(data(view));
        if self.tx.send(Ok(event)).await.is_err() {
            // The client left: there is no one to tell, and the stream ends anyway.
            tracing::debug!(event = name, "event stream closed before a control event");
        }
    }

    async fn error(&self, message: String) {
        self.control("error", &StreamError { message }).await;
    }

    async fn shutdown(&self) {
        self.control("shutdown", &ShutdownEvent {}).await;
    }

    async fn end(&self, id: SandboxId) {
        let status = match self.api.inner.store.get_sandbox(id).await {
            Ok(s) => Some(s.status),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "ending event stream without status");
                None
            }
        };
        self.control("end", &EndEvent { status }).await;
    }

    /// A final sandbox: its stored messages after `after`, then `end`.
    async fn replay_final(&mut self, id: SandboxId, after: i64) {
        let mut cursor = after;
        loop {
            let page = match self.api.inner.store.list_messages(id, cursor, 200).await {
                Ok(page) => page,
                Err(e) => {
                    self.error(e.to_string()).await;
                    return;
                }
            };
            let full = page.len() == 200;
            for m in page {
                cursor = m.seq;
                let event = SandboxEvent {
                    sandbox_id: id,
                    seq: m.seq,
                    message_id: m.id,
                    kind: EventKind::Message(m),
                };
                if !self.send(&event).await {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        self.end(id).await;
    }

    /// A live sandbox: the hub's replay-then-live subscription until the sandbox ends,
    /// the client leaves or the server shuts down.
    async fn follow(&mut self, id: SandboxId, after: i64) {
        let hub = self.api.inner.orchestrator.hub().clone();
        let mut sub = match hub.subscribe(self.api.inner.store.clone(), id, after).await {
            Ok(sub) => sub,
            Err(e) => {
                self.error(e.to_string()).await;
                return;
            }
        };
        let mut shutdown = self.api.inner.shutdown.subscribe();
        let mut poll = tokio::time::interval(STATUS_POLL);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if *shutdown.borrow_and_update() {
                self.shutdown().await;
                return;
            }
            // One `next()` future lives until it yields, so nothing it has read is lost
            // to cancellation.
            let next = sub.next();
            tokio::pin!(next);
            let item = loop {
                let drain = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    item = &mut next => break item,
                    _ = self.tx.closed() => return,
                    _ = shutdown.changed() => {
                        self.shutdown().await;
                        return;
                    }
                    _ = drain => {
                        self.end(id).await;
                        return;
                    }
                    _ = poll.tick(), if deadline.is_none() => {
                        if let Ok(s) = self.api.inner.store.get_sandbox(id).await
                            && s.status.is_final()
                        {
                            deadline = Some(tokio::time::Instant::now() + DRAIN);
                        }
                    }
                }
            };
            match item {
                Some(Ok(event)) => {
                    if !self.send(&event).await {
                        return;
                    }
                }
                Some(Err(e)) => {
                    self.error(e.to_string()).await;
                    return;
                }
                None => {
                    self.end(id).await;
                    return;
                }
            }
        }
    }
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>().map(|n| Some(n.max(0))).map_err(|_| {
        ApiError::invalid(
            "Last-Event-ID",
            "must be a sequence number sent as an event id",
        )
    })
}

/// The SSE handler.
pub(crate) async fn stream(
    State(api): State<Api>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let id = Uuid::parse_str(&raw)
        .map(SandboxId::from_uuid)
        .map_err(|_| ApiError::NotFound {
            entity: "sandbox",
            id: raw.clone(),
        })?;
    let sandbox = api.owned_sandbox(caller, id).await?;
    let after = last_event_id(&headers)?.or(q.after).unwrap_or(0).max(0);
    let (tx, mut rx) = mpsc::channel(64);
    let keep_alive = api.inner.config.keep_alive;
    let metrics_api = api.clone();
    tokio::spawn(async move {
        metrics_api
            .inner
            .metrics
            .sse_streams
            .fetch_add(1, Ordering::Relaxed);
        let mut feed = Feed {
            api: metrics_api.clone(),
            tx,
            mark: Watermark {
                max_seen: after,
                open: BTreeSet::new(),
            },
            tool: sandbox.cli_tool.parse().ok(),
        };
        if sandbox.status.is_final() {
            feed.replay_final(id, after).await;
        } else {
            feed.follow(id, after).await;
        }
        metrics_api
            .inner
            .metrics
            .sse_streams
            .fetch_sub(1, Ordering::Relaxed);
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use courier_store::{MessageId, SandboxId};

    use super::*;

    fn stored(content: &str, raw_log: &str) -> courier_store::Message {
        courier_store::Message {
            id: MessageId::from_uuid(Uuid::nil()),
            sandbox_id: SandboxId::from_uuid(Uuid::nil()),
            seq: 2,
            role: MessageRole::Assistant,
            content: content.to_owned(),
            raw_log: raw_log.to_owned(),
            status: MessageStatus::Completed,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    /// `(event name, text or agent event type, content_end or raw_end)` of each event.
    fn shape(events: &[StreamedEvent]) -> Vec<(&'static str, String, usize)> {
        events
            .iter()
            .map(|e| match e {
                StreamedEvent::Text(t) => ("text", t.text.clone(), t.content_end),
                StreamedEvent::Agent(a) => (
                    "agent",
                    a.event["type"].as_str().unwrap_or_default().to_owned(),
                    a.raw_end,
                ),
            })
            .collect()
    }

    #[test]
    fn a_stored_run_replays_as_the_stream_sent_it() {
        let tool_use = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"t1","name":"Edit","input":{"file_path":"a.rs"}}]}}"#;
        let result = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}"#;
        let text = r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"Fixed."}]}}"#;
        let raw = format!("{tool_use}\n{result}\n{text}\n[line of 9000000 bytes dropped]\n");
        let a = tool_use.len() + 1;
        let b = a + result.len() + 1;
        let events = replayed(&stored("Fixed.", &raw), Some(ToolId::Claude));
        assert_eq!(
            shape(&events),
            [
                ("agent", "tool_use".to_owned(), a),
                ("agent", "tool_result".to_owned(), b),
                ("text", "Fixed.".to_owned(), 6),
                ("agent", "error".to_owned(), raw.len()),
            ]
        );
        // A failed run's reason, stored after the log's last line, comes last.
        let failed = replayed(&stored("Fixed. It broke.", &raw), Some(ToolId::Claude));
        assert_eq!(
            shape(&failed).last().unwrap(),
            &("text", " It broke.".to_owned(), 16)
        );
        // A content the log does not tell comes first, whole, and only once.
        let cut = replayed(&stored("Other.", &raw), Some(ToolId::Claude));
        assert_eq!(shape(&cut)[0], ("text", "Other.".to_owned(), 6));
        assert_eq!(shape(&cut).iter().filter(|e| e.0 == "text").count(), 1);
        // A sandbox whose tool is unknown: its content as text.
        let unknown = replayed(&stored("Fixed.", &raw), None);
        assert_eq!(shape(&unknown), [("text", "Fixed.".to_owned(), 6)]);
    }

    #[test]
    fn watermark_stays_below_any_open_message() {
        let mut m = Watermark {
            max_seen: 0,
            open: BTreeSet::new(),
        };
        assert_eq!(m.observe(1, true), 1);
        assert_eq!(m.observe(2, false), 1);
        // A queued user message arrives while message 2 still streams.
        assert_eq!(m.observe(3, true), 1);
        assert_eq!(m.observe(2, true), 3);
    }
}
