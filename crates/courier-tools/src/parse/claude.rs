//! Claude Code `--output-format stream-json --verbose`.

use std::collections::HashSet;

use serde_json::Value;

use super::{ToolParser, content_text, str_field, u64_field};
use crate::events::{AgentEvent, RunResult, Usage};

#[derive(Debug, Default)]
pub(super) struct ClaudeParser {
    /// Message ids whose usage was already counted: one API message arrives as several
    /// `assistant` events (one per content block) with identical usage.
    counted: HashSet<String>,
    last_text: Option<String>,
}

fn usage_of(u: &Value) -> Usage {
    Usage {
        input_tokens: u64_field(u, "input_tokens"),
        output_tokens: u64_field(u, "output_tokens"),
        cache_read_tokens: u64_field(u, "cache_read_input_tokens"),
        cache_write_tokens: u64_field(u, "cache_creation_input_tokens"),
        cost_usd: None,
    }
}

impl ClaudeParser {
    fn assistant(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        let Some(message) = value.get("message") else {
            return false;
        };
        let synthetic = str_field(message, "model") == Some("<synthetic>")
            || value.get("is_api_error_message").and_then(Value::as_bool) == Some(true);
        let content = message
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if synthetic {
            let text = content_text(message.get("content").unwrap_or(&Value::Null));
            let kind = str_field(value, "error").unwrap_or("api_error");
            let message = if text.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}: {text}")
            };
            out.push(AgentEvent::Error { message });
            return true;
        }
        for block in content {
            match str_field(block, "type") {
                Some("text") => {
                    let text = str_field(block, "text").unwrap_or_default().to_owned();
                    self.last_text = Some(text.clone());
                    out.push(AgentEvent::Text { text });
                }
                Some("thinking") => out.push(AgentEvent::Thinking {
                    text: str_field(block, "thinking").unwrap_or_default().to_owned(),
                }),
                Some("redacted_thinking") => out.push(AgentEvent::Thinking {
                    text: "[redacted]".to_owned(),
                }),
                Some("tool_use") => out.push(AgentEvent::ToolUse {
                    id: str_field(block, "id").unwrap_or_default().to_owned(),
                    name: str_field(block, "name").unwrap_or_default().to_owned(),
                    input: block.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => out.push(AgentEvent::Raw {
                    line: block.to_string(),
                }),
            }
        }
        if let Some(usage) = message.get("usage") {
            let fresh = match str_field(message, "id") {
                Some(id) => self.counted.insert(id.to_owned()),
                None => true,
            };
            if fresh {
                out.push(AgentEvent::Usage(usage_of(usage)));
            }
        }
        true
    }

    fn user(value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        let Some(content) = value
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
        else {
            return false;
        };
        let start = out.len();
        for block in content {
            if str_field(block, "type") == Some("tool_result") {
                out.push(AgentEvent::ToolResult {
                    id: str_field(block, "tool_use_id")
                        .unwrap_or_default()
                        .to_owned(),
                    output: content_text(block.get("content").unwrap_or(&Value::Null)),
                    is_error: block
                        .get("is_error")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
        }
        out.len() > start
    }

    fn result(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        let subtype = str_field(value, "subtype");
        // `is_error` is the verdict: API failures arrive as subtype "success" + is_error true.
        let is_error = value
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(subtype != Some("success"));
        let errors: Vec<&str> = value
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let text = str_field(value, "result")
            .map(str::to_owned)
            .filter(|t| !t.is_empty())
            .or_else(|| (!errors.is_empty()).then(|| errors.join("\n")))
            .or_else(|| is_error.then(|| subtype.unwrap_or("error").to_owned()))
            .or_else(|| self.last_text.clone());
        let cost = value
            .get("total_cost_usd")
            .or_else(|| value.get("cost_usd"))
            .and_then(Value::as_f64);
        let usage = value.get("usage").map(|u| Usage {
            cost_usd: cost,
            ..usage_of(u)
        });
        out.push(AgentEvent::Result(RunResult {
            success: !is_error,
            text,
            cost_usd: cost,
            usage,
            num_turns: value.get("num_turns").and_then(Value::as_u64),
            duration_ms: value.get("duration_ms").and_then(Value::as_u64),
        }));
        true
    }
}

impl ToolParser for ClaudeParser {
    fn object(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        match str_field(value, "type") {
            Some("system") if str_field(value, "subtype") == Some("init") => {
                match str_field(value, "session_id") {
                    Some(id) => {
                        out.push(AgentEvent::SessionStarted {
                            session_id: id.to_owned(),
                            model: str_field(value, "model").map(str::to_owned),
                        });
                        true
                    }
                    None => false,
                }
            }
            Some("assistant") => self.assistant(value, out),
            Some("user") => Self::user(value, out),
            Some("result") => self.result(value, out),
            _ => false,
        }
    }

    fn end_without_result(&mut self, exit_code: Option<i32>) -> RunResult {
        RunResult {
            success: false,
            text: Some(format!(
                "claude stopped without a result event (exit code {})",
                exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
            )),
            cost_usd: None,
            usage: None,
            num_turns: None,
            duration_ms: None,
        }
    }
}
