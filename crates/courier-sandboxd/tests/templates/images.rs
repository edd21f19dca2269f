//! `fromImage` templates through courier-e2b against a real server, pulling from the
//! registry stand-in of courier-testkit (which serves images this test packs itself: a
//! small real root file system of the host's programs, and hostile layers).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::Ordering;

use courier_e2b::{BuildRequest, Error, Recipe, Step};
use courier_sandboxd::images::ImageConfig;
use courier_testkit::registry::{OciImage, RawEntry, Registry, mini_rootfs, raw_tar};

use crate::fixture::*;
use crate::support;

/// Builds `name` from `recipe` through the SDK; the wait's result.
async fn build(fx: &Fixture, name: &str, recipe: &Recipe) -> (String, String, Result<(), Error>) {
    let templates = fx.run().client.templates();
    let requested = templates
        .request_build(&BuildRequest::new(name).cpu_count(1).memory_mb(512))
        .await
        .expect("request");
    templates
        .start_build(&requested.template_id, &requested.build_id, recipe)
        .await
        .expect("start");
    let waited = templates
        .wait(&requested.template_id, &requested.build_id, |_| {})
        .await;
    (requested.template_id, requested.build_id, waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_pulled_unpacked_provisioned_and_built_on() {
    let rootfs = tempfile::tempdir().expect("tempdir");
    let envd = support::envd_binary();
    mini_rootfs(rootfs.path(), &[envd.as_path()]);
    // A file only the image has, and a set-uid one.
    std::fs::create_dir_all(rootfs.path().join("opt")).unwrap();
    std::fs::write(rootfs.path().join("opt/from-image"), "image-content\n").unwrap();
    let image = OciImage::from_rootfs(
        rootfs.path(),
        &["PATH=/usr/bin:/bin", "IMAGE_GREETING=hello from the image"],
        "",
    );
    // Docker Hub's anonymous token dance, as the real one asks for it.
    let registry = Registry::start(vec![("library/ubuntu", "22.04", image)], true).await;
    let mut images = ImageConfig::default();
    images
        .add_mirror("docker.io", &registry.url())
        .expect("a loopback mirror");
    images
        .add_allow_arg(registry.url().trim_start_matches("http://"))
        .expect("the stand-in's address");
    let Some(fx) = Fixture::with_images("from_image", images).await else {
        return;
    };

    let recipe = Recipe::from_image("ubuntu:22.04")
        .step(Step::run(
            "whoami > ~/who; cat /opt/from-image; echo \"$IMAGE_GREETING\"",
        ))
        .step(Step::run_as(
            "test \"$(whoami)\" = root && echo built-as-root > /opt/marker",
            "root",
        ))
        .step(Step::run(
            "ln -s .bashrc .bashrc.local && test \"$(readlink .bashrc.local)\" = .bashrc",
        ));
    let (template_id, build_id, waited) = build(&fx, "courier-it-image", &recipe).await;
    let logs = fx
        .run()
        .client
        .templates()
        .build_logs(&template_id, &build_id, 0, 100)
        .await
        .expect("logs")
        .logs;
    let lines: Vec<&str> = logs.iter().map(|e| e.message.as_str()).collect();
    waited.unwrap_or_else(|e| panic!("build: {e}\n{lines:#?}"));
    for expected in [
        "image-content",
        "hello from the image",
        "Provisioning user `user` in the image",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "{expected:?} not in {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Pulling image docker.io/library/ubuntu:22.04"))
    );
    let pulled = registry.blob_downloads.load(Ordering::SeqCst);
    assert_eq!(pulled, 2, "the config and the one layer");

    // A sandbox of the template: the image's files, the build's writes, its env.
    let sbx = fx.sandbox("courier-it-image").await;
    assert_eq!(
        stdout(
            &sbx,
            "cat /opt/marker ~/who; whoami; echo \"$IMAGE_GREETING\""
        )
        .await,
        "built-as-root\nuser\nuser\nhello from the image\n"
    );
    sbx.kill().await.expect("kill");

    // The pulled image is kept under the 0700 data dir (its set-id files are out of
    // every host user's reach) and reused: a rebuild downloads no blob again.
    let images_dir = fx.data_dir().join("images");
    assert_eq!(
        std::fs::metadata(&images_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let messages = |template_id: String, build_id: String| {
        let client = fx.run().client.clone();
        async move {
            client
                .templates()
                .build_logs(&template_id, &build_id, 0, 100)
                .await
                .expect("logs")
                .logs
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<String>>()
        }
    };
    let (t, b, again) = build(&fx, "courier-it-image", &recipe).await;
    again.expect("rebuild");
    assert_eq!(registry.blob_downloads.load(Ordering::SeqCst), pulled);
    // The build cache: same parent and steps reuse the layer, no step runs...
    let lines = messages(t.clone(), b).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("Reusing the layer of build {build_id}")))
            && !lines.iter().any(|l| l.starts_with("[1/3]")),
        "{lines:#?}"
    );
    // ...unless the cache is skipped.
    let (_, b, forced) = build(&fx, "courier-it-image", &recipe.clone().skip_cache()).await;
    forced.expect("forced rebuild");
    let lines = messages(t, b).await;
    assert!(
        lines.iter().any(|l| l.starts_with("[1/3]"))
            && !lines.iter().any(|l| l.starts_with("Reusing")),
        "{lines:#?}"
    );
    let sbx = fx.sandbox("courier-it-image").await;
    assert_eq!(stdout(&sbx, "cat /opt/marker").await, "built-as-root\n");
    sbx.kill().await.expect("kill");

    // The same base through a Dockerfile: Docker's root and `/` while it runs, its own
    // WORKDIR and USER kept for the sandboxes.
    let recipe = Recipe::from_dockerfile(
        "FROM ubuntu:22.04\nARG GREETING=hi\nWORKDIR /srv\n\
         RUN echo \"$GREETING\" > /srv/greeting && \\\n    whoami > /srv/who\nUSER user\n",
    )
    .expect("a supported Dockerfile");
    let (_, _, waited) = build(&fx, "courier-it-dockerfile", &recipe).await;
    waited.expect("dockerfile build");
    let sbx = fx.sandbox("courier-it-dockerfile").await;
    assert_eq!(
        stdout(&sbx, "cat /srv/greeting /srv/who; whoami; pwd").await,
        "hi\nroot\nuser\n/srv\n"
    );
    sbx.kill().await.expect("kill");

    // A user that does not exist: E2B's wording, which the SDKs' users match.
    let recipe = Recipe::from_image("ubuntu:22.04").step(Step::run_as("whoami", "root123"));
    let (_, _, waited) = build(&fx, "courier-it-image-nouser", &recipe).await;
    let err = waited.unwrap_err().to_string();
    assert!(
        err.contains(
            "failed to run command 'whoami': command failed: unauthenticated: invalid username: 'root123'"
        ),
        "{err}"
    );

    // Unknown images and tags fail the build naming them.
    for missing in ["ubuntu:99.99", "nosuch/image"] {
        let (_, _, waited) = build(
            &fx,
            "courier-it-image-missing",
            &Recipe::from_image(missing),
        )
        .await;
        let err = waited.unwrap_err().to_string();
        assert!(
            err.contains("404") && err.contains("fromImage"),
            "{missing}: {err}"
        );
    }
}

