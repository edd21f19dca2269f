//! The shell lines the lifecycle runs in sandboxes: the agent's run wrapped so that it can
//! be re-attached to, re-attaching, and saving unfinished work.

use std::time::Duration;

use courier_tools::{PROJECT_DIR, shell_quote, tracked};

use super::AGENT_RUN_DIR;

/// The exit code reported for a re-attached run whose exit code was never written (its
/// shell was killed).
const UNKNOWN_EXIT: i32 = 137;

/// How long the kill-time commit and push may take.
pub(super) const SAVE_WORK_TIMEOUT: Duration = Duration::from_secs(120);

/// Wraps an agent command line: it runs in a session of its own whose id is recorded
/// ([`tracked`], so [`stop_agent_command`](courier_tools::stop_agent_command) finds every process of it), its stdout also
/// goes to the run's log file, and its shell's pid and exit code are written next to it
/// (see the [lifecycle docs](super#restart-safety)).
pub fn agent_command(line: &str) -> String {
    let dir = AGENT_RUN_DIR;
    format!(
        "mkdir -p {dir} && rm -f {dir}/exit {dir}/sid && echo $$ > {dir}/pid && {{ {} ; }} | tee {dir}/out.log; \
         code=${{PIPESTATUS[0]}}; echo $code > {dir}/exit; exit $code",
        tracked(line)
    )
}

/// Follows a run's log file from line `skip + 1` until the run's shell ends, then exits
/// with the run's exit code (see the [lifecycle docs](super#restart-safety)).
pub fn reattach_command(skip: usize) -> String {
    let dir = AGENT_RUN_DIR;
    format!(
        "tail -n +{} -f --pid=\"$(cat {dir}/pid)\" {dir}/out.log; exit \"$(cat {dir}/exit 2>/dev/null || echo {UNKNOWN_EXIT})\"",
        skip + 1
    )
}

/// The shell line that saves unfinished work at kill: stage, commit if anything changed,
/// push the branch. Best effort: its failure never blocks the kill.
pub fn save_work_command() -> String {
    format!(
        "cd {} && git add -A && (git diff --cached --quiet || git commit -m {}) && git push -u origin HEAD",
        shell_quote(PROJECT_DIR),
        shell_quote("Courier: save work in progress")
    )
}
