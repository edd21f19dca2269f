//! Wire tests for processes and terminals: exact Connect requests (headers, envelopes) and
//! how streams, trailers and error bodies are read.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use courier_e2b::{
    CommandEvent, Error, NotFoundKind, PtySize, Signal,
    codec::{Code, Codec, ConnectError, EndOfStream},
    proto::process::{
        self as pb, ProcessEvent, StartResponse,
        process_event::{self as ev, Event},
    },
};
use futures::StreamExt;
use serde_json::json;
use support::{ACCESS_TOKEN, Canned, FakeServer, SANDBOX_ID, stream_response, unary_response};

fn event(event: Event) -> StartResponse {
    StartResponse {
        event: Some(ProcessEvent { event: Some(event) }),
    }
}

fn start(pid: u32) -> StartResponse {
    event(Event::Start(ev::StartEvent { pid }))
}

fn stdout(text: &str) -> StartResponse {
    event(Event::Data(ev::DataEvent {
        output: Some(ev::data_event::Output::Stdout(text.as_bytes().to_vec())),
    }))
}

fn stderr(text: &str) -> StartResponse {
    event(Event::Data(ev::DataEvent {
        output: Some(ev::data_event::Output::Stderr(text.as_bytes().to_vec())),
    }))
}

fn pty(bytes: &[u8]) -> StartResponse {
    event(Event::Data(ev::DataEvent {
        output: Some(ev::data_event::Output::Pty(bytes.to_vec())),
    }))
}

fn keepalive() -> StartResponse {
    event(Event::Keepalive(ev::KeepAlive {}))
}

fn end(code: i32) -> StartResponse {
    let error = (code != 0).then(|| format!("exit status {code}"));
    event(Event::End(ev::EndEvent {
        exit_code: code,
        exited: true,
        status: format!("exit status {code}"),
        error,
    }))
}

#[tokio::test]
async fn run_sends_the_official_start_request_in_json() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(42), stdout("hi\n"), end(0)],
        Some(EndOfStream::ok()),
    ));
    let output = server
        .sandbox(Codec::Json)
        .commands()
        .run("echo hi")
        .await
        .unwrap();
    assert_eq!(output.stdout, "hi\n");
    assert_eq!(output.exit_code, 0);

    let request = server.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/process.Process/Start");
    assert_eq!(
        request.header("content-type"),
        Some("application/connect+json")
    );
    assert_eq!(request.header("connect-protocol-version"), Some("1"));
    assert_eq!(request.header("connect-timeout-ms"), Some("60000"));
    assert_eq!(request.header("keepalive-ping-interval"), Some("50"));
    assert_eq!(request.header("e2b-sandbox-id"), Some(SANDBOX_ID));
    assert_eq!(request.header("e2b-sandbox-port"), Some("49983"));
    assert_eq!(request.header("x-access-token"), Some(ACCESS_TOKEN));
    assert_eq!(request.header("authorization"), None);
    let envelopes = request.envelopes();
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].flags, 0);
    assert_eq!(
        std::str::from_utf8(&envelopes[0].payload).unwrap(),
        r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"]},"stdin":false}"#
    );
}

#[tokio::test]
async fn run_defaults_to_protobuf() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Proto,
        &[start(1), stdout("x"), end(0)],
        Some(EndOfStream::ok()),
    ));
    let output = server
        .sandbox(Codec::Proto)
        .commands()
        .run("true")
        .await
        .unwrap();
    assert_eq!(output.stdout, "x");
    let request = server.only_request();
    assert_eq!(
        request.header("content-type"),
        Some("application/connect+proto")
    );
    let sent: pb::StartRequest = Codec::Proto
        .decode(&request.envelopes()[0].payload)
        .unwrap();
    assert_eq!(sent.process.unwrap().args, ["-l", "-c", "true"]);
    assert_eq!(sent.stdin, Some(false));
}

