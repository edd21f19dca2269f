//! An agent's output turned into persisted messages and published events.
//!
//! A [`StreamRecorder`] reads one agent run: it splits the output into lines, parses them
//! with courier-tools' [`StreamParser`], appends assistant text to a `streaming` message,
//! keeps every line in the message's raw stream log, finishes the message `completed` or
//! `error` on the run's [`AgentEvent::Result`], records the run's token usage, and publishes
//! every event to the sandbox's subscribers through an [`EventHub`].
//!
//! Every event carries the per-sandbox sequence number of the message it belongs to and
//! its position in that message (`content_end` for text, `raw_end` for other agent events).
//! A [`Subscription`] that joins late first replays the stored messages, then drops each
//! live event the replay already contained, so nothing is missed or seen twice.
//!
//! Write order per line (content, then raw log, then publish) is what makes that exact:
//! a replayed message either contains a line's text or not, and likewise its raw line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use courier_e2b::CommandEvent;
use courier_store::{
    Message, MessageId, MessageRole, MessageStatus, NewMessage, SandboxId, Service, Store,
};
use courier_tools::{AgentEvent, Line, LineBuffer, RunResult, StreamParser, ToolId, Usage};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;

use crate::Result;
use crate::clock::{Clock, SystemClock};
use crate::usage::{UsageMeter, service_for, token_records};

/// How many events a slow subscriber may fall behind before it resynchronises from the
/// store.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1024;

/// Page size of a replay from the store.
const REPLAY_PAGE: u32 = 200;

/// One published event of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxEvent {
    /// The sandbox.
    pub sandbox_id: SandboxId,
    /// The per-sandbox sequence number of the message the event belongs to.
    pub seq: i64,
    /// That message.
    pub message_id: MessageId,
    /// What happened.
    pub kind: EventKind,
}

/// What a [`SandboxEvent`] says.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A message began (live), or a stored message as it was when replayed.
    Message(Message),
    /// Assistant text appended to the message.
    Text {
        /// The text.
        text: String,
        /// The message content's length in bytes after the append.
        content_end: usize,
    },
    /// Any other agent event (thinking, tool use and result, usage, errors, raw lines).
    Agent {
        /// The event.
        event: AgentEvent,
        /// The message's raw log length in bytes after the line it came from.
        raw_end: usize,
    },
    /// The message finished.
    Finished {
        /// `completed` or `error`.
        status: MessageStatus,
    },
}

/// Per-sandbox broadcast channels. Cheap to clone; all clones share the channels.
#[derive(Debug, Clone)]
pub struct EventHub {
    channels: Arc<Mutex<HashMap<SandboxId, broadcast::Sender<SandboxEvent>>>>,
    capacity: usize,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(DEFAULT_CHANNEL_CAPACITY)
    }
}

impl EventHub {
    /// A hub whose channels hold `capacity` events per sandbox.
    pub fn new(capacity: usize) -> Self {
        EventHub {
            channels: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    fn sender(&self, sandbox_id: SandboxId) -> broadcast::Sender<SandboxEvent> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(sandbox_id)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }

    /// Publishes an event to the sandbox's current subscribers (none is fine).
    pub fn publish(&self, event: SandboxEvent) {
        let _ = self.sender(event.sandbox_id).send(event);
    }

    /// Ends the sandbox's channel: subscriptions end after what they have buffered.
    pub fn close(&self, sandbox_id: SandboxId) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.remove(&sandbox_id);
    }

