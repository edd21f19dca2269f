//! Learnings: what an agent found out, kept and handed to the project's next sandboxes.
//!
//! After a sandbox ends, [`LearningPipeline::extract`] reads its transcript, asks an LLM
//! (the Anthropic Messages API) for learnings — patterns, preferences, gotchas and
//! architectural insights, each with its evidence — in the strict JSON format of
//! [`SYSTEM_PROMPT`], merges those that repeat an existing learning, and compiles the
//! project's learnings into a new active [`LearningVersion`](courier_store::LearningVersion)
//! within a size budget. [`active_learnings`] is what the create path injects into later
//! sandboxes.
//!
//! A learning's evidence (a short quote from its source sandbox's transcript, or a pointer
//! such as `#12`, the message number) is stored next to the claim in
//! [`Learning::evidence`], for the people who review learnings; agents get the claims only
//! (see [`compile`]).
//!
//! The sandbox's extraction status moves `pending` → `running` → `completed`, `skipped`
//! (no messages) or `error` (with the reason). Every LLM answer is checked in full before
//! anything is written, so a failed extraction adds no learning and no version.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use courier_store::{
    Learning, LearningCategory, LearningId, LearningStatus, Message, NewLearning, ProjectId,
    SandboxId, Store,
};
use courier_tools::Secret;
use serde::{Deserialize, Serialize};

use crate::{OrchestratorError, Result};

/// Anthropic's API.
pub const DEFAULT_LLM_BASE_URL: &str = "https://api.anthropic.com";
/// The model asked by default: balanced quality and cost for reading transcripts.
pub const DEFAULT_LLM_MODEL: &str = "claude-sonnet-4-6";
/// The Messages API version this client speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Longest claim or evidence accepted from the LLM; longer ones are not "one sentence".
const MAX_FIELD_CHARS: usize = 500;
/// Page size when reading a transcript.
const MESSAGE_PAGE: u32 = 200;

/// The instructions sent with every extraction: the strict answer format is defined here.
pub const SYSTEM_PROMPT: &str = r#"You read the transcript of an AI coding agent's session on a software project and extract durable learnings that would help a future agent working on the same project.

Categories:
- "pattern": a convention the codebase follows (naming, structure, testing style).
- "preference": something the user asked for or corrected that reflects their taste.
- "gotcha": a trap that cost time (a failing command, a surprising behaviour) and how to avoid it.
- "architecture": how the system is organised (components, boundaries, data flow).

Only keep what is specific to this project and still true after the session. Skip one-off task details.

Answer with exactly one JSON object and nothing else, in this format:
{"learnings":[{"category":"pattern|preference|gotcha|architecture","content":"one sentence, at most 300 characters, written as advice","evidence":"a short quote from the transcript that shows it, or a pointer to where it shows (the message number, e.g. #12, and what happened there), at most 300 characters"}]}

Every learning must have all three fields. Answer {"learnings":[]} when there is nothing worth keeping."#;

/// How to reach the LLM API. The key is a [`Secret`]: never logged or printed.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// API base URL ([`DEFAULT_LLM_BASE_URL`] or a stand-in).
    pub base_url: String,
    /// Model id.
    pub model: String,
    /// The API key, sent as `x-api-key`.
    pub api_key: Secret,
    /// How long one request may take.
    pub timeout: Duration,
    /// Longest answer, in tokens.
    pub max_tokens: u32,
}

impl LlmConfig {
    /// The defaults with `api_key`: Anthropic's API, [`DEFAULT_LLM_MODEL`], 120 s,
    /// 4096 tokens.
    pub fn new(api_key: Secret) -> Self {
        LlmConfig {
            base_url: DEFAULT_LLM_BASE_URL.to_owned(),
            model: DEFAULT_LLM_MODEL.to_owned(),
            api_key,
            timeout: Duration::from_secs(120),
            max_tokens: 4096,
        }
    }
}

