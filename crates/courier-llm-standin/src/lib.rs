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

use serde_json::{Value, json};

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

/// The absolute path of the last `[[write:…]]` marker in `text`, and whether `[[slow]]`
/// follows it.
fn marker(text: &str) -> Option<(String, bool)> {
    let start = text.rfind("[[write:")? + "[[write:".len();
    let rest = &text[start..];
    let end = rest.find("]]")?;
    let path = rest[..end].trim();
    if !path.starts_with('/') {
        return None;
    }
    Some((path.to_owned(), rest[end..].contains("[[slow]]")))
}

/// Tools offered in the Responses `input` (`additional_tools` items, as Codex sends them
/// for models in code mode), namespaces flattened.
fn additional_tools(body: &Value) -> Vec<Value> {
    fn flatten(tools: &[Value], out: &mut Vec<Value>) {
        for t in tools {
            match t.get("tools").and_then(Value::as_array) {
                Some(nested) => flatten(nested, out),
                None => out.push(t.clone()),
            }
        }
    }
    let mut out = Vec::new();
    for item in body
        .get("input")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if item.get("type").and_then(Value::as_str) == Some("additional_tools")
            && let Some(tools) = item.get("tools").and_then(Value::as_array)
        {
            flatten(tools, &mut out);
        }
    }
    out
}

/// The tools a request offers: `(name, JSON schema of its input or null, is custom)`.
fn offered_tools(api: Api, body: &Value) -> Vec<(String, Value, bool)> {
    let mut tools = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if api == Api::Responses {
        tools.extend(additional_tools(body));
    }
    tools
        .iter()
        .filter_map(|t| {
            let (name, schema, custom) = match api {
                Api::Anthropic => (t.get("name"), t.get("input_schema"), false),
                Api::Chat => {
                    let f = t.get("function")?;
                    (f.get("name"), f.get("parameters"), false)
                }
                Api::Responses => (
                    t.get("name"),
                    t.get("parameters"),
                    t.get("type").and_then(Value::as_str) == Some("custom"),
                ),
            };
            Some((
                name?.as_str()?.to_owned(),
                schema.cloned().unwrap_or(Value::Null),
                custom,
            ))
        })
        .collect()
}

fn has_property(schema: &Value, name: &str) -> bool {
    schema.get("properties").and_then(|p| p.get(name)).is_some()
}

fn shell_write(path: &str) -> String {
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    format!(
        "mkdir -p \"$(dirname {p})\" && printf '%s\\n' {c} > {p}",
        p = quoted(path),
        c = quoted(&format!("{WRITTEN_PREFIX}{path}"))
    )
}

/// The call that writes `path` with one of the offered tools, in order of preference: a
/// `write` tool, `apply_patch`, `exec_command`, `shell`, Codex's code-mode `exec`
/// (JavaScript calling its nested `apply_patch`), `Bash`. `None` when none is offered.
pub fn write_call(api: Api, body: &Value, path: &str) -> Option<ToolCall> {
    let tools = offered_tools(api, body);
    let content = format!("{WRITTEN_PREFIX}{path}\n");
    let find = |want: &str| {
        tools
            .iter()
            .find(|(name, ..)| name.eq_ignore_ascii_case(want))
    };
    if let Some((name, schema, _)) = find("write") {
        let key = ["file_path", "filePath", "path"]
            .into_iter()
            .find(|k| has_property(schema, k))
            .unwrap_or("file_path");
        return Some(ToolCall {
            name: name.clone(),
            input: CallInput::Json(json!({ key: path, "content": content })),
        });
    }
    if let Some((name, schema, custom)) = find("apply_patch") {
        let patch = format!(
            "*** Begin Patch\n*** Add File: {path}\n+{}\n*** End Patch\n",
            content.trim_end()
        );
        let input = if *custom {
            CallInput::Text(patch)
        } else {
            let key = if has_property(schema, "input") {
                "input"
            } else {
                "patch"
            };
            CallInput::Json(json!({ key: patch }))
        };
        return Some(ToolCall {
            name: name.clone(),
            input,
        });
    }
    if let Some((name, ..)) = find("exec_command") {
        return Some(ToolCall {
            name: name.clone(),
            input: CallInput::Json(json!({ "cmd": shell_write(path) })),
        });
    }
    if let Some((name, ..)) = find("shell") {
        return Some(ToolCall {
            name: name.clone(),
            input: CallInput::Json(json!({ "command": ["bash", "-c", shell_write(path)] })),
        });
    }
    if let Some((name, _, true)) = find("exec") {
        let patch = format!(
            "*** Begin Patch\n*** Add File: {path}\n+{}\n*** End Patch\n",
            content.trim_end()
        );
        let js = format!(
            "const out = await tools.apply_patch({});\ntext(out);\n",
            Value::String(patch)
        );
        return Some(ToolCall {
            name: name.clone(),
            input: CallInput::Text(js),
        });
    }
    find("bash").map(|(name, ..)| ToolCall {
        name: name.clone(),
        input: CallInput::Json(json!({ "command": shell_write(path) })),
    })
}

