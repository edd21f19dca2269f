//! Git helpers: the official SDKs' `sandbox.git` (clone, init, remotes, status, branches,
//! add, commit, reset, restore, push, pull, config), run as `git` commands inside the
//! sandbox through [`Commands`].
//!
//! Credentials differ from the official SDKs on purpose: they never appear in a command
//! line (world-readable in `/proc/<pid>/cmdline` to every process of the sandbox), in a
//! remote URL or in `.git/config`. They travel in the environment of the one `git`
//! process that needs them (readable only by its own user and root), and an inline
//! credential helper, set through `GIT_CONFIG_*` variables rather than arguments, hands
//! them to git. Commands run non-interactively (`bash -l -c`), so nothing lands in a
//! shell history; `GIT_TERMINAL_PROMPT=0` makes a missing credential fail instead of
//! waiting for a prompt.

use std::time::Duration;

use crate::{Error, Result, Secret};

use super::commands::{CommandOutput, Commands};

/// The environment variables carrying credentials to the inline helper.
const USERNAME_VAR: &str = "COURIER_GIT_USERNAME";
const PASSWORD_VAR: &str = "COURIER_GIT_PASSWORD";

/// The inline credential helper: answers `get` from the two variables above.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; \
    printf 'username=%s\\npassword=%s\\n' \"$COURIER_GIT_USERNAME\" \"$COURIER_GIT_PASSWORD\"; }; f";

/// A user name and password (or token) for an HTTP(S) remote.
///
/// ```
/// use courier_e2b::envd::GitCredentials;
/// let credentials = GitCredentials::new("x-access-token", "ghp_example");
/// assert!(!format!("{credentials:?}").contains("ghp_example"));
/// ```
#[derive(Debug, Clone)]
pub struct GitCredentials {
    username: String,
    password: Secret,
}

impl GitCredentials {
    /// Credentials for one operation.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> GitCredentials {
        GitCredentials {
            username: username.into(),
            password: Secret::new(password.into()),
        }
    }
}

/// Where [`Git::set_config`] and [`Git::get_config`] read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigScope {
    /// `--global` (the user's `~/.gitconfig`), the default of the official SDKs.
    Global,
    /// `--system`.
    System,
    /// `--local`: the repository at this path.
    Local(String),
}

/// `git reset` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMode {
    /// `--soft`.
    Soft,
    /// `--mixed`.
    Mixed,
    /// `--hard`.
    Hard,
    /// `--merge`.
    Merge,
    /// `--keep`.
    Keep,
}

impl ResetMode {
    fn flag(self) -> &'static str {
        match self {
            ResetMode::Soft => "--soft",
            ResetMode::Mixed => "--mixed",
            ResetMode::Hard => "--hard",
            ResetMode::Merge => "--merge",
            ResetMode::Keep => "--keep",
        }
    }
}

/// Options of [`Git::clone_repo`].
///
/// ```
/// use courier_e2b::envd::CloneOptions;
/// let options = CloneOptions::new().path("/home/user/app").branch("main").depth(1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CloneOptions {
    path: Option<String>,
    branch: Option<String>,
    depth: Option<u32>,
    credentials: Option<GitCredentials>,
}

impl CloneOptions {
    /// A plain clone into git's default directory.
    pub fn new() -> CloneOptions {
        CloneOptions::default()
    }
    /// The destination directory.
    pub fn path(mut self, path: impl Into<String>) -> CloneOptions {
        self.path = Some(path.into());
        self
    }
    /// Clones this branch only (`--branch <b> --single-branch`).
    pub fn branch(mut self, branch: impl Into<String>) -> CloneOptions {
        self.branch = Some(branch.into());
        self
    }
    /// A shallow clone of `depth` commits.
    pub fn depth(mut self, depth: u32) -> CloneOptions {
        self.depth = Some(depth);
        self
    }
    /// Credentials for this clone only (not stored in the repository).
    pub fn credentials(mut self, credentials: GitCredentials) -> CloneOptions {
        self.credentials = Some(credentials);
        self
    }
}

