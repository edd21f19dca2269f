//! Following a sandbox's server-sent events and printing its output once.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use courier_api::views::{
    AgentEvent, FinishedEvent, Message, MessageEvent, StreamError, StreamedEvent, TextEvent,
};
use courier_store::{MessageRole, MessageStatus};
use courier_tools::AgentEvent as ToolEvent;
use futures::StreamExt;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::transcript::agent_line;
use super::{Http, Result, fail};

/// The `data` of event `name` as its view; `None` for other events or malformed data.
fn decode<T: DeserializeOwned>(data: &Value) -> Option<T> {
    serde_json::from_value(data.clone()).ok()
}

/// Whether `name`/`data` is the end of the agent's first answer: the `finished` of a
/// message after the prompt, or a whole assistant message that no longer streams.
pub(super) fn first_answer_done(name: &str, data: &Value) -> bool {
    match name {
        "finished" => decode::<FinishedEvent>(data).is_some_and(|e| e.seq >= 2),
        "message" => decode::<MessageEvent>(data).is_some_and(|e| {
            e.message.role == MessageRole::Assistant && e.message.status != MessageStatus::Streaming
        }),
        _ => false,
    }
}

/// Tells from a sandbox's events when the agent has answered every prompt: a prompt
/// (a user message) opens a wait, the end of an agent message after it closes it.
#[derive(Debug, Default)]
pub(super) struct Answered {
    /// The newest prompt's sequence number.
    prompt: Cell<i64>,
}

impl Answered {
    /// Waits for the answer to prompt `seq` (and to any prompt after it).
    pub(super) fn new(prompt: i64) -> Self {
        Answered {
            prompt: Cell::new(prompt),
        }
    }

    /// Whether, after `name`/`data`, every prompt seen has its answer complete.
    pub(super) fn after(&self, name: &str, data: &Value) -> bool {
        let ended = match name {
            // Only the agent's messages stream, so only they finish.
            "finished" => decode::<FinishedEvent>(data).map(|e| e.seq),
            "message" => decode::<MessageEvent>(data).and_then(|e| {
                if e.message.role == MessageRole::User {
                    self.prompt.set(self.prompt.get().max(e.seq));
                    return None;
                }
                (e.message.status != MessageStatus::Streaming).then_some(e.seq)
            }),
            _ => None,
        };
        ended.is_some_and(|seq| seq > self.prompt.get())
    }
}

/// Prints a sandbox's output from its events, never printing a byte twice.
#[derive(Default)]
pub(super) struct Printer {
    printed: HashMap<i64, usize>,
    json: bool,
    mid_line: bool,
    /// The reason of a failed run just printed as its `! run failed` line: the
    /// orchestrator then stores it as the text of an answer that had none, which is not
    /// printed a second time.
    failure: Option<String>,
}

impl Printer {
    /// A printer of the output (`json`: of each event as a JSON line).
    pub(super) fn new(json: bool) -> Self {
        Printer {
            json,
            ..Printer::default()
        }
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        print!("{text}");
        self.mid_line = !text.ends_with('\n');
        // Output to a closed pipe is lost either way; the stream goes on.
        let _ = std::io::stdout().flush();
    }

    fn end_line(&mut self) {
        if self.mid_line {
            println!();
            self.mid_line = false;
        }
    }

    /// Whether `text`, the start of message `seq`, only repeats the failure just printed.
    fn repeats_failure(&mut self, seq: i64, text: &str) -> bool {
        if self.printed.get(&seq).is_some_and(|done| *done > 0) {
            return false;
        }
        if self.failure.as_deref() == Some(text) {
            self.failure = None;
            self.printed.insert(seq, text.len());
            return true;
        }
        false
    }

    fn show(&mut self, seq: i64, role: &str, content: &str, finished: bool) {
        if role != "user" && self.repeats_failure(seq, content) {
            return;
        }
        let done = *self.printed.get(&seq).unwrap_or(&0);
        if role == "user" {
            if done == 0 {
                self.end_line();
                println!("> {content}");
                self.printed.insert(seq, content.len().max(1));
            }
            return;
        }
        if content.len() > done {
            self.write(content.get(done..).unwrap_or_default());
            self.printed.insert(seq, content.len());
        }
        if finished {
            self.end_line();
        }
    }

    /// Prints an agent event's line (tool call, tool result, error, the run's end).
    fn agent(&mut self, event: &ToolEvent) {
        if let ToolEvent::Result(r) = event
            && !r.success
        {
            self.failure = r.text.clone();
        }
        if let Some(line) = agent_line(event) {
            self.end_line();
            println!("{line}");
        }
    }

