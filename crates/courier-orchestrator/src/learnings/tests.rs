//! The learnings' tests: answers read, repeats merged, text compiled, transcripts cut.

use chrono::{Duration as Age, Utc};
use courier_store::{Learning, LearningCategory, LearningId, Message, ProjectId, SandboxId};

use super::answer::MAX_FIELD_CHARS;
use super::*;
use crate::OrchestratorError;

fn learning(category: LearningCategory, content: &str, age_s: i64) -> Learning {
    Learning {
        id: LearningId::new(),
        project_id: ProjectId::new(),
        category,
        content: content.into(),
        evidence: Some(format!("#7: the transcript shows that {content}")),
        source_sandbox_id: None,
        created_at: Utc::now() - Age::seconds(age_s),
    }
}

#[test]
fn strict_answers_parse_and_fenced_ones_are_tolerated() {
    let json = r#"{"learnings":[{"category":"gotcha","content":"Run migrations before tests.","evidence":"cargo test failed: no such table"}]}"#;
    let parsed = parse_learnings(json, 20).unwrap();
    assert_eq!(parsed[0].category, LearningCategory::Gotcha);
    assert_eq!(
        parsed[0].evidence.as_deref(),
        Some("cargo test failed: no such table")
    );
    assert_eq!(
        parse_learnings(&format!("```json\n{json}\n```"), 20).unwrap(),
        parsed
    );
    assert!(
        parse_learnings(r#"{"learnings":[]}"#, 20)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn answers_without_evidence_are_read_with_none() {
    // Recorded answers from before evidence was asked for, and models that leave it
    // out, null it or blank it.
    let answer = r#"{"learnings":[
        {"category":"pattern","content":"Tests live next to the code."},
        {"category":"gotcha","content":"Build before testing.","evidence":null},
        {"category":"preference","content":"Short commit subjects.","evidence":"  "},
        {"category":"architecture","content":"The API holds no logic.","evidence":" #3: lib.rs says so "}
    ]}"#;
    let evidence: Vec<Option<String>> = parse_learnings(answer, 20)
        .unwrap()
        .into_iter()
        .map(|l| l.evidence)
        .collect();
    assert_eq!(
        evidence,
        vec![None, None, None, Some("#3: lib.rs says so".to_owned())]
    );
}

#[test]
fn one_bad_entry_rejects_the_whole_answer() {
    let long = "x".repeat(MAX_FIELD_CHARS + 1);
    let long_evidence =
        format!(r#"{{"learnings":[{{"category":"pattern","content":"ok","evidence":"{long}"}}]}}"#);
    for (answer, says) in [
        ("Here are the learnings: ...", "not the required JSON"),
        (
            r#"{"learnings":[{"category":"tip","content":"x","evidence":"y"}]}"#,
            "`tip` is not one of",
        ),
        (
            r#"{"learnings":[{"category":"pattern","content":"ok","evidence":"y"},{"category":"pattern","content":" ","evidence":"y"}]}"#,
            "learning 1: empty content",
        ),
        (
            r#"{"learnings":[{"category":"pattern","evidence":"no claim"}]}"#,
            "content",
        ),
        (
            long_evidence.as_str(),
            "learning 0: evidence longer than 500 characters",
        ),
    ] {
        let err = parse_learnings(answer, 20).unwrap_err();
        assert!(matches!(err, OrchestratorError::LlmMalformed(_)));
        assert!(err.to_string().contains(says), "{answer}: {err}");
    }
    let many = format!(
        r#"{{"learnings":[{}]}}"#,
        [r#"{"category":"pattern","content":"a","evidence":"b"}"#; 3].join(",")
    );
    assert!(parse_learnings(&many, 2).is_err());
}

fn extracted(category: LearningCategory, content: &str, evidence: &str) -> ExtractedLearning {
    ExtractedLearning {
        category,
        content: content.into(),
        evidence: Some(evidence.into()).filter(|e: &String| !e.is_empty()),
    }
}

#[test]
fn rephrased_duplicates_merge_and_new_insights_do_not() {
    let existing = vec![learning(
        LearningCategory::Gotcha,
        "Run `sqlx migrate run` before the tests.",
        10,
    )];
    let batch = vec![
        extracted(
            LearningCategory::Gotcha,
            "Run sqlx migrate run before the tests",
            "again",
        ),
        extracted(
            LearningCategory::Architecture,
            "The API crate holds no business logic.",
            "#2: README",
        ),
        extracted(
            LearningCategory::Architecture,
            "The api crate holds no business logic",
            "#9: routes.rs only calls the orchestrator",
        ),
        extracted(
            LearningCategory::Architecture,
            "The API crate holds no business logic",
            "",
        ),
    ];
    let (fresh, merged) = merge_new(&existing, batch, 0.75);
    assert_eq!(merged, 3);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].category, LearningCategory::Architecture);
    // Same-batch repeats add their evidence; the stored learning's own is untouched
    // (the repeat's evidence points into another transcript).
    assert_eq!(
        fresh[0].evidence.as_deref(),
        Some("#2: README; #9: routes.rs only calls the orchestrator")
    );
}