/// Whether the latest input item of a request is a tool result.
fn ends_with_tool_result(api: Api, body: &Value) -> bool {
    match api {
        Api::Anthropic => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
            .is_some_and(|blocks| {
                blocks
                    .iter()
                    .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            }),
        Api::Chat => {
            body.get("messages")
                .and_then(Value::as_array)
                .and_then(|m| m.last())
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str)
                == Some("tool")
        }
        Api::Responses => body
            .get("input")
            .and_then(Value::as_array)
            .and_then(|items| {
                items.iter().rev().find(|i| {
                    // Codex appends bookkeeping items; only conversation items count.
                    !matches!(
                        i.get("type").and_then(Value::as_str),
                        Some("reasoning" | "ghost_snapshot" | "compaction")
                    )
                })
            })
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("_call_output")),
    }
}

/// The conversation part of a request (messages or input items), as text to search.
fn conversation(api: Api, body: &Value) -> String {
    let key = match api {
        Api::Anthropic | Api::Chat => "messages",
        Api::Responses => "input",
    };
    body.get(key).map(Value::to_string).unwrap_or_default()
}

/// Classifies a request (see the [crate docs](crate#the-script)).
pub fn classify(api: Api, body: &Value) -> Turn {
    if offered_tools(api, body).is_empty() {
        return Turn::Side;
    }
    let found = marker(&conversation(api, body));
    if ends_with_tool_result(api, body) {
        return Turn::Answer {
            slow: found.is_some_and(|(_, slow)| slow),
        };
    }
    match found.and_then(|(path, _)| write_call(api, body, &path).map(|call| (path, call))) {
        Some((path, call)) => Turn::ToolCall { path, call },
        None => Turn::Answer { slow: false },
    }
}

/// The model a request names (echoed in answers).
pub fn model_of(body: &Value) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("standin-model")
        .to_owned()
}

/// Whether a request asks for a streamed answer.
pub fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// One server-sent event: an optional `event:` name and its JSON data (or a raw string
/// such as `[DONE]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    /// The event name, if the API names its events.
    pub event: Option<&'static str>,
    /// The data line.
    pub data: String,
}

impl Sse {
    fn named(event: &'static str, data: Value) -> Sse {
        Sse {
            event: Some(event),
            data: data.to_string(),
        }
    }

    fn data(data: Value) -> Sse {
        Sse {
            event: None,
            data: data.to_string(),
        }
    }

    /// The event as it goes on the wire.
    pub fn to_wire(&self) -> String {
        match self.event {
            Some(name) => format!("event: {name}\ndata: {}\n\n", self.data),
            None => format!("data: {}\n\n", self.data),
        }
    }
}

