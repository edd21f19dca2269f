//! COPY through courier-e2b against a real server: `Templates::upload_files` packs a
//! context directory's files, the build copies them into the template.

use courier_e2b::{BuildRequest, Error, Recipe, Step};

use crate::fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_uploads_copy_files_with_symlinks_kept_or_resolved() {
    let Some(fx) = Fixture::new("sdk_copy").await else {
        return;
    };
    let context = tempfile::tempdir().expect("tempdir");
    let app = context.path().join("app");
    std::fs::create_dir_all(app.join("sub")).unwrap();
    std::fs::write(app.join("main.txt"), "hello\n").unwrap();
    std::fs::write(app.join("sub/deep.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("main.txt", app.join("link")).unwrap();
    // A link out of the context: sent as a link, never the host file's content.
    std::os::unix::fs::symlink("/etc/hostname", app.join("outside")).unwrap();

    let templates = fx.run().client.templates();
    let build = templates
        .request_build(
            &BuildRequest::new("courier-it-sdk-copy")
                .cpu_count(1)
                .memory_mb(512),
        )
        .await
        .expect("request");
    let id = &build.template_id;
    let hash = templates
        .upload_files(id, context.path(), "app", false)
        .await
        .expect("upload");
    assert_eq!(
        templates
            .upload_files(id, context.path(), "app", false)
            .await
            .expect("again"),
        hash,
        "the same files, the same hash"
    );
    let resolved = templates
        .upload_files(id, context.path(), "app/link", true)
        .await
        .expect("upload resolved");
    // What the caller could get wrong: paths out of the context are refused before
    // anything is read or sent.
    for bad in ["../etc", "/etc/passwd", "app/../../x", ""] {
        let err = templates
            .upload_files(id, context.path(), bad, false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{bad}: {err:?}"
        );
    }
    let recipe = Recipe::from_template("base")
        .step(Step::copy("app", "/home/user/app/", hash))
        .step(Step::copy("app/link", "/home/user/resolved.txt", resolved));
    templates
        .start_build(id, &build.build_id, &recipe)
        .await
        .expect("start");
    templates
        .wait(id, &build.build_id, |_| {})
        .await
        .expect("build");
    let sbx = fx.sandbox("courier-it-sdk-copy").await;
    assert_eq!(
        stdout(
            &sbx,
            "cd ~/app && cat main.txt sub/deep.txt && readlink link outside && \
             test -L ~/resolved.txt || cat ~/resolved.txt"
        )
        .await,
        "hello\ndeep\nmain.txt\n/etc/hostname\nhello\n"
    );
    sbx.kill().await.expect("kill");
}
