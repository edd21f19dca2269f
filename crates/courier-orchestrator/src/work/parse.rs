//! Reading the structured endings of agents' answers: a checker's verdict and an issue
//! scanner's cards. Agents write prose around them, so the parsers look for the last
//! well-formed JSON value of the right shape anywhere in the text.

use courier_store::{NewIssueCard, Severity, Verdict};
use serde::Deserialize;

/// The most cards one scan keeps.
pub const MAX_CARDS: usize = 50;
/// The longest card title kept (characters).
const MAX_TITLE: usize = 200;

/// Every balanced top-level JSON object or array in `text` (opening with `open`), as
/// slices, in order. Strings are respected, so braces inside them do not count.
fn json_spans(text: &str, open: u8) -> Vec<&str> {
    let close = if open == b'{' { b'}' } else { b']' };
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != open {
            i += 1;
            continue;
        }
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        let mut end = None;
        for (j, &b) in bytes.iter().enumerate().skip(i) {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        if b == close {
                            end = Some(j);
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(j) => {
                spans.push(&text[i..=j]);
                i = j + 1;
            }
            None => i += 1,
        }
    }
    spans
}

#[derive(Deserialize)]
struct RawVerdict {
    verdict: String,
    #[serde(default)]
    feedback: Option<String>,
}

/// A checker's verdict and feedback: the last JSON object in `text` with a `verdict` of
/// `pass` or `needs_changes` (`needs changes`, `changes_requested` and `fail` read as
/// needs changes). `None` when there is none.
///
/// ```
/// use courier_orchestrator::work::parse_verdict;
/// use courier_store::Verdict;
///
/// let text = "Reviewed.\n{\"verdict\": \"needs_changes\", \"feedback\": \"Add tests.\"}";
/// assert_eq!(parse_verdict(text), Some((Verdict::NeedsChanges, "Add tests.".to_owned())));
/// assert_eq!(parse_verdict("LGTM"), None);
/// ```
pub fn parse_verdict(text: &str) -> Option<(Verdict, String)> {
    json_spans(text, b'{').into_iter().rev().find_map(|span| {
        let raw: RawVerdict = serde_json::from_str(span).ok()?;
        let verdict = match raw.verdict.trim().to_ascii_lowercase().as_str() {
            "pass" | "passed" | "approve" | "approved" => Verdict::Pass,
            "needs_changes" | "needs changes" | "needs-changes" | "changes_requested" | "fail"
            | "failed" => Verdict::NeedsChanges,
            _ => return None,
        };
        Some((verdict, raw.feedback.unwrap_or_default().trim().to_owned()))
    })
}

#[derive(Deserialize)]
struct RawCard {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default, alias = "suggestedPrompt", alias = "prompt")]
    suggested_prompt: Option<String>,
}

/// An issue scanner's cards: the last JSON array of objects with a `title` in `text`.
/// Cards without a title are dropped; an unknown or missing severity reads as `medium`;
/// a missing suggested prompt is built from the title and description. At most
/// [`MAX_CARDS`].
///
/// # Errors
///
/// A message saying what is missing when `text` holds no such array.
///
/// ```
/// use courier_orchestrator::work::parse_cards;
///
/// let text = "Found one:\n```json\n[{\"title\": \"SQL injection in search\", \"severity\": \"critical\",\n  \"description\": \"q is interpolated\", \"suggested_prompt\": \"Use bind parameters\"}]\n```";
/// let cards = parse_cards(text).unwrap();
/// assert_eq!(cards[0].title, "SQL injection in search");
/// assert!(parse_cards("no issues, all good").is_err());
/// ```
pub fn parse_cards(text: &str) -> Result<Vec<NewIssueCard>, String> {
    let list = json_spans(text, b'[').into_iter().rev().find_map(|span| {
        let values: Vec<serde_json::Value> = serde_json::from_str(span).ok()?;
        let cards: Vec<RawCard> = values
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        // An empty list is an answer ("nothing found"); a list of non-cards is not.
        let empty_list = span[1..span.len() - 1].trim().is_empty();
        (!cards.is_empty() || empty_list).then_some(cards)
    });
    let Some(list) = list else {
        return Err(
            "the agent's answer holds no JSON list of issue cards (objects with a title)".into(),
        );
    };
    Ok(list
        .into_iter()
        .filter_map(|raw| {
            let title: String = raw.title.trim().chars().take(MAX_TITLE).collect();
            if title.is_empty() {
                return None;
            }
            let severity = raw
                .severity
                .as_deref()
                .map(|s| s.trim().to_ascii_lowercase())
                .and_then(|s| s.parse::<Severity>().ok())
                .unwrap_or(Severity::Medium);
            let description = raw.description.trim().to_owned();
            let suggested_prompt = match raw.suggested_prompt.as_deref().map(str::trim) {
                Some(p) if !p.is_empty() => p.to_owned(),
                _ if description.is_empty() => title.clone(),
                _ => format!("{title}\n\n{description}"),
            };
            Some(NewIssueCard {
                title,
                description,
                severity,
                suggested_prompt,
            })
        })
        .take(MAX_CARDS)
        .collect())
}
