//! An agent's output turned into persisted messages and published events.
//!
//! A [`StreamRecorder`] reads one agent run: it splits the output into lines, parses them
//! with courier-tools' [`StreamParser`](courier_tools::StreamParser), appends assistant text to a `streaming` message,
//! keeps every line in the message's raw stream log, finishes the message `completed` or
//! `error` on the run's [`AgentEvent::Result`](courier_tools::AgentEvent::Result), records the run's token usage, and publishes
//! every event to the sandbox's subscribers through an [`EventHub`].
//!
//! Every event carries the per-sandbox sequence number of the message it belongs to and
//! its position in that message (`content_end` for text, `raw_end` for other agent events).
//! A [`Subscription`] that joins late first replays the stored messages, then drops each
//! live event the replay already contained, so nothing is missed or seen twice.
//!
//! Write order per batch of lines (content and raw log in one write, then publish) is what
//! makes that exact:
//! a replayed message either contains a line's text or not, and likewise its raw line.
//!
//! Events are defined in `event`, published and subscribed to in `hub`, and written by the
//! `recorder`.

mod event;
mod hub;
mod recorder;
mod tail;

#[cfg(test)]
mod tests;

pub use event::{EventKind, SandboxEvent};
pub use hub::{DEFAULT_CHANNEL_CAPACITY, EventHub, Subscription};
pub use recorder::{RunOutcome, StreamRecorder, auth_failure_text, record_user_message};
pub use tail::line_events;