#[tokio::test]
async fn run_options_become_fields_and_headers() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(7), end(0)],
        Some(EndOfStream::ok()),
    ));
    server
        .sandbox(Codec::Json)
        .commands()
        .run("make")
        .cwd("/work")
        .env("A", "1")
        .user("root")
        .tag("build")
        .stdin(true)
        .timeout(Duration::ZERO)
        .await
        .unwrap();
    let request = server.only_request();
    // "root:" in base64.
    assert_eq!(request.header("authorization"), Some("Basic cm9vdDo="));
    assert_eq!(
        request.header("connect-timeout-ms"),
        None,
        "timeout 0 = unlimited = no header"
    );
    let body: serde_json::Value = serde_json::from_slice(&request.envelopes()[0].payload).unwrap();
    assert_eq!(
        body,
        json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "make"], "envs": {"A": "1"}, "cwd": "/work"},
               "tag": "build", "stdin": true})
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_command_exited_with_the_output() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(42), stdout("hi\n"), stderr("oops\n"), end(3)],
        Some(EndOfStream::ok()),
    ));
    let err = server
        .sandbox(Codec::Json)
        .commands()
        .run("echo hi; exit 3")
        .await
        .unwrap_err();
    match err {
        Error::CommandExited {
            stdout,
            stderr,
            exit_code,
            error,
        } => {
            assert_eq!(
                (stdout.as_str(), stderr.as_str(), exit_code),
                ("hi\n", "oops\n", 3)
            );
            assert_eq!(error.as_deref(), Some("exit status 3"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn callbacks_see_each_chunk_and_keepalives_are_ignored() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[
            keepalive(),
            start(1),
            stdout("a"),
            keepalive(),
            stdout("b"),
            stderr("e"),
            end(0),
        ],
        Some(EndOfStream::ok()),
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (out, err) = (seen.clone(), seen.clone());
    let output = server
        .sandbox(Codec::Json)
        .commands()
        .run("x")
        .on_stdout(move |s| out.lock().unwrap().push(format!("out:{s}")))
        .on_stderr(move |s| err.lock().unwrap().push(format!("err:{s}")))
        .await
        .unwrap();
    assert_eq!(output.stdout, "ab");
    assert_eq!(*seen.lock().unwrap(), ["out:a", "out:b", "err:e"]);
}

#[tokio::test]
async fn a_process_stream_without_an_end_event_is_a_protocol_error() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(1), stdout("a")],
        Some(EndOfStream::ok()),
    ));
    let err = server
        .sandbox(Codec::Json)
        .commands()
        .run("x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol { ref message } if message.contains("without an end event")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stream_without_end_of_stream_is_a_protocol_error() {
    let server = FakeServer::start().await;
    server.push(stream_response(Codec::Json, &[start(1), stdout("a")], None));
    let err = server
        .sandbox(Codec::Json)
        .commands()
        .run("x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol { ref message } if message.contains("end-of-stream")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stream_cut_mid_envelope_is_a_protocol_error() {
    let server = FakeServer::start().await;
    let mut canned = stream_response(Codec::Json, &[start(1), stdout("abc")], None);
    let body = canned.chunks[0].clone();
    canned.chunks = vec![body.slice(..body.len() - 2)];
    server.push(canned);
    let err = server
        .sandbox(Codec::Json)
        .commands()
        .run("x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol { ref message } if message.contains("truncated")),
        "{err:?}"
    );
}

#[tokio::test]
async fn envelopes_split_into_tiny_reads_still_decode() {
    for codec in [Codec::Json, Codec::Proto] {
        let server = FakeServer::start().await;
        server.push(
            stream_response(
                codec,
                &[start(1), stdout("hello "), stdout("world"), end(0)],
                Some(EndOfStream::ok()),
            )
            .chunked(3),
        );
        let output = server.sandbox(codec).commands().run("x").await.unwrap();
        assert_eq!(output.stdout, "hello world");
    }
}

#[tokio::test]
async fn trailer_errors_map_to_variants() {
    let cases = [
        (Code::NotFound, "process with pid 9 not found"),
        (Code::Unavailable, "The sandbox was not found"),
        (Code::DeadlineExceeded, "deadline"),
        (Code::Unauthenticated, "invalid username"),
        (Code::Internal, "boom"),
    ];
    for (code, message) in cases {
        let server = FakeServer::start().await;
        server.push(stream_response::<StartResponse>(
            Codec::Json,
            &[],
            Some(EndOfStream::error(ConnectError::new(code, message))),
        ));
        let err = server
            .sandbox(Codec::Json)
            .commands()
            .connect(9)
            .await
            .unwrap_err();
        let ok = match code {
            Code::NotFound => matches!(
                err,
                Error::NotFound {
                    kind: NotFoundKind::Process,
                    ..
                }
            ),
            Code::Unavailable => matches!(err, Error::SandboxGone { .. }),
            Code::DeadlineExceeded => matches!(err, Error::Timeout { .. }),
            Code::Unauthenticated => matches!(err, Error::Authentication { .. }),
            _ => {
                matches!(err, Error::Api { status: 500, code: Some(ref c), .. } if c == "internal")
            }
        };
        assert!(ok, "{code}: {err:?}");
    }
}

#[tokio::test]
async fn a_proxy_502_on_a_stream_is_sandbox_gone() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        502,
        json!({"sandboxId": SANDBOX_ID, "message": "The sandbox was not found", "code": 502}),
    ));
    let err = server
        .sandbox(Codec::Json)
        .commands()
        .run("x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SandboxGone { .. }), "{err:?}");
}

