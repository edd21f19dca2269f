//! Running `/bin/bash -l -c CMD` without a login shell per command, when that cannot be
//! told apart from running it.
//!
//! Why: the official SDKs send every `commands.run` as `/bin/bash -l -c CMD`, and the
//! login profile costs about 3 ms a command here (Debian's `/etc/profile` alone forks
//! `id -u`) when a fork and exec costs 0.3 ms. What `bash -l -c CMD` does for a CMD that
//! is one simple command naming a program (no shell syntax at all) is: run the profile,
//! then exec the program in place of the shell (bash's "last command" optimisation), with
//! the environment the profile exported, the umask it set, `_` set to the program's path,
//! in the same process, cwd and credentials. This module captures that result once per
//! (user, cwd, environment) in the background, by running the real login shell, and execs
//! such commands directly while nothing the profile looked at has changed.
//!
//! Equivalence is kept by refusing the fast path, not by approximating it:
//! - only words made of `[A-Za-z0-9_./:,+%@=-]` (no quoting, expansion, globbing,
//!   redirection, operator, comment or tilde), the first not a reserved word, a builtin
//!   (but `true` and `false` without arguments, whose programs behave exactly as the
//!   builtins do), an assignment, or a function the profile defined;
//! - only without a PTY or stdin, when the profile left the shell in the directory it
//!   started in (its `PWD`), and when the profile left no trap set (bash then does
//!   not exec the last command), no alias expansion on and the resource limits as envd
//!   has them (a profile's `ulimit` would apply to the command);
//! - the program is found as bash finds it (first regular file in the captured `PATH`,
//!   absolute entries only) and starts as an ELF file or `#!` script; anything else (not
//!   found, not executable for the user, a script bash would run itself, an exec that
//!   fails) takes the login shell as before, which says what bash says;
//! - the capture runs the profile under `xtrace` and records every absolute path its
//!   commands named (the files it sourced, the directories it tested, the programs it
//!   ran) plus the usual login files, `$HOME`, the cwd and every `PATH` directory, with
//!   their identity and change times, taken before the profile ran. Each fast command
//!   first checks them again: one changed (a `~/.profile` edited, `~/.local/bin`
//!   created, a program installed into a `PATH` directory) and the entry is dropped, the
//!   command runs through the login shell and a new capture starts.
//!
//! What is not reproduced, by design: the profile's side effects per command (it ran once,
//! at capture), values it derives from anything but the paths above (`export
//! TODAY=$(date)` keeps the capture's value), and the order of the environment (std passes it sorted). A file rewritten
//! with the same size within the same kernel clock tick as its stamp is not noticed
//! (timestamps are as coarse as the file system's).

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
};

use courier_e2b::proto::process::ProcessConfig;

use super::{Identity, privileges};

/// Distinct (user, cwd, environment) captures kept; beyond it the cache starts over.
const MAX_ENTRIES: usize = 32;
/// Paths recorded from one profile's trace, at most.
const MAX_TRACED_PATHS: usize = 256;
/// The largest capture output read, per stream (environment; trace).
const MAX_CAPTURE_BYTES: usize = 1 << 20;
/// A profile that has not finished by then (waiting on the network, on input) gets no
/// fast path until something it looked at changes.
const CAPTURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the capture shell runs after the profile: facts that decide whether the fast path
/// is allowed, then the exported environment (NUL-separated, after a NUL).
const CAPTURE_SCRIPT: &str = "set +x; umask; shopt -q expand_aliases && echo aliases; \
    t=$(trap -p); [ -z \"$t\" ] || echo traps; \
    [ \"$(cat /proc/$$/limits)\" = \"$(cat /proc/$PPID/limits)\" ] || echo limits; \
    declare -F; printf '\\0'; exec env -0";

/// Login files bash reads (or checks for) whatever the trace shows.
const LOGIN_FILES: &[&str] = &["/etc/profile", "/etc/profile.d", "/etc/bash.bashrc"];
const HOME_FILES: &[&str] = &[
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".bashrc",
    "bin",
    ".local",
    ".local/bin",
];

/// Reserved words: a command starting with one is shell syntax.
const RESERVED: &[&str] = &[
    "case", "coproc", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in",
    "select", "then", "time", "until", "while",
];

/// bash 5's builtins: these never exec a program, so they keep the login shell.
const BUILTINS: &[&str] = &[
    ".",
    ":",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "declare",
    "dirs",
    "disown",
    "echo",
    "enable",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
];

