//! Parsed events of recorded streams, and robustness properties of every parser.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use courier_tools::{AgentEvent, LineBuffer, StreamParser, ToolId};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every recorded stream: (fixture, tool, exit code the tool gave).
const FIXTURES: &[(&str, ToolId, i32)] = &[
    ("claude_success.jsonl", ToolId::Claude, 0),
    ("claude_api_error.jsonl", ToolId::Claude, 0),
    ("codex_success.jsonl", ToolId::Codex, 0),
    ("codex_failed.jsonl", ToolId::Codex, 1),
    ("opencode_success.jsonl", ToolId::Opencode, 0),
    ("opencode_error.jsonl", ToolId::Opencode, 1),
    ("pi_success.jsonl", ToolId::Pi, 0),
    ("pi_model_error.jsonl", ToolId::Pi, 0),
    ("shell_output.txt", ToolId::Shell, 0),
];

fn parse_whole(tool: ToolId, bytes: &[u8], exit: i32) -> Vec<AgentEvent> {
    StreamParser::parse_all(tool, bytes, Some(exit))
}

fn parse_split(tool: ToolId, bytes: &[u8], at: &[usize], exit: i32) -> Vec<AgentEvent> {
    let mut parser = StreamParser::new(tool);
    let mut events = Vec::new();
    let mut start = 0;
    for &cut in at {
        let cut = cut.clamp(start, bytes.len());
        events.extend(parser.feed(&bytes[start..cut]));
        start = cut;
    }
    events.extend(parser.feed(&bytes[start..]));
    events.extend(parser.finish(Some(exit)));
    events
}

fn result(events: &[AgentEvent]) -> &courier_tools::RunResult {
    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Result(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1, "exactly one result: {events:#?}");
    results[0]
}

#[test]
fn every_fixture_parses_to_its_snapshot() {
    for (name, tool, exit) in FIXTURES {
        let events = parse_whole(*tool, &fixture(name), *exit);
        insta::assert_yaml_snapshot!(format!("events_{}", name.replace('.', "_")), events);
    }
}

#[test]
fn verdicts_come_from_the_final_event_not_the_exit_code() {
    let verdict = |name: &str, tool, exit| result(&parse_whole(tool, &fixture(name), exit)).success;
    assert!(verdict("claude_success.jsonl", ToolId::Claude, 1));
    assert!(!verdict("claude_api_error.jsonl", ToolId::Claude, 0));
    assert!(verdict("codex_success.jsonl", ToolId::Codex, 0));
    assert!(!verdict("codex_failed.jsonl", ToolId::Codex, 0));
    assert!(verdict("opencode_success.jsonl", ToolId::Opencode, 0));
    assert!(!verdict("opencode_error.jsonl", ToolId::Opencode, 0));
    assert!(verdict("pi_success.jsonl", ToolId::Pi, 1));
    assert!(!verdict("pi_model_error.jsonl", ToolId::Pi, 0));
}

#[test]
fn claude_usage_is_counted_once_per_message_id() {
    let events = parse_whole(ToolId::Claude, &fixture("claude_success.jsonl"), 0);
    let usages: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Usage(_)))
        .collect();
    // Five assistant events, four distinct message ids.
    assert_eq!(usages.len(), 4);
}

#[test]
fn opencode_repeated_step_finish_is_counted_once() {
    let events = parse_whole(ToolId::Opencode, &fixture("opencode_success.jsonl"), 0);
    let usages = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Usage(_)))
        .count();
    assert_eq!(usages, 2);
    let r = result(&events);
    assert!((r.cost_usd.unwrap() - 0.0164).abs() < 1e-9);
}

#[test]
fn unknown_lines_are_kept_raw() {
    let events = parse_whole(ToolId::Claude, &fixture("claude_api_error.jsonl"), 0);
    assert!(events.contains(&AgentEvent::Raw {
        line: "Warning: terminal does not support colors".into()
    }));
    let events = parse_whole(ToolId::Codex, &fixture("codex_success.jsonl"), 0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::Raw { line } if line.contains("item.plan.delta")))
    );
}

