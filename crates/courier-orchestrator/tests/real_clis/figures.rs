//! What the scenario compares: the stand-in's figures and their price, what a CLI sent,
//! and the shape of an agent's events.

use courier_llm_standin::Figures;
use courier_orchestrator::stream::{EventKind, SandboxEvent};
use courier_orchestrator::usage::UsageSummary;
use courier_store::{Money, UsageMetric};
use courier_tools::{AgentEvent, ToolId};
use serde_json::Value;

/// Rates for every token metric of every service (USD per token).
pub const RATES: [(UsageMetric, f64); 4] = [
    (UsageMetric::InputTokens, 0.000_003),
    (UsageMetric::OutputTokens, 0.000_015),
    (UsageMetric::CacheReadTokens, 0.000_000_3),
    (UsageMetric::CacheWriteTokens, 0.000_003_75),
];

/// What a CLI sent, without the bodies' bulk (system prompts, tool schemas): method,
/// path, the headers (credentials were never recorded), the model, the tools offered and
/// what the stand-in answered.
pub fn summarize(request: &Value) -> Value {
    let body = &request["body"];
    let tools: Vec<Value> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            t.get("name")
                .or_else(|| t.pointer("/function/name"))
                .or_else(|| t.get("type"))
                .cloned()
        })
        .collect();
    let mut headers = request["headers"].clone();
    if let Some(h) = headers.as_object_mut() {
        // Per-request ids and lengths would make every recording differ.
        h.retain(|k, _| {
            !matches!(
                k.as_str(),
                "content-length" | "x-client-request-id" | "session_id" | "x-stainless-retry-count"
            ) && !k.starts_with("x-codex-")
                && !k.contains("session")
                && !k.contains("request-id")
        });
    }
    serde_json::json!({
        "method": request["method"],
        "path": request["path"],
        "headers": headers,
        "model": body["model"],
        "stream": body["stream"],
        "body_keys": body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        "tools": tools,
        "answer": request["answer"],
    })
}

/// What must stay the same between two runs of one version against the stand-in: each
/// event's kind, and the values that do not depend on ids or clocks.
pub fn shape(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            AgentEvent::SessionStarted { .. } => "session".to_owned(),
            AgentEvent::Text { text } => format!("text {text}"),
            AgentEvent::Thinking { .. } => "thinking".to_owned(),
            AgentEvent::ToolUse { name, .. } => format!("tool_use {name}"),
            AgentEvent::ToolResult { is_error, .. } => format!("tool_result error={is_error}"),
            AgentEvent::Usage(u) => format!(
                "usage {} {} {} {}",
                u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens
            ),
            AgentEvent::Result(r) => format!("result success={}", r.success),
            AgentEvent::AuthFailed { status, .. } => format!("auth_failed {status:?}"),
            AgentEvent::Error { .. } => "error".to_owned(),
            AgentEvent::Raw { .. } => "raw".to_owned(),
        })
        .collect()
}

/// The figures the stand-in answered with, summed over `requests` (those it answered).
pub fn answered(requests: &[Value]) -> Figures {
    let mut total = Figures::default();
    for r in requests {
        let Some(f) = r.pointer("/answer/figures") else {
            continue;
        };
        let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
        total.input += n("input");
        total.output += n("output");
        total.cache_read += n("cache_read");
        total.cache_write += n("cache_write");
    }
    total
}

pub fn add(a: Figures, b: Figures) -> Figures {
    Figures {
        input: a.input + b.input,
        output: a.output + b.output,
        cache_read: a.cache_read + b.cache_read,
        cache_write: a.cache_write + b.cache_write,
    }
}

pub fn cost_of(f: Figures) -> Money {
    let micros = |q: u64, usd: f64| Money::from_usd(q as f64 * usd).micros();
    Money::from_micros(
        micros(f.input, RATES[0].1)
            + micros(f.output, RATES[1].1)
            + micros(f.cache_read, RATES[2].1)
            + micros(f.cache_write, RATES[3].1),
    )
}

/// The sandbox's billed tokens and cost equal the stand-in's figures for `runs`, priced
/// per run and metric (each run is recorded as one usage record per metric).
pub fn assert_billed(tool: ToolId, what: &str, usage: &UsageSummary, runs: &[Figures]) {
    let expected = runs.iter().copied().fold(Figures::default(), add);
    let cost = Money::from_micros(runs.iter().map(|r| cost_of(*r).micros()).sum());
    let got = Figures {
        input: usage.input_tokens as u64,
        output: usage.output_tokens as u64,
        cache_read: usage.cache_read_tokens as u64,
        cache_write: usage.cache_write_tokens as u64,
    };
    assert_eq!(got, expected, "{tool}: tokens billed after {what}");
    assert_eq!(usage.cost, cost, "{tool}: cost after {what}");
}

pub fn agent_events(events: &[SandboxEvent], seq: i64) -> Vec<AgentEvent> {
    events
        .iter()
        .filter(|e| e.seq == seq)
        .filter_map(|e| match &e.kind {
            EventKind::Agent { event, .. } => Some(event.clone()),
            EventKind::Text { text, .. } => Some(AgentEvent::Text { text: text.clone() }),
            _ => None,
        })
        .collect()
}

pub fn session_of(events: &[AgentEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        AgentEvent::SessionStarted { session_id, .. } => Some(session_id.clone()),
        _ => None,
    })
}