/// Options of [`Git::push`] and [`Git::pull`].
///
/// ```
/// use courier_e2b::envd::{GitCredentials, SyncOptions};
/// let options = SyncOptions::new()
///     .remote("origin")
///     .branch("main")
///     .credentials(GitCredentials::new("bot", "token"));
/// ```
#[derive(Debug, Clone)]
pub struct SyncOptions {
    remote: Option<String>,
    branch: Option<String>,
    set_upstream: bool,
    credentials: Option<GitCredentials>,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            remote: None,
            branch: None,
            set_upstream: true,
            credentials: None,
        }
    }
}

impl SyncOptions {
    /// git's defaults (push sets the upstream when a remote is named, as the SDKs do).
    pub fn new() -> SyncOptions {
        SyncOptions::default()
    }
    /// The remote.
    pub fn remote(mut self, remote: impl Into<String>) -> SyncOptions {
        self.remote = Some(remote.into());
        self
    }
    /// The branch.
    pub fn branch(mut self, branch: impl Into<String>) -> SyncOptions {
        self.branch = Some(branch.into());
        self
    }
    /// Push only: whether to pass `--set-upstream` when a remote is named (default true).
    pub fn set_upstream(mut self, on: bool) -> SyncOptions {
        self.set_upstream = on;
        self
    }
    /// Credentials for this operation only.
    pub fn credentials(mut self, credentials: GitCredentials) -> SyncOptions {
        self.credentials = Some(credentials);
        self
    }

    fn check(&self) -> Result<()> {
        if let Some(remote) = &self.remote {
            not_option("remote", remote)?;
        }
        if let Some(branch) = &self.branch {
            not_option("branch", branch)?;
        }
        Ok(())
    }
}

/// One changed file in [`GitStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFileStatus {
    /// The path relative to the repository root.
    pub name: String,
    /// `modified`, `added`, `deleted`, `renamed`, `copied`, `typechange`, `untracked`,
    /// `conflict` or `unknown`.
    pub status: String,
    /// The index column of `git status --porcelain`.
    pub index_status: char,
    /// The working-tree column.
    pub working_tree_status: char,
    /// Whether the change is staged.
    pub staged: bool,
    /// The old path of a rename.
    pub renamed_from: Option<String>,
}

/// A repository's state (`git status --porcelain=1 -b`, parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitStatus {
    /// The checked-out branch (`None` when detached).
    pub current_branch: Option<String>,
    /// Its upstream, when it has one.
    pub upstream: Option<String>,
    /// Commits ahead of the upstream.
    pub ahead: u32,
    /// Commits behind it.
    pub behind: u32,
    /// Whether HEAD is detached.
    pub detached: bool,
    /// The changed and untracked files.
    pub file_status: Vec<GitFileStatus>,
}

impl GitStatus {
    /// No changed or untracked file.
    pub fn is_clean(&self) -> bool {
        self.file_status.is_empty()
    }
    /// At least one staged change.
    pub fn has_staged(&self) -> bool {
        self.file_status.iter().any(|f| f.staged)
    }
    /// At least one untracked file.
    pub fn has_untracked(&self) -> bool {
        self.file_status.iter().any(|f| f.status == "untracked")
    }
    /// At least one conflict.
    pub fn has_conflicts(&self) -> bool {
        self.file_status.iter().any(|f| f.status == "conflict")
    }