#[tokio::test]
async fn spawn_streams_events_and_controls_the_process() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(42), stdout("1\n"), end(0)],
        Some(EndOfStream::ok()),
    ));
    server.push(unary_response(Codec::Json, &pb::SendInputResponse {}));
    server.push(unary_response(Codec::Json, &pb::CloseStdinResponse {}));
    server.push(unary_response(Codec::Json, &pb::SendSignalResponse {}));
    let mut handle = server
        .sandbox(Codec::Json)
        .commands()
        .run("cat")
        .stdin(true)
        .spawn()
        .await
        .unwrap();
    assert_eq!(handle.pid(), 42);
    handle.send_stdin("hello").await.unwrap();
    handle.close_stdin().await.unwrap();
    assert!(handle.kill().await.unwrap());
    assert_eq!(
        handle.next().await.unwrap().unwrap(),
        CommandEvent::Stdout("1\n".into())
    );
    assert!(
        matches!(handle.next().await.unwrap().unwrap(), CommandEvent::Exit(e) if e.exit_code == 0)
    );
    assert!(handle.next().await.is_none());

    let requests = server.requests();
    assert_eq!(requests[1].path, "/process.Process/SendInput");
    assert_eq!(requests[1].header("content-type"), Some("application/json"));
    assert_eq!(requests[1].header("connect-protocol-version"), Some("1"));
    assert_eq!(requests[1].header("connect-timeout-ms"), Some("60000"));
    assert_eq!(requests[1].header("x-access-token"), Some(ACCESS_TOKEN));
    assert_eq!(
        requests[1].json(),
        json!({"process": {"pid": 42}, "input": {"stdin": "aGVsbG8="}})
    );
    assert_eq!(requests[2].path, "/process.Process/CloseStdin");
    assert_eq!(requests[2].json(), json!({"process": {"pid": 42}}));
    assert_eq!(requests[3].path, "/process.Process/SendSignal");
    assert_eq!(
        requests[3].json(),
        json!({"process": {"pid": 42}, "signal": "SIGNAL_SIGKILL"})
    );
}

