//! courier-e2b against a real courier-envd: the SDK's commands, PTY, files and watch, in
//! both Connect codecs, over real HTTP on 127.0.0.1.
//!
//! Commands run as the current user through a login shell, so a machine's profile may print
//! to stderr: these tests only ever compare stdout.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use courier_e2b::{
    Client, CommandEvent, ConnectionConfig, Error, FileKind, NotFoundKind, PtySize, Sandbox,
    WatchEventKind, codec::Codec, models::SandboxRecord,
};
use courier_envd::Envd;
use futures::StreamExt;

struct Daemon {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Daemon {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

fn current_user() -> String {
    let uid = nix::unistd::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&uid.to_string().as_str())).then(|| fields[0].to_owned())
            })
        })
        .unwrap_or_else(|| "root".to_owned())
}

async fn start(codec: Codec) -> Daemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let envd = Envd::builder().default_user(current_user()).build();
    let task = tokio::spawn(async move {
        let _ = envd.serve(listener).await;
    });
    let config = ConnectionConfig::builder()
        .api_key("e2b_0000000000000000000000000000000000000000")
        .sandbox_url(format!("http://{addr}"))
        .codec(codec)
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    let record: SandboxRecord = serde_json::from_value(serde_json::json!({
        "templateID": "base", "sandboxID": "local", "clientID": "x", "envdVersion": courier_envd::ENVD_VERSION,
    }))
    .unwrap();
    let sandbox = Sandbox::from_record(&client, record);
    Daemon {
        sandbox,
        dir: tempfile::tempdir().unwrap(),
        task,
    }
}

async fn each_codec<F, Fut>(test: F)
where
    F: Fn(Daemon) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for codec in [Codec::Proto, Codec::Json] {
        test(start(codec).await).await;
    }
}