#[test]
fn merged_evidence_never_exceeds_the_field_limit() {
    let a = "a".repeat(300);
    let b = "b".repeat(300);
    assert_eq!(
        merge_evidence(Some(a.clone()), Some(b.clone())),
        Some(a.clone())
    );
    assert_eq!(merge_evidence(None, None), None);
    assert_eq!(merge_evidence(Some(a.clone()), None), Some(a));
    assert_eq!(
        merge_evidence(Some("#4".into()), Some("#4".into())),
        Some("#4".into())
    );
}

#[test]
fn compiled_text_puts_gotchas_first_omits_evidence_and_fits_the_budget() {
    let learnings = vec![
        learning(LearningCategory::Preference, "Prefer small commits.", 1),
        learning(LearningCategory::Gotcha, "Old gotcha.", 100),
        learning(LearningCategory::Gotcha, "New gotcha.", 1),
        learning(LearningCategory::Architecture, &"long ".repeat(100), 1),
    ];
    assert!(learnings.iter().all(|l| l.evidence.is_some()));
    let text = compile(&learnings, 10_000);
    let new = text.find("New gotcha").unwrap();
    let old = text.find("Old gotcha").unwrap();
    let pref = text.find("small commits").unwrap();
    assert!(new < old && old < pref, "{text}");
    assert!(
        !text.contains("#7") && !text.contains("transcript shows"),
        "{text}"
    );
    for budget in [0, 50, 150, 200, 400, 700] {
        let text = compile(&learnings, budget);
        assert!(text.chars().count() <= budget, "{budget}: {text}");
    }
    // A tight budget drops the long entry but keeps the smaller ones after it.
    let text = compile(&learnings, 220);
    assert!(
        text.contains("small commits") && !text.contains("long long"),
        "{text}"
    );
}

#[test]
fn long_transcripts_keep_the_task_and_the_latest_messages() {
    let sandbox = SandboxId::new();
    let messages: Vec<Message> = (1..=50)
        .map(|seq| Message {
            id: courier_store::MessageId::new(),
            sandbox_id: sandbox,
            seq,
            role: if seq % 2 == 1 {
                courier_store::MessageRole::User
            } else {
                courier_store::MessageRole::Assistant
            },
            content: format!("message number {seq} {}", "x".repeat(80)),
            status: courier_store::MessageStatus::Completed,
            raw_log: String::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
        .collect();
    let full = transcript(&messages, 1_000_000);
    assert!(full.contains("message number 1 ") && full.contains("message number 50 "));
    let cut = transcript(&messages, 1_000);
    assert!(cut.chars().count() <= 1_100, "{}", cut.chars().count());
    assert!(cut.contains("message number 1 ") && cut.contains("message number 50 "));
    assert!(cut.contains("earlier messages left out"));
}

#[test]
fn the_api_key_never_shows_in_debug_output() {
    let config = LlmConfig::new(Secret::new("sk-ant-api03-verysecret-9876"));
    let shown = format!("{:?}", LearningsConfig::new(config));
    assert!(!shown.contains("verysecret"), "{shown}");
}
