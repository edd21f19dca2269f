//! Wire tests for files: `/files` downloads and uploads, filesystem RPCs, watches, signed
//! URLs and the envd HTTP error mapping.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;

use base64::Engine;
use courier_e2b::{
    Error, FileKind, NotFoundKind, Sandbox, Secret, WatchEventKind,
    codec::{Code, Codec, ConnectError, EndOfStream},
    proto::filesystem::{self as pb, watch_dir_response},
};
use futures::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{ACCESS_TOKEN, Canned, FakeServer, SANDBOX_ID, stream_response, unary_response};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn entry_json() -> serde_json::Value {
    json!({"name": "a.txt", "type": "FILE_TYPE_FILE", "path": "/home/user/a.txt", "size": "10",
           "mode": 420, "permissions": "-rw-r--r--", "owner": "user", "group": "user",
           "modifiedTime": "2026-01-02T03:04:05.500Z", "metadata": {"k": "v"}, "futureField": true})
}

#[tokio::test]
async fn read_gets_files_with_routing_headers_and_decodes_gzip() {
    let server = FakeServer::start().await;
    server.push(
        Canned::status(200)
            .header("content-encoding", "gzip")
            .body(gzip(b"hello world")),
    );
    server.push(Canned::status(200).body("plain"));
    let sandbox = server.sandbox(Codec::Proto);
    assert_eq!(
        &sandbox.files().read("/home/user/a b.txt").await.unwrap()[..],
        b"hello world"
    );
    assert_eq!(
        sandbox.files().user("root").read_text("x").await.unwrap(),
        "plain"
    );

    let requests = server.requests();
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/files");
    assert_eq!(
        requests[0].query.as_deref(),
        Some("path=%2Fhome%2Fuser%2Fa%20b.txt")
    );
    assert_eq!(requests[0].header("accept-encoding"), Some("gzip"));
    assert_eq!(requests[0].header("e2b-sandbox-id"), Some(SANDBOX_ID));
    assert_eq!(requests[0].header("e2b-sandbox-port"), Some("49983"));
    assert_eq!(requests[0].header("x-access-token"), Some(ACCESS_TOKEN));
    assert_eq!(requests[1].query.as_deref(), Some("path=x&username=root"));
}

#[tokio::test]
async fn read_stream_decodes_gzip_chunk_by_chunk() {
    let server = FakeServer::start().await;
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    server.push(
        Canned::status(200)
            .header("content-encoding", "gzip")
            .body(gzip(&data))
            .chunked(1000),
    );
    let stream = server
        .sandbox(Codec::Proto)
        .files()
        .read_stream("big")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), data);
}

#[tokio::test]
async fn envd_http_errors_map_to_variants() {
    let cases = [
        (
            404,
            json!({"code": 404, "message": "path '/home/user/x' does not exist"}),
        ),
        (400, json!({"code": 400, "message": "path is a directory"})),
        (401, json!({"code": 401, "message": "invalid signature"})),
        (429, json!({"code": 429, "message": "slow"})),
        (
            502,
            json!({"sandboxId": SANDBOX_ID, "message": "The sandbox was not found", "code": 502}),
        ),
        (
            507,
            json!({"code": 507, "message": "not enough disk space"}),
        ),
    ];
    for (status, body) in cases {
        let server = FakeServer::start().await;
        server.push(Canned::json(status, body.clone()));
        let err = server
            .sandbox(Codec::Proto)
            .files()
            .read("x")
            .await
            .unwrap_err();
        let ok = match status {
            404 => {
                matches!(err, Error::NotFound { kind: NotFoundKind::File, ref message } if message.contains("does not exist"))
            }
            400 => matches!(err, Error::InvalidArgument { .. }),
            401 => matches!(err, Error::Authentication { .. }),
            429 => matches!(err, Error::RateLimited { .. }),
            502 => matches!(err, Error::SandboxGone { .. }),
            _ => matches!(err, Error::Api { status: 507, .. }),
        };
        assert!(ok, "{status}: {err:?}");
    }
}

