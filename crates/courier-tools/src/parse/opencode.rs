//! OpenCode `run --format json`.

use std::collections::HashSet;

use serde_json::Value;

use super::{ToolParser, str_field, u64_field};
use crate::events::{AgentEvent, RunResult, Usage};

#[derive(Debug, Default)]
pub(super) struct OpencodeParser {
    session_reported: bool,
    /// `step_finish` part ids already counted.
    counted: HashSet<String>,
    total: Usage,
    any_usage: bool,
    last_text: Option<String>,
    last_error: Option<String>,
    /// Whether the last `step_finish` ended the turn (`reason: "stop"`).
    stopped: bool,
}

impl OpencodeParser {
    fn verdict(&self, success: bool, fallback: Option<String>) -> RunResult {
        let text = if success {
            self.last_text.clone()
        } else {
            self.last_error.clone().or(fallback)
        };
        RunResult {
            success,
            text,
            cost_usd: self.any_usage.then_some(self.total.cost_usd).flatten(),
            usage: self.any_usage.then(|| self.total.clone()),
            num_turns: None,
            duration_ms: None,
            session_usage: None,
        }
    }
}

impl ToolParser for OpencodeParser {
    fn object(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        let Some(kind) = str_field(value, "type") else {
            return false;
        };
        let known = matches!(
            kind,
            "step_start" | "text" | "reasoning" | "tool_use" | "step_finish" | "error" | "done"
        );
        if !known {
            return false;
        }
        if !self.session_reported
            && let Some(id) = str_field(value, "sessionID")
        {
            self.session_reported = true;
            out.push(AgentEvent::SessionStarted {
                session_id: id.to_owned(),
                model: None,
            });
        }
        let part = value.get("part").unwrap_or(&Value::Null);
        match kind {
            "step_start" => {}
            "text" => {
                let text = str_field(part, "text").unwrap_or_default().to_owned();
                self.last_text = Some(text.clone());
                out.push(AgentEvent::Text { text });
            }
            "reasoning" => out.push(AgentEvent::Thinking {
                text: str_field(part, "text").unwrap_or_default().to_owned(),
            }),
            "tool_use" => {
                let id = str_field(part, "callID")
                    .or_else(|| str_field(part, "id"))
                    .unwrap_or_default()
                    .to_owned();
                let state = part.get("state").unwrap_or(&Value::Null);
                out.push(AgentEvent::ToolUse {
                    id: id.clone(),
                    name: str_field(part, "tool").unwrap_or_default().to_owned(),
                    input: state.get("input").cloned().unwrap_or(Value::Null),
                });
                let is_error = str_field(state, "status") == Some("error");
                let output = if is_error {
                    str_field(state, "error")
                } else {
                    str_field(state, "output")
                };
                out.push(AgentEvent::ToolResult {
                    id,
                    output: output.unwrap_or_default().to_owned(),
                    is_error,
                });
            }
            "step_finish" => {
                self.stopped = str_field(part, "reason") == Some("stop");
                let fresh = match str_field(part, "id") {
                    Some(id) => self.counted.insert(id.to_owned()),
                    None => true,
                };
                if fresh {
                    let tokens = part.get("tokens").unwrap_or(&Value::Null);
                    let cache = tokens.get("cache").unwrap_or(&Value::Null);
                    let usage = Usage {
                        input_tokens: u64_field(tokens, "input"),
                        // Reasoning tokens are billed as output.
                        output_tokens: u64_field(tokens, "output") + u64_field(tokens, "reasoning"),
                        cache_read_tokens: u64_field(cache, "read"),
                        cache_write_tokens: u64_field(cache, "write"),
                        cost_usd: part.get("cost").and_then(Value::as_f64),
                    };
                    self.total.add(&usage);
                    self.any_usage = true;
                    out.push(AgentEvent::Usage(usage));
                }
            }
            "error" => {
                let error = value.get("error").unwrap_or(&Value::Null);
                let message = error
                    .get("data")
                    .and_then(|d| str_field(d, "message"))
                    .or_else(|| str_field(error, "name"))
                    .unwrap_or("opencode error")
                    .to_owned();
                self.last_error = Some(message.clone());
                let status = error
                    .get("data")
                    .and_then(|d| d.get("statusCode"))
                    .and_then(Value::as_u64)
                    .filter(|s| super::claude::is_auth_status(*s));
                let auth =
                    status.is_some() || str_field(error, "name") == Some("ProviderAuthError");
                if auth {
                    out.push(AgentEvent::AuthFailed {
                        status: status.and_then(|s| u16::try_from(s).ok()),
                        message,
                    });
                } else {
                    out.push(AgentEvent::Error { message });
                }
            }
            "done" => {
                let rejected: Vec<&str> = value
                    .get("rejected")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let fallback = (!rejected.is_empty())
                    .then(|| format!("permissions rejected: {}", rejected.join(", ")));
                let success = self.last_error.is_none() && rejected.is_empty();
                out.push(AgentEvent::Result(self.verdict(success, fallback)));
            }
            _ => {}
        }
        true
    }

    /// Older builds have no `done` event: success is no `error` event and a clean exit
    /// (or, with the exit unknown, a final `stop` step).
    fn end_without_result(&mut self, exit_code: Option<i32>) -> RunResult {
        let success = self.last_error.is_none() && exit_code.map_or(self.stopped, |c| c == 0);
        let fallback = Some(format!(
            "opencode exited with code {}",
            exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
        ));
        self.verdict(success, fallback)
    }
}
