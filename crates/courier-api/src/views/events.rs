//! The `data` of each server-sent event of `GET /v1/sandboxes/{id}/events`; the event's
//! name says which of these it is.

use courier_store::{MessageId, MessageStatus, SandboxStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Message;

/// `message`: a whole message; upsert it by `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageEvent {
    /// The message's sequence number.
    pub seq: i64,
    /// The message as it is now.
    pub message: Message,
}

/// `text`: assistant text appended to message `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TextEvent {
    /// The message's sequence number.
    pub seq: i64,
    /// The message's id.
    #[schema(value_type = uuid::Uuid)]
    pub message_id: MessageId,
    /// The text appended.
    pub text: String,
    /// The content's length in bytes after the append (to skip what was seen).
    pub content_end: usize,
}

/// `agent`: any other agent event (thinking, tool use, usage, errors, raw lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentEvent {
    /// The message's sequence number.
    pub seq: i64,
    /// The message's id.
    #[schema(value_type = uuid::Uuid)]
    pub message_id: MessageId,
    /// The event, tagged by `type`.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// The raw log's length in bytes after the line it came from.
    pub raw_end: usize,
}

/// One event of a message in the event stream's own shape: the SSE event's name
/// (`event`) and its `data`. A stored message replays as these (`Message.events`: in the
/// stream's `message` snapshots and with `GET …/messages?events=true`), parsed by the
/// server from the message's raw log with its tool's parser, so a client renders the
/// replay and the live stream alike and never parses raw logs itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum StreamedEvent {
    /// `text`: assistant text.
    Text(TextEvent),
    /// `agent`: any other agent event.
    Agent(AgentEvent),
}

/// `finished`: message `seq` ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FinishedEvent {
    /// The message's sequence number.
    pub seq: i64,
    /// The message's id.
    #[schema(value_type = uuid::Uuid)]
    pub message_id: MessageId,
    /// `completed` or `error`.
    #[schema(schema_with = super::message_status)]
    pub status: MessageStatus,
}

/// `end`: the sandbox is final and no event follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndEvent {
    /// Its final status (`null` if it could not be read).
    #[schema(schema_with = super::sandbox_status_or_null)]
    pub status: Option<SandboxStatus>,
}

/// `error`: the stream failed and ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamError {
    /// What failed.
    pub message: String,
}

/// `shutdown`: the server is stopping; reconnect (with `Last-Event-ID`) elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShutdownEvent {}