#[tokio::test]
async fn run_collects_stdout_and_exit_code_in_both_codecs() {
    each_codec(|d| async move {
        let out = d
            .sandbox
            .commands()
            .run("echo hello; echo oops >&2")
            .await
            .unwrap();
        assert_eq!(out.stdout, "hello\n");
        assert!(out.stderr.contains("oops"));
        assert_eq!(out.exit_code, 0);
        assert!(d.sandbox.is_running().await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn non_zero_exit_is_command_exited_with_output() {
    each_codec(|d| async move {
        let err = d
            .sandbox
            .commands()
            .run("echo partial; exit 3")
            .await
            .unwrap_err();
        match err {
            Error::CommandExited {
                stdout, exit_code, ..
            } => {
                assert_eq!(stdout, "partial\n");
                assert_eq!(exit_code, 3);
            }
            other => panic!("expected CommandExited, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn cwd_and_envs_reach_the_process() {
    each_codec(|d| async move {
        let dir = d.dir.path().to_string_lossy().into_owned();
        let out = d
            .sandbox
            .commands()
            .run("pwd; echo $COURIER_TEST_VAR")
            .cwd(dir.clone())
            .env("COURIER_TEST_VAR", "from-sdk")
            .await
            .unwrap();
        assert_eq!(out.stdout, format!("{dir}\nfrom-sdk\n"));
    })
    .await;
}

#[tokio::test]
async fn spawned_command_takes_stdin_and_streams_events() {
    each_codec(|d| async move {
        let mut handle = d
            .sandbox
            .commands()
            .run("cat")
            .stdin(true)
            .spawn()
            .await
            .unwrap();
        assert!(handle.pid() > 0);
        handle.send_stdin("line one\n").await.unwrap();
        let mut seen = String::new();
        while !seen.contains("line one") {
            match tokio::time::timeout(Duration::from_secs(30), handle.next()).await {
                Ok(Some(Ok(CommandEvent::Stdout(bytes)))) => {
                    seen.push_str(&String::from_utf8_lossy(&bytes));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("stream ended before echo: {other:?}"),
            }
        }
        handle.close_stdin().await.unwrap();
        let out = handle.wait_output().await.unwrap();
        assert_eq!(out.exit_code, 0);
    })
    .await;
}

#[tokio::test]
async fn killing_a_background_command_ends_it_and_unknown_pids_are_not_found() {
    each_codec(|d| async move {
        // Wait for the command itself to run: killing bash while the login profile still
        // runs can leave the profile's tools (pyenv's rehash lock) in a bad state.
        let mut handle = d
            .sandbox
            .commands()
            .run("echo ready; exec sleep 600")
            .spawn()
            .await
            .unwrap();
        let pid = handle.pid();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), handle.next()).await {
                Ok(Some(Ok(CommandEvent::Stdout(bytes)))) if bytes.starts_with(b"ready") => break,
                Ok(Some(Ok(_))) => {}
                other => panic!("the command never started: {other:?}"),
            }
        }
        let listed = d.sandbox.commands().list().await.unwrap();
        assert!(listed.iter().any(|p| p.pid == pid), "{listed:?}");
        assert!(d.sandbox.commands().kill(pid).await.unwrap());
        let out = handle.wait_output().await.unwrap();
        assert_eq!(out.exit_code, -1);
        assert!(!d.sandbox.commands().kill(pid).await.unwrap());
        let err = d.sandbox.commands().connect(999_999_u32).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotFound {
                    kind: NotFoundKind::Process,
                    ..
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn connect_by_tag_sees_later_output() {
    each_codec(|d| async move {
        let _handle = d
            .sandbox
            .commands()
            .run("read line; echo got-$line")
            .stdin(true)
            .tag("courier-tagged")
            .spawn()
            .await
            .unwrap();
        let mut attached = d
            .sandbox
            .commands()
            .connect("courier-tagged")
            .await
            .unwrap();
        d.sandbox
            .commands()
            .send_stdin("courier-tagged", "x\n")
            .await
            .unwrap();
        let mut seen = String::new();
        while let Some(event) = attached.next().await {
            match event.unwrap() {
                CommandEvent::Stdout(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                CommandEvent::Exit(_) => break,
                _ => {}
            }
        }
        assert_eq!(seen, "got-x\n");
    })
    .await;
}

#[tokio::test]
async fn command_timeout_kills_the_process() {
    each_codec(|d| async move {
        let err = d
            .sandbox
            .commands()
            .run("exec sleep 30")
            .timeout(Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { .. } | Error::CommandExited { .. }),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn pty_echoes_input_and_resizes() {
    each_codec(|d| async move {
        let mut pty = d.sandbox.pty().create(PtySize::new(80, 24)).await.unwrap();
        let pid = pty.pid();
        d.sandbox
            .pty()
            .resize(pid, PtySize::new(100, 40))
            .await
            .unwrap();
        d.sandbox
            .pty()
            .send_input(pid, "stty size; exit\n")
            .await
            .unwrap();
        let mut seen = String::new();
        while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(30), pty.next()).await
        {
            match event.unwrap() {
                CommandEvent::Pty(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                CommandEvent::Exit(_) => break,
                _ => {}
            }
        }
        assert!(seen.contains("40 100"), "{seen:?}");
    })
    .await;
}

#[tokio::test]
async fn files_round_trip_list_stat_rename_and_remove() {
    each_codec(|d| async move {
        let files = d.sandbox.files();
        let a = d.path("dir/a.txt");
        let info = files.write(&a, "alpha").await.unwrap();
        assert_eq!(info.path, a);
        assert_eq!(files.read_text(&a).await.unwrap(), "alpha");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        files.write(&d.path("big.bin"), big.clone()).await.unwrap();
        assert_eq!(files.read(&d.path("big.bin")).await.unwrap().to_vec(), big);

        let stat = files.get_info(&a).await.unwrap();
        assert_eq!(stat.kind, FileKind::File);
        assert_eq!(stat.size, 5);
        assert_eq!(stat.permissions, "-rw-r--r--");

        assert!(files.make_dir(&d.path("dir/sub")).await.unwrap());
        assert!(!files.make_dir(&d.path("dir/sub")).await.unwrap());
        let listed = files.list(&d.path("dir"), 1).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "sub"]);

        files.rename(&a, &d.path("dir/sub/b.txt")).await.unwrap();
        assert!(!files.exists(&a).await.unwrap());
        let deep = files.list(&d.path("dir"), 2).await.unwrap();
        assert!(
            deep.iter().any(|e| e.path == d.path("dir/sub/b.txt")),
            "{deep:?}"
        );

        files.remove(&d.path("dir")).await.unwrap();
        assert!(!files.exists(&d.path("dir")).await.unwrap());
        let err = files.read(&a).await.unwrap_err();
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
    })
    .await;
}

#[tokio::test]
async fn watch_sees_a_written_file() {
    each_codec(|d| async move {
        let files = d.sandbox.files();
        let dir = d.path("watched");
        files.make_dir(&dir).await.unwrap();
        let mut watch = files.watch_dir(&dir).recursive(true).await.unwrap();
        files.write(&d.path("watched/new.txt"), "x").await.unwrap();
        let mut kinds = Vec::new();
        while !kinds.contains(&WatchEventKind::Write) {
            let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("a watch event within 30 s")
                .expect("the watch stream stays open")
                .unwrap();
            assert_eq!(event.name, "new.txt");
            kinds.push(event.kind);
        }
        assert_eq!(kinds.first(), Some(&WatchEventKind::Create), "{kinds:?}");
    })
    .await;
}