#[tokio::test]
async fn write_uploads_multipart_with_the_path_as_filename() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!([{"path": "/home/user/a.txt", "name": "a.txt", "type": "file"}]),
    ));
    let info = server
        .sandbox(Codec::Proto)
        .files()
        .write("a.txt", "hello")
        .await
        .unwrap();
    assert_eq!(info.path, "/home/user/a.txt");
    assert_eq!(info.kind.as_deref(), Some("file"));

    let request = server.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/files")
    );
    assert_eq!(request.query.as_deref(), Some("path=a.txt"));
    assert!(
        request
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    assert_eq!(request.header("x-access-token"), Some(ACCESS_TOKEN));
    let body = String::from_utf8_lossy(&request.body);
    assert!(
        body.contains(r#"Content-Disposition: form-data; name="file"; filename="a.txt""#),
        "{body}"
    );
    assert!(body.contains("\r\n\r\nhello\r\n"), "{body}");
}

#[tokio::test]
async fn write_many_sends_one_part_per_file_without_a_path_query() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!([{"path": "/a", "name": "a", "type": "file"}, {"path": "/d/b", "name": "b", "type": "file"}]),
    ));
    let written = server
        .sandbox(Codec::Proto)
        .files()
        .write_many([("/a", "A"), ("/d/b", "B")])
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    let request = server.only_request();
    assert_eq!(request.query, None);
    let body = String::from_utf8_lossy(&request.body);
    assert!(
        body.contains(r#"name="file"; filename="/a""#)
            && body.contains(r#"name="file"; filename="/d/b""#),
        "{body}"
    );
}

#[tokio::test]
async fn write_with_sends_metadata_headers_and_gzip_bodies() {
    use courier_e2b::envd::WriteOptions;
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!([{"path": "/a", "name": "a", "type": "file", "metadata": {"author": "ci"}}]),
    ));
    let files = server.sandbox(Codec::Proto).files();
    let options = WriteOptions::new().metadata("author", "ci").gzip(true);
    let info = files
        .write_with("/a", "hello hello", &options)
        .await
        .unwrap();
    assert_eq!(info.metadata.unwrap()["author"], "ci");
    let request = server.only_request();
    // E2B's envd: one octet-stream request per file, the body gzip-encoded as a whole,
    // metadata as request-scoped `X-Metadata-<key>` headers.
    assert_eq!(request.header("x-metadata-author"), Some("ci"));
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    assert_eq!(
        request.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(request.query.as_deref(), Some("path=%2Fa"));
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&request.body[..]),
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain, b"hello hello");

    // Without gzip: one multipart request, metadata headers on it.
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!([{"path": "/x", "name": "x"}, {"path": "/y", "name": "y"}]),
    ));
    let written = server
        .sandbox(Codec::Proto)
        .files()
        .write_many_with(
            [("/x", "1"), ("/y", "2")],
            &WriteOptions::new().metadata("k", "v"),
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    let request = server.only_request();
    assert_eq!(request.header("x-metadata-k"), Some("v"));
    assert!(
        request
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data")
    );

    // A key that is no HTTP token never leaves the client.
    let server = FakeServer::start().await;
    let err = server
        .sandbox(Codec::Proto)
        .files()
        .write_with("/a", "x", &WriteOptions::new().metadata("a:b", "v"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn write_stream_sends_octet_stream() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        200,
        json!([{"path": "/big", "name": "big", "type": "file"}]),
    ));
    let chunks = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from("ab")),
        Ok("cd".into()),
    ]);
    server
        .sandbox(Codec::Proto)
        .files()
        .write_stream("/big", chunks)
        .await
        .unwrap();
    let request = server.only_request();
    assert_eq!(
        request.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(request.query.as_deref(), Some("path=%2Fbig"));
    assert_eq!(&request.body[..], b"abcd");
}