/// How extraction and compiling behave.
#[derive(Debug, Clone)]
pub struct LearningsConfig {
    /// The LLM.
    pub llm: LlmConfig,
    /// Longest compiled text, in characters (about a quarter as many tokens).
    pub compiled_budget: usize,
    /// Longest transcript sent to the LLM, in characters.
    pub transcript_budget: usize,
    /// Word-set similarity (0–1) at or above which two learnings are the same.
    pub similarity_threshold: f64,
    /// Most learnings accepted from one sandbox.
    pub max_per_sandbox: usize,
}

impl LearningsConfig {
    /// The defaults: 8 000 characters compiled, 120 000 of transcript, similarity 0.75,
    /// at most 20 learnings per sandbox.
    pub fn new(llm: LlmConfig) -> Self {
        LearningsConfig {
            llm,
            compiled_budget: 8_000,
            transcript_budget: 120_000,
            similarity_threshold: 0.75,
            max_per_sandbox: 20,
        }
    }
}

/// One learning as the LLM reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedLearning {
    /// Kind.
    pub category: LearningCategory,
    /// The advice, one sentence.
    pub content: String,
    /// What in the transcript shows it: a short quote or a pointer (`#12`). `None` when
    /// the answer gave none (answers recorded before evidence was asked for, or a model
    /// that left it out).
    pub evidence: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    learnings: Vec<RawLearning>,
}

#[derive(Deserialize)]
struct RawLearning {
    category: String,
    content: String,
    // Missing or null: tolerated (see `ExtractedLearning::evidence`).
    #[serde(default)]
    evidence: Option<String>,
}

/// Reads the LLM's answer in the format of [`SYSTEM_PROMPT`]. One bad entry rejects the
/// whole answer, so a malformed answer never yields some learnings and not others.
///
/// `evidence` may be missing, `null` or blank (read as `None`); when given it is held to
/// the same length limit as `content`.
///
/// A Markdown code fence around the JSON is tolerated (models add one despite being told
/// not to); anything else is not.
pub fn parse_learnings(text: &str, max: usize) -> Result<Vec<ExtractedLearning>> {
    let malformed = |m: String| OrchestratorError::LlmMalformed(m);
    let mut body = text.trim();
    if let Some(rest) = body.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        body = rest.strip_suffix("```").unwrap_or(rest).trim();
    }
    let answer: Answer = serde_json::from_str(body)
        .map_err(|e| malformed(format!("not the required JSON object ({e})")))?;
    if answer.learnings.len() > max {
        return Err(malformed(format!(
            "{} learnings, at most {max} allowed",
            answer.learnings.len()
        )));
    }
    answer
        .learnings
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let category = LearningCategory::parse_field(raw.category.trim(), "category")
                .map_err(|e| malformed(format!("learning {i}: {e}")))?;
            let content = raw.content.trim().to_owned();
            if content.is_empty() {
                return Err(malformed(format!("learning {i}: empty content")));
            }
            let evidence = raw
                .evidence
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty());
            for (field, value) in [("content", Some(&content)), ("evidence", evidence.as_ref())] {
                if value.is_some_and(|v| v.chars().count() > MAX_FIELD_CHARS) {
                    return Err(malformed(format!(
                        "learning {i}: {field} longer than {MAX_FIELD_CHARS} characters"
                    )));
                }
            }
            Ok(ExtractedLearning {
                category,
                content,
                evidence,
            })
        })
        .collect()
}

fn words(text: &str) -> BTreeSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How alike two learnings read, from 0 to 1: the Dice coefficient of their lowercased
/// word sets (punctuation and case ignored, so rephrasings with the same words match).
///
/// ```
/// use courier_orchestrator::learnings::similarity;
/// assert_eq!(similarity("Run `cargo fmt` first.", "run cargo fmt first"), 1.0);
/// assert!(similarity("Use sqlx for SQL", "Deploy with Helm") < 0.2);
/// ```
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(&b).count();
    2.0 * shared as f64 / (a.len() + b.len()) as f64
}

