//! What each workflow role and the issue scanner are asked. Every prompt carries its
//! iteration, so a restarted run can tell whether it was already delivered (the last
//! prompt a sandbox received is compared with the one due).

use courier_store::WorkflowRun;

/// The line a checker must end with.
pub const VERDICT_FORMAT: &str =
    r#"{"verdict": "pass" or "needs_changes", "feedback": "what must change; empty when pass"}"#;

fn with_instructions(instructions: Option<&str>, default: &str) -> String {
    match instructions.map(str::trim).filter(|i| !i.is_empty()) {
        Some(i) => i.to_owned(),
        None => default.to_owned(),
    }
}

fn branch(run: &WorkflowRun) -> &str {
    run.state.branch.as_deref().unwrap_or("the feature branch")
}

/// The designer's first prompt.
pub fn designer(run: &WorkflowRun, instructions: Option<&str>) -> String {
    format!(
        "{task}\n\n---\n{role}\nWorkflow run {id}, iteration 1 of at most {max}. Work in the repository \
         on branch {branch}; commit your changes with clear messages and end with a short summary \
         of what you changed.",
        task = run.prompt.trim(),
        role = with_instructions(
            instructions,
            "You are the designer: implement the task completely."
        ),
        id = run.id,
        max = run.spec.max_iterations,
        branch = branch(run),
    )
}

/// The designer's prompt for a later iteration: the checker's feedback.
pub fn designer_again(run: &WorkflowRun, iteration: i64, feedback: &str) -> String {
    let feedback = if feedback.trim().is_empty() {
        "(the reviewer gave no details: review your work against the task once more)"
    } else {
        feedback.trim()
    };
    format!(
        "A reviewer checked your work and asks for changes:\n\n{feedback}\n\n---\nAddress them, \
         commit, and end with a short summary of what you changed. Workflow run {id}, iteration \
         {iteration} of at most {max}.",
        id = run.id,
        max = run.spec.max_iterations,
    )
}

/// The checker's prompt: the task, the designer's account, the verdict format.
pub fn checker(
    run: &WorkflowRun,
    iteration: i64,
    designer_summary: &str,
    instructions: Option<&str>,
) -> String {
    format!(
        "Review the work on branch {branch} (checked out in the repository) for this task:\n\n\
         {task}\n\n---\nThe author's summary:\n{summary}\n\n---\n{role}\nDo not change or commit \
         files. Run the tests that exist. Workflow run {id}, check {iteration} of at most {max}.\n\
         End your answer with exactly one line of JSON:\n{VERDICT_FORMAT}",
        branch = branch(run),
        task = run.prompt.trim(),
        summary = designer_summary.trim(),
        role = with_instructions(
            instructions,
            "You are the checker: judge whether the task is done correctly and completely."
        ),
        id = run.id,
        max = run.spec.max_iterations,
    )
}

/// The optimizer's prompt.
pub fn optimizer(run: &WorkflowRun, instructions: Option<&str>) -> String {
    format!(
        "The work on branch {branch} (checked out in the repository) passed review for this \
         task:\n\n{task}\n\n---\n{role}\nKeep the behaviour; commit your changes and end with a \
         short summary. Workflow run {id}, optimizer step.",
        branch = branch(run),
        task = run.prompt.trim(),
        role = with_instructions(
            instructions,
            "You are the optimizer: simplify and tidy the implementation, remove duplication, \
             and make it faster where it matters."
        ),
        id = run.id,
    )
}

/// The issue scanner's prompt.
pub fn issue_scan(focus: Option<&str>, max_cards: usize) -> String {
    let focus = match focus.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => format!("\n\nFocus on: {f}"),
        None => String::new(),
    };
    format!(
        "Scan the repository for bugs, security problems, missing tests and worthwhile \
         improvements.{focus}\n\nDo not change or commit files. End your answer with a fenced JSON \
         list of at most {max_cards} issues, most important first:\n```json\n[{{\"title\": \"short \
         title\", \"description\": \"what is wrong and where\", \"severity\": \"low|medium|high|critical\", \
         \"suggested_prompt\": \"the task to give an agent that fixes it\"}}]\n```"
    )
}