/// Ids of one answer, from the request's sequence number, so recordings are stable.
fn ids(seq: u64) -> (String, String) {
    (
        format!("msg_standin_{seq:04}"),
        format!("call_standin_{seq:04}"),
    )
}

fn answer_text(turn: &Turn) -> &'static str {
    match turn {
        Turn::Side => SIDE_TEXT,
        _ => FINAL_TEXT,
    }
}

fn input_json(call: &ToolCall) -> Value {
    match &call.input {
        CallInput::Json(v) => v.clone(),
        CallInput::Text(t) => Value::String(t.clone()),
    }
}

/// The Anthropic answer: SSE events, or the message object when not streaming.
pub fn anthropic(seq: u64, model: &str, turn: &Turn) -> (Vec<Sse>, Value) {
    let f = figures(Api::Anthropic, turn);
    let (id, call_id) = ids(seq);
    let start_usage = json!({
        "input_tokens": f.input, "cache_creation_input_tokens": f.cache_write,
        "cache_read_input_tokens": f.cache_read, "output_tokens": 1,
    });
    let final_usage = json!({
        "input_tokens": f.input, "cache_creation_input_tokens": f.cache_write,
        "cache_read_input_tokens": f.cache_read, "output_tokens": f.output,
    });
    let (block, delta, stop) = match turn {
        Turn::ToolCall { call, .. } => (
            json!({"type": "tool_use", "id": call_id, "name": call.name, "input": {}}),
            json!({"type": "input_json_delta", "partial_json": input_json(call).to_string()}),
            "tool_use",
        ),
        _ => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": answer_text(turn)}),
            "end_turn",
        ),
    };
    let whole_block = match turn {
        Turn::ToolCall { call, .. } => {
            json!({"type": "tool_use", "id": call_id, "name": call.name, "input": input_json(call)})
        }
        _ => json!({"type": "text", "text": answer_text(turn)}),
    };
    let events = vec![
        Sse::named(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        Sse::named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": block}),
        ),
        Sse::named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        Sse::named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        Sse::named(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                   "usage": {"output_tokens": f.output}}),
        ),
        Sse::named("message_stop", json!({"type": "message_stop"})),
    ];
    let whole = json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": [whole_block], "stop_reason": stop, "stop_sequence": null, "usage": final_usage,
    });
    (events, whole)
}

/// The Responses answer: SSE events, or the response object when not streaming.
pub fn responses(seq: u64, model: &str, turn: &Turn) -> (Vec<Sse>, Value) {
    let f = figures(Api::Responses, turn);
    let (id, call_id) = ids(seq);
    let resp_id = format!("resp_standin_{seq:04}");
    let item = match turn {
        Turn::ToolCall { call, .. } => match &call.input {
            CallInput::Text(text) => {
                json!({"type": "custom_tool_call", "id": format!("ctc_{seq:04}"),
                "call_id": call_id, "name": call.name, "input": text, "status": "completed"})
            }
            CallInput::Json(args) => json!({"type": "function_call", "id": format!("fc_{seq:04}"),
                "call_id": call_id, "name": call.name, "arguments": args.to_string(), "status": "completed"}),
        },
        _ => json!({"type": "message", "id": id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": answer_text(turn), "annotations": []}]}),
    };
    let usage = json!({
        "input_tokens": f.input + f.cache_read,
        "input_tokens_details": {"cached_tokens": f.cache_read},
        "output_tokens": f.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": f.input + f.cache_read + f.output,
    });
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": resp_id, "object": "response", "created_at": 0, "status": status,
               "model": model, "output": output, "usage": usage})
    };
    let mut events = vec![
        Sse::named(
            "response.created",
            json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        ),
        Sse::named(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
        ),
    ];
    if !matches!(turn, Turn::ToolCall { .. }) {
        events.push(Sse::named(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": id, "output_index": 0,
                   "content_index": 0, "delta": answer_text(turn)}),
        ));
    }
    events.push(Sse::named(
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    let done = response("completed", json!([item]), usage);
    events.push(Sse::named(
        "response.completed",
        json!({"type": "response.completed", "response": done}),
    ));
    (events, done)
}

/// The chat completions answer: SSE chunks, or the completion object when not streaming.
pub fn chat(seq: u64, model: &str, turn: &Turn) -> (Vec<Sse>, Value) {
    let f = figures(Api::Chat, turn);
    let (_, call_id) = ids(seq);
    let id = format!("chatcmpl-standin-{seq:04}");
    let usage = json!({
        "prompt_tokens": f.input + f.cache_read,
        "completion_tokens": f.output,
        "total_tokens": f.input + f.cache_read + f.output,
        "prompt_tokens_details": {"cached_tokens": f.cache_read},
    });
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let (delta, message, finish) = match turn {
        Turn::ToolCall { call, .. } => {
            let args = input_json(call).to_string();
            let calls = json!([{"index": 0, "id": call_id, "type": "function",
                                "function": {"name": call.name, "arguments": args}}]);
            (
                json!({"role": "assistant", "content": null, "tool_calls": calls}),
                json!({"role": "assistant", "content": null, "tool_calls": calls}),
                "tool_calls",
            )
        }
        _ => (
            json!({"role": "assistant", "content": answer_text(turn)}),
            json!({"role": "assistant", "content": answer_text(turn)}),
            "stop",
        ),
    };
    let events = vec![
        Sse::data(chunk(delta, Value::Null)),
        Sse::data(chunk(json!({}), json!(finish))),
        Sse::data(
            json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                         "choices": [], "usage": usage}),
        ),
        Sse {
            event: None,
            data: "[DONE]".to_owned(),
        },
    ];
    let whole = json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
    (events, whole)
}

