//! Recording: an agent run's output into one assistant message, and a person's message,
//! each stored and published (see the [stream docs](super)).

use std::sync::Arc;

use courier_e2b::CommandEvent;
use courier_store::{
    Message, MessageAppend, MessageRole, MessageStatus, NewMessage, SandboxId, Service, Store,
};
use courier_tools::{AgentEvent, Line, LineBuffer, RunResult, StreamParser, ToolId, Usage};
use futures::{Stream, StreamExt};

use super::event::{EventKind, SandboxEvent};
use super::hub::EventHub;
use super::writer::{StoreWriter, WriteState};
use crate::Result;
use crate::clock::{Clock, SystemClock};
use crate::usage::{UsageMeter, service_for, token_records};

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

/// Records one agent run into one assistant message (see the [stream docs](super)).
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
    writer: StoreWriter,
    /// Shared with the writer: failed writes, and (dropped) that this run is gone.
    written: Arc<WriteState>,
    /// The ticket of this run's last queued batch.
    last_ticket: u64,
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
            writer: hub.writer(&store),
            written: Arc::default(),
            last_ticket: 0,
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

    /// When `metered` (the run's tokens are counted at Courier's gateway, from the
    /// provider's own answers), the tokens the CLI reports are shown but not billed, so
    /// nothing is billed twice.
    pub fn metered_elsewhere(mut self, metered: bool) -> Self {
        if metered {
            self.service = None;
        }
        self
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
            writer: hub.writer(&store),
            written: Arc::default(),
            last_ticket: 0,
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

    /// Queues parsed lines (each its raw text, if any, and its events) for the store and
    /// publishes their events at once.
    ///
    /// Content and raw log go to the store in one append, behind the publish (see the
    /// module docs): a subscription that replays from the store first waits for what was
    /// queued. Each event carries the content or raw-log length as of its own line. Lines
    /// after a verdict add nothing.
    async fn apply(&mut self, lines: Vec<(Option<String>, Vec<AgentEvent>)>) -> Result<()> {
        if self.result.is_some() {
            // The message is finished; a tool printing after its verdict adds nothing.
            return Ok(());
        }
        self.written.check(self.message.id)?;
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
        // Text and raw lines in one append: a process dying in between would otherwise
        // leave text whose raw line a re-attach does not count, and repeat it.
        self.content_len += content.len();
        self.raw_len += raw_log.len();
        if !content.is_empty() || !raw_log.is_empty() {
            self.last_ticket = self
                .writer
                .queue(
                    self.sandbox_id,
                    MessageAppend {
                        id: self.message.id,
                        content,
                        raw_log,
                    },
                    &self.written,
                    self.hub.wake_sender(),
                )
                .await?;
        }
        for kind in published {
            self.hub.publish_queued(SandboxEvent {
                sandbox_id: self.sandbox_id,
                seq: self.message.seq,
                message_id: self.message.id,
                kind,
            });
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
        // The finish folds the stored chunks: every queued batch first, so `finished`
        // (and the SSE id that marks the message complete) implies all of it is stored.
        self.writer.settle_to(self.last_ticket).await;
        self.written.check(self.message.id)?;
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
