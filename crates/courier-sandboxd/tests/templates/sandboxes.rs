//! What a template's sandboxes get: its start and ready commands, its COPY steps' files;
//! build sandboxes stay out of lists; old layers and warm sandboxes go when unused.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixture::*;
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_command_runs_in_every_sandbox_once_ready_and_a_never_ready_template_fails() {
    let Some(fx) = Fixture::new("start_ready").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-start",
            json!({
                "fromTemplate": "base",
                "steps": [{"type": "ENV", "args": ["STARTED_BY", "startCmd"]}],
                // The file appears only after a while: create must wait for readyCmd.
                "startCmd": "sleep 1; echo \"$STARTED_BY as $(id -un)\" > /tmp/started; exec sleep infinity",
                "readyCmd": "test -f /tmp/started",
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    for _ in 0..2 {
        let sbx = fx.sandbox("courier-it-start").await;
        // /tmp is each sandbox's own tmpfs: the file is this sandbox's start command's.
        assert_eq!(stdout(&sbx, "cat /tmp/started").await, "startCmd as user\n");
        sbx.kill().await.unwrap();
    }

    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-never-ready",
            json!({"fromTemplate": "base", "steps": [], "readyCmd": "echo not-yet; exit 1"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, _) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "finalize");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("readyCmd") && reason.contains("not-yet"),
        "{reason}"
    );
    assert!(fx.run().server.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_steps_use_uploaded_archives() {
    let Some(fx) = Fixture::new("copy").await else {
        return;
    };
    // The archive the SDK would upload: paths relative to the context directory.
    let context = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(context.path().join("app/lib")).unwrap();
    std::fs::write(context.path().join("app/main.py"), "print('main')\n").unwrap();
    std::fs::write(context.path().join("app/lib/util.py"), "UTIL = 1\n").unwrap();
    std::fs::write(context.path().join("notes.txt"), "some notes\n").unwrap();
    let archive = context.path().join("upload.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(context.path())
        .args(["app", "notes.txt"])
        .status()
        .expect("run tar");
    assert!(status.success());

    let (template_id, build_id) = fx
        .request_build(json!({"name": "courier-it-copy-ok"}))
        .await;
    let files = format!("/templates/{template_id}/files/hash-one");
    let (status, link) = fx.call(reqwest::Method::GET, &files, None).await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["present"], false);
    // The link carries a one-time token (like a presigned URL); no credentials are
    // echoed back.
    assert!(link.get("headers").is_none(), "{link}");
    assert!(!link.to_string().contains(KEY), "{link}");
    let url = link["url"].as_str().unwrap().to_owned();
    let put = |url: String| {
        let http = fx.run().http.clone();
        let body = std::fs::read(&archive).unwrap();
        async move {
            http.put(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (base, _) = url.split_once("?token=").expect("token in the upload link");
    assert_eq!(put(format!("{base}?token=forged")).await, 401);
    assert_eq!(put(base.to_owned()).await, 401, "no token, no key");
    // Upload the way the SDK does: a plain PUT to the returned URL.
    assert_eq!(put(url.clone()).await, 200);
    assert_eq!(put(url).await, 401, "an upload link works once");
    let (status, link) = fx.call(reqwest::Method::GET, &files, None).await;
    assert_eq!((status, link["present"].as_bool()), (201, Some(true)));

    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            &format!("/v2/templates/{template_id}/builds/{build_id}"),
            Some(json!({
                "fromTemplate": "base",
                "steps": [
                    // A directory: its content goes to dest, owned by the steps' user.
                    {"type": "COPY", "args": ["app", "/srv/app", "", ""], "filesHash": "hash-one"},
                    // A file into a directory, as root, with a mode.
                    {"type": "COPY", "args": ["notes.txt", "/opt/", "root", "0600"], "filesHash": "hash-one"},
                    {"type": "RUN", "args": ["python3 /srv/app/main.py"]},
                ],
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    assert!(messages(&entries).iter().any(|l| l == "main"));
    let sbx = fx.sandbox("courier-it-copy-ok").await;
    assert_eq!(
        stdout(
            &sbx,
            "cat /srv/app/lib/util.py; stat -c '%U %a' /srv/app/main.py /opt/notes.txt; \
             sudo cat /opt/notes.txt; ls -A /tmp"
        )
        .await,
        "UTIL = 1\nuser 644\nroot 600\nsome notes\n"
    );
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_sandboxes_are_not_listed() {
    let Some(fx) = Fixture::new("build_sandbox_hidden").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-hidden",
            json!({"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["echo step-started; exec sleep 600"]}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Once the step has printed, its build sandbox certainly exists.
    let start = Instant::now();
    loop {
        let (_, page) = fx
            .call(
                reqwest::Method::GET,
                &format!("/templates/{template_id}/builds/{build_id}/status"),
                None,
            )
            .await;
        if messages(page["logEntries"].as_array().unwrap())
            .iter()
            .any(|l| l == "step-started")
        {
            break;
        }
        assert!(
            start.elapsed() < BUILD_WAIT,
            "the step never started: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fx.run().server.list().len(), 1, "the build sandbox runs");
    for path in ["/v2/sandboxes", "/sandboxes"] {
        let (status, listed) = fx.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200);
        assert_eq!(listed, json!([]), "{path}");
    }
    // The fixture kills the build sandbox when dropped; the build then fails.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_layers_go_once_no_template_or_sandbox_uses_them() {
    let Some(fx) = Fixture::new("layer_gc").await else {
        return;
    };
    let layer =
        |template: &str, build: &str| fx.data_dir().join("layers").join(template).join(build);
    let build = |version| fx.build_version("courier-it-gc", version);

    let (template, v1) = build("v1").await;
    let old_sandbox = fx.sandbox("courier-it-gc").await;
    assert_eq!(stdout(&old_sandbox, "cat /opt/version").await, "v1\n");

    // A rebuild: the running sandbox still stands on v1's layer, so it stays.
    let (_, v2) = build("v2").await;
    assert!(layer(&template, &v1).is_dir());
    assert_eq!(stdout(&old_sandbox, "cat /opt/version").await, "v1\n");
    let new_sandbox = fx.sandbox("courier-it-gc").await;
    assert_eq!(stdout(&new_sandbox, "cat /opt/version").await, "v2\n");

    // A child template stacks on v2's layer: rebuilding the parent must keep it.
    let (child, child_build) = fx
        .request_build(json!({"name": "courier-it-gc-child"}))
        .await;
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            &format!("/v2/templates/{child}/builds/{child_build}"),
            Some(json!({"fromTemplate": "courier-it-gc", "steps": []})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, _) = fx.wait_build(&child, &child_build).await;
    assert_eq!(done["status"], "ready", "{done}");

    old_sandbox.kill().await.unwrap();
    new_sandbox.kill().await.unwrap();
    // Their overlays use the layers until the kills' cleanups (behind the answers) end;
    // the layer GC runs at the end of each.
    fx.run().server.finish_cleanups().await;
    assert!(
        !layer(&template, &v1).exists(),
        "v1 is used by nothing any more"
    );
    let (_, v3) = build("v3").await;
    assert!(
        layer(&template, &v2).is_dir(),
        "the child template stands on v2"
    );
    assert!(layer(&template, &v3).is_dir());
    let child_sandbox = fx.sandbox("courier-it-gc-child").await;
    assert_eq!(stdout(&child_sandbox, "cat /opt/version").await, "v2\n");
    child_sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_or_deleted_template_keeps_no_warm_sandbox() {
    if !support::gvisor_or_skip("warm templates") {
        return;
    }
    let Some(mut fx) = Fixture::new("warm templates").await else {
        return;
    };
    fx.stop().await;
    fx.start_with(courier_sandboxd::runtime::Isolation::Gvisor)
        .await;
    let build = |version| fx.build_version("courier-it-warm", version);
    let server = fx.run().server.clone();
    let (template, _) = build("v1").await;
    let first = fx.sandbox("courier-it-warm").await;
    let warm_v1 = support::next_warm(&server, &[first.id()]).await;
    // A rebuild: the warm sandbox runs the old version, which no create asks for any more.
    build("v2").await;
    assert!(
        server.runtime().get(&warm_v1).is_err(),
        "v1's warm sandbox lives on"
    );
    let second = fx.sandbox("courier-it-warm").await;
    assert_ne!(second.id(), warm_v1);
    assert_eq!(stdout(&second, "cat /opt/version").await, "v2\n");
    let warm_v2 = support::next_warm(&server, &[first.id(), second.id()]).await;
    // A deleted template: its warm sandbox goes with it.
    first.kill().await.unwrap();
    second.kill().await.unwrap();
    let (status, body) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{template}"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(
        server.runtime().get(&warm_v2).is_err(),
        "the warm sandbox outlived its template"
    );
    assert!(server.warm_sandboxes().is_empty());
}
