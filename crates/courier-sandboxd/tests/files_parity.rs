//! Files and envd parity through courier-e2b against a real courier-sandboxd: signed file
//! URLs on the shared proxy, write metadata and gzip uploads, `stream_input`, and the git
//! helpers (against a bare repository inside the sandbox, over `file://` and over an
//! authenticating HTTP remote).
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. `COURIER_TEST_ISOLATION=gvisor` runs them under gVisor, where file
//! metadata is refused with its reason (see `metadata_round_trips_…`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use courier_e2b::envd::{
    CloneOptions, ConfigScope, GitCredentials, ResetMode, SyncOptions, WriteOptions, file_signature,
};
use courier_e2b::{Client, Error as E2bError, Sandbox, Secret};
use courier_sandboxd::Sandboxd;
use courier_sandboxd::runtime::Isolation;

mod support;

const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";
const DOMAIN: &str = "courier.test";

struct Fixture {
    server: Sandboxd,
    client: Client,
    proxy_url: String,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = support::test_config(dir.path().join("data"), KEY);
        config.domain = Some(DOMAIN.to_owned());
        let served = support::serve(config).await;
        Some(Self {
            server: served.server,
            client: served.client,
            proxy_url: format!("http://{}", served.proxy_addr),
            stop: served.stop,
            _dir: dir,
        })
    }

    async fn sandbox(&self) -> Sandbox {
        Sandbox::builder()
            .timeout(Duration::from_secs(300))
            .create(&self.client)
            .await
            .expect("create sandbox")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.stop();
        let server = self.server.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(server.kill_all());
        })
        .join();
    }
}

/// GET `url`: status and body.
async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The envd access token of a sandbox, as the server recorded it.
fn token_of(fx: &Fixture, sandbox: &Sandbox) -> Secret {
    fx.server
        .get(sandbox.id())
        .expect("record")
        .envd_access_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_file_urls_open_only_what_they_sign() {
    let Some(fx) = Fixture::new("signed_file_urls_open_only_what_they_sign").await else {
        return;
    };
    let a = fx.sandbox().await;
    let b = fx.sandbox().await;
    a.files()
        .write("shared.txt", "from a")
        .await
        .expect("write a");
    a.files()
        .write("other.txt", "a's other file")
        .await
        .expect("write a");
    b.files()
        .write("shared.txt", "from b")
        .await
        .expect("write b");

    // The SDK's URLs carry no sandbox id (the proxy URL alone): the signature picks the
    // sandbox, so the same path in two sandboxes gives each its own file.
    let url_a = a.files().download_url("shared.txt", None).expect("url");
    let url_b = b
        .files()
        .download_url("shared.txt", Some(Duration::from_secs(120)))
        .expect("url");
    assert!(url_a.as_str().starts_with(&fx.proxy_url), "{url_a}");
    assert_eq!(get(url_a.as_str()).await, (200, "from a".to_owned()));
    assert_eq!(get(url_b.as_str()).await, (200, "from b".to_owned()));

    // An upload URL takes a multipart POST without any other credential.
    let upload = a.files().upload_url("uploaded.txt", None).expect("url");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"posted".to_vec()).file_name("uploaded.txt"),
    );
    let status = reqwest::Client::new()
        .post(upload.as_str())
        .multipart(form)
        .send()
        .await
        .expect("POST")
        .status();
    assert_eq!(status, 200);
    assert_eq!(
        a.files().read_text("uploaded.txt").await.expect("read"),
        "posted"
    );

    // Attacks by whoever holds one signed URL (a leaked link, a log line):
    let token = token_of(&fx, &a);
    let base = format!("{}/files", fx.proxy_url);
    let signed = |path: &str, op: &str, user: Option<&str>, exp: Option<u64>| {
        let sig = file_signature(path, op, user, &token, exp);
        let sig = percent_encode(&sig);
        let mut url = format!("{base}?path={}&signature={sig}", percent_encode(path));
        if let Some(user) = user {
            url.push_str(&format!("&username={user}"));
        }
        if let Some(exp) = exp {
            url.push_str(&format!("&signature_expiration={exp}"));
        }
        url
    };
    // - another path with the signature of shared.txt: refused (401), not a.'s other file;
    let sig = percent_encode(&file_signature("shared.txt", "read", None, &token, None));
    let (status, body) = get(&format!("{base}?path=other.txt&signature={sig}")).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("a's other file"));
    // - another user (root) with the default user's signature: refused;
    let (status, _) = get(&format!(
        "{base}?path=shared.txt&username=root&signature={sig}"
    ))
    .await;
    assert_eq!(status, 401);
    // - a read signature used to upload (overwrite) the file: refused, content kept;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"overwritten".to_vec()).file_name("shared.txt"),
    );
    let status = reqwest::Client::new()
        .post(signed("shared.txt", "read", None, None))
        .multipart(form)
        .send()
        .await
        .expect("POST")
        .status();
    assert_eq!(status, 401);
    assert_eq!(
        a.files().read_text("shared.txt").await.expect("read"),
        "from a"
    );
    // - an expired signature: 401 with the SDK's message;
    let expired = signed("shared.txt", "read", None, Some(now_unix() - 120));
    let (status, body) = get(&expired).await;
    assert_eq!(status, 401);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"code": 401, "message": "signature is already expired"})
    );
    // - a later expiration than signed (stretching the link's life): refused;
    let exp = now_unix() + 60;
    let sig = percent_encode(&file_signature(
        "shared.txt",
        "read",
        None,
        &token,
        Some(exp),
    ));
    let (status, _) = get(&format!(
        "{base}?path=shared.txt&signature={sig}&signature_expiration={}",
        exp + 3600
    ))
    .await;
    assert_eq!(status, 401);
    // - a signature made with a guessed token opens no sandbox at all.
    let guessed = file_signature("shared.txt", "read", None, &Secret::new("guess"), None);
    let (status, body) = get(&format!(
        "{base}?path=shared.txt&signature={}",
        percent_encode(&guessed)
    ))
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("from"));
    // A killed sandbox's signatures open nothing either.
    let url_b = b.files().download_url("shared.txt", None).expect("url");
    b.kill().await.expect("kill b");
    assert_eq!(get(url_b.as_str()).await.0, 401);
}

