//! Stream parsers: bytes from an agent's stdout in, [`AgentEvent`]s out.
//!
//! [`LineBuffer`] turns reads of any size into complete lines (partial lines are kept
//! until their newline arrives, UTF-8 is decoded only once a line is complete, one trailing
//! `\r` is stripped, over-long lines are reported instead of buffered without bound).
//! [`StreamParser`] feeds those lines to the tool's own parser. Feeding the same bytes in
//! any chunking gives the same events.
//!
//! ```
//! use courier_tools::{AgentEvent, StreamParser, ToolId};
//!
//! let mut parser = StreamParser::new(ToolId::Codex);
//! let mut events = parser.feed(br#"{"type":"thread.started","thread_id":"t-1"}"#);
//! assert!(events.is_empty()); // no newline yet
//! events.extend(parser.feed(b"\nnot json\n"));
//! events.extend(parser.finish(Some(0)));
//! assert!(matches!(&events[0], AgentEvent::SessionStarted { session_id, .. } if session_id == "t-1"));
//! assert_eq!(events[1], AgentEvent::Raw { line: "not json".into() });
//! assert!(matches!(&events[2], AgentEvent::Result(r) if !r.success)); // no turn.completed
//! ```

mod claude;
mod codex;
mod opencode;
mod pi;
mod shell;

use serde_json::Value;

use crate::events::{AgentEvent, RunResult, Usage};
use crate::registry::ToolId;

/// One line out of a [`LineBuffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without `\n` and one trailing `\r`, decoded as UTF-8 (invalid
    /// sequences replaced by U+FFFD).
    Text(String),
    /// A line longer than the buffer's cap; its bytes were discarded.
    TooLong {
        /// The line's length in bytes.
        len: usize,
    },
}

