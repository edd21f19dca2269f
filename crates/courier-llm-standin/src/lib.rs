//! # courier-llm-standin
//!
//! A scripted stand-in for the LLM APIs the agent CLIs call, so the **real** CLIs can run
//! headless in tests without a provider account or a network: it is started inside the
//! agent's sandbox and the CLI is pointed at `http://127.0.0.1:<port>` with its base-URL
//! setting.
//!
//! It speaks, with SSE streaming (and plain JSON when a request does not ask to stream):
//!
//! - the Anthropic Messages API (`POST …/v1/messages`, Claude Code);
//! - the OpenAI Responses API (`POST …/responses`, Codex), refusing its WebSocket upgrade
//!   with `426 Upgrade Required` so the client falls back to HTTP;
//! - OpenAI-compatible chat completions (`POST …/chat/completions`, OpenRouter-style:
//!   OpenCode and Pi).
//!
//! ## The script
//!
//! A request is classified into a [`Turn`] from what it carries (see [`classify`]):
//!
//! - the latest user text holds `[[write:/abs/path]]` and no tool result follows it: the
//!   answer is **one tool call** that writes `standin wrote /abs/path` to that file, with
//!   whatever write tool the CLI offers (`Write`, `write`, `apply_patch`, `exec_command`,
//!   `shell`, `Bash`);
//! - a tool result is the latest input: the **final answer** ([`FINAL_TEXT`]); with
//!   `[[slow]]` after the write marker it is held back [`Config::slow`] first, so a test can
//!   kill the agent while it waits;
//! - no tools offered (title generation and other side requests): a short text.
//!
//! Every answer carries the fixed token figures of [`figures`], so a test knows exactly
//! what each run cost. A request whose key is not [`Config::key`] gets the provider's own
//! `401` error body.
//!
//! Every request is appended to the recording file ([`Config::record`]) as one JSON line:
//! what the CLI sent (headers without credentials, body) and what it got ([`Turn`] and
//! figures).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

mod reply;
mod request;

#[cfg(test)]
mod tests;

pub use reply::{Sse, answer, anthropic, chat, recordable_header, responses, unauthorized_body};
pub use request::{classify, model_of, wants_stream, write_call};

/// The text of every final answer.
pub const FINAL_TEXT: &str = "Done: the file is written.";
/// The text of side requests (titles, summaries).
pub const SIDE_TEXT: &str = "Stand-in title";
/// What the write tool call puts in the file, before the path.
pub const WRITTEN_PREFIX: &str = "standin wrote ";

/// How the stand-in runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The only key accepted (`x-api-key` or `Authorization: Bearer`); any other gets 401.
    pub key: String,
    /// Where each request is recorded (JSON lines); `None` records nothing.
    pub record: Option<PathBuf>,
    /// How long a `[[slow]]` final answer is held back.
    pub slow: Duration,
}

/// Which API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Responses.
    Responses,
    /// OpenAI-compatible chat completions.
    Chat,
}

impl Api {
    /// The API a `POST` path belongs to, if any.
    ///
    /// ```
    /// use courier_llm_standin::Api;
    /// assert_eq!(Api::from_path("/v1/messages"), Some(Api::Anthropic));
    /// assert_eq!(Api::from_path("/v1/responses"), Some(Api::Responses));
    /// assert_eq!(Api::from_path("/api/v1/chat/completions"), Some(Api::Chat));
    /// assert_eq!(Api::from_path("/v1/messages/count_tokens"), None);
    /// ```
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/messages") {
            Some(Api::Anthropic)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else if path.ends_with("/chat/completions") {
            Some(Api::Chat)
        } else {
            None
        }
    }

    /// A short name for recordings.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic",
            Api::Responses => "responses",
            Api::Chat => "chat",
        }
    }
}

/// What a request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// One tool call writing [`WRITTEN_PREFIX`]`path` to `path`.
    ToolCall {
        /// The absolute path from the `[[write:…]]` marker.
        path: String,
        /// The tool the CLI offered and the call's input.
        call: ToolCall,
    },
    /// The final answer, held back first when `slow`.
    Answer {
        /// Whether the prompt asked for a slow answer.
        slow: bool,
    },
    /// A side request (no tools offered): a short text.
    Side,
}

impl Turn {
    /// A short name for recordings and figures.
    pub fn as_str(&self) -> &'static str {
        match self {
            Turn::ToolCall { .. } => "tool_call",
            Turn::Answer { .. } => "answer",
            Turn::Side => "side",
        }
    }
}

/// A tool call the stand-in makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The tool's name as offered.
    pub name: String,
    /// Its input: a JSON object (function tools) or free text (custom tools).
    pub input: CallInput,
}

/// The input of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInput {
    /// Arguments of a function tool.
    Json(Value),
    /// The text of a free-form ("custom") tool such as Codex's `apply_patch`.
    Text(String),
}

/// Token figures of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Input tokens not read from the cache.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the cache.
    pub cache_read: u64,
    /// Input tokens written to the cache (Anthropic only).
    pub cache_write: u64,
}

/// The figures every answer of `turn`'s kind over `api` reports. The OpenAI APIs have no
/// cache writes; their `input_tokens` / `prompt_tokens` on the wire include the cached
/// ones (`input + cache_read`).
pub fn figures(api: Api, turn: &Turn) -> Figures {
    let cache_write = |n| if api == Api::Anthropic { n } else { 0 };
    match turn {
        Turn::ToolCall { .. } => Figures {
            input: 1200,
            output: 40,
            cache_read: 300,
            cache_write: cache_write(100),
        },
        Turn::Answer { .. } => Figures {
            input: 1500,
            output: 25,
            cache_read: 600,
            cache_write: cache_write(50),
        },
        Turn::Side => Figures {
            input: 80,
            output: 6,
            cache_read: 0,
            cache_write: 0,
        },
    }
}
