//! The process service over real HTTP: event order, exit statuses, keepalives, process
//! lifetime, disconnects, 100 MB of output, fan-out, stdin, PTY and users.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use courier_e2b::{codec::Codec, proto::process as pb};
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn start_streams_start_then_data_then_end_with_go_exit_status() {
    let envd = start().await;
    let (messages, trailer) = stream(
        envd.addr,
        "process.Process/Start",
        sh("echo hi; echo oops >&2; exit 3"),
        &[],
    )
    .await
    .collect()
    .await;
    assert_eq!(trailer, json!({}));
    assert!(
        messages[0]["event"]["start"]["pid"].as_u64().unwrap() > 0,
        "{messages:?}"
    );
    assert_eq!(stdout_of(&messages), "hi\n");
    let end = &messages.last().unwrap()["event"]["end"];
    assert_eq!(
        end,
        &json!({"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"})
    );
    // Successful exits omit the zero exit code and the error, as protojson does.
    let (messages, _) = stream(envd.addr, "process.Process/Start", sh("true"), &[])
        .await
        .collect()
        .await;
    assert_eq!(
        messages.last().unwrap()["event"]["end"],
        json!({"exited": true, "status": "exit status 0"})
    );
}

#[tokio::test]
async fn idle_streams_get_keepalive_events() {
    let envd = start().await;
    let (messages, trailer) = stream(
        envd.addr,
        "process.Process/Start",
        sh("sleep 2.5; echo done"),
        &[("keepalive-ping-interval", "1")],
    )
    .await
    .collect()
    .await;
    assert_eq!(trailer, json!({}));
    let keepalives = messages
        .iter()
        .filter(|m| m["event"].get("keepalive").is_some())
        .count();
    assert!(keepalives >= 1, "{messages:?}");
    assert_eq!(stdout_of(&messages), "done\n");
}