/// Which extracted learnings are new: those not similar (at `threshold`) to an existing
/// learning's claim or to an earlier one of the same batch. Returns the new ones and how
/// many merged into what was already known.
///
/// Evidence: a learning that repeats an earlier one of the same batch adds its evidence
/// to that one's (both point into the same transcript, so together they show more; see
/// [`merge_evidence`]). A learning that repeats a stored one is dropped with its
/// evidence: the stored learning's evidence points into the transcript of its own source
/// sandbox, and evidence from another transcript next to it would point at the wrong
/// place.
pub fn merge_new(
    existing: &[Learning],
    extracted: Vec<ExtractedLearning>,
    threshold: f64,
) -> (Vec<ExtractedLearning>, usize) {
    let mut fresh: Vec<ExtractedLearning> = Vec::new();
    let mut merged = 0;
    for learning in extracted {
        let similar = |claim: &str| similarity(claim, &learning.content) >= threshold;
        if existing.iter().any(|l| similar(&l.content)) {
            merged += 1;
        } else if let Some(earlier) = fresh.iter_mut().find(|f| similar(&f.content)) {
            earlier.evidence = merge_evidence(earlier.evidence.take(), learning.evidence);
            merged += 1;
        } else {
            fresh.push(learning);
        }
    }
    (fresh, merged)
}

/// The evidence of two learnings merged into one: both, `; `-separated, when they differ
/// and fit in the length limit together; otherwise the first (the second when the first
/// has none). Never longer than the longer of the two or the limit.
///
/// ```
/// use courier_orchestrator::learnings::merge_evidence;
/// let e = |s: &str| Some(s.to_owned());
/// assert_eq!(merge_evidence(e("#3"), e("#9")), e("#3; #9"));
/// assert_eq!(merge_evidence(None, e("#9")), e("#9"));
/// assert_eq!(merge_evidence(e("#3: x"), e("#3")), e("#3: x"));
/// ```
pub fn merge_evidence(first: Option<String>, second: Option<String>) -> Option<String> {
    match (first, second) {
        (Some(a), Some(b)) => {
            if a.contains(b.as_str()) {
                Some(a)
            } else if b.contains(a.as_str()) {
                Some(b)
            } else if a.chars().count() + 2 + b.chars().count() <= MAX_FIELD_CHARS {
                Some(format!("{a}; {b}"))
            } else {
                Some(a)
            }
        }
        (a, b) => a.or(b),
    }
}

fn category_rank(category: LearningCategory) -> u8 {
    // Gotchas save the most time (they prevent repeating a mistake), then the map of the
    // system, then conventions, then taste.
    match category {
        LearningCategory::Gotcha => 0,
        LearningCategory::Architecture => 1,
        LearningCategory::Pattern => 2,
        LearningCategory::Preference => 3,
    }
}

/// The compiled text agents receive: a header, then one line per learning's claim, most
/// valuable first (gotchas, architecture, patterns, preferences; newer before older
/// within each), leaving out whatever would exceed `budget` characters. Never longer than
/// `budget`.
///
/// Evidence is left out on purpose: it quotes or points into transcripts of earlier
/// sandboxes that a new agent cannot open, so it would spend the budget (about three
/// times the characters per learning) on context the agent cannot use, and push
/// learnings out of the text. It stays in the store for people reviewing learnings.
pub fn compile(learnings: &[Learning], budget: usize) -> String {
    const HEADER: &str = "# Project learnings\n\nLessons from earlier sandboxes on this project, most important first.\n\n";
    let mut ordered: Vec<&Learning> = learnings.iter().collect();
    ordered.sort_by(|a, b| {
        category_rank(a.category)
            .cmp(&category_rank(b.category))
            .then(b.created_at.cmp(&a.created_at))
    });
    let mut out = String::new();
    let mut used = HEADER.chars().count();
    if used > budget {
        return out;
    }
    out.push_str(HEADER);
    for learning in ordered {
        let line = format!("- [{}] {}\n", learning.category, learning.content.trim());
        let len = line.chars().count();
        if used + len <= budget {
            out.push_str(&line);
            used += len;
        }
    }
    out
}

/// The project's active compiled learnings, which the create path gives new sandboxes.
pub async fn active_learnings(store: &dyn Store, project: ProjectId) -> Result<Option<String>> {
    Ok(store
        .active_learning_version(project)
        .await?
        .map(|v| v.compiled)
        .filter(|c| !c.trim().is_empty()))
}

