//! Sandbox logs (`GET /sandboxes/{id}/logs`, `GET /v2/sandboxes/{id}/logs`): what the
//! control plane records about each sandbox (created, paused, resumed and by what, timed
//! out, killed) plus its envd's own log lines (the sandbox's console, read live while it
//! runs and captured when it is killed).
//!
//! Bounds: at most [`MAX_ENTRIES`] entries per sandbox (the oldest fall out), envd lines
//! read from at most the last [`CONSOLE_WINDOW`] bytes of the console, each cut at
//! [`MAX_LINE`]; a killed sandbox's
//! logs are kept for [`KILLED_RETENTION`], and at most [`MAX_KILLED`] killed sandboxes'
//! logs are kept (oldest dropped first).
//!
//! Persisted under `<data_dir>/logs/<id>.json`, written to a temporary name and renamed,
//! so a restarted server still answers for its sandboxes and for recently killed ones.
//! Reads never touch the filesystem by the requested id: logs are looked up in memory by
//! ids this server created, so no id in a URL names a file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use super::Sandboxd;
use crate::error::{Error, Result};
use crate::lock::lock;

/// Entries kept per sandbox.
pub const MAX_ENTRIES: usize = 1000;

/// Bytes of the console's end read for envd's lines: with [`MAX_KILLED`], what a
/// sandbox writing as much as it can makes the server keep (64 MiB over 1000 killed
/// sandboxes at most).
pub const CONSOLE_WINDOW: u64 = 64 * 1024;

/// Longest message kept for one envd line (longer ones are cut, marked `…`).
pub const MAX_LINE: usize = 4096;

/// How long a killed sandbox's logs are kept.
pub const KILLED_RETENTION: ChronoDuration = ChronoDuration::days(7);

/// How many killed sandboxes' logs are kept at most.
pub const MAX_KILLED: usize = 1000;

/// E2B's `LogLevel`, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogLevel {
    /// Reads E2B's level names (and `warning`, `trace` as tracing writes them).
    pub fn parse(name: &str) -> Option<LogLevel> {
        match name.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// One log entry (E2B's `SandboxLogEntry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// What happened.
    pub message: String,
    /// Structured fields (`source`: `sandboxd` or `envd`, `event`, ...).
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogBook {
    #[serde(default)]
    killed_at: Option<DateTime<Utc>>,
    /// The killed sandbox's owner ([`crate::keys::owner_of`]), so only that API key reads
    /// the book once the sandbox is gone; `None` for the server's own sandboxes and books
    /// written before owners were kept (no key reads those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    entries: VecDeque<LogEntry>,
}

impl LogBook {
    fn push(&mut self, entry: LogEntry) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }
}

/// Every sandbox's log book, in memory and under `<data_dir>/logs`.
pub(super) struct SandboxLogs {
    dir: PathBuf,
    books: Mutex<HashMap<String, LogBook>>,
}