#[tokio::test]
async fn connect_timeout_ms_is_the_process_lifetime() {
    let envd = start().await;
    let started = std::time::Instant::now();
    let mut frames = stream(
        envd.addr,
        "process.Process/Start",
        sh("sleep 30"),
        &[("connect-timeout-ms", "700")],
    )
    .await;
    let (_, first) = frames.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_i64().unwrap();
    let (_, trailer) = frames.collect().await;
    assert_eq!(trailer["error"]["code"], "deadline_exceeded", "{trailer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The process was SIGKILLed and leaves the table.
    for _ in 0..50 {
        let list = unary(envd.addr, "process.Process/List", json!({}))
            .await
            .json();
        let alive = list["processes"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["pid"] == pid));
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("process {pid} still listed after its lifetime");
}

#[tokio::test]
async fn client_disconnect_does_not_kill_the_process() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("done");
    let script = format!("sleep 1; echo finished > {}", marker.display());
    let mut frames = stream(envd.addr, "process.Process/Start", sh(&script), &[]).await;
    let (_, first) = frames.next().await.unwrap();
    assert!(first["event"]["start"].is_object());
    drop(frames);
    for _ in 0..60 {
        if std::fs::read_to_string(&marker).is_ok_and(|s| s == "finished\n") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the process did not finish after its client went away");
}

#[tokio::test]
async fn hundred_megabytes_of_stdout_arrive_intact() {
    const TOTAL: usize = 100_000_000;
    let envd = start().await;
    // A deterministic byte pattern so the expected digest is computed here.
    let pattern: Vec<u8> = (0..=255u8).collect();
    let mut expected = Sha256::new();
    let mut left = TOTAL;
    while left > 0 {
        let n = left.min(pattern.len());
        expected.update(&pattern[..n]);
        left -= n;
    }
    let script = format!(
        "python3 -c 'import sys; p=bytes(range(256)); o=sys.stdout.buffer; [o.write(p) for _ in range({})]' || \
         perl -e 'my $p = join(\"\", map {{ chr }} 0..255); print $p for 1..{}'",
        TOTAL / 256,
        TOTAL / 256
    );
    let start = pb::StartRequest {
        process: Some(pb::ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    };
    assert_eq!(TOTAL % 256, 0);
    let body = courier_e2b::codec::Envelope::message(Codec::Proto.encode(&start)).to_bytes();
    let response = open(
        envd.addr,
        "POST",
        "/process.Process/Start",
        &[("content-type", "application/connect+proto")],
        body,
    )
    .await;
    let mut frames = Frames::new(response);
    let mut digest = Sha256::new();
    let mut count = 0usize;
    let mut end = None;
    while let Some((is_end, payload)) = frames.next_raw().await {
        if is_end {
            assert_eq!(&payload[..], b"{}");
            break;
        }
        let message: pb::StartResponse = Codec::Proto.decode(&payload).unwrap();
        match message.event.and_then(|e| e.event) {
            Some(pb::process_event::Event::Data(data)) => {
                if let Some(pb::process_event::data_event::Output::Stdout(bytes)) = data.output {
                    count += bytes.len();
                    digest.update(&bytes);
                }
            }
            Some(pb::process_event::Event::End(e)) => end = Some(e),
            _ => {}
        }
    }
    assert_eq!(end.map(|e| e.exit_code), Some(0));
    assert_eq!(count, TOTAL);
    assert_eq!(digest.finalize(), expected.finalize());
}

#[tokio::test]
async fn several_clients_see_the_same_output_and_exited_processes_replay_their_end() {
    let envd = start().await;
    let mut request = sh("sleep 1; echo shared");
    request["tag"] = json!("job-1");
    let mut first = stream(envd.addr, "process.Process/Start", request, &[]).await;
    let (_, start_event) = first.next().await.unwrap();
    let pid = start_event["event"]["start"]["pid"].as_u64().unwrap();
    let second = stream(
        envd.addr,
        "process.Process/Connect",
        json!({"process": {"tag": "job-1"}}),
        &[],
    )
    .await;
    let list = unary(envd.addr, "process.Process/List", json!({}))
        .await
        .json();
    let listed = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
        .unwrap();
    assert_eq!(listed["tag"], "job-1");
    assert_eq!(listed["config"]["cmd"], "/bin/sh");
    let (a, _) = first.collect().await;
    let (b, trailer) = second.collect().await;
    assert_eq!(trailer, json!({}));
    assert_eq!(stdout_of(&a), "shared\n");
    assert_eq!(stdout_of(&b), "shared\n");
    assert_eq!(b[0]["event"]["start"]["pid"].as_u64(), Some(pid));
    // Connecting after the exit replays start + end.
    let (replay, _) = stream(
        envd.addr,
        "process.Process/Connect",
        json!({"process": {"pid": pid}}),
        &[],
    )
    .await
    .collect()
    .await;
    assert_eq!(replay.len(), 2, "{replay:?}");
    assert_eq!(replay[1]["event"]["end"]["status"], "exit status 0");
}

#[tokio::test]
async fn stdin_send_input_stream_input_and_close_stdin() {
    let envd = start().await;
    let mut start_request = sh("cat");
    start_request["stdin"] = json!(true);
    let mut frames = stream(envd.addr, "process.Process/Start", start_request, &[]).await;
    let (_, first) = frames.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    let sent = unary(
        envd.addr,
        "process.Process/SendInput",
        json!({"process": {"pid": pid}, "input": {"stdin": "aGVsbG8K"}}),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    // Client streaming: start, then data, then the body ends.
    let mut body = envelope(&json!({"start": {"process": {"pid": pid}}})).to_vec();
    body.extend_from_slice(&envelope(
        &json!({"data": {"input": {"stdin": "d29ybGQK"}}}),
    ));
    let reply = request(
        envd.addr,
        "POST",
        "/process.Process/StreamInput",
        &[("content-type", "application/connect+json")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.ends_with(b"\x02\x00\x00\x00\x02{}"),
        "{:?}",
        reply.body
    );
    let closed = unary(
        envd.addr,
        "process.Process/CloseStdin",
        json!({"process": {"pid": pid}}),
    )
    .await;
    assert_eq!(closed.status, 200);
    let (messages, _) = frames.collect().await;
    assert_eq!(stdout_of(&messages), "hello\nworld\n");
    assert_eq!(messages.last().unwrap()["event"]["end"]["exited"], true);
}

#[tokio::test]
async fn stdin_false_reads_dev_null() {
    let envd = start().await;
    let (messages, _) = stream(envd.addr, "process.Process/Start", sh("cat; echo eof"), &[])
        .await
        .collect()
        .await;
    assert_eq!(stdout_of(&messages), "eof\n");
}

#[tokio::test]
async fn pty_echoes_input_and_resizes() {
    let envd = start().await;
    let request = json!({
        "process": {"cmd": "/bin/sh", "args": ["-i"], "envs": {"TERM": "xterm-256color", "PS1": "$ "}},
        "pty": {"size": {"cols": 80, "rows": 24}},
    });
    let mut frames = stream(envd.addr, "process.Process/Start", request, &[]).await;
    let (_, first) = frames.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let send = |text: String| {
        let addr = envd.addr;
        async move {
            let reply = unary(
                addr,
                "process.Process/SendInput",
                json!({"process": {"pid": pid}, "input": {"pty": text}}),
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    };
    send(b64("stty size\n")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resized = unary(
        envd.addr,
        "process.Process/Update",
        json!({"process": {"pid": pid}, "pty": {"size": {"cols": 100, "rows": 40}}}),
    )
    .await;
    assert_eq!(resized.status, 200, "{}", resized.text());
    send(b64("stty size; exit\n")).await;
    // stdin on a PTY process is refused.
    let refused = unary(
        envd.addr,
        "process.Process/SendInput",
        json!({"process": {"pid": pid}, "input": {"stdin": "eA=="}}),
    )
    .await;
    assert_ne!(refused.status, 200);
    let (messages, _) = frames.collect().await;
    let output = pty_of(&messages);
    assert!(output.contains("24 80"), "{output:?}");
    assert!(output.contains("40 100"), "{output:?}");
}

#[tokio::test]
async fn send_signal_kills_and_reports_signal_status() {
    let envd = start().await;
    let mut frames = stream(envd.addr, "process.Process/Start", sh("exec sleep 30"), &[]).await;
    let (_, first) = frames.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    let reply = unary(
        envd.addr,
        "process.Process/SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (messages, _) = frames.collect().await;
    assert_eq!(
        messages.last().unwrap()["event"]["end"],
        json!({"exitCode": -1, "status": "signal: killed", "error": "signal: killed"})
    );
}

#[tokio::test]
async fn unknown_pid_tag_and_bad_cwd_are_clear_errors() {
    let envd = start().await;
    let reply = unary(
        envd.addr,
        "process.Process/SendSignal",
        json!({"process": {"pid": 999_999}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json(),
        json!({"code": "not_found", "message": "process with pid 999999 not found"})
    );
    let (_, trailer) = stream(
        envd.addr,
        "process.Process/Connect",
        json!({"process": {"tag": "nope"}}),
        &[],
    )
    .await
    .collect()
    .await;
    assert_eq!(trailer["error"]["code"], "not_found");
    let mut request = sh("true");
    request["process"]["cwd"] = json!("/definitely/not/here");
    let (_, trailer) = stream(envd.addr, "process.Process/Start", request, &[])
        .await
        .collect()
        .await;
    assert_eq!(
        trailer["error"],
        json!({"code": "invalid_argument", "message": "cwd '/definitely/not/here' does not exist"})
    );
}

#[tokio::test]
async fn env_and_cwd_reach_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let envd = start_with(
        courier_envd::Envd::builder()
            .env_var("SANDBOX_LEVEL", "s")
            .env_var("OVERRIDE", "sandbox"),
    )
    .await;
    let mut request = sh("echo $SANDBOX_LEVEL $OVERRIDE $(pwd) $HOME");
    request["process"]["envs"] = json!({"OVERRIDE": "request"});
    request["process"]["cwd"] = json!(dir.path());
    let (messages, _) = stream(envd.addr, "process.Process/Start", request, &[])
        .await
        .collect()
        .await;
    let out = stdout_of(&messages);
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(
        out.starts_with(&format!("s request {} ", dir.path().display())),
        "{out:?} {home}"
    );
}

#[tokio::test]
async fn processes_run_as_the_basic_auth_user() {
    if !is_root() {
        println!("skipped: switching users needs root");
        return;
    }
    if !std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("nobody:"))
    {
        println!("skipped: no 'nobody' account");
        return;
    }
    let envd = start().await;
    let mut request = sh("id -u; id -g");
    request["process"]["cwd"] = json!("/");
    // "nobody:" in base64.
    let (messages, trailer) = stream(
        envd.addr,
        "process.Process/Start",
        request,
        &[("authorization", "Basic bm9ib2R5Og==")],
    )
    .await
    .collect()
    .await;
    assert_eq!(trailer, json!({}), "{messages:?}");
    let out = stdout_of(&messages);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .unwrap()
        .split(':')
        .collect();
    assert_eq!(out, format!("{}\n{}\n", fields[2], fields[3]));
    // An unknown user is rejected.
    let (_, trailer) = stream(
        envd.addr,
        "process.Process/Start",
        sh("true"),
        &[("authorization", "Basic bm8tc3VjaC11c2VyLXh5ejo=")],
    )
    .await
    .collect()
    .await;
    assert_eq!(trailer["error"]["code"], "unauthenticated");
    assert!(
        trailer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid username")
    );
}

#[tokio::test]
async fn a_slow_client_slows_the_process_instead_of_losing_output() {
    const TOTAL: usize = 20_000_000;
    let envd = start().await;
    let mut frames = stream(
        envd.addr,
        "process.Process/Start",
        sh(&format!("head -c {TOTAL} /dev/zero")),
        &[],
    )
    .await;
    let mut received = 0usize;
    let mut seen = 0usize;
    let mut end = None;
    use base64::Engine as _;
    while let Some((is_end, message)) = frames.next().await {
        if is_end {
            break;
        }
        if let Some(data) = message["event"]["data"]["stdout"].as_str() {
            received += base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap()
                .len();
        }
        if message["event"].get("end").is_some() {
            end = Some(message["event"]["end"].clone());
        }
        seen += 1;
        if seen.is_multiple_of(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(received, TOTAL);
    assert_eq!(end.unwrap()["status"], "exit status 0");
}
