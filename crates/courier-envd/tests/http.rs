//! Plain-HTTP endpoints: /health, /init, /envs, /files (upload, download, gzip, limits,
//! signed URLs), the access token, the tunnel, malformed RPC bodies and the Unix sockets
//! envd serves on (bound by itself or handed over).

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;

use common::*;
use courier_envd::auth::{Operation, sign};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "courierBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (filename, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn q(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn health_is_204() {
    let envd = start_with(courier_envd::Envd::builder().access_token("secret")).await;
    assert_eq!(
        request(envd.addr, "GET", "/health", &[], "").await.status,
        204
    );
}

#[tokio::test]
async fn multipart_upload_writes_several_files_and_download_reads_them() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("x/y/a.txt").display().to_string();
    let b = dir.path().join("b.bin").display().to_string();
    let (content_type, body) = multipart(&[(&a, b"alpha"), (&b, &[0u8, 159, 146, 150])]);
    let reply = request(
        envd.addr,
        "POST",
        "/files",
        &[("content-type", &content_type)],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!([{"path": a, "name": "a.txt", "type": "file"}, {"path": b, "name": "b.bin", "type": "file"}])
    );
    let got = request(envd.addr, "GET", &format!("/files?path={}", q(&b)), &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], &[0u8, 159, 146, 150]);
    // `path` overrides the part's filename.
    let c = dir.path().join("c.txt").display().to_string();
    let (content_type, body) = multipart(&[("ignored", b"gamma")]);
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}", q(&c)),
        &[("content-type", &content_type)],
        body,
    )
    .await;
    assert_eq!(reply.json()[0]["path"], c);
    assert_eq!(std::fs::read_to_string(&c).unwrap(), "gamma");
    // Duplicate targets are refused.
    let (content_type, body) = multipart(&[(&c, b"1"), (&c, b"2")]);
    let reply = request(
        envd.addr,
        "POST",
        "/files",
        &[("content-type", &content_type)],
        body,
    )
    .await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn files_that_report_no_size_are_downloaded_whole() {
    // /proc files say they are empty (st_size 0) and are not: a Content-Length taken
    // from the size would cut them to nothing (the SDK reads `boot_id` this way).
    let envd = start().await;
    let got = request(
        envd.addr,
        "GET",
        &format!("/files?path={}", q("/proc/sys/kernel/random/boot_id")),
        &[],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(got.text(), boot_id);
    // An empty regular file is still empty.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let got = request(
        envd.addr,
        "GET",
        &format!("/files?path={}", q(&empty.display().to_string())),
        &[],
        "",
    )
    .await;
    assert_eq!((got.status, got.body.len()), (200, 0));
}

#[tokio::test]
async fn download_errors_are_json() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt").display().to_string();
    let reply = request(
        envd.addr,
        "GET",
        &format!("/files?path={}", q(&missing)),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json(),
        json!({"code": 404, "message": format!("path '{missing}' does not exist")})
    );
    let reply = request(
        envd.addr,
        "GET",
        &format!("/files?path={}", q(&dir.path().display().to_string())),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["code"], 400);
}

#[tokio::test]
async fn raw_upload_accepts_gzip_and_enforces_the_size_limit() {
    let envd = start_with(courier_envd::Envd::builder().max_upload_bytes(1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("g.txt").display().to_string();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&b"z".repeat(900)).unwrap();
    let gz = encoder.finish().unwrap();
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}", q(&target)),
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        gz,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(std::fs::read(&target).unwrap(), b"z".repeat(900));
    // Over the limit after decoding: 413 and no partial file.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&b"z".repeat(5000)).unwrap();
    let big = dir.path().join("big.txt").display().to_string();
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}", q(&big)),
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        encoder.finish().unwrap(),
    )
    .await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["message"].as_str().unwrap().contains("limit"));
    assert!(!std::path::Path::new(&big).exists());
    let reply = request(
        envd.addr,
        "POST",
        "/files?path=x",
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        "not gzip",
    )
    .await;
    assert_eq!(reply.status, 400);
}

