//! The git commands the pipeline runs in the sandbox, and their output read.

use courier_tools::shell_quote;

/// What git says about the project inside the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitState {
    /// `remote.origin.url`, if any.
    pub remote_url: Option<String>,
    /// The checked-out branch (`None` when detached or not a repository).
    pub branch: Option<String>,
    /// The remote's default branch as cloned (`origin/HEAD`), if known.
    pub default_branch: Option<String>,
}

/// The shell line that prints [`GitState`] as `key=value` lines (read by
/// [`parse_git_state`]). It never fails: missing values print empty.
pub fn git_state_command(project_dir: &str) -> String {
    format!(
        "cd {} 2>/dev/null && printf 'remote=%s\\nbranch=%s\\nbase=%s\\n' \
         \"$(git config --get remote.origin.url)\" \
         \"$(git rev-parse --abbrev-ref HEAD 2>/dev/null)\" \
         \"$(git symbolic-ref --quiet --short refs/remotes/origin/HEAD 2>/dev/null)\"",
        shell_quote(project_dir)
    )
}

/// Reads the output of [`git_state_command`].
pub fn parse_git_state(stdout: &str) -> GitState {
    let mut state = GitState::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key {
            "remote" => state.remote_url = Some(value.to_owned()),
            // `HEAD` is what rev-parse prints on a detached head: no branch to push.
            "branch" if value != "HEAD" => state.branch = Some(value.to_owned()),
            "base" => {
                let base = value.strip_prefix("origin/").unwrap_or(value);
                state.default_branch = Some(base.to_owned());
            }
            _ => {}
        }
    }
    state
}

/// The shell line that pushes the branch's commits to `origin`. Never forced, never
/// prompting for credentials (a prompt would hang until the timeout).
pub fn push_command(project_dir: &str, branch: &str) -> String {
    format!(
        "cd {} && GIT_TERMINAL_PROMPT=0 git push --porcelain origin {}",
        shell_quote(project_dir),
        shell_quote(&format!("HEAD:refs/heads/{branch}"))
    )
}
