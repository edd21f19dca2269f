//! Templates built from recipes through E2B's template build API (the requests the
//! official SDKs' `Template.build` sends), against real sandboxes: the build runs its
//! steps in a build sandbox, the captured layer is used by sandboxes of the new
//! template, failures are reported with the step, templates survive a restart.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. Waits are generous polls, never timed assertions.

use std::path::Path;

use courier_e2b::Sandbox;
use serde_json::{Value, json};

#[path = "templates/fixture.rs"]
mod fixture;
#[path = "templates/images.rs"]
mod images;
#[path = "templates/sandboxes.rs"]
mod sandboxes;
#[path = "templates/sdk_copy.rs"]
mod sdk_copy;
mod support;
#[path = "templates/tags.rs"]
mod tags;
#[path = "templates/updates.rs"]
mod updates;

use fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipe_build_captures_writes_deletions_and_env_and_templates_stack() {
    let Some(fx) = Fixture::new("recipe_build").await else {
        return;
    };
    // The deleted files must exist in base for the deletion check to mean anything.
    let base = fx.sandbox("base").await;
    assert_eq!(
        stdout(
            &base,
            &format!("test -f {BASE_FILE} && test -f {USR_FILE} && echo both")
        )
        .await,
        "both\n",
        "the test expects {BASE_FILE} and {USR_FILE} in base"
    );
    base.kill().await.expect("kill base sandbox");

    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-tpl",
            json!({
                "fromTemplate": "base",
                "force": false,
                "steps": [
                    {"type": "RUN", "args": ["mkdir -p /opt && echo root-file > /opt/marker && id -un", "root"], "force": false},
                    {"type": "RUN", "args": ["printf '#!/bin/sh\\necho tool-ok\\n' > /usr/local/bin/courier-tool && chmod +x /usr/local/bin/courier-tool", "root"], "force": false},
                    {"type": "RUN", "args": ["echo user-file > ~/hello.txt && echo \"default user: $(id -un)\""], "force": false},
                    {"type": "RUN", "args": [format!("rm {BASE_FILE} {USR_FILE}"), "root"], "force": false},
                    {"type": "ENV", "args": ["COURIER_TPL_GREETING", "hi from template", "SECOND", "2"], "force": false},
                    {"type": "RUN", "args": ["echo \"env=$COURIER_TPL_GREETING\"; echo to-stderr >&2"], "force": false},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    let lines = messages(&entries);
    assert_eq!(done["status"], "ready", "{done}\n{lines:#?}");
    assert!(done.get("reason").is_none(), "{done}");
    for expected in [
        "root",
        "default user: user",
        "env=hi from template",
        "to-stderr",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:#?}"
        );
    }
    // Step output is tagged with its step number, 1-based like the SDK's stack traces.
    let env_line = entries
        .iter()
        .find(|e| e["message"] == "env=hi from template")
        .unwrap();
    assert_eq!(env_line["step"], "6");
    assert!(env_line["timestamp"].is_string() && env_line["level"] == "info");

    // Listed, with its limits, and found by alias.
    let (status, list) = fx.call(reqwest::Method::GET, "/templates", None).await;
    assert_eq!(status, 200);
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap_or_else(|| panic!("{template_id} not listed: {list}"));
    assert_eq!(item["buildStatus"], "ready");
    assert_eq!(item["buildID"], build_id.as_str());
    assert_eq!(item["aliases"], json!(["courier-it-tpl"]));
    assert_eq!(
        (item["cpuCount"].as_u64(), item["memoryMB"].as_u64()),
        (Some(1), Some(512))
    );
    let (status, alias) = fx
        .call(
            reqwest::Method::GET,
            "/templates/aliases/courier-it-tpl",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(alias["templateID"], template_id.as_str());
    let (status, _) = fx
        .call(
            reqwest::Method::GET,
            "/templates/aliases/no-such-template",
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A sandbox of the new template has the writes, not the deleted files, and the env.
    let sbx = fx.sandbox("courier-it-tpl").await;
    assert_eq!(sbx.get_info().await.unwrap().template_id, template_id);
    assert_eq!(
        stdout(&sbx, "cat /opt/marker; stat -c %U /opt/marker").await,
        "root-file\nroot\n"
    );
    assert_eq!(
        stdout(
            &sbx,
            "cat /home/user/hello.txt; stat -c %U /home/user/hello.txt"
        )
        .await,
        "user-file\nuser\n"
    );
    assert_eq!(stdout(&sbx, "courier-tool").await, "tool-ok\n");
    assert_eq!(
        stdout(&sbx, "echo \"$COURIER_TPL_GREETING/$SECOND\"; whoami").await,
        "hi from template/2\nuser\n"
    );
    assert_eq!(
        stdout(
            &sbx,
            &format!(
                "for f in {BASE_FILE} {USR_FILE}; do test -e $f && echo present || echo gone; done"
            )
        )
        .await,
        "gone\ngone\n"
    );
    // The host's /usr is untouched.
    assert!(Path::new(USR_FILE).exists());

    // A template built on the built one stacks on its layers.
    let (child_id, child_build, status, body) = fx
        .build(
            "courier-it-child",
            json!({
                "fromTemplate": "courier-it-tpl",
                "steps": [
                    {"type": "WORKDIR", "args": ["/srv"]},
                    // Relative: continues from /srv.
                    {"type": "WORKDIR", "args": ["app"]},
                    {"type": "RUN", "args": ["cat /opt/marker > child.txt; echo \"$COURIER_TPL_GREETING\" >> child.txt"]},
                    {"type": "USER", "args": ["root"]},
                    {"type": "RUN", "args": ["id -un > /opt/built-as"]},
                    {"type": "USER", "args": ["user"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&child_id, &child_build).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    let child = fx.sandbox(&child_id).await;
    assert_eq!(
        stdout(
            &child,
            "pwd; whoami; cat child.txt /opt/built-as; courier-tool; \
             test -e /etc/debian_version || echo gone"
        )
        .await,
        "/srv/app\nuser\nroot-file\nhi from template\nroot\ntool-ok\ngone\n"
    );

    // Delete: refused for base, while sandboxes run, while a child stacks on it.
    let (status, body) = fx
        .call(reqwest::Method::DELETE, "/templates/base", None)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{child_id}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("sandboxes"),
        "{body}"
    );
    child.kill().await.unwrap();
    sbx.kill().await.unwrap();
    let (status, body) = fx
        .call(reqwest::Method::DELETE, "/templates/courier-it-tpl", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(&child_id),
        "{body}"
    );
    let (status, _) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{child_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = fx
        .call(
            reqwest::Method::DELETE,
            &format!("/templates/{template_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = fx
        .call(
            reqwest::Method::GET,
            "/templates/aliases/courier-it-tpl",
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(!fx.data_dir().join("layers").join(&template_id).exists());
    assert!(!fx.data_dir().join("templates").join(&template_id).exists());
    // No build sandbox is left behind.
    assert!(fx.run().server.list().is_empty());
}

/// What the agents' tool templates do: `npm install -g` of a CLI as root, from the npm
/// registry (a public address the egress policy lets build sandboxes reach), then the CLI
/// runs in a sandbox of the template as `user`. Runs under the suites' isolation, so CI
/// checks it for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_installs_an_npm_cli_as_root() {
    let Some(fx) = Fixture::new("npm_cli").await else {
        return;
    };
    if courier_sandboxd::runtime::network::find_slirp4netns().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "slirp4netns is missing (scripts/setup-machine.sh installs it)"
        );
        eprintln!("skipping: build sandboxes need slirp4netns to reach npm");
        return;
    }
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-npm-cli",
            json!({
                "fromTemplate": "base",
                "steps": [{"type": "RUN", "args": [
                    "npm install -g --no-audit --no-fund semver@7.6.3 && semver 7.6.3",
                    "root"
                ]}],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}\n{:#?}", messages(&entries));
    assert!(
        messages(&entries).iter().any(|l| l == "7.6.3"),
        "{:#?}",
        messages(&entries)
    );
    let sbx = fx.sandbox("courier-it-npm-cli").await;
    assert_eq!(
        stdout(
            &sbx,
            "semver -r '>=7' 7.6.3; stat -c %U $(command -v semver)"
        )
        .await,
        "7.6.3\nroot\n"
    );
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_step_and_unsupported_recipes_are_reported() {
    let Some(fx) = Fixture::new("failing_step").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-fail",
            json!({
                "fromTemplate": "base",
                "steps": [
                    {"type": "RUN", "args": ["echo first-ok"]},
                    {"type": "RUN", "args": ["echo about to fail; echo oops >&2; exit 7"]},
                    {"type": "RUN", "args": ["echo never-runs"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, entries) = fx.wait_build(&template_id, &build_id).await;
    let lines = messages(&entries);
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "2", "{done}");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(
        reason.contains("exit code 7") && reason.contains("oops"),
        "{reason}"
    );
    assert!(lines.iter().any(|l| l == "about to fail"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "first-ok"), "{lines:#?}");
    assert!(!lines.iter().any(|l| l == "never-runs"), "{lines:#?}");
    assert!(entries.iter().any(|e| e["level"] == "error"), "{lines:#?}");
    // Not usable, listed as failed, no layer, no build sandbox left.
    let create = Sandbox::builder()
        .template("courier-it-fail")
        .create(&fx.run().client)
        .await;
    assert!(
        create.is_err(),
        "a failed template must not start sandboxes"
    );
    let (_, list) = fx.call(reqwest::Method::GET, "/templates", None).await;
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap();
    assert_eq!(item["buildStatus"], "error");
    assert!(
        !fx.data_dir()
            .join("layers")
            .join(&template_id)
            .join(&build_id)
            .exists()
    );
    assert!(fx.run().server.list().is_empty());

    // A USER step naming nobody fails at that step.
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-nobody",
            json!({"fromTemplate": "base", "steps": [{"type": "USER", "args": ["nobody-here"]}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, _) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["reason"]["step"], "1");
    let reason = done["reason"]["message"].as_str().unwrap();
    assert!(reason.contains("no user nobody-here"), "{reason}");

    // A COPY whose files were never uploaded: 400 naming the step; the build fails
    // instead of waiting forever.
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-copy",
            json!({
                "fromTemplate": "base",
                "steps": [{"type": "COPY", "args": ["src", "/dst", "", ""], "filesHash": "abc"}],
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("step 1 (COPY)") && message.contains("not uploaded"),
        "{message}"
    );
    let (done, _) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "error");
    let (_, _, status, body) = fx
        .build(
            "courier-it-add",
            json!({"fromTemplate": "base", "steps": [{"type": "ADD", "args": ["x", "/x"]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("RUN, ENV, WORKDIR, USER, COPY"),
        "{message}"
    );
    // Images are pulled (tests/templates/images.rs); a malformed reference and registry
    // credentials are refused by name.
    let (_, _, status, body) = fx
        .build(
            "courier-it-image",
            json!({"fromImage": "../../etc", "steps": []}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("fromImage"),
        "{body}"
    );
    let (_, _, status, body) = fx
        .build(
            "courier-it-image",
            json!({"fromImage": "org/private", "fromImageRegistry": {"type": "registry", "username": "u", "password": "p"}, "steps": []}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("fromImageRegistry"), "{body}");
    assert!(
        !message.contains("\"p\""),
        "credentials are not echoed: {body}"
    );
    let (_, _, status, body) = fx
        .build(
            "courier-it-missing",
            json!({"fromTemplate": "no-such-parent", "steps": []}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            "/v3/templates",
            Some(json!({"name": "Bad Name"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_survive_a_restart_and_interrupted_builds_fail() {
    let Some(mut fx) = Fixture::new("restart").await else {
        return;
    };
    let (template_id, build_id, status, body) = fx
        .build(
            "courier-it-restart",
            json!({
                "fromTemplate": "base",
                "steps": [
                    {"type": "RUN", "args": ["echo persisted > /home/user/p.txt"]},
                    {"type": "ENV", "args": ["KEPT", "yes"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (done, before) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready", "{done}");
    // A second build of the same name: same template, new build, left waiting.
    let (second_template, second_build) = fx
        .request_build(json!({"name": "courier-it-restart"}))
        .await;
    assert_eq!(second_template, template_id);
    assert_ne!(second_build, build_id);

    fx.stop().await;
    // Make the second build look like one a crash interrupted mid-way: `building`, with
    // a half-made layer.
    let build_json = fx
        .data_dir()
        .join("templates")
        .join(&template_id)
        .join("builds")
        .join(format!("{second_build}.json"));
    let mut record: Value = serde_json::from_slice(&std::fs::read(&build_json).unwrap()).unwrap();
    record["status"] = json!("building");
    std::fs::write(&build_json, serde_json::to_vec(&record).unwrap()).unwrap();
    let half = fx
        .data_dir()
        .join("layers")
        .join(&template_id)
        .join(format!("{second_build}.partial"));
    std::fs::create_dir_all(half.join("rootfs")).unwrap();
    fx.start().await;

    let (done, after) = fx.wait_build(&template_id, &build_id).await;
    assert_eq!(done["status"], "ready");
    assert_eq!(
        messages(&after),
        messages(&before),
        "the log is kept on disk"
    );
    let (done, log) = fx.wait_build(&template_id, &second_build).await;
    assert_eq!(done["status"], "error");
    assert_eq!(done["reason"]["message"], "interrupted by a server restart");
    assert!(
        messages(&log)
            .iter()
            .any(|l| l.contains("interrupted by a server restart"))
    );
    assert!(!half.exists(), "the half-made layer is removed");

    // The template still starts sandboxes from its ready build.
    let (_, list) = fx.call(reqwest::Method::GET, "/templates", None).await;
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["buildStatus"], "ready", "{item}");
    let sbx = fx.sandbox("courier-it-restart").await;
    assert_eq!(
        stdout(&sbx, "cat /home/user/p.txt; echo $KEPT").await,
        "persisted\nyes\n"
    );
    sbx.kill().await.unwrap();
}