#[tokio::test]
async fn filesystem_rpcs_send_json_and_read_entries() {
    let server = FakeServer::start().await;
    let ok = |body: serde_json::Value| Canned::json(200, body);
    server.push(ok(
        json!({"entries": [entry_json(), {"name": "broken", "type": "FILE_TYPE_UNSPECIFIED"}]}),
    ));
    server.push(ok(json!({"entry": entry_json()})));
    server.push(Canned::json(
        404,
        json!({"code": "not_found", "message": "no such file"}),
    ));
    server.push(ok(json!({"entry": entry_json()})));
    server.push(Canned::json(
        409,
        json!({"code": "already_exists", "message": "exists"}),
    ));
    server.push(ok(json!({"entry": entry_json()})));
    server.push(ok(json!({})));
    let files = server.sandbox(Codec::Json).files();

    let entries = files.list("/home/user", 2).await.unwrap();
    assert_eq!(entries.len(), 1, "entries of unknown type are dropped");
    let entry = &entries[0];
    assert_eq!(
        (entry.kind, entry.size, entry.mode),
        (FileKind::File, 10, 0o644)
    );
    assert_eq!(entry.modified_time.unwrap().timestamp_subsec_millis(), 500);
    assert_eq!(entry.metadata["k"], "v");
    assert!(files.exists("a.txt").await.unwrap());
    assert!(!files.exists("nope").await.unwrap());
    assert!(files.make_dir("d").await.unwrap());
    assert!(!files.make_dir("d").await.unwrap());
    assert_eq!(
        files.rename("a.txt", "b/a.txt").await.unwrap().name,
        "a.txt"
    );
    files.remove("b").await.unwrap();

    let requests = server.requests();
    let paths: Vec<_> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/filesystem.Filesystem/ListDir",
            "/filesystem.Filesystem/Stat",
            "/filesystem.Filesystem/Stat",
            "/filesystem.Filesystem/MakeDir",
            "/filesystem.Filesystem/MakeDir",
            "/filesystem.Filesystem/Move",
            "/filesystem.Filesystem/Remove",
        ]
    );
    assert_eq!(
        requests[0].json(),
        json!({"path": "/home/user", "depth": 2})
    );
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[1].json(), json!({"path": "a.txt"}));
    assert_eq!(
        requests[5].json(),
        json!({"source": "a.txt", "destination": "b/a.txt"})
    );
}

#[tokio::test]
async fn stat_errors_are_file_not_found_and_depth_zero_is_rejected_locally() {
    let server = FakeServer::start().await;
    server.push(Canned::json(
        404,
        json!({"code": "not_found", "message": "no such file"}),
    ));
    let files = server.sandbox(Codec::Json).files();
    let err = files.get_info("nope").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: NotFoundKind::File,
                ..
            }
        ),
        "{err:?}"
    );
    let err = files.list("/", 0).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref message } if message.contains("depth")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn filesystem_rpcs_work_in_protobuf() {
    let server = FakeServer::start().await;
    server.push(unary_response(
        Codec::Proto,
        &pb::StatResponse {
            entry: Some(pb::EntryInfo {
                name: "d".into(),
                r#type: pb::FileType::Directory as i32,
                path: "/d".into(),
                mode: 0o755,
                ..Default::default()
            }),
        },
    ));
    let info = server
        .sandbox(Codec::Proto)
        .files()
        .get_info("/d")
        .await
        .unwrap();
    assert_eq!((info.kind, info.mode), (FileKind::Directory, 0o755));
    let request = server.only_request();
    assert_eq!(request.header("content-type"), Some("application/proto"));
    let sent: pb::StatRequest = Codec::Proto.decode(&request.body).unwrap();
    assert_eq!(sent.path, "/d");
}

fn watch(event: watch_dir_response::Event) -> pb::WatchDirResponse {
    pb::WatchDirResponse { event: Some(event) }
}

#[tokio::test]
async fn watch_dir_waits_for_start_and_streams_events() {
    let server = FakeServer::start().await;
    let fs_event = |name: &str, kind: pb::EventType| {
        watch(watch_dir_response::Event::Filesystem(pb::FilesystemEvent {
            name: name.into(),
            r#type: kind as i32,
            entry: None,
        }))
    };
    server.push(stream_response(
        Codec::Json,
        &[
            watch(watch_dir_response::Event::Start(
                watch_dir_response::StartEvent {},
            )),
            fs_event("nested/f.txt", pb::EventType::Create),
            watch(watch_dir_response::Event::Keepalive(
                watch_dir_response::KeepAlive {},
            )),
            fs_event("nested/f.txt", pb::EventType::Write),
        ],
        Some(EndOfStream::ok()),
    ));
    let events: Vec<_> = server
        .sandbox(Codec::Json)
        .files()
        .watch_dir("/home/user")
        .recursive(true)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("nested/f.txt", WatchEventKind::Create),
            ("nested/f.txt", WatchEventKind::Write)
        ]
    );

    let request = server.only_request();
    assert_eq!(request.path, "/filesystem.Filesystem/WatchDir");
    assert_eq!(request.header("keepalive-ping-interval"), Some("50"));
    let body: serde_json::Value = serde_json::from_slice(&request.envelopes()[0].payload).unwrap();
    assert_eq!(body, json!({"path": "/home/user", "recursive": true}));
}

