//! Repeats merged: extracted learnings compared with what is known by their words.

use std::collections::BTreeSet;

use courier_store::Learning;

use super::answer::{ExtractedLearning, MAX_FIELD_CHARS};

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