fn percent_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_round_trips_and_gzip_uploads_decode() {
    let Some(fx) = Fixture::new("metadata_round_trips_and_gzip_uploads_decode").await else {
        return;
    };
    let sandbox = fx.sandbox().await;
    let files = sandbox.files();

    // gzip: the body is compressed on the wire and stored decompressed.
    let text = "line of text\n".repeat(1000);
    let info = files
        .write_with("zipped.txt", text.clone(), &WriteOptions::new().gzip(true))
        .await
        .expect("gzip upload");
    assert_eq!(info.path, "/home/user/zipped.txt");
    assert_eq!(files.read_text("zipped.txt").await.expect("read"), text);

    // Invalid metadata is refused before anything is sent, naming the key.
    let err = files
        .write_with(
            "bad.txt",
            "x",
            &WriteOptions::new().metadata("bad key", "v"),
        )
        .await
        .expect_err("invalid key");
    assert!(
        matches!(&err, E2bError::InvalidArgument { message } if message.contains("bad key")),
        "{err}"
    );
    assert!(!files.exists("bad.txt").await.expect("exists"));

    let options = WriteOptions::new()
        .metadata("author", "mish")
        .metadata("purpose", "upload");
    let info = files
        .write_with("meta.txt", "content", &options)
        .await
        .expect("write with metadata");
    let expected: std::collections::HashMap<String, String> = [
        ("author".to_owned(), "mish".to_owned()),
        ("purpose".to_owned(), "upload".to_owned()),
    ]
    .into();
    assert_eq!(info.metadata.as_ref(), Some(&expected));
    assert_eq!(
        files.get_info("meta.txt").await.expect("stat").metadata,
        expected
    );

    // Surfaced by list and kept across rename.
    files.make_dir("dir").await.expect("mkdir");
    files
        .write_with(
            "dir/listed.txt",
            "x",
            &WriteOptions::new().metadata("tag", "listed"),
        )
        .await
        .expect("write");
    let listed = files.list("dir", 1).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].metadata.get("tag").map(String::as_str),
        Some("listed")
    );
    let moved = files.rename("meta.txt", "moved.txt").await.expect("rename");
    assert_eq!(moved.metadata, expected);

    // Overwriting without metadata clears the old one; gzip and octet-stream carry it.
    files.write("moved.txt", "new").await.expect("overwrite");
    assert!(
        files
            .get_info("moved.txt")
            .await
            .expect("stat")
            .metadata
            .is_empty()
    );
    let both = WriteOptions::new().metadata("k", "v").gzip(true);
    let infos = files
        .write_many_with([("g1.txt", "1"), ("g2.txt", "2")], &both)
        .await
        .expect("gzip with metadata");
    assert_eq!(infos.len(), 2);
    for info in infos {
        let stat = files.get_info(&info.path).await.expect("stat");
        assert_eq!(stat.metadata.get("k").map(String::as_str), Some("v"));
    }

    if support::isolation() == Isolation::Gvisor {
        gvisor_metadata_store(&sandbox).await;
    } else {
        // Metadata set out of band as `user.e2b.*` xattrs surfaces too; other namespaces
        // do not (a sandbox process cannot make envd report `trusted.*`/`security.*`).
        sandbox
            .commands()
            .run(
                "python3 -c \"import os; os.setxattr('/home/user/g1.txt', 'user.e2b.extra', b'1'); \
                 os.setxattr('/home/user/g1.txt', 'user.other', b'2')\"",
            )
            .await
            .expect("setxattr");
        let stat = files.get_info("g1.txt").await.expect("stat");
        assert_eq!(stat.metadata.get("extra").map(String::as_str), Some("1"));
        assert!(!stat.metadata.contains_key("other"));
    }

    // Attack: the default user writing metadata onto a root-owned file through envd is
    // refused (envd sets xattrs with the caller's credentials).
    let err = files
        .write_with(
            "/etc/hostname",
            "x",
            &WriteOptions::new().metadata("a", "b"),
        )
        .await
        .expect_err("root file");
    assert!(
        err.to_string().to_lowercase().contains("permission"),
        "{err}"
    );
}