/// A refused upload's answer reaches a client that is still sending its body, over TCP and
/// over a Unix socket (how sandboxd's proxy reaches envd). Answering and closing on unread
/// data makes the client's next write fail (or the connection reset) and the answer is
/// lost: through the proxy, the official SDK reported an unreachable sandbox instead of the
/// refusal. envd reads (and drops, within a bound) the rest of the body first.
#[tokio::test]
async fn a_refused_upload_is_answered_while_its_body_is_still_coming() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("envd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let builder = || courier_envd::Envd::builder().access_token("secret");
    let unix_server = tokio::spawn(builder().build().serve_unix(listener));
    let envd = start_with(builder()).await;
    let path = dir.path().join("big.bin").display().to_string();
    let data = vec![b'x'; 4 << 20];
    let (multipart_type, multipart_body) = multipart(&[(&path, &data)]);
    let raw_path = format!("/files?path={}", q(&path));
    for (what, uri, content_type, body) in [
        (
            "raw",
            raw_path.as_str(),
            "application/octet-stream",
            data.clone(),
        ),
        (
            "multipart",
            "/files",
            multipart_type.as_str(),
            multipart_body,
        ),
    ] {
        let head = format!(
            "POST {uri} HTTP/1.1\r\nHost: envd\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let tcp = tokio::net::TcpStream::connect(envd.addr).await.unwrap();
        let unix = tokio::net::UnixStream::connect(&socket).await.unwrap();
        for (over, answer) in [
            ("tcp", slow_post(tcp, &head, &body).await),
            ("unix", slow_post(unix, &head, &body).await),
        ] {
            let answer = answer.unwrap_or_else(|e| panic!("{what} over {over}: lost: {e}"));
            assert!(
                answer.starts_with("HTTP/1.1 401"),
                "{what} over {over}: {answer}"
            );
        }
    }
    assert!(!std::path::Path::new(&path).exists());
    unix_server.abort();
}

#[tokio::test]
async fn access_token_and_signed_urls() {
    let envd = start_with(courier_envd::Envd::builder().access_token("secret")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.txt").display().to_string();
    std::fs::write(&path, "signed").unwrap();
    // RPC and plain endpoints need the token.
    let reply = unary(envd.addr, "process.Process/List", json!({})).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["code"], 401);
    let reply = unary_with(
        envd.addr,
        "process.Process/List",
        json!({}),
        &[("x-access-token", "secret")],
    )
    .await;
    assert_eq!(reply.status, 200);
    // /files: token, or a valid signature.
    let plain = format!("/files?path={}", q(&path));
    assert_eq!(request(envd.addr, "GET", &plain, &[], "").await.status, 401);
    assert_eq!(
        request(envd.addr, "GET", &plain, &[("x-access-token", "wrong")], "")
            .await
            .status,
        401
    );
    assert_eq!(
        request(
            envd.addr,
            "GET",
            &plain,
            &[("x-access-token", "secret")],
            ""
        )
        .await
        .status,
        200
    );
    let signature = sign(&path, Operation::Read, "", "secret", None);
    let signed = format!("{plain}&signature={}", q(&signature));
    let reply = request(envd.addr, "GET", &signed, &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "signed");
    let write_sig = sign(&path, Operation::Write, "", "secret", None);
    assert_eq!(
        request(
            envd.addr,
            "GET",
            &format!("{plain}&signature={}", q(&write_sig)),
            &[],
            ""
        )
        .await
        .status,
        401
    );
    let expired = sign(&path, Operation::Read, "", "secret", Some(1000));
    let reply = request(
        envd.addr,
        "GET",
        &format!(
            "{plain}&signature={}&signature_expiration=1000",
            q(&expired)
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 401);
    assert!(reply.text().contains("expired"));
    let future = chrono::Utc::now().timestamp() + 600;
    let valid = sign(&path, Operation::Read, "", "secret", Some(future));
    let reply = request(
        envd.addr,
        "GET",
        &format!(
            "{plain}&signature={}&signature_expiration={future}",
            q(&valid)
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn init_sets_env_vars_token_and_default_user() {
    let envd = start().await;
    let reply = request(
        envd.addr,
        "POST",
        "/init",
        &[("content-type", "application/json")],
        serde_json::to_vec(&json!({"envVars": {"FROM_INIT": "yes"}, "accessToken": "tok"}))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        request(envd.addr, "GET", "/envs", &[], "").await.status,
        401
    );
    let envs = request(envd.addr, "GET", "/envs", &[("x-access-token", "tok")], "").await;
    assert_eq!(envs.json()["FROM_INIT"], "yes");
    let (messages, _) = stream(
        envd.addr,
        "process.Process/Start",
        sh("echo $FROM_INIT"),
        &[("x-access-token", "tok")],
    )
    .await
    .collect()
    .await;
    assert_eq!(stdout_of(&messages), "yes\n");
    let bad_user = request(
        envd.addr,
        "POST",
        "/init",
        &[("x-access-token", "tok")],
        serde_json::to_vec(&json!({"defaultUser": "no-such-user-xyz"})).unwrap(),
    )
    .await;
    assert_eq!(bad_user.status, 400);
}

#[tokio::test]
async fn tunnel_pipes_bytes_to_a_loopback_port() {
    let envd = start().await;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = socket.read(&mut buf).await.unwrap();
        socket.write_all(&buf[..n]).await.unwrap();
    });
    let stream = tokio::net::TcpStream::connect(envd.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = http::Request::builder()
        .uri(format!("/tunnel/{port}"))
        .header("host", "envd")
        .header("connection", "upgrade")
        .header("upgrade", courier_envd::tunnel::TUNNEL_PROTOCOL)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut upgraded = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    upgraded
        .write_all(b"ping through the tunnel")
        .await
        .unwrap();
    let mut buf = vec![0u8; 23];
    upgraded.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");

    // A closed port answers 502 before any upgrade.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reply = request(
        envd.addr,
        "GET",
        &format!("/tunnel/{closed}"),
        &[("connection", "upgrade"), ("upgrade", "courier-tunnel")],
        "",
    )
    .await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn malformed_rpc_bodies_are_invalid_argument() {
    let envd = start().await;
    let reply = request(
        envd.addr,
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("content-type", "application/json")],
        "{not json",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["code"], "invalid_argument");
    let reply = request(
        envd.addr,
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("content-type", "application/proto")],
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(reply.json()["code"], "invalid_argument");
    let reply = request(
        envd.addr,
        "POST",
        "/process.Process/Start",
        &[("content-type", "application/connect+json")],
        "short",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("invalid_argument"));
    let reply = request(
        envd.addr,
        "POST",
        "/process.Process/List",
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(reply.status, 415);
    let reply = unary(envd.addr, "process.Process/Nope", json!({})).await;
    assert_eq!(reply.json()["code"], "unimplemented");
    let reply = unary_with(
        envd.addr,
        "process.Process/List",
        json!({}),
        &[("authorization", "Basic !!!")],
    )
    .await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("envd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(courier_envd::Envd::builder().build().serve_unix(listener));
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/health")
        .header("host", "envd")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 204);
    server.abort();
}

#[tokio::test]
async fn serves_on_a_handed_over_socket_and_hides_it_from_children() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::fd::AsRawFd as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("envd.sock");
    // Bound by the "control plane", not listening, inheritable: as handed over.
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    rustix::net::bind(&fd, &SocketAddrUnix::new(&socket).unwrap()).unwrap();
    let number = fd.as_raw_fd();
    let server = tokio::spawn(courier_envd::Envd::builder().build().serve_unix_fd(fd));
    let stream = loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(stream) => break stream,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    // Attack: a process envd starts inherits the control socket and answers the control
    // plane in envd's place. Taking the socket marks it close-on-exec.
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{number}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(flags & 0o2_000_000, 0o2_000_000, "{info}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/health")
        .header("host", "envd")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 204);
    server.abort();
    // What is not a Unix stream socket is refused, naming the descriptor.
    let datagram = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let err = courier_envd::listener::unix_listener_from_fd(datagram).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not a stream socket"), "{err}");
}

#[tokio::test]
async fn upload_metadata_headers_become_entry_metadata() {
    let envd = start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.txt").display().to_string();
    // Probe: not every file system takes user xattrs.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "").unwrap();
    if rustix::fs::setxattr(
        &probe,
        "user.e2b.probe",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        println!("skipped: no user xattrs on the temp file system");
        return;
    }
    let reply = request(
        envd.addr,
        "POST",
        &format!("/files?path={}", q(&target)),
        &[
            ("content-type", "application/octet-stream"),
            ("x-metadata-Owner-Team", "infra"),
        ],
        "m",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()[0]["metadata"], json!({"owner-team": "infra"}));
    let stat = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": target}),
    )
    .await
    .json();
    assert_eq!(stat["entry"]["metadata"], json!({"owner-team": "infra"}));
    // A new upload without headers clears the set.
    request(
        envd.addr,
        "POST",
        &format!("/files?path={}", q(&target)),
        &[("content-type", "application/octet-stream")],
        "m",
    )
    .await;
    let stat = unary(
        envd.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": target}),
    )
    .await
    .json();
    assert!(stat["entry"].get("metadata").is_none(), "{stat}");
    let bad = request(
        envd.addr,
        "POST",
        &format!("/files?path={}", q(&target)),
        &[
            ("content-type", "application/octet-stream"),
            ("x-metadata-k", "caf\u{e9}"),
        ],
        "m",
    )
    .await;
    assert_eq!(bad.status, 400);
}
