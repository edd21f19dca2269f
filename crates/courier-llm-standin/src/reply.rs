//! Writing the answer to a turn in each API's wire format, streamed or whole.

use serde_json::{Value, json};

use crate::{Api, CallInput, FINAL_TEXT, SIDE_TEXT, ToolCall, Turn, figures};

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