/// gVisor sandboxes keep metadata in envd's store (their file system has no user
/// xattrs): what a process of the sandbox could try against it.
async fn gvisor_metadata_store(sandbox: &Sandbox) {
    let files = sandbox.files();
    let commands = sandbox.commands();
    // The store is root's: the default user can neither read nor replace it.
    let peek = commands
        .run(
            "cat /var/lib/courier-envd/file-metadata.json; \
             echo '{}' > /var/lib/courier-envd/file-metadata.json",
        )
        .await;
    let Err(E2bError::CommandExited { stdout, .. }) = peek else {
        panic!("the user reached the metadata store: {peek:?}");
    };
    assert!(!stdout.contains("mish"), "{stdout}");
    // A file removed and created again at the same path by a process is another file:
    // it never shows the old one's metadata.
    files
        .write_with(
            "again.txt",
            "1",
            &WriteOptions::new().metadata("owner", "first"),
        )
        .await
        .expect("write");
    commands
        .run("rm /home/user/again.txt && sleep 0.05 && echo 2 > /home/user/again.txt")
        .await
        .expect("recreate");
    assert!(
        files
            .get_info("again.txt")
            .await
            .expect("stat")
            .metadata
            .is_empty()
    );
    // Another user's file: metadata needs write access to set, read access to see.
    commands
        .run("echo secret > /home/user/root-only && chmod 600 /home/user/root-only")
        .user("root")
        .await
        .expect("root file");
    let err = files
        .write_with(
            "/home/user/root-only",
            "x",
            &WriteOptions::new().metadata("a", "b"),
        )
        .await
        .expect_err("not writable");
    assert!(
        err.to_string().to_lowercase().contains("permission"),
        "{err}"
    );
    let root = sandbox.files().user("root");
    root.write_with(
        "/home/user/root-meta",
        "x",
        &WriteOptions::new().metadata("tag", "root"),
    )
    .await
    .expect("root writes with metadata");
    assert_eq!(
        root.get_info("/home/user/root-meta")
            .await
            .expect("stat")
            .metadata["tag"],
        "root"
    );
    commands
        .run("chmod 600 /home/user/root-meta")
        .user("root")
        .await
        .expect("chmod");
    let listed = files.list("/home/user", 1).await.expect("list as user");
    let entry = listed
        .iter()
        .find(|e| e.name == "root-meta")
        .expect("listed");
    assert!(entry.metadata.is_empty(), "{:?}", entry.metadata);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_input_feeds_a_running_command() {
    let Some(fx) = Fixture::new("stream_input_feeds_a_running_command").await else {
        return;
    };
    let sandbox = fx.sandbox().await;
    let commands = sandbox.commands();
    let handle = commands
        .run("cat > /tmp/in.txt && wc -c < /tmp/in.txt")
        .stdin(true)
        .spawn()
        .await
        .expect("spawn");
    let chunks: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("chunk {i:02}\n")))
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    commands
        .stream_input(handle.pid(), futures::stream::iter(chunks))
        .await
        .expect("stream_input");
    commands.close_stdin(handle.pid()).await.expect("close");
    let output = handle.wait().await.expect("wait");
    assert_eq!(output.stdout.trim(), expected.len().to_string());
    let written = sandbox.files().read("/tmp/in.txt").await.expect("read");
    assert_eq!(written.as_ref(), expected.as_slice(), "chunks in order");

    // A process that does not exist is NotFound (no input goes anywhere else).
    let err = commands
        .stream_input(999_999, futures::stream::iter([Bytes::from("x")]))
        .await
        .expect_err("no such process");
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_helpers_against_a_bare_repository() {
    let Some(fx) = Fixture::new("git_helpers_against_a_bare_repository").await else {
        return;
    };
    let sandbox = fx.sandbox().await;
    let git = sandbox.git();
    let local = |path: &str| ConfigScope::Local(path.to_owned());

    git.init("/home/user/remote.git", true, Some("main"))
        .await
        .expect("init bare");
    git.clone_repo(
        "file:///home/user/remote.git",
        &CloneOptions::new().path("/home/user/work"),
    )
    .await
    .expect("clone");
    git.configure_user(
        "Courier Test",
        "test@courier.invalid",
        &local("/home/user/work"),
    )
    .await
    .expect("configure user");
    assert_eq!(
        git.get_config("user.name", &local("/home/user/work"))
            .await
            .expect("get config")
            .as_deref(),
        Some("Courier Test")
    );
    assert_eq!(
        git.get_config("courier.unset", &local("/home/user/work"))
            .await
            .expect("unset key"),
        None
    );
    assert_eq!(
        git.remote_get("/home/user/work", "origin")
            .await
            .expect("remote")
            .as_deref(),
        Some("file:///home/user/remote.git")
    );
    assert_eq!(
        git.remote_get("/home/user/work", "nope")
            .await
            .expect("remote"),
        None
    );

    let files = sandbox.files();
    files.write("work/a.txt", "one\n").await.expect("write");
    let status = git.status("/home/user/work").await.expect("status");
    assert!(status.has_untracked() && !status.has_staged());
    git.add("/home/user/work", &[], true).await.expect("add");
    let status = git.status("/home/user/work").await.expect("status");
    assert_eq!(status.file_status[0].status, "added");
    assert!(status.has_staged());

    // Attack: a commit message is data, never shell code.
    let message = "first $(touch /tmp/pwned) `touch /tmp/pwned2`; it's \"quoted\"";
    git.commit("/home/user/work", message, None, false)
        .await
        .expect("commit");
    let logged = sandbox
        .commands()
        .run("git -C /home/user/work log -1 --format=%s; ls /tmp/pwned /tmp/pwned2 2>&1 || true")
        .await
        .expect("log");
    assert!(logged.stdout.starts_with(message), "{}", logged.stdout);
    assert!(!logged.stdout.contains("\n/tmp/pwned"), "{}", logged.stdout);

    // Attack: a "URL" or a branch that git would read as an option (which would run a
    // command of the caller's choosing) is a repository name / refused, never run.
    let err = git
        .clone_repo(
            "--upload-pack=touch /tmp/pwned3",
            &CloneOptions::new().path("/home/user/evil"),
        )
        .await
        .expect_err("not a repository");
    assert!(matches!(err, E2bError::CommandExited { .. }), "{err}");
    let err = git
        .checkout_branch("/home/user/work", "--orphan=evil")
        .await
        .expect_err("option as branch");
    assert!(matches!(err, E2bError::InvalidArgument { .. }), "{err}");
    assert!(!files.exists("/tmp/pwned3").await.expect("exists"));

    // The clone of the empty repository tracks origin/main: a plain push works.
    git.push("/home/user/work", &SyncOptions::new())
        .await
        .expect("push");
    let status = git.status("/home/user/work").await.expect("status");
    assert!(status.is_clean());
    assert_eq!(status.current_branch.as_deref(), Some("main"));
    assert_eq!(status.upstream.as_deref(), Some("origin/main"));

    // A new branch has no upstream: named as such; with remote and branch it is set.
    git.create_branch("/home/user/work", "feature")
        .await
        .expect("create branch");
    let branches = git.branches("/home/user/work").await.expect("branches");
    assert_eq!(branches.branches, ["feature", "main"]);
    assert_eq!(branches.current_branch.as_deref(), Some("feature"));
    let err = git
        .push("/home/user/work", &SyncOptions::new())
        .await
        .expect_err("no upstream");
    assert!(matches!(err, E2bError::GitUpstream { .. }), "{err}");
    git.push(
        "/home/user/work",
        &SyncOptions::new().remote("origin").branch("feature"),
    )
    .await
    .expect("push feature");
    let status = git.status("/home/user/work").await.expect("status");
    assert_eq!(status.upstream.as_deref(), Some("origin/feature"));
    git.checkout_branch("/home/user/work", "main")
        .await
        .expect("checkout");
    git.delete_branch("/home/user/work", "feature", false)
        .await
        .expect("delete branch");
    assert_eq!(
        git.branches("/home/user/work")
            .await
            .expect("branches")
            .branches,
        ["main"]
    );

    // A second clone pushes; pull brings the commit into the first.
    git.clone_repo(
        "file:///home/user/remote.git",
        &CloneOptions::new()
            .path("/home/user/other")
            .branch("main")
            .depth(1),
    )
    .await
    .expect("clone other");
    files.write("other/b.txt", "two\n").await.expect("write");
    git.add("/home/user/other", &["b.txt"], false)
        .await
        .expect("add");
    git.commit(
        "/home/user/other",
        "second",
        Some(("Other", "other@courier.invalid")),
        false,
    )
    .await
    .expect("commit");
    git.push("/home/user/other", &SyncOptions::new())
        .await
        .expect("push other");
    git.pull("/home/user/work", &SyncOptions::new())
        .await
        .expect("pull");
    assert_eq!(
        files.read_text("work/b.txt").await.expect("pulled"),
        "two\n"
    );

    // restore and reset.
    files.write("work/a.txt", "changed\n").await.expect("write");
    git.restore("/home/user/work", &["a.txt"], None, None, None)
        .await
        .expect("restore");
    assert_eq!(files.read_text("work/a.txt").await.expect("read"), "one\n");
    let err = git
        .restore(
            "/home/user/work",
            &["a.txt"],
            Some(false),
            Some(false),
            None,
        )
        .await
        .expect_err("neither staged nor worktree");
    assert!(matches!(err, E2bError::InvalidArgument { .. }));
    git.reset(
        "/home/user/work",
        Some(ResetMode::Hard),
        Some("HEAD~1"),
        &[],
    )
    .await
    .expect("reset");
    assert!(!files.exists("work/b.txt").await.expect("exists"));
    let status = git.status("/home/user/work").await.expect("status");
    assert_eq!((status.ahead, status.behind), (0, 1));
}