    /// Parses `git status --porcelain=1 -b` output.
    ///
    /// ```
    /// use courier_e2b::envd::GitStatus;
    /// let status = GitStatus::parse("## main...origin/main [ahead 2]\nM  a.txt\n?? b.txt\n");
    /// assert_eq!(status.current_branch.as_deref(), Some("main"));
    /// assert_eq!((status.ahead, status.behind), (2, 0));
    /// assert!(status.has_staged() && status.has_untracked());
    /// ```
    pub fn parse(output: &str) -> GitStatus {
        let mut status = GitStatus::default();
        let mut lines = output.lines().filter(|l| !l.trim().is_empty());
        let mut first = lines.next();
        if let Some(branch_info) = first.and_then(|l| l.strip_prefix("## ")) {
            first = None;
            let (branch, counts) = match branch_info.find(" [") {
                Some(i) => (
                    &branch_info[..i],
                    Some(branch_info[i + 2..].trim_end_matches(']')),
                ),
                None => (branch_info, None),
            };
            let branch = branch
                .trim_start_matches("No commits yet on ")
                .trim_start_matches("Initial commit on ");
            if branch.starts_with("HEAD") || branch.contains("(detached") {
                status.detached = true;
            } else if let Some((local, upstream)) = branch.split_once("...") {
                status.current_branch = (!local.is_empty()).then(|| local.to_owned());
                status.upstream = (!upstream.is_empty()).then(|| upstream.to_owned());
            } else {
                status.current_branch = (!branch.is_empty()).then(|| branch.to_owned());
            }
            for part in counts.into_iter().flat_map(|c| c.split(',')) {
                let part = part.trim();
                if let Some(n) = part.strip_prefix("ahead ") {
                    status.ahead = n.trim().parse().unwrap_or(0);
                } else if let Some(n) = part.strip_prefix("behind ") {
                    status.behind = n.trim().parse().unwrap_or(0);
                }
            }
        }
        for line in first.into_iter().chain(lines) {
            let mut chars = line.chars();
            let (Some(index), Some(worktree)) = (chars.next(), chars.next()) else {
                continue;
            };
            let Some(path) = line.get(3..) else { continue };
            let (renamed_from, name) = match path.split_once(" -> ") {
                Some((from, to)) => (Some(from.to_owned()), to.to_owned()),
                None => (None, path.to_owned()),
            };
            status.file_status.push(GitFileStatus {
                name,
                status: derive_status(index, worktree).to_owned(),
                index_status: index,
                working_tree_status: worktree,
                staged: index != ' ' && index != '?',
                renamed_from,
            });
        }
        status
    }
}

fn derive_status(index: char, worktree: char) -> &'static str {
    let has = |c: char| index == c || worktree == c;
    match () {
        _ if has('U') => "conflict",
        _ if has('R') => "renamed",
        _ if has('C') => "copied",
        _ if has('D') => "deleted",
        _ if has('A') => "added",
        _ if has('M') => "modified",
        _ if has('T') => "typechange",
        _ if has('?') => "untracked",
        _ => "unknown",
    }
}

/// A repository's local branches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitBranches {
    /// Every local branch.
    pub branches: Vec<String>,
    /// The checked-out one.
    pub current_branch: Option<String>,
}

impl GitBranches {
    fn parse(output: &str) -> GitBranches {
        let mut out = GitBranches::default();
        for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (name, head) = line.split_once('\t').unwrap_or((line, ""));
            out.branches.push(name.to_owned());
            if head == "*" {
                out.current_branch = Some(name.to_owned());
            }
        }
        out
    }
}

/// Quotes one word for `bash -c`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Git inside a sandbox. Get one from [`Sandbox::git`](crate::Sandbox::git).
///
/// ```no_run
/// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
/// use courier_e2b::envd::{CloneOptions, GitCredentials, SyncOptions};
/// let git = sandbox.git();
/// let token = GitCredentials::new("x-access-token", "ghp_example");
/// git.clone_repo(
///     "https://github.com/acme/app.git",
///     &CloneOptions::new().path("app").credentials(token.clone()),
/// )
/// .await?;
/// sandbox.files().write("app/NOTES.md", "hello").await?;
/// git.add("app", &[], true).await?;
/// git.commit("app", "notes", Some(("Bot", "bot@example.com")), false).await?;
/// git.push("app", &SyncOptions::new().credentials(token)).await?;
/// assert!(git.status("app").await?.is_clean());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Git {
    pub(crate) commands: Commands,
    pub(crate) user: Option<String>,
    pub(crate) envs: Vec<(String, String)>,
    pub(crate) timeout: Option<Duration>,
}

