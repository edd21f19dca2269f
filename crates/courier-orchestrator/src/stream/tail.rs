//! Streaming a sandbox another replica follows: its events rebuilt from the store.
//!
//! The replica that follows a sandbox stores every line before it publishes it (see the
//! [stream docs](super)); on any other replica a [`Tail`] reads what the store gained and
//! publishes the same kinds of events into the local channel, woken by the owner's
//! `NOTIFY` and polling as well. Positions (`content_end`, `raw_end`) are the store's, so
//! a subscriber's dedupe treats a tail's events exactly like the owner's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use courier_store::{Message, MessageRole, MessageStatus, SandboxId, Store};
use courier_tools::{AgentEvent, StreamParser, ToolId};
use tokio::sync::{Notify, broadcast, oneshot};

use super::event::{EventKind, SandboxEvent};
use crate::Result;

/// How often a tail reads the store without a wake-up (a lost notification costs this
/// much latency, never an event).
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// Page size of a tail's reads.
const PAGE: u32 = 200;

/// The events one line of a raw log stands for: the recorder's note of a dropped
/// over-long line is the error the recorder published, anything else is parsed.
pub fn line_events(parser: &mut StreamParser, line: &str) -> Vec<AgentEvent> {
    let dropped = line
        .strip_prefix("[line of ")
        .and_then(|l| l.strip_suffix(" bytes dropped]"))
        .and_then(|n| n.parse::<usize>().ok());
    match dropped {
        Some(len) => vec![AgentEvent::Error {
            message: format!("output line of {len} bytes exceeds the line limit"),
        }],
        None => parser.parse_line(line),
    }
}

/// What a tail has published of one message.
struct Cursor {
    content_len: usize,
    raw_len: usize,
    finished: bool,
    /// The message's tool parser, fed every raw line up to `raw_len` (agent messages).
    parser: Option<StreamParser>,
}

/// A sandbox's events rebuilt from the store, for subscribers on a replica that does not
/// follow it.
pub(crate) struct Tail {
    store: Arc<dyn Store>,
    sandbox_id: SandboxId,
    tool: ToolId,
    sender: broadcast::Sender<SandboxEvent>,
    cursors: BTreeMap<i64, Cursor>,
    last_seq: i64,
}

/// A running tail: wake it, or stop it after a last read.
pub(crate) struct TailHandle {
    pub(crate) wake: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TailHandle {
    /// Stops the tail after one last read of the store, so everything stored so far is
    /// published before whoever stopped it publishes on its own.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wake.notify_one();
        let _ = self.task.await;
    }

