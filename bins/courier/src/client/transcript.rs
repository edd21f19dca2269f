//! One compact line per agent event, for `courier sandbox logs` and `create`: tool calls
//! and their results, errors, and how the run ended. Text is printed as it comes;
//! thinking, usage and session events print nothing.

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

/// The line for one agent event (the `event` of an `agent` server-sent event, tagged by
/// `type`), or `None` for events that print nothing.
pub(super) fn agent_line(event: &Value) -> Option<String> {
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default();
    match event.get("type")?.as_str()? {
        "tool_use" => Some(format!(
            "▸ {}{}",
            text("name"),
            input_summary(event.get("input"))
        )),
        "tool_result" => {
            let output = text("output");
            let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut line = lines
                .next()
                .map_or_else(|| "(no output)".to_owned(), |l| table::clip(l, WIDTH));
            let more = lines.count();
            if more > 0 {
                line.push_str(&format!(" (+{more} lines)"));
            }
            let failed = event.get("is_error").and_then(Value::as_bool) == Some(true);
            Some(if failed {
                format!("  ↳ error: {line}")
            } else {
                format!("  ↳ {line}")
            })
        }
        "error" => Some(format!("! error: {}", table::clip(text("message"), WIDTH))),
        "auth_failed" => {
            let status = event
                .get("status")
                .and_then(Value::as_u64)
                .map_or_else(String::new, |s| format!(" ({s})"));
            Some(format!(
                "! authentication failed{status}: {}",
                table::clip(text("message"), WIDTH)
            ))
        }
        "result" => result_line(event),
        _ => None,
    }
}

/// How a run ended: a failure with its reason, a success with its turns, time and cost
/// (nothing when the tool reports none of them).
fn result_line(event: &Value) -> Option<String> {
    if event.get("success").and_then(Value::as_bool) != Some(true) {
        let reason = event
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Some(format!("! run failed: {}", table::clip(reason, WIDTH)));
    }
    let mut parts = Vec::new();
    if let Some(turns) = event.get("num_turns").and_then(Value::as_u64) {
        parts.push(format!("{turns} turns"));
    }
    if let Some(ms) = event.get("duration_ms").and_then(Value::as_u64) {
        parts.push(format!("{:.1} s", ms as f64 / 1000.0));
    }
    if let Some(cost) = event.get("cost_usd").and_then(Value::as_f64) {
        parts.push(format!("${cost:.4}"));
    }
    (!parts.is_empty()).then(|| format!("✓ done: {}", parts.join(", ")))
}

/// ` <what the call does>`: the first telling input key, else the input as JSON.
fn input_summary(input: Option<&Value>) -> String {
    let summary = match input {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(map)) if map.is_empty() => return String::new(),
        Some(Value::Object(map)) => SUMMARY_KEYS
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .map_or_else(|| Value::Object(map.clone()).to_string(), str::to_owned),
        Some(other) => other.to_string(),
    };
    format!(" {}", table::clip(summary.trim(), WIDTH))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tool_calls_results_errors_and_the_end_are_one_line_each() {
        let call = json!({"type": "tool_use", "id": "t1", "name": "Bash",
            "input": {"command": "cargo test\n--all", "description": "Run tests"}});
        assert_eq!(agent_line(&call).unwrap(), "▸ Bash cargo test…");
        let edit = json!({"type": "tool_use", "id": "t2", "name": "Edit",
            "input": {"file_path": "/p/a.rs", "old_string": "x"}});
        assert_eq!(agent_line(&edit).unwrap(), "▸ Edit /p/a.rs");
        let odd = json!({"type": "tool_use", "id": "t3", "name": "todo", "input": {"n": 1}});
        assert_eq!(agent_line(&odd).unwrap(), "▸ todo {\"n\":1}");
        let out = json!({"type": "tool_result", "id": "t1", "output": "\nok 1\nok 2\n\nok 3",
            "is_error": false});
        assert_eq!(agent_line(&out).unwrap(), "  ↳ ok 1 (+2 lines)");
        let failed = json!({"type": "tool_result", "id": "t1", "output": "", "is_error": true});
        assert_eq!(agent_line(&failed).unwrap(), "  ↳ error: (no output)");
        let error = json!({"type": "error", "message": "rate limited"});
        assert_eq!(agent_line(&error).unwrap(), "! error: rate limited");
        let auth = json!({"type": "auth_failed", "status": 401, "message": "bad key"});
        assert_eq!(
            agent_line(&auth).unwrap(),
            "! authentication failed (401): bad key"
        );
        let done = json!({"type": "result", "success": true, "text": "Fixed.",
            "num_turns": 3, "duration_ms": 1234, "cost_usd": 0.0123});
        assert_eq!(
            agent_line(&done).unwrap(),
            "✓ done: 3 turns, 1.2 s, $0.0123"
        );
        let bare = json!({"type": "result", "success": true, "text": null});
        assert_eq!(agent_line(&bare), None);
        let lost = json!({"type": "result", "success": false, "text": "API Error: 500"});
        assert_eq!(agent_line(&lost).unwrap(), "! run failed: API Error: 500");
        for quiet in ["thinking", "usage", "session_started", "text", "raw"] {
            assert_eq!(
                agent_line(&json!({"type": quiet, "text": "x"})),
                None,
                "{quiet}"
            );
        }
    }
}