/// The transcript as the LLM reads it. When longer than `budget` characters, the first
/// message (the task) and the most recent ones are kept.
pub fn transcript(messages: &[Message], budget: usize) -> String {
    let render = |m: &Message| format!("### {} (#{})\n{}\n\n", m.role, m.seq, m.content.trim());
    let parts: Vec<String> = messages
        .iter()
        .filter(|m| !m.content.trim().is_empty())
        .map(render)
        .collect();
    let total: usize = parts.iter().map(|p| p.chars().count()).sum();
    if total <= budget || parts.is_empty() {
        return parts.concat();
    }
    let head: String = parts[0].chars().take(budget / 4).collect();
    let mut room = budget.saturating_sub(head.chars().count());
    let mut tail = Vec::new();
    for part in parts[1..].iter().rev() {
        let len = part.chars().count();
        if len > room {
            break;
        }
        room -= len;
        tail.push(part.as_str());
    }
    tail.reverse();
    format!(
        "{head}[… {} earlier messages left out …]\n\n{}",
        parts.len() - 1 - tail.len(),
        tail.concat()
    )
}

/// A minimal Anthropic Messages API client: one non-streaming request, text answer.
#[derive(Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    config: LlmConfig,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    system: &'a str,
    messages: [ChatMessage<'a>; 1],
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct MessagesResponse {
    content: Vec<ContentBlock>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

impl AnthropicClient {
    /// A client for `config`.
    pub fn new(config: LlmConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("courier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OrchestratorError::Http(e.to_string()))?;
        Ok(AnthropicClient { http, config })
    }

    /// Sends one user message under `system` and returns the answer's text.
    pub async fn complete(&self, system: &str, user: &str) -> Result<String> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let request = MessagesRequest {
            model: &self.config.model,
            max_tokens: self.config.max_tokens,
            system,
            messages: [ChatMessage {
                role: "user",
                content: user,
            }],
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                OrchestratorError::LlmTimeout {
                    after: self.config.timeout,
                }
            } else {
                // Without the URL: it is configuration, and the error is stored.
                OrchestratorError::Http(e.without_url().to_string())
            }
        };
        let response = self
            .http
            .post(url)
            .header("x-api-key", self.config.api_key.expose())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&request)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let message = match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => format!("{}: {}", e.error.kind, e.error.message),
                Err(_) => String::from_utf8_lossy(&body).chars().take(300).collect(),
            };
            return Err(OrchestratorError::LlmApi {
                status: status.as_u16(),
                message,
                retry_after,
            });
        }
        let answer: MessagesResponse = serde_json::from_slice(&body).map_err(|e| {
            OrchestratorError::LlmMalformed(format!("not a Messages API response ({e})"))
        })?;
        Ok(answer
            .content
            .into_iter()
            .filter(|b| b.kind == "text")
            .map(|b| b.text)
            .collect())
    }
}

/// How [`LearningPipeline::extract`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractionOutcome {
    /// The sandbox had no messages (`skipped`).
    Skipped,
    /// The transcript was read (`completed`).
    Completed {
        /// Learnings stored.
        added: usize,
        /// Learnings that repeated known ones and merged into them.
        merged: usize,
        /// The new active version, when one was compiled.
        version: Option<i64>,
    },
}

/// Extracts, merges and compiles learnings.
#[derive(Clone)]
pub struct LearningPipeline {
    store: Arc<dyn Store>,
    llm: AnthropicClient,
    config: LearningsConfig,
}