#[tokio::test]
async fn connect_by_tag_list_and_signals() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(5), end(0)],
        Some(EndOfStream::ok()),
    ));
    server.push(unary_response(
        Codec::Json,
        &pb::ListResponse {
            processes: vec![pb::ProcessInfo {
                config: Some(pb::ProcessConfig {
                    cmd: "/bin/bash".into(),
                    args: vec!["-l".into()],
                    ..Default::default()
                }),
                pid: 5,
                tag: Some("build".into()),
            }],
        },
    ));
    server.push(unary_response(Codec::Json, &pb::SendSignalResponse {}));
    server.push(Canned::json(
        404,
        json!({"code": "not_found", "message": "process with pid 6 not found"}),
    ));
    let commands = server.sandbox(Codec::Json).commands();
    let handle = commands.connect("build").await.unwrap();
    assert_eq!(handle.pid(), 5);
    handle.wait().await.unwrap();
    let processes = commands.list().await.unwrap();
    assert_eq!(
        (
            processes[0].pid,
            processes[0].tag.as_deref(),
            processes[0].cmd.as_str()
        ),
        (5, Some("build"), "/bin/bash")
    );
    commands.send_signal(5, Signal::Term).await.unwrap();
    assert!(!commands.kill(6).await.unwrap());

    let requests = server.requests();
    assert_eq!(requests[0].path, "/process.Process/Connect");
    assert_eq!(requests[0].header("keepalive-ping-interval"), Some("50"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&requests[0].envelopes()[0].payload).unwrap(),
        json!({"process": {"tag": "build"}})
    );
    assert_eq!(requests[1].path, "/process.Process/List");
    assert_eq!(
        requests[2].json(),
        json!({"process": {"pid": 5}, "signal": "SIGNAL_SIGTERM"})
    );
}

#[tokio::test]
async fn unary_error_bodies_map_to_variants() {
    let cases = [
        (json!({"code": "invalid_argument", "message": "bad"}), 400),
        (json!({"code": "unauthenticated", "message": "no"}), 401),
        (
            json!({"code": "resource_exhausted", "message": "slow"}),
            429,
        ),
        (json!({"code": "canceled", "message": "gone"}), 499),
        (
            json!({"code": 502, "message": "The sandbox was not found"}),
            502,
        ),
        (json!({"code": "permission_denied", "message": "nope"}), 403),
    ];
    for (body, status) in cases {
        let server = FakeServer::start().await;
        server.push(Canned::json(status, body.clone()));
        let err = server
            .sandbox(Codec::Json)
            .commands()
            .list()
            .await
            .unwrap_err();
        let ok = match status {
            400 => matches!(err, Error::InvalidArgument { .. }),
            401 => matches!(err, Error::Authentication { .. }),
            429 => matches!(err, Error::RateLimited { .. }),
            499 => matches!(err, Error::Timeout { .. }),
            502 => matches!(err, Error::SandboxGone { .. }),
            _ => {
                matches!(err, Error::Api { status: 403, code: Some(ref c), .. } if c == "permission_denied")
            }
        };
        assert!(ok, "{body}: {err:?}");
    }
    let server = FakeServer::start().await;
    server.push(Canned::status(503).body("upstream down"));
    let err = server
        .sandbox(Codec::Json)
        .commands()
        .list()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Api { status: 503, ref message, .. } if message == "upstream down"),
        "{err:?}"
    );
}

