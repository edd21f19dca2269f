//! The learning pipeline against a local stand-in for the Anthropic Messages API answering
//! recorded payloads, and its failures: each leaves a status that says what happened and
//! writes nothing else.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use courier_orchestrator::OrchestratorError;
use courier_orchestrator::learnings::{
    ExtractionOutcome, LearningPipeline, LearningsConfig, LlmConfig, active_learnings,
};
use courier_store::{
    LearningCategory, LearningStatus, MessageRole, NewLearning, Project, Sandbox, Store,
};
use courier_tools::Secret;
use support::{Recorded, Reply, StandIn, fixture, say, seeded};

const KEY: &str = "sk-ant-api03-learnings-test-key-WXYZ";

struct World {
    store: Arc<dyn Store>,
    project: Project,
    sandbox: Sandbox,
    llm: StandIn,
    pipeline: LearningPipeline,
}

async fn world(
    llm: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    timeout: Duration,
) -> World {
    let (store, project, sandbox) = seeded("Fix the login").await;
    let llm = StandIn::start(llm).await;
    let mut config = LlmConfig::new(Secret::new(KEY));
    config.base_url = llm.url.clone();
    config.model = "claude-haiku-4-5".into();
    config.timeout = timeout;
    let pipeline = LearningPipeline::new(store.clone(), LearningsConfig::new(config)).unwrap();
    World {
        store,
        project,
        sandbox,
        llm,
        pipeline,
    }
}

impl World {
    async fn transcript(&self) {
        let s = self.store.as_ref();
        say(
            s,
            &self.sandbox,
            MessageRole::User,
            "Fix the login on Safari.",
        )
        .await;
        say(
            s,
            &self.sandbox,
            MessageRole::Assistant,
            "cargo build failed with 'no cached data for this query'; ran cargo sqlx prepare and it built. Traced the bug from web/src/login.rs into auth/src/session.rs.",
        )
        .await;
        say(
            s,
            &self.sandbox,
            MessageRole::User,
            "split this into two commits, imperative subjects please",
        )
        .await;
    }

    async fn status(&self) -> (LearningStatus, Option<String>) {
        let s = self.store.get_sandbox(self.sandbox.id).await.unwrap();
        (s.learning_status, s.learning_error)
    }

    async fn nothing_written(&self, learnings_before: usize) {
        let learnings = self.store.list_learnings(self.project.id).await.unwrap();
        assert_eq!(learnings.len(), learnings_before, "no partial learnings");
        assert!(
            self.store
                .list_learning_versions(self.project.id)
                .await
                .unwrap()
                .is_empty(),
            "no new version"
        );
    }
}

fn answer(name: &'static str) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |_| Reply::json(200, fixture(name))
}