/// The words of CMD when `config` is `/bin/bash -l -c CMD` and CMD is one simple command
/// without any shell syntax; `None` otherwise.
pub(crate) fn simple_command(config: &ProcessConfig) -> Option<Vec<String>> {
    if config.cmd != "/bin/bash" {
        return None;
    }
    let [login, dash_c, script] = config.args.as_slice() else {
        return None;
    };
    if login != "-l" || dash_c != "-c" {
        return None;
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:,+%@=-".contains(c);
    if !script.chars().all(|c| safe(c) || c == ' ' || c == '\t') {
        return None;
    }
    let words: Vec<String> = script
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let first = words.first()?;
    if first.contains('=') || RESERVED.contains(&first.as_str()) {
        return None;
    }
    let bare_true_or_false = words.len() == 1 && (first == "true" || first == "false");
    if BUILTINS.contains(&first.as_str()) && !bare_true_or_false {
        return None;
    }
    Some(words)
}

/// Who, where and with what environment a login shell would start: one capture each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub identity: Option<(u32, u32, Vec<u32>)>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Key {
    pub fn new(identity: Option<&Identity>, cwd: &Path, env: &[(String, String)]) -> Key {
        Key {
            identity: identity.map(|i| (i.uid, i.gid, i.groups.clone())),
            cwd: cwd.to_owned(),
            env: env.to_vec(),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What one login shell left behind.
#[derive(Debug)]
pub(crate) struct Login {
    /// The exported environment, without `_`.
    env: Vec<(String, String)>,
    umask: u32,
    functions: HashSet<String>,
    fingerprint: Fingerprint,
}

/// How to start a simple command directly.
#[derive(Debug)]
pub(crate) struct Direct {
    /// The file to execute (absolute).
    pub program: PathBuf,
    /// `argv`: the words as typed (bash passes the command word, not the path, as argv[0]).
    pub argv: Vec<String>,
    /// The environment: the login's plus `_` as bash sets it.
    pub env: Vec<(String, String)>,
    pub umask: u32,
}

impl Login {
    /// How to exec `words` as `bash -l -c` would, or `None` when only bash can say.
    pub fn direct(
        &self,
        words: &[String],
        cwd: &Path,
        identity: Option<&Identity>,
    ) -> Option<Direct> {
        let first = words.first()?;
        if self.functions.contains(first) {
            return None;
        }
        let path_var = self
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let (program, underscore) = if first.contains('/') {
            let program = cwd.join(first);
            runnable(&program, identity)?.then_some(())?;
            (program, first.clone())
        } else {
            let found = search(first, path_var?, identity)?;
            let shown = found.to_str()?.to_owned();
            (found, shown)
        };
        if !exec_format(&program) {
            return None;
        }
        let mut env = self.env.clone();
        env.push(("_".to_owned(), underscore));
        Some(Direct {
            program,
            argv: words.to_vec(),
            env,
            umask: self.umask,
        })
    }

    /// Whether nothing the profile looked at changed since the capture.
    pub fn still_valid(&self) -> bool {
        self.fingerprint.unchanged()
    }
}

/// The first regular file named `word` in `path_var`'s directories, as bash's command
/// search finds it; `None` when not found, or when bash's answer could differ from ours
/// (a relative entry, a file that may not be executable for the user).
fn search(word: &str, path_var: &str, identity: Option<&Identity>) -> Option<PathBuf> {
    for dir in path_var.split(':') {
        if !dir.starts_with('/') {
            // An empty or relative entry means the cwd, and `_` then shows a relative path.
            return None;
        }
        let candidate = Path::new(dir).join(word);
        match runnable(&candidate, identity) {
            Some(true) => return Some(candidate),
            // Present but not executable for the user: bash goes on searching or fails
            // with its own message; leave that to bash.
            Some(false) => return None,
            None => {}
        }
    }
    None
}

/// `Some(true)`: a regular file executable by `identity` (by mode bits); `Some(false)`: a
/// regular file that may not be; `None`: no regular file there.
fn runnable(path: &Path, identity: Option<&Identity>) -> Option<bool> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mode = meta.mode();
    let executable = match identity {
        // Root (or envd's own user, unknown here) may exec with any execute bit; a file
        // with none fails the exec, which falls back to bash.
        None => mode & 0o111 != 0,
        Some(id) if id.uid == 0 => mode & 0o111 != 0,
        Some(id) if id.uid == meta.uid() => mode & 0o100 != 0,
        Some(id) if id.gid == meta.gid() || id.groups.contains(&meta.gid()) => mode & 0o010 != 0,
        Some(_) => mode & 0o001 != 0,
    };
    Some(executable)
}

/// Whether `path` starts as the kernel executes it itself (ELF, `#!`). Anything else the
/// exec refuses with `ENOEXEC`, after which glibc's `execvp` (std's) would run it with
/// `/bin/sh` where bash runs it with bash: bash must have it.
fn exec_format(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 4];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    match file.read(&mut head) {
        Ok(n) if n >= 2 => head.starts_with(b"#!") || (n == 4 && head == *b"\x7fELF"),
        _ => false,
    }
}

/// Identity and change times of paths (or their absence).
#[derive(Debug, Default)]
struct Fingerprint(Vec<(PathBuf, Option<Stamp>)>);

#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        mode: meta.mode(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

impl Fingerprint {
    fn of(paths: impl IntoIterator<Item = PathBuf>) -> Fingerprint {
        let mut seen = HashSet::new();
        Fingerprint(
            paths
                .into_iter()
                .filter(|p| seen.insert(p.clone()))
                .map(|p| {
                    let s = stamp(&p);
                    (p, s)
                })
                .collect(),
        )
    }

    fn unchanged(&self) -> bool {
        self.0.iter().all(|(path, before)| stamp(path) == *before)
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.0.iter().map(|(p, _)| p)
    }
}

/// The paths worth watching before a capture: login files, the home ones, the cwd and the
/// `PATH` directories of the starting environment.
fn base_paths(key: &Key) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = LOGIN_FILES.iter().map(PathBuf::from).collect();
    if let Ok(entries) = std::fs::read_dir("/etc/profile.d") {
        paths.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    if let Some(home) = key.var("HOME").filter(|h| h.starts_with('/')) {
        let home = PathBuf::from(home);
        paths.extend(HOME_FILES.iter().map(|f| home.join(f)));
        paths.push(home);
    }
    paths.push(key.cwd.clone());
    if let Some(path) = key.var("PATH") {
        paths.extend(
            path.split(':')
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from),
        );
    }
    paths
}

