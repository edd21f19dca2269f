//! File access as the requesting user: envd runs as root inside the sandbox, but what it
//! reads, writes, lists, moves, removes and watches for `user` is checked by the kernel as
//! `user`'s. The attacker in every test is code running as the unprivileged user inside the
//! sandbox (an agent's command, a cloned repository's script) that plants links and then
//! asks envd, through the SDK or a signed URL, to act on them.
//!
//! These tests switch credentials, so they need root: they skip with a message otherwise,
//! and fail under CI (`CI` set), where a skip would hide a regression. The unprivileged
//! user is `nobody`, present on every Debian-like system.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::SocketAddr,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use common::*;
use courier_envd::auth::{Operation, sign};
use serde_json::json;

/// `Authorization: Basic base64("nobody:")`, how the SDK names the user of an RPC.
const AS_NOBODY: (&str, &str) = ("authorization", "Basic bm9ib2R5Og==");
const AS_ROOT: (&str, &str) = ("authorization", "Basic cm9vdDo=");

/// A unary call made as the unprivileged user (`nobody` here).
async fn as_user(addr: SocketAddr, method: &str, body: serde_json::Value) -> Reply {
    unary_with(addr, method, body, &[AS_NOBODY]).await
}

/// A unary call made as root.
async fn as_root(addr: SocketAddr, method: &str, body: serde_json::Value) -> Reply {
    unary_with(addr, method, body, &[AS_ROOT]).await
}
const TOKEN: &str = "envd-test-token";

