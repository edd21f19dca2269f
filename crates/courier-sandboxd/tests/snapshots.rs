//! Snapshots, forks and filesystem-only pause, driven through courier-e2b (the same
//! client an orchestrator uses) against a real courier-sandboxd: the flows of the
//! official SDK's `test_snapshot_api.py`, `test_fork.py` and
//! `test_snapshot_filesystem_only.py`, plus restarts and attacks on the capture.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. `COURIER_TEST_ISOLATION` picks the isolation (default container).

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier_e2b::models::SandboxState;
use courier_e2b::{
    Client, ConnectionConfig, Error as E2bError, PauseOptions, Sandbox, SnapshotQuery,
};

// The template tests' fixture (a server on a data dir that outlives it); this file uses
// part of it.
#[allow(dead_code)]
#[path = "templates/fixture.rs"]
mod fixture;
mod support;

use fixture::{Fixture, stdout};

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sandbox(client: &Client) -> Sandbox {
    Sandbox::builder()
        .timeout(Duration::from_secs(600))
        .create(client)
        .await
        .expect("create")
}

async fn from(client: &Client, template: &str) -> Sandbox {
    Sandbox::builder()
        .template(template)
        .timeout(Duration::from_secs(600))
        .create(client)
        .await
        .unwrap_or_else(|e| panic!("create from {template}: {e}"))
}

/// The captured layer directory of snapshot `id` (its last layer).
fn snapshot_layer(fx: &Fixture, id: &str) -> PathBuf {
    let record = fx
        .run()
        .server
        .snapshots()
        .list(&owner(), None, Some(id))
        .pop()
        .unwrap_or_else(|| panic!("snapshot {id} not stored"));
    record.layers.last().unwrap().join("rootfs")
}

