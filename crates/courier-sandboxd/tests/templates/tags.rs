//! Template tags, template info and build logs through courier-e2b's `Templates` against a
//! real server: a tag names one ready build, `name:tag` starts sandboxes from that build,
//! tags survive a restart, and a removed tag's build loses its layers once nothing else
//! names or runs it.

use courier_e2b::{BuildRequest, Error, Recipe, Step};

use crate::fixture::*;
use crate::support;

/// Builds `name` (`name:tag`) through the SDK with `/opt/version` = `version`; returns
/// (templateID, buildID).
async fn build_tagged(fx: &Fixture, name: &str, extra: &[&str], version: &str) -> (String, String) {
    let templates = fx.run().client.templates();
    let mut request = BuildRequest::new(name).cpu_count(1).memory_mb(512);
    for tag in extra {
        request = request.tag(*tag);
    }
    let build = templates.request_build(&request).await.expect("request");
    let recipe = Recipe::from_template("base").step(Step::run_as(
        format!("echo {version} > /opt/version"),
        "root",
    ));
    templates
        .start_build(&build.template_id, &build.build_id, &recipe)
        .await
        .expect("start");
    templates
        .wait(&build.template_id, &build.build_id, |_| {})
        .await
        .expect("build ready");
    (build.template_id, build.build_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_name_builds_and_sandboxes_start_from_the_tagged_one() {
    let Some(mut fx) = Fixture::new("tags").await else {
        return;
    };
    let (template_id, first) = build_tagged(&fx, "courier-it-tags:v1", &[], "one").await;
    let (same, second) = build_tagged(&fx, "courier-it-tags:v2", &["beta"], "two").await;
    assert_eq!(
        same, template_id,
        "a name:tag build is a build of the same template"
    );
    let templates = fx.run().client.templates();

    let mut tags: Vec<(String, String)> = templates
        .tags("courier-it-tags")
        .await
        .expect("tags")
        .into_iter()
        .map(|t| (t.tag, t.build_id))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("beta".to_owned(), second.clone()),
            ("v1".to_owned(), first.clone()),
            ("v2".to_owned(), second.clone()),
        ]
    );
    // The same list by id.
    assert_eq!(templates.tags(&template_id).await.expect("by id").len(), 3);

    // `name:tag` starts from the tagged build, the bare name from the newest.
    for (name, expected) in [
        ("courier-it-tags:v1", "one\n"),
        ("courier-it-tags:v2", "two\n"),
        ("courier-it-tags", "two\n"),
    ] {
        let sbx = fx.sandbox(name).await;
        assert_eq!(stdout(&sbx, "cat /opt/version").await, expected, "{name}");
        sbx.kill().await.expect("kill");
    }

    // Assigning: the target's build gets the tags (bare in the answer, whichever way
    // they were given).
    let assigned = templates
        .assign_tags("courier-it-tags:v1", &["stable", "courier-it-tags:lts"])
        .await
        .expect("assign");
    assert_eq!(assigned.build_id, first);
    assert_eq!(assigned.tags, ["stable", "lts"]);
    let sbx = fx.sandbox("courier-it-tags:stable").await;
    assert_eq!(stdout(&sbx, "cat /opt/version").await, "one\n");
    sbx.kill().await.expect("kill");

    // Refused, naming the problem: an unknown source tag (404), malformed tags and a
    // tag naming another template (400). An API-key holder cannot point its tags into
    // another template's builds, nor smuggle a path into a tag.
    let err = templates
        .assign_tags("courier-it-tags:nosuch", &["x"])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    for bad in [
        ":invalid-tag",
        "courier-it-tags:",
        "other-template:x",
        "../../etc",
        "a/b",
    ] {
        let err = templates
            .assign_tags("courier-it-tags:v1", &[bad])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("tags"), "{bad}: {err}");
    }
    let err = templates.assign_tags("base", &["mine"]).await.unwrap_err();
    assert!(err.to_string().contains("base"), "{err}");
    let err = templates
        .assign_tags("courier-no-such-template:v1", &["x"])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // Template info: both builds, newest first; build logs by cursor.
    let info = templates.get("courier-it-tags").await.expect("info");
    assert_eq!(info.template_id, template_id);
    assert_eq!(info.names, ["courier-it-tags"]);
    let builds: Vec<&str> = info.builds.iter().map(|b| b.build_id.as_str()).collect();
    assert_eq!(builds, [second.as_str(), first.as_str()]);
    assert!(info.builds.iter().all(|b| b.finished_at.is_some()));
    let logs = templates
        .build_logs(&template_id, &first, 0, 100)
        .await
        .expect("logs")
        .logs;
    assert!(
        logs.iter().any(|e| e.message.contains("template ready")),
        "{logs:#?}"
    );
    let last = logs.last().expect("some log").timestamp.timestamp_millis() as u64;
    let tail = templates
        .build_logs(&template_id, &first, last + 1, 100)
        .await
        .expect("logs after the end");
    assert!(tail.logs.is_empty(), "{tail:?}");
    let one = templates
        .build_logs(&template_id, &first, 0, 1)
        .await
        .expect("limit");
    assert_eq!(one.logs.len(), 1);
    let err = templates
        .build_logs(&template_id, "no-such-build", 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // Tags survive a restart.
    fx.stop().await;
    fx.start().await;
    let templates = fx.run().client.templates();
    assert_eq!(
        templates.tags("courier-it-tags").await.expect("tags").len(),
        5
    );
    let sbx = fx.sandbox("courier-it-tags:lts").await;
    assert_eq!(stdout(&sbx, "cat /opt/version").await, "one\n");
    sbx.kill().await.expect("kill");
    // Its overlay uses the layer until the kill's cleanup (behind the answer) ends.
    fx.run().server.finish_cleanups().await;
    // Under gVisor the create started a warm spare of the tagged build: let it finish
    // starting, so the tag removal below finds it (and drops it) rather than racing it.
    if support::isolation() == courier_sandboxd::runtime::Isolation::Gvisor {
        support::next_warm(&fx.run().server, &[]).await;
    }

    // Removing: all named tags must exist, else nothing is removed.
    let err = templates
        .remove_tags("courier-it-tags", &["v1", "nosuch"])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        templates.tags("courier-it-tags").await.expect("tags").len(),
        5
    );
    // Once no tag names the first build, its layer goes (it is not current and no
    // sandbox runs from it), and `name:v1` no longer resolves.
    let first_layer = fx.data_dir().join("layers").join(&template_id).join(&first);
    assert!(first_layer.exists());
    templates
        .remove_tags("courier-it-tags", &["v1", "stable"])
        .await
        .expect("remove some");
    assert!(first_layer.exists(), "`lts` still names it");
    templates
        .remove_tags("courier-it-tags", &["lts"])
        .await
        .expect("remove the last");
    assert!(!first_layer.exists(), "its layer is collected");
    let left: Vec<String> = templates
        .tags("courier-it-tags")
        .await
        .expect("tags")
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(left, ["beta", "v2"]);
    let err = courier_e2b::Sandbox::builder()
        .template("courier-it-tags:v1")
        .create(&fx.run().client)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}
