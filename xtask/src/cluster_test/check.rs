//! The acceptance checks of `cargo xtask cluster-test`, as pure functions over what the
//! harness recorded: one SSE client's events, the stored messages, a sandbox's final row
//! and its provider's logs. Each returns the problems it found, one sentence each, so the
//! harness can name the sandbox and go on checking the others.

use std::collections::BTreeMap;

use serde_json::Value;

use super::http::SseEvent;

/// A message as `GET /v1/sandboxes/{id}/messages` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its sequence number in the sandbox.
    pub seq: i64,
    /// `user` or `assistant` (or `system`).
    pub role: String,
    /// Its whole text.
    pub content: String,
    /// `streaming`, `completed` or `error`.
    pub status: String,
}

impl StoredMessage {
    /// Reads one message of the messages route's `items`.
    pub fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            seq: value.get("seq")?.as_i64()?,
            role: value.get("role")?.as_str()?.to_owned(),
            content: value.get("content")?.as_str()?.to_owned(),
            status: value.get("status")?.as_str()?.to_owned(),
        })
    }
}

/// What one client rebuilt of one message.
#[derive(Debug, Default)]
struct Rebuilt {
    content: String,
    /// `content_end` of the last text received (the content's length after a snapshot).
    end: usize,
    /// The last `raw_end` of an `agent` event.
    raw_end: usize,
    /// The status a `finished` event or a final snapshot gave.
    status: Option<String>,
    finished_events: usize,
}

fn field<'a>(data: &'a Value, key: &str) -> Option<&'a Value> {
    data.get(key)
}