/// Whether `id` can name a log file: the server's own sandbox ids only.
fn is_sandbox_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl SandboxLogs {
    /// Opens `dir`, loading the books in it and dropping expired ones.
    pub(super) fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(Error::io("create dir", &dir))?;
        let mut books = HashMap::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let path = entry.map_err(Error::io("read dir", &dir))?.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| is_sandbox_id(s))
                .map(str::to_owned);
            let book = (path.extension().and_then(|e| e.to_str()) == Some("json"))
                .then(|| fs::read(&path).ok())
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<LogBook>(&bytes).ok());
            match (id, book) {
                (Some(id), Some(book)) => {
                    books.insert(id, book);
                }
                // Temporary files of an interrupted write, and anything unreadable.
                _ => crate::cleanup::remove_file(&path),
            }
        }
        let logs = Self {
            dir,
            books: Mutex::new(books),
        };
        logs.prune();
        Ok(logs)
    }

    fn save(&self, id: &str, book: &LogBook) {
        if !is_sandbox_id(id) {
            return;
        }
        let path = self.dir.join(format!("{id}.json"));
        let tmp = self.dir.join(format!("{id}.tmp"));
        let written = serde_json::to_vec(book)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(error) = written {
            tracing::warn!(sandbox = %id, %error, "saving the sandbox's logs failed");
        }
    }

    /// Drops killed sandboxes' books past [`KILLED_RETENTION`] or beyond [`MAX_KILLED`].
    fn prune(&self) {
        let mut books = lock(&self.books);
        let now = Utc::now();
        let mut killed: Vec<(DateTime<Utc>, String)> = books
            .iter()
            .filter_map(|(id, b)| b.killed_at.map(|at| (at, id.clone())))
            .collect();
        killed.sort();
        let excess = killed.len().saturating_sub(MAX_KILLED);
        for (i, (at, id)) in killed.into_iter().enumerate() {
            if i < excess || now - at > KILLED_RETENTION {
                books.remove(&id);
                crate::cleanup::remove_file(&self.dir.join(format!("{id}.json")));
            }
        }
    }

    /// Marks the books of sandboxes that are not in `live` (gone while the server was
    /// down) killed now, so that they expire like other killed sandboxes' logs.
    pub(super) fn orphaned(&self, live: &dyn Fn(&str) -> bool) {
        {
            let mut books = lock(&self.books);
            for (id, book) in books.iter_mut() {
                if book.killed_at.is_none() && !live(id) {
                    book.killed_at = Some(Utc::now());
                    self.save(id, book);
                }
            }
        }
        self.prune();
    }

    /// Records an event of sandbox `id` (from the control plane).
    pub(super) fn event(&self, id: &str, level: LogLevel, event: &str, message: String) {
        let entry = LogEntry {
            timestamp: Utc::now(),
            level,
            message,
            fields: BTreeMap::from([
                ("source".to_owned(), "sandboxd".to_owned()),
                ("event".to_owned(), event.to_owned()),
            ]),
        };
        let mut books = lock(&self.books);
        let book = books.entry(id.to_owned()).or_default();
        book.push(entry);
        self.save(id, book);
    }

    /// Marks `id` killed, keeping `envd_lines` (its console's last lines) and its
    /// `owner` with it.
    pub(super) fn killed(&self, id: &str, envd_lines: Vec<LogEntry>, owner: Option<String>) {
        {
            let mut books = lock(&self.books);
            let book = books.entry(id.to_owned()).or_default();
            book.owner = owner;
            for line in envd_lines {
                book.push(line);
            }
            book.entries.make_contiguous().sort_by_key(|e| e.timestamp);
            book.killed_at = Some(Utc::now());
            self.save(id, book);
        }
        self.prune();
    }

    /// The book of `id`, if any: `(entries, killed, owner)`.
    fn entries(&self, id: &str) -> Option<(Vec<LogEntry>, bool, Option<String>)> {
        lock(&self.books).get(id).map(|b| {
            (
                b.entries.iter().cloned().collect(),
                b.killed_at.is_some(),
                b.owner.clone(),
            )
        })
    }
}

/// Strips ANSI escape sequences (envd's tracing output may be coloured).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// Reads one console line of envd (`<rfc3339> <LEVEL> <rest>` as tracing writes it); a
/// line without a timestamp is dated `fallback`, without a level `info`.
pub(crate) fn envd_line(line: &str, fallback: DateTime<Utc>) -> LogEntry {
    let line = strip_ansi(line);
    let mut words = line.split_whitespace();
    let timestamp = words
        .next()
        .and_then(|w| DateTime::parse_from_rfc3339(w).ok())
        .map(|t| t.with_timezone(&Utc));
    let (timestamp, level, message) = match timestamp {
        Some(ts) => {
            let rest = line
                .trim_start()
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r)
                .trim_start();
            let (level, message) = match rest.split_once(char::is_whitespace) {
                Some((word, message)) => match LogLevel::parse(word) {
                    Some(level) => (level, message.trim_start()),
                    None => (LogLevel::Info, rest),
                },
                None => (LogLevel::parse(rest).unwrap_or(LogLevel::Info), rest),
            };
            (ts, level, message.to_owned())
        }
        None => (fallback, LogLevel::Info, line.trim().to_owned()),
    };
    let message = if message.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &message[..cut])
    } else {
        message
    };
    LogEntry {
        timestamp,
        level,
        message,
        fields: BTreeMap::from([("source".to_owned(), "envd".to_owned())]),
    }
}

impl Sandboxd {
    /// Records a lifecycle event in sandbox `id`'s logs.
    pub(crate) fn log_event(&self, id: &str, level: LogLevel, event: &str, message: String) {
        self.inner.logs.event(id, level, event, message);
    }