const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn learnings_are_extracted_merged_compiled_and_made_active() {
    let w = world(answer("anthropic/messages_learnings.json"), LONG).await;
    w.transcript().await;
    // Known already, in other words: the answer's first learning merges into it.
    w.store
        .create_learning(NewLearning {
            project_id: w.project.id,
            category: LearningCategory::Gotcha,
            content: "Run cargo sqlx prepare after changing a query or the offline build fails."
                .into(),
            evidence: Some("#8 of an earlier sandbox: the offline build failed".into()),
            source_sandbox_id: None,
        })
        .await
        .unwrap();
    assert_eq!(w.status().await.0, LearningStatus::Pending);

    let outcome = w.pipeline.extract(w.sandbox.id).await.unwrap();
    assert_eq!(
        outcome,
        ExtractionOutcome::Completed {
            added: 2,
            merged: 1,
            version: Some(1)
        }
    );
    assert_eq!(w.status().await, (LearningStatus::Completed, None));

    // The request, as the Messages API expects it.
    let requests = w.llm.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    let body = request.json();
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert!(body["max_tokens"].as_u64().unwrap() > 0);
    assert!(
        body["system"]
            .as_str()
            .unwrap()
            .contains(r#"{"learnings":["#)
    );
    let user = body["messages"][0]["content"].as_str().unwrap();
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(user.contains("Fix the login on Safari."), "{user}");
    assert!(user.contains("Already known"), "{user}");
    // The prompt asks for evidence per learning and the transcript numbers its messages,
    // which evidence may point at.
    let system = body["system"].as_str().unwrap();
    assert!(system.contains(r#""evidence":"#), "{system}");
    assert!(user.contains("(#2)"), "{user}");
    assert!(
        !user.contains("earlier sandbox"),
        "known claims only: {user}"
    );

    // Stored with their evidence and source; the duplicate was not stored again, and the
    // known learning kept its own evidence.
    let learnings = w.store.list_learnings(w.project.id).await.unwrap();
    assert_eq!(learnings.len(), 3);
    let architecture = learnings
        .iter()
        .find(|l| l.category == LearningCategory::Architecture)
        .unwrap();
    assert_eq!(
        architecture.content,
        "The login flow lives in crates/auth; the web crate only renders its results."
    );
    assert_eq!(
        architecture.evidence.as_deref(),
        Some("The agent traced the bug from web/src/login.rs into auth/src/session.rs.")
    );
    assert_eq!(architecture.source_sandbox_id, Some(w.sandbox.id));
    let preference = learnings
        .iter()
        .find(|l| l.category == LearningCategory::Preference)
        .unwrap();
    assert_eq!(
        preference.evidence.as_deref(),
        Some("The user asked: 'split this into two commits, imperative subjects please'.")
    );
    let known = learnings
        .iter()
        .find(|l| l.category == LearningCategory::Gotcha)
        .unwrap();
    assert_eq!(known.source_sandbox_id, None);
    assert_eq!(
        known.evidence.as_deref(),
        Some("#8 of an earlier sandbox: the offline build failed")
    );

    // The active version is what later sandboxes get: gotchas first, no evidence.
    let compiled = active_learnings(w.store.as_ref(), w.project.id)
        .await
        .unwrap()
        .unwrap();
    let gotcha = compiled.find("cargo sqlx prepare").unwrap();
    let arch = compiled.find("crates/auth").unwrap();
    let pref = compiled.find("one commit per logical change").unwrap();
    assert!(gotcha < arch && arch < pref, "{compiled}");
    for l in &learnings {
        let evidence = l.evidence.as_deref().unwrap();
        assert!(!compiled.contains(evidence), "{compiled}");
    }
    let active = w
        .store
        .active_learning_version(w.project.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.version, 1);
}

#[tokio::test]
async fn an_answer_recorded_without_evidence_is_stored_with_none() {
    let w = world(
        answer("anthropic/messages_learnings_no_evidence.json"),
        LONG,
    )
    .await;
    w.transcript().await;
    let outcome = w.pipeline.extract(w.sandbox.id).await.unwrap();
    assert_eq!(
        outcome,
        ExtractionOutcome::Completed {
            added: 2,
            merged: 0,
            version: Some(1)
        }
    );
    let learnings = w.store.list_learnings(w.project.id).await.unwrap();
    let stored: Vec<(&str, Option<&str>)> = learnings
        .iter()
        .map(|l| (l.content.as_str(), l.evidence.as_deref()))
        .collect();
    assert_eq!(
        stored,
        vec![
            (
                "Run `cargo sqlx prepare` after changing a query, or the offline build fails.",
                None
            ),
            (
                "The login flow lives in crates/auth; the web crate only renders its results.",
                Some("#2: traced from web/src/login.rs into auth/src/session.rs")
            ),
        ]
    );
}

#[tokio::test]
async fn the_same_learnings_again_merge_and_make_no_new_version() {
    let w = world(answer("anthropic/messages_learnings.json"), LONG).await;
    w.transcript().await;
    w.pipeline.extract(w.sandbox.id).await.unwrap();
    let again = w.pipeline.extract(w.sandbox.id).await.unwrap();
    assert_eq!(
        again,
        ExtractionOutcome::Completed {
            added: 0,
            merged: 3,
            version: None
        }
    );
    assert_eq!(w.store.list_learnings(w.project.id).await.unwrap().len(), 3);
    assert_eq!(
        w.store
            .list_learning_versions(w.project.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_sandbox_without_messages_is_skipped_without_asking_the_llm() {
    let w = world(answer("anthropic/messages_learnings.json"), LONG).await;
    let outcome = w.pipeline.extract(w.sandbox.id).await.unwrap();
    assert_eq!(outcome, ExtractionOutcome::Skipped);
    assert_eq!(w.status().await, (LearningStatus::Skipped, None));
    assert!(w.llm.requests().is_empty());
    w.nothing_written(0).await;
}

/// Runs an extraction that must fail; returns the stored error after checking the status
/// and that nothing was written.
async fn failed_extraction(w: &World) -> (OrchestratorError, String) {
    w.transcript().await;
    let err = w.pipeline.extract(w.sandbox.id).await.unwrap_err();
    let (status, reason) = w.status().await;
    assert_eq!(status, LearningStatus::Error);
    let reason = reason.expect("the reason is stored");
    assert_eq!(reason, err.to_string());
    assert!(!reason.contains(KEY), "{reason}");
    w.nothing_written(0).await;
    (err, reason)
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_and_writes_nothing() {
    let w = world(answer("anthropic/messages_malformed.json"), LONG).await;
    let (err, reason) = failed_extraction(&w).await;
    assert!(matches!(err, OrchestratorError::LlmMalformed(_)), "{err}");
    assert!(reason.contains("malformed"), "{reason}");
}

#[tokio::test]
async fn a_rate_limit_is_an_error_that_says_when_to_retry() {
    let w = world(
        |_| {
            Reply::json(429, fixture("anthropic/rate_limited_429.json")).header("retry-after", "30")
        },
        LONG,
    )
    .await;
    let (err, reason) = failed_extraction(&w).await;
    assert!(
        matches!(
            err,
            OrchestratorError::LlmApi {
                status: 429,
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(30)
        ),
        "{err:?}"
    );
    assert!(
        reason.contains("429") && reason.contains("rate_limit_error"),
        "{reason}"
    );
    assert!(reason.contains("retry after 30 s"), "{reason}");
}

#[tokio::test]
async fn a_server_error_is_an_error_naming_the_status() {
    let w = world(
        |_| Reply::json(500, fixture("anthropic/api_error_500.json")),
        LONG,
    )
    .await;
    let (_, reason) = failed_extraction(&w).await;
    assert!(
        reason.contains("500") && reason.contains("api_error"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_llm_that_does_not_answer_in_time_is_cut_off() {
    let w = world(
        |_| {
            Reply::json(200, fixture("anthropic/messages_learnings.json"))
                .after(Duration::from_secs(5))
        },
        Duration::from_millis(300),
    )
    .await;
    let (err, reason) = failed_extraction(&w).await;
    assert!(
        matches!(err, OrchestratorError::LlmTimeout { .. }),
        "{err:?}"
    );
    assert!(reason.contains("timed out after 300 ms"), "{reason}");
}

#[tokio::test]
async fn after_a_failure_a_retry_completes() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let w = world(
        move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Reply::json(500, fixture("anthropic/api_error_500.json"))
            } else {
                Reply::json(200, fixture("anthropic/messages_learnings.json"))
            }
        },
        LONG,
    )
    .await;
    failed_extraction(&w).await;
    w.pipeline.extract(w.sandbox.id).await.unwrap();
    assert_eq!(w.status().await, (LearningStatus::Completed, None));
    assert_eq!(w.store.list_learnings(w.project.id).await.unwrap().len(), 3);
}