/// Checks one client's event stream against the stored messages: every event exactly
/// once and in order. Problems found:
/// - `id:` going down;
/// - a second snapshot of a message, or a snapshot after its message's live events
///   (a duplicate delivery);
/// - `text` before its message's snapshot, or whose `content_end` does not continue the
///   text exactly (a gap when it skips ahead, a duplicate when it repeats);
/// - `agent` events whose `raw_end` goes back;
/// - `finished` twice, or events of a message after its `finished`;
/// - no `end`, events after `end`, an `error` or `shutdown` event;
/// - a rebuilt message that differs from the stored one, a stored message never seen,
///   a message seen that the store lacks.
pub fn check_stream(events: &[SseEvent], stored: &[StoredMessage]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut messages: BTreeMap<i64, Rebuilt> = BTreeMap::new();
    let mut last_id: Option<i64> = None;
    let mut ended = false;
    for (i, event) in events.iter().enumerate() {
        let at = format!("event {i} ({})", event.name);
        if ended {
            problems.push(format!("{at} arrived after `end`"));
        }
        if let Some(id) = &event.id {
            match id.parse::<i64>() {
                Ok(id) => {
                    if let Some(last) = last_id.filter(|last| id < *last) {
                        problems.push(format!(
                            "{at}: id {id} after id {last} (ids must not go down)"
                        ));
                    }
                    last_id = Some(id);
                }
                Err(_) => problems.push(format!("{at}: id {id:?} is not a sequence number")),
            }
        }
        let data: Value = match serde_json::from_str(&event.data) {
            Ok(data) => data,
            Err(e) => {
                problems.push(format!("{at}: data is not JSON ({e})"));
                continue;
            }
        };
        let seq = field(&data, "seq").and_then(Value::as_i64);
        match (event.name.as_str(), seq) {
            ("message", Some(seq)) => {
                let message = field(&data, "message");
                let content = message
                    .and_then(|m| m.get("content"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let status = message
                    .and_then(|m| m.get("status"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if messages.contains_key(&seq) {
                    problems.push(format!(
                        "{at}: message {seq} delivered again as a snapshot (a duplicate)"
                    ));
                }
                let rebuilt = messages.entry(seq).or_default();
                rebuilt.content = content.to_owned();
                rebuilt.end = content.len();
                if status != "streaming" {
                    rebuilt.status = Some(status.to_owned());
                }
            }
            ("text", Some(seq)) => {
                let text = field(&data, "text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let end = field(&data, "content_end")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize;
                let Some(rebuilt) = messages.get_mut(&seq) else {
                    problems.push(format!(
                        "{at}: text of message {seq} before its snapshot (the message was missed)"
                    ));
                    continue;
                };
                if rebuilt.status.is_some() {
                    problems.push(format!("{at}: text of message {seq} after it finished"));
                }
                let want = rebuilt.end + text.len();
                if end <= rebuilt.end {
                    problems.push(format!(
                        "{at}: text of message {seq} ending at {end} repeats what ended at {} (a duplicate)",
                        rebuilt.end
                    ));
                    continue;
                }
                if end != want {
                    problems.push(format!(
                        "{at}: text of message {seq} ends at {end}, expected {want}: {} bytes {} (not contiguous)",
                        end.abs_diff(want),
                        if end > want { "missing before it (a gap)" } else { "overlap" }
                    ));
                }
                rebuilt.content.push_str(text);
                rebuilt.end = end;
            }
            ("agent", Some(seq)) => {
                let raw_end = field(&data, "raw_end").and_then(Value::as_u64).unwrap_or(0) as usize;
                match messages.get_mut(&seq) {
                    None => problems.push(format!(
                        "{at}: agent event of message {seq} before its snapshot"
                    )),
                    Some(rebuilt) => {
                        if raw_end < rebuilt.raw_end {
                            problems.push(format!(
                                "{at}: agent event of message {seq} at raw_end {raw_end} after {} (out of order)",
                                rebuilt.raw_end
                            ));
                        }
                        rebuilt.raw_end = rebuilt.raw_end.max(raw_end);
                    }
                }
            }
            ("finished", Some(seq)) => {
                let status = field(&data, "status")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match messages.get_mut(&seq) {
                    None => {
                        problems.push(format!("{at}: message {seq} finished before its snapshot"))
                    }
                    Some(rebuilt) => {
                        rebuilt.finished_events += 1;
                        if rebuilt.finished_events > 1 || rebuilt.status.is_some() {
                            problems
                                .push(format!("{at}: message {seq} finished twice (a duplicate)"));
                        }
                        rebuilt.status = Some(status.to_owned());
                    }
                }
            }
            ("end", _) => ended = true,
            ("error" | "shutdown", _) => {
                problems.push(format!("{at}: the stream failed: {}", event.data))
            }
            (name, None) if ["message", "text", "agent", "finished"].contains(&name) => {
                problems.push(format!("{at}: no seq in its data"));
            }
            _ => {}
        }
    }
    if !ended {
        problems.push("the stream ended without an `end` event".to_owned());
    }
    for message in stored {
        let Some(rebuilt) = messages.get(&message.seq) else {
            problems.push(format!(
                "message {} ({}) was never delivered (a gap)",
                message.seq, message.role
            ));
            continue;
        };
        if rebuilt.content != message.content {
            problems.push(format!(
                "message {}: the client rebuilt {} bytes, the store has {} ({})",
                message.seq,
                rebuilt.content.len(),
                message.content.len(),
                first_difference(&rebuilt.content, &message.content)
            ));
        }
        if message.status != "streaming"
            && rebuilt.status.as_deref() != Some(message.status.as_str())
        {
            problems.push(format!(
                "message {}: stored {}, the client saw it {}",
                message.seq,
                message.status,
                rebuilt
                    .status
                    .as_deref()
                    .map_or("never finish".to_owned(), |s| format!("finish {s}"))
            ));
        }
    }
    for seq in messages.keys() {
        if !stored.iter().any(|m| m.seq == *seq) {
            problems.push(format!("message {seq} was delivered but is not stored"));
        }
    }
    problems
}

/// Where two texts first differ, for a message a person can act on.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let line = want[..floor_boundary(want, at)].matches('\n').count() + 1;
    format!("first difference at byte {at}, line {line} of the stored text")
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The run completed: the stored messages hold the prompt and one assistant message,
/// `completed`, whose text is `expected` (`exact`) or starts with it (an agent that
/// answers after what it streamed).
pub fn check_run(stored: &[StoredMessage], expected: &str, exact: bool) -> Vec<String> {
    let answers: Vec<&StoredMessage> = stored.iter().filter(|m| m.role == "assistant").collect();
    match answers.as_slice() {
        [] => vec!["the run has no assistant message".to_owned()],
        [answer] => {
            let mut problems = Vec::new();
            if answer.status != "completed" {
                problems.push(format!(
                    "the run did not complete: its message {} is {}",
                    answer.seq, answer.status
                ));
            }
            let matches = if exact {
                answer.content == expected
            } else {
                answer.content.starts_with(expected)
            };
            if !matches {
                problems.push(format!(
                    "the run's text is not what the task printed: {} bytes stored, {} expected ({})",
                    answer.content.len(),
                    expected.len(),
                    first_difference(&answer.content, expected)
                ));
            }
            problems
        }
        many => vec![format!(
            "the run has {} assistant messages, expected one",
            many.len()
        )],
    }
}

/// The sandbox timed out once and nothing else ended it: its row is `killed` with the
/// timeout's reason, and its provider's logs (`GET /v2/sandboxes/{id}/logs` entries)
/// record exactly one kill.
pub fn check_ending(sandbox: &Value, provider_logs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let status = sandbox.get("status").and_then(Value::as_str).unwrap_or("?");
    let reason = sandbox
        .get("error_message")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status != "killed" {
        problems.push(format!(
            "ended {status}, expected killed by its timeout{}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            }
        ));
    } else if !reason.starts_with("timed out after") {
        problems.push(format!(
            "killed, but not by its timeout (reason {reason:?})"
        ));
    }
    let count = |event: &str| {
        provider_logs
            .iter()
            .filter(|e| e.pointer("/fields/event").and_then(Value::as_str) == Some(event))
            .count()
    };
    match count("killed") {
        1 => {}
        0 => problems.push("its provider sandbox was never killed".to_owned()),
        n => problems.push(format!("its provider sandbox was killed {n} times")),
    }
    if count("timeout") > 1 {
        problems.push(format!(
            "its provider's timeout fired {} times",
            count("timeout")
        ));
    }
    problems
}

#[cfg(test)]
mod tests;