/// A directory tree with root's files next to the user's home.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl Fixture {
    /// `None` (the test skips) when not root; under CI that is a failure.
    fn new(test: &str) -> Option<Fixture> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI must run the file-access tests as root"
            );
            println!("skipped {test}: acting as another user needs root");
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let nobody: Vec<&str> = passwd
            .lines()
            .find(|l| l.starts_with("nobody:"))
            .expect("the test needs a 'nobody' account")
            .split(':')
            .collect();
        let (uid, gid) = (nobody[2].parse().unwrap(), nobody[3].parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // Traversable by everyone, so only each entry's own mode decides.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fixture = Fixture {
            _dir: dir,
            root,
            uid,
            gid,
        };
        let home = fixture.path("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        // Like /etc/shadow: only root may read it.
        fixture.root_file("secret", "root-only secret", 0o600);
        // Like /etc/passwd: everyone may read it, only root may write it.
        fixture.root_file("rootfile", "root's file", 0o644);
        // Like /root: only root may enter it.
        std::fs::create_dir(fixture.path("rootonly")).unwrap();
        std::fs::set_permissions(
            fixture.path("rootonly"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(fixture.path("rootonly/inside"), "hidden").unwrap();
        // Like /etc: everyone may read it, only root may add to it.
        std::fs::create_dir(fixture.path("rootdir")).unwrap();
        fixture.root_file("rootdir/file", "keep me", 0o644);
        Some(fixture)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn text(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn root_file(&self, rel: &str, content: &str, mode: u32) {
        std::fs::write(self.path(rel), content).unwrap();
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What the attacker does first: a link in their home to something of root's.
    fn plant_link(&self, name: &str, target: &str) -> String {
        let link = self.path(&format!("home/{name}"));
        std::os::unix::fs::symlink(self.path(target), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(self.uid), Some(self.gid)).unwrap();
        link.display().to_string()
    }
}

fn q(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn owner(path: impl AsRef<Path>) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

fn signed_download(path: &str, user: &str) -> String {
    let signature = sign(path, Operation::Read, user, TOKEN, None);
    format!(
        "/files?path={}&username={user}&signature={}",
        q(path),
        q(&signature)
    )
}

#[tokio::test]
async fn a_signed_download_of_a_link_to_a_root_only_file_is_refused_for_the_user() {
    let Some(fx) = Fixture::new("signed download through a link") else {
        return;
    };
    // Attack: `ln -s /etc/shadow ~/link`, then a signed download URL for `user` of
    // `~/link` (handed out by the application, or minted through the SDK).
    let link = fx.plant_link("link", "secret");
    let envd = start_with(courier_envd::Envd::builder().access_token(TOKEN)).await;
    let reply = request(envd.addr, "GET", &signed_download(&link, "nobody"), &[], "").await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["code"], 403);
    assert!(!reply.text().contains("root-only secret"));
    // The token holder naming the user gets the same answer.
    let reply = request(
        envd.addr,
        "GET",
        &format!("/files?path={}&username=nobody", q(&link)),
        &[("x-access-token", TOKEN)],
        "",
    )
    .await;
    assert_eq!(reply.status, 403);
    // The file itself, by its real path, is refused as well.
    let reply = request(
        envd.addr,
        "GET",
        &signed_download(&fx.text("secret"), "nobody"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 403);
    // Root still reads it through the same link: the refusal is the kernel's, not a
    // blanket ban on links.
    let reply = request(envd.addr, "GET", &signed_download(&link, "root"), &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "root-only secret");
}

#[tokio::test]
async fn an_upload_as_the_user_through_a_planted_link_does_not_modify_a_root_file() {
    let Some(fx) = Fixture::new("upload through a link") else {
        return;
    };
    let envd = start().await;
    // Attack: `ln -s /etc/passwd ~/victim`, then upload as `user` to `~/victim` to
    // rewrite root's file (and, before, take its ownership with envd's chown).
    let victim = fx.plant_link("victim", "rootfile");
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}&username=nobody", q(&victim)),
        &[("content-type", "application/octet-stream")],
        "pwned",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(
        std::fs::read_to_string(fx.path("rootfile")).unwrap(),
        "root's file"
    );
    assert_eq!(owner(fx.path("rootfile")), (0, 0));
    // Attack: `ln -s /etc ~/etc`, then upload `~/etc/new` to add a file to root's dir,
    // through a multipart upload this time.
    let dir_link = fx.plant_link("etc", "rootdir");
    let boundary = "courierBoundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{dir_link}/new\"\r\n\r\npwned\r\n--{boundary}--\r\n"
    );
    let reply = request(
        envd.addr,
        "POST",
        "/files?username=nobody",
        &[(
            "content-type",
            &format!("multipart/form-data; boundary={boundary}"),
        )],
        body,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(!fx.path("rootdir/new").exists());
    // Root may, as before.
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}&username=root", q(&victim)),
        &[("content-type", "application/octet-stream")],
        "rewritten by root",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        std::fs::read_to_string(fx.path("rootfile")).unwrap(),
        "rewritten by root"
    );
}

#[tokio::test]
async fn a_refused_multipart_upload_is_answered_while_its_body_is_still_coming() {
    let Some(fx) = Fixture::new("refused multipart upload mid-body") else {
        return;
    };
    let envd = start().await;
    // The refusal comes from the part's path (a planted link), after envd has started
    // reading the body; the caller still gets a 403 and not a reset connection.
    let dir_link = fx.plant_link("etc", "rootdir");
    let boundary = "courierBoundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{dir_link}/new\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'x', 4 << 20));
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let head = format!(
        "POST /files?username=nobody HTTP/1.1\r\nHost: envd\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = tokio::net::TcpStream::connect(envd.addr).await.unwrap();
    let answer = slow_post(stream, &head, &body)
        .await
        .unwrap_or_else(|e| panic!("the refusal was lost: {e}"));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(!fx.path("rootdir/new").exists());
}

#[tokio::test]
async fn make_dir_in_a_root_only_dir_fails_for_the_user() {
    let Some(fx) = Fixture::new("make_dir in root's dir") else {
        return;
    };
    let envd = start().await;
    // Attack: create directories where only root may (`/etc/cron.d`-like places), directly
    // or through a planted link.
    let link = fx.plant_link("etc", "rootdir");
    for path in [
        fx.text("rootdir/made"),
        format!("{link}/made"),
        fx.text("rootonly/made"),
    ] {
        let reply = as_user(
            envd.addr,
            "filesystem.Filesystem/MakeDir",
            json!({"path": path}),
        )
        .await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
        assert_eq!(reply.json()["code"], "permission_denied");
    }
    assert!(!fx.path("rootdir/made").exists());
    assert!(!fx.path("rootonly/made").exists());
    let reply = as_root(
        envd.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": fx.text("rootdir/made")}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn list_dir_and_stat_of_a_root_only_dir_fail_for_the_user() {
    let Some(fx) = Fixture::new("list_dir of root's dir") else {
        return;
    };
    let envd = start().await;
    // Attack: list `/root` (or a link to it) and stat what is inside to learn names,
    // sizes and owners the user may not see.
    let link = fx.plant_link("r", "rootonly");
    for path in [fx.text("rootonly"), link.clone()] {
        let reply = as_user(
            envd.addr,
            "filesystem.Filesystem/ListDir",
            json!({"path": path, "depth": 1}),
        )
        .await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
        assert_eq!(reply.json()["code"], "permission_denied");
    }
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": format!("{link}/inside")}),
    )
    .await;
    assert_eq!(
        reply.json()["code"],
        "permission_denied",
        "{}",
        reply.text()
    );
    // Listing the home, even deep, shows the link but nothing behind it.
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": fx.text("home"), "depth": 3}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let entries = reply.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(!reply.text().contains("inside"));
    // Root lists it.
    let reply = as_root(
        envd.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": fx.text("rootonly"), "depth": 1}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["entries"][0]["name"], "inside");
}

#[tokio::test]
async fn remove_and_move_of_root_files_fail_for_the_user() {
    let Some(fx) = Fixture::new("remove and move root's files") else {
        return;
    };
    let envd = start().await;
    // Attack: delete or steal root's files, directly or through a planted link to their
    // directory.
    let link = fx.plant_link("etc", "rootdir");
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/Remove",
        json!({"path": format!("{link}/file")}),
    )
    .await;
    assert_eq!(
        reply.json()["code"],
        "permission_denied",
        "{}",
        reply.text()
    );
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/Move",
        json!({"source": fx.text("rootdir/file"), "destination": fx.text("home/stolen")}),
    )
    .await;
    assert_eq!(
        reply.json()["code"],
        "permission_denied",
        "{}",
        reply.text()
    );
    assert_eq!(
        std::fs::read_to_string(fx.path("rootdir/file")).unwrap(),
        "keep me"
    );
    assert!(!fx.path("home/stolen").exists());
    // The user's own files move and go as before.
    std::fs::write(fx.path("home/mine"), "mine").unwrap();
    std::os::unix::fs::chown(fx.path("home/mine"), Some(fx.uid), Some(fx.gid)).unwrap();
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/Move",
        json!({"source": fx.text("home/mine"), "destination": fx.text("home/sub/moved")}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(owner(fx.path("home/sub")), (fx.uid, fx.gid));
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/Remove",
        json!({"path": fx.text("home/sub")}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!fx.path("home/sub").exists());
}

#[tokio::test]
async fn files_and_directories_made_by_the_user_belong_to_the_user() {
    let Some(fx) = Fixture::new("ownership of uploads") else {
        return;
    };
    let envd = start().await;
    // Without this the user would leave root-owned files in their own home that they
    // cannot change or remove afterwards; with the old chown-after-create there was a
    // window in which they were root's.
    let target = fx.text("home/a/b/c.txt");
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}&username=nobody", q(&target)),
        &[("content-type", "application/octet-stream")],
        "hello",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for rel in ["home/a", "home/a/b", "home/a/b/c.txt"] {
        assert_eq!(owner(fx.path(rel)), (fx.uid, fx.gid), "{rel}");
    }
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o600, 0o600, "{mode:o}");
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": fx.text("home/x/y")}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["entry"]["owner"], "nobody");
    assert_eq!(owner(fx.path("home/x")), (fx.uid, fx.gid));
    assert_eq!(owner(fx.path("home/x/y")), (fx.uid, fx.gid));
}

#[tokio::test]
async fn watching_a_root_only_dir_fails_for_the_user() {
    let Some(fx) = Fixture::new("watch root's dir") else {
        return;
    };
    let envd = start().await;
    // Attack: watch `/root` to learn the names of the files root creates there.
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": fx.text("rootonly"), "recursive": false}),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["code"], "permission_denied");
    let (messages, trailer) = stream(
        envd.addr,
        "filesystem.Filesystem/WatchDir",
        json!({"path": fx.text("rootonly")}),
        &[AS_NOBODY],
    )
    .await
    .collect()
    .await;
    assert!(messages.is_empty(), "{messages:?}");
    assert_eq!(trailer["error"]["code"], "permission_denied", "{trailer}");
    // A directory the user may read (but not write) can be watched.
    let reply = as_user(
        envd.addr,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": fx.text("rootdir"), "recursive": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = as_root(
        envd.addr,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": fx.text("rootonly")}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_process_cannot_start_in_a_directory_the_user_may_not_enter() {
    let Some(fx) = Fixture::new("start in root's dir") else {
        return;
    };
    let envd = start().await;
    // Attack: start a command as `user` with cwd `/root`: the child changes directory
    // while it is still root, so envd must refuse it first.
    let mut request = sh("pwd");
    request["process"]["cwd"] = json!(fx.text("rootonly"));
    let (_, trailer) = stream(envd.addr, "process.Process/Start", request, &[AS_NOBODY])
        .await
        .collect()
        .await;
    assert_eq!(trailer["error"]["code"], "permission_denied", "{trailer}");
    // Its own home is fine, and the process runs as the user there.
    let mut request = sh("pwd; id -u");
    request["process"]["cwd"] = json!(fx.text("home"));
    let (messages, trailer) = stream(envd.addr, "process.Process/Start", request, &[AS_NOBODY])
        .await
        .collect()
        .await;
    assert_eq!(trailer, json!({}), "{messages:?}");
    assert_eq!(
        stdout_of(&messages),
        format!("{}\n{}\n", fx.text("home"), fx.uid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_root_and_user_requests_never_run_with_each_others_identity() {
    let Some(fx) = Fixture::new("interleaved identities") else {
        return;
    };
    let envd = start_with(courier_envd::Envd::builder().access_token(TOKEN)).await;
    // Attack: keep the pool busy with the user's requests so that a thread that served the
    // user serves root's next request (or the reverse). Each request checks the identity
    // it ran with: what it creates is owned by its requester, and only root's downloads of
    // the root-only file succeed.
    let mut tasks = Vec::new();
    for round in 0..8 {
        let dir = fx.path(&format!("home/r{round}"));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(fx.uid), Some(fx.gid)).unwrap();
        for i in 0..24 {
            let as_root = (i + round) % 2 == 0;
            let (user, expected) = if as_root {
                ("root", (0, 0))
            } else {
                ("nobody", (fx.uid, fx.gid))
            };
            let addr = envd.addr;
            let target = fx.text(&format!("home/r{round}/f{i}-{user}"));
            let secret = signed_download(&fx.text("secret"), user);
            tasks.push(tokio::spawn(async move {
                let upload = request(
                    addr,
                    "POST",
                    &format!("/files?path={}&username={user}", q(&target)),
                    &[
                        ("content-type", "application/octet-stream"),
                        ("x-access-token", TOKEN),
                    ],
                    "x",
                )
                .await;
                let download = request(addr, "GET", &secret, &[], "").await;
                (target, expected, as_root, upload.status, download.status)
            }));
        }
    }
    let mut checked = 0;
    for task in tasks {
        let (target, expected, as_root, upload, download) = task.await.unwrap();
        assert_eq!(upload, 200, "{target}");
        assert_eq!(owner(&target), expected, "{target}");
        assert_eq!(download, if as_root { 200 } else { 403 }, "{target}");
        checked += 1;
    }
    assert_eq!(checked, 8 * 24);
    // The test process's own threads are still root.
    assert!(is_root());
}