/// Splits a byte stream into lines, whatever the read boundaries.
#[derive(Debug, Clone)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max_line: usize,
    /// Bytes of the current line seen so far while discarding an over-long line.
    discarding: Option<usize>,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// The default cap on one line: 256 MiB (agent CLIs print multi-megabyte lines).
    pub const DEFAULT_MAX_LINE: usize = 256 * 1024 * 1024;

    /// A buffer with the default cap.
    pub fn new() -> Self {
        Self::with_max_line(Self::DEFAULT_MAX_LINE)
    }

    /// A buffer whose lines may be at most `max_line` bytes (newline excluded).
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line,
            discarding: None,
        }
    }

    /// Bytes of an incomplete line held so far.
    pub fn pending(&self) -> usize {
        self.discarding.unwrap_or(self.buf.len())
    }

    /// Adds bytes from one read and returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..pos]);
            lines.push(self.take());
            bytes = &bytes[pos + 1..];
        }
        self.append(bytes);
        lines
    }

    /// Ends the stream: returns the last line if it had no newline.
    pub fn finish(&mut self) -> Option<Line> {
        if self.buf.is_empty() && self.discarding.is_none() {
            return None;
        }
        Some(self.take())
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Some(seen) = &mut self.discarding {
            *seen += bytes.len();
        } else if self.buf.len() + bytes.len() > self.max_line {
            self.discarding = Some(self.buf.len() + bytes.len());
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn take(&mut self) -> Line {
        if let Some(len) = self.discarding.take() {
            return Line::TooLong { len };
        }
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        match String::from_utf8(bytes) {
            Ok(s) => Line::Text(s),
            Err(e) => Line::Text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }
}

/// What every tool's parser implements: one JSON object at a time, then the end.
trait ToolParser {
    /// Handles one JSON object line; returns `false` when the line is not understood (the
    /// caller then keeps it as [`AgentEvent::Raw`]).
    fn object(&mut self, value: &Value, out: &mut Vec<AgentEvent>) -> bool;

    /// The end of the stream without a terminal event: the tool's verdict from what was seen.
    fn end_without_result(&mut self, exit_code: Option<i32>) -> RunResult;
}

#[derive(Debug)]
enum Inner {
    Claude(claude::ClaudeParser),
    Codex(codex::CodexParser),
    Opencode(opencode::OpencodeParser),
    Pi(pi::PiParser),
    Shell(shell::ShellParser),
}

impl Inner {
    fn as_parser(&mut self) -> &mut dyn ToolParser {
        match self {
            Inner::Claude(p) => p,
            Inner::Codex(p) => p,
            Inner::Opencode(p) => p,
            Inner::Pi(p) => p,
            Inner::Shell(p) => p,
        }
    }
}

/// A tool's stream parser: feed it stdout bytes, then call [`StreamParser::finish`].
///
/// Guarantees: it never panics on any input; every non-blank line that is not JSON, or is
/// JSON it does not understand, comes out as [`AgentEvent::Raw`] (blank lines carry nothing
/// and are skipped); exactly one
/// [`AgentEvent::Result`] is produced by the time `finish` returns (from the tool's
/// terminal event when there is one, otherwise a verdict from what was seen, which for
/// Claude, Codex and Pi is a failure: the stream ended early).
#[derive(Debug)]
pub struct StreamParser {
    tool: ToolId,
    lines: LineBuffer,
    inner: Inner,
    session_id: Option<String>,
    result_seen: bool,
}

impl StreamParser {
    /// A parser for `tool`'s machine-readable output.
    pub fn new(tool: ToolId) -> Self {
        Self::with_line_buffer(tool, LineBuffer::new())
    }

    /// A parser for a run that continues a session whose tool reports cumulative usage
    /// (Codex after `exec resume`): `session_total` is the previous run's
    /// [`RunResult::session_usage`], and this run's usage events and result carry only
    /// what grew since. Tools that report per-run figures ignore it.
    pub fn continuing(mut self, session_total: Option<Usage>) -> Self {
        if let Inner::Codex(p) = &mut self.inner {
            p.baseline = session_total;
        }
        self
    }

    /// A parser with a custom line buffer (e.g. a smaller line cap).
    pub fn with_line_buffer(tool: ToolId, lines: LineBuffer) -> Self {
        let inner = match tool {
            ToolId::Claude => Inner::Claude(claude::ClaudeParser::default()),
            ToolId::Codex => Inner::Codex(codex::CodexParser::default()),
            ToolId::Opencode => Inner::Opencode(opencode::OpencodeParser::default()),
            ToolId::Pi => Inner::Pi(pi::PiParser::default()),
            ToolId::Shell => Inner::Shell(shell::ShellParser),
        };
        Self {
            tool,
            lines,
            inner,
            session_id: None,
            result_seen: false,
        }
    }

    /// Parses a whole recorded stream at once.
    pub fn parse_all(tool: ToolId, bytes: &[u8], exit_code: Option<i32>) -> Vec<AgentEvent> {
        let mut parser = Self::new(tool);
        let mut events = parser.feed(bytes);
        events.extend(parser.finish(exit_code));
        events
    }

    /// The tool this parser reads.
    pub fn tool(&self) -> ToolId {
        self.tool
    }

    /// The session id, once the stream has reported one (needed to continue the session).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether a [`AgentEvent::Result`] has been produced.
    pub fn has_result(&self) -> bool {
        self.result_seen
    }

    /// Feeds bytes from one read; returns the events of the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        for line in self.lines.push(bytes) {
            self.line(line, &mut out);
        }
        out
    }

    /// Parses one complete line (without its newline).
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        self.text_line(line, &mut out);
        out
    }

    /// Ends the stream: parses a final unterminated line, and produces the run's
    /// [`AgentEvent::Result`] if the stream had none. `exit_code` is used only by tools
    /// whose stream may lack a terminal event (OpenCode) or has none (shell).
    pub fn finish(&mut self, exit_code: Option<i32>) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        if let Some(line) = self.lines.finish() {
            self.line(line, &mut out);
        }
        if !self.result_seen {
            let result = self.inner.as_parser().end_without_result(exit_code);
            out.push(AgentEvent::Result(result));
            self.result_seen = true;
        }
        out
    }

    fn line(&mut self, line: Line, out: &mut Vec<AgentEvent>) {
        match line {
            Line::Text(text) => self.text_line(&text, out),
            Line::TooLong { len } => out.push(AgentEvent::Error {
                message: format!("discarded an output line of {len} bytes (over the line cap)"),
            }),
        }
    }

    fn text_line(&mut self, line: &str, out: &mut Vec<AgentEvent>) {
        // A shell task's output is the text itself, blank lines and line breaks included.
        if let Inner::Shell(_) = self.inner {
            out.push(AgentEvent::Text {
                text: format!("{line}\n"),
            });
            return;
        }
        if line.trim().is_empty() {
            return;
        }
        let start = out.len();
        let understood = match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => self.inner.as_parser().object(&value, out),
            _ => false,
        };
        // A second terminal event (never seen from a real tool) is kept, but only as a raw
        // line: a run has exactly one verdict.
        let second_result = self.result_seen
            && out[start..]
                .iter()
                .any(|e| matches!(e, AgentEvent::Result(_)));
        if !understood || second_result {
            out.truncate(start);
            out.push(AgentEvent::Raw {
                line: line.to_owned(),
            });
        }
        for event in &out[start..] {
            match event {
                AgentEvent::SessionStarted { session_id, .. } if self.session_id.is_none() => {
                    self.session_id = Some(session_id.clone());
                }
                AgentEvent::Result(_) => self.result_seen = true,
                _ => {}
            }
        }
    }
}

