//! Normalized agent events: what every tool's stream is parsed into.

use serde::{Deserialize, Serialize};

/// Token and cost counts for one model message (or, inside [`RunResult`], a whole run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from cache.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Cost in US dollars, when the tool reports one (Codex does not).
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Whether every count is at least `other`'s (the cost is not compared).
    pub fn covers(&self, other: &Usage) -> bool {
        self.input_tokens >= other.input_tokens
            && self.output_tokens >= other.output_tokens
            && self.cache_read_tokens >= other.cache_read_tokens
            && self.cache_write_tokens >= other.cache_write_tokens
    }

    /// This usage minus `earlier` (counts only; saturating; the cost is kept).
    pub fn minus(&self, earlier: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_sub(earlier.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(earlier.output_tokens),
            cache_read_tokens: self
                .cache_read_tokens
                .saturating_sub(earlier.cache_read_tokens),
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_sub(earlier.cache_write_tokens),
            cost_usd: self.cost_usd,
        }
    }

    /// Adds another usage to this one (costs add when either is known).
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

/// The verdict of a run, taken from the tool's final event, not from its exit code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Whether the agent finished its task without error.
    pub success: bool,
    /// The final answer, or the error text on failure.
    pub text: Option<String>,
    /// The run's total cost, when the tool reports it.
    pub cost_usd: Option<f64>,
    /// The run's total usage, when the tool reports totals (Claude, Codex): this run's
    /// own tokens, of every model it called (cumulative figures are already turned into
    /// this run's share).
    ///
    /// Consumers that bill from [`AgentEvent::Usage`] events must not add this on top: it
    /// is the same tokens, summed by the tool.
    pub usage: Option<Usage>,
    /// The session's running total as the tool reported it, for tools that report
    /// cumulative figures (Codex after `exec resume`): the next run's baseline (see
    /// [`StreamParser::continuing`](crate::StreamParser::continuing)).
    pub session_usage: Option<Usage>,
    /// Model turns, when reported.
    pub num_turns: Option<u64>,
    /// Wall time in milliseconds, when reported.
    pub duration_ms: Option<u64>,
}

/// One normalized event from an agent's output stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The tool reported its session id (keep it: follow-ups continue this session).
    SessionStarted {
        /// The tool's session or thread id.
        session_id: String,
        /// The model, when the tool says.
        model: Option<String>,
    },
    /// Assistant text.
    Text {
        /// The text.
        text: String,
    },
    /// Assistant reasoning (or a reasoning summary).
    Thinking {
        /// The text.
        text: String,
    },
    /// The agent called a tool.
    ToolUse {
        /// The call id, matching the later [`AgentEvent::ToolResult`].
        id: String,
        /// The tool's name as the CLI reports it (`Bash`, `edit`, `command_execution`, …).
        name: String,
        /// The tool's input.
        input: serde_json::Value,
    },
    /// A tool call's result.
    ToolResult {
        /// The call id.
        id: String,
        /// The output text.
        output: String,
        /// Whether the tool call failed.
        is_error: bool,
    },
    /// Usage of one model message, emitted once per message id.
    Usage(Usage),
    /// The run finished (the tool's terminal event, or the end of the stream).
    Result(RunResult),
    /// The provider rejected the credentials (HTTP 401 or 403, or the CLI's own
    /// "authentication failed"). Retrying cannot help, so the run should be stopped at
    /// once and the person told which key to fix.
    AuthFailed {
        /// The HTTP status, when the tool says.
        status: Option<u16>,
        /// The tool's message.
        message: String,
    },
    /// An error the tool reported (not necessarily fatal; the verdict is in `Result`).
    Error {
        /// The message.
        message: String,
    },
    /// A line the parser does not understand (non-JSON noise, unknown event types).
    /// Never dropped, so nothing the tool printed is lost.
    Raw {
        /// The line, without its newline.
        line: String,
    },
}
