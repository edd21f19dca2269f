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
//! Order and durability: the recorder reserves a batch's positions from its own counters,
//! queues the batch (content and raw log as one append) to the store's write-behind
//! `writer` and publishes to this replica's subscribers at once; the writer stores what is
//! queued in group commits and then wakes other replicas. So:
//! - per sandbox, events reach subscribers in position order, none missed or repeated;
//! - whatever replays from the store (a subscribe, a lagging subscription's resync, a
//!   re-attach, a message's finish) first waits until everything published before it is
//!   stored, so a replayed message either contains a line's text or not, and likewise its
//!   raw line, exactly as live events said;
//! - `Finished` is published only after every batch of the message is stored, so an SSE
//!   `id` that marks a message complete names stored output;
//! - a crash loses at most whole queued batches (never text without its raw line), which
//!   a re-attach feeds again from the stored raw log.
//!
//! Events are defined in `event`, published and subscribed to in `hub`, produced by the
//! `recorder` and stored by the `writer`.

mod event;
mod hub;
mod recorder;
mod tail;
mod writer;

#[cfg(test)]
mod tests;

pub use event::{EventKind, SandboxEvent};
pub use hub::{DEFAULT_CHANNEL_CAPACITY, EventHub, Subscription};
pub use recorder::{RunOutcome, StreamRecorder, auth_failure_text, record_user_message};
pub use tail::line_events;