/// Absolute paths named in a profile's `xtrace` output (words, and the parts of
/// `A=/x:/y` values), at most [`MAX_TRACED_PATHS`].
fn traced_paths(trace: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for word in trace.split(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
        let value = word.split_once('=').map_or(word, |(_, v)| v);
        for part in value.split(':') {
            if part.starts_with('/') && found.len() < MAX_TRACED_PATHS {
                found.push(PathBuf::from(part));
            }
        }
    }
    found
}

/// Whether the profile left the shell where it started: one that changes directory makes
/// `bash -l -c CMD` run CMD there, which a direct exec in `cwd` would not. bash keeps
/// `PWD` as the directory it is in (set at start, updated by `cd`).
fn stays_in(login: &Login, cwd: &Path) -> bool {
    match login.env.iter().find(|(k, _)| k == "PWD") {
        Some((_, pwd)) => match (std::fs::canonicalize(pwd), std::fs::canonicalize(cwd)) {
            (Ok(pwd), Ok(cwd)) => pwd == cwd,
            _ => false,
        },
        // No PWD exported (a profile that unset it): where it is cannot be told.
        None => false,
    }
}

/// Parses the capture's stdout: the facts, a NUL, then `env -0`.
fn parse_capture(stdout: &[u8], fingerprint: Fingerprint) -> Option<Login> {
    let split = stdout.iter().position(|b| *b == 0)?;
    let facts = std::str::from_utf8(&stdout[..split]).ok()?;
    let mut lines = facts.lines();
    let umask = u32::from_str_radix(lines.next()?.trim(), 8).ok()?;
    let mut functions = HashSet::new();
    for line in lines {
        match line {
            "aliases" | "traps" | "limits" => return None,
            _ => {
                let name = line.strip_prefix("declare -f")?.split_whitespace().last()?;
                functions.insert(name.to_owned());
            }
        }
    }
    let mut env = Vec::new();
    for entry in stdout[split + 1..]
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
    {
        let entry = std::str::from_utf8(entry).ok()?;
        let (k, v) = entry.split_once('=')?;
        if k != "_" {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    Some(Login {
        env,
        umask,
        functions,
        fingerprint,
    })
}

enum Slot {
    /// Asked for once: a key seen only once (a request with its own one-off variables)
    /// is not worth a second login shell in the background.
    Seen,
    Capturing,
    Ready(Arc<Login>),
    /// The capture failed or the profile forbids the fast path: bash every time, until
    /// something it looked at changes.
    Refused(Fingerprint),
}

/// Captured logins by key.
#[derive(Default)]
pub(crate) struct LoginCache {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl LoginCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The valid capture for `key`; otherwise answers `None` and, from the second time
    /// `key` is asked for, starts a capture in the background (unless one runs).
    pub fn get(self: &Arc<Self>, key: &Key) -> Option<Arc<Login>> {
        let mut slots = self.lock();
        match slots.get(key) {
            Some(Slot::Ready(login)) if login.still_valid() => return Some(login.clone()),
            Some(Slot::Capturing) => return None,
            Some(Slot::Refused(fingerprint)) if fingerprint.unchanged() => return None,
            Some(_) => {}
            None => {
                if slots.len() >= MAX_ENTRIES {
                    slots.retain(|_, slot| matches!(slot, Slot::Capturing));
                }
                slots.insert(key.clone(), Slot::Seen);
                return None;
            }
        }
        slots.insert(key.clone(), Slot::Capturing);
        drop(slots);
        let cache = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let slot = match capture(&key).await {
                Ok(login) => Slot::Ready(Arc::new(login)),
                Err(fingerprint) => Slot::Refused(fingerprint),
            };
            cache.lock().insert(key, slot);
        });
        None
    }
}

