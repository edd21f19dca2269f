//! Process output as log lines, and the failure messages quoting it.

use crate::envd_link::Stream;

/// Longest log line kept; longer output lines are cut.
pub(super) const MAX_LINE: usize = 4096;
/// Output lines of the failing step quoted in the failure reason.
pub(super) const REASON_LINES: usize = 5;

pub(super) fn exit_message(code: i32, tail: &[String]) -> String {
    let mut message = if code < 0 {
        "killed by a signal".to_owned()
    } else {
        format!("exit code {code}")
    };
    if !tail.is_empty() {
        message.push_str(": ");
        message.push_str(&tail.join("\n"));
    }
    message
}

/// Cuts output chunks into lines, per stream (chunks may end mid-line).
#[derive(Default)]
pub(super) struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    pub(super) fn push(&mut self, stream: Stream, bytes: &[u8]) -> Vec<String> {
        let buffer = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(pos) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            lines.push(clean(&line[..line.len() - 1]));
        }
        // A line with no end in sight is logged in pieces rather than kept forever.
        if buffer.len() > MAX_LINE {
            let line: Vec<u8> = std::mem::take(buffer);
            lines.push(clean(&line));
        }
        lines
    }

    pub(super) fn finish(&mut self) -> Vec<String> {
        [
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        ]
        .into_iter()
        .filter(|rest| !rest.is_empty())
        .map(|rest| clean(&rest))
        .collect()
    }
}

fn clean(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    if text.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