    /// Prints a stored message, the agent's from its events as the server replays them
    /// (`?events=true`): its text with the tool calls, results and errors between.
    pub(super) fn stored(&mut self, m: &Message) {
        if self.json {
            println!("{}", serde_json::to_value(m).unwrap_or(Value::Null));
            return;
        }
        match &m.events {
            Some(events) if m.role != MessageRole::User => self.replay(events),
            _ => self.show(m.seq, m.role.as_str(), &m.content, false),
        }
        self.failure = None;
        self.printed.insert(m.seq, m.content.len().max(1));
        self.end_line();
    }

    /// Prints a message's replayed events as their live counterparts would be.
    fn replay(&mut self, events: &[StreamedEvent]) {
        for event in events {
            match event {
                StreamedEvent::Text(t) => self.text(t),
                StreamedEvent::Agent(a) => {
                    if let Ok(event) = serde_json::from_value::<ToolEvent>(a.event.clone()) {
                        self.agent(&event);
                    }
                }
            }
        }
    }

    /// Prints the part of a `text` event not printed yet.
    fn text(&mut self, e: &TextEvent) {
        let (seq, text, end) = (e.seq, e.text.as_str(), e.content_end);
        if end == text.len() && self.repeats_failure(seq, text) {
            return;
        }
        let done = *self.printed.get(&seq).unwrap_or(&0);
        let start = end.saturating_sub(text.len());
        if end > done {
            self.write(text.get(done.saturating_sub(start)..).unwrap_or(text));
            self.printed.insert(seq, end);
        }
    }

    /// Handles one event.
    fn event(&mut self, name: &str, id: Option<&str>, data: &Value) {
        if self.json {
            println!("{}", json!({ "event": name, "id": id, "data": data }));
            return;
        }
        match name {
            "message" => {
                if let Some(MessageEvent { seq, message }) = decode(data) {
                    // A snapshot of an agent's message not printed yet: its events, so
                    // the tool calls show as they did live.
                    if let Some(events) = message.events.as_deref().filter(|_| {
                        message.role != MessageRole::User && !self.printed.contains_key(&seq)
                    }) {
                        self.replay(events);
                        if message.status != MessageStatus::Streaming {
                            self.end_line();
                        }
                        return;
                    }
                    self.show(
                        seq,
                        message.role.as_str(),
                        &message.content,
                        message.status != MessageStatus::Streaming,
                    );
                }
            }
            "text" => {
                if let Some(e) = decode::<TextEvent>(data) {
                    self.text(&e);
                }
            }
            "agent" => {
                if let Some(event) = decode::<AgentEvent>(data)
                    .and_then(|view| serde_json::from_value::<ToolEvent>(view.event).ok())
                {
                    self.agent(&event);
                }
            }
            "finished" | "end" => self.end_line(),
            _ => {}
        }
    }
}

/// Follows `/events` from after message `after` (every message up to it already
/// printed), resuming with `Last-Event-ID` after drops, until `end` or `stop`.
pub(super) async fn follow(
    http: &Http,
    id: &str,
    printer: &mut Printer,
    after: i64,
    stop: impl Fn(&str, &Value) -> bool,
) -> Result<()> {
    let mut last: Option<String> = (after > 0).then(|| after.to_string());
    let mut failures = 0;
    loop {
        let mut req = http.request(Method::GET, &format!("/v1/sandboxes/{id}/events"));
        if let Some(last) = &last {
            req = req.header("last-event-id", last);
        }
        let res = match http.send(req).await {
            Ok(res) => res,
            Err(e) if e.code == 8 && failures < 30 => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        failures = 0;
        let mut stream = res.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut name, mut data, mut event_id) = (String::new(), String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event_id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if name.is_empty() {
                    continue;
                }
                if event_id.is_some() {
                    last = event_id.clone();
                }
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                printer.event(&name, event_id.as_deref(), &data);
                match name.as_str() {
                    "end" => return Ok(()),
                    "error" => {
                        let message = decode::<StreamError>(&data)
                            .map_or_else(|| "-".to_owned(), |e| e.message);
                        return Err(fail(1, message));
                    }
                    _ => {}
                }
                if stop(&name, &data) {
                    return Ok(());
                }
            }
        }
        // Dropped (or the server restarts: `shutdown`): resume where we were.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_never_prints_twice() {
        let mut p = Printer::default();
        p.show(2, "assistant", "hello", false);
        assert_eq!(p.printed[&2], 5);
        p.show(2, "assistant", "hello world", true);
        assert_eq!(p.printed[&2], 11);
        p.event(
            "text",
            Some("1"),
            &json!({
                "seq": 2,
                "message_id": "018f2b9e-0000-7000-8000-000000000002",
                "text": "world",
                "content_end": 11
            }),
        );
        assert_eq!(p.printed[&2], 11);
    }
}
