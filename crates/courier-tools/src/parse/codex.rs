//! Codex `exec --json`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{ToolParser, content_text, str_field, u64_field};
use crate::events::{AgentEvent, RunResult, Usage};

#[derive(Debug, Default)]
pub(super) struct CodexParser {
    /// Items whose `ToolUse` was already emitted on `item.started`.
    started: HashSet<String>,
    last_message: Option<String>,
    /// The session's running total before this run (`exec resume` reports cumulative
    /// figures over the thread).
    pub(super) baseline: Option<Usage>,
}

/// The HTTP status an error message names as `401 Unauthorized` / `403 Forbidden`.
fn auth_status_in(message: &str) -> Option<u16> {
    if message.contains("401 Unauthorized") {
        Some(401)
    } else if message.contains("403 Forbidden") {
        Some(403)
    } else {
        None
    }
}

impl CodexParser {
    fn tool_use(&mut self, id: &str, name: String, input: Value, out: &mut Vec<AgentEvent>) {
        if self.started.insert(id.to_owned()) {
            out.push(AgentEvent::ToolUse {
                id: id.to_owned(),
                name,
                input,
            });
        }
    }

    fn item(&mut self, item: &Value, completed: bool, out: &mut Vec<AgentEvent>) -> bool {
        let id = str_field(item, "id").unwrap_or_default();
        let status = str_field(item, "status");
        match str_field(item, "type") {
            Some("agent_message") if completed => {
                let text = str_field(item, "text").unwrap_or_default().to_owned();
                self.last_message = Some(text.clone());
                out.push(AgentEvent::Text { text });
            }
            Some("reasoning") if completed => out.push(AgentEvent::Thinking {
                text: str_field(item, "text").unwrap_or_default().to_owned(),
            }),
            Some("command_execution") => {
                let input =
                    json!({ "command": item.get("command").cloned().unwrap_or(Value::Null) });
                self.tool_use(id, "command_execution".to_owned(), input, out);
                if completed {
                    let exit = item.get("exit_code").and_then(Value::as_i64);
                    out.push(AgentEvent::ToolResult {
                        id: id.to_owned(),
                        output: str_field(item, "aggregated_output")
                            .unwrap_or_default()
                            .to_owned(),
                        is_error: status != Some("completed") || exit.is_some_and(|c| c != 0),
                    });
                }
            }
            Some("file_change") => {
                let input =
                    json!({ "changes": item.get("changes").cloned().unwrap_or(Value::Null) });
                self.tool_use(id, "file_change".to_owned(), input, out);
                if completed {
                    let summary = item
                        .get("changes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            format!(
                                "{} {}",
                                str_field(c, "kind").unwrap_or("?"),
                                str_field(c, "path").unwrap_or("?")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    out.push(AgentEvent::ToolResult {
                        id: id.to_owned(),
                        output: summary,
                        is_error: status == Some("failed"),
                    });
                }
            }
            Some("mcp_tool_call") => {
                let name = format!(
                    "mcp__{}__{}",
                    str_field(item, "server").unwrap_or_default(),
                    str_field(item, "tool").unwrap_or_default()
                );
                self.tool_use(
                    id,
                    name,
                    item.get("arguments").cloned().unwrap_or(Value::Null),
                    out,
                );
                if completed {
                    let error = item.get("error").and_then(|e| str_field(e, "message"));
                    let output = match error {
                        Some(e) => e.to_owned(),
                        None => content_text(
                            item.get("result")
                                .and_then(|r| r.get("content"))
                                .unwrap_or(&Value::Null),
                        ),
                    };
                    out.push(AgentEvent::ToolResult {
                        id: id.to_owned(),
                        output,
                        is_error: error.is_some() || status == Some("failed"),
                    });
                }
            }
            Some("web_search") => {
                let input = json!({ "query": item.get("query").cloned().unwrap_or(Value::Null) });
                self.tool_use(id, "web_search".to_owned(), input, out);
            }
            Some("todo_list") if completed => {
                let input = json!({ "items": item.get("items").cloned().unwrap_or(Value::Null) });
                out.push(AgentEvent::ToolUse {
                    id: id.to_owned(),
                    name: "todo_list".to_owned(),
                    input,
                });
            }
            Some("todo_list") => {}
            Some("error") => out.push(AgentEvent::Error {
                message: str_field(item, "message").unwrap_or_default().to_owned(),
            }),
            _ => return false,
        }
        true
    }
}

impl ToolParser for CodexParser {
    fn object(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool {
        match str_field(value, "type") {
            Some("thread.started") => match str_field(value, "thread_id") {
                Some(id) => {
                    out.push(AgentEvent::SessionStarted {
                        session_id: id.to_owned(),
                        model: None,
                    });
                    true
                }
                None => false,
            },
            Some("turn.started") => true,
            Some("item.started") | Some("item.updated") => value
                .get("item")
                .is_some_and(|item| self.item(item, false, out)),
            Some("item.completed") => value
                .get("item")
                .is_some_and(|item| self.item(item, true, out)),
            Some("turn.completed") => {
                let u = value.get("usage").unwrap_or(&Value::Null);
                let cached = u64_field(u, "cached_input_tokens");
                // Codex's input_tokens include the cached ones.
                let session = Usage {
                    input_tokens: u64_field(u, "input_tokens").saturating_sub(cached),
                    output_tokens: u64_field(u, "output_tokens"),
                    cache_read_tokens: cached,
                    cache_write_tokens: u64_field(u, "cache_write_input_tokens"),
                    cost_usd: None,
                };
                // The figures add up the thread: this run's share is what grew since the
                // baseline. Figures below it mean a new thread started.
                let usage = match &self.baseline {
                    Some(base) if session.covers(base) => session.minus(base),
                    _ => session.clone(),
                };
                out.push(AgentEvent::Usage(usage.clone()));
                out.push(AgentEvent::Result(RunResult {
                    success: true,
                    text: self.last_message.clone(),
                    cost_usd: None,
                    usage: Some(usage),
                    num_turns: Some(1),
                    duration_ms: None,
                    session_usage: Some(session),
                }));
                true
            }
            Some("turn.failed") => {
                let message = value
                    .get("error")
                    .and_then(|e| str_field(e, "message"))
                    .unwrap_or("turn failed");
                if let Some(status) = auth_status_in(message) {
                    out.push(AgentEvent::AuthFailed {
                        status: Some(status),
                        message: message.to_owned(),
                    });
                }
                out.push(AgentEvent::Result(RunResult {
                    success: false,
                    text: Some(message.to_owned()),
                    cost_usd: None,
                    usage: None,
                    num_turns: Some(1),
                    duration_ms: None,
                    session_usage: None,
                }));
                true
            }
            // Not terminal: Codex reports retries ("Reconnecting... 1/5") this way. A
            // refused key is reported at its first retry: retrying cannot help.
            Some("error") => {
                let message = str_field(value, "message").unwrap_or_default().to_owned();
                match auth_status_in(&message) {
                    Some(status) => out.push(AgentEvent::AuthFailed {
                        status: Some(status),
                        message,
                    }),
                    None => out.push(AgentEvent::Error { message }),
                }
                true
            }
            _ => false,
        }
    }

    fn end_without_result(&mut self, exit_code: Option<i32>) -> RunResult {
        RunResult {
            success: false,
            text: Some(format!(
                "codex stopped without turn.completed or turn.failed (exit code {})",
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
