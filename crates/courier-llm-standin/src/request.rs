//! Reading a request: which API, which tools the CLI offered, and what the turn is.

use serde_json::{Value, json};

use crate::{Api, CallInput, ToolCall, Turn, WRITTEN_PREFIX};

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