#[test]
fn session_id_is_remembered() {
    let mut p = StreamParser::new(ToolId::Pi);
    p.feed(&fixture("pi_success.jsonl"));
    assert_eq!(p.session_id(), Some("9f2c4e6a-1b3d-4f5a-8c7e-0a1b2c3d4e5f"));
}

#[test]
fn splitting_at_every_offset_gives_the_same_events() {
    for (name, tool, exit) in FIXTURES {
        let bytes = fixture(name);
        let whole = parse_whole(*tool, &bytes, *exit);
        for at in 0..=bytes.len() {
            assert_eq!(
                parse_split(*tool, &bytes, &[at], *exit),
                whole,
                "{name} split at {at}"
            );
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_events() {
    for (name, tool, exit) in FIXTURES {
        let bytes = fixture(name);
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(
            parse_split(*tool, &bytes, &cuts, *exit),
            parse_whole(*tool, &bytes, *exit),
            "{name}"
        );
    }
}

#[test]
fn over_long_lines_become_errors_and_parsing_continues() {
    let mut parser = StreamParser::with_line_buffer(ToolId::Codex, LineBuffer::with_max_line(64));
    let mut bytes = format!(
        "{{\"type\":\"item.completed\",\"item\":{{\"text\":\"{}\"}}}}\n",
        "y".repeat(200)
    )
    .into_bytes();
    bytes.extend_from_slice(b"{\"type\":\"thread.started\",\"thread_id\":\"t\"}\n");
    let events = parser.feed(&bytes);
    assert!(matches!(&events[0], AgentEvent::Error { message } if message.contains("bytes")));
    assert!(matches!(&events[1], AgentEvent::SessionStarted { .. }));
}

fn any_tool() -> impl Strategy<Value = ToolId> {
    prop::sample::select(ToolId::ALL.to_vec())
}

/// Lines that look like each tool's events, with random field values, mixed with noise.
fn jsonish_line() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        "system",
        "assistant",
        "user",
        "result",
        "thread.started",
        "item.started",
        "item.completed",
        "turn.completed",
        "turn.failed",
        "error",
        "step_start",
        "text",
        "reasoning",
        "tool_use",
        "step_finish",
        "done",
        "session",
        "message_end",
        "tool_execution_end",
        "agent_end",
        "auto_retry_start",
    ]);
    let values = prop::sample::select(vec![
        "null",
        "1",
        "-1",
        "1e308",
        "\"x\"",
        "[]",
        "{}",
        "[1,\"a\",{}]",
        "{\"type\":\"text\"}",
        "{\"content\":[{\"type\":\"tool_use\"},{\"type\":\"text\",\"text\":5}]}",
        "{\"usage\":{\"input_tokens\":-3}}",
        "{\"role\":\"assistant\",\"content\":\"s\",\"usage\":{\"cost\":[]}}",
        "true",
    ]);
    let fields = prop::sample::select(vec![
        "message",
        "item",
        "part",
        "usage",
        "error",
        "result",
        "content",
        "subtype",
        "is_error",
        "rejected",
        "tokens",
        "state",
        "id",
        "session_id",
        "sessionID",
    ]);
    prop_oneof![
        (kinds, prop::collection::vec((fields, values), 0..5)).prop_map(|(k, fs)| {
            let body: Vec<String> = fs.iter().map(|(f, v)| format!("\"{f}\":{v}")).collect();
            let sep = if body.is_empty() { "" } else { "," };
            format!("{{\"type\":\"{k}\"{sep}{}}}", body.join(","))
        }),
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_bytes_make_a_parser_panic(tool in any_tool(), bytes in prop::collection::vec(any::<u8>(), 0..2048), exit in any::<Option<i32>>()) {
        let events = StreamParser::parse_all(tool, &bytes, exit);
        prop_assert_eq!(events.iter().filter(|e| matches!(e, AgentEvent::Result(_))).count(), 1);
    }

    #[test]
    fn no_event_shaped_lines_make_a_parser_panic(tool in any_tool(), lines in prop::collection::vec(jsonish_line(), 0..20)) {
        let bytes = lines.join("\n").into_bytes();
        let events = StreamParser::parse_all(tool, &bytes, Some(0));
        prop_assert_eq!(events.iter().filter(|e| matches!(e, AgentEvent::Result(_))).count(), 1);
    }

    #[test]
    fn any_chunking_gives_the_same_events(
        tool in any_tool(),
        lines in prop::collection::vec(jsonish_line(), 0..12),
        mut cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let bytes = lines.join("\r\n").into_bytes();
        for c in &mut cuts { *c %= bytes.len() + 1; }
        cuts.sort_unstable();
        prop_assert_eq!(parse_split(tool, &bytes, &cuts, 0), parse_whole(tool, &bytes, 0));
    }

    #[test]
    fn fixtures_cut_anywhere_twice_give_the_same_events(idx in 0..FIXTURES.len(), a in any::<usize>(), b in any::<usize>()) {
        let (name, tool, exit) = FIXTURES[idx];
        let bytes = fixture(name);
        let mut cuts = [a % (bytes.len() + 1), b % (bytes.len() + 1)];
        cuts.sort_unstable();
        prop_assert_eq!(parse_split(tool, &bytes, &cuts, exit), parse_whole(tool, &bytes, exit));
    }
}

/// The recordings of the real CLIs (`fixtures/real/<tool>-<version>-<scenario>.jsonl`,
/// written by the real-CLI suite with `COURIER_REAL_CLIS_RECORD=1`).
fn real_recordings() -> Vec<(String, ToolId, String, String)> {
    let dir = format!("{}/tests/fixtures/real", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".jsonl") else {
            continue;
        };
        let mut parts = stem.splitn(3, '-');
        let (Some(tool), Some(version), Some(scenario)) =
            (parts.next(), parts.next(), parts.next())
        else {
            panic!("{name}: not <tool>-<version>-<scenario>.jsonl");
        };
        out.push((
            name.clone(),
            tool.parse().unwrap(),
            version.to_owned(),
            scenario.to_owned(),
        ));
    }
    out.sort();
    out
}