/// What a hostile image could try on the host that unpacks it as root, each refused or
/// neutered: names escaping the root, a file written through a symlink pointing at a
/// host path, a hard link to a host file, device nodes, and a layer that claims more
/// than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_are_refused_or_neutered() {
    let canary_dir = tempfile::tempdir().expect("tempdir");
    let canary = canary_dir.path().join("canary");
    std::fs::write(&canary, "host file\n").unwrap();
    let canary_str = canary.display().to_string();
    let canary_dir_str = canary_dir.path().display().to_string();

    let escape = raw_tar(&[RawEntry::file("../../../../../../tmp/escaped", b"x", 0o644)]);
    // A symlink to a host directory only ever resolves inside the image's root: the
    // file written "through" it lands in the image's copy of that path (made here so the
    // path exists there too), the host directory is untouched. An absolute name is read
    // relative to the image's root.
    let inside = canary_dir
        .path()
        .strip_prefix("/")
        .unwrap()
        .display()
        .to_string();
    let odd = raw_tar(&[
        RawEntry::dir("etc"),
        RawEntry::dir(&inside),
        RawEntry::link("etc/hostdir", b'2', &canary_dir_str),
        RawEntry::file("etc/hostdir/canary", b"overwritten\n", 0o644),
        RawEntry::file("/abs-file", b"abs\n", 0o644),
        RawEntry {
            kind: b'3',
            ..RawEntry::file("dev-console", b"", 0o666)
        },
        RawEntry::file("setuid-tool", b"#!/bin/sh\n", 0o4755),
    ]);
    // A hard link to a host file: its target is looked up inside the image, where it
    // is not, so the image is refused.
    let hardlink = raw_tar(&[RawEntry::link("hardlink", b'1', &canary_str)]);
    // A dangling symlink to a host directory, then a file through it: refused, not
    // followed to create the host directory.
    let dangling = raw_tar(&[
        RawEntry::link("gone", b'2', &format!("{canary_dir_str}/made-by-image")),
        RawEntry::file("gone/file", b"x", 0o644),
    ]);
    let huge = raw_tar(&[RawEntry {
        claimed_size: Some(2 << 30),
        ..RawEntry::file("huge", b"", 0o644)
    }]);
    let image = |tar: Vec<u8>| OciImage::from_layers(vec![tar], &[], "");
    let registry = Registry::start(
        vec![
            ("library/escape", "1", image(escape)),
            ("library/odd", "1", image(odd)),
            ("library/hardlink", "1", image(hardlink)),
            ("library/dangling", "1", image(dangling)),
            ("library/huge", "1", image(huge)),
        ],
        false,
    )
    .await;
    let mut images = ImageConfig::default();
    images.add_mirror("docker.io", &registry.url()).unwrap();
    images
        .add_allow_arg(registry.url().trim_start_matches("http://"))
        .unwrap();
    images.max_unpacked_bytes = 1 << 30;
    let Some(fx) = Fixture::with_images("hostile_layers", images).await else {
        return;
    };

    let (_, _, waited) = build(&fx, "courier-it-escape", &Recipe::from_image("escape:1")).await;
    let err = waited.unwrap_err().to_string();
    assert!(err.contains("leaves the root"), "{err}");
    assert!(!std::path::Path::new("/tmp/escaped").exists());

    let (_, _, waited) = build(&fx, "courier-it-huge", &Recipe::from_image("huge:1")).await;
    let err = waited.unwrap_err().to_string();
    assert!(err.contains("image size cap"), "{err}");

    let (_, _, waited) = build(
        &fx,
        "courier-it-hardlink",
        &Recipe::from_image("hardlink:1"),
    )
    .await;
    let err = waited.unwrap_err().to_string();
    assert!(err.contains("link"), "{err}");
    assert_eq!(
        std::fs::metadata(&canary).unwrap().nlink(),
        1,
        "no hard link to it"
    );

    let (_, _, waited) = build(
        &fx,
        "courier-it-dangling",
        &Recipe::from_image("dangling:1"),
    )
    .await;
    assert!(waited.is_err());
    assert!(!canary_dir.path().join("made-by-image").exists());

    // This image has no shell, so its build fails after the unpack (at provisioning):
    // what matters is what the unpack did on the host.
    let (_, _, waited) = build(&fx, "courier-it-odd", &Recipe::from_image("odd:1")).await;
    assert!(waited.is_err());
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host file\n");
    let unpacked: Vec<std::path::PathBuf> = std::fs::read_dir(fx.data_dir().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("rootfs"))
        .filter(|p| p.join("abs-file").exists())
        .collect();
    let [root] = unpacked.as_slice() else {
        panic!("expected the symlink image unpacked once: {unpacked:?}");
    };
    assert_eq!(
        std::fs::read_to_string(
            root.join(canary_dir.path().strip_prefix("/").unwrap())
                .join("canary")
        )
        .unwrap(),
        "overwritten\n",
        "the write through the symlink landed inside the image"
    );
    assert!(
        !root.join("dev-console").exists(),
        "device nodes are not created"
    );
    let setuid = std::fs::metadata(root.join("setuid-tool")).unwrap();
    assert_eq!(setuid.mode() & 0o7777, 0o4755);
    assert_eq!(
        std::fs::metadata(fx.data_dir().join("images"))
            .unwrap()
            .mode()
            & 0o777,
        0o700,
        "set-id files of images are beyond every host user's reach"
    );
}

