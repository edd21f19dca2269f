//! `MockSandboxApi` (the `mocks` feature) stands in for the real client behind
//! `dyn SandboxApi`, as an orchestrator's unit tests use it.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use courier_e2b::{
    CommandEvent, CommandOutput, CommandSpec, Error, ExitStatus, MockSandboxApi, SandboxApi,
    SpawnedCommand,
    models::{NewSandbox, SandboxRecord},
};
use futures::StreamExt;

fn record() -> SandboxRecord {
    serde_json::from_value(serde_json::json!({
        "templateID": "base", "sandboxID": "abc", "clientID": "x", "envdVersion": "0.6.13"
    }))
    .unwrap()
}

/// A tiny "orchestrator" written against the trait only.
async fn provision(api: &dyn SandboxApi) -> courier_e2b::Result<String> {
    let sandbox = api
        .create(NewSandbox {
            template_id: "base".into(),
            ..Default::default()
        })
        .await?;
    api.write_file(&sandbox, "/home/user/prompt.txt", Bytes::from_static(b"hi"))
        .await?;
    let output = api
        .run(&sandbox, CommandSpec::new("cat /home/user/prompt.txt"))
        .await?;
    Ok(output.stdout)
}

#[tokio::test]
async fn an_orchestrator_can_run_against_the_mock() {
    let mut mock = MockSandboxApi::new();
    mock.expect_create()
        .withf(|req| req.template_id == "base")
        .returning(|_| Ok(record()));
    mock.expect_write_file()
        .withf(|sandbox, path, data| {
            sandbox.sandbox_id == "abc" && path == "/home/user/prompt.txt" && &data[..] == b"hi"
        })
        .returning(|_, _, _| Ok(()));
    mock.expect_run().returning(|_, spec| {
        Ok(CommandOutput {
            stdout: format!("ran {}", spec.cmd),
            stderr: String::new(),
            exit_code: 0,
            error: None,
        })
    });
    let api: Arc<dyn SandboxApi> = Arc::new(mock);
    assert_eq!(
        provision(api.as_ref()).await.unwrap(),
        "ran cat /home/user/prompt.txt"
    );
}

#[tokio::test]
async fn mocked_spawns_stream_events_and_errors_pass_through() {
    let mut mock = MockSandboxApi::new();
    mock.expect_spawn().returning(|_, _| {
        let events = vec![
            Ok(CommandEvent::Stdout("a".into())),
            Ok(CommandEvent::Exit(ExitStatus {
                exit_code: 0,
                exited: true,
                status: "exit status 0".into(),
                error: None,
            })),
        ];
        Ok(SpawnedCommand {
            pid: 7,
            events: futures::stream::iter(events).boxed(),
        })
    });
    mock.expect_kill().returning(|_| {
        Err(Error::SandboxGone {
            message: "The sandbox was not found".into(),
        })
    });
    let spawned = mock.spawn(&record(), CommandSpec::new("x")).await.unwrap();
    assert_eq!(spawned.pid, 7);
    assert_eq!(spawned.events.count().await, 2);
    assert!(matches!(
        mock.kill("abc").await,
        Err(Error::SandboxGone { .. })
    ));
}