#[tokio::test]
async fn pty_create_input_resize_and_kill() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Json,
        &[start(9), pty(b"$ "), end(0)],
        Some(EndOfStream::ok()),
    ));
    server.push(unary_response(Codec::Json, &pb::SendInputResponse {}));
    server.push(unary_response(Codec::Json, &pb::UpdateResponse {}));
    server.push(unary_response(Codec::Json, &pb::SendSignalResponse {}));
    let sandbox = server.sandbox(Codec::Json);
    let mut terminal = sandbox.pty().create(PtySize::new(80, 24)).await.unwrap();
    terminal.send_stdin("ls\n").await.unwrap();
    terminal.resize(PtySize::new(100, 30)).await.unwrap();
    assert!(sandbox.pty().kill(terminal.pid()).await.unwrap());
    assert_eq!(
        terminal.next().await.unwrap().unwrap(),
        CommandEvent::Pty("$ ".into())
    );

    let requests = server.requests();
    assert_eq!(requests[0].header("connect-timeout-ms"), None);
    let body: serde_json::Value =
        serde_json::from_slice(&requests[0].envelopes()[0].payload).unwrap();
    assert_eq!(
        body,
        json!({"process": {"cmd": "/bin/bash", "args": ["-i", "-l"],
                           "envs": {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}},
               "pty": {"size": {"cols": 80, "rows": 24}}})
    );
    assert_eq!(
        requests[1].json(),
        json!({"process": {"pid": 9}, "input": {"pty": "bHMK"}})
    );
    assert_eq!(requests[2].path, "/process.Process/Update");
    assert_eq!(
        requests[2].json(),
        json!({"process": {"pid": 9}, "pty": {"size": {"cols": 100, "rows": 30}}})
    );
}

#[tokio::test]
async fn the_client_side_deadline_ends_a_silent_stream() {
    let server = FakeServer::start().await;
    server.push(stream_response(Codec::Json, &[start(1)], None).hang());
    let handle = server
        .sandbox(Codec::Json)
        .commands()
        .run("sleep 100")
        .timeout(Duration::from_millis(300))
        .spawn()
        .await
        .unwrap();
    let err = handle.wait().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        server.only_request().header("connect-timeout-ms"),
        Some("300")
    );
}

#[tokio::test]
async fn stream_input_sends_a_start_then_one_data_envelope_per_chunk() {
    let server = FakeServer::start().await;
    server.push(stream_response(
        Codec::Proto,
        &[pb::StreamInputResponse {}],
        Some(EndOfStream::default()),
    ));
    let sandbox = server.sandbox(Codec::Proto);
    let chunks = futures::stream::iter([bytes::Bytes::from("ab"), bytes::Bytes::from("cd")]);
    sandbox.commands().stream_input(7, chunks).await.unwrap();

    let request = server.only_request();
    assert_eq!(request.path, "/process.Process/StreamInput");
    assert_eq!(
        request.header("content-type"),
        Some(Codec::Proto.stream_content_type())
    );
    assert_eq!(request.header("x-access-token"), Some(ACCESS_TOKEN));
    let messages: Vec<pb::StreamInputRequest> = request
        .envelopes()
        .iter()
        .map(|e| Codec::Proto.decode(&e.payload).unwrap())
        .collect();
    use pb::stream_input_request::{DataEvent, Event as In, StartEvent};
    let expected = vec![
        pb::StreamInputRequest {
            event: Some(In::Start(StartEvent {
                process: Some(pb::ProcessSelector {
                    selector: Some(pb::process_selector::Selector::Pid(7)),
                }),
            })),
        },
        pb::StreamInputRequest {
            event: Some(In::Data(DataEvent {
                input: Some(pb::ProcessInput {
                    input: Some(pb::process_input::Input::Stdin(b"ab".to_vec())),
                }),
            })),
        },
        pb::StreamInputRequest {
            event: Some(In::Data(DataEvent {
                input: Some(pb::ProcessInput {
                    input: Some(pb::process_input::Input::Stdin(b"cd".to_vec())),
                }),
            })),
        },
    ];
    assert_eq!(messages, expected);

    // envd's error in the trailer is the call's error.
    let server = FakeServer::start().await;
    server.push(stream_response::<pb::StreamInputResponse>(
        Codec::Proto,
        &[],
        Some(EndOfStream {
            error: Some(ConnectError::new(Code::NotFound, "process 7 not found")),
            ..EndOfStream::default()
        }),
    ));
    let err = server
        .sandbox(Codec::Proto)
        .commands()
        .stream_input(7, futures::stream::iter([bytes::Bytes::from("x")]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: NotFoundKind::Process,
                ..
            }
        ),
        "{err}"
    );
}
