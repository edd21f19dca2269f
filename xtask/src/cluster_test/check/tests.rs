//! The checks on recorded event streams: a clean stream passes, and a gap, a duplicate
//! and a reorder are each named.

use super::*;
use crate::cluster_test::http::SseParser;

const M: &str = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";

/// A stream as courier-api sends it for a sandbox whose run printed two lines: the
/// prompt and the empty answer as snapshots, two `text` events, `finished`, `end`.
fn recorded() -> Vec<SseEvent> {
    let wire = format!(
        "event: message\nid: 1\ndata: {{\"seq\":1,\"message\":{{\"seq\":1,\"role\":\"user\",\"content\":\"print\",\"status\":\"completed\"}}}}\n\n\
         : keep-alive\n\n\
         event: message\nid: 1\ndata: {{\"seq\":2,\"message\":{{\"seq\":2,\"role\":\"assistant\",\"content\":\"\",\"status\":\"streaming\"}}}}\n\n\
         event: text\nid: 1\ndata: {{\"seq\":2,\"message_id\":\"{M}\",\"text\":\"L 1\\n\",\"content_end\":4}}\n\n\
         event: agent\nid: 1\ndata: {{\"seq\":2,\"message_id\":\"{M}\",\"event\":{{\"type\":\"raw\"}},\"raw_end\":4}}\n\n\
         event: text\nid: 1\ndata: {{\"seq\":2,\"message_id\":\"{M}\",\"text\":\"L 2\\n\",\"content_end\":8}}\n\n\
         event: finished\nid: 2\ndata: {{\"seq\":2,\"message_id\":\"{M}\",\"status\":\"completed\"}}\n\n\
         event: end\ndata: {{\"status\":\"killed\"}}\n\n"
    );
    let mut parser = SseParser::default();
    wire.split_inclusive('\n')
        .filter_map(|line| parser.line(line))
        .collect()
}

fn stored() -> Vec<StoredMessage> {
    vec![
        StoredMessage {
            seq: 1,
            role: "user".into(),
            content: "print".into(),
            status: "completed".into(),
        },
        StoredMessage {
            seq: 2,
            role: "assistant".into(),
            content: "L 1\nL 2\n".into(),
            status: "completed".into(),
        },
    ]
}

fn named(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn a_complete_ordered_stream_passes() {
    let events = recorded();
    assert_eq!(events.len(), 7);
    assert_eq!(check_stream(&events, &stored()), Vec::<String>::new());
}

#[test]
fn a_missing_text_event_is_a_gap() {
    let mut events = recorded();
    events.remove(2); // "L 1\n"
    let problems = check_stream(&events, &stored());
    assert!(named(&problems, "(a gap)"), "{problems:?}");
    assert!(
        named(&problems, "the client rebuilt 4 bytes, the store has 8"),
        "{problems:?}"
    );
}

#[test]
fn a_repeated_text_event_is_a_duplicate() {
    let mut events = recorded();
    let again = events[4].clone(); // "L 2\n"
    events.insert(5, again);
    let problems = check_stream(&events, &stored());
    assert!(
        named(&problems, "repeats what ended at 8 (a duplicate)"),
        "{problems:?}"
    );
}

#[test]
fn swapped_text_events_are_named() {
    let mut events = recorded();
    events.swap(2, 4);
    let problems = check_stream(&events, &stored());
    // "L 2" (end 8) first skips ahead, then "L 1" (end 4) goes back.
    assert!(named(&problems, "ends at 8, expected 4"), "{problems:?}");
    assert!(named(&problems, "(a duplicate)"), "{problems:?}");
}

#[test]
fn swapped_agent_events_are_out_of_order() {
    let mut events = recorded();
    let late = SseEvent {
        name: "agent".into(),
        id: Some("1".into()),
        data: format!("{{\"seq\":2,\"message_id\":\"{M}\",\"event\":{{}},\"raw_end\":2}}"),
    };
    events.insert(4, late);
    let problems = check_stream(&events, &stored());
    assert!(
        named(&problems, "raw_end 2 after 4 (out of order)"),
        "{problems:?}"
    );
}

#[test]
fn a_second_finished_or_snapshot_is_a_duplicate() {
    let mut events = recorded();
    let finished = events[5].clone();
    events.insert(6, finished);
    let problems = check_stream(&events, &stored());
    assert!(named(&problems, "finished twice"), "{problems:?}");

    let mut events = recorded();
    let snapshot = events[1].clone();
    events.insert(3, snapshot);
    let problems = check_stream(&events, &stored());
    assert!(
        named(&problems, "delivered again as a snapshot"),
        "{problems:?}"
    );
}

#[test]
fn ids_going_down_a_missing_end_and_a_missed_message_are_named() {
    let mut events = recorded();
    events[4].id = Some("0".into());
    let problems = check_stream(&events, &stored());
    assert!(named(&problems, "id 0 after id 1"), "{problems:?}");

    let mut events = recorded();
    events.pop();
    let problems = check_stream(&events, &stored());
    assert!(named(&problems, "without an `end` event"), "{problems:?}");

    // A client on a replica that never hears of the answer: only the prompt.
    let events: Vec<SseEvent> = recorded()
        .into_iter()
        .filter(|e| !e.data.contains("\"seq\":2"))
        .collect();
    let problems = check_stream(&events, &stored());
    assert!(
        named(&problems, "message 2 (assistant) was never delivered"),
        "{problems:?}"
    );
}

#[test]
fn a_stream_cut_mid_message_never_sees_it_finish() {
    let events: Vec<SseEvent> = recorded().into_iter().take(3).collect();
    let problems = check_stream(&events, &stored());
    assert!(
        named(
            &problems,
            "stored completed, the client saw it never finish"
        ),
        "{problems:?}"
    );
}

#[test]
fn a_run_completes_only_with_its_whole_text() {
    assert!(check_run(&stored(), "L 1\nL 2\n", true).is_empty());
    let problems = check_run(&stored(), "L 1\nL 2\nL 3\n", true);
    assert!(
        named(&problems, "8 bytes stored, 12 expected"),
        "{problems:?}"
    );
    let mut streaming = stored();
    streaming[1].status = "streaming".into();
    assert!(named(
        &check_run(&streaming, "L 1\nL 2\n", true),
        "did not complete"
    ));
    // An agent's answer may follow what it streamed, but not replace a line of it.
    assert!(check_run(&stored(), "L 1\n", false).is_empty());
    assert!(!check_run(&stored(), "L 1\n", true).is_empty());
    assert!(!check_run(&stored(), "L 2\n", false).is_empty());
}

#[test]
fn a_timeout_ends_the_sandbox_once() {
    let row = serde_json::json!({"status": "killed", "error_message": "timed out after 90000 ms"});
    let event = |name: &str| serde_json::json!({"fields": {"source": "sandboxd", "event": name}});
    assert!(check_ending(&row, &[event("created"), event("timeout"), event("killed")]).is_empty());
    let problems = check_ending(&row, &[event("killed"), event("killed")]);
    assert!(named(&problems, "killed 2 times"), "{problems:?}");
    let problems = check_ending(&row, &[event("created")]);
    assert!(named(&problems, "never killed"), "{problems:?}");
    let running = serde_json::json!({"status": "running", "error_message": null});
    assert!(named(
        &check_ending(&running, &[event("killed")]),
        "ended running"
    ));
    let by_hand = serde_json::json!({"status": "killed", "error_message": null});
    assert!(named(
        &check_ending(&by_hand, &[event("killed")]),
        "not by its timeout"
    ));
}
