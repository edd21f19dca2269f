//! Claude Code `--output-format stream-json --verbose`.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{ToolParser, content_text, str_field, u64_field};
use crate::events::{AgentEvent, RunResult, Usage};

#[derive(Debug, Default)]
pub(super) struct ClaudeParser {
    /// Message ids whose usage was already counted: one API message arrives as several
    /// `assistant` events (one per content block) with identical usage.
    counted: HashSet<String>,
    /// With `--include-partial-messages`: each message's usage from its `message_start`,
    /// completed by its `message_delta` (the only place the final output count appears).
    partial: HashMap<String, Usage>,
    /// The message the partial events currently describe.
    current: Option<String>,
    last_text: Option<String>,
}

/// Whether an HTTP status means the credentials were refused.
pub(super) fn is_auth_status(status: u64) -> bool {
    status == 401 || status == 403
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

/// The sum of a `modelUsage`-shaped object (`{model: {inputTokens, …, costUSD}}`).
fn model_usage_sum(models: &Value) -> Option<Usage> {
    let models = models.as_object()?;
    let mut total = Usage::default();
    let mut cost = None;
    for m in models.values() {
        total.add(&Usage {
            input_tokens: u64_field(m, "inputTokens"),
            output_tokens: u64_field(m, "outputTokens"),
            cache_read_tokens: u64_field(m, "cacheReadInputTokens"),
            cache_write_tokens: u64_field(m, "cacheCreationInputTokens"),
            cost_usd: None,
        });
        if let Some(c) = m.get("costUSD").and_then(Value::as_f64) {
            cost = Some(cost.unwrap_or(0.0) + c);
        }
    }
    total.cost_usd = cost;
    Some(total)
}

impl ClaudeParser {
    /// `stream_event` lines (`--include-partial-messages`): usage is taken here, once per
    /// message, when its `message_delta` gives the final output count. Text and tool
    /// input deltas are not re-emitted: the `assistant` lines carry the whole blocks.
    fn stream_event(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        let Some(event) = value.get("event") else {
            return false;
        };
        match str_field(event, "type") {
            Some("message_start") => {
                let message = event.get("message").unwrap_or(&Value::Null);
                if let Some(id) = str_field(message, "id") {
                    let usage = message.get("usage").map(usage_of).unwrap_or_default();
                    self.partial.insert(id.to_owned(), usage);
                    self.current = Some(id.to_owned());
                }
            }
            Some("message_delta") => {
                if let (Some(id), Some(delta)) = (self.current.clone(), event.get("usage"))
                    && let Some(usage) = self.partial.get_mut(&id)
                {
                    // The delta's counts are cumulative for the message: later ones win.
                    for (field, slot) in [
                        ("input_tokens", &mut usage.input_tokens),
                        ("output_tokens", &mut usage.output_tokens),
                        ("cache_read_input_tokens", &mut usage.cache_read_tokens),
                        ("cache_creation_input_tokens", &mut usage.cache_write_tokens),
                    ] {
                        if delta.get(field).is_some_and(|v| !v.is_null()) {
                            *slot = u64_field(delta, field);
                        }
                    }
                    if self.counted.insert(id.clone()) {
                        out.push(AgentEvent::Usage(usage.clone()));
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// `system/api_retry`: a failed API call about to be retried. A refused key never
    /// heals, so it is reported as [`AgentEvent::AuthFailed`] at the first attempt.
    fn api_retry(value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        let status = value.get("error_status").and_then(Value::as_u64);
        let error = str_field(value, "error").unwrap_or("api_error");
        let attempt = u64_field(value, "attempt");
        let max = value.get("max_retries").and_then(Value::as_u64);
        if status.is_some_and(is_auth_status) || error == "authentication_failed" {
            out.push(AgentEvent::AuthFailed {
                status: status.and_then(|s| u16::try_from(s).ok()),
                message: format!(
                    "the API refused the credentials ({})",
                    status.map_or_else(|| error.to_owned(), |s| format!("HTTP {s}"))
                ),
            });
        } else {
            out.push(AgentEvent::Error {
                message: format!(
                    "API call failed ({}), retry {attempt}{}",
                    status.map_or_else(|| error.to_owned(), |s| format!("HTTP {s}")),
                    max.map(|m| format!(" of {m}")).unwrap_or_default()
                ),
            });
        }
        true
    }

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
            if kind == "authentication_failed" {
                out.push(AgentEvent::AuthFailed {
                    status: None,
                    message,
                });
            } else {
                out.push(AgentEvent::Error { message });
            }
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
            let id = str_field(message, "id");
            // With partial messages, this line's usage is `message_start`'s placeholder
            // (one output token): the `message_delta` counts the message instead.
            let partial = id.is_some_and(|id| self.partial.contains_key(id));
            let fresh = match id {
                _ if partial => false,
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
        // Since 2.1.3xx `total_cost_usd` and `modelUsage` add up the whole session (a
        // `--continue` run reports the earlier runs too); `model_usage_since_last_result`
        // is this run's, per model, side models included.
        let since = value
            .get("model_usage_since_last_result")
            .and_then(model_usage_sum);
        let (usage, cost) = match since {
            Some(since) => (Some(since.clone()), since.cost_usd),
            None => {
                let cost = value
                    .get("total_cost_usd")
                    .or_else(|| value.get("cost_usd"))
                    .and_then(Value::as_f64);
                let usage = value.get("usage").map(|u| Usage {
                    cost_usd: cost,
                    ..usage_of(u)
                });
                (usage, cost)
            }
        };
        out.push(AgentEvent::Result(RunResult {
            success: !is_error,
            text,
            cost_usd: cost,
            usage,
            num_turns: value.get("num_turns").and_then(Value::as_u64),
            duration_ms: value.get("duration_ms").and_then(Value::as_u64),
            session_usage: None,
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
            Some("system") if str_field(value, "subtype") == Some("api_retry") => {
                Self::api_retry(value, out)
            }
            // Progress notes ("requesting") and context compaction: nothing to show.
            Some("system")
                if matches!(
                    str_field(value, "subtype"),
                    Some("status" | "compact_boundary")
                ) =>
            {
                true
            }
            Some("stream_event") => self.stream_event(value, out),
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
            session_usage: None,
        }
    }
}
