//! What the stream publishes: one event of a sandbox, placed in its message.

use courier_store::{Message, MessageId, MessageStatus, SandboxId};
use courier_tools::AgentEvent;

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