#[tokio::test]
async fn watching_a_missing_directory_fails_at_start() {
    let server = FakeServer::start().await;
    server.push(stream_response::<pb::WatchDirResponse>(
        Codec::Json,
        &[],
        Some(EndOfStream::error(ConnectError::new(
            Code::NotFound,
            "path not found",
        ))),
    ));
    let err = server
        .sandbox(Codec::Json)
        .files()
        .watch_dir("/nope")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: NotFoundKind::File,
                ..
            }
        ),
        "{err:?}"
    );
}

fn expected_signature(text: &str) -> String {
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(text.as_bytes()))
    )
}

#[tokio::test]
async fn signed_urls_follow_the_v1_scheme_on_the_direct_host() {
    let client = courier_e2b::Client::new(
        courier_e2b::ConnectionConfig::builder()
            .api_key("k")
            .build()
            .unwrap(),
    )
    .unwrap();
    let sandbox = Sandbox::from_record(&client, support::record(Some(ACCESS_TOKEN)));
    let url = sandbox
        .files()
        .download_url("/home/user/a.txt", None)
        .unwrap();
    let signature = expected_signature(&format!("/home/user/a.txt:read::{ACCESS_TOKEN}"));
    let encoded = signature.replace('+', "%2B").replace('/', "%2F");
    assert_eq!(
        url.as_str(),
        format!(
            "https://49983-{SANDBOX_ID}.e2b.app/files?path=%2Fhome%2Fuser%2Fa.txt&signature={encoded}"
        )
    );

    let url = sandbox
        .files()
        .user("user")
        .upload_url("a.txt", Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    let expiration = &query["signature_expiration"];
    assert_eq!(query["username"], "user");
    assert_eq!(
        query["signature"],
        expected_signature(&format!("a.txt:write:user:{ACCESS_TOKEN}:{expiration}"))
    );
    assert_eq!(
        courier_e2b::envd::file_signature(
            "a.txt",
            "write",
            Some("user"),
            &Secret::new(ACCESS_TOKEN),
            Some(expiration.parse().unwrap())
        ),
        query["signature"]
    );
}

#[tokio::test]
async fn unsecured_sandboxes_get_unsigned_urls_and_cannot_expire_them() {
    let client = courier_e2b::Client::new(
        courier_e2b::ConnectionConfig::builder()
            .api_key("k")
            .build()
            .unwrap(),
    )
    .unwrap();
    let sandbox = Sandbox::from_record(&client, support::record(None));
    assert_eq!(
        sandbox.files().download_url("a", None).unwrap().query(),
        Some("path=a")
    );
    let err = sandbox
        .files()
        .download_url("a", Some(std::time::Duration::from_secs(1)))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn is_running_reads_health() {
    let server = FakeServer::start().await;
    server.push(Canned::status(204));
    server.push(Canned::json(
        502,
        json!({"sandboxId": SANDBOX_ID, "message": "The sandbox was not found", "code": 502}),
    ));
    let sandbox = server.sandbox(Codec::Proto);
    assert!(sandbox.is_running().await.unwrap());
    assert!(!sandbox.is_running().await.unwrap());
    let request = &server.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/health")
    );
    assert_eq!(request.header("e2b-sandbox-id"), Some(SANDBOX_ID));
}

#[tokio::test]
async fn get_host_uses_the_sandbox_domain() {
    let client = courier_e2b::Client::new(
        courier_e2b::ConnectionConfig::builder()
            .api_key("k")
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut record = support::record(None);
    record.domain = Some("custom.dev".into());
    let sandbox = Sandbox::from_record(&client, record);
    assert_eq!(
        sandbox.get_host(3000),
        format!("3000-{SANDBOX_ID}.custom.dev")
    );
    assert_eq!(
        sandbox.envd_url().as_str(),
        format!("https://49983-{SANDBOX_ID}.custom.dev/")
    );
}
