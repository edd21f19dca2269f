//! The text agents receive: the project's learnings compiled within a budget.

use courier_store::{Learning, LearningCategory, ProjectId, Store};

use crate::Result;

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