    /// envd's console lines of live sandbox `id` (none when the runtime no longer has it).
    async fn envd_lines(&self, id: &str) -> Vec<LogEntry> {
        let runtime = self.inner.runtime.clone();
        let sid = id.to_owned();
        let lines = super::blocking(move || runtime.console_tail(&sid, CONSOLE_WINDOW))
            .await
            .unwrap_or_default();
        let now = Utc::now();
        let mut entries: Vec<LogEntry> = lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| envd_line(l, now))
            .collect();
        let excess = entries.len().saturating_sub(MAX_ENTRIES);
        entries.drain(..excess);
        entries
    }

    /// Captures live sandbox `id`'s envd lines into its logs and marks it killed (called
    /// by kill before the runtime removes the console).
    pub(super) async fn logs_killed(&self, id: &str, reason: &str, owner: Option<String>) {
        let lines = self.envd_lines(id).await;
        self.inner.logs.event(
            id,
            LogLevel::Info,
            "killed",
            format!("sandbox killed ({reason})"),
        );
        self.inner.logs.killed(id, lines, owner);
    }

    /// Every log entry of sandbox `id`, oldest first: the control plane's events and
    /// envd's lines, for the API key `owner` (see [`crate::keys::owner_of`]).
    /// [`Error::NotFound`] when the server knows neither the sandbox nor logs of it, and
    /// when they are not `owner`'s (another key's sandbox, live or killed, is as unknown
    /// as a missing one).
    pub async fn logs(&self, id: &str, owner: &str) -> Result<Vec<LogEntry>> {
        let live = match self.entry(id) {
            Some(entry) => {
                if entry.record().owner.as_deref() != Some(owner) {
                    return Err(Error::NotFound(id.to_owned()));
                }
                true
            }
            None => false,
        };
        let stored = self.inner.logs.entries(id);
        let (mut entries, killed) = match (stored, live) {
            // A live sandbox's book is its (checked above); a killed one's says whose.
            (Some((entries, killed, _)), true) => (entries, killed),
            (Some((entries, killed, Some(o))), false) if o == owner => (entries, killed),
            (None, true) => (Vec::new(), false),
            _ => return Err(Error::NotFound(id.to_owned())),
        };
        if live && !killed {
            entries.extend(self.envd_lines(id).await);
            entries.sort_by_key(|e| e.timestamp);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envd_lines_are_read_with_their_time_and_level() {
        let now = Utc::now();
        let e = envd_line(
            "\u{1b}[2m2026-12-07T12:00:01.5Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m courier_envd: disk low",
            now,
        );
        assert_eq!(e.level, LogLevel::Warn);
        assert_eq!(e.message, "courier_envd: disk low");
        assert_eq!(e.timestamp.timestamp(), 1_796_644_801);
        let plain = envd_line("no timestamp here", now);
        assert_eq!((plain.timestamp, plain.level), (now, LogLevel::Info));
        // A sandbox writing control characters gets them dropped, not passed on; a
        // line longer than the cap is cut.
        assert_eq!(envd_line("a\u{7}b\u{8}", now).message, "ab");
        let long = envd_line(&"é".repeat(MAX_LINE), now).message;
        assert!(long.len() <= MAX_LINE + '…'.len_utf8() && long.ends_with('…'));
    }

    #[test]
    fn books_are_bounded_persisted_and_never_read_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let logs = SandboxLogs::open(dir.path().join("logs")).unwrap();
        for i in 0..(MAX_ENTRIES + 5) {
            logs.event("abc1", LogLevel::Info, "e", format!("n{i}"));
        }
        let (entries, killed, _) = logs.entries("abc1").unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries[0].message, "n5");
        assert!(!killed);
        logs.killed("abc1", Vec::new(), Some("owner-a".into()));
        // An id that is a path is neither written nor readable: an attacker naming
        // `../records/x` in a URL gets nothing from the filesystem.
        logs.event("../evil", LogLevel::Info, "e", "x".into());
        assert!(!dir.path().join("evil.json").exists());
        assert!(!dir.path().join("logs").join("../evil.json").exists());
        let reopened = SandboxLogs::open(dir.path().join("logs")).unwrap();
        let (entries, killed, owner) = reopened.entries("abc1").unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(killed);
        // Whose the book is survives a restart (only that key reads it).
        assert_eq!(owner.as_deref(), Some("owner-a"));
        assert!(reopened.entries("../evil").is_none());
        assert!(reopened.entries("other").is_none());
    }
}