/// A git smart-HTTP remote inside the sandbox that requires Basic auth (bot:<password>)
/// and, on every request, records the command line of every process of the sandbox:
/// what an attacker's process running beside the agent could read.
const GIT_HTTP_SERVER: &str = r#"
import base64, glob, http.server, os, subprocess, sys
AUTH = 'Basic ' + base64.b64encode(('bot:' + sys.argv[1]).encode()).decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self): self.git()
    def do_POST(self): self.git()
    def git(self):
        with open('/tmp/cmdlines.log', 'ab') as log:
            for p in glob.glob('/proc/[0-9]*/cmdline'):
                try:
                    log.write(open(p, 'rb').read().replace(b'\0', b' ') + b'\n')
                except OSError:
                    pass
        if self.headers.get('Authorization') != AUTH:
            self.send_response(401)
            self.send_header('WWW-Authenticate', 'Basic realm="git"')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        path, _, query = self.path.partition('?')
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''
        env = dict(os.environ, GIT_PROJECT_ROOT='/tmp/srv', GIT_HTTP_EXPORT_ALL='1',
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get('Content-Type', ''),
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER='bot',
                   HTTP_CONTENT_ENCODING=self.headers.get('Content-Encoding', ''))
        out = subprocess.run(['git', 'http-backend'], input=body, env=env,
                             capture_output=True).stdout
        head, _, rest = out.partition(b'\r\n\r\n')
        status, headers = 200, []
        for line in head.split(b'\r\n'):
            k, _, v = line.decode().partition(':')
            if k.lower() == 'status':
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)
http.server.HTTPServer(('127.0.0.1', 8418), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_credentials_never_reach_command_lines_or_the_repository() {
    let Some(fx) =
        Fixture::new("git_credentials_never_reach_command_lines_or_the_repository").await
    else {
        return;
    };
    let sandbox = fx.sandbox().await;
    let password = "s3cret-token-41d8";
    let files = sandbox.files();
    files
        .write("/tmp/git_http.py", GIT_HTTP_SERVER)
        .await
        .expect("write server");
    let commands = sandbox.commands();
    commands
        .run(
            "mkdir -p /tmp/srv && git init -q --bare --initial-branch main /tmp/srv/repo.git \
             && git -C /tmp/srv/repo.git config http.receivepack true",
        )
        .await
        .expect("bare repo");
    // The password reaches the server's argv here on purpose (the test's own stand-in
    // server); the assertions below look only at what the git helpers started.
    let server = commands
        .run(format!("exec python3 /tmp/git_http.py {password}"))
        .timeout(Duration::from_secs(300))
        .spawn()
        .await
        .expect("server");
    let ready = commands
        .run(
            "for i in $(seq 100); do \
               (exec 3<>/dev/tcp/127.0.0.1/8418) 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
        )
        .await;
    ready.expect("git http server up");

    let git = sandbox.git();
    // An empty clone's branch is init.defaultBranch's (a global setting of the user).
    git.set_config("init.defaultBranch", "main", &ConfigScope::Global)
        .await
        .expect("set global config");
    let url = "http://127.0.0.1:8418/repo.git";
    // No credentials, then wrong ones: refused as an auth failure, nothing prompted.
    let err = git
        .clone_repo(url, &CloneOptions::new().path("/home/user/none"))
        .await
        .expect_err("no credentials");
    assert!(matches!(err, E2bError::GitAuth { .. }), "{err}");
    let err = git
        .clone_repo(
            url,
            &CloneOptions::new()
                .path("/home/user/wrong")
                .credentials(GitCredentials::new("bot", "wrong")),
        )
        .await
        .expect_err("wrong credentials");
    assert!(matches!(err, E2bError::GitAuth { .. }), "{err}");

    let credentials = GitCredentials::new("bot", password);
    git.clone_repo(
        url,
        &CloneOptions::new()
            .path("/home/user/repo")
            .credentials(credentials.clone()),
    )
    .await
    .expect("clone with credentials");
    files.write("repo/a.txt", "a\n").await.expect("write");
    git.add("/home/user/repo", &[], true).await.expect("add");
    git.commit(
        "/home/user/repo",
        "first",
        Some(("Bot", "bot@courier.invalid")),
        false,
    )
    .await
    .expect("commit");
    git.push(
        "/home/user/repo",
        &SyncOptions::new()
            .remote("origin")
            .branch("main")
            .credentials(credentials.clone()),
    )
    .await
    .expect("push with credentials");
    git.pull(
        "/home/user/repo",
        &SyncOptions::new().credentials(credentials),
    )
    .await
    .expect("pull with credentials");
    // A push without credentials afterwards fails: nothing was stored.
    let err = git
        .push("/home/user/repo", &SyncOptions::new())
        .await
        .expect_err("no stored credentials");
    assert!(matches!(err, E2bError::GitAuth { .. }), "{err}");

    // What another process of the sandbox could read: the command lines seen while git
    // talked to the server include git's own (so the observer saw the operations), and
    // never the password; the repository's config and the usual credential stores
    // have no trace of it.
    let seen = files.read_text("/tmp/cmdlines.log").await.expect("log");
    let git_lines: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains("git") && !l.contains("git_http.py"))
        .collect();
    assert!(
        git_lines
            .iter()
            .any(|l| l.contains("remote-http") || l.contains("127.0.0.1:8418")),
        "the observer saw no git process: {seen}"
    );
    for line in &git_lines {
        assert!(
            !line.contains(password),
            "password in a command line: {line}"
        );
    }
    let traces = commands
        .run(format!(
            "grep -rl -- {password} /home/user/repo/.git /home/user/.gitconfig \
             /home/user/.git-credentials /home/user/.config/git 2>/dev/null; true"
        ))
        .await
        .expect("grep");
    assert_eq!(
        traces.stdout.trim(),
        "",
        "password stored in: {}",
        traces.stdout
    );
    assert_eq!(
        git.remote_get("/home/user/repo", "origin")
            .await
            .expect("remote")
            .as_deref(),
        Some(url)
    );
    // The observer is able to catch a leak: the official SDKs' way (credentials in the
    // remote URL) shows up in its log at once.
    commands
        .run(format!(
            "git ls-remote http://bot:{password}@127.0.0.1:8418/repo.git >/dev/null"
        ))
        .env("GIT_TERMINAL_PROMPT", "0")
        .await
        .expect("ls-remote with URL credentials");
    let seen = files.read_text("/tmp/cmdlines.log").await.expect("log");
    assert!(
        seen.lines()
            .any(|l| l.contains("ls-remote") && l.contains(password))
    );

    // Stored credentials, when asked for by name: later pushes need none. A field with
    // a line break (smuggling e.g. another host's `host=` line into git's credential
    // protocol) is refused before anything runs.
    let smuggled = GitCredentials::new("bot", "x\nhost=evil.example");
    let err = git
        .dangerously_authenticate(&smuggled, "127.0.0.1:8418", "http")
        .await
        .expect_err("line break");
    assert!(matches!(err, E2bError::InvalidArgument { .. }), "{err}");
    git.dangerously_authenticate(
        &GitCredentials::new("bot", password),
        "127.0.0.1:8418",
        "http",
    )
    .await
    .expect("store credentials");
    files.write("repo/c.txt", "c\n").await.expect("write");
    git.add("/home/user/repo", &[], true).await.expect("add");
    git.commit(
        "/home/user/repo",
        "third",
        Some(("Bot", "bot@courier.invalid")),
        false,
    )
    .await
    .expect("commit");
    git.push("/home/user/repo", &SyncOptions::new())
        .await
        .expect("push with stored credentials");
    let stored = files
        .read_text("/home/user/.git-credentials")
        .await
        .expect("credential store");
    assert_eq!(
        stored.trim(),
        format!("http://bot:{password}@127.0.0.1%3a8418")
    );
    server.kill().await.expect("stop server");
}