    /// Whether its task has ended (no subscribers left, or the sandbox ended).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Tail {
    /// A tail positioned at what the store holds now: events from here on are published.
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        sandbox_id: SandboxId,
        sender: broadcast::Sender<SandboxEvent>,
    ) -> Result<TailHandle> {
        let sandbox = store.get_sandbox(sandbox_id).await?;
        let tool = sandbox.cli_tool.parse().unwrap_or_default();
        let mut tail = Tail {
            store,
            sandbox_id,
            tool,
            sender,
            cursors: BTreeMap::new(),
            last_seq: 0,
        };
        tail.read(false).await?;
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(tail.run(wake.clone(), stop_rx));
        Ok(TailHandle {
            wake,
            stop: Some(stop_tx),
            task,
        })
    }

    async fn run(mut self, wake: Arc<Notify>, mut stop: oneshot::Receiver<()>) {
        let mut idle_polls = 0u32;
        loop {
            let stopping = tokio::select! {
                _ = &mut stop => true,
                _ = wake.notified() => false,
                _ = tokio::time::sleep(POLL) => {
                    idle_polls += 1;
                    false
                }
            };
            if let Err(e) = self.read(true).await {
                tracing::warn!(sandbox = %self.sandbox_id, error = %e, "could not read a followed sandbox's messages");
            }
            if stopping || self.sender.receiver_count() == 0 {
                return;
            }
            // Now and then: a sandbox that ended with every message finished has nothing
            // more to stream.
            if idle_polls >= 4 {
                idle_polls = 0;
                let done = self.cursors.values().all(|c| c.finished);
                if done
                    && let Ok(sandbox) = self.store.get_sandbox(self.sandbox_id).await
                    && sandbox.status.is_final()
                {
                    return;
                }
            }
        }
    }

    /// Reads what the store gained since the last read; publishes it when `publish`
    /// (the first read only takes the position).
    async fn read(&mut self, publish: bool) -> Result<()> {
        let from = self
            .cursors
            .iter()
            .find(|(_, c)| !c.finished)
            .map(|(seq, _)| seq - 1)
            .unwrap_or(self.last_seq);
        let mut after = from;
        loop {
            let page = self
                .store
                .list_messages(self.sandbox_id, after, PAGE)
                .await?;
            let full = page.len() == PAGE as usize;
            for message in page {
                after = message.seq;
                let events = self.advance(message);
                if publish {
                    for event in events {
                        // Nobody listening is fine: a later subscriber replays the store.
                        let _ = self.sender.send(event);
                    }
                }
            }
            if !full {
                break;
            }
        }
        // Finished messages before the first open one are never read again.
        if let Some((&first_open, _)) = self.cursors.iter().find(|(_, c)| !c.finished) {
            self.cursors = self.cursors.split_off(&first_open);
        } else if let Some((&last, _)) = self.cursors.iter().next_back() {
            self.cursors = self.cursors.split_off(&last);
        }
        Ok(())
    }

    /// The events that take a subscriber from the cursor of `message` to `message`.
    fn advance(&mut self, message: Message) -> Vec<SandboxEvent> {
        let (seq, message_id) = (message.seq, message.id);
        let event = |kind| SandboxEvent {
            sandbox_id: self.sandbox_id,
            seq,
            message_id,
            kind,
        };
        self.last_seq = self.last_seq.max(seq);
        let finished = message.status != MessageStatus::Streaming;
        let Some(cursor) = self.cursors.get_mut(&seq) else {
            // New to this tail: whole, like the owner's first publication of it.
            let mut parser =
                (message.role == MessageRole::Assistant).then(|| StreamParser::new(self.tool));
            if let Some(parser) = parser.as_mut() {
                for line in message.raw_log.split_inclusive('\n') {
                    line_events(parser, line.strip_suffix('\n').unwrap_or(line));
                }
            }
            let raw_len = whole_lines_len(&message.raw_log);
            self.cursors.insert(
                seq,
                Cursor {
                    content_len: message.content.len(),
                    raw_len,
                    finished,
                    parser,
                },
            );
            return vec![event(EventKind::Message(message))];
        };
        let mut out = Vec::new();
        if let Some(parser) = cursor.parser.as_mut() {
            let end = whole_lines_len(&message.raw_log);
            let mut raw_end = cursor.raw_len;
            for line in message
                .raw_log
                .get(cursor.raw_len..end)
                .unwrap_or_default()
                .split_inclusive('\n')
            {
                raw_end += line.len();
                for agent_event in line_events(parser, line.strip_suffix('\n').unwrap_or(line)) {
                    match agent_event {
                        AgentEvent::Text { text } => {
                            // The content holds this text (stored before the raw line).
                            let start = cursor.content_len;
                            let stop = (start + text.len()).min(message.content.len());
                            if stop > start {
                                out.push(event(EventKind::Text {
                                    text: message
                                        .content
                                        .get(start..stop)
                                        .unwrap_or_default()
                                        .to_owned(),
                                    content_end: stop,
                                }));
                                cursor.content_len = stop;
                            }
                        }
                        other => out.push(event(EventKind::Agent {
                            event: other,
                            raw_end,
                        })),
                    }
                }
            }
            cursor.raw_len = raw_end;
        }
        // Content without a raw line behind it: a person's message, or the reason a failed
        // run ended, stored as it finished. Text of a line whose raw line is not stored yet
        // waits for it.
        let ahead = message.content.len() > cursor.content_len;
        if ahead && (finished || cursor.parser.is_none()) {
            out.push(event(EventKind::Text {
                text: message
                    .content
                    .get(cursor.content_len..)
                    .unwrap_or_default()
                    .to_owned(),
                content_end: message.content.len(),
            }));
            cursor.content_len = message.content.len();
        }
        if finished && !cursor.finished {
            cursor.finished = true;
            out.push(event(EventKind::Finished {
                status: message.status,
            }));
        }
        out
    }
}

/// The length of the whole lines at the start of `log` (a line being appended is left
/// for the next read).
fn whole_lines_len(log: &str) -> usize {
    log.rfind('\n').map_or(0, |i| i + 1)
}