#[test]
fn real_cli_recordings_parse_to_their_snapshots_and_verdicts() {
    for (name, tool, _, scenario) in real_recordings() {
        // The exit codes the runs had: a kill is SIGTERM (143), a refused key exits 1.
        let exit = match scenario.as_str() {
            "killed" => 143,
            "unauthorized" => 1,
            _ => 0,
        };
        let events = parse_whole(tool, &fixture(&format!("real/{name}")), exit);
        assert!(
            !events.iter().any(|e| matches!(e, AgentEvent::Raw { .. })),
            "{name}: a line the parser does not understand: {events:#?}"
        );
        let r = result(&events);
        match scenario.as_str() {
            "first" | "follow_up" => assert!(r.success, "{name}: {r:?}"),
            "killed" => assert!(!r.success, "{name}"),
            "unauthorized" => assert!(
                events
                    .iter()
                    .any(|e| matches!(e, AgentEvent::AuthFailed { .. })),
                "{name}: the refused key is reported as such: {events:#?}"
            ),
            other => panic!("{name}: unknown scenario {other}"),
        }
        insta::assert_yaml_snapshot!(format!("real_{}", name.replace('.', "_")), events);
    }
}

/// Moving a pin without recording the new version fails here: the parsers were checked
/// against what the pinned CLI prints.
#[test]
fn every_pinned_cli_version_has_its_recordings() {
    let recordings = real_recordings();
    for spec in courier_tools::registry::all() {
        let Some(package) = spec.package else {
            continue;
        };
        for scenario in ["first", "follow_up", "killed", "unauthorized"] {
            assert!(
                recordings
                    .iter()
                    .any(|(_, tool, version, s)| *tool == spec.id
                        && version == package.version
                        && s == scenario),
                "no recording of {} {} ({scenario}): run `cargo xtask test-real-clis --record`",
                spec.id,
                package.version
            );
        }
    }
}
