//! One compact line per agent event, for `courier sandbox logs` and `create`: tool calls
//! and their results, errors, and how the run ended. Text is printed as it comes;
//! thinking, usage, session and unparsed raw events print nothing.

use courier_tools::{AgentEvent, RunResult};
use serde_json::Value;

use crate::table;

/// How many characters of a tool's input or output one line shows.
const WIDTH: usize = 100;

/// Input keys that say what a tool call does, in the order they are looked for.
const SUMMARY_KEYS: [&str; 9] = [
    "command",
    "cmd",
    "file_path",
    "filePath",
    "path",
    "pattern",
    "url",
    "query",
    "description",
];

/// The line for one agent event, or `None` for events that print nothing.
pub(super) fn agent_line(event: &AgentEvent) -> Option<String> {
    match event {
        AgentEvent::ToolUse { name, input, .. } => {
            Some(format!("▸ {name}{}", input_summary(input)))
        }
        AgentEvent::ToolResult {
            output, is_error, ..
        } => {
            let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut line = lines
                .next()
                .map_or_else(|| "(no output)".to_owned(), |l| table::clip(l, WIDTH));
            let more = lines.count();
            if more > 0 {
                line.push_str(&format!(" (+{more} lines)"));
            }
            Some(if *is_error {
                format!("  ↳ error: {line}")
            } else {
                format!("  ↳ {line}")
            })
        }
        AgentEvent::Error { message } => Some(format!("! error: {}", table::clip(message, WIDTH))),
        AgentEvent::AuthFailed { status, message } => {
            let status = status.map_or_else(String::new, |s| format!(" ({s})"));
            Some(format!(
                "! authentication failed{status}: {}",
                table::clip(message, WIDTH)
            ))
        }
        AgentEvent::Result(result) => result_line(result),
        AgentEvent::SessionStarted { .. }
        | AgentEvent::Text { .. }
        | AgentEvent::Thinking { .. }
        | AgentEvent::Usage(_)
        | AgentEvent::Raw { .. } => None,
    }
}

/// How a run ended: a failure with its reason, a success with its turns, time and cost
/// (nothing when the tool reports none of them).
fn result_line(result: &RunResult) -> Option<String> {
    if !result.success {
        let reason = result.text.as_deref().unwrap_or("no reason given");
        return Some(format!("! run failed: {}", table::clip(reason, WIDTH)));
    }
    let mut parts = Vec::new();
    if let Some(turns) = result.num_turns {
        parts.push(format!("{turns} turns"));
    }
    if let Some(ms) = result.duration_ms {
        parts.push(format!("{:.1} s", ms as f64 / 1000.0));
    }
    if let Some(cost) = result.cost_usd {
        parts.push(format!("${cost:.4}"));
    }
    (!parts.is_empty()).then(|| format!("✓ done: {}", parts.join(", ")))
}

/// ` <what the call does>`: the first telling input key, else the input as JSON.
fn input_summary(input: &Value) -> String {
    let summary = match input {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Object(map) if map.is_empty() => return String::new(),
        Value::Object(map) => SUMMARY_KEYS
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .map_or_else(|| input.to_string(), str::to_owned),
        other => other.to_string(),
    };
    format!(" {}", table::clip(summary.trim(), WIDTH))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The line of an event as the API serves it.
    fn line(event: Value) -> Option<String> {
        agent_line(&serde_json::from_value(event).unwrap())
    }

    #[test]
    fn tool_calls_results_errors_and_the_end_are_one_line_each() {
        let call = json!({"type": "tool_use", "id": "t1", "name": "Bash",
            "input": {"command": "cargo test\n--all", "description": "Run tests"}});
        assert_eq!(line(call).unwrap(), "▸ Bash cargo test…");
        let edit = json!({"type": "tool_use", "id": "t2", "name": "Edit",
            "input": {"file_path": "/p/a.rs", "old_string": "x"}});
        assert_eq!(line(edit).unwrap(), "▸ Edit /p/a.rs");
        let odd = json!({"type": "tool_use", "id": "t3", "name": "todo", "input": {"n": 1}});
        assert_eq!(line(odd).unwrap(), "▸ todo {\"n\":1}");
        let out = json!({"type": "tool_result", "id": "t1", "output": "\nok 1\nok 2\n\nok 3",
            "is_error": false});
        assert_eq!(line(out).unwrap(), "  ↳ ok 1 (+2 lines)");
        let failed = json!({"type": "tool_result", "id": "t1", "output": "", "is_error": true});
        assert_eq!(line(failed).unwrap(), "  ↳ error: (no output)");
        let error = json!({"type": "error", "message": "rate limited"});
        assert_eq!(line(error).unwrap(), "! error: rate limited");
        let auth = json!({"type": "auth_failed", "status": 401, "message": "bad key"});
        assert_eq!(
            line(auth).unwrap(),
            "! authentication failed (401): bad key"
        );
        let done = json!({"type": "result", "success": true, "text": "Fixed.",
            "num_turns": 3, "duration_ms": 1234, "cost_usd": 0.0123});
        assert_eq!(line(done).unwrap(), "✓ done: 3 turns, 1.2 s, $0.0123");
        let bare = json!({"type": "result", "success": true, "text": null});
        assert_eq!(line(bare), None);
        let lost = json!({"type": "result", "success": false, "text": "API Error: 500"});
        assert_eq!(line(lost).unwrap(), "! run failed: API Error: 500");
        let quiet = [
            AgentEvent::Thinking { text: "x".into() },
            AgentEvent::Usage(courier_tools::Usage::default()),
            AgentEvent::SessionStarted {
                session_id: "s".into(),
                model: None,
            },
            AgentEvent::Text { text: "x".into() },
            AgentEvent::Raw { line: "x".into() },
        ];
        for event in quiet {
            assert_eq!(agent_line(&event), None, "{event:?}");
        }
    }
}
