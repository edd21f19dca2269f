//! The filesystem service over real HTTP, always inside a temporary directory.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::{os::unix::ffi::OsStrExt as _, time::Duration};

use common::*;
use serde_json::json;

fn p(dir: &tempfile::TempDir, rel: &str) -> String {
    dir.path().join(rel).display().to_string()
}

#[tokio::test]
async fn make_dir_stat_list_move_remove() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let made = unary(
        envd.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": p(&dir, "a/b")}),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let entry = &made.json()["entry"];
    assert_eq!(entry["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(entry["mode"], 0o755);
    assert_eq!(entry["permissions"], "drwxr-xr-x");
    let again = unary(
        envd.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": p(&dir, "a/b")}),
    )
    .await;
    assert_eq!(again.json()["code"], "already_exists");

    std::fs::write(dir.path().join("a/b/f.txt"), "0123456789").unwrap();
    std::fs::write(dir.path().join("a/z.txt"), "z").unwrap();
    std::os::unix::fs::symlink(dir.path().join("a/z.txt"), dir.path().join("a/link")).unwrap();
    let onfile = unary(
        envd.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": p(&dir, "a/z.txt")}),
    )
    .await;
    assert_eq!(onfile.json()["code"], "invalid_argument");

    let stat = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": p(&dir, "a/b/f.txt")}),
    )
    .await
    .json();
    let entry = &stat["entry"];
    assert_eq!(entry["name"], "f.txt");
    assert_eq!(entry["path"], p(&dir, "a/b/f.txt"));
    assert_eq!(entry["size"], "10");
    assert_eq!(entry["mode"], 0o644);
    assert_eq!(entry["permissions"], "-rw-r--r--");
    assert!(entry["modifiedTime"].as_str().unwrap().ends_with('Z'));
    assert!(entry["owner"].is_string() && entry["group"].is_string());

    let link = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": p(&dir, "a/link")}),
    )
    .await
    .json();
    assert_eq!(link["entry"]["type"], "FILE_TYPE_FILE");
    assert_eq!(link["entry"]["isSymlink"], true);
    assert_eq!(link["entry"]["permissions"], "Lrwxrwxrwx");
    assert_eq!(
        link["entry"]["symlinkTarget"],
        std::fs::canonicalize(dir.path().join("a/z.txt"))
            .unwrap()
            .display()
            .to_string()
    );

    let missing = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": p(&dir, "nope")}),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "not_found");

    let list = unary(
        envd.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": p(&dir, "a"), "depth": 1}),
    )
    .await
    .json();
    let names: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "link", "z.txt"]);
    let deep = unary(
        envd.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": p(&dir, "a"), "depth": 2}),
    )
    .await
    .json();
    let paths: Vec<&str> = deep["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            p(&dir, "a/b"),
            p(&dir, "a/b/f.txt"),
            p(&dir, "a/link"),
            p(&dir, "a/z.txt")
        ]
    );
    let notdir = unary(
        envd.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": p(&dir, "a/z.txt")}),
    )
    .await;
    assert_eq!(notdir.json()["code"], "invalid_argument");

    let moved = unary(
        envd.addr,
        "filesystem.Filesystem/Move",
        json!({"source": p(&dir, "a/b/f.txt"), "destination": p(&dir, "c/d/g.txt")}),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_eq!(moved.json()["entry"]["path"], p(&dir, "c/d/g.txt"));
    let gone = unary(
        envd.addr,
        "filesystem.Filesystem/Move",
        json!({"source": p(&dir, "a/b/f.txt"), "destination": p(&dir, "x")}),
    )
    .await;
    assert_eq!(gone.json()["code"], "not_found");

    let removed = unary(
        envd.addr,
        "filesystem.Filesystem/Remove",
        json!({"path": p(&dir, "a")}),
    )
    .await;
    assert_eq!(removed.status, 200);
    assert!(!dir.path().join("a").exists());
    let missing = unary(
        envd.addr,
        "filesystem.Filesystem/Remove",
        json!({"path": p(&dir, "a")}),
    )
    .await;
    assert_eq!(missing.status, 200, "removing a missing path succeeds");
}

