//! The transform proxy in-process, without root or sandboxes: connections registered with
//! the proxy as the supervisor registers a sandbox's redirected socket, against a local
//! upstream that echoes the request heads it receives. What the sandbox could try through
//! the proxy (forging the header, sending the request elsewhere by `Host` or absolute URI,
//! upgrading past the proxy, TLS, a giant head) is tried here and must fail; the same flows
//! run with real sandboxes in `tests/egress/transform.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::super::super::{Egress, EgressRules, OperatorAllow, TransformRules};
use super::super::DomainProxy;

const SECRET: &str = "proof-in-process-0123456789";

/// An upstream on `127.0.0.2`: answers every request with its head as received (the
/// body), `/sse` with two chunks a second apart. Returns its address and every head.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    seen.lock().unwrap().push(head.clone());
                    if head.starts_with("GET /sse ") {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                                  b\r\ndata: one\n\n\r\n",
                            )
                            .await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = stream.write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n").await;
                    } else {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
                            head.len()
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// A proxy, an upstream and a sandbox policy whose rules transform requests to it
/// (`rules` is the JSON `rules` object, `UPSTREAM` standing for the upstream's address).
struct World {
    proxy: DomainProxy,
    upstream: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    egress: super::super::super::SandboxEgress,
}

impl World {
    async fn new(rules: serde_json::Value) -> Self {
        let (upstream, heads) = upstream().await;
        // The operator opened exactly the upstream's port of 127.0.0.2 (loopback is
        // internal otherwise).
        let allow: OperatorAllow = format!("{upstream}").parse().unwrap();
        let transforms = TransformRules::parse(Some(&rules), "rules").unwrap();
        let egress = Egress::new(vec![allow])
            .sandbox("sbx", EgressRules::default().with_transforms(transforms));
        Self {
            proxy: DomainProxy::start().unwrap(),
            upstream,
            heads,
            egress,
        }
    }

    /// A connection as the supervisor makes one for the sandbox: registered, then
    /// connected to the proxy.
    async fn connect(&self) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(
            self.proxy
                .expect(port, self.upstream, self.egress.clone(), false)
        );
        socket.connect(self.proxy.addr()).await.unwrap()
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Reads one response (Content-Length framed, or until close) from `stream`.
async fn response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.trim().parse::<usize>().ok())
                && buf.len() >= end + 4 + len
            {
                return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no response within 10 s: {}", String::from_utf8_lossy(&buf)),
        }
    }
}

fn rules_for(key: &str) -> serde_json::Value {
    serde_json::json!({ key: [{"transform": {"headers": {"X-Proof": SECRET}}}] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_replace_forged_ones_on_every_request_of_a_connection() {
    let world = World::new(rules_for("127.0.0.2")).await;
    let mut client = world.connect().await;
    for _ in 0..2 {
        client
            .write_all(
                b"GET /a HTTP/1.1\r\nHost: anything\r\nX-Proof: forged\r\nx-proof: forged2\r\n\r\n",
            )
            .await
            .unwrap();
        let answer = response(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let heads = world.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert_eq!(lower.matches("x-proof:").count(), 1, "{head}");
        assert!(lower.contains(&format!("x-proof: {SECRET}")), "{head}");
        assert!(!head.contains("forged"), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_uri_or_another_host_changes_nothing_about_the_destination() {
    // The sandbox asks the proxy for another server: the request still goes to the
    // connection's checked destination, in origin form, with the host it named.
    let world = World::new(rules_for("127.0.0.2")).await;
    let mut client = world.connect().await;
    client
        .write_all(
            b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = response(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let heads = world.heads();
    assert!(
        heads[0].starts_with("GET /latest/meta-data/ HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("host: 169.254.169.254\r\n"),
        "{heads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_rule_applies_only_where_its_name_resolves() {
    // `localhost` resolves to 127.0.0.1, not to the upstream's 127.0.0.2: a request that
    // names it there must not carry the header (the sandbox would be sending the secret
    // to a server of its choosing). The proxy intercepts domain keys on 80/443 only, so
    // the connection is registered by hand as the supervisor would for port 80.
    // An IP key without a transform makes the proxy serve the connection.
    let world = World::new(serde_json::json!({
        "127.0.0.2": [{}],
        "localhost": [{"transform": {"headers": {"X-Proof": SECRET}}}],
    }))
    .await;
    let mut client = world.connect().await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Sent: Yes\r\n\r\n")
        .await
        .unwrap();
    let answer = response(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = &world.heads()[0];
    // Parsed and re-written by the proxy (hyper sends names lowercase), not spliced...
    assert!(head.contains("x-sent: Yes\r\n"), "{head}");
    // ...and without the header meant for the real `localhost`.
    assert!(!head.contains(SECRET), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_tls_and_giant_heads_are_refused() {
    let world = World::new(rules_for("127.0.0.2")).await;
    // An upgrade would carry later traffic past the proxy (a sandbox could send requests
    // without the transforms, or past the rules, inside a WebSocket): refused with 426,
    // which WebSocket-first clients (Codex) read as "use HTTP", and nothing reaches the
    // upstream.
    let mut client = world.connect().await;
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = response(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    // A tunnel likewise: 501.
    let mut client = world.connect().await;
    client
        .write_all(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n")
        .await
        .unwrap();
    let answer = response(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(
        world
            .heads()
            .iter()
            .all(|h| !h.starts_with("GET /ws") && !h.starts_with("CONNECT")),
        "{:?}",
        world.heads()
    );

    // TLS to a host with rules: closed without a byte upstream.
    let mut client = world.connect().await;
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ];
    hello.resize(5 + 0x40, 0);
    client.write_all(&hello).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // 4 MiB of headers: answered 431 at the bound, never buffered whole.
    let mut client = world.connect().await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let line = format!("X-Big: {}\r\n", "a".repeat(1000));
    let mut sent = 0usize;
    for _ in 0..4096 {
        if client.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        sent += line.len();
    }
    let answer = response(&mut client).await;
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
        "after {sent} bytes: {answer}"
    );
    assert!(world.heads().is_empty(), "{:?}", world.heads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_as_it_is_sent() {
    let world = World::new(rules_for("127.0.0.2")).await;
    let mut client = world.connect().await;
    let start = Instant::now();
    client
        .write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("data: one") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let first = start.elapsed();
    while !String::from_utf8_lossy(&got).contains("data: two") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let second = start.elapsed();
    assert!(
        first < Duration::from_millis(700) && second >= Duration::from_millis(900),
        "first event after {first:?}, second after {second:?}"
    );
}