/// `value[key]` as a string.
fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// `value[key]` as a non-negative integer (0 when absent or not a number).
fn u64_field(value: &Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)))
        .unwrap_or(0)
}

/// Text of a content value: a string, or the `text` of each `{type:"text"}` item joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s.as_str()),
                other => str_field(other, "text"),
            })
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<Line>) -> Vec<String> {
        lines
            .into_iter()
            .map(|l| match l {
                Line::Text(t) => t,
                Line::TooLong { len } => format!("<too long {len}>"),
            })
            .collect()
    }

    #[test]
    fn partial_lines_wait_for_their_newline_and_crlf_is_stripped() {
        let mut b = LineBuffer::new();
        assert!(b.push(b"ab").is_empty());
        assert_eq!(texts(b.push(b"c\r\nd\n\ne")), ["abc", "d", ""]);
        assert_eq!(b.pending(), 1);
        assert_eq!(b.finish(), Some(Line::Text("e".into())));
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn utf8_split_across_reads_is_decoded_whole() {
        let bytes = "héllo ✓\n".as_bytes();
        let mut b = LineBuffer::new();
        let mut lines = Vec::new();
        for byte in bytes {
            lines.extend(b.push(std::slice::from_ref(byte)));
        }
        assert_eq!(texts(lines), ["héllo ✓"]);
    }

    #[test]
    fn over_long_lines_are_reported_and_the_next_line_survives() {
        let mut b = LineBuffer::with_max_line(4);
        assert_eq!(texts(b.push(b"123")), Vec::<String>::new());
        assert_eq!(texts(b.push(b"456")), Vec::<String>::new());
        assert_eq!(b.pending(), 6);
        assert_eq!(texts(b.push(b"7\nok\n")), ["<too long 7>", "ok"]);
    }

    #[test]
    fn multi_megabyte_line_in_small_chunks() {
        let text = "x".repeat(5 * 1024 * 1024);
        let line = format!(
            "{{\"type\":\"text\",\"sessionID\":\"s\",\"part\":{{\"type\":\"text\",\"text\":\"{text}\"}}}}\n"
        );
        let mut p = StreamParser::new(ToolId::Opencode);
        let mut events = Vec::new();
        for chunk in line.as_bytes().chunks(64 * 1024) {
            events.extend(p.feed(chunk));
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, AgentEvent::Text { text: t } if t.len() == text.len()))
        );
    }

    #[test]
    fn finish_produces_exactly_one_result() {
        let mut p = StreamParser::new(ToolId::Claude);
        let events = p.finish(Some(0));
        assert_eq!(events.len(), 1);
        assert!(p.finish(Some(0)).is_empty());
    }
}
