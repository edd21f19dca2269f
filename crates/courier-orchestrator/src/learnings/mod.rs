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
//! [`Learning::evidence`](courier_store::Learning::evidence), for the people who review
//! learnings; agents get the claims only (see [`compile`](fn@compile)).
//!
//! The sandbox's extraction status moves `pending` → `running` → `completed`, `skipped`
//! (no messages) or `error` (with the reason). Every LLM answer is checked in full before
//! anything is written, so a failed extraction adds no learning and no version.
//!
//! The LLM's answer is defined and read in `answer`, repeats merged in `merge`, the
//! agents' text compiled in `compile`, the LLM reached through `client`, and the whole
//! run in `pipeline`.

mod answer;
mod client;
mod compile;
mod merge;
mod pipeline;

#[cfg(test)]
mod tests;

use std::time::Duration;

use courier_tools::Secret;

pub use answer::{ExtractedLearning, SYSTEM_PROMPT, parse_learnings, transcript};
pub use client::AnthropicClient;
pub use compile::{active_learnings, compile};
pub use merge::{merge_evidence, merge_new, similarity};
pub use pipeline::{ExtractionOutcome, LearningPipeline};

/// Anthropic's API.
pub const DEFAULT_LLM_BASE_URL: &str = "https://api.anthropic.com";
/// The model asked by default: balanced quality and cost for reading transcripts.
pub const DEFAULT_LLM_MODEL: &str = "claude-sonnet-4-6";
/// The Messages API version this client speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

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
