//! The `shell` tool: plain text output, one `Text` event per line (with its line break).

use serde_json::Value;

use super::ToolParser;
use crate::events::{AgentEvent, RunResult};

#[derive(Debug, Default)]
pub(super) struct ShellParser;

impl ToolParser for ShellParser {
    fn object(&mut self, _value: &Value, _out: &mut Vec<AgentEvent>) -> bool {
        false
    }

    /// A shell script has no terminal event: its exit code is the only verdict.
    fn end_without_result(&mut self, exit_code: Option<i32>) -> RunResult {
        let success = exit_code == Some(0);
        RunResult {
            success,
            text: (!success).then(|| match exit_code {
                Some(code) => format!("shell task exited with code {code}"),
                None => "shell task ended without an exit code".to_owned(),
            }),
            cost_usd: None,
            usage: None,
            num_turns: None,
            duration_ms: None,
            session_usage: None,
        }
    }
}