impl fmt::Debug for LearningPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearningPipeline")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LearningPipeline {
    /// A pipeline over the store with `config`.
    pub fn new(store: Arc<dyn Store>, config: LearningsConfig) -> Result<Self> {
        let llm = AnthropicClient::new(config.llm.clone())?;
        Ok(LearningPipeline { store, llm, config })
    }

    /// Extracts learnings from a finished sandbox's transcript (see the module docs).
    ///
    /// The status is always left saying what happened; on failure it is `error` with the
    /// reason, which is also returned, and nothing else was written.
    pub async fn extract(&self, sandbox_id: SandboxId) -> Result<ExtractionOutcome> {
        self.store
            .set_learning_status(sandbox_id, LearningStatus::Running, None)
            .await?;
        match self.run(sandbox_id).await {
            Ok(outcome) => {
                let status = match outcome {
                    ExtractionOutcome::Skipped => LearningStatus::Skipped,
                    ExtractionOutcome::Completed { .. } => LearningStatus::Completed,
                };
                self.store
                    .set_learning_status(sandbox_id, status, None)
                    .await?;
                Ok(outcome)
            }
            Err(err) => {
                tracing::warn!(sandbox = %sandbox_id, error = %err, "learning extraction failed");
                self.store
                    .set_learning_status(sandbox_id, LearningStatus::Error, Some(err.to_string()))
                    .await?;
                Err(err)
            }
        }
    }

    async fn run(&self, sandbox_id: SandboxId) -> Result<ExtractionOutcome> {
        let sandbox = self.store.get_sandbox(sandbox_id).await?;
        let messages = self.messages(sandbox_id).await?;
        if messages.iter().all(|m| m.content.trim().is_empty()) {
            return Ok(ExtractionOutcome::Skipped);
        }
        let existing = self.store.list_learnings(sandbox.project_id).await?;
        let mut prompt = String::new();
        if !existing.is_empty() {
            // Showing what is known keeps the model from spending its answer on repeats.
            prompt.push_str("Already known (do not repeat):\n");
            for l in &existing {
                prompt.push_str(&format!("- [{}] {}\n", l.category, l.content.trim()));
            }
            prompt.push('\n');
        }
        prompt.push_str("Transcript:\n\n");
        prompt.push_str(&transcript(&messages, self.config.transcript_budget));
        let answer = self.llm.complete(SYSTEM_PROMPT, &prompt).await?;
        let extracted = parse_learnings(&answer, self.config.max_per_sandbox)?;
        let (fresh, merged) = merge_new(&existing, extracted, self.config.similarity_threshold);

        // Everything above can fail without a trace; the store then writes the new
        // learnings and the version compiled from them in one transaction.
        let now = chrono::Utc::now();
        let mut all = existing;
        let new: Vec<NewLearning> = fresh
            .iter()
            .map(|learning| NewLearning {
                project_id: sandbox.project_id,
                category: learning.category,
                content: learning.content.clone(),
                evidence: learning.evidence.clone(),
                source_sandbox_id: Some(sandbox_id),
            })
            .collect();
        // The compiled text only reads category, content and recency, so the new
        // learnings take part as they will be stored.
        all.extend(new.iter().map(|n| Learning {
            id: LearningId::new(),
            project_id: n.project_id,
            category: n.category,
            content: n.content.clone(),
            evidence: n.evidence.clone(),
            source_sandbox_id: n.source_sandbox_id,
            created_at: now,
        }));
        let needs_version = !fresh.is_empty()
            || (!all.is_empty()
                && self
                    .store
                    .active_learning_version(sandbox.project_id)
                    .await?
                    .is_none());
        let compiled = needs_version.then(|| compile(&all, self.config.compiled_budget));
        let (_, version) = self
            .store
            .record_learnings(sandbox.project_id, new, compiled)
            .await?;
        let version = version.map(|v| v.version);
        Ok(ExtractionOutcome::Completed {
            added: fresh.len(),
            merged,
            version,
        })
    }

    async fn messages(&self, sandbox_id: SandboxId) -> Result<Vec<Message>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |m: &Message| m.seq);
            let page = self
                .store
                .list_messages(sandbox_id, after, MESSAGE_PAGE)
                .await?;
            let full = page.len() == MESSAGE_PAGE as usize;
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration as Age, Utc};
    use courier_store::LearningId;

    use super::*;

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
        let long_evidence = format!(
            r#"{{"learnings":[{{"category":"pattern","content":"ok","evidence":"{long}"}}]}}"#
        );
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
}