    /// Subscribes to a sandbox: first every stored message with `seq > after_seq`, then
    /// live events, with nothing missed or repeated.
    pub async fn subscribe(
        &self,
        store: Arc<dyn Store>,
        sandbox_id: SandboxId,
        after_seq: i64,
    ) -> Result<Subscription> {
        // Listen before reading the store, so nothing falls between the two.
        let rx = self.sender(sandbox_id).subscribe();
        let mut sub = Subscription {
            rx,
            store,
            sandbox_id,
            after_seq,
            last_seq: after_seq,
            seen: BTreeMap::new(),
            pending: VecDeque::new(),
        };
        sub.replay(after_seq).await?;
        Ok(sub)
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    content_len: usize,
    /// Raw log bytes covered by what the store delivered (replay or resync): live agent
    /// events up to here are repeats.
    raw_len: usize,
    /// The raw-log end of the last live agent event delivered: later events of the same
    /// line carry the same end and are new.
    live_raw_end: Option<usize>,
    finished: bool,
}

/// A sandbox's events for one subscriber: replay from the store, then live.
pub struct Subscription {
    rx: broadcast::Receiver<SandboxEvent>,
    store: Arc<dyn Store>,
    sandbox_id: SandboxId,
    after_seq: i64,
    last_seq: i64,
    seen: BTreeMap<i64, Seen>,
    pending: VecDeque<SandboxEvent>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sandbox_id", &self.sandbox_id)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    async fn stored_after(&self, after: i64) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .store
                .list_messages(self.sandbox_id, cursor, REPLAY_PAGE)
                .await?;
            let full = page.len() == REPLAY_PAGE as usize;
            if let Some(last) = page.last() {
                cursor = last.seq;
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn replay(&mut self, after: i64) -> Result<()> {
        for message in self.stored_after(after).await? {
            self.deliver_whole(message);
        }
        Ok(())
    }

    /// Queues a stored message as one whole `Message` event and remembers how much of it
    /// the subscriber now has.
    fn deliver_whole(&mut self, message: Message) {
        self.seen.insert(
            message.seq,
            Seen {
                content_len: message.content.len(),
                raw_len: message.raw_log.len(),
                live_raw_end: None,
                finished: message.status != MessageStatus::Streaming,
            },
        );
        self.last_seq = self.last_seq.max(message.seq);
        self.pending.push_back(SandboxEvent {
            sandbox_id: self.sandbox_id,
            seq: message.seq,
            message_id: message.id,
            kind: EventKind::Message(message),
        });
    }

    /// After falling behind the channel: what the store has beyond what was delivered
    /// (new messages whole, text tails and finishes of known ones). Non-text agent events
    /// missed meanwhile are not replayed; they remain in the messages' raw logs.
    async fn resync(&mut self) -> Result<()> {
        let from = self
            .seen
            .iter()
            .find(|(_, s)| !s.finished)
            .map(|(seq, _)| seq - 1)
            .unwrap_or(self.last_seq);
        for message in self.stored_after(from).await? {
            let Some(seen) = self.seen.get_mut(&message.seq) else {
                self.deliver_whole(message);
                continue;
            };
            let (seq, id) = (message.seq, message.id);
            if message.content.len() > seen.content_len {
                let text = message
                    .content
                    .get(seen.content_len..)
                    .unwrap_or_default()
                    .to_owned();
                seen.content_len = message.content.len();
                self.pending.push_back(SandboxEvent {
                    sandbox_id: self.sandbox_id,
                    seq,
                    message_id: id,
                    kind: EventKind::Text {
                        text,
                        content_end: message.content.len(),
                    },
                });
            }
            seen.raw_len = seen.raw_len.max(message.raw_log.len());
            if message.status != MessageStatus::Streaming && !seen.finished {
                seen.finished = true;
                self.pending.push_back(SandboxEvent {
                    sandbox_id: self.sandbox_id,
                    seq,
                    message_id: id,
                    kind: EventKind::Finished {
                        status: message.status,
                    },
                });
            }
        }
        Ok(())
    }

    /// Whether a live event is new to this subscriber (and records it as seen).
    fn admit(&mut self, event: &SandboxEvent) -> bool {
        if event.seq <= self.after_seq {
            return false;
        }
        match &event.kind {
            EventKind::Message(message) => {
                if self.seen.contains_key(&event.seq) {
                    return false;
                }
                self.seen.insert(
                    event.seq,
                    Seen {
                        content_len: message.content.len(),
                        raw_len: message.raw_log.len(),
                        live_raw_end: None,
                        finished: message.status != MessageStatus::Streaming,
                    },
                );
                self.last_seq = self.last_seq.max(event.seq);
                true
            }
            EventKind::Text { content_end, .. } => match self.seen.get_mut(&event.seq) {
                Some(seen) if *content_end <= seen.content_len => false,
                Some(seen) => {
                    seen.content_len = *content_end;
                    true
                }
                None => true,
            },
            EventKind::Agent { raw_end, .. } => match self.seen.get_mut(&event.seq) {
                // One line can give several events (a tool use and its result), all
                // with the line's end: the first one admitted lets its siblings through.
                Some(seen)
                    if *raw_end < seen.raw_len
                        || (*raw_end == seen.raw_len && seen.live_raw_end != Some(*raw_end)) =>
                {
                    false
                }
                Some(seen) => {
                    seen.raw_len = *raw_end;
                    seen.live_raw_end = Some(*raw_end);
                    true
                }
                None => true,
            },
            EventKind::Finished { .. } => match self.seen.get_mut(&event.seq) {
                Some(seen) if seen.finished => false,
                Some(seen) => {
                    seen.finished = true;
                    true
                }
                None => true,
            },
        }
    }

    /// The next event; `None` once the sandbox's channel is closed and drained.
    pub async fn next(&mut self) -> Option<Result<SandboxEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match self.rx.recv().await {
                Ok(event) => {
                    if self.admit(&event) {
                        return Some(Ok(event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(e) = self.resync().await {
                        return Some(Err(e));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Stores a person's message (completed at once) and publishes it.
pub async fn record_user_message(
    store: &dyn Store,
    hub: &EventHub,
    sandbox_id: SandboxId,
    text: &str,
) -> Result<Message> {
    let message = store
        .create_message(NewMessage {
            sandbox_id,
            role: MessageRole::User,
            content: text.to_owned(),
            status: MessageStatus::Completed,
        })
        .await?;
    hub.publish(SandboxEvent {
        sandbox_id,
        seq: message.seq,
        message_id: message.id,
        kind: EventKind::Message(message.clone()),
    });
    Ok(message)
}

/// How an agent run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The assistant message, finished.
    pub message: Message,
    /// The run's verdict.
    pub result: RunResult,
    /// The run's tokens and cost, as recorded.
    pub usage: Usage,
    /// The tool's session id, when it reported one.
    pub session_id: Option<String>,
    /// The provider refused the credentials: the recorder ended the message at once
    /// (the agent may still be retrying and must be stopped).
    pub auth_failed: bool,
}

/// The message a run that the provider refused ends with: what the tool said, and which
/// key to fix where.
pub fn auth_failure_text(tool: ToolId, status: Option<u16>, message: &str) -> String {
    let spec = courier_tools::registry::spec(tool);
    let provider = spec
        .required_keys
        .first()
        .map(|k| crate::keys::provider_of(*k).to_string())
        .unwrap_or_else(|| "provider".to_owned());
    let needs = spec
        .required_keys
        .iter()
        .map(|k| k.describe())
        .collect::<Vec<_>>()
        .join(" or ");
    let status = status.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
    format!(
        "{} could not authenticate ({status}{message}). The {provider} key was refused: \
         set a valid one ({needs}) with `courier keys set {provider}` or in the project or \
         user settings, then send the message again.",
        spec.display_name
    )
}

/// Records one agent run into one assistant message (see the [module docs](self)).
pub struct StreamRecorder {
    store: Arc<dyn Store>,
    hub: EventHub,
    sandbox_id: SandboxId,
    service: Option<Service>,
    parser: StreamParser,
    lines: LineBuffer,
    message: Message,
    content_len: usize,
    raw_len: usize,
    meter: UsageMeter,
    result: Option<RunResult>,
    clock: Arc<dyn Clock>,
    tool: ToolId,
    auth_failed: bool,
}

impl std::fmt::Debug for StreamRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRecorder")
            .field("sandbox_id", &self.sandbox_id)
            .field("message_seq", &self.message.seq)
            .finish_non_exhaustive()
    }
}

impl StreamRecorder {
    /// Starts a run: creates the `streaming` assistant message and publishes it.
    pub async fn start(
        store: Arc<dyn Store>,
        hub: EventHub,
        sandbox_id: SandboxId,
        tool: ToolId,
    ) -> Result<Self> {
        let message = store
            .create_message(NewMessage {
                sandbox_id,
                role: MessageRole::Assistant,
                content: String::new(),
                status: MessageStatus::Streaming,
            })
            .await?;
        hub.publish(SandboxEvent {
            sandbox_id,
            seq: message.seq,
            message_id: message.id,
            kind: EventKind::Message(message.clone()),
        });
        Ok(StreamRecorder {
            store,
            hub,
            sandbox_id,
            service: service_for(tool),
            parser: StreamParser::new(tool),
            lines: LineBuffer::new(),
            content_len: 0,
            raw_len: 0,
            message,
            meter: UsageMeter::new(),
            result: None,
            clock: Arc::new(SystemClock),
            tool,
            auth_failed: false,
        })
    }

    /// Continues a run whose `streaming` message is already stored (after a restart):
    /// text and raw lines append to it and events carry its sequence number and positions
    /// after what is stored, so late subscribers' dedupe stays exact. Nothing is published
    /// for the message itself (subscribers replay it from the store). Feed it the output
    /// that follows the lines its raw log holds.
    pub fn resume(
        store: Arc<dyn Store>,
        hub: EventHub,
        sandbox_id: SandboxId,
        tool: ToolId,
        message: Message,
    ) -> Self {
        StreamRecorder {
            store,
            hub,
            sandbox_id,
            service: service_for(tool),
            parser: StreamParser::new(tool),
            lines: LineBuffer::new(),
            content_len: message.content.len(),
            raw_len: message.raw_log.len(),
            message,
            meter: UsageMeter::new(),
            result: None,
            clock: Arc::new(SystemClock),
            tool,
            auth_failed: false,
        }
    }

    /// Continues a session whose tool reports cumulative usage (Codex): `session_total`
    /// is the previous run's [`RunResult::session_usage`]; this run records only what
    /// grew since (see [`StreamParser::continuing`]).
    pub fn continuing(mut self, session_total: Option<Usage>) -> Self {
        self.parser = StreamParser::new(self.tool).continuing(session_total);
        self
    }

    /// Dates the run's token usage (and picks its rate) with `clock` instead of the system
    /// clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The assistant message being written.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The tool's session id, once reported.
    pub fn session_id(&self) -> Option<&str> {
        self.parser.session_id()
    }

    /// Feeds bytes of the agent's stdout, whatever the read boundaries.
    ///
    /// All complete lines of one read are stored with one content append and one raw-log
    /// append: an agent printing faster than the store takes single lines would otherwise
    /// build a backlog that every subscriber waits behind.
    pub async fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let lines = self.lines.push(bytes);
        if lines.is_empty() {
            return Ok(());
        }
        let parsed = lines
            .into_iter()
            .map(|line| {
                let (raw, events) = self.parse(line);
                (Some(raw), events)
            })
            .collect();
        self.apply(parsed).await
    }

    async fn line(&mut self, line: Line) -> Result<()> {
        let (raw, events) = self.parse(line);
        self.apply(vec![(Some(raw), events)]).await
    }

    fn parse(&mut self, line: Line) -> (String, Vec<AgentEvent>) {
        match line {
            Line::Text(text) => {
                let events = self.parser.parse_line(&text);
                (text, events)
            }
            Line::TooLong { len } => (
                format!("[line of {len} bytes dropped]"),
                vec![AgentEvent::Error {
                    message: format!("output line of {len} bytes exceeds the line limit"),
                }],
            ),
        }
    }

    /// Stores and publishes parsed lines (each its raw text, if any, and its events).
    ///
    /// Content first, then the raw log, then publishing (see the module docs), so a
    /// subscriber never sees an event the store cannot replay. Each event carries the
    /// content or raw-log length as of its own line. Lines after a verdict add nothing.
    async fn apply(&mut self, lines: Vec<(Option<String>, Vec<AgentEvent>)>) -> Result<()> {
        if self.result.is_some() {
            // The message is finished; a tool printing after its verdict adds nothing.
            return Ok(());
        }
        let mut content = String::new();
        let mut raw_log = String::new();
        let mut published = Vec::new();
        let mut result = None;
        for (raw, events) in lines {
            let first_agent_event = published.len();
            for event in events {
                self.meter.observe(&event);
                if let AgentEvent::AuthFailed { status, message } = &event {
                    // A refused key never heals: the run ends now, not after the CLI's
                    // retries.
                    self.auth_failed = true;
                    result.get_or_insert_with(|| RunResult {
                        success: false,
                        text: Some(auth_failure_text(self.tool, *status, message)),
                        cost_usd: None,
                        usage: None,
                        num_turns: None,
                        duration_ms: None,
                        session_usage: None,
                    });
                }
                match event {
                    AgentEvent::Text { text } => {
                        content.push_str(&text);
                        published.push(EventKind::Text {
                            text,
                            content_end: self.content_len + content.len(),
                        });
                    }
                    AgentEvent::Result(r) => {
                        result.get_or_insert_with(|| r.clone());
                        published.push(EventKind::Agent {
                            event: AgentEvent::Result(r),
                            raw_end: 0,
                        });
                    }
                    other => published.push(EventKind::Agent {
                        event: other,
                        raw_end: 0,
                    }),
                }
            }
            if let Some(raw) = raw {
                raw_log.push_str(&raw);
                raw_log.push('\n');
            }
            let raw_end = self.raw_len + raw_log.len();
            for kind in &mut published[first_agent_event..] {
                if let EventKind::Agent { raw_end: end, .. } = kind {
                    *end = raw_end;
                }
            }
            if result.is_some() {
                break;
            }
        }
        if !content.is_empty() {
            self.store
                .append_message_content(self.message.id, &content)
                .await?;
            self.content_len += content.len();
        }
        if !raw_log.is_empty() {
            self.store
                .append_message_raw_log(self.message.id, &raw_log)
                .await?;
            self.raw_len += raw_log.len();
        }
        for kind in published {
            self.publish(kind);
        }
        if let Some(result) = result {
            self.conclude(result).await?;
        }
        Ok(())
    }

    fn publish(&self, kind: EventKind) {
        self.hub.publish(SandboxEvent {
            sandbox_id: self.sandbox_id,
            seq: self.message.seq,
            message_id: self.message.id,
            kind,
        });
    }

    async fn conclude(&mut self, result: RunResult) -> Result<()> {
        let status = if result.success {
            MessageStatus::Completed
        } else {
            MessageStatus::Error
        };
        // A failed run with no text would show an empty bubble: show why.
        if let Some(text) = result
            .text
            .as_deref()
            .filter(|t| !result.success && self.content_len == 0 && !t.is_empty())
        {
            self.store
                .append_message_content(self.message.id, text)
                .await?;
            self.content_len += text.len();
            self.publish(EventKind::Text {
                text: text.to_owned(),
                content_end: self.content_len,
            });
        }
        self.message = self.store.finish_message(self.message.id, status).await?;
        self.publish(EventKind::Finished { status });
        if let Some(service) = self.service {
            let records = token_records(
                self.store.as_ref(),
                self.sandbox_id,
                service,
                &self.meter.total(),
                self.clock.now(),
            )
            .await?;
            if !records.is_empty() {
                self.store.record_usage(&records).await?;
            }
        }
        self.result = Some(result);
        Ok(())
    }

    /// Ends the run: parses a final unterminated line, produces the verdict if the stream
    /// had none, and returns the outcome.
    pub async fn finish(mut self, exit_code: Option<i32>) -> Result<RunOutcome> {
        if let Some(line) = self.lines.finish() {
            self.line(line).await?;
        }
        let tail = self.parser.finish(exit_code);
        self.apply(vec![(None, tail)]).await?;
        // `StreamParser::finish` always yields a verdict; this fallback only keeps the
        // type honest.
        let result = self.result.clone().unwrap_or(RunResult {
            success: false,
            text: Some("agent stream ended without a verdict".into()),
            cost_usd: None,
            usage: None,
            num_turns: None,
            duration_ms: None,
            session_usage: None,
        });
        Ok(RunOutcome {
            session_id: self.parser.session_id().map(str::to_owned),
            message: self.message,
            result,
            usage: self.meter.total(),
            auth_failed: self.auth_failed,
        })
    }

    /// Records a whole process: its stdout is the agent stream (stderr is ignored: CLIs
    /// print progress there), and its exit ends the run.
    pub async fn record<S>(mut self, mut events: S) -> Result<RunOutcome>
    where
        S: Stream<Item = courier_e2b::Result<CommandEvent>> + Unpin,
    {
        let mut exit_code = None;
        while let Some(event) = events.next().await {
            match event? {
                CommandEvent::Stdout(bytes) | CommandEvent::Pty(bytes) => self.feed(&bytes).await?,
                CommandEvent::Stderr(_) => {}
                CommandEvent::Exit(status) => {
                    exit_code = Some(status.exit_code);
                    break;
                }
            }
            if self.auth_failed {
                // Ended: the caller stops the agent, which may still be retrying.
                break;
            }
        }
        self.finish(exit_code).await
    }
}

#[cfg(test)]
mod tests {
    use courier_store::SqliteStore;

    use super::*;
    use crate::testing::{fixture, seed};

    async fn setup() -> (Arc<dyn Store>, EventHub, SandboxId) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (_, _, sandbox) = seed(store.as_ref()).await;
        (store, EventHub::default(), sandbox.id)
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
        let mut recorder =
            StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
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
        let mut recorder =
            StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
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
        let mut recorder =
            StreamRecorder::start(store.clone(), hub.clone(), sandbox, ToolId::Claude)
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
}