impl Git {
    /// Runs git as Unix user `user` (default: the sandbox's default user).
    pub fn user(mut self, user: impl Into<String>) -> Git {
        self.user = Some(user.into());
        self
    }

    /// An environment variable for every git command (e.g. `GIT_SSH_COMMAND`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Git {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The time each git command may take (default: the commands' default, 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Git {
        self.timeout = Some(timeout);
        self
    }

    /// Runs `git [-C repo] args…` and maps the failures the SDKs name.
    async fn git(
        &self,
        repo: Option<&str>,
        args: &[&str],
        credentials: Option<&GitCredentials>,
        operation: &str,
    ) -> Result<CommandOutput> {
        let mut words = vec!["git"];
        if let Some(repo) = repo {
            words.extend(["-C", repo]);
        }
        words.extend_from_slice(args);
        let line = words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        let mut run = self
            .commands
            .run(line)
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(self.envs.iter().cloned());
        if let Some(user) = &self.user {
            run = run.user(user.clone());
        }
        if let Some(timeout) = self.timeout {
            run = run.timeout(timeout);
        }
        if let Some(credentials) = credentials {
            // An empty value first resets any helper the user configured, so that only
            // these credentials are tried and none is stored by a `store` helper.
            run = run
                .env("GIT_CONFIG_COUNT", "2")
                .env("GIT_CONFIG_KEY_0", "credential.helper")
                .env("GIT_CONFIG_VALUE_0", "")
                .env("GIT_CONFIG_KEY_1", "credential.helper")
                .env("GIT_CONFIG_VALUE_1", CREDENTIAL_HELPER)
                .env(USERNAME_VAR, credentials.username.clone())
                .env(PASSWORD_VAR, credentials.password.expose().to_owned());
        }
        run.await.map_err(|e| classify(e, operation))
    }

    /// `git clone url [path]` with a branch, a depth and credentials.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::CloneOptions;
    /// sandbox
    ///     .git()
    ///     .clone_repo("https://github.com/acme/app.git", &CloneOptions::new().path("app").depth(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn clone_repo(&self, url: &str, options: &CloneOptions) -> Result<CommandOutput> {
        let depth = options.depth.map(|d| d.to_string());
        let mut args = vec!["clone"];
        if let Some(branch) = &options.branch {
            not_option("branch", branch)?;
            args.extend(["--branch", branch, "--single-branch"]);
        }
        if let Some(depth) = &depth {
            args.extend(["--depth", depth]);
        }
        // After `--` a URL such as `--upload-pack=<command>` is a repository, not an
        // option that would run a command.
        args.extend(["--", url]);
        if let Some(path) = &options.path {
            args.push(path);
        }
        self.git(None, &args, options.credentials.as_ref(), "clone")
            .await
    }

    /// `git init` (optionally `--bare`, with an initial branch).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().init("project", false, Some("main")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn init(
        &self,
        path: &str,
        bare: bool,
        initial_branch: Option<&str>,
    ) -> Result<CommandOutput> {
        let mut args = vec!["init"];
        if bare {
            args.push("--bare");
        }
        if let Some(branch) = initial_branch {
            args.extend(["--initial-branch", branch]);
        }
        args.extend(["--", path]);
        self.git(None, &args, None, "init").await
    }

    /// `git remote add` (`overwrite`: set the URL of an existing remote instead of
    /// failing), then `git fetch` when `fetch`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().remote_add("project", "origin", "https://github.com/acme/app.git", false, true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn remote_add(
        &self,
        path: &str,
        name: &str,
        url: &str,
        fetch: bool,
        overwrite: bool,
    ) -> Result<()> {
        if name.is_empty() || url.is_empty() {
            return Err(invalid(
                "remote_add: both the remote name and URL are required",
            ));
        }
        not_option("remote name", name)?;
        not_option("remote URL", url)?;
        let exists = self.remote_get(path, name).await?.is_some();
        if exists && overwrite {
            self.git(
                Some(path),
                &["remote", "set-url", name, url],
                None,
                "remote",
            )
            .await?;
        } else {
            self.git(Some(path), &["remote", "add", name, url], None, "remote")
                .await?;
        }
        if fetch {
            self.git(Some(path), &["fetch", name], None, "fetch")
                .await?;
        }
        Ok(())
    }

    /// The URL of remote `name`, `None` when there is no such remote.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let url = sandbox.git().remote_get("project", "origin").await?;
    /// # Ok(()) }
    /// ```
    pub async fn remote_get(&self, path: &str, name: &str) -> Result<Option<String>> {
        if name.is_empty() {
            return Err(invalid("remote_get: the remote name is required"));
        }
        not_option("remote name", name)?;
        match self
            .git(Some(path), &["remote", "get-url", name], None, "remote")
            .await
        {
            Ok(output) => Ok(Some(output.stdout.trim().to_owned()).filter(|u| !u.is_empty())),
            // git answers 2 for "No such remote".
            Err(Error::CommandExited { exit_code: 2, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The repository's status, parsed.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let status = sandbox.git().status("project").await?;
    /// println!("{:?} +{} -{}", status.current_branch, status.ahead, status.behind);
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, path: &str) -> Result<GitStatus> {
        let output = self
            .git(
                Some(path),
                &["status", "--porcelain=1", "-b"],
                None,
                "status",
            )
            .await?;
        Ok(GitStatus::parse(&output.stdout))
    }

    /// The local branches and the current one.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let branches = sandbox.git().branches("project").await?;
    /// # Ok(()) }
    /// ```
    pub async fn branches(&self, path: &str) -> Result<GitBranches> {
        let output = self
            .git(
                Some(path),
                &["branch", "--format=%(refname:short)\t%(HEAD)"],
                None,
                "branch",
            )
            .await?;
        Ok(GitBranches::parse(&output.stdout))
    }

    /// Creates a branch and checks it out (`git checkout -b`).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().create_branch("project", "feature").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_branch(&self, path: &str, branch: &str) -> Result<CommandOutput> {
        not_option("branch", branch)?;
        self.git(Some(path), &["checkout", "-b", branch], None, "checkout")
            .await
    }

    /// Checks out a branch.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().checkout_branch("project", "main").await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkout_branch(&self, path: &str, branch: &str) -> Result<CommandOutput> {
        not_option("branch", branch)?;
        self.git(Some(path), &["checkout", branch], None, "checkout")
            .await
    }

    /// Deletes a branch (`-d`, or `-D` when `force`).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().delete_branch("project", "feature", true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_branch(
        &self,
        path: &str,
        branch: &str,
        force: bool,
    ) -> Result<CommandOutput> {
        not_option("branch", branch)?;
        let flag = if force { "-D" } else { "-d" };
        self.git(Some(path), &["branch", flag, branch], None, "branch")
            .await
    }

    /// Stages `files`, or everything (`-A` when `all`, else `.`) when `files` is empty.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().add("project", &["src/main.rs"], false).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add(&self, path: &str, files: &[&str], all: bool) -> Result<CommandOutput> {
        let mut args = vec!["add"];
        if files.is_empty() {
            args.push(if all { "-A" } else { "." });
        } else {
            args.push("--");
            args.extend_from_slice(files);
        }
        self.git(Some(path), &args, None, "add").await
    }

    /// Commits the staged changes, with an author `(name, email)` for this commit only.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().commit("project", "fix", Some(("Bot", "bot@example.com")), false).await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit(
        &self,
        path: &str,
        message: &str,
        author: Option<(&str, &str)>,
        allow_empty: bool,
    ) -> Result<CommandOutput> {
        let name;
        let email;
        let mut args = Vec::new();
        if let Some((author_name, author_email)) = author {
            name = format!("user.name={author_name}");
            email = format!("user.email={author_email}");
            args.extend(["-c", &name, "-c", &email]);
        }
        args.extend(["commit", "-m", message]);
        if allow_empty {
            args.push("--allow-empty");
        }
        self.git(Some(path), &args, None, "commit").await
    }

    /// `git reset [--mode] [target] [-- paths]`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::ResetMode;
    /// sandbox.git().reset("project", Some(ResetMode::Hard), Some("HEAD~1"), &[]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(
        &self,
        path: &str,
        mode: Option<ResetMode>,
        target: Option<&str>,
        paths: &[&str],
    ) -> Result<CommandOutput> {
        let mut args = vec!["reset"];
        if let Some(mode) = mode {
            args.push(mode.flag());
        }
        if let Some(target) = target {
            not_option("reset target", target)?;
            args.push(target);
        }
        if !paths.is_empty() {
            args.push("--");
            args.extend_from_slice(paths);
        }
        self.git(Some(path), &args, None, "reset").await
    }

    /// `git restore` of `paths` in the working tree and/or the index, as the SDKs
    /// resolve them: neither given restores the working tree; `staged` alone the index.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.git().restore("project", &["a.txt"], Some(true), None, None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn restore(
        &self,
        path: &str,
        paths: &[&str],
        staged: Option<bool>,
        worktree: Option<bool>,
        source: Option<&str>,
    ) -> Result<CommandOutput> {
        if paths.is_empty() {
            return Err(invalid("restore: at least one path is required"));
        }
        let (staged, worktree) = match (staged, worktree) {
            (None, None) => (false, true),
            (Some(s), None) => (s, !s),
            (None, Some(w)) => (false, w),
            (Some(s), Some(w)) => (s, w),
        };
        if !staged && !worktree {
            return Err(invalid(
                "restore: at least one of staged or worktree must be true",
            ));
        }
        let mut args = vec!["restore"];
        if worktree {
            args.push("--worktree");
        }
        if staged {
            args.push("--staged");
        }
        if let Some(source) = source {
            args.extend(["--source", source]);
        }
        args.push("--");
        args.extend_from_slice(paths);
        self.git(Some(path), &args, None, "restore").await
    }

    /// Pushes; with credentials, for this push only.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::SyncOptions;
    /// sandbox.git().push("project", &SyncOptions::new().remote("origin").branch("main")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn push(&self, path: &str, options: &SyncOptions) -> Result<CommandOutput> {
        options.check()?;
        let mut args = vec!["push"];
        if let Some(remote) = &options.remote {
            if options.set_upstream {
                args.push("--set-upstream");
            }
            args.push(remote);
        }
        if let Some(branch) = &options.branch {
            args.push(branch);
        }
        self.git(Some(path), &args, options.credentials.as_ref(), "push")
            .await
    }

    /// Pulls; with credentials, for this pull only.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::SyncOptions;
    /// sandbox.git().pull("project", &SyncOptions::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn pull(&self, path: &str, options: &SyncOptions) -> Result<CommandOutput> {
        options.check()?;
        let mut args = vec!["pull"];
        if let Some(remote) = &options.remote {
            args.push(remote);
        }
        if let Some(branch) = &options.branch {
            args.push(branch);
        }
        self.git(Some(path), &args, options.credentials.as_ref(), "pull")
            .await
    }

    /// `git config <scope> key value`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::ConfigScope;
    /// sandbox.git().set_config("pull.rebase", "true", &ConfigScope::Global).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_config(&self, key: &str, value: &str, scope: &ConfigScope) -> Result<()> {
        not_option("config key", key)?;
        let (flag, repo) = scope_args(scope)?;
        self.git(repo, &["config", flag, key, value], None, "config")
            .await?;
        Ok(())
    }

    /// `git config <scope> --get key`, `None` when unset.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::ConfigScope;
    /// let name = sandbox.git().get_config("user.name", &ConfigScope::Global).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_config(&self, key: &str, scope: &ConfigScope) -> Result<Option<String>> {
        not_option("config key", key)?;
        let (flag, repo) = scope_args(scope)?;
        match self
            .git(repo, &["config", flag, "--get", key], None, "config")
            .await
        {
            Ok(output) => Ok(Some(output.stdout.trim_end_matches('\n').to_owned())),
            // git answers 1 for an unset key.
            Err(Error::CommandExited { exit_code: 1, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `credentials` for `protocol://host` in git's `store` helper, globally for
    /// the sandbox user (`~/.git-credentials`, plain text): every later git command of
    /// that user, and any process running as them, can use and read them. Prefer
    /// per-operation credentials ([`CloneOptions::credentials`],
    /// [`SyncOptions::credentials`]) and short-lived tokens.
    ///
    /// The credentials reach `git credential approve` on its stdin from a shell builtin,
    /// never in a command line. A field with a line break (which would smuggle extra
    /// fields into git's credential protocol) is refused.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::GitCredentials;
    /// sandbox
    ///     .git()
    ///     .dangerously_authenticate(&GitCredentials::new("bot", "ghp_example"), "github.com", "https")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn dangerously_authenticate(
        &self,
        credentials: &GitCredentials,
        host: &str,
        protocol: &str,
    ) -> Result<()> {
        let fields = [
            ("protocol", protocol),
            ("host", host),
            ("username", credentials.username.as_str()),
            ("password", credentials.password.expose()),
        ];
        for (name, value) in fields {
            if value.is_empty() || value.contains(['\n', '\r', '\0']) {
                return Err(invalid(&format!(
                    "dangerously_authenticate: {name} must be non-empty and on one line"
                )));
            }
        }
        self.set_config("credential.helper", "store", &ConfigScope::Global)
            .await?;
        let input: String = fields
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .chain(["\n".to_owned()])
            .collect();
        let mut run = self
            .commands
            .run("printf '%s' \"$COURIER_GIT_CREDENTIAL\" | git credential approve")
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(self.envs.iter().cloned())
            .env("COURIER_GIT_CREDENTIAL", input);
        if let Some(user) = &self.user {
            run = run.user(user.clone());
        }
        if let Some(timeout) = self.timeout {
            run = run.timeout(timeout);
        }
        run.await.map_err(|e| classify(e, "credential approve"))?;
        Ok(())
    }

    /// Sets `user.name` and `user.email`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::ConfigScope;
    /// sandbox.git().configure_user("Bot", "bot@example.com", &ConfigScope::Global).await?;
    /// # Ok(()) }
    /// ```
    pub async fn configure_user(&self, name: &str, email: &str, scope: &ConfigScope) -> Result<()> {
        if name.is_empty() || email.is_empty() {
            return Err(invalid("configure_user: both name and email are required"));
        }
        self.set_config("user.name", name, scope).await?;
        self.set_config("user.email", email, scope).await
    }
}

fn scope_args(scope: &ConfigScope) -> Result<(&'static str, Option<&str>)> {
    Ok(match scope {
        ConfigScope::Global => ("--global", None),
        ConfigScope::System => ("--system", None),
        ConfigScope::Local(path) if path.is_empty() => {
            return Err(invalid(
                "config scope local: the repository path is required",
            ));
        }
        ConfigScope::Local(path) => ("--local", Some(path.as_str())),
    })
}

/// Refuses a name git would read as an option (`--upload-pack=…`, `-f`): names,
/// branches and keys come from callers that may pass on untrusted input.
fn not_option(field: &str, value: &str) -> Result<()> {
    if value.starts_with('-') {
        return Err(invalid(&format!(
            "{field} {value:?} must not start with '-' (git would read it as an option)"
        )));
    }
    Ok(())
}

fn invalid(message: &str) -> Error {
    Error::InvalidArgument {
        message: message.to_owned(),
    }
}

/// Turns a failed git command into [`Error::GitAuth`] / [`Error::GitUpstream`] where its
/// output says so (the snippets the official SDKs look for), else leaves it.
fn classify(error: Error, operation: &str) -> Error {
    let Error::CommandExited { stdout, stderr, .. } = &error else {
        return error;
    };
    let text = format!("{stderr}\n{stdout}").to_lowercase();
    const AUTH: &[&str] = &[
        "authentication failed",
        "terminal prompts disabled",
        "could not read username",
        "could not read password",
        "invalid username or password",
        "access denied",
        "permission denied (publickey)",
        "http basic: access denied",
    ];
    const UPSTREAM: &[&str] = &[
        "has no upstream branch",
        "no upstream branch",
        "no upstream configured",
        "no tracking information for the current branch",
        "set the remote as upstream",
    ];
    if AUTH.iter().any(|s| text.contains(s)) {
        return Error::GitAuth {
            message: format!(
                "git {operation} failed: authentication was refused or needed \
                 (pass GitCredentials with a user name and password or token)"
            ),
        };
    }
    if UPSTREAM.iter().any(|s| text.contains(s)) {
        return Error::GitUpstream {
            message: format!(
                "git {operation} failed: the branch has no upstream (name the remote and \
                 branch, or push with set_upstream)"
            ),
        };
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_branches_counts_and_files() {
        let status = GitStatus::parse(
            "## feature...origin/feature [ahead 1, behind 3]\nR  old.txt -> new.txt\n M mod.txt\nUU both.txt\n?? new/\n",
        );
        assert_eq!(status.current_branch.as_deref(), Some("feature"));
        assert_eq!(status.upstream.as_deref(), Some("origin/feature"));
        assert_eq!((status.ahead, status.behind), (1, 3));
        let names: Vec<_> = status
            .file_status
            .iter()
            .map(|f| (f.name.as_str(), f.status.as_str(), f.staged))
            .collect();
        assert_eq!(
            names,
            [
                ("new.txt", "renamed", true),
                ("mod.txt", "modified", false),
                ("both.txt", "conflict", true),
                ("new/", "untracked", false),
            ]
        );
        assert_eq!(
            status.file_status[0].renamed_from.as_deref(),
            Some("old.txt")
        );
        assert!(status.has_conflicts());

        let fresh = GitStatus::parse("## No commits yet on main\n");
        assert_eq!(fresh.current_branch.as_deref(), Some("main"));
        assert!(fresh.is_clean());
        let detached = GitStatus::parse("## HEAD (no branch)\n");
        assert!(detached.detached && detached.current_branch.is_none());
    }

    #[test]
    fn branches_parse_the_current_one() {
        let b = GitBranches::parse("main\t \nfeature\t*\n");
        assert_eq!(b.branches, ["main", "feature"]);
        assert_eq!(b.current_branch.as_deref(), Some("feature"));
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        // A message or path with quotes, `$(…)` or `;` must reach git as one word, never
        // run as shell code.
        assert_eq!(shell_quote("it's $(id); x"), r"'it'\''s $(id); x'");
    }

    #[test]
    fn failures_are_classified_like_the_sdks() {
        let exited = |stderr: &str| Error::CommandExited {
            stdout: String::new(),
            stderr: stderr.to_owned(),
            exit_code: 128,
            error: None,
        };
        assert!(matches!(
            classify(
                exited("fatal: Authentication failed for 'https://x'"),
                "push"
            ),
            Error::GitAuth { .. }
        ));
        assert!(matches!(
            classify(
                exited("fatal: The current branch main has no upstream branch."),
                "push"
            ),
            Error::GitUpstream { .. }
        ));
        assert!(matches!(
            classify(exited("fatal: not a git repository"), "status"),
            Error::CommandExited { .. }
        ));
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = GitCredentials::new("bot", "s3cr3t-token");
        let options = SyncOptions::new().credentials(c);
        assert!(!format!("{options:?}").contains("s3cr3t-token"));
    }
}