fn owner() -> String {
    courier_sandboxd::keys::owner_of(fixture::KEY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_listed_started_from_and_deleted_through_the_sdk() {
    let Some(fx) = Fixture::new("snapshot_flow").await else {
        return;
    };
    let client = &fx.run().client;
    let source = sandbox(client).await;
    source
        .files()
        .write("/home/user/app/data.txt", "before")
        .await
        .unwrap();
    // Deleted from a lower layer (the base template's /etc): the snapshot must keep the
    // deletion (an overlay whiteout), not bring the file back.
    let rm = source
        .commands()
        .run("rm /etc/debian_version")
        .user("root")
        .await
        .unwrap();
    assert_eq!(rm.exit_code, 0, "{rm:?}");

    let plain = source.create_snapshot().await.expect("snapshot");
    assert!(plain.snapshot_id.starts_with("snap_"), "{plain:?}");
    assert!(plain.names.is_empty());
    let named = source
        .create_snapshot_named("courier-it-ready")
        .await
        .expect("named snapshot");
    assert_eq!(named.names, ["courier-it-ready"]);
    // The source keeps running, and writes after the snapshot are its own.
    assert!(source.is_running().await.unwrap());
    source
        .files()
        .write("/home/user/app/data.txt", "after")
        .await
        .unwrap();

    let all = Sandbox::list_snapshots(client, SnapshotQuery::new())
        .await
        .unwrap();
    assert!(all.contains(&plain) && all.contains(&named), "{all:?}");
    let of_source = Sandbox::list_snapshots(client, SnapshotQuery::new().sandbox(source.id()))
        .await
        .unwrap();
    assert_eq!(of_source.len(), 2, "{of_source:?}");
    let by_name = Sandbox::list_snapshots(client, SnapshotQuery::new().name("courier-it-ready"))
        .await
        .unwrap();
    assert_eq!(by_name, std::slice::from_ref(&named));
    assert!(
        Sandbox::list_snapshots(client, SnapshotQuery::new().name("courier-it-none"))
            .await
            .unwrap()
            .is_empty()
    );
    // Pages of one follow X-Next-Token to the same two.
    let paged = Sandbox::list_snapshots(client, SnapshotQuery::new().sandbox(source.id()).limit(1))
        .await
        .unwrap();
    assert_eq!(paged, of_source);

    // Two sandboxes from the snapshot id, one from its name (E2B's `team/name:tag` form).
    let first = from(client, &plain.snapshot_id).await;
    let second = from(client, &plain.snapshot_id).await;
    let third = from(client, "courier/courier-it-ready:default").await;
    for copy in [&first, &second, &third] {
        assert_eq!(
            copy.files()
                .read_text("/home/user/app/data.txt")
                .await
                .unwrap(),
            "before"
        );
        assert_eq!(
            stdout(
                copy,
                "test -e /etc/debian_version && echo back || echo gone"
            )
            .await,
            "gone\n"
        );
    }
    // Independent of each other and of the source.
    first
        .files()
        .write("/home/user/app/data.txt", "first")
        .await
        .unwrap();
    assert_eq!(
        second
            .files()
            .read_text("/home/user/app/data.txt")
            .await
            .unwrap(),
        "before"
    );
    assert_eq!(
        source
            .files()
            .read_text("/home/user/app/data.txt")
            .await
            .unwrap(),
        "after"
    );

    // Deleted while sandboxes run from it: they keep running; a new create is a 404.
    assert!(
        Sandbox::delete_snapshot(client, &plain.snapshot_id)
            .await
            .unwrap()
    );
    assert!(
        !Sandbox::delete_snapshot(client, &plain.snapshot_id)
            .await
            .unwrap()
    );
    assert_eq!(
        first
            .files()
            .read_text("/home/user/app/data.txt")
            .await
            .unwrap(),
        "first"
    );
    let gone = Sandbox::builder()
        .template(plain.snapshot_id.clone())
        .create(client)
        .await
        .expect_err("deleted snapshot");
    assert!(gone.is_not_found(), "{gone:?}");

    // Its layer goes once the last sandbox on it does.
    let layer = fx
        .run()
        .server
        .runtime()
        .layers_of(first.id())
        .unwrap()
        .pop()
        .unwrap();
    assert!(layer.exists());
    for copy in [first, second, third] {
        copy.kill().await.unwrap();
    }
    let server = fx.run().server.clone();
    eventually(
        "the deleted snapshot's layer removed",
        Duration::from_secs(30),
        || {
            let server = server.clone();
            let layer = layer.clone();
            async move {
                // Collection runs after kills; a create starts one too.
                server
                    .snapshots()
                    .collect_garbage(&server.runtime().layers_in_use());
                !layer.exists()
            }
        },
    )
    .await;
    assert!(
        Sandbox::delete_snapshot(client, &named.snapshot_id)
            .await
            .unwrap()
    );
    source.kill().await.unwrap();
}

/// What a process wrote and has not flushed (through a shared mapping, never
/// `msync`ed; or a `write` still open) is in the snapshot: the capture reads what the
/// sandbox sees, not only what reached the disk image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_writes_are_in_the_snapshot() {
    let Some(fx) = Fixture::new("snapshot_unflushed").await else {
        return;
    };
    let client = &fx.run().client;
    let sbx = sandbox(client).await;
    let writer = "import mmap, time\n\
                  f = open('/home/user/mapped', 'w+b'); f.write(b'0' * 4096); f.flush()\n\
                  m = mmap.mmap(f.fileno(), 4096); m[:8] = b'mmapped!'\n\
                  g = open('/home/user/open', 'w'); g.write('still open'); g.flush()\n\
                  print('written', flush=True); time.sleep(600)\n";
    sbx.files()
        .write("/home/user/writer.py", writer)
        .await
        .unwrap();
    let mut handle = sbx
        .commands()
        .spawn("python3 /home/user/writer.py")
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        use futures::StreamExt as _;
        match tokio::time::timeout(Duration::from_secs(30), handle.next()).await {
            Ok(Some(Ok(courier_e2b::CommandEvent::Stdout(out))))
                if String::from_utf8_lossy(&out).contains("written") =>
            {
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the writer did not start: {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    let snapshot = sbx.create_snapshot().await.unwrap();
    let copy = from(client, &snapshot.snapshot_id).await;
    assert_eq!(
        stdout(&copy, "head -c 8 /home/user/mapped").await,
        "mmapped!"
    );
    assert_eq!(stdout(&copy, "cat /home/user/open").await, "still open");
    copy.kill().await.unwrap();
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_again_keeps_the_snapshot_id_with_the_new_capture() {
    let Some(fx) = Fixture::new("snapshot_rename").await else {
        return;
    };
    let client = &fx.run().client;
    let source = sandbox(client).await;
    source.files().write("v.txt", "1").await.unwrap();
    let one = source.create_snapshot_named("courier-it-v").await.unwrap();
    source.files().write("v.txt", "2").await.unwrap();
    let two = source.create_snapshot_named("courier-it-v").await.unwrap();
    assert_eq!(one.snapshot_id, two.snapshot_id);
    let copy = from(client, "courier-it-v").await;
    assert_eq!(copy.files().read_text("v.txt").await.unwrap(), "2");
    // A paused (frozen) sandbox can be snapshotted too, and stays paused.
    assert!(source.pause().await.unwrap());
    let frozen = Sandbox::connect(client, source.id()).await.unwrap();
    frozen.pause().await.unwrap();
    let of_paused = frozen
        .create_snapshot()
        .await
        .expect("snapshot of a paused sandbox");
    assert_eq!(
        client.get_info(source.id()).await.unwrap().state,
        SandboxState::Paused
    );
    let copy2 = from(client, &of_paused.snapshot_id).await;
    assert_eq!(copy2.files().read_text("v.txt").await.unwrap(), "2");
    // Bad names are refused naming the field.
    let bad = source
        .create_snapshot_named("../x")
        .await
        .expect_err("bad name");
    assert!(bad.to_string().contains("name"), "{bad}");
    for sbx in [copy, copy2, source] {
        sbx.kill().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_survive_a_restart() {
    let Some(mut fx) = Fixture::new("snapshot_restart").await else {
        return;
    };
    let source = sandbox(&fx.run().client).await;
    source
        .files()
        .write("kept.txt", "across restarts")
        .await
        .unwrap();
    let snapshot = source
        .create_snapshot_named("courier-it-restart")
        .await
        .unwrap();
    fx.stop().await;
    fx.start().await;
    let client = &fx.run().client;
    let listed = Sandbox::list_snapshots(client, SnapshotQuery::new())
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&snapshot));
    let copy = from(client, &snapshot.snapshot_id).await;
    assert_eq!(
        copy.files().read_text("kept.txt").await.unwrap(),
        "across restarts"
    );
    copy.kill().await.unwrap();
    assert!(
        Sandbox::delete_snapshot(client, &snapshot.snapshot_id)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_copy_the_filesystem_and_run_on_their_own() {
    let Some(fx) = Fixture::new("fork").await else {
        return;
    };
    let client = &fx.run().client;
    let source = Sandbox::builder()
        .metadata("project", "courier-it")
        .timeout(Duration::from_secs(600))
        .create(client)
        .await
        .unwrap();
    source
        .files()
        .write("state.txt", "before fork")
        .await
        .unwrap();
    let forks: Vec<Sandbox> = source
        .fork(2, Some(Duration::from_secs(120)))
        .await
        .expect("fork")
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every fork starts");
    assert_eq!(forks.len(), 2);
    assert_ne!(forks[0].id(), forks[1].id());
    assert!(source.is_running().await.unwrap());
    for fork in &forks {
        assert_ne!(fork.id(), source.id());
        assert!(fork.is_running().await.unwrap());
        assert_eq!(
            fork.files().read_text("state.txt").await.unwrap(),
            "before fork"
        );
        let info = client.get_info(fork.id()).await.unwrap();
        assert_eq!(
            info.metadata.get("project").map(String::as_str),
            Some("courier-it")
        );
    }
    forks[0]
        .files()
        .write("state.txt", "in fork 0")
        .await
        .unwrap();
    assert_eq!(
        source.files().read_text("state.txt").await.unwrap(),
        "before fork"
    );
    assert_eq!(
        forks[1].files().read_text("state.txt").await.unwrap(),
        "before fork"
    );
    // A fork's capture is no snapshot of the key's.
    assert!(
        Sandbox::list_snapshots(client, SnapshotQuery::new())
            .await
            .unwrap()
            .is_empty()
    );

    let zero = source.fork(0, None).await.expect_err("count 0");
    assert!(zero.to_string().contains("count"), "{zero}");
    let killed = sandbox(client).await;
    killed.kill().await.unwrap();
    let err = killed
        .fork(1, None)
        .await
        .expect_err("fork of a killed sandbox");
    assert!(err.is_not_found(), "{err:?}");
    for sbx in forks.into_iter().chain([source]) {
        sbx.kill().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_only_pause_ends_processes_and_connect_reboots_with_the_same_token() {
    let Some(mut fx) = Fixture::new("fs_pause").await else {
        return;
    };
    let client = fx.run().client.clone();
    let sbx = sandbox(&client).await;
    sbx.files().write("marker.txt", "persisted").await.unwrap();
    let sleeper = sbx.commands().spawn("sleep 1000").await.unwrap();
    let pid = sleeper.pid();
    assert!(
        sbx.pause_with(PauseOptions::filesystem_only())
            .await
            .unwrap()
    );
    assert!(
        !sbx.pause_with(PauseOptions::filesystem_only())
            .await
            .unwrap(),
        "already paused"
    );
    assert_eq!(
        client.get_info(sbx.id()).await.unwrap().state,
        SandboxState::Paused
    );
    assert!(!sbx.is_running().await.unwrap());
    // Nothing of it runs: the runtime has no sandbox of that id (its memory is freed).
    assert!(fx.run().server.runtime().status(sbx.id()).is_err());

    // It survives a restart paused (nothing runs, its layers are its state).
    fx.stop_keeping_sandboxes().await;
    fx.start().await;
    let client = fx.run().client.clone();
    assert_eq!(
        client.get_info(sbx.id()).await.unwrap().state,
        SandboxState::Paused
    );

    let resumed = Sandbox::connect(&client, sbx.id()).await.expect("reboot");
    assert_eq!(resumed.id(), sbx.id());
    // The handle from before the pause still works: the same access token.
    let before = Sandbox::from_record(&client, sbx.record().clone());
    assert_eq!(
        before.files().read_text("marker.txt").await.unwrap(),
        "persisted"
    );
    // Rebooted: the process it ran is gone.
    let processes = resumed.commands().list().await.unwrap();
    assert!(
        processes
            .iter()
            .all(|p| p.pid != pid || !p.args.contains(&"1000".to_owned())),
        "{processes:?}"
    );
    assert!(!stdout(&resumed, "ps -eo args").await.contains("sleep 1000"));
    // Paused and rebooted again: writes of both runs are kept.
    resumed.files().write("second.txt", "run 2").await.unwrap();
    assert!(
        resumed
            .pause_with(PauseOptions::filesystem_only())
            .await
            .unwrap()
    );
    let again = Sandbox::connect(&client, sbx.id()).await.unwrap();
    assert_eq!(
        again.files().read_text("marker.txt").await.unwrap(),
        "persisted"
    );
    assert_eq!(
        again.files().read_text("second.txt").await.unwrap(),
        "run 2"
    );
    assert!(again.kill().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pause_without_memory_pauses_filesystem_only_at_the_deadline() {
    let Some(fx) = Fixture::new("auto_pause_fs").await else {
        return;
    };
    let client = &fx.run().client;
    let sbx = Sandbox::builder()
        .auto_pause(true)
        .auto_pause_memory(false)
        .timeout(Duration::from_secs(600))
        .create(client)
        .await
        .unwrap();
    sbx.files().write("auto.txt", "kept").await.unwrap();
    sbx.set_timeout(Duration::from_secs(2)).await.unwrap();
    eventually("auto-pause", Duration::from_secs(60), || async {
        matches!(client.get_info(sbx.id()).await, Ok(info) if info.state == SandboxState::Paused)
    })
    .await;
    let server = fx.run().server.clone();
    eventually("its processes gone", Duration::from_secs(30), || {
        let server = server.clone();
        let id = sbx.id().to_owned();
        async move { server.runtime().status(&id).is_err() }
    })
    .await;
    let resumed = Sandbox::connect(client, sbx.id()).await.unwrap();
    assert_eq!(resumed.files().read_text("auto.txt").await.unwrap(), "kept");
    resumed.kill().await.unwrap();
}

// Attack: a sandbox controls its writable layer. It plants symlinks to host files (and
// to the host's root), a FIFO (a copy that opened it would hang), a huge sparse file (a
// copy that filled holes would exhaust the host's disk) and a hard link. The capture
// must copy links as links, never read through them, keep holes, and a sandbox started
// from the snapshot must not see the host file either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_of_the_writable_layer_are_copied_as_they_are() {
    let Some(fx) = Fixture::new("snapshot_attack").await else {
        return;
    };
    let secret = fx.dir.path().join("host-secret.txt");
    std::fs::write(&secret, "host only").unwrap();
    let client = &fx.run().client;
    let sbx = sandbox(client).await;
    let plant = format!(
        "set -e; cd /home/user; ln -s {secret} link; ln -s / rootlink; mkfifo fifo; \
         truncate -s 2G sparse; echo data > file; ln file hardlink; echo planted",
        secret = secret.display()
    );
    assert_eq!(stdout(&sbx, &plant).await, "planted\n");
    let started = Instant::now();
    let snapshot = sbx.create_snapshot().await.expect("snapshot");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the capture hung"
    );
    let tree = snapshot_layer(&fx, &snapshot.snapshot_id);
    let home = tree.join("home/user");
    let link = std::fs::symlink_metadata(home.join("link")).unwrap();
    assert!(link.file_type().is_symlink(), "a symlink stays a symlink");
    assert_eq!(std::fs::read_link(home.join("link")).unwrap(), secret);
    assert!(
        std::fs::symlink_metadata(home.join("rootlink"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // gVisor keeps named pipes in its own kernel (none reaches the disk); a container's
    // is on the disk and copied as a FIFO, never opened.
    match std::fs::symlink_metadata(home.join("fifo")) {
        Ok(meta) => assert!(meta.file_type().is_fifo()),
        Err(_) => assert_eq!(
            support::isolation(),
            courier_sandboxd::runtime::Isolation::Gvisor,
            "the container's FIFO is missing from the capture"
        ),
    }
    let sparse = std::fs::metadata(home.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 2 << 30);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "holes stay holes: {} blocks",
        sparse.blocks()
    );
    let (file, hard) = (
        std::fs::metadata(home.join("file")).unwrap(),
        std::fs::metadata(home.join("hardlink")).unwrap(),
    );
    assert_eq!(
        file.ino(),
        hard.ino(),
        "hard links stay linked inside the layer"
    );
    // No file of the layer holds the host's secret.
    assert!(!contains_text(&tree, "host only"));
    // Owners were shifted back to the sandbox's own ids (user = 1000), none is a host id.
    assert_eq!(std::fs::metadata(home.join("file")).unwrap().uid(), 1000);
    assert!(max_uid(&tree) < 65_536, "an id outside the sandbox's map");
    // A sandbox from the snapshot follows the link inside its own root: no host file.
    let copy = from(client, &snapshot.snapshot_id).await;
    assert_eq!(
        stdout(&copy, "cat /home/user/link 2>/dev/null || echo unreadable").await,
        "unreadable\n"
    );
    copy.kill().await.unwrap();
    sbx.kill().await.unwrap();
    assert!(
        Sandbox::delete_snapshot(client, &snapshot.snapshot_id)
            .await
            .unwrap()
    );
}

fn contains_text(dir: &Path, needle: &str) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file()
            && meta.blocks() < 1024
            && std::fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
        {
            return true;
        }
    }
    false
}

fn max_uid(dir: &Path) -> u32 {
    let mut max = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        max = max.max(meta.uid()).max(meta.gid());
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    max
}

// Attack: another API key of the same server guesses or learns a sandbox or snapshot
// id. Snapshotting or forking the other key's sandbox, starting from, listing or
// deleting its snapshot, by id or by name, must all fail as "not found", and leave the
// snapshot intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_sandboxes_and_snapshots_are_not_found() {
    let Some(fx) = Fixture::new("snapshot_keys").await else {
        return;
    };
    let client = &fx.run().client;
    let victim = sandbox(client).await;
    victim
        .files()
        .write("secret.txt", "victim's")
        .await
        .unwrap();
    let snapshot = victim
        .create_snapshot_named("courier-it-victim")
        .await
        .unwrap();

    let other_key = courier_sandboxd::keys::create_key(&fx.data_dir()).unwrap();
    let config = client.config();
    let mallory = Client::new(
        ConnectionConfig::builder()
            .api_key(other_key)
            .api_url(config.api_url().as_str())
            .sandbox_url(config.sandbox_url().unwrap().as_str())
            .request_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .unwrap();
    let not_found = |result: Result<_, E2bError>, what: &str| match result {
        Err(e) if e.is_not_found() => {}
        other => panic!("{what}: expected not found, got {other:?}"),
    };
    not_found(
        mallory.create_snapshot(victim.id(), None).await.map(drop),
        "snapshot",
    );
    not_found(
        mallory
            .fork(victim.id(), &Default::default())
            .await
            .map(drop),
        "fork",
    );
    for reference in [snapshot.snapshot_id.as_str(), "courier-it-victim"] {
        not_found(
            Sandbox::builder()
                .template(reference)
                .create(&mallory)
                .await
                .map(drop),
            "create from the snapshot",
        );
        assert!(
            !mallory.delete_snapshot(reference).await.unwrap(),
            "delete {reference}"
        );
    }
    assert!(
        Sandbox::list_snapshots(&mallory, SnapshotQuery::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        Sandbox::list_snapshots(&mallory, SnapshotQuery::new().sandbox(victim.id()))
            .await
            .unwrap()
            .is_empty()
    );
    // Still the owner's.
    let copy = from(client, &snapshot.snapshot_id).await;
    assert_eq!(
        copy.files().read_text("secret.txt").await.unwrap(),
        "victim's"
    );
    copy.kill().await.unwrap();
    victim.kill().await.unwrap();
    assert!(
        Sandbox::delete_snapshot(client, &snapshot.snapshot_id)
            .await
            .unwrap()
    );
}

/// Times of the snapshot paths on this machine (not a check; run with `--ignored
/// --nocapture`): a snapshot of a fresh sandbox and of one with 100 MiB written, a
/// create from it, a fork, a filesystem-only pause and its reboot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn measure_snapshot_fork_and_reboot_times() {
    let Some(fx) = Fixture::new("snapshot_measure").await else {
        return;
    };
    let client = &fx.run().client;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let sbx = sandbox(client).await;
    for round in 0..3 {
        let t = Instant::now();
        let snap = sbx.create_snapshot().await.unwrap();
        let snapshot_ms = ms(t);
        let t = Instant::now();
        let copy = from(client, &snap.snapshot_id).await;
        let create_ms = ms(t);
        println!(
            "round {round}: snapshot (fresh) {snapshot_ms:.0} ms, create from it {create_ms:.0} ms"
        );
        copy.kill().await.unwrap();
        Sandbox::delete_snapshot(client, &snap.snapshot_id)
            .await
            .unwrap();
    }
    stdout(
        &sbx,
        "head -c 100M /dev/urandom > /home/user/big && echo ok",
    )
    .await;
    for round in 0..3 {
        let t = Instant::now();
        let snap = sbx.create_snapshot().await.unwrap();
        println!("round {round}: snapshot (100 MiB written) {:.0} ms", ms(t));
        Sandbox::delete_snapshot(client, &snap.snapshot_id)
            .await
            .unwrap();
    }
    for round in 0..3 {
        let t = Instant::now();
        let forks = sbx.fork(1, None).await.unwrap();
        println!("round {round}: fork (100 MiB written) {:.0} ms", ms(t));
        for fork in forks {
            fork.unwrap().kill().await.unwrap();
        }
    }
    for round in 0..3 {
        let t = Instant::now();
        sbx.pause_with(PauseOptions::filesystem_only())
            .await
            .unwrap();
        let pause_ms = ms(t);
        let t = Instant::now();
        Sandbox::connect(client, sbx.id()).await.unwrap();
        println!(
            "round {round}: filesystem-only pause (100 MiB written) {pause_ms:.0} ms, reboot {:.0} ms",
            ms(t)
        );
    }
    sbx.kill().await.unwrap();
}

/// A snapshot stands on its template's layers: the template cannot be deleted while a
/// snapshot of it, or a sandbox started from one, uses them; a rebuild keeps the old
/// layers the snapshot needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_under_a_snapshot_is_kept() {
    let Some(fx) = Fixture::new("snapshot_template").await else {
        return;
    };
    let (template, _) = fx.build_version("courier-it-snapbase", "v1").await;
    let client = &fx.run().client;
    let source = from(client, "courier-it-snapbase").await;
    source.files().write("own.txt", "mine").await.unwrap();
    let snapshot = source.create_snapshot().await.unwrap();
    source.kill().await.unwrap();
    // A rebuild: the snapshot keeps v1's layer.
    fx.build_version("courier-it-snapbase", "v2").await;
    let path = format!("/templates/{template}");
    let delete = || fx.call(reqwest::Method::DELETE, &path, None);
    let (status, body) = delete().await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&snapshot.snapshot_id),
        "{body}"
    );
    let copy = from(client, &snapshot.snapshot_id).await;
    assert_eq!(
        stdout(&copy, "cat /opt/version /home/user/own.txt").await,
        "v1\nmine"
    );
    assert!(
        Sandbox::delete_snapshot(client, &snapshot.snapshot_id)
            .await
            .unwrap()
    );
    // The snapshot is gone, a sandbox from it is not.
    let (status, body) = delete().await;
    assert_eq!(status, 409, "{body}");
    copy.kill().await.unwrap();
    let (status, body) = delete().await;
    assert_eq!(status, 204, "{body}");
}

/// Each filesystem-only pause adds a layer; past the bound the pause is refused naming
/// it, before anything of the sandbox ends, and the sandbox keeps working. (An attacker
/// with an API key pausing and resuming in a loop cannot grow a layer stack past what an
/// overlay mount takes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_stack_of_repeated_pauses_is_bounded() {
    let Some(fx) = Fixture::new("snapshot_layers").await else {
        return;
    };
    let client = &fx.run().client;
    let sbx = sandbox(client).await;
    let server = fx.run().server.clone();
    let mut pauses = 0;
    let refused = loop {
        sbx.files()
            .write(&format!("pause-{pauses}.txt"), "x")
            .await
            .unwrap();
        match sbx.pause_with(PauseOptions::filesystem_only()).await {
            Ok(true) => {
                pauses += 1;
                Sandbox::connect(client, sbx.id()).await.unwrap();
            }
            Ok(false) => panic!("reported paused already"),
            Err(e) => break e,
        }
        assert!(pauses <= 64, "never refused");
    };
    assert!(refused.to_string().contains("at most 24"), "{refused}");
    assert_eq!(server.runtime().layers_of(sbx.id()).unwrap().len(), 24);
    assert!(
        sbx.is_running().await.unwrap(),
        "a refused pause ended the sandbox"
    );
    assert_eq!(
        stdout(&sbx, "ls /home/user | grep -c '^pause-'").await,
        format!("{}\n", pauses + 1)
    );
    // A snapshot of it is refused the same way.
    let err = sbx
        .create_snapshot()
        .await
        .expect_err("snapshot past the bound");
    assert!(err.to_string().contains("at most 24"), "{err}");
    sbx.kill().await.unwrap();
}

/// The counter loop the memory snapshot tests run: it lives only in memory (a shell
/// variable) and in the tmpfs `/tmp`.
const COUNTER: &str =
    "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done'";

async fn counter(sbx: &Sandbox) -> u64 {
    let text = sbx.files().read_text("/tmp/counter").await.unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("counter {text:?}: {e}"))
}

/// `POST /sandboxes/{id}/snapshots` through plain HTTP: the snapshot id and whether the
/// answer says it kept the sandbox's memory.
async fn snapshot_over_http(fx: &Fixture, id: &str) -> (String, bool) {
    let response = fx
        .run()
        .http
        .post(format!("{}/sandboxes/{id}/snapshots", fx.run().api))
        .header("X-API-Key", fixture::KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let memory = response
        .headers()
        .get("courier-snapshot-memory")
        .expect("the answer says whether memory was kept")
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    (
        body["snapshotID"].as_str().unwrap().to_owned(),
        memory == "true",
    )
}

/// A gVisor sandbox without internet is snapshotted with its memory: a sandbox created
/// from the snapshot (and a fork) resumes its processes and its tmpfs, answers only to
/// its own token, and nobody but the owner's key reaches the image. A sandbox with
/// internet access keeps today's filesystem-only snapshot, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_snapshots_resume_processes_under_gvisor() {
    if !support::gvisor_or_skip("memory_snapshots_resume_processes_under_gvisor") {
        return;
    }
    let Some(mut fx) = Fixture::new("memory_snapshot").await else {
        return;
    };
    if support::isolation() != courier_sandboxd::runtime::Isolation::Gvisor {
        fx.stop().await;
        fx.start_with(courier_sandboxd::runtime::Isolation::Gvisor)
            .await;
    }
    let client = fx.run().client.clone();
    let source = sandbox(&client).await;
    let _loop = source.commands().spawn(COUNTER).await.unwrap();
    source
        .files()
        .write("/tmp/note.txt", "only in memory")
        .await
        .unwrap();
    eventually("the counter to count", Duration::from_secs(30), || async {
        source.files().read_text("/tmp/counter").await.is_ok()
    })
    .await;

    let clock = Instant::now();
    let (snapshot, memory) = snapshot_over_http(&fx, source.id()).await;
    let snapshot_ms = clock.elapsed().as_secs_f64() * 1e3;
    assert!(memory, "a gVisor sandbox without internet keeps its memory");
    let at_snapshot = counter(&source).await;
    // The source runs on, its envd reachable again (it let go of its socket for the
    // checkpoint and bound it again), its loop still counting.
    eventually(
        "the source to count on",
        Duration::from_secs(10),
        || async { counter(&source).await > at_snapshot },
    )
    .await;

    // The image holds the sandbox's memory, secrets included: root's alone on the host.
    let record = fx
        .run()
        .server
        .snapshots()
        .find(&owner(), &snapshot)
        .unwrap();
    let image = record.memory.as_ref().expect("a memory image").dir.clone();
    for dir in [image.parent().unwrap(), image.as_path()] {
        let mode = std::fs::metadata(dir).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", dir.display());
    }

    let clock = Instant::now();
    let copy = from(&client, &snapshot).await;
    let restore_ms = clock.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "memory snapshot: {snapshot_ms:.0} ms (checkpoint + disk capture), create from it \
         (restore): {restore_ms:.0} ms"
    );
    // Its memory: the tmpfs file, and the loop started before the snapshot, counting on
    // from where the snapshot left it (a fresh boot has neither).
    assert_eq!(
        copy.files().read_text("/tmp/note.txt").await.unwrap(),
        "only in memory"
    );
    let first = counter(&copy).await;
    eventually(
        "the restored loop to count",
        Duration::from_secs(10),
        || async { counter(&copy).await > first },
    )
    .await;
    assert!(stdout(&copy, "ps -eo args").await.contains("while :"));

    // Attacker: whoever holds the source's envd token (every sandbox restored from the
    // image started with it in memory) tries it on the copy. It is replaced at create:
    // refused.
    let mut stolen = copy.record().clone();
    stolen.envd_access_token = source.record().envd_access_token.clone();
    assert_ne!(
        stolen
            .envd_access_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        copy.record()
            .envd_access_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        "the copy has a token of its own"
    );
    let forged = Sandbox::from_record(&client, stolen);
    let refused = forged.files().read_text("/tmp/note.txt").await;
    assert!(refused.is_err(), "the source's token works on the copy");
    // The source still answers to its own token.
    assert!(source.files().read_text("/tmp/note.txt").await.is_ok());

    // Attacker: another API key creates a sandbox from the snapshot to read its memory.
    let other_key = courier_sandboxd::keys::create_key(&fx.data_dir()).unwrap();
    let config = client.config();
    let mallory = Client::new(
        ConnectionConfig::builder()
            .api_key(other_key)
            .api_url(config.api_url().as_str())
            .sandbox_url(config.sandbox_url().unwrap().as_str())
            .request_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .unwrap();
    match Sandbox::builder()
        .template(&snapshot)
        .create(&mallory)
        .await
    {
        Err(e) if e.is_not_found() => {}
        other => panic!("another key's create from the snapshot: {other:?}"),
    }

    // A fork keeps the memory too.
    let fork = source
        .fork(1, Some(Duration::from_secs(120)))
        .await
        .expect("fork")
        .pop()
        .unwrap()
        .expect("the fork starts");
    assert_eq!(
        fork.files().read_text("/tmp/note.txt").await.unwrap(),
        "only in memory"
    );
    let forked = counter(&fork).await;
    eventually(
        "the fork's loop to count",
        Duration::from_secs(10),
        || async { counter(&fork).await > forked },
    )
    .await;

    // With internet access (runsc cannot save the host's network stack): the filesystem
    // only, and the answer says so; its sandboxes boot afresh.
    let online = Sandbox::builder()
        .allow_internet_access(true)
        .timeout(Duration::from_secs(600))
        .create(&client)
        .await
        .unwrap();
    online
        .files()
        .write("/tmp/note.txt", "in memory")
        .await
        .unwrap();
    online
        .files()
        .write("/home/user/disk.txt", "on disk")
        .await
        .unwrap();
    let (fs_snapshot, memory) = snapshot_over_http(&fx, online.id()).await;
    assert!(!memory, "a sandbox with internet keeps only its files");
    let booted = from(&client, &fs_snapshot).await;
    assert_eq!(
        booted
            .files()
            .read_text("/home/user/disk.txt")
            .await
            .unwrap(),
        "on disk"
    );
    assert!(booted.files().read_text("/tmp/note.txt").await.is_err());

    // A process holding a descriptor of the host's (the runtime's own `runsc exec`,
    // whose stdio are host pipes): runsc saves it but cannot restore it. The create
    // falls back to booting on the snapshot's files rather than failing.
    let held = sandbox(&client).await;
    held.files()
        .write("/home/user/disk.txt", "held's disk")
        .await
        .unwrap();
    held.files()
        .write("/tmp/note.txt", "held's memory")
        .await
        .unwrap();
    let mut exec = fx
        .run()
        .server
        .runtime()
        .command(held.id(), "sleep")
        .unwrap();
    let mut host_held = exec
        .arg("1000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the exec'd sleep", Duration::from_secs(20), || async {
        stdout(&held, "ps -eo args").await.contains("sleep 1000")
    })
    .await;
    let (held_snapshot, memory) = snapshot_over_http(&fx, held.id()).await;
    assert!(memory, "runsc saves the host descriptor");
    let fallback = from(&client, &held_snapshot).await;
    assert_eq!(
        fallback
            .files()
            .read_text("/home/user/disk.txt")
            .await
            .unwrap(),
        "held's disk"
    );
    assert!(fallback.files().read_text("/tmp/note.txt").await.is_err());
    let _ = host_held.kill();
    let _ = host_held.wait();

    for sbx in [copy, fork, booted, online, source, fallback, held] {
        sbx.kill().await.unwrap();
    }
    for id in [&snapshot, &fs_snapshot, &held_snapshot] {
        assert!(Sandbox::delete_snapshot(&client, id).await.unwrap());
    }
    // The image goes with its record (collected at the next kill or delete).
    let probe = sandbox(&client).await;
    probe.kill().await.unwrap();
    assert!(!image.exists(), "{} left behind", image.display());
}
