//! Pi `--mode json`.

use serde_json::Value;

use super::{ToolParser, content_text, str_field, u64_field};
use crate::events::{AgentEvent, RunResult, Usage};

#[derive(Debug, Default)]
pub(super) struct PiParser {
    total: Usage,
    assistant_messages: u64,
    last_stop_reason: Option<String>,
    last_error: Option<String>,
    last_text: Option<String>,
}

impl PiParser {
    fn assistant_message(&mut self, message: &Value, out: &mut Vec<AgentEvent>) {
        let content = message
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut texts = Vec::new();
        for block in content {
            match str_field(block, "type") {
                Some("text") => {
                    let text = str_field(block, "text").unwrap_or_default().to_owned();
                    texts.push(text.clone());
                    out.push(AgentEvent::Text { text });
                }
                Some("thinking") => out.push(AgentEvent::Thinking {
                    text: str_field(block, "thinking").unwrap_or_default().to_owned(),
                }),
                Some("toolCall") => out.push(AgentEvent::ToolUse {
                    id: str_field(block, "id").unwrap_or_default().to_owned(),
                    name: str_field(block, "name").unwrap_or_default().to_owned(),
                    input: block.get("arguments").cloned().unwrap_or(Value::Null),
                }),
                _ => out.push(AgentEvent::Raw {
                    line: block.to_string(),
                }),
            }
        }
        if !texts.is_empty() {
            self.last_text = Some(texts.join(""));
        }
        if let Some(u) = message.get("usage") {
            let usage = Usage {
                input_tokens: u64_field(u, "input"),
                output_tokens: u64_field(u, "output"),
                cache_read_tokens: u64_field(u, "cacheRead"),
                cache_write_tokens: u64_field(u, "cacheWrite"),
                cost_usd: u
                    .get("cost")
                    .and_then(|c| c.get("total"))
                    .and_then(Value::as_f64),
            };
            self.total.add(&usage);
            out.push(AgentEvent::Usage(usage));
        }
        self.assistant_messages += 1;
        let stop = str_field(message, "stopReason").map(str::to_owned);
        let error = str_field(message, "errorMessage").map(str::to_owned);
        if matches!(stop.as_deref(), Some("error" | "aborted")) {
            let message = error.clone().unwrap_or_else(|| {
                format!("model stopped: {}", stop.as_deref().unwrap_or_default())
            });
            // Pi's error message starts with the HTTP status ("401 Incorrect API key …").
            let status = message
                .split_whitespace()
                .next()
                .and_then(|w| w.parse::<u16>().ok())
                .filter(|s| super::claude::is_auth_status(u64::from(*s)));
            match status {
                Some(status) => out.push(AgentEvent::AuthFailed {
                    status: Some(status),
                    message,
                }),
                None => out.push(AgentEvent::Error { message }),
            }
        }
        self.last_stop_reason = stop;
        self.last_error = error;
    }
}

impl ToolParser for PiParser {
    fn object(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        match str_field(value, "type") {
            Some("session") => match str_field(value, "id") {
                Some(id) => {
                    out.push(AgentEvent::SessionStarted {
                        session_id: id.to_owned(),
                        model: None,
                    });
                    true
                }
                None => false,
            },
            // Progress events whose content arrives complete in `message_end` / `tool_execution_end`.
            Some(
                "agent_start"
                | "turn_start"
                | "turn_end"
                | "message_start"
                | "message_update"
                | "tool_execution_start"
                | "tool_execution_update"
                | "queue_update"
                | "session_info_changed"
                | "thinking_level_changed",
            ) => true,
            Some("message_end") => {
                let Some(message) = value.get("message") else {
                    return false;
                };
                if str_field(message, "role") == Some("assistant") {
                    self.assistant_message(message, out);
                }
                true
            }
            Some("tool_execution_end") => {
                let result = value.get("result").unwrap_or(&Value::Null);
                out.push(AgentEvent::ToolResult {
                    id: str_field(value, "toolCallId")
                        .unwrap_or_default()
                        .to_owned(),
                    output: content_text(result.get("content").unwrap_or(&Value::Null)),
                    is_error: value
                        .get("isError")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
                true
            }
            Some("auto_retry_start") => {
                let message = str_field(value, "errorMessage")
                    .unwrap_or("retrying")
                    .to_owned();
                out.push(AgentEvent::Error { message });
                true
            }
            Some("agent_end") => {
                // Pi exits 0 even when the model call failed: the last stop reason decides.
                let success = matches!(self.last_stop_reason.as_deref(), Some("stop" | "length"));
                let text = if success {
                    self.last_text.clone()
                } else {
                    self.last_error.clone().or_else(|| {
                        Some(match &self.last_stop_reason {
                            Some(reason) => format!("model stopped: {reason}"),
                            None => "pi ended without an assistant message".to_owned(),
                        })
                    })
                };
                let any = self.assistant_messages > 0;
                out.push(AgentEvent::Result(RunResult {
                    success,
                    text,
                    cost_usd: self.total.cost_usd,
                    usage: any.then(|| self.total.clone()),
                    num_turns: Some(self.assistant_messages),
                    duration_ms: None,
                    session_usage: None,
                }));
                true
            }
            _ => false,
        }
    }

    fn end_without_result(&mut self, exit_code: Option<i32>) -> RunResult {
        RunResult {
            success: false,
            text: Some(format!(
                "pi stopped without agent_end (exit code {})",
                exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
            )),
            cost_usd: self.total.cost_usd,
            usage: (self.assistant_messages > 0).then(|| self.total.clone()),
            num_turns: Some(self.assistant_messages),
            duration_ms: None,
            session_usage: None,
        }
    }
}