#[tokio::test]
async fn remove_refuses_root_and_empty_paths() {
    let envd = start().await;
    for path in ["/", "", "  ", "/..", "/tmp/../.."] {
        let reply = unary(
            envd.addr,
            "filesystem.Filesystem/Remove",
            json!({"path": path}),
        )
        .await;
        assert_ne!(reply.status, 200, "{path:?} must be refused");
    }
    assert!(std::path::Path::new("/tmp").exists());
}

#[tokio::test]
async fn relative_paths_resolve_against_home_and_dotdot_is_folded() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let sneaky = format!(
        "{}/x/../../{}",
        dir.path().display(),
        dir.path().file_name().unwrap().to_string_lossy()
    );
    let reply = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": sneaky}),
    )
    .await
    .json();
    assert_eq!(reply["entry"]["path"], dir.path().display().to_string());
    let home = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": "~"}),
    )
    .await;
    assert_eq!(home.status, 200, "{}", home.text());
}

#[tokio::test]
async fn non_utf8_names_are_listed_lossily() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    std::fs::write(dir.path().join(name), "x").unwrap();
    let list = unary(
        envd.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": dir.path()}),
    )
    .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["entries"][0]["name"], "bad-\u{fffd}-name");
}

#[tokio::test]
async fn watch_dir_streams_create_chmod_write_for_an_upload() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    let mut frames = stream(
        envd.addr,
        "filesystem.Filesystem/WatchDir",
        json!({"path": dir.path(), "recursive": true, "includeEntry": true}),
        &[("keepalive-ping-interval", "1")],
    )
    .await;
    let (_, first) = frames.next().await.unwrap();
    assert_eq!(first, json!({"start": {}}));
    let target = dir.path().join("nested/new.txt");
    let upload = request(
        envd.addr,
        "POST",
        &format!("/files?path={}", target.display()),
        &[("content-type", "application/octet-stream")],
        "hello",
    )
    .await;
    assert_eq!(upload.status, 200, "{}", upload.text());
    let mut events = Vec::new();
    while events.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(5), frames.next())
            .await
            .unwrap()
            .unwrap();
        if let Some(event) = next.1.get("filesystem") {
            events.push(event.clone());
        }
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["EVENT_TYPE_CREATE", "EVENT_TYPE_CHMOD", "EVENT_TYPE_WRITE"]
    );
    assert!(events.iter().all(|e| e["name"] == "nested/new.txt"));
    assert_eq!(events[2]["entry"]["size"], "5");

    let missing = stream(
        envd.addr,
        "filesystem.Filesystem/WatchDir",
        json!({"path": dir.path().join("nope")}),
        &[],
    )
    .await
    .collect()
    .await;
    assert_eq!(missing.1["error"]["code"], "not_found");
}

#[tokio::test]
async fn polling_watchers_drain_events() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let created = unary(
        envd.addr,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": dir.path()}),
    )
    .await
    .json();
    let id = created["watcherId"].as_str().unwrap().to_owned();
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let mut events = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = unary(
            envd.addr,
            "filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": id}),
        )
        .await
        .json();
        events.extend(got["events"].as_array().cloned().unwrap_or_default());
        if events.iter().any(|e| e["type"] == "EVENT_TYPE_WRITE") {
            break;
        }
    }
    assert_eq!(events[0]["type"], "EVENT_TYPE_CREATE");
    assert_eq!(events[0]["name"], "f");
    assert_eq!(
        unary(
            envd.addr,
            "filesystem.Filesystem/RemoveWatcher",
            json!({"watcherId": id})
        )
        .await
        .status,
        200
    );
    let gone = unary(
        envd.addr,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": id}),
    )
    .await;
    assert_eq!(gone.json()["code"], "not_found");
}
