//! What the LLM is asked and how its answer is read: the strict answer format, the
//! transcript it reads, and the answer checked in full.

use courier_store::{LearningCategory, Message};
use serde::{Deserialize, Serialize};

use crate::{OrchestratorError, Result};

/// Longest claim or evidence accepted from the LLM; longer ones are not "one sentence".
pub(super) const MAX_FIELD_CHARS: usize = 500;

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