// Attacker: a tenant whose template build names its base image at an internal address
// (`fromImage` "169.254.169.254/…", "localhost:PORT/…", or a registry mirror the
// operator configured on loopback but did not allow) to make the server fetch from a
// metadata service or an internal port. Each start is refused with a 400 naming
// `fromImage` and the way to allow a registry, the build fails instead of waiting, and
// nothing connects to the internal registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_image_refuses_registries_at_non_public_addresses() {
    let rootfs = tempfile::tempdir().expect("tempdir");
    mini_rootfs(rootfs.path(), &[]);
    let image = OciImage::from_rootfs(rootfs.path(), &["PATH=/usr/bin:/bin"], "");
    let registry = Registry::start(vec![("library/ubuntu", "22.04", image)], false).await;
    let port = registry
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    // The mirror is configured, not allowed: pulls may not reach loopback.
    let mut images = ImageConfig::default();
    images.add_mirror("docker.io", &registry.url()).unwrap();
    let Some(fx) = Fixture::with_images("from_image_ssrf", images).await else {
        return;
    };
    for from_image in [
        "ubuntu:22.04".to_owned(),
        "169.254.169.254/latest/meta-data:1".to_owned(),
        "10.0.0.1:5000/library/ubuntu:22.04".to_owned(),
        format!("localhost:{port}/library/ubuntu:22.04"),
    ] {
        let (template_id, build_id) = fx
            .request_build(serde_json::json!({"name": "courier-it-ssrf"}))
            .await;
        let (status, body) = fx
            .call(
                reqwest::Method::POST,
                &format!("/v2/templates/{template_id}/builds/{build_id}"),
                Some(serde_json::json!({"fromImage": from_image})),
            )
            .await;
        assert_eq!(status, 400, "{from_image}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("fromImage") && message.contains("--registry-allow"),
            "{from_image}: {message}"
        );
        let (done, _) = fx.wait_build(&template_id, &build_id).await;
        assert_eq!(done["status"], "error", "{from_image}: {done}");
    }
    assert_eq!(
        registry.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the internal registry"
    );
}