/// The answer to a classified request over `api`.
pub fn answer(api: Api, seq: u64, model: &str, turn: &Turn) -> (Vec<Sse>, Value) {
    match api {
        Api::Anthropic => anthropic(seq, model, turn),
        Api::Responses => responses(seq, model, turn),
        Api::Chat => chat(seq, model, turn),
    }
}

/// The provider's own body for a rejected key.
pub fn unauthorized_body(api: Api) -> Value {
    match api {
        Api::Anthropic => json!({"type": "error", "error": {
            "type": "authentication_error", "message": "invalid x-api-key"}}),
        Api::Responses | Api::Chat => json!({"error": {
            "message": "Incorrect API key provided (stand-in).",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    }
}

/// Headers worth recording: everything but credentials and cookies.
pub fn recordable_header(name: &str) -> bool {
    !matches!(
        name.to_ascii_lowercase().as_str(),
        "authorization" | "x-api-key" | "cookie" | "proxy-authorization" | "api-key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anthropic_body(last: Value) -> Value {
        json!({"model": "claude-opus-4-6", "stream": true,
            "tools": [{"name": "Write", "input_schema": {"properties": {"file_path": {}, "content": {}}}},
                      {"name": "Bash", "input_schema": {"properties": {"command": {}}}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Please [[write:/home/user/project/a.txt]] [[slow]]"}]}, last]})
    }

    #[test]
    fn a_prompt_with_a_write_marker_gets_one_write_call() {
        let body = json!({"model": "m", "tools": [{"name": "Write", "input_schema": {"properties": {"file_path": {}, "content": {}}}}],
            "messages": [{"role": "user", "content": "go [[write:/p/a.txt]]"}]});
        let turn = classify(Api::Anthropic, &body);
        assert_eq!(
            turn,
            Turn::ToolCall {
                path: "/p/a.txt".into(),
                call: ToolCall {
                    name: "Write".into(),
                    input: CallInput::Json(
                        json!({"file_path": "/p/a.txt", "content": "standin wrote /p/a.txt\n"})
                    ),
                },
            }
        );
    }

    #[test]
    fn a_tool_result_gets_the_final_answer_and_slow_is_seen() {
        let body = anthropic_body(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "x", "content": "ok"}]}));
        assert_eq!(classify(Api::Anthropic, &body), Turn::Answer { slow: true });
    }

    #[test]
    fn requests_without_tools_are_side_requests() {
        let body = json!({"model": "small", "messages": [{"role": "user", "content": "[[write:/x]] title?"}]});
        assert_eq!(classify(Api::Chat, &body), Turn::Side);
    }

    #[test]
    fn each_clis_write_tool_gets_its_own_argument_names() {
        let chat = |props: Value| {
            json!({"tools": [{"type": "function", "function": {"name": "write", "parameters": {"properties": props}}}],
                   "messages": [{"role": "user", "content": "[[write:/w/f]]"}]})
        };
        let opencode = classify(Api::Chat, &chat(json!({"filePath": {}, "content": {}})));
        let pi = classify(Api::Chat, &chat(json!({"path": {}, "content": {}})));
        let arg = |t: &Turn, k: &str| match t {
            Turn::ToolCall {
                call:
                    ToolCall {
                        input: CallInput::Json(v),
                        ..
                    },
                ..
            } => v.get(k).cloned(),
            _ => None,
        };
        assert_eq!(arg(&opencode, "filePath"), Some(json!("/w/f")));
        assert_eq!(arg(&pi, "path"), Some(json!("/w/f")));
        let codex = json!({"tools": [{"type": "function", "name": "exec_command", "parameters": {}},
                                     {"type": "custom", "name": "apply_patch"}],
                           "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[[write:/w/g]]"}]}]});
        match classify(Api::Responses, &codex) {
            Turn::ToolCall {
                call:
                    ToolCall {
                        name,
                        input: CallInput::Text(patch),
                    },
                ..
            } => {
                assert_eq!(name, "apply_patch");
                assert!(patch.contains("*** Add File: /w/g\n+standin wrote /w/g\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn codex_code_mode_tools_in_the_input_get_a_javascript_exec_call() {
        let body = json!({"input": [
            {"type": "additional_tools", "role": "developer", "tools": [{"type": "namespace", "name": "functions",
                "tools": [{"type": "custom", "name": "exec"}, {"type": "function", "name": "wait"}]}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[[write:/w/h]]"}]}]});
        match classify(Api::Responses, &body) {
            Turn::ToolCall {
                call:
                    ToolCall {
                        name,
                        input: CallInput::Text(js),
                    },
                ..
            } => {
                assert_eq!(name, "exec");
                assert!(js.starts_with("const out = await tools.apply_patch(\"*** Begin Patch"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn codex_follow_up_after_a_function_output_is_an_answer() {
        let body = json!({"tools": [{"type": "function", "name": "exec_command"}],
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[[write:/a]]"}]},
                      {"type": "function_call", "call_id": "c"},
                      {"type": "function_call_output", "call_id": "c", "output": "ok"},
                      {"type": "reasoning"}]});
        assert_eq!(
            classify(Api::Responses, &body),
            Turn::Answer { slow: false }
        );
    }

    #[test]
    fn answers_carry_the_figures_on_the_wire() {
        let turn = Turn::Answer { slow: false };
        let (events, whole) = anthropic(1, "m", &turn);
        assert!(events[4].data.contains("\"output_tokens\":25"));
        assert_eq!(whole["usage"]["cache_read_input_tokens"], 600);
        let (events, _) = chat(2, "m", &turn);
        let usage: Value = serde_json::from_str(&events[2].data).unwrap();
        assert_eq!(usage["usage"]["prompt_tokens"], 2100);
        assert_eq!(events.last().unwrap().to_wire(), "data: [DONE]\n\n");
        let (_, done) = responses(3, "m", &turn);
        assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 600);
    }

    #[test]
    fn credentials_are_never_recorded() {
        for h in ["Authorization", "x-api-key", "Cookie"] {
            assert!(!recordable_header(h), "{h}");
        }
        assert!(recordable_header("user-agent"));
    }
}