/// Runs `command` (with piped stdout and stderr) to its end, keeping at most
/// [`MAX_CAPTURE_BYTES`] of each: a profile printing without end costs bounded memory, and
/// more than that is an error.
async fn bounded_output(
    mut command: tokio::process::Command,
) -> std::io::Result<std::process::Output> {
    use tokio::io::AsyncReadExt as _;
    let mut child = command.spawn()?;
    let limit = u64::try_from(MAX_CAPTURE_BYTES).unwrap_or(u64::MAX) + 1;
    let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
        let mut buffer = Vec::new();
        if let Some(pipe) = pipe {
            pipe.take(limit).read_to_end(&mut buffer).await?;
        }
        Ok::<_, std::io::Error>(buffer)
    };
    let stdout = child
        .stdout
        .take()
        .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let (stdout, stderr) = tokio::try_join!(read(stdout), read(stderr))?;
    if stdout.len() > MAX_CAPTURE_BYTES || stderr.len() > MAX_CAPTURE_BYTES {
        return Err(std::io::Error::other("the login capture printed too much"));
    }
    let status = child.wait().await?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// Runs the real login shell for `key` and records what it left; `Err` carries what to
/// watch before trying again.
async fn capture(key: &Key) -> Result<Login, Fingerprint> {
    let before = base_paths(key);
    let base = Fingerprint::of(before.clone());
    let mut command = tokio::process::Command::new("/bin/bash");
    command
        .args(["-x", "-l", "-c", CAPTURE_SCRIPT])
        .env_clear()
        .envs(key.env.iter().map(|(k, v)| (k, v)))
        // PS4 from the request's environment would change the trace's shape, not its paths.
        .current_dir(&key.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid, groups)) = &key.identity {
        let identity = Identity {
            uid: *uid,
            gid: *gid,
            groups: groups.clone(),
        };
        privileges::apply(&mut command, &identity);
    }
    let output = match tokio::time::timeout(CAPTURE_TIMEOUT, bounded_output(command)).await {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(output)) => {
            tracing::debug!(status = %output.status, "login capture failed; commands keep the login shell");
            return Err(base);
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "login capture could not run; commands keep the login shell");
            return Err(base);
        }
        // The child is killed when the dropped future drops it (kill_on_drop).
        Err(_) => {
            tracing::debug!("login capture timed out; commands keep the login shell");
            return Err(base);
        }
    };
    let trace = String::from_utf8_lossy(&output.stderr);
    let mut paths: Vec<PathBuf> = before;
    paths.extend(traced_paths(&trace));
    // The stamps of traced paths are taken now, after the profile ran: a change made
    // while it ran that it did not cause is caught by the base stamps taken before.
    let traced = Fingerprint::of(paths.iter().skip(base.0.len()).cloned());
    let mut all = base;
    all.0.extend(traced.0);
    let login = parse_capture(&output.stdout, Fingerprint::default())
        .filter(|login| stays_in(login, &key.cwd));
    match login {
        Some(mut login) => {
            let path_dirs: Vec<PathBuf> = login
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| {
                    v.split(':')
                        .filter(|d| d.starts_with('/'))
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default();
            let known: HashSet<PathBuf> = all.paths().cloned().collect();
            all.0
                .extend(Fingerprint::of(path_dirs.into_iter().filter(|d| !known.contains(d))).0);
            login.fingerprint = all;
            Ok(login)
        }
        None => Err(all),
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
