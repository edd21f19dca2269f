//! Following a sandbox's server-sent events and printing its output once.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use courier_api::views::{FinishedEvent, MessageEvent, StreamError, TextEvent};
use courier_store::{MessageRole, MessageStatus};
use futures::StreamExt;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

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

/// Prints a sandbox's output from its events, never printing a byte twice.
#[derive(Default)]
pub(super) struct Printer {
    printed: HashMap<i64, usize>,
    json: bool,
    mid_line: bool,
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

    fn show(&mut self, seq: i64, role: &str, content: &str, finished: bool) {
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

    /// Handles one event.
    fn event(&mut self, name: &str, id: Option<&str>, data: &Value) {
        if self.json {
            println!("{}", json!({ "event": name, "id": id, "data": data }));
            return;
        }
        match name {
            "message" => {
                if let Some(MessageEvent { seq, message }) = decode(data) {
                    self.show(
                        seq,
                        message.role.as_str(),
                        &message.content,
                        message.status != MessageStatus::Streaming,
                    );
                }
            }
            "text" => {
                if let Some(TextEvent {
                    seq,
                    text,
                    content_end: end,
                    ..
                }) = decode(data)
                {
                    let done = *self.printed.get(&seq).unwrap_or(&0);
                    let start = end.saturating_sub(text.len());
                    if end > done {
                        self.write(text.get(done.saturating_sub(start)..).unwrap_or(&text));
                        self.printed.insert(seq, end);
                    }
                }
            }
            "finished" | "end" => self.end_line(),
            _ => {}
        }
    }
}

/// Follows `/events`, resuming with `Last-Event-ID` after drops, until `end` or `stop`.
pub(super) async fn follow(
    http: &Http,
    id: &str,
    printer: &mut Printer,
    stop: impl Fn(&str, &Value) -> bool,
) -> Result<()> {
    let mut last: Option<String> = None;
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
