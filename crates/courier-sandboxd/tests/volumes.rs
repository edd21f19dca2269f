//! Volumes over HTTP against a real courier-sandboxd: the `/volumes` API (per API key,
//! within a quota), the volume content API (per volume token), persistence across a
//! restart, and `volumeMounts` in real sandboxes.
//!
//! They need root (loop devices, mounts, namespaces); without it each test returns early.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use courier_e2b::{Client, ConnectionConfig, Sandbox};
use courier_sandboxd::volumes::VolumeLimits;
use courier_sandboxd::{Sandboxd, ServerConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod support;
use support::envd_binary;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");
const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";

struct Fixture {
    server: Sandboxd,
    api_url: String,
    client: Client,
    /// A second API key of the same server (another tenant).
    other_key: String,
    stop: tokio::sync::watch::Sender<bool>,
    data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// A server with 64 MiB volumes, 128 MiB per key.
    async fn new(test: &str) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let other_key = courier_sandboxd::keys::create_key(&data_dir).expect("key");
        let mut fx = Self::start(data_dir, other_key).await;
        fx._dir = Some(dir);
        Some(fx)
    }

    async fn start(data_dir: PathBuf, other_key: String) -> Self {
        let mut config = ServerConfig::new(&data_dir, envd_binary());
        config.isolation = Some(support::isolation());
        config.helper = Some(PathBuf::from(HELPER));
        config.dev_api_key = Some(KEY.to_owned());
        config.warm_sandboxes = 0;
        config.volumes = VolumeLimits {
            size_mb: 64,
            per_key_mb: 128,
        };
        let server = Sandboxd::start(config).await.expect("start sandboxd");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let api_addr = api.local_addr().unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn({
            let server = server.clone();
            let until = support::stopped(stop_rx.clone());
            async move { server.serve_api(api, until).await }
        });
        tokio::spawn({
            let server = server.clone();
            let until = support::stopped(stop_rx);
            async move { server.serve_proxy(proxy, until).await }
        });
        let client = Client::new(
            ConnectionConfig::builder()
                .api_key(KEY)
                .api_url(format!("http://{api_addr}"))
                .sandbox_url(format!("http://{proxy_addr}"))
                .request_timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        )
        .unwrap();
        Self {
            server,
            api_url: format!("http://{api_addr}"),
            client,
            other_key,
            stop,
            data_dir,
            _dir: None,
        }
    }

    /// A control-plane call with `key`.
    async fn api(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let http = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        support::call_api(&http, &self.api_url, key, method, path, body).await
    }

    /// A content API call with `token`: status and body bytes.
    async fn content(
        &self,
        token: &str,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Vec<u8>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{url}", self.api_url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("content request");
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    async fn content_json(
        &self,
        token: &str,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let (status, bytes) = self.content(token, method, url, body).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn shutdown(self) {
        self.server.kill_all().await;
        self.server.stop();
        let _ = self.stop.send(true);
    }
}

/// The volume API per key and within the quota, the content API's operations, and a
/// restart keeping both.
///
/// Attacks tried (a tenant, or code in a sandbox holding one volume's token): another
/// API key reading, listing, deleting or mounting the volume; a volume token used on
/// another volume; no token; paths with `..` climbing out of the volume; filling the
/// disk past the volume's quota through the content API. Each must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_per_key_within_quota_and_survive_a_restart() {
    let Some(fx) = Fixture::new("volumes_api").await else {
        return;
    };
    let (status, created) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "data"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["volumeID"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "data");
    assert!(created.get("domain").is_none(), "no BYOC domain: {created}");

    // Names: E2B's pattern, unique per key.
    let (status, body) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "a/b"})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "data"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already exists"));

    // Quota: 128 MiB per key of 64 MiB volumes: a second fits, a third is refused.
    let (status, second) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "two"})))
        .await;
    assert_eq!(status, 201, "{second}");
    let (status, body) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "three"})))
        .await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("quota"),
        "{body}"
    );

    let (status, list) = fx.api(KEY, "GET", "/volumes", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["data", "two"]);
    assert!(
        list[0].get("token").is_none(),
        "list carries no tokens: {list}"
    );
    let (status, got) = fx.api(KEY, "GET", &format!("/volumes/{id}"), None).await;
    assert_eq!((status, got["token"].as_str()), (200, Some(token.as_str())));

    // Another API key: sees nothing, cannot read or delete it, and has a quota of its own.
    let other = fx.other_key.clone();
    let (status, list) = fx.api(&other, "GET", "/volumes", None).await;
    assert_eq!((status, list), (200, json!([])));
    assert_eq!(
        fx.api(&other, "GET", &format!("/volumes/{id}"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        fx.api(&other, "DELETE", &format!("/volumes/{id}"), None)
            .await
            .0,
        404
    );
    let (status, body) = fx
        .api(&other, "POST", "/volumes", Some(json!({"name": "data"})))
        .await;
    assert_eq!(status, 201, "names are per key: {body}");

    // Content API: write, read, stat, list, mkdir, chmod/chown, delete.
    let base = format!("/volumecontent/{id}");
    let (status, stat) = fx
        .content_json(
            &token,
            "PUT",
            &format!("{base}/file?path=/notes/a.txt"),
            Some(b"hello".to_vec()),
        )
        .await;
    assert_eq!(status, 404, "no parent without force: {stat}");
    let (status, stat) = fx
        .content_json(
            &token,
            "PUT",
            &format!("{base}/file?path=/notes/a.txt&force=true&mode=384"),
            Some(b"hello".to_vec()),
        )
        .await;
    assert_eq!(status, 201, "{stat}");
    assert_eq!(
        (
            stat["type"].as_str(),
            stat["size"].as_u64(),
            stat["mode"].as_u64()
        ),
        (Some("file"), Some(5), Some(0o600))
    );
    assert_eq!(
        (stat["uid"].as_u64(), stat["gid"].as_u64()),
        (Some(1000), Some(1000))
    );
    let (status, again) = fx
        .content_json(
            &token,
            "PUT",
            &format!("{base}/file?path=/notes/a.txt"),
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(status, 409, "exists without force: {again}");
    let (status, bytes) = fx
        .content(
            &token,
            "GET",
            &format!("{base}/file?path=notes/a.txt"),
            None,
        )
        .await;
    assert_eq!((status, bytes.as_slice()), (200, b"hello".as_slice()));
    let (status, made) = fx
        .content_json(
            &token,
            "POST",
            &format!("{base}/dir?path=/x/y&force=true"),
            None,
        )
        .await;
    assert_eq!(
        (status, made["type"].as_str()),
        (201, Some("directory")),
        "{made}"
    );
    let (status, listing) = fx
        .content_json(&token, "GET", &format!("{base}/dir?path=/&depth=2"), None)
        .await;
    assert_eq!(status, 200, "{listing}");
    let paths: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/notes", "/notes/a.txt", "/x", "/x/y"]);
    let (status, patched) = fx
        .content_json(
            &token,
            "PATCH",
            &format!("{base}/path?path=/notes/a.txt"),
            Some(br#"{"mode": 420, "uid": 0}"#.to_vec()),
        )
        .await;
    assert_eq!(
        (status, patched["mode"].as_u64(), patched["uid"].as_u64()),
        (200, Some(0o644), Some(0)),
        "{patched}"
    );
    assert_eq!(
        fx.content(&token, "DELETE", &format!("{base}/path?path=/x"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        fx.content(&token, "GET", &format!("{base}/path?path=/x/y"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        fx.content(&token, "DELETE", &format!("{base}/path?path=/"), None)
            .await
            .0,
        400
    );

    // Tokens: none, wrong, or the other volume's are all refused.
    let second_id = second["volumeID"].as_str().unwrap();
    let second_token = second["token"].as_str().unwrap();
    let (status, _) = fx
        .content(
            second_token,
            "GET",
            &format!("{base}/file?path=/notes/a.txt"),
            None,
        )
        .await;
    assert_eq!(status, 401, "a volume's token opens only that volume");
    let (status, _) = fx
        .content(
            "vol_wrong",
            "GET",
            &format!("{base}/file?path=/notes/a.txt"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let status = reqwest::Client::new()
        .get(format!("{}{base}/file?path=/notes/a.txt", fx.api_url))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 401, "the API key is not a volume token");
    // `..` never climbs out of the volume (to its image, its record, the data dir).
    for path in [
        "../meta.json",
        "/../../api-keys.json",
        "notes/../../volume.img",
    ] {
        let (status, _) = fx
            .content(&token, "GET", &format!("{base}/file?path={path}"), None)
            .await;
        assert_eq!(status, 400, "{path}");
    }

    // The content API cannot write past the volume's size, and leaves no partial file.
    let big = vec![7u8; 80 << 20];
    let (status, body) = fx
        .content_json(
            &token,
            "PUT",
            &format!("{base}/file?path=/big.bin"),
            Some(big),
        )
        .await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("64 MiB"),
        "{body}"
    );
    assert_eq!(
        fx.content(&token, "GET", &format!("{base}/path?path=/big.bin"), None)
            .await
            .0,
        404
    );
    let (status, bytes) = fx
        .content(
            second_token,
            "GET",
            &format!("/volumecontent/{second_id}/dir?path=/"),
            None,
        )
        .await;
    assert_eq!(
        (status, bytes.as_slice()),
        (200, b"[]".as_slice()),
        "a new volume is empty"
    );

    // A restart keeps volumes, their tokens and their content.
    let data_dir = fx.data_dir.clone();
    let other = fx.other_key.clone();
    let dir = fx._dir;
    fx.server.stop();
    let _ = fx.stop.send(true);
    drop(fx.server);
    drop(fx.client);
    // The serving tasks let go of the server (and its data dir lock) once stopped.
    let mut restarted = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut config = ServerConfig::new(&data_dir, envd_binary());
        config.dev_api_key = Some(KEY.to_owned());
        config.helper = Some(PathBuf::from(HELPER));
        config.isolation = Some(support::isolation());
        config.warm_sandboxes = 0;
        match Sandboxd::start(config).await {
            Ok(server) => {
                restarted = Some(server);
                break;
            }
            Err(e) if e.to_string().contains("in use") => continue,
            Err(e) => panic!("restart: {e}"),
        }
    }
    let server = restarted.expect("the first server let go of the data dir");
    drop(server);
    let fx = Fixture::start(data_dir, other).await;
    let (status, list) = fx.api(KEY, "GET", "/volumes", None).await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (200, Some(2)),
        "{list}"
    );
    let (status, bytes) = fx
        .content(
            &token,
            "GET",
            &format!("{base}/file?path=/notes/a.txt"),
            None,
        )
        .await;
    assert_eq!((status, bytes.as_slice()), (200, b"hello".as_slice()));

    assert_eq!(
        fx.api(KEY, "DELETE", &format!("/volumes/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        fx.api(KEY, "GET", &format!("/volumes/{id}"), None).await.0,
        404
    );
    assert_eq!(
        fx.content(&token, "GET", &format!("{base}/path?path=/"), None)
            .await
            .0,
        401
    );
    assert!(
        !fx.data_dir.join("volumes").join(&id).exists(),
        "deleted from disk"
    );
    fx.shutdown().await;
    drop(dir);
}

/// `volumeMounts`: one volume in two sandboxes at once, each seeing the other's writes
/// and the content API seeing both; files owned by the sandbox user; the size a hard
/// limit inside sandboxes too; a volume in use not deletable.
///
/// Attacks tried from inside a sandbox: symlinks planted in the volume pointing at host
/// paths (`/etc/shadow`, `/`), for the content API or the other sandbox to follow out;
/// filling the host's disk through the mount; mounting another key's volume or one that
/// does not exist. The content API refuses the links, the other sandbox resolves them in
/// its own root, writes stop at the volume's size, and the creates are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_mounts_share_writes_and_keep_sandboxes_inside() {
    let Some(fx) = Fixture::new("volume_mounts").await else {
        return;
    };
    let (status, created) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "shared"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["volumeID"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, _) = fx
        .api(
            &fx.other_key,
            "POST",
            "/volumes",
            Some(json!({"name": "theirs"})),
        )
        .await;
    assert_eq!(status, 201);

    // Unknown volume, another key's volume, or a bad path: refused naming the field.
    for (mounts, named) in [
        (json!([{"name": "nope", "path": "/data"}]), "nope"),
        (json!([{"name": "theirs", "path": "/data"}]), "theirs"),
        (
            json!([{"name": "shared", "path": "data"}]),
            "volumeMounts.path",
        ),
        (
            json!([{"name": "shared", "path": "/a/../b"}]),
            "volumeMounts.path",
        ),
        // Over (or above) what the runtime puts in every sandbox.
        (
            json!([{"name": "shared", "path": "/usr/local/bin"}]),
            "volumeMounts.path",
        ),
        (
            json!([{"name": "shared", "path": "/proc/1"}]),
            "volumeMounts.path",
        ),
        (
            json!([{"name": "shared", "path": "/etc"}]),
            "volumeMounts.path",
        ),
    ] {
        let (status, body) = fx
            .api(
                KEY,
                "POST",
                "/sandboxes",
                Some(json!({"templateID": "base", "volumeMounts": mounts})),
            )
            .await;
        assert_eq!(status, 400, "{mounts}: {body}");
        assert!(body["message"].as_str().unwrap().contains(named), "{body}");
    }
    assert!(
        fx.server.list().is_empty(),
        "no sandbox made by a refused create"
    );

    let mut sandboxes = Vec::new();
    for _ in 0..2 {
        let (status, body) = fx
            .api(
                KEY,
                "POST",
                "/sandboxes",
                Some(json!({"templateID": "base", "volumeMounts": [{"name": "shared", "path": "/mnt/shared"}]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let sid = body["sandboxID"].as_str().unwrap().to_owned();
        sandboxes.push(Sandbox::connect(&fx.client, &sid).await.expect("connect"));
    }
    let (a, b) = (&sandboxes[0], &sandboxes[1]);
    let (status, detail) = fx
        .api(KEY, "GET", &format!("/sandboxes/{}", a.id()), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        detail["volumeMounts"],
        json!([{"name": "shared", "path": "/mnt/shared"}]),
        "{detail}"
    );

    // The sandbox user owns the volume and writes it; the other sandbox sees it at once.
    let out = a
        .commands()
        .run("echo from-a > /mnt/shared/a.txt && stat -c '%U %a' /mnt/shared /mnt/shared/a.txt")
        .await
        .expect("write in a");
    assert_eq!(out.stdout, "user 755\nuser 644\n");
    let out = b
        .commands()
        .run("cat /mnt/shared/a.txt && echo from-b > /mnt/shared/b.txt")
        .await
        .expect("read in b");
    assert_eq!(out.stdout, "from-a\n");
    let out = a
        .commands()
        .run("cat /mnt/shared/b.txt")
        .await
        .expect("read in a");
    assert_eq!(out.stdout, "from-b\n");
    // A file one sandbox read (and may cache) and the other rewrote: the new content.
    for round in 0..3 {
        b.commands()
            .run(format!("echo round-{round} > /mnt/shared/a.txt"))
            .await
            .expect("rewrite in b");
        let out = a
            .commands()
            .run("cat /mnt/shared/a.txt && ls /mnt/shared")
            .await
            .expect("reread in a");
        assert!(
            out.stdout.starts_with(&format!("round-{round}\n")),
            "{}",
            out.stdout
        );
    }
    // And the content API sees what sandboxes wrote, and they what it writes.
    let (status, bytes) = fx
        .content(
            &token,
            "GET",
            &format!("/volumecontent/{id}/file?path=/b.txt"),
            None,
        )
        .await;
    assert_eq!((status, bytes.as_slice()), (200, b"from-b\n".as_slice()));
    let (status, _) = fx
        .content(
            &token,
            "PUT",
            &format!("/volumecontent/{id}/file?path=/api.txt"),
            Some(b"from-api".to_vec()),
        )
        .await;
    assert_eq!(status, 201);
    let out = b
        .commands()
        .run("cat /mnt/shared/api.txt && echo more >> /mnt/shared/api.txt")
        .await
        .expect("api file");
    assert_eq!(
        out.stdout, "from-api",
        "the content API's files are the sandbox user's"
    );

    // Symlinks to host paths planted by a sandbox: never followed by the content API.
    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    a.commands()
        .run("ln -s /etc/shadow /mnt/shared/leak && ln -s / /mnt/shared/root && ln -s ../../.. /mnt/shared/up")
        .await
        .expect("plant links");
    for path in [
        "/leak",
        "/root/etc/shadow",
        "/up/api-keys.json",
        "/root/etc/passwd",
    ] {
        let (status, bytes) = fx
            .content(
                &token,
                "GET",
                &format!("/volumecontent/{id}/file?path={path}"),
                None,
            )
            .await;
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&bytes));
    }
    let (status, _) = fx
        .content(
            &token,
            "PUT",
            &format!("/volumecontent/{id}/file?path=/root/tmp/planted&force=true"),
            Some(b"x".to_vec()),
        )
        .await;
    // 409: `root` is not a directory to the content API (it does not follow it).
    assert!(status == 400 || status == 409, "{status}");
    assert!(
        !std::path::Path::new("/tmp/planted").exists(),
        "nothing written on the host"
    );
    let (status, stat) = fx
        .content_json(
            &token,
            "GET",
            &format!("/volumecontent/{id}/path?path=/leak"),
            None,
        )
        .await;
    assert_eq!(
        (status, stat["type"].as_str(), stat["target"].as_str()),
        (200, Some("symlink"), Some("/etc/shadow"))
    );
    // The other sandbox follows the link inside its own root: not the host's file.
    let out = b
        .commands()
        .run("sudo cat /mnt/shared/leak || true")
        .await
        .expect("follow in b");
    if !host_shadow.is_empty() {
        assert_ne!(
            out.stdout, host_shadow,
            "a sandbox read the host's /etc/shadow"
        );
    }

    // A setuid-root binary put in the volume through the content API (uid 0, mode 4755)
    // gives a sandbox's user nothing: the mount is nosuid (and host uid 0 is not the
    // sandbox's root).
    let id_binary = std::fs::read("/usr/bin/id").expect("read /usr/bin/id");
    let (status, body) = fx
        .content(
            &token,
            "PUT",
            &format!("/volumecontent/{id}/file?path=/suid-id&uid=0&gid=0&mode=2541"),
            Some(id_binary),
        )
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let out = a
        .commands()
        .run("/mnt/shared/suid-id -u; stat -c %a /mnt/shared/suid-id")
        .await
        .expect("run the setuid binary");
    assert_eq!(
        out.stdout, "1000\n4755\n",
        "a setuid bit in a volume took effect"
    );

    // The volume's size is a hard limit inside sandboxes too.
    let out = a
        .commands()
        .run("dd if=/dev/zero of=/mnt/shared/fill bs=1M count=100 2>&1; echo exit=$?")
        .await
        .expect("fill");
    assert!(
        out.stdout.contains("No space left on device"),
        "{}",
        out.stdout
    );
    a.commands()
        .run("rm -f /mnt/shared/fill")
        .await
        .expect("rm");

    // In use: not deletable until its sandboxes are gone.
    let (status, body) = fx.api(KEY, "DELETE", &format!("/volumes/{id}"), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains(a.id()), "{body}");
    for sandbox in &sandboxes {
        sandbox.kill().await.expect("kill");
    }
    let (status, body) = fx.api(KEY, "DELETE", &format!("/volumes/{id}"), None).await;
    assert_eq!(status, 204, "{body}");
    fx.shutdown().await;
}

/// The same flows through courier-e2b (the Rust SDK) against the real server: the volume
/// API, every content method, `volume_mount` on create, and the SDK's error kinds.
///
/// Attacks tried through the SDK: another API key's client connecting to or destroying
/// the volume; a volume handle carrying another volume's token; a sandbox planting a
/// symlink to `/etc/passwd` and the SDK reading through it. Each must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_drives_volumes_end_to_end() {
    use courier_e2b::models::VolumeFileType;
    use courier_e2b::{Error as E2bError, NotFoundKind, Volume, VolumeEntryOptions};
    use futures::TryStreamExt as _;

    let Some(fx) = Fixture::new("volume_sdk").await else {
        return;
    };
    let client = &fx.client;
    let volume = Volume::create(client, "sdk").await.expect("create");
    assert_eq!(volume.name(), "sdk");
    assert!(
        !format!("{volume:?}").contains(volume.token().expose()),
        "token in Debug"
    );
    let listed = Volume::list(client).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].volume_id, volume.id());
    let info = Volume::info(client, volume.id()).await.expect("info");
    assert_eq!(info.token.expose(), volume.token().expose());
    let volume = Volume::connect(client, volume.id()).await.expect("connect");

    let force = VolumeEntryOptions {
        force: true,
        ..Default::default()
    };
    let dir = volume.make_dir("/a/b", force).await.expect("make_dir");
    assert_eq!(dir.kind, VolumeFileType::Directory);
    assert!(volume.exists("/a/b").await.unwrap());
    assert!(!volume.exists("/nope").await.unwrap());
    let stat = volume
        .write_file("/a/b/hello.txt", "hello", VolumeEntryOptions::default())
        .await
        .expect("write");
    assert_eq!(
        (stat.kind, stat.size, stat.uid),
        (VolumeFileType::File, 5, 1000)
    );
    match volume
        .write_file("/a/b/hello.txt", "again", VolumeEntryOptions::default())
        .await
    {
        Err(E2bError::Api { status: 409, .. }) => {}
        other => panic!("an existing file without force: {other:?}"),
    }
    // A streamed upload, read back as a stream.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..16).map(|_| Ok(vec![b'z'; 65_536])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let stat = volume
        .write_file("/a/big.bin", body, force)
        .await
        .expect("stream upload");
    assert_eq!(stat.size, 16 * 65_536);
    let streamed: Vec<bytes::Bytes> = volume
        .read_stream("/a/big.bin")
        .await
        .expect("stream")
        .try_collect()
        .await
        .expect("chunks");
    assert_eq!(streamed.iter().map(|c| c.len()).sum::<usize>(), 16 * 65_536);
    assert_eq!(volume.read_text("/a/b/hello.txt").await.unwrap(), "hello");
    let updated = volume
        .update_metadata(
            "/a/b/hello.txt",
            VolumeEntryOptions {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.mode, 0o600);
    let paths: Vec<String> = volume
        .list_dir("/", Some(3))
        .await
        .expect("list_dir")
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(paths, ["/a", "/a/b", "/a/b/hello.txt", "/a/big.bin"]);
    volume.remove("/a/big.bin").await.expect("remove");
    match volume.read_file("/a/big.bin").await {
        Err(E2bError::NotFound {
            kind: NotFoundKind::Volume,
            ..
        }) => {}
        other => panic!("read of a removed file: {other:?}"),
    }

    // Mounted through the SDK's builder; the sandbox's writes come back through the SDK.
    let sandbox = Sandbox::builder()
        .volume_mount("/data", volume.name())
        .create(client)
        .await
        .expect("create with a volume");
    let out = sandbox
        .commands()
        .run("cat /data/a/b/hello.txt 2>&1; echo; echo out > /data/out.txt; ln -s /etc/passwd /data/passwd")
        .await
        .expect("run");
    // 0600 and owned by the sandbox user: readable by it.
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(volume.read_text("/out.txt").await.unwrap(), "out\n");
    match volume.read_file("/passwd").await {
        Err(E2bError::InvalidArgument { message }) => {
            assert!(message.contains("symbolic link"), "{message}")
        }
        other => panic!("read through a planted symlink: {other:?}"),
    }
    let link = volume.get_info("/passwd").await.expect("stat link");
    assert_eq!(
        (link.kind, link.target.as_deref()),
        (VolumeFileType::Symlink, Some("/etc/passwd"))
    );
    match Volume::destroy(client, volume.id()).await {
        Err(E2bError::Api { status: 409, .. }) => {}
        other => panic!("destroying a mounted volume: {other:?}"),
    }
    sandbox.kill().await.expect("kill");

    // Another key's client: the volume does not exist for it.
    let other = Client::new(
        ConnectionConfig::builder()
            .api_key(fx.other_key.as_str())
            .api_url(&fx.api_url)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(Volume::list(&other).await.unwrap().is_empty());
    match Volume::connect(&other, volume.id()).await {
        Err(E2bError::NotFound {
            kind: NotFoundKind::Volume,
            ..
        }) => {}
        other => panic!("another key connecting: {other:?}"),
    }
    assert!(!Volume::destroy(&other, volume.id()).await.unwrap());
    // A handle with another volume's token opens nothing of this one.
    let theirs = Volume::create(&other, "theirs").await.unwrap();
    let forged = Volume::from_parts(
        client,
        courier_e2b::models::VolumeAndToken {
            volume_id: volume.id().to_owned(),
            name: volume.name().to_owned(),
            token: theirs.token().clone(),
            domain: None,
        },
    );
    match forged.read_text("/out.txt").await {
        Err(E2bError::Authentication { .. }) => {}
        other => panic!("a forged handle: {other:?}"),
    }

    assert!(Volume::destroy(client, volume.id()).await.unwrap());
    assert!(!Volume::destroy(client, volume.id()).await.unwrap());
    fx.shutdown().await;
}

/// A server restart while a sandbox with a volume runs: the new server adopts the
/// sandbox and reuses the volume's mount instead of mounting its image a second time (two
/// ext4 instances on one image would corrupt it); the sandbox's writes before and after
/// are the content API's, and pause/resume keeps the mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_mounted_volume_on_one_mount() {
    let Some(fx) = Fixture::new("volume_restart").await else {
        return;
    };
    let (status, created) = fx
        .api(KEY, "POST", "/volumes", Some(json!({"name": "kept"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["volumeID"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let sandbox = Sandbox::builder()
        .volume_mount("/kept", "kept")
        .timeout(Duration::from_secs(600))
        .create(&fx.client)
        .await
        .expect("create");
    let sid = sandbox.id().to_owned();
    sandbox
        .commands()
        .run("echo before > /kept/f")
        .await
        .expect("write before");
    let mounts_of = |id: &str| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("/volumes/{id}/mnt")))
            .count()
    };
    assert_eq!(mounts_of(&id), 1);

    // Stop without killing (as a server whose sandboxes outlive it), start again.
    let (data_dir, other, dir) = (fx.data_dir.clone(), fx.other_key.clone(), fx._dir);
    fx.server.stop();
    let _ = fx.stop.send(true);
    drop(fx.server);
    drop(fx.client);
    drop(sandbox);
    let mut fx = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .open(data_dir.join("lock"))
            .unwrap();
        if nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
            fx = Some(Fixture::start(data_dir.clone(), other.clone()).await);
            break;
        }
    }
    let mut fx = fx.expect("the first server let go of the data dir");
    fx._dir = dir;
    assert_eq!(mounts_of(&id), 1, "the image is mounted once");
    let sandbox = Sandbox::connect(&fx.client, &sid).await.expect("adopted");
    let out = sandbox
        .commands()
        .run("cat /kept/f; echo after >> /kept/f")
        .await
        .expect("write after");
    assert_eq!(out.stdout, "before\n");
    let (status, bytes) = fx
        .content(
            &token,
            "GET",
            &format!("/volumecontent/{id}/file?path=/f"),
            None,
        )
        .await;
    assert_eq!(
        (status, bytes.as_slice()),
        (200, b"before\nafter\n".as_slice())
    );

    // Pause and resume keep the mount.
    fx.server.pause(&sid).await.expect("pause");
    let sandbox = Sandbox::connect(&fx.client, &sid).await.expect("resume");
    let out = sandbox.commands().run("cat /kept/f").await.expect("read");
    assert_eq!(out.stdout, "before\nafter\n");
    fx.shutdown().await;
    assert_eq!(mounts_of(&id), 0, "unmounted once its sandboxes are gone");
}
