//! One sandbox's extraction: transcript read, LLM asked, answer merged and compiled into
//! the project's new active version (see the [learnings docs](super)).

use std::fmt;
use std::sync::Arc;

use courier_store::{Learning, LearningId, LearningStatus, Message, NewLearning, SandboxId, Store};

use super::LearningsConfig;
use super::answer::{SYSTEM_PROMPT, parse_learnings, transcript};
use super::client::AnthropicClient;
use super::compile::compile;
use super::merge::merge_new;
use crate::Result;

/// Page size when reading a transcript.
const MESSAGE_PAGE: u32 = 200;

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
