//! Messages and live events: a shell sandbox's output, SSE resume without gaps or
//! duplicates, and streams ended by a shutdown.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{Sse, read_events, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_sandbox_runs_its_command_and_streams_the_output() {
    let s = server().await;
    let id = s.shell(&s.alice, "echo hello-from-shell").await;
    let (status, sandbox) = s.get(&s.alice, &format!("/v1/sandboxes/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(sandbox["status"], "running");
    assert_eq!(sandbox["cli_tool"], "shell");
    let res = s
        .req(Method::GET, &s.alice, &format!("/v1/sandboxes/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(res, |e| {
        e.data["seq"] == 2 && (e.event == "finished" || e.data["message"]["status"] == "completed")
    })
    .await;
    let text = transcript(&events);
    assert!(text.contains("hello-from-shell"), "{events:?}");
    let messages = s
        .wait_messages(&s.alice, &id, |m| {
            m.len() == 2 && m[1]["status"] == "completed"
        })
        .await;
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "echo hello-from-shell");
    assert!(
        messages[1]["content"]
            .as_str()
            .unwrap()
            .contains("hello-from-shell")
    );
    assert!(messages[1].get("raw_log").is_none());
    let (_, raw) = s
        .get(
            &s.alice,
            &format!("/v1/sandboxes/{id}/messages?raw=true&after_seq=1"),
        )
        .await;
    assert_eq!(raw["items"].as_array().unwrap().len(), 1);
    assert!(raw["items"][0].get("raw_log").is_some());
    // The project counts it as active.
    let (_, project) = s
        .get(&s.alice, &format!("/v1/projects/{}", s.alice.project_id))
        .await;
    assert_eq!(project["active_sandboxes"], 1);
}

/// What a client would show: messages upserted by seq, text appended.
fn transcript(events: &[Sse]) -> String {
    let mut messages: std::collections::BTreeMap<i64, String> = Default::default();
    for e in events {
        let seq = e.data["seq"].as_i64().unwrap_or(0);
        match e.event.as_str() {
            "message" => {
                messages.insert(
                    seq,
                    e.data["message"]["content"].as_str().unwrap().to_owned(),
                );
            }
            "text" => messages
                .entry(seq)
                .or_default()
                .push_str(e.data["text"].as_str().unwrap()),
            _ => {}
        }
    }
    messages.into_values().collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_last_event_id_without_gaps_or_duplicates() {
    let s = server().await;
    let id = s
        .shell(&s.alice, "for i in 1 2 3; do echo line-$i; sleep 0.2; done")
        .await;
    s.wait_messages(&s.alice, &id, |m| {
        m.len() == 2 && m[1]["status"] == "completed"
    })
    .await;
    let (status, _) = s
        .post(
            &s.alice,
            &format!("/v1/sandboxes/{id}/messages"),
            json!({ "text": "echo second-run" }),
        )
        .await;
    assert_eq!(status, 201);
    let messages = s
        .wait_messages(&s.alice, &id, |m| {
            m.len() == 4 && m[3]["status"] == "completed"
        })
        .await;
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap()
            .contains("second-run")
    );
    // A full read, then a read resumed after each id seen: always exactly the rest.
    let events_url = format!("/v1/sandboxes/{id}/events");
    let full = read_events(
        s.req(Method::GET, &s.alice, &events_url)
            .send()
            .await
            .unwrap(),
        |e| {
            e.data["seq"] == 4
                && (e.event == "finished"
                    || (e.event == "message" && e.data["message"]["status"] == "completed"))
        },
    )
    .await;
    let seqs: Vec<i64> = full
        .iter()
        .map(|e| e.data["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{full:?}");
    for (i, e) in full.iter().enumerate() {
        let last = e.id.clone().unwrap();
        let expected: Vec<i64> = seqs[i + 1..].to_vec();
        if expected.is_empty() {
            continue;
        }
        let res = s
            .req(Method::GET, &s.alice, &events_url)
            .header("last-event-id", &last)
            .send()
            .await
            .unwrap();
        let rest = read_events(res, |e| e.data["seq"] == 4).await;
        let got: Vec<i64> = rest
            .iter()
            .map(|e| e.data["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(got, expected, "after id {last}");
    }
    // ?after= does the same for clients that cannot set headers.
    let res = s
        .req(Method::GET, &s.alice, &format!("{events_url}?after=3"))
        .send()
        .await
        .unwrap();
    let rest = read_events(res, |e| e.data["seq"] == 4).await;
    assert_eq!(rest.len(), 1);
    assert!(
        rest[0].data["message"]["content"]
            .as_str()
            .unwrap()
            .contains("second-run")
    );
    // A bad Last-Event-ID is a structured 422.
    let res = s
        .req(Method::GET, &s.alice, &events_url)
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_message_resumes_with_the_whole_message_once() {
    let s = server().await;
    let id = s
        .shell(&s.alice, "echo first; sleep 1.5; echo second")
        .await;
    let url = format!("/v1/sandboxes/{id}/events");
    // Read until the first line of output, then hang up.
    let partial = read_events(
        s.req(Method::GET, &s.alice, &url).send().await.unwrap(),
        |e| {
            e.event == "text"
                || (e.event == "message"
                    && e.data["message"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .contains("first"))
        },
    )
    .await;
    let last = partial.last().unwrap().id.clone().unwrap();
    assert_eq!(
        last, "1",
        "the assistant message (seq 2) is still open: {partial:?}"
    );
    let rest = read_events(
        s.req(Method::GET, &s.alice, &url)
            .header("last-event-id", &last)
            .send()
            .await
            .unwrap(),
        |e| {
            e.event == "finished"
                || (e.event == "message" && e.data["message"]["status"] == "completed")
        },
    )
    .await;
    let text = transcript(&rest);
    assert!(
        text.contains("first") && text.contains("second"),
        "{rest:?}"
    );
    assert_eq!(text.matches("first").count(), 1, "{rest:?}");
    assert!(rest.iter().all(|e| e.data["seq"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_fails_readiness() {
    let s = server().await;
    let id = s.shell(&s.alice, "sleep 30").await;
    let stream = s
        .req(Method::GET, &s.alice, &format!("/v1/sandboxes/{id}/events"))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_events(stream, |e| e.event == "shutdown"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.api.begin_shutdown();
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.last().unwrap().event, "shutdown");
    let res = s
        .http
        .get(format!("{}/readyz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    s.post(&s.alice, &format!("/v1/sandboxes/{id}/kill"), json!({}))
        .await;
}
