use super::*;
use serde_json::json;

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
    let body =
        json!({"model": "small", "messages": [{"role": "user", "content": "[[write:/x]] title?"}]});
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
